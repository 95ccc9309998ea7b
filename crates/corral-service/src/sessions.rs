//! Signing in and out: the password check with its lockout, access and
//! refresh tokens (rotation, reuse detection, revocation), and browser
//! sessions. How a session travels (cookie, CSRF token) is the surface's
//! business; what a sign-in proves and how long it lasts is decided here.

use corral_core::auth::{Action, Credential, OrgRole, PlatformRole, Principal, can};
use corral_store::{RefreshUse, User};
use corral_types::identity::{LoginRequest, TokenResponse};

use crate::accounts::password_matches;
use crate::audit::{ClientInfo, audit, audit_account};
use crate::credentials::{self, ACCESS_TOKEN_SECS, REFRESH_TOKEN_SECS};
use crate::{Service, ServiceError, ServiceResult};

/// Consecutive failures before a login name is locked.
pub const LOCK_AFTER_FAILURES: i64 = 5;
/// The first lock's length; each further failure doubles it.
const FIRST_LOCK_MS: i64 = 30_000;
/// The longest lock.
const MAX_LOCK_MS: i64 = 3_600_000;
/// How long a browser session lasts.
pub const SESSION_SECS: i64 = 7 * 24 * 3600;

/// Lock length after `failures` consecutive failures: 30 s, doubling, at most an hour.
pub fn lock_ms(failures: i64) -> Option<i64> {
    (failures >= LOCK_AFTER_FAILURES).then(|| {
        let doublings = (failures - LOCK_AFTER_FAILURES).min(7) as u32;
        (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS)
    })
}

/// Checks a sign-in (password, lockout, audit) for every way of signing in.
///
/// Unknown users and wrong passwords get the same answer in similar time;
/// after 5 consecutive failures a login name is locked with growing
/// back-off ([`ServiceError::RateLimited`]), whether or not the user exists.
pub async fn check_sign_in(
    service: &Service,
    client: &ClientInfo,
    input: LoginRequest,
) -> ServiceResult<User> {
    let now = service.clock.now_ms();
    let login_hash = credentials::sha256_hex(&input.login.trim().to_lowercase());
    if let Some(until) = service
        .limiter
        .login_locked_until(&service.store, &login_hash)
        .await?
        && until > now
    {
        return Err(ServiceError::RateLimited {
            detail: "too many failed sign-ins; try again later".to_owned(),
            retry_after_secs: ((until - now) as u64).div_ceil(1000),
        });
    }
    let user = service.store.user_by_login(input.login.trim()).await?;
    let hash = user.as_ref().map_or_else(
        || credentials::dummy_password_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let matches = password_matches(input.password, hash).await?;
    let user = match user {
        Some(user) if matches && user.is_active => user,
        other => {
            service
                .limiter
                .record_login_failure(&service.store, &login_hash, now, lock_ms)
                .await?;
            let actor = other.as_ref().map(|u| u.id.as_str());
            audit(
                service,
                client,
                actor,
                None,
                "auth.login",
                "user",
                actor,
                "failure",
            )
            .await;
            return Err(ServiceError::Unauthorized("invalid credentials".to_owned()));
        }
    };
    service
        .limiter
        .record_login_success(&service.store, &login_hash)
        .await?;
    audit(
        service,
        client,
        Some(&user.id),
        Some(&user.personal_org_id),
        "auth.login",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(user)
}

/// Exchanges a username or email and password for a token pair (a new
/// sign-in: a new token family).
pub async fn login(
    service: &Service,
    client: &ClientInfo,
    input: LoginRequest,
) -> ServiceResult<TokenResponse> {
    let user = check_sign_in(service, client, input).await?;
    let family = corral_core::id::new_id();
    issue_tokens(service, &user.id, &family).await
}

/// A new access token and refresh token in the sign-in `family`.
async fn issue_tokens(
    service: &Service,
    user_id: &str,
    family: &str,
) -> ServiceResult<TokenResponse> {
    let now = service.clock.now_ms();
    let access_token = service
        .tokens
        .issue(user_id, family, now / 1000)
        .map_err(ServiceError::internal)?;
    let refresh_token = credentials::new_refresh_token();
    service
        .store
        .insert_refresh_token(
            now,
            user_id,
            family,
            &credentials::sha256_hex(&refresh_token),
            now + REFRESH_TOKEN_SECS * 1000,
        )
        .await?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: ACCESS_TOKEN_SECS,
    })
}

