//! Authentication (who is calling) and authorization (may they do this).
//!
//! Every `/api/v1` route has an entry in [`POLICIES`]: public, or the
//! [`Action`] it performs. The [`Authorize`] layer enforces the table
//! before any handler runs and refuses a route that has no entry, so a new
//! route without a declared policy fails closed (and a test fails).

pub mod session;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either, Ready};
use http::{HeaderMap, HeaderValue, header};

use corral_core::auth::{Action, Credential, Principal, can};
use corral_service::{ServiceError, sessions};
use corral_store::User;
use corral_types::ErrorCode;

use crate::{ApiError, AppState};
use corral_service::cache::{CacheKey, Cached, Kind};
use corral_service::limits::Subject;
use corral_service::{cache, credentials};

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// A signed-in caller allowed to perform the action.
    Authenticated(Action),
    /// A WebSocket for a caller allowed to perform the action. Browsers
    /// cannot set headers on one, so the credentials may also come as
    /// `?token=`, or (with none at all) in the first message, which the
    /// handler checks with [`authorize_token`].
    WebSocket(Action),
}

use Access::{Authenticated as Needs, Public};

/// The authorization policy of every API route: (method, route template, access).
#[rustfmt::skip]
pub const POLICIES: &[(&str, &str, Access)] = &[
    ("POST",   "/api/v1/auth/register",     Public),
    ("POST",   "/api/v1/auth/login",        Public),
    ("POST",   "/api/v1/auth/refresh",      Public),
    ("POST",   "/api/v1/auth/logout",       Public),
    ("POST",   "/api/v1/auth/session",      Public),
    ("POST",   "/api/v1/auth/verify-email", Public),
    ("POST",   "/api/v1/auth/password-reset", Public),
    ("POST",   "/api/v1/auth/password-reset/confirm", Public),
    ("POST",   "/api/v1/users/me/verify-email", Needs(Action::ManageSelf)),
    ("POST",   "/api/v1/admin/users/{id}/password-reset", Needs(Action::Administer)),
    ("GET",    "/api/v1/auth/session",      Needs(Action::ReadSelf)),
    ("DELETE", "/api/v1/auth/session",      Needs(Action::ReadSelf)),
    ("GET",    "/api/v1/plans",             Public),
    ("GET",    "/api/v1/users/me",          Needs(Action::ReadSelf)),
    ("PATCH",  "/api/v1/users/me",          Needs(Action::ManageSelf)),
    ("POST",   "/api/v1/users/me/password", Needs(Action::ManageSelf)),
    ("GET",    "/api/v1/users/me/usage",    Needs(Action::ReadSelf)),
    ("GET",    "/api/v1/api-keys",          Needs(Action::ReadKeys)),
    ("POST",   "/api/v1/api-keys",          Needs(Action::WriteKeys)),
    ("PATCH",  "/api/v1/api-keys/{id}",     Needs(Action::WriteKeys)),
    ("DELETE", "/api/v1/api-keys/{id}",     Needs(Action::WriteKeys)),
    ("DELETE", "/api/v1/api-keys/current",  Needs(Action::RevokeOwnKey)),
    ("GET",    "/api/v1/admin/audit",       Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/audit/stats", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/audit/actions", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/audit/resource-types", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/users",       Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/sandboxes",   Needs(Action::Administer)),
    ("PATCH",  "/api/v1/admin/users/{id}",  Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/queues",      Needs(Action::Administer)),
    ("POST",   "/api/v1/admin/queues/{name}/retry", Needs(Action::Administer)),
    ("POST",   "/api/v1/admin/queues/{name}/clear", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/jobs",        Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/jobs/{id}",   Needs(Action::Administer)),
    ("POST",   "/api/v1/admin/jobs/{id}/retry", Needs(Action::Administer)),
    ("GET",    "/api/v1/orgs",              Needs(Action::ListOrgs)),
    ("POST",   "/api/v1/orgs",              Needs(Action::CreateOrg)),
    ("GET",    "/api/v1/orgs/{org}",        Needs(Action::ReadOrg)),
    ("PATCH",  "/api/v1/orgs/{org}",        Needs(Action::WriteOrg)),
    ("DELETE", "/api/v1/orgs/{org}",        Needs(Action::DeleteOrg)),
    ("GET",    "/api/v1/orgs/{org}/members", Needs(Action::ReadOrg)),
    // Removing oneself (leaving) needs only membership; the handler demands
    // ManageMembers for removing anyone else.
    ("PATCH",  "/api/v1/orgs/{org}/members/{user}", Needs(Action::ManageMembers)),
    ("DELETE", "/api/v1/orgs/{org}/members/{user}", Needs(Action::ReadOrg)),
    ("GET",    "/api/v1/orgs/{org}/invitations", Needs(Action::ManageMembers)),
    ("POST",   "/api/v1/orgs/{org}/invitations", Needs(Action::ManageMembers)),
    ("DELETE", "/api/v1/orgs/{org}/invitations/{id}", Needs(Action::ManageMembers)),
    ("GET",    "/api/v1/orgs/{org}/audit",  Needs(Action::ReadOrgAudit)),
    ("POST",   "/api/v1/invitations/{token}/accept", Needs(Action::ManageSelf)),
    ("POST",   "/api/v1/sandboxes",         Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes",         Needs(Action::ReadSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}",    Needs(Action::ReadSandboxes)),
    ("PATCH",  "/api/v1/sandboxes/{id}",    Needs(Action::WriteSandboxes)),
    ("DELETE", "/api/v1/sandboxes/{id}",    Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/start", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/stop", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/pause", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/resume", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/exec", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/exec/{exec_id}/stdin", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/stats", Needs(Action::ReadSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/files", Needs(Action::ReadSandboxContents)),
    ("GET",    "/api/v1/sandboxes/{id}/files/content", Needs(Action::ReadSandboxContents)),
    ("PUT",    "/api/v1/sandboxes/{id}/files/content", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/mkdir", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/move", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/delete", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/chmod", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/replace", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/files/search", Needs(Action::ReadSandboxContents)),
    ("POST",   "/api/v1/sandboxes/{id}/terminals", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/terminals", Needs(Action::ReadSandboxContents)),
    ("DELETE", "/api/v1/sandboxes/{id}/terminals/{tid}", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/terminals/{tid}/ws", Access::WebSocket(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/processes", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/processes", Needs(Action::ReadSandboxContents)),
    ("GET",    "/api/v1/sandboxes/{id}/processes/{pid}/logs", Needs(Action::ReadSandboxContents)),
    ("POST",   "/api/v1/sandboxes/{id}/processes/{pid}/stdin", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/processes/{pid}/signal", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/library",           Needs(Action::WriteLibrary)),
    ("GET",    "/api/v1/library",           Needs(Action::ReadLibrary)),
    ("GET",    "/api/v1/library/{id}",      Needs(Action::ReadLibrary)),
    ("PATCH",  "/api/v1/library/{id}",      Needs(Action::WriteLibrary)),
    ("DELETE", "/api/v1/library/{id}",      Needs(Action::WriteLibrary)),
    ("GET",    "/api/v1/languages",         Needs(Action::ReadExecutions)),
    ("POST",   "/api/v1/executions",        Needs(Action::WriteExecutions)),
    ("GET",    "/api/v1/executions",        Needs(Action::ReadExecutions)),
    ("POST",   "/api/v1/executions/batch",  Needs(Action::WriteExecutions)),
    ("GET",    "/api/v1/executions/batch/{id}", Needs(Action::ReadExecutions)),
    ("GET",    "/api/v1/executions/{id}",   Needs(Action::ReadExecutions)),
    ("GET",    "/api/v1/admin/executions",  Needs(Action::Administer)),
    // Visibility of the snippet is checked by its lookup (public or own).
    ("POST",   "/api/v1/library/{id}/run",  Needs(Action::RunSnippet)),
    ("POST",   "/api/v1/sandboxes/{id}/contexts", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/contexts", Needs(Action::ReadSandboxContents)),
    ("DELETE", "/api/v1/sandboxes/{id}/contexts/{cid}", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/contexts/{cid}/run", Needs(Action::WriteSandboxes)),
];

/// Routes under this prefix are the API: each needs an entry in [`POLICIES`].
const API_PREFIX: &str = "/api/";

/// The policy of a route, if declared.
pub fn policy(method: &str, route: &str) -> Option<Access> {
    policies(route)?
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, access)| *access)
}

/// Every (method, access) declared for a route template.
fn policies(route: &str) -> Option<&'static [(&'static str, Access)]> {
    // By route template, then method: built once from the table, so a
    // request's lookup is one hash and a scan of at most a few methods.
    // Templates are the router's own, so a fast hash is enough.
    type ByRoute = HashMap<&'static str, Vec<(&'static str, Access)>, foldhash::fast::RandomState>;
    static BY_ROUTE: LazyLock<ByRoute> = LazyLock::new(|| {
        let mut by_route = ByRoute::default();
        for (method, route, access) in POLICIES {
            by_route.entry(route).or_default().push((method, *access));
        }
        by_route
    });
    BY_ROUTE.get(route).map(Vec::as_slice)
}

/// Where a request came from, for the audit log: the service's
/// [`corral_service::audit::ClientInfo`], extracted from the request.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo(pub corral_service::audit::ClientInfo);

impl std::ops::Deref for ClientInfo {
    type Target = corral_service::audit::ClientInfo;

    fn deref(&self) -> &corral_service::audit::ClientInfo {
        &self.0
    }
}

impl ClientInfo {
    fn from_parts(extensions: &http::Extensions, headers: &HeaderMap) -> ClientInfo {
        ClientInfo(corral_service::audit::ClientInfo {
            ip: extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
            // `to_str` accepts visible ASCII only, so bytes are characters.
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v[..v.len().min(USER_AGENT_MAX)].to_owned()),
        })
    }
}

