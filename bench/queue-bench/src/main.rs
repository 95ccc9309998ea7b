//! Queue throughput: no-op jobs enqueued, drained and run end to end per
//! second through `corral-queue`'s public API (as `corral serve` uses it),
//! on SQLite, PostgreSQL and Redis, each against a *floor* measured in the
//! same run on the same database: the fewest raw statements a leased queue
//! needs per job (one insert; one claim; one completion), issued with the
//! same pool and the same concurrency. The ratio queue/floor is what the
//! queue's bookkeeping costs over the database's own limit; absolute rates
//! alone mean little on a shared machine.
//!
//! Rounds alternate floor and queue so that a burst of load from elsewhere
//! hits both; the table gives medians, every round's value, and ratios.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use corral_queue::{DriverConfig, NewJob, Queue, QueueConfig, WorkerOptions, Workers};
use corral_store::{Store, StoreConfig};
use serde_json::{Value, json};
use sqlx::{AnyPool, AssertSqlSafe, Connection as _, Executor as _};

/// The queue the benchmark's jobs go to.
const QUEUE: &str = "bench";
/// The no-op kind.
const KIND: &str = "noop";

#[derive(Debug, Clone, Parser)]
#[command(about = "corral-queue throughput against a raw-SQL floor in the same run")]
struct Args {
    /// Jobs per measurement.
    #[arg(long, env = "QUEUE_BENCH_JOBS", default_value_t = 10_000)]
    jobs: u64,
    /// Rounds (each runs the floor, then the queue).
    #[arg(long, env = "QUEUE_BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Concurrent producers (tasks enqueueing).
    #[arg(long, env = "QUEUE_BENCH_PRODUCERS", default_value_t = 4)]
    producers: usize,
    /// Worker concurrency (`WorkerOptions::concurrency`; floor consumers).
    #[arg(long, env = "QUEUE_BENCH_WORKERS", default_value_t = 32)]
    workers: usize,
    /// Database pool size (`database.max_connections`; the server's default is 10).
    #[arg(long, env = "QUEUE_BENCH_POOL", default_value_t = 10)]
    pool: u32,
    /// Jobs per `enqueue_many` call in the bulk-enqueue measurement (0 skips it).
    #[arg(long, env = "QUEUE_BENCH_BULK", default_value_t = 100)]
    bulk: usize,
    /// Which targets to run, comma-separated: sqlite, postgres, redis.
    #[arg(
        long,
        env = "QUEUE_BENCH_TARGETS",
        value_delimiter = ',',
        default_value = "sqlite,postgres,redis"
    )]
    targets: Vec<Target>,
    /// PostgreSQL server (a database of its own is created and dropped).
    #[arg(
        long,
        env = "QUEUE_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Redis server (keys under a prefix of their own, deleted afterwards).
    #[arg(
        long,
        env = "QUEUE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Longest one measurement may take before the run is abandoned.
    #[arg(long, env = "QUEUE_BENCH_TIMEOUT_SECS", default_value_t = 120)]
    timeout_secs: u64,
    /// Where the markdown table is written (default bench/results/queue.md).
    #[arg(long, env = "QUEUE_BENCH_OUT")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    Sqlite,
    Postgres,
    Redis,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Sqlite => "SQLite",
            Target::Postgres => "PostgreSQL",
            Target::Redis => "Redis",
        }
    }
}

/// What is measured, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// N jobs enqueued one per call by the producers, no workers running.
    Enqueue,
    /// N jobs enqueued `bulk` per call (`Queue::enqueue_many`).
    EnqueueBulk,
    /// The N queued jobs run by the workers.
    Drain,
    /// Producers and workers at once: N jobs enqueued and completed.
    EndToEnd,
    /// The same with producers enqueueing `bulk` jobs per call.
    EndToEndBulk,
}

const PHASES: [Phase; 5] = [
    Phase::Enqueue,
    Phase::EnqueueBulk,
    Phase::Drain,
    Phase::EndToEnd,
    Phase::EndToEndBulk,
];

