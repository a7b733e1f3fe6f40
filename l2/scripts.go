package l2

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each runs atomically in Redis, so the lock, the fence
// and the purge record are judged by one clock (Redis TIME) and one order.
// Times are Unix microseconds, passed and returned as decimal strings:
// Lua 5.1 numbers are doubles, exact for microsecond timestamps, but
// tostring would print them in exponent form, so they go through
// string.format('%.0f'). The scripts touch more than one key, so they need
// a single Redis (or a Sentinel-managed one), not Redis Cluster.

// lockScript takes the fill lock and notes the epoch.
//
//	KEYS[1] lock  KEYS[2] epoch
//	ARGV[1] token  ARGV[2] TTL ms  ARGV[3] epoch candidate
//
// Returns {"1", start µs, epoch} when taken, {"0", holder's PTTL ms, ""}
// when someone else holds it.
const lockScript = `
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[3], 'NX')
  return {'1', now, redis.call('GET', KEYS[2])}
end
return {'0', tostring(redis.call('PTTL', KEYS[1])), ''}
`

// renewScript extends the lock if it is still the caller's.
//
//	KEYS[1] lock  ARGV[1] token  ARGV[2] TTL ms
//
// Returns 1 when extended, 0 when the lock is someone else's or gone.
const renewScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`

// releaseScript deletes the lock if it is still the caller's (compare and
// delete), records the hint and publishes the outcome, in that order, so
// that a woken waiter finds the hint and a free lock.
//
//	KEYS[1] lock  KEYS[2] hint
//	ARGV[1] token  ARGV[2] hint kind, "" for none  ARGV[3] hint TTL ms
//	ARGV[4] channel  ARGV[5] event, "" for none
//
// Returns 1 when the lock was the caller's, 0 otherwise.
const releaseScript = `
local held = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  held = 1
end
if ARGV[2] ~= '' then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], ARGV[2] .. string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2])), 'PX', ARGV[3])
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return held
`

// setScript writes an entry unless a purge since its fetch started says
// otherwise (the fence of DESIGN rule 27): a hard purge of one of its tags
// at or after start refuses the write; a soft one, or an epoch other than
// the lock's, writes it stale (fresh-until replaced by ARGV[4]).
//
//	KEYS[1] entry  KEYS[2] purges  KEYS[3] epoch
//	ARGV[1] value  ARGV[2] TTL ms  ARGV[3] start µs
//	ARGV[4] fresh-until for a stale write, 8 bytes  ARGV[5] the lock's epoch
//	ARGV[6..] tag hex
//
// Returns 0 stored fresh, 1 stored stale, 2 refused.
const setScript = `
local start = tonumber(ARGV[3])
local soft = redis.call('GET', KEYS[3]) ~= ARGV[5]
for i = 6, #ARGV do
  local h = redis.call('ZSCORE', KEYS[2], 'h' .. ARGV[i])
  if h and tonumber(h) >= start then
    return 2
  end
  if not soft then
    local s = redis.call('ZSCORE', KEYS[2], 's' .. ARGV[i])
    if s and tonumber(s) >= start then
      soft = true
    end
  end
end
local v = ARGV[1]
if soft then
  v = string.sub(v, 1, 3) .. ARGV[4] .. string.sub(v, 12)
end
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
if soft then
  return 1
end
return 0
`

// purgeScript records a purge of tags at the Redis time, trims records
// older than the retention, makes sure the epoch exists and publishes the
// purge event.
//
//	KEYS[1] purges  KEYS[2] epoch
//	ARGV[1] mode "s" or "h"  ARGV[2] retention µs  ARGV[3] epoch candidate
//	ARGV[4] channel  ARGV[5] the tags, hex, comma-separated  ARGV[6..] tag hex
//
// Returns {time µs, epoch}.
const purgeScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ns = string.format('%.0f', now)
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local epoch = redis.call('GET', KEYS[2])
for i = 6, #ARGV do
  redis.call('ZADD', KEYS[1], 'GT', ns, ARGV[1] .. ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.0f', now - tonumber(ARGV[2])))
redis.call('PUBLISH', ARGV[4], 'P ' .. ARGV[1] .. ' ' .. ns .. ' ' .. epoch .. ' ' .. ARGV[5])
return {ns, epoch}
`

// readPurgesScript returns the purge records younger than the retention,
// newest first, and the epoch (set if missing).
//
//	KEYS[1] purges  KEYS[2] epoch
//	ARGV[1] retention µs  ARGV[2] most records  ARGV[3] epoch candidate
//
// Returns {time µs, epoch, count of records, {member, score, …}}.
const readPurgesScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local min = '(' .. string.format('%.0f', now - tonumber(ARGV[1]))
local total = redis.call('ZCOUNT', KEYS[1], min, '+inf')
local recs = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', min, 'WITHSCORES', 'LIMIT', 0, ARGV[2])
return {string.format('%.0f', now), redis.call('GET', KEYS[2]), tostring(total), recs}
`

// scripts holds the loaded forms of the scripts (source and SHA-1; go-redis
// sends EVALSHA and falls back to EVAL when Redis does not know the script,
// after a restart for example).
type scripts struct {
	lock, renew, release, set, purge, readPurges *redis.Script
}

func newScripts() scripts {
	return scripts{
		lock:       redis.NewScript(lockScript),
		renew:      redis.NewScript(renewScript),
		release:    redis.NewScript(releaseScript),
		set:        redis.NewScript(setScript),
		purge:      redis.NewScript(purgeScript),
		readPurges: redis.NewScript(readPurgesScript),
	}
}