/// Characters of `User-Agent` kept.
const USER_AGENT_MAX: usize = 256;

/// Built when a handler asks for it (an audit entry), not for every request.
impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<ClientInfo, Self::Rejection> {
        Ok(ClientInfo::from_parts(&parts.extensions, &parts.headers))
    }
}

/// Enforces [`POLICIES`] on every route under `/api/`: innermost of the
/// layers the router puts around each route, so it sees the matched route
/// template. Other routes (health, docs, pages) and requests that matched
/// no route pass untouched. On success the handler of an authenticated
/// route finds its [`Caller`] in the request extensions.
///
/// Not a `route_layer`: that would be one more boxed level around every
/// route, cloned on every request. So this layer also sees what the router
/// will answer with 405 (a method the route lacks), and answers it itself:
/// a method with no declared policy never reaches a handler.
///
/// A hand-written service rather than a `from_fn` middleware: when
/// everything it needs is in memory (the rate-limit counters, a cached
/// credential, an unlimited quota) it decides before calling the route,
/// with no boxed future and no clone of the route; otherwise the rest is
/// done in a boxed future, exactly as far as it got.
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    state: AppState,
}

impl AuthorizeLayer {
    /// Authorization with `state`'s store, limiter and caches.
    pub fn new(state: AppState) -> AuthorizeLayer {
        AuthorizeLayer { state }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            state: self.state.clone(),
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    state: AppState,
}

type Answer = Result<Response, Infallible>;

impl<S> tower::Service<Request> for Authorize<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Either<Ready<Answer>, BoxFuture<'static, Answer>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match authorize_now(&self.state, request) {
            Now::Pass(request) => Either::Left(self.inner.call(request)),
            Now::Refuse(response) => {
                Either::Right(Either::Left(futures_util::future::ready(Ok(response))))
            }
            Now::Later(request, stage) => {
                let state = self.state.clone();
                let mut inner = self.inner.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    match authorize_later(&state, request, stage).await {
                        Ok(request) => inner.call(request).await,
                        Err(response) => Ok(response),
                    }
                })))
            }
        }
    }
}