impl Phase {
    fn label(self, args: &Args) -> String {
        match self {
            Phase::Enqueue => format!("enqueue ({} producers, 1 job/call)", args.producers),
            Phase::EnqueueBulk => format!(
                "enqueue ({} producers, {} jobs/call)",
                args.producers, args.bulk
            ),
            Phase::Drain => format!("drain ({} workers)", args.workers),
            Phase::EndToEnd => format!(
                "end to end ({} producers 1 job/call + {} workers)",
                args.producers, args.workers
            ),
            Phase::EndToEndBulk => format!(
                "end to end ({} producers {} jobs/call + {} workers)",
                args.producers, args.bulk, args.workers
            ),
        }
    }
}

/// Jobs per second of each round, floor and queue, per phase.
#[derive(Debug, Default)]
struct Samples {
    floor: Vec<Vec<f64>>,
    queue: Vec<Vec<f64>>,
}

impl Samples {
    fn new() -> Samples {
        Samples {
            floor: vec![Vec::new(); PHASES.len()],
            queue: vec![Vec::new(); PHASES.len()],
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.jobs == 0 || args.rounds == 0 || args.producers == 0 || args.workers == 0 {
        bail!("jobs, rounds, producers and workers must be at least 1");
    }
    sqlx::any::install_default_drivers();
    let started = Instant::now();
    let mut report = header(&args).await;
    for &target in &args.targets {
        eprintln!("== {} ==", target.name());
        let samples = run_target(&args, target)
            .await
            .with_context(|| format!("benchmarking {}", target.name()))?;
        report.push_str(&table(&args, target, &samples));
    }
    let _ = writeln!(
        report,
        "\nTotal run time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results/queue.md"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("written to {}", out.display());
    Ok(())
}

async fn header(args: &Args) -> String {
    let mut s = String::from("# Queue throughput (no-op jobs)\n\n");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        s,
        "Run at Unix {}; {cores} cores, load average at start {}.",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    if args.targets.contains(&Target::Postgres) {
        match pg_settings(&args.postgres_url).await {
            Ok(settings) => {
                let _ = writeln!(s, "PostgreSQL: {settings}.");
            }
            Err(error) => {
                let _ = writeln!(s, "PostgreSQL settings unknown: {error:#}.");
            }
        }
    }
    let _ = writeln!(
        s,
        "{} jobs per measurement, {} rounds (floor, then queue, in each), \
         pool of {} connections, {} producers, {} workers.\n",
        args.jobs, args.rounds, args.pool, args.producers, args.workers
    );
    s.push_str(
        "Floor = the raw statements a leased queue needs per job on the same \
         database, pool and concurrency: SQL `INSERT` one row; claim \
         `UPDATE … WHERE id = (SELECT … ORDER BY id LIMIT 1 [FOR UPDATE SKIP LOCKED]) \
         RETURNING id`; completion `DELETE … WHERE id = $1` (each its own \
         autocommit statement, bulk = one multi-row `INSERT`); Redis `XADD`; \
         `XREADGROUP COUNT 1`; `XACK`. Queue = `Queue::enqueue` / \
         `Queue::enqueue_many` and `Workers` with a no-op handler. Rates are \
         jobs/s; ratio = queue median / floor median.\n",
    );
    s
}

async fn pg_settings(url: &str) -> anyhow::Result<String> {
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let mut parts = Vec::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
    ] {
        let value: String =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT current_setting('{name}')")))
                .fetch_one(&mut conn)
                .await?;
        parts.push(format!("{name} = {value}"));
    }
    let _ = conn.close().await;
    Ok(parts.join(", "))
}

/// A fresh database (and Redis prefix) for one target, removed on `cleanup`.
struct Setup {
    target: Target,
    store: Store,
    queue: Queue,
    pg_admin: Option<(String, String)>,
    redis: Option<(redis::aio::ConnectionManager, String)>,
    /// Wakes idle floor consumers when a floor producer has added rows (the
    /// in-process wake-up the queue's own enqueues give its workers).
    floor_wake: Arc<tokio::sync::Notify>,
    _dir: Option<tempfile::TempDir>,
}

async fn setup(args: &Args, target: Target) -> anyhow::Result<Setup> {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let (config, pg_admin, dir) = if target == Target::Postgres {
        let name = format!("corral_bench_{unique}");
        let mut conn = sqlx::AnyConnection::connect(&args.postgres_url)
            .await
            .context("connecting to PostgreSQL")?;
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        let _ = conn.close().await;
        let base = args
            .postgres_url
            .rsplit_once('/')
            .map_or(args.postgres_url.as_str(), |(b, _)| b);
        let config = StoreConfig {
            url: format!("{base}/{name}"),
            max_connections: args.pool,
            acquire_timeout: Duration::from_secs(30),
        };
        (config, Some((args.postgres_url.clone(), name)), None)
    } else {
        // Redis jobs need a store too (the server always has one).
        let dir = tempfile::tempdir()?;
        let mut config = StoreConfig::sqlite_in(dir.path());
        config.max_connections = args.pool;
        config.acquire_timeout = Duration::from_secs(30);
        (config, None, Some(dir))
    };
    let store = Store::open(&config).await?;
    let (driver, redis) = if target == Target::Redis {
        let prefix = format!("corral-bench-{unique}");
        let client = redis::Client::open(args.redis_url.as_str())?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        let driver = DriverConfig::Redis {
            url: args.redis_url.clone(),
            prefix: prefix.clone(),
        };
        (driver, Some((conn, format!("{{{prefix}}}"))))
    } else {
        (DriverConfig::Database, None)
    };
    let queue = Queue::open(
        store.clone(),
        QueueConfig {
            driver,
            ..QueueConfig::default()
        },
    )
    .await?;
    if target != Target::Redis {
        store
            .pool()
            .execute(
                "CREATE TABLE bench_floor (id TEXT PRIMARY KEY, payload TEXT NOT NULL, \
                 state TEXT NOT NULL)",
            )
            .await?;
        store
            .pool()
            .execute("CREATE INDEX bench_floor_ready ON bench_floor (id) WHERE state = 'pending'")
            .await?;
    }
    Ok(Setup {
        target,
        store,
        queue,
        pg_admin,
        redis,
        floor_wake: Arc::default(),
        _dir: dir,
    })
}

impl Setup {
    async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin, name)) = self.pg_admin
            && let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await
        {
            let _ = conn
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
            let _ = conn.close().await;
        }
        if let Some((mut conn, prefix)) = self.redis {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for key in keys {
                let _: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(key).query_async(&mut conn).await;
            }
        }
    }

    /// Empties the queue's and the floor's tables (or streams) between runs.
    async fn reset(&self) -> anyhow::Result<()> {
        match &self.redis {
            None => {
                let pool = self.store.pool();
                pool.execute("DELETE FROM queue_jobs").await?;
                pool.execute("DELETE FROM bench_floor").await?;
                if self.target == Target::Postgres {
                    pool.execute("VACUUM ANALYZE queue_jobs").await?;
                    pool.execute("VACUUM ANALYZE bench_floor").await?;
                }
            }
            Some((conn, prefix)) => {
                let mut conn = conn.clone();
                let cleared = self.queue.clear(QUEUE).await?;
                let _ = cleared;
                let _: redis::RedisResult<()> = redis::cmd("DEL")
                    .arg(format!("{prefix}:floor"))
                    .query_async(&mut conn)
                    .await;
                let _: () = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(format!("{prefix}:floor"))
                    .arg("g")
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }
}

async fn run_target(args: &Args, target: Target) -> anyhow::Result<Samples> {
    let setup = setup(args, target).await?;
    let result = rounds(args, &setup).await;
    setup.cleanup().await;
    result
}

async fn rounds(args: &Args, setup: &Setup) -> anyhow::Result<Samples> {
    let mut samples = Samples::new();
    let timeout = Duration::from_secs(args.timeout_secs);
    for round in 0..args.rounds {
        for floor in [true, false] {
            for (i, &phase) in PHASES.iter().enumerate() {
                if matches!(phase, Phase::EnqueueBulk | Phase::EndToEndBulk) && args.bulk == 0 {
                    continue;
                }
                // Drain runs on the jobs of the bulk enqueue (or of the
                // single enqueue when bulk is off); every other phase starts
                // from empty tables.
                if phase != Phase::Drain {
                    setup.reset().await?;
                }
                let run = measure(args, setup, phase, floor);
                let elapsed = tokio::time::timeout(timeout, run)
                    .await
                    .with_context(|| format!("{} took over {timeout:?}", phase.label(args)))??;
                let rate = args.jobs as f64 / elapsed.as_secs_f64();
                eprintln!(
                    "round {} {:5} {:<55} {:>9.0} jobs/s",
                    round + 1,
                    if floor { "floor" } else { "queue" },
                    phase.label(args),
                    rate
                );
                let bucket = if floor {
                    &mut samples.floor
                } else {
                    &mut samples.queue
                };
                bucket[i].push(rate);
            }
        }
    }
    setup.reset().await?;
    Ok(samples)
}

async fn measure(
    args: &Args,
    setup: &Setup,
    phase: Phase,
    floor: bool,
) -> anyhow::Result<Duration> {
    match (phase, floor) {
        (Phase::Enqueue, true) => floor_produce(args, setup, 1).await,
        (Phase::EnqueueBulk, true) => floor_produce(args, setup, args.bulk).await,
        (Phase::Drain, true) => floor_consume(args, setup, false).await,
        (Phase::EndToEnd | Phase::EndToEndBulk, true) => {
            let per_call = if phase == Phase::EndToEnd {
                1
            } else {
                args.bulk
            };
            let started = Instant::now();
            let (produced, consumed) = tokio::join!(
                floor_produce(args, setup, per_call),
                floor_consume(args, setup, true)
            );
            produced?;
            consumed?;
            Ok(started.elapsed())
        }
        (Phase::Enqueue, false) => queue_produce(args, &setup.queue, 1).await,
        (Phase::EnqueueBulk, false) => queue_produce(args, &setup.queue, args.bulk).await,
        (Phase::Drain, false) => {
            let workers = start_workers(args, &setup.queue);
            let started = Instant::now();
            wait_completed(&workers, args.jobs).await;
            let elapsed = started.elapsed();
            workers.shutdown(Duration::from_secs(10)).await;
            Ok(elapsed)
        }
        (Phase::EndToEnd | Phase::EndToEndBulk, false) => {
            let per_call = if phase == Phase::EndToEnd {
                1
            } else {
                args.bulk
            };
            let workers = start_workers(args, &setup.queue);
            let started = Instant::now();
            let (produced, ()) = tokio::join!(
                queue_produce(args, &setup.queue, per_call),
                wait_completed(&workers, args.jobs)
            );
            let elapsed = started.elapsed();
            workers.shutdown(Duration::from_secs(10)).await;
            produced?;
            Ok(elapsed)
        }
    }
}

/// The share of `total` that producer or consumer `i` of `n` handles.
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

fn job(n: u64) -> NewJob {
    NewJob::new(KIND, json!({ "n": n })).queue(QUEUE)
}

async fn queue_produce(args: &Args, queue: &Queue, per_call: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..args.producers {
        let queue = queue.clone();
        let count = share(args.jobs, args.producers, p);
        tasks.spawn(async move {
            let mut left = count;
            while left > 0 {
                let take = left.min(per_call as u64);
                if per_call == 1 {
                    queue.enqueue(job(left)).await?;
                } else {
                    let jobs = (0..take).map(|k| job(left - k)).collect();
                    queue.enqueue_many(jobs).await?;
                }
                left -= take;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

fn start_workers(args: &Args, queue: &Queue) -> corral_queue::WorkerHandle {
    let mut workers = Workers::new(queue.clone());
    workers.register(KIND, |_: Value, _ctx| async { Ok(()) });
    workers.start(WorkerOptions {
        queues: vec![QUEUE.to_owned()],
        concurrency: args.workers,
        name: "bench".to_owned(),
        ..WorkerOptions::default()
    })
}

async fn wait_completed(workers: &corral_queue::WorkerHandle, jobs: u64) {
    while workers.completed() < jobs {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Raw inserts (`per_call` rows per statement) or `XADD`s.
async fn floor_produce(args: &Args, setup: &Setup, per_call: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..args.producers {
        let count = share(args.jobs, args.producers, p);
        let pool = setup.store.pool().clone();
        let redis = setup.redis.clone();
        let wake = setup.floor_wake.clone();
        tasks.spawn(async move {
            let mut left = count;
            while left > 0 {
                let take = left.min(per_call as u64);
                match &redis {
                    None => floor_insert(&pool, take).await?,
                    Some((conn, prefix)) => {
                        let mut pipe = redis::pipe();
                        for k in 0..take {
                            pipe.cmd("XADD")
                                .arg(format!("{prefix}:floor"))
                                .arg("*")
                                .arg("n")
                                .arg(left - k)
                                .ignore();
                        }
                        let () = pipe.query_async(&mut conn.clone()).await?;
                    }
                }
                // One consumer per row, as a queue would wake them.
                for _ in 0..take {
                    wake.notify_one();
                }
                left -= take;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

async fn floor_insert(pool: &AnyPool, rows: u64) -> anyhow::Result<()> {
    let values = (0..rows)
        .map(|k| format!("(${}, $1, 'pending')", k + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("INSERT INTO bench_floor (id, payload, state) VALUES {values}");
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(r#"{"n":0}"#);
    for _ in 0..rows {
        query = query.bind(uuid::Uuid::now_v7().to_string());
    }
    query.execute(pool).await?;
    Ok(())
}

/// Raw claims and completions until `args.jobs` are done. While producers
/// still run (`concurrent`), an empty claim waits for a producer's wake-up.
async fn floor_consume(args: &Args, setup: &Setup, concurrent: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let skip = if setup.target == Target::Postgres {
        "FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let claim = format!(
        "UPDATE bench_floor SET state = 'running' WHERE state = 'pending' AND id = \
         (SELECT id FROM bench_floor WHERE state = 'pending' ORDER BY id LIMIT 1 {skip}) \
         RETURNING id"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let pool = setup.store.pool().clone();
        let redis = setup.redis.clone();
        let done = done.clone();
        let claim = claim.clone();
        let jobs = args.jobs;
        let wake = setup.floor_wake.clone();
        tasks.spawn(async move {
            while done.load(Ordering::SeqCst) < jobs {
                let got = match &redis {
                    None => {
                        // Planned on every call, as the queue's claim is.
                        let id: Option<String> = sqlx::query_scalar(AssertSqlSafe(claim.clone()))
                            .persistent(false)
                            .fetch_optional(&pool)
                            .await?;
                        match id {
                            Some(id) => {
                                sqlx::query("DELETE FROM bench_floor WHERE id = $1")
                                    .bind(id)
                                    .execute(&pool)
                                    .await?;
                                true
                            }
                            None => false,
                        }
                    }
                    Some((conn, prefix)) => {
                        let mut conn = conn.clone();
                        let stream = format!("{prefix}:floor");
                        // [[stream, [[entry id, [field, value]]]]], or nil.
                        type Read = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
                        let read: Read = redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg("g")
                            .arg("c")
                            .arg("COUNT")
                            .arg(1)
                            .arg("STREAMS")
                            .arg(&stream)
                            .arg(">")
                            .query_async(&mut conn)
                            .await?;
                        let ids: Vec<String> = read
                            .unwrap_or_default()
                            .into_iter()
                            .flat_map(|(_, entries)| entries.into_iter().map(|(id, _)| id))
                            .collect();
                        for id in &ids {
                            let _: i64 = redis::cmd("XACK")
                                .arg(&stream)
                                .arg("g")
                                .arg(id)
                                .query_async(&mut conn)
                                .await?;
                        }
                        !ids.is_empty()
                    }
                };
                if got {
                    done.fetch_add(1, Ordering::SeqCst);
                } else if concurrent {
                    // Until a producer adds rows (or, in case the last
                    // rows went to other consumers, a short while).
                    let _ = tokio::time::timeout(Duration::from_millis(20), wake.notified()).await;
                } else {
                    break;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    if done.load(Ordering::SeqCst) < args.jobs {
        bail!(
            "the floor consumers found {} of {} rows",
            done.load(Ordering::SeqCst),
            args.jobs
        );
    }
    Ok(started.elapsed())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn rounds_list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(args: &Args, target: Target, samples: &Samples) -> String {
    let mut s = format!(
        "\n## {}\n\n| measurement | floor median | queue median | queue / floor | floor rounds | queue rounds |\n|---|---:|---:|---:|---|---|\n",
        target.name()
    );
    for (i, &phase) in PHASES.iter().enumerate() {
        let (floor, queue) = (&samples.floor[i], &samples.queue[i]);
        if queue.is_empty() {
            continue;
        }
        let (f, q) = (median(floor), median(queue));
        let _ = writeln!(
            s,
            "| {} | {f:.0}/s | {q:.0}/s | {:.2} | {} | {} |",
            phase.label(args),
            q / f,
            rounds_list(floor),
            rounds_list(queue)
        );
    }
    s
}
