package redisstore

import (
	"crypto/sha1"
	"encoding/hex"

	"github.com/redis/rueidis"
)

// script is a Lua script run with EVALSHA, falling back to EVAL when the
// server does not have it cached. rueidis.Lua does the same; the source and
// digest are kept as well for the WAIT path, which pipelines the script
// itself (see Store.execWait).
type script struct {
	lua *rueidis.Lua
	src string
	sha string
}

func newScript(readonly bool, src string) *script {
	sum := sha1.Sum([]byte(src))
	s := &script{src: src, sha: hex.EncodeToString(sum[:])}
	if readonly {
		s.lua = rueidis.NewLuaScriptReadOnly(src)
	} else {
		s.lua = rueidis.NewLuaScript(src)
	}
	return s
}

// A record is one string value, so that a script reads it with one GET and
// writes it with one SET: a header packed with Lua's struct library
// ('<BBddddddddI4I4', little-endian, 74 bytes), then the fingerprint, the
// encoded key (see encodeKey, for List) and, once completed, the encoded
// result (see encodeResult). The header holds, in order:
//
//	state       1 in progress, 2 completed, 3 released
//	flags       1 if a watcher waits for the record (see Store.Watch)
//	token       fencing token
//	attempts
//	lease       of the latest Claim or Extend (the purge slack, see fsm.keepPurge)
//	lease deadline
//	expires     retention deadline (ExpiresAt)
//	created, updated, completed
//	fingerprint length, key length
//
// Numbers are doubles: times are microseconds since the Unix epoch on the
// Redis server's clock and durations are microseconds, and both stay below
// 2^53, so Lua's doubles hold them exactly; so does a token, which grows by
// one per claim. The scripts never look into the result: Complete sends it
// encoded and compares it byte for byte.
//
// The key expires (PXAT) at expires + lease, the record's PurgeAt, so the
// token counter outlives the record's retention.
const headerLen = 74

// Reply codes of the write operations.
const (
	codeOK       = 0
	codeFenced   = 1
	codeNotFound = 2
)

// prelude is shared by every record script: the header layout, and the
// server clock, read once per script call.
const prelude = `
local H, pack, read, sub = '<BBddddddddI4I4', struct.pack, struct.unpack, string.sub
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
`