/// How far [`authorize_now`] got.
enum Now {
    /// Allowed: call the route.
    Pass(Request),
    /// Refused with this response.
    Refuse(Response),
    /// The rest needs the database or Redis, from this stage on.
    Later(Request, Stage),
}

/// Where [`authorize_later`] picks up. Every step with a side effect (a
/// counted hit, recorded key usage) is done exactly once, in one of the two.
enum Stage {
    /// Nothing done yet (the rate-limit counters are not in memory).
    Start,
    /// The IP limit and the route's policy are done; authenticate next.
    Authenticate { need: Need, now: i64 },
    /// Everything but the plan's daily quota, which the database takes.
    Quota {
        caller: Caller,
        now: i64,
        new_work: bool,
    },
}

/// What a route asks of its caller (see [`requirement`]).
struct Need {
    /// The action it performs.
    action: Action,
    /// For routes under `/orgs/{org}`, the org named by the path.
    path_org: Option<String>,
    /// Whether the request starts new work, which a spent daily quota
    /// refuses. Reads, stops and deletes are counted while the quota lasts
    /// and pass after it is spent: a quota limits new work, never looking
    /// at or cleaning up what exists.
    new_work: bool,
}

/// Authorization as far as it can go without waiting; see [`Authorize`].
fn authorize_now(state: &AppState, mut request: Request) -> Now {
    if !state.limiter.is_immediate() {
        return Now::Later(request, Stage::Start);
    }
    let now = state.clock.now_ms();
    let limits = &state.config.limits;
    // Per-IP first, so guessing credentials is limited too.
    if let Some(ip) = peer_ip(&request)
        && let Some(Err(error)) =
            state
                .limiter
                .check_now(&Subject::ip(ip), limits.per_ip_per_minute, now)
    {
        return Now::Refuse(ApiError::from(error).into_response());
    }
    let need = match requirement(state, &mut request) {
        Ok(Some(need)) => need,
        Ok(None) => return Now::Pass(request),
        Err(error) => return Now::Refuse(error.into_response()),
    };
    let caller = match authenticate_cached(state, request.headers(), need.path_org.as_deref(), now)
    {
        Some(Ok(caller)) => caller,
        Some(Err(error)) => return Now::Refuse(error.into_response()),
        None => return Now::Later(request, Stage::Authenticate { need, now }),
    };
    if let Err(error) = permit(state, &request, &caller, need.action) {
        return Now::Refuse(error.into_response());
    }
    let user_check = (&caller.entry.user_limit, limits.per_user_per_minute);
    let checked = match &caller.entry.key_limit {
        Some(key) => state
            .limiter
            .check_counted_now(&[user_check, (key, limits.per_key_per_minute)], now),
        None => state.limiter.check_counted_now(&[user_check], now),
    };
    if let Some(Err(error)) = checked {
        return Now::Refuse(ApiError::from(error).into_response());
    }
    if matches!(caller.credential, Credential::ApiKey { .. })
        && !count_api_call_now(state, &caller, now)
    {
        return Now::Later(
            request,
            Stage::Quota {
                caller,
                now,
                new_work: need.new_work,
            },
        );
    }
    admit(&mut request, caller);
    Now::Pass(request)
}

