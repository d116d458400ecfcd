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

// The record hash. Field names are short because every record carries them.
// Times are microseconds since the Unix epoch on the Redis server's clock and
// durations are microseconds: both stay below 2^53, so Lua's doubles hold
// them exactly. The token is kept as a decimal string and compared as one.
//
//	f   fingerprint (absent when empty)
//	s   state: 1 in progress, 2 completed, 3 released
//	t   fencing token
//	a   attempts
//	l   lease (of the latest Claim or Extend)
//	le  lease deadline
//	e   retention deadline (ExpiresAt)
//	c   created, u updated, d completed
//	r   result data, m result metadata (see encodeMeta)
//	k   scope and ID (see encodeKey), for List
//
// The key itself expires (PEXPIREAT) at e + l, the record's PurgeAt, so the
// token counter outlives the record's retention.

// Reply codes of the write scripts.
const (
	codeOK       = 0
	codeFenced   = 1
	codeNotFound = 2
)

// prelude is shared by every script: the server clock and integer formatting
// (tostring would print large numbers in exponent form).
const prelude = `
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(n) return string.format('%d', n) end
local function purge_ms(e, l) return fmt(math.ceil((e + l) / 1000)) end
`

// claimScript mirrors fsm.Claim. KEYS[1] record. ARGV fingerprint, lease,
// retention, policy ("1" = retry), encoded key (for List). Replies {outcome, now, record fields...}
// with the outcome numbered as once.Outcome.
var claimScript = newScript(false, prelude+`
local k = KEYS[1]
local now = now_us()
local fp, lease, ret = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', k, 'f', 's', 't', 'a', 'l', 'le', 'e', 'c', 'u', 'd')
local exists = h[3] ~= false
local live = exists and now < tonumber(h[7])
local function found(outcome)
  local res = {false, false}
  if h[2] == '2' then res = redis.call('HMGET', k, 'r', 'm') end
  return {outcome, now, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], res[1], res[2]}
end
if live and h[2] ~= '3' then
  local rf = h[1] or ''
  if #fp > 0 and #rf > 0 and fp ~= rf then return found(5) end
  if h[2] == '2' then return found(2) end
  if now < tonumber(h[6]) then return found(3) end
  if ARGV[4] ~= '1' then return found(4) end
end
local token, attempts, created = 1, 1, now
if exists then
  token = tonumber(h[3]) + 1
  if live then
    attempts = tonumber(h[4]) + 1
    created = tonumber(h[8])
    if h[2] == '1' and #fp == 0 then fp = h[1] or '' end
  end
  redis.call('DEL', k)
end
local e = now + math.max(ret, lease)
-- fsm.keepPurge: the purge time never moves earlier than the old record's.
local slack = lease
if exists and tonumber(h[7]) + tonumber(h[5]) - e > slack then slack = tonumber(h[7]) + tonumber(h[5]) - e end
local n = {1, now, false, '1', fmt(token), fmt(attempts), fmt(slack), fmt(now + lease), fmt(e), fmt(created), fmt(now), false, false, false}
redis.call('HSET', k, 's', '1', 't', n[5], 'a', n[6], 'l', n[7], 'le', n[8], 'e', n[9], 'c', n[10], 'u', n[11], 'k', ARGV[5])
if #fp > 0 then
  redis.call('HSET', k, 'f', fp)
  n[3] = fp
end
redis.call('PEXPIREAT', k, purge_ms(e, slack))
return n
`)

// completeScript mirrors fsm.Complete. KEYS[1] record, KEYS[2] channel.
// ARGV token, data, meta.
var completeScript = newScript(false, prelude+`
local k = KEYS[1]
local now = now_us()
local h = redis.call('HMGET', k, 's', 't', 'e')
if h[2] ~= ARGV[1] or now >= tonumber(h[3]) then return 1 end
if h[1] == '2' then
  local r = redis.call('HMGET', k, 'r', 'm')
  if (r[1] or '') == ARGV[2] and (r[2] or '') == ARGV[3] then return 0 end
  return 1
end
if h[1] ~= '1' then return 1 end
redis.call('HSET', k, 's', '2', 'r', ARGV[2], 'm', ARGV[3], 'd', fmt(now), 'u', fmt(now))
redis.call('SPUBLISH', KEYS[2], 'completed')
return 0
`)

// releaseScript mirrors fsm.Release. KEYS[1] record, KEYS[2] channel.
// ARGV token.
var releaseScript = newScript(false, prelude+`
local k = KEYS[1]
local now = now_us()
local h = redis.call('HMGET', k, 's', 't', 'e')
if h[2] ~= ARGV[1] or now >= tonumber(h[3]) then return 1 end
if h[1] == '3' then return 0 end
if h[1] ~= '1' then return 1 end
redis.call('HSET', k, 's', '3', 'u', fmt(now))
redis.call('SPUBLISH', KEYS[2], 'released')
return 0
`)

// extendScript mirrors fsm.Extend. KEYS[1] record. ARGV token, lease.
var extendScript = newScript(false, prelude+`
local k = KEYS[1]
local now = now_us()
local h = redis.call('HMGET', k, 's', 't', 'e', 'l')
if h[2] ~= ARGV[1] or now >= tonumber(h[3]) or h[1] ~= '1' then return 1 end
local lease = tonumber(ARGV[2])
local le = now + lease
local e = math.max(tonumber(h[3]), le)
local slack = lease
if tonumber(h[3]) + tonumber(h[4]) - e > slack then slack = tonumber(h[3]) + tonumber(h[4]) - e end
redis.call('HSET', k, 'l', fmt(slack), 'le', fmt(le), 'e', fmt(e), 'u', fmt(now))
redis.call('PEXPIREAT', k, purge_ms(e, slack))
return 0
`)

// deleteScript mirrors fsm.Delete: the record expires now and its tombstone
// (the token) is kept a lease longer, stretched by what remains of a live
// lease. The result is dropped: nothing reads a tombstone's result.
// KEYS[1] record, KEYS[2] channel.
var deleteScript = newScript(false, prelude+`
local k = KEYS[1]
local now = now_us()
local h = redis.call('HMGET', k, 't', 'e', 'le', 'l')
if h[1] == false or now >= tonumber(h[2]) then return 2 end
local lease = tonumber(h[4])
local le = tonumber(h[3])
if le > now then lease = lease + (le - now) end
redis.call('HSET', k, 'e', fmt(now), 'l', fmt(lease), 'u', fmt(now))
redis.call('HDEL', k, 'r', 'm')
redis.call('PEXPIREAT', k, purge_ms(now, lease))
redis.call('SPUBLISH', KEYS[2], 'deleted')
return 0
`)

// getScript mirrors fsm.Get: it needs the server clock to tell a live record
// from a tombstone. KEYS[1] record. Replies {0} or {1, now, record fields...,
// encoded key}.
var getScript = newScript(true, prelude+`
local now = now_us()
local h = redis.call('HMGET', KEYS[1], 'f', 's', 't', 'a', 'l', 'le', 'e', 'c', 'u', 'd', 'r', 'm', 'k')
if h[3] == false or now >= tonumber(h[7]) then return {0} end
return {1, now, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13]}
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
