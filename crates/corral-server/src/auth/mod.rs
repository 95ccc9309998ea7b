//! Authentication (who is calling) and authorization (may they do this).
//!
//! Every `/api/v1` route has an entry in [`POLICIES`]: public, or the
//! [`Action`] it performs. The [`authorize`] middleware enforces the table
//! before any handler runs and refuses a route that has no entry, so a new
//! route without a declared policy fails closed (and a test fails).

pub mod cache;
pub mod credentials;
pub mod session;
pub mod usage;

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};

use corral_core::auth::{Action, Credential, OrgRole, Principal, can};
use corral_store::User;
use corral_types::ErrorCode;

use crate::{ApiError, AppState};
use cache::{CacheKey, Cached, Kind};

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
    ("GET",    "/api/v1/admin/audit",       Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/audit/stats", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/audit/actions", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/audit/resource-types", Needs(Action::Administer)),
    ("GET",    "/api/v1/admin/users",       Needs(Action::Administer)),
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
    ("GET",    "/api/v1/sandboxes/{id}/stats", Needs(Action::ReadSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/files", Needs(Action::ReadSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/files/content", Needs(Action::ReadSandboxes)),
    ("PUT",    "/api/v1/sandboxes/{id}/files/content", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/mkdir", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/move", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/delete", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/chmod", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/files/replace", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/files/search", Needs(Action::ReadSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/terminals", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/terminals", Needs(Action::ReadSandboxes)),
    ("DELETE", "/api/v1/sandboxes/{id}/terminals/{tid}", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/terminals/{tid}/ws", Access::WebSocket(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/processes", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/processes", Needs(Action::ReadSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/processes/{pid}/logs", Needs(Action::ReadSandboxes)),
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
    ("POST",   "/api/v1/library/{id}/run",  Needs(Action::WriteExecutions)),
    ("POST",   "/api/v1/sandboxes/{id}/contexts", Needs(Action::WriteSandboxes)),
    ("GET",    "/api/v1/sandboxes/{id}/contexts", Needs(Action::ReadSandboxes)),
    ("DELETE", "/api/v1/sandboxes/{id}/contexts/{cid}", Needs(Action::WriteSandboxes)),
    ("POST",   "/api/v1/sandboxes/{id}/contexts/{cid}/run", Needs(Action::WriteSandboxes)),
];

/// The policy of a route, if declared.
pub fn policy(method: &str, route: &str) -> Option<Access> {
    POLICIES
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map(|(_, _, access)| *access)
}

/// Where a request came from, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Peer IP address.
    pub ip: Option<String>,
    /// `User-Agent`, truncated.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    fn from_request(request: &Request) -> ClientInfo {
        ClientInfo::from_parts(request.extensions(), request.headers())
    }

    fn from_parts(extensions: &http::Extensions, headers: &HeaderMap) -> ClientInfo {
        ClientInfo {
            ip: extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
            // `to_str` accepts visible ASCII only, so bytes are characters.
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v[..v.len().min(USER_AGENT_MAX)].to_owned()),
        }
    }
}

/// Characters of `User-Agent` kept.
const USER_AGENT_MAX: usize = 256;

/// For handlers outside `/api/v1` (which the authorizer does not wrap).
impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<ClientInfo, Self::Rejection> {
        Ok(ClientInfo::from_parts(&parts.extensions, &parts.headers))
    }
}