/// Counts an API-key request against the plan's daily quota without
/// waiting, when the plan has no limit for it: into the cache entry's
/// counter for today, else (another day, or no counter) as
/// [`corral_service::quota::take_now`] does. `false` when the database must take it.
fn count_api_call_now(state: &AppState, caller: &Caller, now: i64) -> bool {
    match &caller.entry.api_calls {
        Some((day, count)) if *day == corral_service::quota::day_of(now) => {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        }
        _ => corral_service::quota::take_now(
            state,
            caller.user(),
            corral_service::quota::Daily::ApiCalls,
            now,
        )
        .is_some(),
    }
}

/// Authorization from `stage` on, waiting for the store or Redis.
async fn authorize_later(
    state: &AppState,
    mut request: Request,
    stage: Stage,
) -> Result<Request, Response> {
    let refuse = |error: ApiError| error.into_response();
    let refuse_service =
        |error: corral_service::ServiceError| ApiError::from(error).into_response();
    let (caller, now, counted, new_work) = match stage {
        Stage::Start => {
            let now = state.clock.now_ms();
            if let Some(ip) = peer_ip(&request) {
                let subject = Subject::ip(ip);
                state
                    .limiter
                    .check(&subject, state.config.limits.per_ip_per_minute, now)
                    .await
                    .map_err(refuse_service)?;
            }
            let Some(need) = requirement(state, &mut request).map_err(refuse)? else {
                return Ok(request);
            };
            let caller = authenticate(state, request.headers(), need.path_org)
                .await
                .map_err(refuse)?;
            permit(state, &request, &caller, need.action).map_err(refuse)?;
            (caller, now, false, need.new_work)
        }
        Stage::Authenticate { need, now } => {
            let caller = authenticate(state, request.headers(), need.path_org)
                .await
                .map_err(refuse)?;
            permit(state, &request, &caller, need.action).map_err(refuse)?;
            (caller, now, false, need.new_work)
        }
        Stage::Quota {
            caller,
            now,
            new_work,
        } => (caller, now, true, new_work),
    };
    if counted {
        take_api_call(state, &caller, now, new_work)
            .await
            .map_err(refuse)?;
    } else {
        enforce_caller_limits(state, &caller, now, new_work)
            .await
            .map_err(refuse)?;
    }
    admit(&mut request, caller);
    Ok(request)
}

