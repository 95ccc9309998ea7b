//! Cross-cutting HTTP behaviour: request ids, problem+json for every error,
//! metrics, security headers and the body limit, in one hand-written tower
//! layer ([`EnvelopeLayer`]).
//!
//! One layer rather than a stack of them: axum boxes every layer added to a
//! router as a `Route`, and each boxed level is cloned (allocated) on every
//! request, once per level below it; a `from_fn` middleware adds a boxed
//! future and a boxed clone of the rest of the stack on top. The envelope is
//! a plain `Service` whose future is a struct, so the whole stack is one
//! boxed level.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};

use corral_types::error::PROBLEM_CONTENT_TYPE;
use corral_types::{ErrorCode, Problem};

use crate::error::{InternalCause, problem_response};
use crate::metrics::Metrics;

/// The header carrying the request id, in both directions.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a caller.
const REQUEST_ID_MAX: usize = 64;

/// The id of the request being served; in request extensions. Held inline
/// (ids are at most 64 ASCII characters), so making one allocates nothing.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; REQUEST_ID_MAX],
    len: u8,
}

impl RequestId {
    /// The caller's `X-Request-Id` when it is short and plain (so ids can
    /// follow a request across proxies), else a new UUIDv7.
    fn for_request(request: &Request) -> RequestId {
        if let Some(given) = request.headers().get(&REQUEST_ID_HEADER)
            && is_plain_id(given.as_bytes())
        {
            let given = given.as_bytes();
            let mut bytes = [0; REQUEST_ID_MAX];
            bytes[..given.len()].copy_from_slice(given);
            // `is_plain_id` bounds the length by REQUEST_ID_MAX (64).
            return RequestId {
                bytes,
                len: u8::try_from(given.len()).unwrap_or(0),
            };
        }
        let mut bytes = [0; REQUEST_ID_MAX];
        // Without a shared context: request ids need not be ordered within
        // a millisecond, and the context is a process-wide lock.
        let len = uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
            .hyphenated()
            .encode_lower(&mut bytes)
            .len();
        RequestId {
            bytes,
            len: u8::try_from(len).unwrap_or(0),
        }
    }

    /// The id (ASCII letters, digits, `-`, `_`, `.`).
    pub fn as_str(&self) -> &str {
        // Only plain ASCII ids are ever stored, so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

fn is_plain_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= REQUEST_ID_MAX
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What every envelope of one app shares (one `Arc`, so the per-request
/// clone of the route that axum makes costs one reference count).
#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    security_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The one layer every routed request passes (it wraps CORS, when
/// configured, which wraps the [`BodyLimit`], which wraps the route):
///
/// - gives the request an id ([`RequestId`]), echoed in the response header
///   and in every problem body;
/// - runs it in a tracing span carrying that id (when `info` is enabled);
/// - makes every error response problem+json with `instance` and
///   `request_id`, whoever produced it (a handler, an axum rejection, CORS,
///   the body limit, or the 404/405 fallbacks), and logs internal errors with
///   their cause;
/// - records the request in the metrics, by route template;
/// - adds the security headers a response does not set itself.
#[derive(Debug, Clone)]
pub struct EnvelopeLayer {
    shared: Arc<Shared>,
}

impl EnvelopeLayer {
    /// The envelope of an app with these metrics, with HSTS or not.
    pub fn new(metrics: Arc<Metrics>, hsts: bool) -> EnvelopeLayer {
        EnvelopeLayer {
            shared: Arc::new(Shared {
                metrics,
                security_headers: security_headers(hsts),
            }),
        }
    }
}

impl<S> tower::Layer<S> for EnvelopeLayer {
    type Service = Envelope<S>;

    fn layer(&self, inner: S) -> Envelope<S> {
        Envelope {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`EnvelopeLayer`].
#[derive(Debug, Clone)]
pub struct Envelope<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> tower::Service<Request> for Envelope<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EnvelopeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let id = RequestId::for_request(&request);
        let span = tracing::info_span!(
            "request",
            request_id = id.as_str(),
            method = %request.method(),
            path = request.uri().path(),
        );
        let method = request.method().clone();
        let uri = request.uri().clone();
        let route = request.extensions().get::<MatchedPath>().cloned();
        request.extensions_mut().insert(id);
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        EnvelopeFuture {
            inner,
            span,
            started,
            method,
            uri,
            route,
            id,
            shared: self.shared.clone(),
        }
    }
}

/// The body limit (`server.body_limit_bytes`), as `tower_http`'s
/// `RequestBodyLimit` applies it: a declared length over the limit is
/// refused at once (413); otherwise the body is cut at the limit (or its
/// declared length), which extractors answer with 413. Unlike that layer,
/// a body whose exact size is known and within bounds (every bodiless
/// request, every request with a `Content-Length`, which hyper enforces) is
/// left as it is, and the response keeps axum's body type: neither costs an
/// allocation. A streamed file upload (`PUT …/files/content` with a
/// `Content-Length`: the route hands it to the sandbox as it arrives, never
/// whole) may be as large as `server.upload_limit_bytes` instead.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitLayer {
    limit: usize,
    upload_limit: usize,
}

impl BodyLimitLayer {
    /// At most `limit` bytes; `upload_limit` for streamed uploads.
    pub fn new(limit: usize, upload_limit: usize) -> BodyLimitLayer {
        BodyLimitLayer {
            limit,
            upload_limit,
        }
    }
}

impl<S> tower::Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;

    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            limit: self.limit,
            upload_limit: self.upload_limit,
        }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Debug, Clone)]
