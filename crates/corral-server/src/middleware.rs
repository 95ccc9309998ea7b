//! Cross-cutting HTTP behaviour: request ids, problem+json for every error,
//! security headers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue, header};
use tracing::Instrument;

use corral_types::error::PROBLEM_CONTENT_TYPE;
use corral_types::{ErrorCode, Problem};

use crate::error::{InternalCause, problem_response};
use crate::metrics::Metrics;

/// The header carrying the request id, in both directions.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served; in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The one middleware every request passes (one layer rather than three,
/// because each axum `from_fn` layer costs a boxed service clone per request):
///
/// - gives the request an id: the caller's `X-Request-Id` when it is short
///   and plain (so ids can follow a request across proxies), else a new
///   UUIDv7, echoed in the response header and in every problem body;
/// - runs it in a tracing span carrying that id;
/// - makes every error response problem+json with `instance` and
///   `request_id`, whoever produced it (a handler, an axum rejection, a tower
///   layer such as the body limit, or the 404/405 fallbacks), and logs
///   internal errors with their cause;
/// - records the request in the metrics, by route template.
pub async fn envelope(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_plain_id(v))
        .map_or_else(corral_core::id::new_id, str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let uri = request.uri().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let span =
        tracing::info_span!("request", request_id = %id, method = %method, path = %uri.path());

    let response = next.run(request).instrument(span).await;
    let mut response = render_problem(response, &method, uri.path(), &id);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(&REQUEST_ID_HEADER, value);
    }
    metrics.observe(
        method.as_str(),
        route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Route label for requests that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";

fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

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