/// Exchanges a refresh token for a new pair. Each refresh token works once;
/// presenting a spent one revokes every token descended from the same sign-in.
pub async fn refresh(
    service: &Service,
    client: &ClientInfo,
    refresh_token: &str,
) -> ServiceResult<TokenResponse> {
    let hash = credentials::sha256_hex(refresh_token);
    let unauthorized = |detail: &str| Err(ServiceError::Unauthorized(detail.to_owned()));
    match service
        .store
        .use_refresh_token(&hash, service.clock.now_ms())
        .await?
    {
        RefreshUse::Valid { user_id, family_id } => {
            let user = service.store.user_by_id(&user_id).await?;
            if !user.is_some_and(|u| u.is_active) {
                return unauthorized("invalid refresh token");
            }
            issue_tokens(service, &user_id, &family_id).await
        }
        RefreshUse::Reused => {
            audit(
                service,
                client,
                None,
                None,
                "auth.refresh_reuse",
                "refresh_token",
                None,
                "denied",
            )
            .await;
            unauthorized(
                "this refresh token was already used; every session from that sign-in is now revoked",
            )
        }
        RefreshUse::Revoked => unauthorized(
            "this refresh token was revoked: its sign-in ended (signed out, or the password changed); sign in again",
        ),
        RefreshUse::Invalid => unauthorized("invalid refresh token"),
    }
}

/// Revokes the refresh token and every token of its sign-in, the access
/// tokens included. Succeeds for any token, so it reveals nothing about it.
pub async fn logout(
    service: &Service,
    client: &ClientInfo,
    refresh_token: &str,
) -> ServiceResult<()> {
    let hash = credentials::sha256_hex(refresh_token);
    if let Some((family, user_id)) = service.store.refresh_family_of(&hash).await? {
        service
            .store
            .revoke_refresh_family(&family, service.clock.now_ms())
            .await?;
        audit_account(service, client, &user_id, "auth.logout", "success").await;
    }
    Ok(())
}

/// A browser session: its secret (for the surface to hand over, as a
/// cookie), who it is for and when it ends.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    /// The session's secret; only its SHA-256 is stored.
    pub token: String,
    /// The account signed in.
    pub user: User,
    /// When the session ends (ms since the epoch).
    pub expires_at: i64,
}

/// Signs in (same checks and lockout as [`login`]) and starts a browser session.
pub async fn start_session(
    service: &Service,
    client: &ClientInfo,
    input: LoginRequest,
) -> ServiceResult<BrowserSession> {
    let user = check_sign_in(service, client, input).await?;
    let now = service.clock.now_ms();
    let token = credentials::random_token(43);
    let expires_at = now + SESSION_SECS * 1000;
    service
        .store
        .create_session(now, &user.id, &credentials::sha256_hex(&token), expires_at)
        .await?;
    Ok(BrowserSession {
        token,
        user,
        expires_at,
    })
}

/// The live browser session with secret `token`, else unauthorized.
pub async fn current_session(
    service: &Service,
    user: &User,
    token: Option<String>,
) -> ServiceResult<BrowserSession> {
    let token = token.ok_or_else(|| {
        ServiceError::Unauthorized(
            "this endpoint is for browser sessions; no session cookie was sent".to_owned(),
        )
    })?;
    let (_, expires_at) = service
        .store
        .session_by_hash(&credentials::sha256_hex(&token), service.clock.now_ms())
        .await?
        .ok_or_else(|| ServiceError::Unauthorized("the session has ended".to_owned()))?;
    Ok(BrowserSession {
        token,
        user: user.clone(),
        expires_at,
    })
}

/// Ends the browser session with secret `token` (nothing to do without one).
pub async fn end_session(
    service: &Service,
    user: &User,
    client: &ClientInfo,
    token: Option<&str>,
) -> ServiceResult<()> {
    if let Some(token) = token {
        service
            .store
            .delete_session(&credentials::sha256_hex(token))
            .await?;
        audit_account(service, client, &user.id, "auth.session_end", "success").await;
    }
    Ok(())
}