pub struct BodyLimit<S> {
    inner: S,
    limit: usize,
    upload_limit: usize,
}

/// Whether `request` is a file upload the route streams to a sandbox: one
/// with a declared length (without one the route must take it whole).
fn is_streamed_upload(request: &Request) -> bool {
    request.method() == http::Method::PUT
        && request.headers().contains_key(header::CONTENT_LENGTH)
        && request.uri().path().starts_with("/api/v1/sandboxes/")
        && request.uri().path().ends_with("/files/content")
}

impl<S> tower::Service<Request> for BodyLimit<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Err(refused) = reject_nul_in_uri(request.uri()) {
            return futures_util::future::Either::Right(std::future::ready(Ok(
                refused.into_response()
            )));
        }
        let limit = if is_streamed_upload(&request) {
            self.upload_limit
        } else {
            self.limit
        };
        match limit_body(&mut request, limit) {
            Ok(()) => futures_util::future::Either::Left(self.inner.call(request)),
            Err(status) => {
                futures_util::future::Either::Right(std::future::ready(Ok(status.into_response())))
            }
        }
    }
}

/// Refuses a URI that spells a NUL byte (`%00`; a raw one never parses):
/// in the path it can only be part of an id or a name, which then names
/// nothing (404); in the query it is a bad value (422 naming the
/// parameter). No route sees it, so no store is asked about it (PostgreSQL
/// cannot even compare it). Checked here, with the body limit, so it costs
/// no layer of its own.
fn reject_nul_in_uri(uri: &http::Uri) -> Result<(), crate::ApiError> {
    let spells_nul = |text: &str| {
        text.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    };
    if spells_nul(uri.path()) {
        return Err(crate::ApiError::new(
            ErrorCode::NotFound,
            "nothing here is named with a NUL character",
        ));
    }
    let Some(query) = uri.query().filter(|q| spells_nul(q)) else {
        return Ok(());
    };
    let parameter = query
        .split('&')
        .find(|pair| spells_nul(pair))
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .unwrap_or_default();
    Err(crate::ApiError::invalid_field(
        parameter,
        "must not contain a NUL character (%00)",
    ))
}