/// The peer's address (every request served on a socket has one).
fn peer_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// What the route needs: nothing (`None`: public, or a WebSocket whose
/// credentials come in its first message), or an action and, for routes
/// under `/orgs/{org}`, the org named by the path. A route missing from
/// [`POLICIES`] is refused (500), so a new route fails closed.
fn requirement(state: &AppState, request: &mut Request) -> Result<Option<Need>, ApiError> {
    // No route matched (the 404 fallback answers), or one outside the API.
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .filter(|route| route.starts_with(API_PREFIX))
    else {
        return Ok(None);
    };
    let Some(declared) = policies(route) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "route {} {route} has no authorization policy",
            request.method()
        )));
    };
    // The router answers HEAD with the GET handler: it needs what GET needs.
    let method = match request.method() {
        &http::Method::HEAD => "GET",
        method => method.as_str(),
    };
    let Some(access) = declared
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, access)| *access)
    else {
        return Err(method_not_allowed(declared));
    };
    let names_org = route.contains("{org}");
    let new_work = is_new_work(method, route);
    let action = match access {
        Access::Public => return Ok(None),
        Access::Authenticated(action) => action,
        Access::WebSocket(action) => {
            if !request.headers().contains_key(header::AUTHORIZATION)
                && let Some(token) = query_token(request.uri())
                && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
            {
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            let has_credentials = request.headers().contains_key(header::AUTHORIZATION)
                || session::session_token(&state.config, request.headers()).is_some();
            if !has_credentials {
                // None at all: the first message carries them.
                return Ok(None);
            }
            action
        }
    };
    // Routes under /orgs/{org} act in the org named by the path.
    let path_org = if names_org {
        let (mut parts, body) = std::mem::take(request).into_parts();
        // Reading path parameters never waits; if it ever did, refuse
        // rather than act in another org.
        let params = RawPathParams::from_request_parts(&mut parts, state).now_or_never();
        *request = Request::from_parts(parts, body);
        let Some(params) = params else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "reading the path's org did not complete at once"
            )));
        };
        params.ok().and_then(|p| {
            p.iter()
                .find(|(name, _)| *name == "org")
                .map(|(_, value)| value.to_owned())
        })
    } else {
        None
    };
    Ok(Some(Need {
        action,
        path_org,
        new_work,
    }))
}

/// Whether a request starts new work (see [`Need::new_work`]): not a read,
/// a delete, a stop or a signal to a process.
fn is_new_work(method: &str, route: &str) -> bool {
    !(matches!(method, "GET" | "HEAD" | "DELETE")
        || route.ends_with("/stop")
        || route.ends_with("/signal"))
}

/// 405 for a method a route has no policy for, with the methods it has.
fn method_not_allowed(declared: &[(&str, Access)]) -> ApiError {
    let mut allow: Vec<&str> = declared.iter().map(|(method, _)| *method).collect();
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    );
    match HeaderValue::from_str(&allow.join(",")) {
        Ok(value) => error.with_header(header::ALLOW, value),
        Err(_) => error,
    }
}

/// CSRF for cookie sessions, then the permission itself.
fn permit(
    state: &AppState,
    request: &Request,
    caller: &Caller,
    action: Action,
) -> Result<(), ApiError> {
    if let Some(session) = &caller.session {
        session::check_csrf(&state.config, request.method(), request.headers(), session)?;
    }
    if !can(caller.principal(), action) {
        return Err(forbidden(caller.principal(), action));
    }
    Ok(())
}

/// Hands the caller to the handler: one request extension, which the
/// [`Caller`] and [`CurrentUser`] extractors read. Without the session
/// token: only the CSRF check needed it, and handlers never see a secret.
fn admit(request: &mut Request, caller: Caller) {
    request.extensions_mut().insert(Caller {
        session: None,
        ..caller
    });
}

