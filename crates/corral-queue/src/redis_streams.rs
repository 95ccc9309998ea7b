//! The Redis driver: ready jobs are entries of Redis Streams (one stream per
//! queue and priority) read through one consumer group; the job itself is a
//! hash; delayed jobs wait in a sorted set until due.
//!
//! Every transition is one Lua script (`redis_streams.lua` holds the shared
//! helpers and the key layout), so it is atomic and the fence check (state
//! `running` under the claimed attempt) happens in the same step as the
//! write. A claim is `XREADGROUP` (the entry enters the group's pending
//! list); the lease is the hash's `locked_until` by Redis's own clock
//! (`TIME`). The reaper walks each stream's pending list with `XAUTOCLAIM`
//! (entries idle for a while) and returns the jobs whose lease has passed;
//! heartbeats reset an entry's idle time with `XCLAIM … JUSTID` so busy jobs
//! are not rescanned. Workers are woken by `PUBLISH` on `<prefix>:wake`.
//!
//! Redis cannot take part in the store's SQL transactions, so transactional
//! enqueue is the database driver's alone. One Redis server, not a cluster
//! (scripts touch keys they compute; the hash-tag prefix keeps them in one
//! slot).

use std::collections::HashMap;

use corral_store::Store;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use redis::Script;
use redis::aio::ConnectionManager;

use crate::QueueError;
use crate::driver::{Ending, RawBatch, RawClaim, RawRecord, RawStats, StoredJob};
use crate::job::{Enqueued, JobFilter};

const PRELUDE: &str = include_str!("redis_streams.lua");

/// Fields per job in the enqueue script's arguments.
const JOB_FIELDS: usize = 19;

/// Pending entries idle at least this long are looked at by the reaper
/// (each look resets the idle time, so a running job is looked at about
/// once per this interval; its lease is what decides).
const REAP_SCAN_IDLE_MS: i64 = 250;

const ENQUEUE: &str = r#"
local now = now_ms()
local F = 19
local n = tonumber(ARGV[1])
local out = {}
for k = 0, n - 1 do
  local base = 1 + k * F
  local function a(i) return ARGV[base + i] end
  local id, queue, unique = a(1), a(2), a(13)
  local dup = false
  if unique ~= '' then
    local ukey = P .. ':u:' .. unique
    if not redis.call('SET', ukey, id, 'NX') then
      table.insert(out, 'dup')
      table.insert(out, redis.call('GET', ukey))
      dup = true
    end
  end
  if not dup then
    local run_at = tonumber(a(8))
    if run_at < 0 then run_at = now + tonumber(a(9)) end
    local j = jkey(id)
    redis.call('HSET', j, 'id', id, 'queue', queue, 'kind', a(3), 'payload', a(4),
      'sensitive', a(5), 'priority', a(7), 'run_at', run_at, 'attempt', 0, 'released', 0,
      'max_attempts', a(10), 'backoff_base_ms', a(11), 'backoff_max_ms', a(12),
      'unique_key', unique, 'rate_key', a(14), 'batch_id', a(15), 'callback_for', a(16),
      'chain_id', a(17), 'chain_pos', a(18), 'chain_next', a(19), 'created_at', now,
      'started_at', '', 'finished_at', '', 'last_error', '', 'locked_until', '',
      'locked_by', '', 'entry', '', 'slot', '')
    redis.call('SADD', P .. ':queues', queue)
    redis.call('ZADD', P .. ':jobs:' .. queue, 0, id)
    redis.call('ZADD', P .. ':all', 0, id)
    if a(6) == '1' then
      redis.call('HSET', j, 'state', 'waiting')
      count(queue, 'waiting', 1)
    else
      redis.call('HSET', j, 'state', 'pending')
      place_pending(id, now)
    end
    table.insert(out, 'new')
    table.insert(out, id)
  end
