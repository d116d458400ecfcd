#!/usr/bin/env bash
# wrk.sh: a cross-check of `go run ./bench/gateway -procs` with a load
# generator in C: the upstream, a bare httputil.ReverseProxy and `once serve`
# (one per store) each run in a process of their own, and wrk (Debian's
# package) sends POSTs with a fresh Idempotency-Key each (32 connections,
# two threads) to each of them in turn, for ROUNDS rounds. It prints each
# round's requests per second, mean latency, and the CPU time per request
# of the proxy process and of the upstream process.
#
#   bench/gateway/wrk.sh [STORE...]      (default: file mem:)
#
# "file" is a fresh embedded store in a temporary directory. Environment:
# ROUNDS (3), DURATION (3s), CONNS (32).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
stores=("$@")
[ ${#stores[@]} -gt 0 ] || stores=(file mem:)
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
go build -o "$tmp/gwbench" ./bench/gateway
go build -o "$tmp/once" ./cmd/once

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); "$tmp/gwbench" -role upstream -listen "127.0.0.1:$up" & pids+=($!); uppid=$!
bare=$(port); "$tmp/gwbench" -role bare -listen "127.0.0.1:$bare" -target "http://127.0.0.1:$up" 2>/dev/null & pids+=($!)
names=(bare); ports=("$bare"); procs=($!)
for s in "${stores[@]}"; do
	url=$s
	if [ "$s" = file ]; then mkdir -p "$tmp/$((${#names[@]}))"; url="file:$tmp/$((${#names[@]}))/once.db"; fi
	p=$(port); a=$(port)
	"$tmp/once" serve --listen "127.0.0.1:$p" --api-listen "127.0.0.1:$a" --upstream "http://127.0.0.1:$up" --store "$url" >/dev/null 2>&1 & pids+=($!)
	names+=("once $s"); ports+=("$p"); procs+=($!)
done
cat >"$tmp/key.lua" <<'LUA'
local n, prefix = 0, ""
function init(args)
  prefix = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9)) .. "-" .. tostring({}):sub(8)
end
function request()
  n = n + 1
  return wrk.format("POST", "/orders", {["Idempotency-Key"] = prefix .. "-" .. n, ["Content-Type"] = "application/json"}, '{"item":"book","qty":1}')
end
LUA
for p in "${ports[@]}"; do
	for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '| round | contender | req/s | mean latency | proxy CPU/request | upstream CPU/request |\n|---|---|---|---|---|---|\n'
for r in $(seq "${ROUNDS:-3}"); do
	for i in "${!names[@]}"; do
		c0=$(ticks "${procs[$i]}"); u0=$(ticks "$uppid")
		out=$(wrk -t2 -c"${CONNS:-32}" -d"${DURATION:-3s}" -s "$tmp/key.lua" "http://127.0.0.1:${ports[$i]}/orders")
		c1=$(ticks "${procs[$i]}"); u1=$(ticks "$uppid")
		n=$(awk '/requests in/{print $1}' <<<"$out")
		if grep -q 'Non-2xx' <<<"$out"; then echo "wrk.sh: ${names[$i]}: $(grep Non-2xx <<<"$out")" >&2; fi
		printf '| %d | %s | %s | %s | %d µs | %d µs |\n' "$r" "${names[$i]}" "$(awk '/Requests\/sec/{print $2}' <<<"$out")" \
			"$(awk '/Latency/{print $2}' <<<"$out")" $(((c1 - c0) * 1000000 / hz / n)) $(((u1 - u0) * 1000000 / hz / n))
	done
done