/// `?token=` of a WebSocket URL.
fn query_token(uri: &http::Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

/// Authenticates a bearer token given in a message rather than a header
/// (a WebSocket's first message) and applies what [`authorize`] would:
/// the permission check and the caller's rate limits and quota.
pub async fn authorize_token(
    state: &AppState,
    token: &str,
    action: Action,
) -> Result<(Principal, Arc<User>), ApiError> {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| unauthorized("the token is not valid"))?;
    headers.insert(header::AUTHORIZATION, value);
    let caller = authenticate(state, &headers, None).await?;
    if !can(caller.principal(), action) {
        return Err(forbidden(caller.principal(), action));
    }
    // Attaching to a terminal: its creation was the counted new work.
    enforce_caller_limits(state, &caller, state.clock.now_ms(), false).await?;
    Ok((caller.principal().clone(), caller.user().clone()))
}

/// Per-user and per-key rate limits, and the plan's daily quota of requests
/// made with API keys (sessions are not counted against it).
async fn enforce_caller_limits(
    state: &AppState,
    caller: &Caller,
    now: i64,
    new_work: bool,
) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    state
        .limiter
        .check(
            &caller.entry.user_limit.subject,
            limits.per_user_per_minute,
            now,
        )
        .await?;
    if let Some(key) = &caller.entry.key_limit {
        state
            .limiter
            .check(&key.subject, limits.per_key_per_minute, now)
            .await?;
        take_api_call(state, caller, now, new_work).await?;
    }
    Ok(())
}

/// Takes an API-key request from the plan's daily quota; a request that
/// is no new work passes uncounted once the quota is spent.
async fn take_api_call(
    state: &AppState,
    caller: &Caller,
    now: i64,
    new_work: bool,
) -> Result<(), ApiError> {
    let taken = corral_service::quota::take(
        state,
        caller.user(),
        corral_service::quota::Daily::ApiCalls,
        now,
    )
    .await;
    match taken {
        Err(corral_service::ServiceError::Quota { .. }) if !new_work => Ok(()),
        other => Ok(other?),
    }
}

/// 403 saying why `principal` may not do `action` (the rule is the service's).
fn forbidden(principal: &Principal, action: Action) -> ApiError {
    sessions::refusal(principal, action).into()
}

/// The org `X-Corral-Org` names, if the header is there: a 400 when it is
/// not an org id, rather than acting in the personal org in silence.
fn header_org(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(ORG_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(org) if corral_core::id::is_valid_id(org) => Ok(Some(org)),
        _ => Err(ApiError::new(
            ErrorCode::BadRequest,
            "`X-Corral-Org` must be an organization id (a UUID, as `GET /api/v1/orgs` lists them)",
        )),
    }
}

/// The header that picks the org a signed-in request acts in.
const ORG_HEADER: &str = "x-corral-org";

/// 401 with `WWW-Authenticate: Bearer`.
fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

/// An authenticated caller: who, in which org, with which account row. The
/// extractor of authenticated routes' handlers (authorization put it in the
/// request's extensions); it derefs to its [`Principal`]. Cloning it counts
/// a reference: the principal and account are the auth cache entry's.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The auth cache's entry this caller came from (every caller comes
    /// through the cache): its principal, account, rate-limit subjects and
    /// counters.
    entry: Arc<Cached>,
    /// The browser session's token, when a session cookie authenticated.
    session: Option<String>,
}

impl Caller {
    /// Who and in which org.
    pub fn principal(&self) -> &Principal {
        &self.entry.principal
    }

    /// The account, as of authentication (handlers such as `GET /users/me`
    /// answer from it rather than reading the database again).
    pub fn user(&self) -> &Arc<User> {
        &self.entry.user
    }

    /// `GET /users/me`'s body for this account, once rendered (see
    /// [`cache::Cached::me_body`]).
    pub fn me_body(&self) -> &std::sync::OnceLock<bytes::Bytes> {
        &self.entry.me_body
    }
}

impl std::ops::Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.entry.principal
    }
}

/// The caller authorization admitted, from a request's extensions. None
/// on a route that is public or not behind the [`Authorize`] layer: a bug
/// in the route table, never the client's fault.
fn admitted(parts: &http::request::Parts) -> Result<&Caller, ApiError> {
    parts.extensions.get::<Caller>().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "the route asks for a caller but authorization admitted none"
        ))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Caller, ApiError> {
        admitted(parts).cloned()
    }
}