end
local b = 1 + n * F
local batch = ARGV[b + 1]
if batch and batch ~= '' then
  local bk = P .. ':batch:' .. batch
  local total = tonumber(ARGV[b + 2])
  redis.call('HSET', bk, 'id', batch, 'total', total, 'succeeded', 0, 'failed', 0,
    'allowed_failures', ARGV[b + 3], 'callback_job_id', ARGV[b + 4], 'finished_at', '')
  if total == 0 then
    redis.call('HSET', bk, 'finished_at', now)
    redis.call('ZADD', P .. ':batches', now, batch)
    if ARGV[b + 4] ~= '' then release_waiting(ARGV[b + 4], now) end
  end
end
return out
"#;

const CLAIM: &str = r#"
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 200)
for _, id in ipairs(due) do
  redis.call('ZREM', P .. ':delayed', id)
  local f = redis.call('HMGET', jkey(id), 'state', 'slot', 'queue')
  if f[1] == 'pending' and f[2] == 'delayed' then
    count(f[3], 'scheduled', -1)
    place_pending(id, now)
  end
end
for i = 3, #ARGV do
  local queue = ARGV[i]
  local prios = redis.call('ZREVRANGEBYSCORE', P .. ':prios:' .. queue, '+inf', '-inf')
  for _, prio in ipairs(prios) do
    local s = stream_of(queue, prio)
    for tries = 1, 16 do
      local res = redis.call('XREADGROUP', 'GROUP', 'w', ARGV[1], 'COUNT', 1, 'STREAMS', s, '>')
      if not res then break end
      local entry = res[1][2][1]
      local entry_id, id = entry[1], entry[2][2]
      local j = jkey(id)
      local f = redis.call('HMGET', j, 'state', 'entry')
      if f[1] == 'pending' and f[2] == entry_id then
        redis.call('HINCRBY', j, 'attempt', 1)
        redis.call('HSET', j, 'state', 'running', 'locked_until', now + tonumber(ARGV[2]),
          'locked_by', ARGV[1], 'started_at', now, 'slot', '')
        count(queue, 'pending', -1)
        count(queue, 'running', 1)
        local g = redis.call('HMGET', j, 'id', 'queue', 'kind', 'payload', 'sensitive',
          'attempt', 'released', 'max_attempts', 'backoff_base_ms', 'backoff_max_ms',
          'rate_key', 'batch_id', 'callback_for', 'run_at', 'priority')
        local out = {}
        for k = 1, 15 do out[k] = str(g[k]) end
        out[16] = tostring(now)
        return out
      end
      -- A stale entry (its job was cleared or has moved on): drop it.
      redis.call('XACK', s, 'w', entry_id)
      redis.call('XDEL', s, entry_id)
    end
  end
end
return {}
"#;

const HEARTBEAT: &str = r#"
local now = now_ms()
local j = jkey(ARGV[1])
local f = redis.call('HMGET', j, 'state', 'attempt', 'entry', 'queue', 'priority')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', j, 'locked_until', now + tonumber(ARGV[3]))
if str(f[3]) ~= '' then
  redis.call('XCLAIM', stream_of(f[4], f[5]), 'w', 'heartbeat', 0, f[3], 'JUSTID')
end
return 1
"#;

const FINISH: &str = r#"
local now = now_ms()
local id = ARGV[1]
local j = jkey(id)
local f = redis.call('HMGET', j, 'state', 'attempt')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
local ending = ARGV[3]
if ending == 'completed' then
  end_job(id, true, '', now)
elseif ending == 'failed' then
  end_job(id, false, ARGV[4], now)
else
  local queue = unplace(id)
  count(queue, 'running', -1)
  redis.call('HSET', j, 'state', 'pending', 'run_at', now + tonumber(ARGV[5]),
    'locked_until', '', 'locked_by', '')
  if ending == 'retry' then
    redis.call('HSET', j, 'last_error', ARGV[4])
  else
    redis.call('HINCRBY', j, 'released', 1)
  end
  place_pending(id, now)
end
return 1
"#;