// writeScript runs a batch of writes of records (see batcher), each as the
// function of internal/fsm it mirrors, in order, with one reading of the
// clock. KEYS[i] is the record of the i-th write; ARGV holds, for each write
// in turn, its name and its arguments. Replies {now, then two values for
// each write}: its code (or a claim's outcome) and the record a claim
// returns (nil for the other writes). A write that fails (a foreign value at
// its key, Redis out of memory) replies with its error in place of the code,
// and the others are unaffected, since each write sets its record last. The
// reply is flat, because a table per write costs Lua more than its work.
var writeScript = newScript(false, prelude+`
-- The key's expiry in whole milliseconds: a number passed as is to
-- redis.call could be written in exponent form.
local function pxat(e, l) return string.format('%d', math.ceil((e + l) / 1000)) end

-- claim mirrors fsm.Claim. Returns the outcome, numbered as once.Outcome,
-- and the record. It first tries to create the record of a fresh key with
-- SET NX GET, one write that also reads whatever record is there; pcall,
-- because that SET is refused when Redis is out of memory, while a claim
-- that only replays a stored result must still work then.
local function claim(k, fp, lease, ret, policy, key)
  lease = tonumber(lease)
  local e = now + math.max(tonumber(ret), lease)
  local v = pack(H, 1, 0, 1, 1, lease, now + lease, e, now, now, 0, #fp, #key) .. fp .. key
  local old = redis.pcall('SET', k, v, 'NX', 'GET', 'PXAT', pxat(e, lease))
  if type(old) == 'table' then
    old = redis.call('GET', k)
    if not old then redis.call('SET', k, v, 'PXAT', pxat(e, lease)) end
  end
  if not old then return 1, v end
  local s, w, tok, a, l, le, oe, c, _, _, fl = read(H, old)
  local live = now < oe
  if live and s ~= 3 then
    if #fp > 0 and fl > 0 and fp ~= sub(old, 75, 74 + fl) then return 5, old end
    if s == 2 then return 2, old end
    if now < le then return 3, old end
    if policy ~= '1' then return 4, old end
  end
  local attempts, created = 1, now
  if live then
    attempts, created = a + 1, c
    if s == 1 and #fp == 0 then fp = sub(old, 75, 74 + fl) end
  end
  -- fsm.keepPurge: the purge time never moves earlier than the old record's.
  local slack = math.max(lease, oe + l - e)
  v = pack(H, 1, w, tok + 1, attempts, slack, now + lease, e, created, now, 0, #fp, #key) .. fp .. key
  redis.call('SET', k, v, 'PXAT', pxat(e, slack))
  return 1, v
end

-- complete mirrors fsm.Complete; the result comes encoded. It publishes on
-- the record's channel only if a watcher marked the record.
local function complete(k, token, result)
  local v = redis.call('GET', k)
  if not v then return 1 end
  local s, w, tok, a, l, le, e, c, _, _, fl, kl = read(H, v)
  if tok ~= tonumber(token) or now >= e then return 1 end
  if s == 2 then
    if sub(v, 75 + fl + kl) == result then return 0 end
    return 1
  end
  if s ~= 1 then return 1 end
  redis.call('SET', k, pack(H, 2, w, tok, a, l, le, e, c, now, now, fl, kl) .. sub(v, 75, 74 + fl + kl) .. result, 'KEEPTTL')
  if w == 1 then redis.call('SPUBLISH', k, 'completed') end
  return 0
end

-- release mirrors fsm.Release.
local function release(k, token)
  local v = redis.call('GET', k)
  if not v then return 1 end
  local s, w, tok, a, l, le, e, c, _, d, fl, kl = read(H, v)
  if tok ~= tonumber(token) or now >= e then return 1 end
  if s == 3 then return 0 end
  if s ~= 1 then return 1 end
  redis.call('SET', k, pack(H, 3, w, tok, a, l, le, e, c, now, d, fl, kl) .. sub(v, 75), 'KEEPTTL')
  if w == 1 then redis.call('SPUBLISH', k, 'released') end
  return 0
end

-- extend mirrors fsm.Extend.
local function extend(k, token, lease)
  local v = redis.call('GET', k)
  if not v then return 1 end
  local s, w, tok, a, l, le, e, c, _, d, fl, kl = read(H, v)
  if tok ~= tonumber(token) or now >= e or s ~= 1 then return 1 end
  lease = tonumber(lease)
  local ne = math.max(e, now + lease)
  local slack = math.max(lease, e + l - ne)
  redis.call('SET', k, pack(H, 1, w, tok, a, slack, now + lease, ne, c, now, d, fl, kl) .. sub(v, 75), 'PXAT', pxat(ne, slack))
  return 0
end

-- delete mirrors fsm.Delete: the record expires now and its tombstone (the
-- token) is kept a lease longer, stretched by what remains of a live lease.
-- The result is dropped: nothing reads a tombstone's result.
local function delete(k)
  local v = redis.call('GET', k)
  if not v then return 2 end
  local s, w, tok, a, l, le, e, c, _, d, fl, kl = read(H, v)
  if now >= e then return 2 end
  if le > now then l = l + (le - now) end
  redis.call('SET', k, pack(H, s, w, tok, a, l, le, now, c, now, d, fl, kl) .. sub(v, 75, 74 + fl + kl), 'PXAT', pxat(now, l))
  if w == 1 then redis.call('SPUBLISH', k, 'deleted') end
  return 0
end

-- Each write's function and number of arguments.
local writes = {claim = {claim, 5}, complete = {complete, 2}, release = {release, 1}, extend = {extend, 2}, delete = {delete, 0}}
local out, arg = {now}, 1
for i = 1, #KEYS do
  local op = writes[ARGV[arg]]
  local ok, r, v = pcall(op[1], KEYS[i], unpack(ARGV, arg + 1, arg + op[2]))
  if not ok and type(r) ~= 'table' then r = {err = tostring(r)} end
  out[2 * i], out[2 * i + 1] = r, v or false
  arg = arg + 1 + op[2]
end
return out
`)

// getScript mirrors fsm.Get: it needs the server clock to tell a live record
// from a tombstone. KEYS[1] record. Replies with the record, or 0. A value
// too short for a header is returned as is, for the client to reject (and
// List to skip).
var getScript = newScript(true, prelude+`
local v = redis.call('GET', KEYS[1])
if not v or (#v >= 74 and now >= read('<d', v, 35)) then return 0 end
return v
`)

// watchScript marks an in-progress record as watched, so that the scripts
// that change it publish. KEYS[1] record. Replies 1 if the record is in
// progress (and now marked), 0 if there is nothing to wait for.
var watchScript = newScript(false, prelude+`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local s, w, _, _, _, _, e = read(H, v)
if s ~= 1 or now >= e then return 0 end
if w ~= 1 then redis.call('SETRANGE', KEYS[1], 1, '\1') end
return 1
`)

// advanceScript mirrors fsm.Advance. Versions are uint64, beyond what a Lua
// double holds, so they travel as 20-digit zero-padded decimals and are
// compared in two exact halves. KEYS[1] version. ARGV version. Replies
// {applied, current}.
var advanceScript = newScript(false, `
local cur = redis.call('GET', KEYS[1]) or '00000000000000000000'
local v = ARGV[1]
local vh, ch = tonumber(string.sub(v, 1, 10)), tonumber(string.sub(cur, 1, 10))
if vh > ch or (vh == ch and tonumber(string.sub(v, 11)) > tonumber(string.sub(cur, 11))) then
  redis.call('SET', KEYS[1], v)
  return {1, v}
end
return {0, cur}
`)