/// `Option<Caller>`: `None` on a route whose caller comes later (a
/// WebSocket that authenticates in its first message).
impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Option<Caller>, Infallible> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}

/// The caller's account row, as an extractor of authenticated routes.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Arc<User>);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<CurrentUser, ApiError> {
        admitted(parts).map(|caller| CurrentUser(caller.user().clone()))
    }
}

/// Who is calling: an API key (`crl_…`) or a JWT access token, as
/// `Authorization: Bearer`; and in which org: the org in the route's path
/// when there is one, else the key's org, else `X-Corral-Org`, else the
/// personal org. An org the caller does not belong to is "not found".
///
/// Successful lookups are cached (see [`cache`]); expiry and the path's org
/// are checked on every request, cached or not.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    path_org: Option<String>,
) -> Result<Caller, ApiError> {
    let now = state.clock.now_ms();
    if let Some(known) = authenticate_cached(state, headers, path_org.as_deref(), now) {
        return known;
    }
    // Read before any lookup: a change racing the lookups leaves the entry stale.
    let epoch = state.store.auth_epoch();
    let header_org = header_org(headers)?;
    let requested_org =
        |path_org: Option<String>| path_org.or_else(|| header_org.map(str::to_owned));
    let Some(token) = bearer_token(headers) else {
        // No bearer credentials: a browser session cookie, if any.
        let session = session::session_token(&state.config, headers).ok_or_else(|| {
            unauthorized("missing credentials: `Authorization: Bearer` or a session cookie")
        })?;
        let org = requested_org(path_org);
        let cache_key = CacheKey::new(Kind::Session, session.as_bytes(), org.as_deref());
        let mut caller = match state.auth_cache.get(&cache_key, epoch, now) {
            Some(cached) if cached.expires_at.is_some_and(|at| at > now) => Caller::from(&cached),
            _ => {
                let hash = credentials::sha256_hex(&session);
                let (user_id, expires_at) = state
                    .store
                    .session_by_hash(&hash, now)
                    .await?
                    .ok_or_else(|| unauthorized("the session has ended; sign in again"))?;
                signed_in_caller(
                    state,
                    &user_id,
                    org,
                    cache_key,
                    epoch,
                    now,
                    Some(expires_at),
                )
                .await?
            }
        };
        caller.session = Some(session);
        return Ok(caller);
    };

    if token.starts_with(credentials::API_KEY_PREFIX) {
        // A key acts in its own org, so the org is not part of its entry.
        let cache_key = CacheKey::new(Kind::ApiKey, token.as_bytes(), None);
        let cached = match state.auth_cache.get(&cache_key, epoch, now) {
            Some(cached) => cached,
            None => {
                let hash = credentials::sha256_hex(token);
                let (principal, user, expires_at) = sessions::key_principal(state, &hash)
                    .await
                    .map_err(challenge)?;
                let key_use = match &principal.credential {
                    Credential::ApiKey { key_id, .. } => Some(state.key_usage.counter(key_id)),
                    Credential::Session => None,
                };
                let api_calls = corral_service::quota::uncapped_counter(
                    state,
                    &user,
                    corral_service::quota::Daily::ApiCalls,
                    now,
                );
                let found = cache::Authenticated {
                    principal,
                    user,
                    expires_at,
                    key_use,
                    api_calls,
                };
                state
                    .auth_cache
                    .put(cache_key, epoch, now, found, &state.limiter)
            }
        };
        if cached.expires_at.is_some_and(|at| at <= now) {
            return Err(unauthorized("this API key has expired"));
        }
        // A key acts only in its own org.
        if path_org
            .as_deref()
            .or(header_org)
            .is_some_and(|org| *org != cached.principal.org_id)
        {
            return Err(ApiError::not_found("organization"));
        }
        if let Some(key_use) = &cached.key_use {
            key_use.record(now);
        }
        return Ok(Caller::from(&cached));
    }

    let org = requested_org(path_org);
    // Keyed by the whole token: only a token that verified once can hit, and
    // its expiry is checked on every hit. Saves the signature check and
    // claims parsing on repeated requests.
    let cache_key = CacheKey::new(Kind::AccessToken, token.as_bytes(), org.as_deref());
    if let Some(cached) = state.auth_cache.get(&cache_key, epoch, now)
        && cached.expires_at.is_some_and(|at| at > now)
    {
        return Ok(Caller::from(&cached));
    }
    let claims = state
        .tokens
        .verify(token, now / 1000)
        .ok_or_else(|| unauthorized("invalid or expired access token"))?;
    if !state.store.sign_in_active(&claims.sid).await? {
        return Err(unauthorized(
            "this sign-in has ended (signed out, or the password changed); sign in again",
        ));
    }
    let expires_at = Some(claims.exp.saturating_mul(1000));
    signed_in_caller(state, &claims.sub, org, cache_key, epoch, now, expires_at).await
}