fn limit_body(request: &mut Request, limit: usize) -> Result<(), StatusCode> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let limit = match declared {
        Some(len) if len > limit => {
            return Err(StatusCode::PAYLOAD_TOO_LARGE);
        }
        Some(len) => limit.min(len),
        None => limit,
    };
    let within = request
        .body()
        .size_hint()
        .upper()
        .is_some_and(|upper| usize::try_from(upper).is_ok_and(|upper| upper <= limit));
    if !within {
        let body = std::mem::take(request.body_mut());
        *request.body_mut() = Body::new(http_body_util::Limited::new(body, limit));
    }
    Ok(())
}

/// The future of [`Envelope`]: the inner service's, then the response's
/// finishing touches.
pub struct EnvelopeFuture<F> {
    inner: F,
    span: tracing::Span,
    started: Instant,
    method: http::Method,
    uri: http::Uri,
    route: Option<MatchedPath>,
    id: RequestId,
    shared: Arc<Shared>,
}

impl<F> Future for EnvelopeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = {
            let _entered = this.span.enter();
            match ready!(Pin::new(&mut this.inner).poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        let id = this.id.as_str();
        let mut response = render_problem(response, &this.method, this.uri.path(), id);
        if let Ok(value) = HeaderValue::from_str(id) {
            response.headers_mut().insert(&REQUEST_ID_HEADER, value);
        }
        this.shared.metrics.observe(
            this.method.as_str(),
            this.route
                .as_ref()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str),
            response.status().as_u16(),
            this.started.elapsed().as_secs_f64(),
        );
        // Only where the response does not set one: a route may have a
        // stricter policy (the docs pages do).
        let headers = response.headers_mut();
        for (name, value) in &this.shared.security_headers {
            headers.entry(name).or_insert_with(|| value.clone());
        }
        Poll::Ready(Ok(response))
    }
}

/// Route label for requests that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";

fn render_problem(
    response: Response,
    method: &http::Method,
    path: &str,
    request_id: &str,
) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<KeepBody>().is_some()
    {
        return response;
    }

    let mut problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        None if is_problem(&response) => return response,
        None => {
            let code = ErrorCode::for_status(status.as_u16());
            let mut problem = Problem::new(code, Some(default_detail(code, method, path)));
            // Keep the real status even when no code maps to it exactly.
            problem.status = status.as_u16();
            problem
        }
    };
    problem.instance = Some(path.to_owned());
    problem.request_id = Some(request_id.to_owned());

    if status.is_server_error() {
        let cause = response
            .extensions()
            .get::<InternalCause>()
            .map(|c| format!("{:#}", c.0));
        tracing::error!(
            status = status.as_u16(),
            code = %problem.code,
            request_id,
            cause = cause.as_deref().unwrap_or("(none recorded)"),
            "request failed"
        );
    }

    let mut rendered = problem_response(&problem);
    *rendered.status_mut() = status;
    // Keep headers set by the producer (Allow on 405, Retry-After, CORS…).
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

/// Marks an error-status response whose body is a deliberate answer (such as
/// `/ready`'s 503 report) that must not be replaced by a problem body.
#[derive(Debug, Clone, Copy)]
pub struct KeepBody;

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes())
}

fn default_detail(code: ErrorCode, method: &http::Method, path: &str) -> String {
    match code {
        ErrorCode::NotFound => format!("no route for {method} {path}"),
        ErrorCode::MethodNotAllowed => format!("{path} does not accept {method}"),
        ErrorCode::PayloadTooLarge => "the request body is larger than the server accepts".into(),
        ErrorCode::UnsupportedMediaType => "the request's content type is not accepted here".into(),
        ErrorCode::RequestTimeout => "the request took too long to arrive".into(),
        ErrorCode::Internal => {
            "an internal error occurred; quote the request id when reporting it".into()
        }
        other => other.title().to_owned(),
    }
}

/// Headers every response carries.
pub fn security_headers(hsts: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ),
    ];
    if hsts {
        headers.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    }
    headers
}