const REAP: &str = r#"
local now = now_ms()
local n = 0
for _, s in ipairs(redis.call('SMEMBERS', P .. ':streams')) do
  local cursor = '0-0'
  for round = 1, 10 do
    local res = redis.call('XAUTOCLAIM', s, 'w', 'reaper', ARGV[1], cursor, 'COUNT', 100)
    cursor = res[1]
    for _, e in ipairs(res[2]) do
      local entry_id, id = e[1], e[2][2]
      local j = jkey(id)
      local f = redis.call('HMGET', j, 'state', 'entry', 'locked_until', 'attempt', 'released',
        'max_attempts', 'queue')
      if f[1] == 'running' and f[2] == entry_id then
        if tonumber(f[3]) < now then
          n = n + 1
          if tonumber(f[4]) - tonumber(f[5]) >= tonumber(f[6]) then
            end_job(id, false, ARGV[3], now)
          else
            unplace(id)
            count(f[7], 'running', -1)
            redis.call('HSET', j, 'state', 'pending', 'locked_until', '', 'locked_by', '',
              'last_error', ARGV[2])
            place_pending(id, now)
          end
        end
      else
        redis.call('XACK', s, 'w', entry_id)
        redis.call('XDEL', s, entry_id)
      end
    end
    if cursor == '0-0' then break end
  end
end
return n
"#;

const RETRY: &str = r#"
local now = now_ms()
local id = ARGV[1]
local j = jkey(id)
local f = redis.call('HMGET', j, 'state', 'queue', 'attempt', 'batch_id', 'chain_next')
if f[1] ~= 'failed' then return 0 end
local queue = f[2]
redis.call('ZREM', P .. ':failed:' .. queue, id)
count(queue, 'failed', -1)
redis.call('HSET', j, 'state', 'pending', 'run_at', now, 'released', f[3], 'finished_at', '')
place_pending(id, now)
local batch = str(f[4])
if batch ~= '' then
  local b = P .. ':batch:' .. batch
  if redis.call('EXISTS', b) == 1 and str(redis.call('HGET', b, 'finished_at')) == ''
     and tonumber(redis.call('HGET', b, 'failed')) > 0 then
    redis.call('HINCRBY', b, 'failed', -1)
  end
end
local cur = str(f[5])
while cur ~= '' do
  local cj = jkey(cur)
  local c = redis.call('HMGET', cj, 'state', 'queue', 'chain_next')
  if c[1] == 'cancelled' then
    count(c[2], 'cancelled', -1)
    count(c[2], 'waiting', 1)
    redis.call('HSET', cj, 'state', 'waiting', 'finished_at', '')
  end
  cur = str(c[3])
end
return 1
"#;

const FORGET: &str = r#"
local function forget(id, queue, unique)
  if unique ~= '' and redis.call('GET', P .. ':u:' .. unique) == id then
    redis.call('DEL', P .. ':u:' .. unique)
  end
  redis.call('DEL', jkey(id))
  redis.call('ZREM', P .. ':jobs:' .. queue, id)
  redis.call('ZREM', P .. ':all', id)
  redis.call('ZREM', P .. ':failed:' .. queue, id)
  redis.call('ZREM', P .. ':done:' .. queue, id)
end
"#;

const CLEAR: &str = r#"
local queue = ARGV[1]
local n = 0
for _, id in ipairs(redis.call('ZRANGE', P .. ':jobs:' .. queue, 0, -1)) do
  local f = redis.call('HMGET', jkey(id), 'state', 'unique_key')
  if f[1] ~= 'running' then
    if f[1] then
      local _, c = unplace(id)
      count(queue, c, -1)
      n = n + 1
    end
    forget(id, queue, str(f[2]))
  end
end
return n
"#;

const PRUNE: &str = r#"
local now = now_ms()
local cutoff = now - tonumber(ARGV[1])
local n = 0
for _, queue in ipairs(redis.call('SMEMBERS', P .. ':queues')) do
  local d = P .. ':done:' .. queue
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', d, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)) do
    local f = redis.call('HMGET', jkey(id), 'state', 'unique_key')
    if f[1] == 'completed' then
      count(queue, 'completed', -1)
      forget(id, queue, str(f[2]))
      n = n + 1
    end
    redis.call('ZREM', d, id)
  end