/// [`authenticate`] from the cache alone: `None` when the credential is
/// not there (or its entry is stale) and the store must be asked. Has no
/// side effect unless it answers.
fn authenticate_cached(
    state: &AppState,
    headers: &HeaderMap,
    path_org: Option<&str>,
    now: i64,
) -> Option<Result<Caller, ApiError>> {
    let epoch = state.store.auth_epoch();
    let header_org = match header_org(headers) {
        Ok(org) => org,
        Err(error) => return Some(Err(error)),
    };
    let requested_org = || path_org.or(header_org);
    let Some(token) = bearer_token(headers) else {
        let Some(session) = session::session_token(&state.config, headers) else {
            return Some(Err(unauthorized(
                "missing credentials: `Authorization: Bearer` or a session cookie",
            )));
        };
        let cache_key = CacheKey::new(Kind::Session, session.as_bytes(), requested_org());
        let cached = state
            .auth_cache
            .get(&cache_key, epoch, now)
            .filter(|cached| cached.expires_at.is_some_and(|at| at > now))?;
        let mut caller = Caller::from(&cached);
        caller.session = Some(session);
        return Some(Ok(caller));
    };
    if token.starts_with(credentials::API_KEY_PREFIX) {
        let cache_key = CacheKey::new(Kind::ApiKey, token.as_bytes(), None);
        let cached = state.auth_cache.get(&cache_key, epoch, now)?;
        if cached.expires_at.is_some_and(|at| at <= now) {
            return Some(Err(unauthorized("this API key has expired")));
        }
        if requested_org().is_some_and(|org| org != cached.principal.org_id) {
            return Some(Err(ApiError::not_found("organization")));
        }
        if let Some(key_use) = &cached.key_use {
            key_use.record(now);
        }
        return Some(Ok(Caller::from(&cached)));
    }
    let cache_key = CacheKey::new(Kind::AccessToken, token.as_bytes(), requested_org());
    let cached = state
        .auth_cache
        .get(&cache_key, epoch, now)
        .filter(|cached| cached.expires_at.is_some_and(|at| at > now))?;
    Some(Ok(Caller::from(&cached)))
}

impl From<&Arc<Cached>> for Caller {
    fn from(cached: &Arc<Cached>) -> Caller {
        Caller {
            entry: cached.clone(),
            session: None,
        }
    }
}

/// A signed-in user (access token or browser session) acting in
/// `requested_org` (else the personal org), from the database; cached.
async fn signed_in_caller(
    state: &AppState,
    user_id: &str,
    requested_org: Option<String>,
    cache_key: CacheKey,
    epoch: u64,
    now: i64,
    expires_at: Option<i64>,
) -> Result<Caller, ApiError> {
    let user = sessions::active_user(state, user_id)
        .await
        .map_err(challenge)?;
    let principal = sessions::session_principal(state, &user, requested_org).await?;
    let cached = state.auth_cache.put(
        cache_key,
        epoch,
        now,
        cache::Authenticated {
            principal,
            user,
            expires_at,
            key_use: None,
            api_calls: None,
        },
        &state.limiter,
    );
    Ok(Caller::from(&cached))
}

/// The bearer token of a request, if any.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// A use case's refusal to authenticate, answered with `WWW-Authenticate: Bearer`
/// like every other 401 of authentication.
fn challenge(error: ServiceError) -> ApiError {
    match error {
        ServiceError::Unauthorized(detail) => unauthorized(&detail),
        other => other.into(),
    }
}