/// Enforces [`POLICIES`] on the API router. On success the handler finds a
/// [`Principal`] (for authenticated routes) and a [`ClientInfo`] in the
/// request extensions.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = ClientInfo::from_request(&request);
    let now = state.clock.now_ms();
    // Per-IP first, so guessing credentials is limited too.
    if let Some(ip) = &client.ip
        && let Err(error) = state
            .limiter
            .check(
                &crate::limits::subject("ip", ip),
                state.config.limits.per_ip_per_minute,
                now,
            )
            .await
    {
        return error.into_response();
    }
    request.extensions_mut().insert(client);
    // A cheap clone (the template is shared), so the request stays movable.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("", MatchedPath::as_str);
    let Some(access) = policy(request.method().as_str(), route) else {
        return ApiError::internal(anyhow::anyhow!(
            "route {} {route} has no authorization policy",
            request.method()
        ))
        .into_response();
    };
    let action = match access {
        Access::Public => None,
        Access::Authenticated(action) => Some(action),
        Access::WebSocket(action) => {
            if !request.headers().contains_key(header::AUTHORIZATION)
                && let Some(token) = query_token(request.uri())
                && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
            {
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            let has_credentials = request.headers().contains_key(header::AUTHORIZATION)
                || session::session_token(&state.config, request.headers()).is_some();
            // None at all: the first message carries them.
            has_credentials.then_some(action)
        }
    };
    if let Some(action) = action {
        // Routes under /orgs/{org} act in the org named by the path.
        let path_org = if route.contains("{org}") {
            let (mut parts, body) = request.into_parts();
            let params = RawPathParams::from_request_parts(&mut parts, &state).await;
            request = Request::from_parts(parts, body);
            params.ok().and_then(|p| {
                p.iter()
                    .find(|(name, _)| *name == "org")
                    .map(|(_, value)| value.to_owned())
            })
        } else {
            None
        };
        let caller = match authenticate(&state, request.headers(), path_org).await {
            Ok(caller) => caller,
            Err(error) => return error.into_response(),
        };
        if let Some(session) = &caller.session
            && let Err(error) =
                session::check_csrf(&state.config, request.method(), request.headers(), session)
        {
            return error.into_response();
        }
        if !can(&caller.principal, action) {
            return forbidden(&caller.principal, action).into_response();
        }
        if let Err(error) = enforce_caller_limits(&state, &caller, now).await {
            return error.into_response();
        }
        request.extensions_mut().insert(caller.principal);
        request.extensions_mut().insert(CurrentUser(caller.user));
    }
    next.run(request).await
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
    if !can(&caller.principal, action) {
        return Err(forbidden(&caller.principal, action));
    }
    enforce_caller_limits(state, &caller, state.clock.now_ms()).await?;
    Ok((caller.principal, caller.user))
}

/// Per-user and per-key rate limits, and the plan's daily quota of requests
/// made with API keys (sessions are not counted against it).
async fn enforce_caller_limits(
    state: &AppState,
    caller: &Caller,
    now: i64,
) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    state
        .limiter
        .check(
            &crate::limits::subject("user", &caller.principal.user_id),
            limits.per_user_per_minute,
            now,
        )
        .await?;
    if let Credential::ApiKey { key_id, .. } = &caller.principal.credential {
        state
            .limiter
            .check(
                &crate::limits::subject("key", key_id),
                limits.per_key_per_minute,
                now,
            )
            .await?;
        crate::quota::take(state, &caller.user, crate::quota::Daily::ApiCalls, now).await?;
    }
    Ok(())
}

fn forbidden(principal: &Principal, action: Action) -> ApiError {
    let detail = match (&principal.credential, action) {
        (_, Action::Administer) => "this needs a platform administrator".to_owned(),
        (Credential::ApiKey { .. }, Action::ManageSelf) => {
            "API keys cannot change the account; sign in instead".to_owned()
        }
        (Credential::ApiKey { .. }, _) => {
            format!(
                "this API key lacks the scope for {action:?}, or your role in the organization is too low"
            )
        }
        (Credential::Session, _) => {
            format!(
                "your role `{}` in this organization does not allow this",
                principal.org_role
            )
        }
    };
    ApiError::new(ErrorCode::Forbidden, detail)
}

/// 401 with `WWW-Authenticate: Bearer`.
fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

/// An authenticated caller: who, in which org, with which account row.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who and in which org.
    pub principal: Principal,
    /// The account, as of authentication (handlers such as `GET /users/me`
    /// answer from it rather than reading the database again).
    pub user: Arc<User>,
    /// The browser session's token, when a session cookie authenticated.
    pub session: Option<String>,
}