end
for _, b in ipairs(redis.call('ZRANGEBYSCORE', P .. ':batches', '-inf', '(' .. cutoff)) do
  redis.call('DEL', P .. ':batch:' .. b)
  redis.call('ZREM', P .. ':batches', b)
end
return n
"#;

const STATS: &str = r#"
local now = now_ms()
local out = {}
for _, queue in ipairs(redis.call('SORT', P .. ':queues', 'ALPHA')) do
  local c = redis.call('HMGET', P .. ':c:' .. queue, 'pending', 'scheduled', 'waiting',
    'running', 'failed', 'completed')
  table.insert(out, queue)
  for k = 1, 6 do table.insert(out, str(c[k])) end
  table.insert(out, tostring(redis.call('ZCOUNT', P .. ':done:' .. queue, now - 60000, '+inf')))
  local oldest = nil
  for _, prio in ipairs(redis.call('ZRANGE', P .. ':prios:' .. queue, 0, -1)) do
    local s = stream_of(queue, prio)
    local last = '0-0'
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
      for k = 1, #g, 2 do
        if g[k] == 'last-delivered-id' then last = g[k + 1] end
      end
    end
    local first = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', 1)
    if first[1] then
      local ms = tonumber(string.match(first[1][1], '^(%d+)'))
      if oldest == nil or ms < oldest then oldest = ms end
    end
  end
  if oldest then table.insert(out, tostring(oldest)) else table.insert(out, '') end
  table.insert(out, tostring(now))
end
return out
"#;

#[derive(Debug)]
struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    finish: Script,
    reap: Script,
    retry: Script,
    clear: Script,
    prune: Script,
    stats: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            enqueue: s(ENQUEUE),
            claim: s(CLAIM),
            heartbeat: s(HEARTBEAT),
            finish: s(FINISH),
            reap: s(REAP),
            retry: s(RETRY),
            clear: s(&format!("{FORGET}\n{CLEAR}")),
            prune: s(&format!("{FORGET}\n{PRUNE}")),
            stats: s(STATS),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RedisDriver {
    conn: ConnectionManager,
    client: redis::Client,
    /// `{prefix}`: the hash tag every key starts with.
    prefix: String,
    store: Store,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A stored text field, empty meaning absent.
fn opt(map: &HashMap<String, String>, name: &str) -> Option<String> {
    map.get(name).filter(|v| !v.is_empty()).cloned()
}

fn text(map: &HashMap<String, String>, name: &str) -> String {
    map.get(name).cloned().unwrap_or_default()
}

fn int(map: &HashMap<String, String>, name: &str) -> Result<i64, QueueError> {
    opt_int(map, name)?.ok_or_else(|| QueueError::Corrupt(format!("redis job has no {name}")))
}

fn opt_int(map: &HashMap<String, String>, name: &str) -> Result<Option<i64>, QueueError> {
    match map.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_int(v).map(Some),
    }
}

fn parse_int(v: &str) -> Result<i64, QueueError> {
    v.parse::<i64>()
        .or_else(|_| v.parse::<f64>().map(|f| f as i64))
        .map_err(|_| QueueError::Corrupt(format!("redis queue value `{v}` is not a number")))
}

