//! Accounts: registration (open, by invitation or closed), the rules every
//! account field follows, the caller's own profile, password and usage, and
//! the plans.

use corral_core::auth::{PlatformRole, Principal};
use corral_core::clock::rfc3339;
use corral_core::validate::{check_password, check_username, normalize_email};
use corral_store::{NewUser, User};
use corral_types::FieldError;
use corral_types::identity::{
    ChangePasswordRequest, PlanResponse, QuotaUsage, RegisterRequest, UpdateMeRequest,
    UsageResponse, UserResponse,
};

use crate::audit::{ClientInfo, audit, audit_account};
use crate::config::Registration;
use crate::{Service, ServiceError, ServiceResult, credentials, email, quota};

/// The plan every self-registered account starts on.
const REGISTRATION_PLAN: &str = "free";

/// An account as the API shows it.
pub fn user_response(user: &User) -> UserResponse {
    UserResponse {
        id: user.id.clone(),
        email: user.email.clone(),
        username: user.username.clone(),
        role: user.role.as_str().to_owned(),
        plan: user.plan_id.clone(),
        is_active: user.is_active,
        email_verified: user.email_verified,
        personal_org_id: user.personal_org_id.clone(),
        created_at: rfc3339(user.created_at),
    }
}

/// Whether this server lets people create their own accounts (openly or
/// with an invitation).
pub fn can_register(service: &Service) -> bool {
    service.config.auth.registration != Registration::Closed
}

/// Creates an account with a personal organization, as the server's
/// registration setting allows. With an invitation token, the invited
/// address is taken as verified and the account joins the inviting org;
/// without one, a verification mail goes out.
pub async fn register(
    service: &Service,
    client: &ClientInfo,
    input: RegisterRequest,
) -> ServiceResult<UserResponse> {
    let now = service.clock.now_ms();
    let invitation = match (&input.invitation_token, service.config.auth.registration) {
        (_, Registration::Closed) => {
            return Err(ServiceError::Forbidden(
                "registration is closed on this server; ask an administrator for an account"
                    .to_owned(),
            ));
        }
        (None, Registration::InviteOnly) => {
            return Err(ServiceError::Forbidden(
                "registration on this server is by invitation only; \
                 register with the `invitation_token` from your invitation mail"
                    .to_owned(),
            ));
        }
        (None, Registration::Open) => None,
        (Some(token), _) => {
            let email = normalize_email(&input.email).unwrap_or_default();
            let hash = credentials::sha256_hex(token);
            match service.store.open_invitation(now, &hash, &email).await? {
                Some(_) => Some(hash),
                None => {
                    return Err(ServiceError::invalid_field(
                        "invitation_token",
                        "no open invitation with this token for this email address",
                    ));
                }
            }
        }
    };
    let user = create_checked(
        service,
        &input.email,
        &input.username,
        &input.password,
        PlatformRole::User,
        REGISTRATION_PLAN,
    )
    .await?;
    let user = match invitation {
        // The invitation mail reached this address: it is verified, and the
        // new account joins the inviting org.
        Some(hash) => {
            service
                .store
                .accept_invitation(now, &hash, &user.id, &user.email)
                .await?;
            service
                .store
                .mark_email_verified(now, &user.id, &user.email)
                .await?;
            service.store.user_by_id(&user.id).await?.unwrap_or(user)
        }
        None => {
            email::send_verification(service, &user).await?;
            user
        }
    };
    audit(
        service,
        client,
        Some(&user.id),
        Some(&user.personal_org_id),
        "auth.register",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(user_response(&user))
}

/// Validates every field (all bad fields are named at once), then creates
/// the account with `role` on `plan`; used by registration (always a user
/// on the free plan: the API never grants a platform role) and by
/// `corral admin create-user`.
pub async fn create_checked(
    service: &Service,
    email: &str,
    username: &str,
    password: &str,
    role: PlatformRole,
    plan: &str,
) -> ServiceResult<User> {
    let mut errors = Vec::new();
    let normalized = normalize_email(email).map_err(|m| field("email", m));
    if let Err(e) = &normalized {
        errors.push(e.clone());
    }
    if let Err(e) = check_username(username) {
        errors.push(field("username", e));
    }
    if let Err(e) = check_password(password, username, email) {
        errors.push(field("password", e));
    }
    match normalized {
        Ok(email) if errors.is_empty() => {
            let new = NewUser {
                email,
                username: username.to_owned(),
                password_hash: hash_password(password.to_owned()).await?,
                role,
                plan_id: plan.to_owned(),
            };
            Ok(service
                .store
                .create_user(service.clock.now_ms(), new)
                .await?)
        }
        _ => Err(ServiceError::Validation(errors)),
    }
}

fn field(name: &str, message: String) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message,
    }
}

