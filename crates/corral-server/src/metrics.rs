//! Prometheus metrics: request counts and latency per route, database pool
//! gauges, job queue gauges.
//!
//! The registry belongs to the app state rather than to a process global, so
//! tests can run many apps in one process and each sees only its own numbers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::atomic::AtomicU64;

use corral_queue::QueueStats;
use corral_store::PoolStats;

/// Labels of one request. `&'static str` so recording allocates nothing:
/// methods are a fixed set and route templates are interned once each.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route template (`/api/v1/sandboxes/{id}`), never the raw path, so
    /// ids cannot blow up the series count.
    route: &'static str,
    status: u16,
}

/// Labels of one route.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// The methods that get a series of their own; any other is `OTHER`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

/// The method's index in [`METHODS`]; uncommon methods share the last.
fn method_index(method: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|known| *known == method)
        .unwrap_or(METHODS.len() - 1)
}

/// The method as a label.
fn method_label(method: &str) -> &'static str {
    METHODS[method_index(method)]
}

/// One route template's series, per method, resolved from the families
/// once: a request then records without a label lookup (two hashes of the
/// labels and two family locks) per request.
#[derive(Debug)]
struct RouteSeries {
    /// The interned template (see [`route_label`]).
    route: &'static str,
    methods: [std::sync::OnceLock<MethodSeries>; METHODS.len()],
}

/// A (method, route)'s latency and its request counters by status.
#[derive(Debug)]
struct MethodSeries {
    latency: Histogram,
    /// In the order statuses were first seen; a route answers few.
    by_status: std::sync::RwLock<Vec<(u16, Counter)>>,
}

/// Route templates are the router's own (or "unmatched"), never a caller's
/// bytes, so a fast unkeyed-quality hash is enough.
type RouteMap = std::collections::HashMap<&'static str, RouteSeries, foldhash::fast::RandomState>;

/// Interns a route template. Templates come from the router's fixed route
/// table (or the single "unmatched" label), so the set is small and bounded;
/// each is leaked once and shared by every later request. A hash set, so a
/// request's lookup is one hash of its template, not a scan of them all.
fn route_label(route: &str) -> &'static str {
    static ROUTES: std::sync::LazyLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
        std::sync::LazyLock::new(Default::default);
    if let Ok(routes) = ROUTES.read()
        && let Some(found) = routes.get(route)
    {
        return found;
    }
    let Ok(mut routes) = ROUTES.write() else {
        return "unknown";
    };
    if let Some(found) = routes.get(route) {
        return found;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(leaked);
    leaked
}

/// Labels of one queue's job count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

/// Labels of one queue.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Per-queue gauges, set from `Queue::stats` at each scrape.
#[derive(Debug, Default)]
struct QueueGauges {
    jobs: Family<QueueStateLabels, Gauge>,
    completed_last_minute: Family<QueueLabels, Gauge>,
    oldest_pending: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    mean_wait: Family<QueueLabels, Gauge<f64, AtomicU64>>,
}

impl QueueGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "queue_jobs",
            "Jobs per queue and state (pending: ready now; scheduled: delayed or backing off)",
            self.jobs.clone(),
        );
        registry.register(
            "queue_completed_last_minute",
            "Jobs completed in the last minute, per queue (throughput)",
            self.completed_last_minute.clone(),
        );
        registry.register(
            "queue_oldest_pending_seconds",
            "How long the oldest ready job of each queue has waited",
            self.oldest_pending.clone(),
        );
        registry.register(
            "queue_mean_wait_seconds",
            "Mean wait from ready to claim over the last five minutes, per queue",
            self.mean_wait.clone(),
        );
    }

    fn set(&self, stats: &[QueueStats]) {
        // Queues that emptied out disappear rather than report stale numbers.
        self.jobs.clear();
        self.completed_last_minute.clear();
        self.oldest_pending.clear();
        self.mean_wait.clear();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for s in stats {
            for (state, n) in [
                ("pending", s.pending),
                ("scheduled", s.scheduled),
                ("waiting", s.waiting),
                ("running", s.running),
                ("failed", s.failed),
                ("completed", s.completed),
            ] {
                let labels = QueueStateLabels {
                    queue: s.queue.clone(),
                    state,
                };
                self.jobs.get_or_create(&labels).set(gauge(n));
            }
            let labels = QueueLabels {
                queue: s.queue.clone(),
            };
            self.completed_last_minute
                .get_or_create(&labels)
                .set(gauge(s.completed_last_minute));
            self.oldest_pending
                .get_or_create(&labels)
                .set(s.oldest_pending_ms as f64 / 1000.0);
            if let Some(wait) = s.mean_wait_ms {
                self.mean_wait
                    .get_or_create(&labels)
                    .set(wait as f64 / 1000.0);
            }
        }
    }
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    queues: QueueGauges,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    routes: std::sync::RwLock<RouteMap>,
    pool_size: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
}

impl Metrics {
    /// A fresh registry with Corral's metrics registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ])
        });
        let pool_size = Gauge::default();
        let pool_idle = Gauge::default();
        let pool_max = Gauge::default();
        let queues = QueueGauges::default();
        queues.register(&mut registry);
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections",
            pool_size.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Open database connections not in use",
            pool_idle.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Configured maximum of database connections",
            pool_max.clone(),
        );
        Metrics {
            queues,
            registry,
            requests,
            latency,
            routes: std::sync::RwLock::default(),
            pool_size,
            pool_idle,
            pool_max,
        }
    }

    /// The request counter of one (method, route, status), for a caller that
    /// counts the same series on a hot path without a label lookup each time.
    pub fn request_counter(&self, method: &str, route: &str, status: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route_label(route),
                status,
            })
            .clone()
    }

    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(routes) = self.routes.read()
            && let Some(series) = routes.get(route)
        {
            self.record(series, method, status, seconds);
            return;
        }
        let Ok(mut routes) = self.routes.write() else {
            return;
        };
        let route = route_label(route);
        let series = routes.entry(route).or_insert_with(|| RouteSeries {
            route,
            methods: Default::default(),
        });
        self.record(series, method, status, seconds);
    }

    fn record(&self, series: &RouteSeries, method: &str, status: u16, seconds: f64) {
        let index = method_index(method);
        let labels = RouteLabels {
            method: METHODS[index],
            route: series.route,
        };
        let method = series.methods[index].get_or_init(|| MethodSeries {
            latency: self.latency.get_or_create(&labels).clone(),
            by_status: std::sync::RwLock::default(),
        });
        method.latency.observe(seconds);
        if let Ok(counters) = method.by_status.read()
            && let Some((_, counter)) = counters.iter().find(|(s, _)| *s == status)
        {
            counter.inc();
            return;
        }
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                method: labels.method,
                route: labels.route,
                status,
            })
            .clone();
        counter.inc();
        if let Ok(mut counters) = method.by_status.write()
            && !counters.iter().any(|(s, _)| *s == status)
        {
            counters.push((status, counter));
        }
    }

    /// Sets the queue gauges from `Queue::stats` (at each scrape).
    pub fn set_queue_stats(&self, stats: &[QueueStats]) {
        self.queues.set(stats);
    }

    /// The OpenMetrics text exposition, with pool gauges read now.
    pub fn render(&self, pool: PoolStats) -> String {
        self.pool_size.set(i64::from(pool.size));
        self.pool_idle.set(i64::from(pool.idle));
        self.pool_max.set(i64::from(pool.max));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