impl RedisDriver {
    pub(crate) async fn connect(
        url: &str,
        prefix: &str,
        store: Store,
    ) -> Result<RedisDriver, QueueError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(QueueError::Invalid(
                "the redis queue prefix must be non-empty and without braces".to_owned(),
            ));
        }
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Ok(RedisDriver {
            conn,
            client,
            prefix: format!("{{{prefix}}}"),
            store,
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn push_job(invocation: &mut redis::ScriptInvocation<'_>, job: &StoredJob, next: &str) {
        invocation
            .arg(&job.id)
            .arg(&job.queue)
            .arg(&job.kind)
            .arg(&job.payload)
            .arg(i64::from(job.sensitive))
            .arg(i64::from(job.waiting))
            .arg(job.priority)
            .arg(job.run_at.unwrap_or(-1))
            .arg(job.delay_ms)
            .arg(job.max_attempts)
            .arg(job.backoff_base_ms)
            .arg(job.backoff_max_ms)
            .arg(job.unique_key.as_deref().unwrap_or_default())
            .arg(job.rate_key.as_deref().unwrap_or_default())
            .arg(job.batch_id.as_deref().unwrap_or_default())
            .arg(job.callback_for.as_deref().unwrap_or_default())
            .arg(job.chain_id.as_deref().unwrap_or_default())
            .arg(job.chain_pos.map(|p| p.to_string()).unwrap_or_default())
            .arg(next);
    }

    pub(crate) async fn enqueue(&self, job: &StoredJob) -> Result<Enqueued, QueueError> {
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.key(&self.prefix).arg(1);
        RedisDriver::push_job(&mut invocation, job, "");
        let out: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        match out.as_slice() {
            [status, id] if status == "new" => Ok(Enqueued::Created(id.clone())),
            [_, id] => Ok(Enqueued::Duplicate(id.clone())),
            _ => Err(QueueError::Corrupt(
                "redis enqueue answered oddly".to_owned(),
            )),
        }
    }

    pub(crate) async fn enqueue_many(
        &self,
        jobs: &[StoredJob],
    ) -> Result<Vec<Enqueued>, QueueError> {
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.key(&self.prefix).arg(jobs.len());
        for job in jobs {
            RedisDriver::push_job(&mut invocation, job, "");
        }
        let out: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        if out.len() != jobs.len() * 2 {
            return Err(QueueError::Corrupt(
                "redis enqueue answered oddly".to_owned(),
            ));
        }
        let statuses = out.iter().step_by(2);
        let ids = out.iter().skip(1).step_by(2);
        Ok(statuses
            .zip(ids)
            .map(|(status, id)| {
                if status == "new" {
                    Enqueued::Created(id.clone())
                } else {
                    Enqueued::Duplicate(id.clone())
                }
            })
            .collect())
    }

    pub(crate) async fn enqueue_all(
        &self,
        jobs: &[StoredJob],
        batch: Option<(&str, i64, Option<&str>)>,
    ) -> Result<(), QueueError> {
        debug_assert_eq!(JOB_FIELDS, 19);
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.key(&self.prefix).arg(jobs.len());
        for job in jobs {
            let next = match (&job.chain_id, job.chain_pos) {
                (Some(chain), Some(pos)) => jobs
                    .iter()
                    .find(|j| j.chain_id.as_ref() == Some(chain) && j.chain_pos == Some(pos + 1))
                    .map(|j| j.id.as_str())
                    .unwrap_or_default(),
                _ => "",
            };
            RedisDriver::push_job(&mut invocation, job, next);
        }
        if let Some((id, allowed, callback)) = batch {
            let total = jobs.iter().filter(|j| j.batch_id.is_some()).count();
            invocation
                .arg(id)
                .arg(total)
                .arg(allowed)
                .arg(callback.unwrap_or_default());
        }
        let _: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Up to `limit` claims, one script call each (each call is one atomic
    /// claim; Redis answers in microseconds, so batching them buys little).
    pub(crate) async fn claim(
        &self,
        queues: &[String],
        worker: &str,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<RawClaim>, QueueError> {
        let mut claims = Vec::new();
        while claims.len() < limit {
            match self.claim_one(queues, worker, lease_ms).await? {
                Some(claim) => claims.push(claim),
                None => break,
            }
        }
        Ok(claims)
    }

    /// Completes each job in turn (one script call each).
    pub(crate) async fn complete_many(
        &self,
        jobs: &[(&str, i64)],
    ) -> Result<Vec<bool>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        for (id, attempt) in jobs {
            out.push(self.finish(id, *attempt, Ending::Completed).await?);
        }
        Ok(out)
    }

    async fn claim_one(
        &self,
        queues: &[String],
        worker: &str,
        lease_ms: i64,
    ) -> Result<Option<RawClaim>, QueueError> {
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation.key(&self.prefix).arg(worker).arg(lease_ms);
        for queue in queues {
            invocation.arg(queue);
        }
        let out: Vec<String> = invocation.invoke_async(&mut self.conn.clone()).await?;
        if out.len() < 16 {
            return Ok(None);
        }
        let o = |i: usize| Some(out[i].clone()).filter(|v| !v.is_empty());
        Ok(Some(RawClaim {
            id: out[0].clone(),
            queue: out[1].clone(),
            kind: out[2].clone(),
            payload: out[3].clone(),
            sensitive: parse_int(&out[4])?,
            attempt: parse_int(&out[5])?,
            released: parse_int(&out[6])?,
            max_attempts: parse_int(&out[7])?,
            backoff_base_ms: parse_int(&out[8])?,
            backoff_max_ms: parse_int(&out[9])?,
            rate_key: o(10),
            batch_id: o(11),
            callback_for: o(12),
            run_at: parse_int(&out[13])?,
            priority: parse_int(&out[14])?,
            db_now: parse_int(&out[15])?,
        }))
    }

    pub(crate) async fn heartbeat(
        &self,
        id: &str,
        attempt: i64,
        lease_ms: i64,
    ) -> Result<bool, QueueError> {
        let held: i64 = self
            .scripts
            .heartbeat
            .key(&self.prefix)
            .arg(id)
            .arg(attempt)
            .arg(lease_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(held == 1)
    }

    pub(crate) async fn finish(
        &self,
        id: &str,
        attempt: i64,
        ending: Ending<'_>,
    ) -> Result<bool, QueueError> {
        let (name, error, delay_ms) = match ending {
            Ending::Completed => ("completed", "", 0),
            Ending::Failed { error } => ("failed", error, 0),
            Ending::Retry { error, delay_ms } => ("retry", error, delay_ms),
            Ending::Released { delay_ms } => ("released", "", delay_ms),
        };
        let held: i64 = self
            .scripts
            .finish
            .key(&self.prefix)
            .arg(id)
            .arg(attempt)
            .arg(name)
            .arg(error)
            .arg(delay_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(held == 1)
    }

    pub(crate) async fn reap(&self) -> Result<u64, QueueError> {
        let n: i64 = self
            .scripts
            .reap
            .key(&self.prefix)
            .arg(REAP_SCAN_IDLE_MS)
            .arg("lease expired: the worker stopped heartbeating")
            .arg("lease expired on the last attempt: the worker stopped heartbeating (poison job?)")
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn stats(&self) -> Result<Vec<RawStats>, QueueError> {
        let out: Vec<String> = self
            .scripts
            .stats
            .key(&self.prefix)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let n = |v: &str| if v.is_empty() { Ok(0) } else { parse_int(v) };
        out.chunks(10)
            .filter(|row| row.len() == 10)
            .map(|row| {
                Ok(RawStats {
                    queue: row[0].clone(),
                    pending: n(&row[1])?,
                    scheduled: n(&row[2])?,
                    waiting: n(&row[3])?,
                    running: n(&row[4])?,
                    failed: n(&row[5])?,
                    completed: n(&row[6])?,
                    completed_last_minute: n(&row[7])?,
                    oldest_ready: if row[8].is_empty() {
                        None
                    } else {
                        Some(parse_int(&row[8])?)
                    },
                    mean_wait_ms: None,
                    db_now: n(&row[9])?,
                })
            })
            .collect()
    }

    fn record(map: &HashMap<String, String>) -> Result<RawRecord, QueueError> {
        Ok(RawRecord {
            id: text(map, "id"),
            queue: text(map, "queue"),
            kind: text(map, "kind"),
            state: text(map, "state"),
            priority: int(map, "priority")?,
            attempt: int(map, "attempt")?,
            released: int(map, "released")?,
            max_attempts: int(map, "max_attempts")?,
            run_at: int(map, "run_at")?,
            last_error: opt(map, "last_error"),
            payload: text(map, "payload"),
            sensitive: int(map, "sensitive")?,
            unique_key: opt(map, "unique_key"),
            batch_id: opt(map, "batch_id"),
            chain_id: opt(map, "chain_id"),
            created_at: int(map, "created_at")?,
            started_at: opt_int(map, "started_at")?,
            finished_at: opt_int(map, "finished_at")?,
        })
    }

    pub(crate) async fn job(&self, id: &str) -> Result<Option<RawRecord>, QueueError> {
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&format!("job:{id}")))
            .query_async(&mut self.conn.clone())
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        RedisDriver::record(&map).map(Some)
    }

    /// Walks the kept ids newest first (lexical order of UUIDv7s), reading
    /// each hash and keeping those that match.
    pub(crate) async fn list(&self, filter: &JobFilter) -> Result<Vec<RawRecord>, QueueError> {
        let index = match &filter.queue {
            Some(queue) => self.key(&format!("jobs:{queue}")),
            None => self.key("all"),
        };
        let limit = filter.limit.unwrap_or(50).clamp(1, 1000) as usize;
        let mut max = match &filter.before {
            Some(before) => format!("({before}"),
            None => "+".to_owned(),
        };
        let mut out = Vec::new();
        let mut conn = self.conn.clone();
        for _page in 0..50 {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&index)
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(200)
                .query_async(&mut conn)
                .await?;
            let Some(last) = ids.last() else { break };
            max = format!("({last}");
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(self.key(&format!("job:{id}")));
            }
            let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            for map in maps.iter().filter(|m| !m.is_empty()) {
                let record = RedisDriver::record(map)?;
                if filter.state.is_none_or(|s| s.as_str() == record.state) {
                    out.push(record);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn retry(&self, id: &str) -> Result<bool, QueueError> {
        let done: i64 = self
            .scripts
            .retry
            .key(&self.prefix)
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(done == 1)
    }

    pub(crate) async fn failed_ids(&self, queue: Option<&str>) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let queues: Vec<String> = match queue {
            Some(queue) => vec![queue.to_owned()],
            None => {
                redis::cmd("SMEMBERS")
                    .arg(self.key("queues"))
                    .query_async(&mut conn)
                    .await?
            }
        };
        let mut ids = Vec::new();
        for queue in queues {
            let some: Vec<String> = redis::cmd("ZREVRANGE")
                .arg(self.key(&format!("failed:{queue}")))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            ids.extend(some);
        }
        Ok(ids)
    }

    pub(crate) async fn clear(&self, queue: &str) -> Result<u64, QueueError> {
        let n: i64 = self
            .scripts
            .clear
            .key(&self.prefix)
            .arg(queue)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn prune(&self, age_ms: i64) -> Result<u64, QueueError> {
        let n: i64 = self
            .scripts
            .prune
            .key(&self.prefix)
            .arg(age_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn batch(&self, id: &str) -> Result<Option<RawBatch>, QueueError> {
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&format!("batch:{id}")))
            .query_async(&mut self.conn.clone())
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        Ok(Some(RawBatch {
            id: text(&map, "id"),
            total: int(&map, "total")?,
            succeeded: int(&map, "succeeded")?,
            failed: int(&map, "failed")?,
            allowed_failures: int(&map, "allowed_failures")?,
            callback_job_id: opt(&map, "callback_job_id"),
            finished_at: opt_int(&map, "finished_at")?,
        }))
    }

    pub(crate) async fn rate_hit(
        &self,
        name: &str,
        window_start: i64,
        window_ms: i64,
    ) -> Result<i64, QueueError> {
        let key = self.key(&format!("rate:{name}:{window_start}"));
        let (count,): (i64,) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms * 2)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }

    /// Queue names as jobs become ready, until the subscription drops.
    pub(crate) async fn wake_events(&self) -> Result<BoxStream<'static, String>, QueueError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.key("wake")).await?;
        Ok(pubsub
            .into_on_message()
            .map(|msg| msg.get_payload::<String>().unwrap_or_default())
            .boxed())
    }
}
