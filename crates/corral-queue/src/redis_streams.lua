-- Shared helpers, prepended to every script of the Redis queue driver.
-- KEYS[1] is the key prefix (a hash tag such as "{corral}"); every key a
-- script touches starts with it, so a queue's keys live in one slot.
--
-- Keys:
--   P:job:<id>        hash: the job (fields as in the SQL table, plus
--                      entry = its stream entry id, slot = ready|delayed,
--                      chain_next = the next chain member's id)
--   P:s:<q>:<prio>    stream of ready jobs of queue q at priority prio
--                      (consumer group "w"); entry field id = the job id
--   P:prios:<q>       zset of the priorities queue q has streams for
--   P:streams         set of every stream (for the reaper's XAUTOCLAIM)
--   P:delayed         zset of pending jobs not yet due, by run_at
--   P:u:<key>         unique key -> job id
--   P:queues          set of queue names
--   P:jobs:<q>        zset (lexical) of every kept job id of queue q
--   P:all             zset (lexical) of every kept job id
--   P:c:<q>           hash of counters by state (pending = ready,
--                      scheduled = pending but not due)
--   P:failed:<q>      zset of failed job ids by finish time
--   P:done:<q>        zset of completed job ids by finish time
--   P:batch:<id>      hash: total, succeeded, failed, allowed_failures,
--                      callback_job_id, finished_at
--   P:batches         zset of finished batches by finish time
--   P:rate:<name>:<w> rate window counter
--   P:wake            pub/sub channel: a queue got a ready job
local P = KEYS[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function str(v)
  if v then return v end
  return ''
end

local function jkey(id) return P .. ':job:' .. id end

local function count(queue, field, delta)
  redis.call('HINCRBY', P .. ':c:' .. queue, field, delta)
end

-- The counter a job in `state` (and `slot`, for pending ones) is counted under.
local function counter(state, slot)
  if state == 'pending' and slot == 'delayed' then return 'scheduled' end
  return state
end

local function stream_of(queue, prio) return P .. ':s:' .. queue .. ':' .. prio end

local function ensure_stream(queue, prio)
  local s = stream_of(queue, prio)
  if redis.call('SADD', P .. ':streams', s) == 1 then
    redis.pcall('XGROUP', 'CREATE', s, 'w', '0', 'MKSTREAM')
    redis.call('ZADD', P .. ':prios:' .. queue, prio, prio)
  end
  return s
end

-- Puts a job whose hash says `pending` where it belongs: its stream when
-- due, else the delayed set; counts it.
local function place_pending(id, now)
  local j = jkey(id)
  local f = redis.call('HMGET', j, 'queue', 'priority', 'run_at')
  local queue, prio, run_at = f[1], f[2], tonumber(f[3])
  if run_at > now then
    redis.call('ZADD', P .. ':delayed', run_at, id)
    redis.call('HSET', j, 'slot', 'delayed', 'entry', '')
    count(queue, 'scheduled', 1)
  else
    local s = ensure_stream(queue, prio)
    local entry = redis.call('XADD', s, '*', 'id', id)
    redis.call('HSET', j, 'slot', 'ready', 'entry', entry)
    count(queue, 'pending', 1)
    redis.call('PUBLISH', P .. ':wake', queue)
  end
end

-- Takes a pending job out of its stream or the delayed set (uncounted).
local function unplace(id)
  local j = jkey(id)
  local f = redis.call('HMGET', j, 'queue', 'priority', 'entry', 'slot', 'state')
  local queue, prio, entry, slot, state = f[1], f[2], str(f[3]), str(f[4]), f[5]
  if entry ~= '' then
    local s = stream_of(queue, prio)
    redis.call('XACK', s, 'w', entry)
    redis.call('XDEL', s, entry)
  end
  if slot == 'delayed' then redis.call('ZREM', P .. ':delayed', id) end
  redis.call('HSET', j, 'entry', '', 'slot', '')
  return queue, counter(state, slot)
end

-- A waiting job (chain member, batch callback) becomes pending now.
local function release_waiting(id, now)
  local j = jkey(id)
  local f = redis.call('HMGET', j, 'state', 'queue')
  if f[1] ~= 'waiting' then return end
  count(f[2], 'waiting', -1)
  redis.call('HSET', j, 'state', 'pending', 'run_at', now)
  place_pending(id, now)
end

-- After a job completed (success) or failed for good: chain and batch.
local function followups(id, success, now)
  local j = jkey(id)
  local f = redis.call('HMGET', j, 'chain_next', 'batch_id')
  local next_id, batch = str(f[1]), str(f[2])
  if next_id ~= '' then
    if success then
      release_waiting(next_id, now)
    else
      local cur = next_id
      while cur ~= '' do
        local cj = jkey(cur)
        local c = redis.call('HMGET', cj, 'state', 'queue', 'chain_next')
        if c[1] == 'waiting' then
          count(c[2], 'waiting', -1)
          count(c[2], 'cancelled', 1)
          redis.call('HSET', cj, 'state', 'cancelled', 'finished_at', now)
        end
        cur = str(c[3])
      end
    end
  end
  if batch ~= '' then
    local b = P .. ':batch:' .. batch
    if redis.call('EXISTS', b) == 1 and str(redis.call('HGET', b, 'finished_at')) == '' then
      if success then
        redis.call('HINCRBY', b, 'succeeded', 1)
      else
        redis.call('HINCRBY', b, 'failed', 1)
      end
      local g = redis.call('HMGET', b, 'total', 'succeeded', 'failed', 'callback_job_id')
      if tonumber(g[2]) + tonumber(g[3]) >= tonumber(g[1]) then
        redis.call('HSET', b, 'finished_at', now)
        redis.call('ZADD', P .. ':batches', now, batch)
        if str(g[4]) ~= '' then release_waiting(g[4], now) end
      end
    end
  end
end

-- Ends a running job (the caller checked the fence): completed or failed.
local function end_job(id, success, err, now)
  local j = jkey(id)
  local queue = unplace(id)
  count(queue, 'running', -1)
  redis.call('HSET', j, 'locked_until', '', 'locked_by', '', 'finished_at', now)
  if success then
    redis.call('HSET', j, 'state', 'completed')
    count(queue, 'completed', 1)
    redis.call('ZADD', P .. ':done:' .. queue, now, id)
  else
    redis.call('HSET', j, 'state', 'failed', 'last_error', err)
    count(queue, 'failed', 1)
    redis.call('ZADD', P .. ':failed:' .. queue, now, id)
  end
  followups(id, success, now)
end