/// The caller's account row, in request extensions of authenticated routes.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Arc<User>);

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
    // Read before any lookup: a change racing the lookups leaves the entry stale.
    let epoch = state.store.auth_epoch();
    let requested_org = |path_org: Option<String>| {
        path_org.or_else(|| {
            headers
                .get("x-corral-org")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
    };
    let Some(token) = bearer_token(headers) else {
        // No bearer credentials: a browser session cookie, if any.
        let session = session::session_token(&state.config, headers).ok_or_else(|| {
            unauthorized("missing credentials: `Authorization: Bearer` or a session cookie")
        })?;
        let org = requested_org(path_org);
        let cache_key = CacheKey::new(Kind::Session, session.as_bytes(), org.as_deref());
        let mut caller = match state.auth_cache.get(&cache_key, epoch, now) {
            Some(cached) if cached.expires_at.is_some_and(|at| at > now) => Caller::from(&*cached),
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
                let (principal, user, expires_at) = lookup_key(state, &hash).await?;
                state
                    .auth_cache
                    .put(cache_key, epoch, now, principal, user, expires_at)
            }
        };
        if cached.expires_at.is_some_and(|at| at <= now) {
            return Err(unauthorized("this API key has expired"));
        }
        // A key acts only in its own org.
        if path_org
            .as_ref()
            .is_some_and(|org| *org != cached.principal.org_id)
        {
            return Err(ApiError::not_found("organization"));
        }
        if let Credential::ApiKey { key_id, .. } = &cached.principal.credential {
            state.key_usage.record(key_id, now);
        }
        return Ok(Caller::from(&*cached));
    }

    let org = requested_org(path_org);
    // Keyed by the whole token: only a token that verified once can hit, and
    // its expiry is checked on every hit. Saves the signature check and
    // claims parsing on repeated requests.
    let cache_key = CacheKey::new(Kind::AccessToken, token.as_bytes(), org.as_deref());
    if let Some(cached) = state.auth_cache.get(&cache_key, epoch, now)
        && cached.expires_at.is_some_and(|at| at > now)
    {
        return Ok(Caller::from(&*cached));
    }
    let claims = state
        .tokens
        .verify(token, now / 1000)
        .ok_or_else(|| unauthorized("invalid or expired access token"))?;
    let expires_at = Some(claims.exp.saturating_mul(1000));
    signed_in_caller(state, &claims.sub, org, cache_key, epoch, now, expires_at).await
}

impl From<&Cached> for Caller {
    fn from(cached: &Cached) -> Caller {
        Caller {
            principal: cached.principal.clone(),
            user: cached.user.clone(),
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
    let user = active_user(state, user_id).await?;
    let (org_id, org_role) = match requested_org {
        Some(org_id) => {
            let role = state
                .store
                .org_role(&org_id, &user.id)
                .await?
                .ok_or_else(|| ApiError::not_found("organization"))?;
            (org_id, role)
        }
        None => (user.personal_org_id.clone(), OrgRole::Owner),
    };
    let principal = Principal {
        user_id: user.id.clone(),
        platform_role: user.role,
        org_id,
        org_role,
        credential: Credential::Session,
    };
    let cached = state
        .auth_cache
        .put(cache_key, epoch, now, principal, user, expires_at);
    Ok(Caller::from(&*cached))
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

/// The caller behind an API key (by its hash), from the database.
async fn lookup_key(
    state: &AppState,
    hash: &str,
) -> Result<(Principal, User, Option<i64>), ApiError> {
    let key = state
        .store
        .api_key_by_hash(hash)
        .await?
        .ok_or_else(|| unauthorized("invalid API key"))?;
    if !key.is_active {
        return Err(unauthorized("this API key is disabled"));
    }
    let user = active_user(state, &key.user_id).await?;
    let org_role = state
        .store
        .org_role(&key.org_id, &user.id)
        .await?
        .ok_or_else(|| unauthorized("the key's owner is no longer a member of its organization"))?;
    let principal = Principal {
        user_id: user.id.clone(),
        platform_role: user.role,
        org_id: key.org_id,
        org_role,
        credential: Credential::ApiKey {
            key_id: key.id,
            scopes: key.scopes,
        },
    };
    Ok((principal, user, key.expires_at))
}

async fn active_user(state: &AppState, id: &str) -> Result<corral_store::User, ApiError> {
    match state.store.user_by_id(id).await? {
        Some(user) if user.is_active => Ok(user),
        Some(_) => Err(unauthorized("this account is disabled")),
        None => Err(unauthorized("invalid credentials")),
    }
}