/// The account `id` when it may act: disabled and vanished accounts are
/// unauthorized (for every credential: tokens, sessions, keys).
pub async fn active_user(service: &Service, id: &str) -> ServiceResult<User> {
    match service.store.user_by_id(id).await? {
        Some(user) if user.is_active => Ok(user),
        Some(_) => Err(ServiceError::Unauthorized(
            "this account is disabled".to_owned(),
        )),
        None => Err(ServiceError::Unauthorized("invalid credentials".to_owned())),
    }
}

/// Who acts with the API key whose secret hashes to `hash`: its owner, in
/// the key's org, with the key's scopes; and when the key expires. A
/// disabled key, a disabled owner or an owner who left the org is
/// unauthorized.
pub async fn key_principal(
    service: &Service,
    hash: &str,
) -> ServiceResult<(Principal, User, Option<i64>)> {
    let key = service
        .store
        .api_key_by_hash(hash)
        .await?
        .ok_or_else(|| ServiceError::Unauthorized("invalid API key".to_owned()))?;
    if !key.is_active {
        return Err(ServiceError::Unauthorized(
            "this API key is disabled".to_owned(),
        ));
    }
    let user = active_user(service, &key.user_id).await?;
    let org_role = service
        .store
        .org_role(&key.org_id, &user.id)
        .await?
        .ok_or_else(|| {
            ServiceError::Unauthorized(
                "the key's owner is no longer a member of its organization".to_owned(),
            )
        })?;
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

/// A signed-in `user` (access token or browser session) acting in
/// `requested_org`, else in their personal org (as its owner). An org the
/// user is not a member of is "not found".
pub async fn session_principal(
    service: &Service,
    user: &User,
    requested_org: Option<String>,
) -> ServiceResult<Principal> {
    let (org_id, org_role) = match requested_org {
        Some(org_id) => {
            let role = service
                .store
                .org_role(&org_id, &user.id)
                .await?
                .ok_or_else(|| ServiceError::not_found("organization"))?;
            (org_id, role)
        }
        None => (user.personal_org_id.clone(), OrgRole::Owner),
    };
    Ok(Principal {
        user_id: user.id.clone(),
        platform_role: user.role,
        org_id,
        org_role,
        credential: Credential::Session,
    })
}

/// Refuses unless `caller` may do `action` (role, platform role and key
/// scopes; see [`corral_core::auth::can`]), for use cases that a surface
/// may reach without an authorization table of its own.
pub fn require(caller: &Principal, action: Action) -> ServiceResult<()> {
    if can(caller, action) {
        Ok(())
    } else {
        Err(refusal(caller, action))
    }
}

/// Why `principal` may not do `action`, said so they can act on it (the
/// role it needs, the scope a key lacks, or to sign in instead of a key).
pub fn refusal(principal: &Principal, action: Action) -> ServiceError {
    let detail = match (&principal.credential, action) {
        (_, Action::Administer) if principal.platform_role < PlatformRole::Admin => {
            "this needs a platform administrator".to_owned()
        }
        _ if !action.allows_org_role(principal.org_role) => format!(
            "your role `{}` in this organization does not allow this; it needs `{}` or higher",
            principal.org_role,
            action
                .min_org_role()
                .map_or("owner", |role| role.as_str())
        ),
        (Credential::ApiKey { .. }, Action::ManageSelf) => {
            "API keys cannot change the account; sign in instead".to_owned()
        }
        (Credential::ApiKey { .. }, Action::CreateOrg) => {
            "an API key acts only in its own organization, so it cannot create one; sign in to create an organization".to_owned()
        }
        (Credential::ApiKey { scopes, .. }, _) => {
            let missing: Vec<String> = action
                .missing_scopes(scopes)
                .iter()
                .map(|scope| format!("`{scope}`"))
                .collect();
            if missing.is_empty() {
                "API keys cannot do this; sign in instead".to_owned()
            } else {
                format!(
                    "this API key lacks the scope {}; create a key with it",
                    missing.join(" and ")
                )
            }
        }
        (Credential::Session, _) => "this is not allowed".to_owned(),
    };
    ServiceError::Forbidden(detail)
}
