//! Flows that go through the user's mailbox: email verification and
//! password reset (self-service and by an administrator). [`crate::mail`]
//! is the transport; this module decides what is sent and what a mailed
//! token proves.

use serde_json::json;

use corral_core::auth::{PlatformRole, Principal};
use corral_core::validate::{check_password, normalize_email};
use corral_store::{TokenPurpose, User};
use corral_types::identity::{AdminPasswordReset, PasswordResetRequest};

use crate::accounts::hash_password;
use crate::audit::{ClientInfo, audit, audit_account};
use crate::credentials::{random_token, sha256_hex};
use crate::mail::Mail;
use crate::{Service, ServiceError, ServiceResult};

/// How long a verification link works.
const VERIFY_TTL_MS: i64 = 48 * 3_600_000;
/// How long a password-reset link works.
const RESET_TTL_MS: i64 = 3_600_000;

/// Stores a new single-use token for `user` (replacing older ones of the
/// same purpose) and returns it, to be mailed.
async fn new_email_token(
    service: &Service,
    user: &User,
    purpose: TokenPurpose,
    ttl_ms: i64,
) -> ServiceResult<String> {
    let prefix = match purpose {
        TokenPurpose::VerifyEmail => "crv_",
        TokenPurpose::PasswordReset => "crp_",
    };
    let token = format!("{prefix}{}", random_token(40));
    let now = service.clock.now_ms();
    service
        .store
        .create_email_token(
            now,
            &user.id,
            purpose,
            &sha256_hex(&token),
            &user.email,
            now + ttl_ms,
        )
        .await?;
    Ok(token)
}

/// Mails `user` a link proving they read mail at their address.
pub async fn send_verification(service: &Service, user: &User) -> ServiceResult<()> {
    let token = new_email_token(service, user, TokenPurpose::VerifyEmail, VERIFY_TTL_MS).await?;
    service.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Confirm your email address".into(),
        template: "verify",
        context: json!({
            "username": user.username,
            "email": user.email,
            "token": token,
            "link": service.mailer.link(&format!("/verify-email?token={token}")),
            "hours": VERIFY_TTL_MS / 3_600_000,
        }),
    });
    Ok(())
}

/// Mails `user` a password-reset link.
async fn send_reset(service: &Service, user: &User, by_admin: bool) -> ServiceResult<()> {
    let token = new_email_token(service, user, TokenPurpose::PasswordReset, RESET_TTL_MS).await?;
    service.mailer.send(Mail {
        to: user.email.clone(),
        subject: "Reset your Corral password".into(),
        template: "reset",
        context: json!({
            "username": user.username,
            "token": token,
            "link": service.mailer.link(&format!("/reset-password?token={token}")),
            "minutes": RESET_TTL_MS / 60_000,
            "by_admin": by_admin,
        }),
    });
    Ok(())
}

fn bad_token() -> ServiceError {
    ServiceError::invalid_field(
        "token",
        "this token is unknown, already used or expired; ask for a new mail",
    )
}

/// Verifies the address a verification token was mailed to.
pub async fn verify_with_token(
    service: &Service,
    client: &ClientInfo,
    token: &str,
) -> ServiceResult<()> {
    let now = service.clock.now_ms();
    let (user_id, email) = service
        .store
        .consume_email_token(now, TokenPurpose::VerifyEmail, &sha256_hex(token))
        .await?
        .ok_or_else(bad_token)?;
    if !service
        .store
        .mark_email_verified(now, &user_id, &email)
        .await?
    {
        // The address changed after the mail was sent.
        return Err(bad_token());
    }
    audit_account(service, client, &user_id, "user.verify_email", "success").await;
    Ok(())
}

/// Sends `user` the verification mail again (the previous link stops
/// working); returns the address it goes to.
pub async fn resend_verification(service: &Service, user: &User) -> ServiceResult<String> {
    if user.email_verified {
        return Err(ServiceError::conflict("this address is already verified"));
    }
    send_verification(service, user).await?;
    Ok(user.email.clone())
}

/// Mails a password-reset link when an active account has this address.
/// Succeeds the same either way, so it cannot be used to find accounts.
pub async fn request_reset(
    service: &Service,
    client: &ClientInfo,
    input: PasswordResetRequest,
) -> ServiceResult<()> {
    let email =
        normalize_email(&input.email).map_err(|m| ServiceError::invalid_field("email", m))?;
    let user = service.store.user_by_login(&email).await?;
    let outcome = match user.as_ref().filter(|u| u.is_active && u.email == email) {
        Some(user) => {
            send_reset(service, user, false).await?;
            "success"
        }
        None => "failure",
    };
    let actor = user.as_ref().map(|u| u.id.as_str());
    audit(
        service,
        client,
        actor,
        None,
        "auth.password_reset_request",
        "user",
        actor,
        outcome,
    )
    .await;
    Ok(())
}

/// Sets a new password with a reset token; the token is spent only when
/// the password is accepted. Every sign-in of the account ends.
pub async fn reset_with_token(
    service: &Service,
    client: &ClientInfo,
    token: &str,
    new_password: String,
) -> ServiceResult<()> {
    let now = service.clock.now_ms();
    let hash = sha256_hex(token);
    let (user_id, _) = service
        .store
        .email_token_owner(now, TokenPurpose::PasswordReset, &hash)
        .await?
        .ok_or_else(bad_token)?;
    let user = service
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or_else(bad_token)?;
    check_password(&new_password, &user.username, &user.email)
        .map_err(|m| ServiceError::invalid_field("new_password", m))?;
    service
        .store
        .consume_email_token(now, TokenPurpose::PasswordReset, &hash)
        .await?
        .ok_or_else(bad_token)?;
    set_password(service, &user.id, new_password).await?;
    audit_account(service, client, &user.id, "auth.password_reset", "success").await;
    Ok(())
}

/// Hashes and stores a new password; ends every sign-in.
async fn set_password(service: &Service, user_id: &str, password: String) -> ServiceResult<()> {
    let hash = hash_password(password).await?;
    service
        .store
        .set_password(service.clock.now_ms(), user_id, &hash)
        .await?;
    Ok(())
}

/// What an administrator's password reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminReset {
    /// A reset link is mailed to this address.
    Mailed(String),
    /// The password given was set.
    Set,
}

/// An administrator resets user `id`'s password: mails them a reset link,
/// or sets `new_password` directly. Every sign-in of the user ends either
/// way. Only a super admin resets an administrator's password.
pub async fn admin_reset(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    input: AdminPasswordReset,
) -> ServiceResult<AdminReset> {
    let user = service
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ServiceError::not_found("user"))?;
    if user.role >= PlatformRole::Admin && caller.platform_role < PlatformRole::SuperAdmin {
        return Err(ServiceError::Forbidden(
            "only a super admin may reset an administrator's password".to_owned(),
        ));
    }
    let done = match input.new_password {
        Some(password) => {
            check_password(&password, &user.username, &user.email)
                .map_err(|m| ServiceError::invalid_field("new_password", m))?;
            set_password(service, &user.id, password).await?;
            AdminReset::Set
        }
        None => {
            service
                .store
                .end_all_sessions(service.clock.now_ms(), &user.id)
                .await?;
            send_reset(service, &user, true).await?;
            AdminReset::Mailed(user.email.clone())
        }
    };
    audit(
        service,
        client,
        Some(&caller.user_id),
        None,
        "admin.password_reset",
        "user",
        Some(&user.id),
        "success",
    )
    .await;
    Ok(done)
}
