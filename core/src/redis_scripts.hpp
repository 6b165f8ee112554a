// The server-side scripts of the Redis backend. Every check-then-change (capacity,
// rendezvous, claims and their leases) runs as one script, so no two daemons can interleave
// between the check and the change.
//
// A mailbox with id I keeps every key under the hash tag {mI}, so it lives on one shard of a
// Redis Cluster (scripts may only touch one slot) and different mailboxes spread out:
//   KEYS[1] meta  hash: name mode uid gid ctime mtime capacity(-1: unlimited) policy maxmsg
//                       nextseq sent received redelivered
//   KEYS[2] q     list of queued seqs, head first
//   KEYS[3] fl    zset: claimed seq -> lease deadline (ms, server clock)
//   KEYS[4] rx    hash: daemon -> "receivers deadline" (receivers waiting there)
//   KEYS[5] d     hash: seq -> payload
//   KEYS[6] h     hash: seq -> "name/pid/uid/gid/mode/sentNs/receipt" (names never hold
//                 '/'; receipt 1: its sender waits to learn who took it)
//   KEYS[7] r     hash: seq -> redeliveries
//   KEYS[8] n     hash: name -> seq (every message not yet gone holds its name)
//   KEYS[9] x     hash: "daemon:pid" -> deadline: who holds an exclusive mailbox
//   KEYS[10] p    hash: "daemon:pid" -> deadline: the two processes bound to a pair mailbox
// Events go to one channel, ipcfs:events: "m I" message, "r I" room, "c I" settings,
// "s I" semaphore post, "n" names, "d I SEQ PID" delivered (for a receipt).
#pragma once

namespace ipcfs::redis {

inline constexpr const char* kNow = R"(
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
)";