/// Hashes a password off the async threads (Argon2 takes tens of milliseconds).
pub(crate) async fn hash_password(password: String) -> ServiceResult<String> {
    tokio::task::spawn_blocking(move || credentials::hash_password(&password))
        .await
        .map_err(ServiceError::internal)?
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("hashing failed: {e}")))
}

/// Whether `password` matches `hash`, checked off the async threads.
pub(crate) async fn password_matches(password: String, hash: String) -> ServiceResult<bool> {
    tokio::task::spawn_blocking(move || credentials::verify_password(&password, &hash))
        .await
        .map_err(ServiceError::internal)
}

/// Changes `user`'s username or email. A new email is unverified until
/// proven again.
pub async fn update_me(
    service: &Service,
    user: &User,
    client: &ClientInfo,
    input: UpdateMeRequest,
) -> ServiceResult<UserResponse> {
    if let Some(username) = &input.username {
        check_username(username).map_err(|m| ServiceError::invalid_field("username", m))?;
    }
    let email = input
        .email
        .as_deref()
        .map(normalize_email)
        .transpose()
        .map_err(|m| ServiceError::invalid_field("email", m))?;
    service
        .store
        .update_profile(
            service.clock.now_ms(),
            &user.id,
            input.username.as_deref(),
            email.as_deref(),
        )
        .await?;
    audit_account(service, client, &user.id, "user.update", "success").await;
    let user = service
        .store
        .user_by_id(&user.id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    Ok(user_response(&user))
}

/// `user`'s plan quotas and how much of each is used today.
pub async fn usage(service: &Service, user: &User) -> ServiceResult<UsageResponse> {
    let now = service.clock.now_ms();
    let day = quota::day_of(now);
    service.daily_usage.flush(&service.store).await?;
    let counts = service.store.daily_usage(&user.id, day).await?;
    let quota_of = |name: &str, period: Option<&str>, used: i64, limit: Option<i64>| QuotaUsage {
        name: name.to_owned(),
        period: period.map(str::to_owned),
        used,
        limit,
        remaining: limit.map(|l| (l - used).max(0)),
    };
    let mut quotas: Vec<QuotaUsage> = quota::Daily::ALL
        .iter()
        .map(|daily| {
            let used = counts
                .iter()
                .find(|(metric, _)| metric == daily.name())
                .map_or(0, |(_, count)| *count);
            quota_of(daily.name(), Some("day"), used, daily.limit(service, user))
        })
        .collect();
    let plan = service.plans.get(&user.plan_id);
    let keys = service.store.list_api_keys(&user.id).await?.len();
    quotas.push(quota_of(
        "api_keys",
        None,
        i64::try_from(keys).unwrap_or(i64::MAX),
        plan.and_then(|p| p.max_api_keys),
    ));
    let snippets = service.store.snippet_count(&user.id).await?;
    quotas.push(quota_of(
        "library_snippets",
        None,
        snippets,
        plan.and_then(|p| p.max_snippets),
    ));
    Ok(UsageResponse {
        plan: user.plan_id.clone(),
        day: rfc3339(day * quota::DAY_MS)[..10].to_owned(),
        resets_at: rfc3339((day + 1) * quota::DAY_MS),
        quotas,
    })
}

/// Every plan and its limits, cheapest first; `None` is unlimited.
pub async fn plans(service: &Service) -> ServiceResult<Vec<PlanResponse>> {
    let plans = service.store.plans().await?;
    Ok(plans
        .into_iter()
        .map(|p| PlanResponse {
            id: p.id,
            name: p.name,
            executions_per_day: p.executions_per_day,
            api_calls_per_day: p.api_calls_per_day,
            max_time_secs: p.max_time_secs,
            max_memory_mb: p.max_memory_mb,
            max_snippets: p.max_snippets,
            max_api_keys: p.max_api_keys,
            max_sandboxes: p.max_sandboxes,
            max_cpus: p.max_cpus,
            max_disk_mb: p.max_disk_mb,
            max_concurrent_executions: p.max_concurrent_executions,
        })
        .collect())
}

/// Changes the caller's password, given the current one, and ends every
/// sign-in of the account (refresh tokens and browser sessions).
pub async fn change_password(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    input: ChangePasswordRequest,
) -> ServiceResult<()> {
    let user = service
        .store
        .user_by_id(&caller.user_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    if let Err(message) = check_password(&input.new_password, &user.username, &user.email) {
        return Err(ServiceError::invalid_field("new_password", message));
    }
    if !password_matches(input.current_password, user.password_hash.clone()).await? {
        audit_account(service, client, &user.id, "user.password_change", "failure").await;
        return Err(ServiceError::Forbidden(
            "the current password is wrong".to_owned(),
        ));
    }
    let new_hash = hash_password(input.new_password).await?;
    service
        .store
        .set_password(service.clock.now_ms(), &user.id, &new_hash)
        .await?;
    audit_account(service, client, &user.id, "user.password_change", "success").await;
    Ok(())
}