// ARGV: id n, then 8 per message: name payload pid uid gid mode sentNs receipt(0/1).
// Pushes in order while there is room. Returns {status, seq1, name1, seq2, name2, ...} for
// those that entered; status: 0 all entered, 1 no room for the next, 2 no such mailbox,
// 3 the next one's name is taken.
inline constexpr const char* kPush = R"(
local capacity = redis.call('HGET', KEYS[1], 'capacity')  -- always set while the mailbox exists
if not capacity then return {2} end
local cap = tonumber(capacity)
local qlen = redis.call('LLEN', KEYS[2])
local wasEmpty = qlen == 0
local waiting = -1
local out = {0}
local last = nil
local d, h, names, q = {}, {}, {}, {}
for k = 0, tonumber(ARGV[2]) - 1 do
  local b = 3 + k * 8
  if cap >= 0 and qlen >= cap then
    if waiting < 0 then
      waiting = 0
      local t = now()
      local rx = redis.call('HGETALL', KEYS[4])
      for i = 1, #rx, 2 do
        local c, dl = string.match(rx[i + 1], '(%d+) (%d+)')
        if tonumber(dl) > t then waiting = waiting + tonumber(c) else redis.call('HDEL', KEYS[4], rx[i]) end
      end
    end
    if qlen >= waiting then
      out[1] = 1
      break
    end
  end
  local name = ARGV[b]
  local seq
  if name == '' then
    repeat
      seq = redis.call('HINCRBY', KEYS[1], 'nextseq', 1)
      name = string.format('%010d', seq)
    until redis.call('HEXISTS', KEYS[8], name) == 0
  else
    if redis.call('HEXISTS', KEYS[8], name) == 1 then
      out[1] = 3
      break
    end
    seq = redis.call('HINCRBY', KEYS[1], 'nextseq', 1)
  end
  d[#d + 1] = seq
  d[#d + 1] = ARGV[b + 1]
  h[#h + 1] = seq
  h[#h + 1] = name .. '/' .. ARGV[b + 2] .. '/' .. ARGV[b + 3] .. '/' .. ARGV[b + 4] .. '/' .. ARGV[b + 5] .. '/' .. ARGV[b + 6] .. '/' .. ARGV[b + 7]
  names[#names + 1] = name
  names[#names + 1] = seq
  q[#q + 1] = seq
  qlen = qlen + 1
  last = ARGV[b + 6]
  out[#out + 1] = seq
  out[#out + 1] = name
end
if last then
  -- one command per kind for the whole batch (a batch is at most 1024 messages: within
  -- Lua's limit on unpacked arguments)
  redis.call('HSET', KEYS[5], unpack(d))
  redis.call('HSET', KEYS[6], unpack(h))
  redis.call('HSET', KEYS[8], unpack(names))
  redis.call('RPUSH', KEYS[2], unpack(q))
  redis.call('HINCRBY', KEYS[1], 'sent', (#out - 1) / 2)
  redis.call('HSET', KEYS[1], 'mtime', last)
  -- Only a queue that was empty needs announcing: a daemon's receivers wait only after a
  -- claim found it empty (and a claim that took all it asked for tries again).
  if wasEmpty then redis.call('PUBLISH', 'ipcfs:events', 'm ' .. ARGV[1]) end
end
return out
)";

// Claims whose lease ran out (their daemon died) go back to the head, counted as
// redelivered, announced (with `id`: a "message" event for mailbox id). Returns how many.
inline constexpr const char* kReclaimFn = R"(
local function reclaim(t, id)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', t)
  for i = #expired, 1, -1 do
    local s = expired[i]
    redis.call('ZREM', KEYS[3], s)
    redis.call('LPUSH', KEYS[2], s)
    redis.call('HINCRBY', KEYS[7], s, 1)
    redis.call('HINCRBY', KEYS[1], 'redelivered', 1)
  end
  if #expired > 0 and id then redis.call('PUBLISH', 'ipcfs:events', 'm ' .. id) end
  return #expired
end
)";

// ARGV: id. Announces what came back.
inline constexpr const char* kReclaim = R"(
return reclaim(now(), ARGV[1])
)";

// Claims up to `max` from the head under a lease of `leaseMs` (expired claims first go back
// to the head). Returns seq, header, payload, redeliveries for each claimed message.
inline constexpr const char* kClaimFn = R"(
local function claim(t, id, max, leaseMs)
  reclaim(t, id)
  local qlen = redis.call('LLEN', KEYS[2])
  local seqs = redis.call('LPOP', KEYS[2], max)
  if not seqs then return {} end
  local z = {}
  local deadline = t + leaseMs
  for _, s in ipairs(seqs) do
    z[#z + 1] = deadline
    z[#z + 1] = s
  end
  redis.call('ZADD', KEYS[3], unpack(z))
  local hs = redis.call('HMGET', KEYS[6], unpack(seqs))
  local ds = redis.call('HMGET', KEYS[5], unpack(seqs))
  local rs = redis.call('HMGET', KEYS[7], unpack(seqs))
  local out = {}
  for i, s in ipairs(seqs) do
    out[#out + 1] = s
    out[#out + 1] = hs[i] or ''
    out[#out + 1] = ds[i] or ''
    out[#out + 1] = rs[i] or '0'
  end
  -- Room: only senders that found it full wait for it (it was full before this claim).
  local cap = tonumber(redis.call('HGET', KEYS[1], 'capacity') or '-1')
  if cap >= 0 and qlen >= cap then redis.call('PUBLISH', 'ipcfs:events', 'r ' .. id) end
  return out
end
)";

// ARGV: id max leaseMs.
inline constexpr const char* kClaim = R"(
return claim(now(), ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
)";

// Forgets a message for good. ARGV[1]: seq.
inline constexpr const char* kForget = R"(
local function forget(s)
  local h = redis.call('HGET', KEYS[6], s)
  if h then
    local name = string.match(h, '^([^/]*)/')
    if redis.call('HGET', KEYS[8], name) == s then redis.call('HDEL', KEYS[8], name) end
  end
  redis.call('HDEL', KEYS[5], s)
  redis.call('HDEL', KEYS[6], s)
  redis.call('HDEL', KEYS[7], s)
end
)";

// ARGV: id thenClaim leaseMs, then seq readerPid per message. Returns {lost, claimed...}:
// how many had lost their lease (another daemon may have them now; the others are gone for
// good), then up to `thenClaim` messages claimed in the same round trip (as claim returns
// them): a reader taking one message after another through one descriptor wants the next.
inline constexpr const char* kAck = R"(
local lost = 0
local gone, readers = {}, {}
local function after()
  local out = {lost}
  if tonumber(ARGV[2]) > 0 then
    for _, v in ipairs(claim(now(), ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))) do out[#out + 1] = v end
  end
  return out
end
for i = 4, #ARGV - 1, 2 do
  local s = ARGV[i]
  local removed = redis.call('ZREM', KEYS[3], s)
  if removed == 0 then removed = redis.call('LREM', KEYS[2], 1, s) end
  if removed == 0 then
    lost = lost + 1
  else
    gone[#gone + 1] = s
    readers[#readers + 1] = ARGV[i + 1]
  end
end
if #gone == 0 then return after() end
local hs = redis.call('HMGET', KEYS[6], unpack(gone))
local names = {}
for i, s in ipairs(gone) do
  local h = hs[i] or ''
  if string.sub(h, -2) == '/1' then
    redis.call('PUBLISH', 'ipcfs:events', 'd ' .. ARGV[1] .. ' ' .. s .. ' ' .. readers[i])
  end
  names[#names + 1] = string.match(h, '^([^/]*)/') or ''
end
local owners = redis.call('HMGET', KEYS[8], unpack(names))
local freed = {}
for i, s in ipairs(gone) do
  if owners[i] == s then freed[#freed + 1] = names[i] end
end
if #freed > 0 then redis.call('HDEL', KEYS[8], unpack(freed)) end
redis.call('HDEL', KEYS[5], unpack(gone))
redis.call('HDEL', KEYS[6], unpack(gone))
redis.call('HDEL', KEYS[7], unpack(gone))
redis.call('HINCRBY', KEYS[1], 'received', #gone)
return after()
)";

// ARGV: id seq redelivered(0/1).
inline constexpr const char* kGiveBack = R"(
if redis.call('ZREM', KEYS[3], ARGV[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[7], ARGV[2], 1)
  redis.call('HINCRBY', KEYS[1], 'redelivered', 1)
end
redis.call('PUBLISH', 'ipcfs:events', 'm ' .. ARGV[1])
return 1
)";

// ARGV: leaseMs seq...
inline constexpr const char* kRenew = R"(
local t = now()
for i = 2, #ARGV do redis.call('ZADD', KEYS[3], 'XX', t + tonumber(ARGV[1]), ARGV[i]) end
return 0
)";

// ARGV: id daemon receivers leaseMs.
inline constexpr const char* kSetWaiting = R"(
if ARGV[3] == '0' then
  redis.call('HDEL', KEYS[4], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3] .. ' ' .. (now() + tonumber(ARGV[4])))
redis.call('PUBLISH', 'ipcfs:events', 'r ' .. ARGV[1])
return 0
)";

// ARGV: max id. Returns seq, header, payload, redeliveries of the first `max` queued messages.
inline constexpr const char* kQueued = R"(
reclaim(now(), ARGV[2])
local out = {}
for _, s in ipairs(redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)) do
  out[#out + 1] = s
  out[#out + 1] = redis.call('HGET', KEYS[6], s) or ''
  out[#out + 1] = redis.call('HGET', KEYS[5], s) or ''
  out[#out + 1] = redis.call('HGET', KEYS[7], s) or '0'
end
return out
)";

// ARGV: name. {} if no queued message has it, else seq, header, payload, redeliveries.
inline constexpr const char* kPeek = R"(
local s = redis.call('HGET', KEYS[8], ARGV[1])
if not s or redis.call('ZSCORE', KEYS[3], s) then return {} end
return {s, redis.call('HGET', KEYS[6], s) or '', redis.call('HGET', KEYS[5], s) or '', redis.call('HGET', KEYS[7], s) or '0'}
)";

// ARGV: id name. 1 removed; 0 no queued message has that name.
inline constexpr const char* kRemoveQueued = R"(
local s = redis.call('HGET', KEYS[8], ARGV[2])
if not s or redis.call('LREM', KEYS[2], 1, s) == 0 then return 0 end
forget(s)
redis.call('PUBLISH', 'ipcfs:events', 'r ' .. ARGV[1])
return 1
)";

// ARGV: id. For .status: queued messages and bytes, claimed ones, and the mailbox's counters.
inline constexpr const char* kStats = R"(
reclaim(now(), ARGV[1])
local seqs = redis.call('LRANGE', KEYS[2], 0, -1)
local bytes = 0
for _, s in ipairs(seqs) do bytes = bytes + redis.call('HSTRLEN', KEYS[5], s) end
local c = redis.call('HMGET', KEYS[1], 'sent', 'received', 'redelivered')
return {#seqs, bytes, redis.call('ZCARD', KEYS[3]), tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0')}
)";

// Policy exclusive: ARGV holder leaseMs. 1: `holder` holds it (now, or still); 0: another
// holder whose deadline has not passed does.
inline constexpr const char* kHold = R"(
local t = now()
local all = redis.call('HGETALL', KEYS[9])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then
    if tonumber(all[i + 1]) > t then return 0 end
    redis.call('HDEL', KEYS[9], all[i])
  end
end
redis.call('HSET', KEYS[9], ARGV[1], t + tonumber(ARGV[2]))
return 1
)";

// Policy pair: ARGV member leaseMs. 1: `member` is bound (now, or still: renewed); 0: two
// others whose deadlines have not passed are.
inline constexpr const char* kBind = R"(
local t = now()
local all = redis.call('HGETALL', KEYS[10])
local bound = 0
for i = 1, #all, 2 do
  if all[i] == ARGV[1] then
    redis.call('HSET', KEYS[10], ARGV[1], t + tonumber(ARGV[2]))
    return 1
  end
  if tonumber(all[i + 1]) > t then bound = bound + 1 else redis.call('HDEL', KEYS[10], all[i]) end
end
if bound >= 2 then return 0 end
redis.call('HSET', KEYS[10], ARGV[1], t + tonumber(ARGV[2]))
return 1
)";

// A mailbox's keys go; ARGV: id.
inline constexpr const char* kDropMailbox = R"(
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10])
return 0
)";

// Semaphores: KEYS[1] = ipcfs:{sI}, a hash: name mode uid gid mtime value.
// ARGV: id n max mtimeNs. The new value; -1 overflow; -2 gone.
inline constexpr const char* kPost = R"(
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local v = tonumber(redis.call('HGET', KEYS[1], 'value') or '0')
if v + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return -1 end
v = redis.call('HINCRBY', KEYS[1], 'value', ARGV[2])
redis.call('HSET', KEYS[1], 'mtime', ARGV[4])
redis.call('PUBLISH', 'ipcfs:events', 's ' .. ARGV[1])
return v
)";

// The value after one wait; -1 it was 0; -2 gone.
inline constexpr const char* kTryWait = R"(
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local v = tonumber(redis.call('HGET', KEYS[1], 'value') or '0')
if v <= 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'value', -1)
)";

}  // namespace ipcfs::redis
