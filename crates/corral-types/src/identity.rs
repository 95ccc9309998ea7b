//! Wire types of identity: accounts, tokens, API keys, plans, audit.
//!
//! Request types reject unknown fields, so a client can never slip in
//! `role`, `org_id` or `plan_id` where they are not accepted.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/auth/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Email address; stored lowercased.
    pub email: String,
    /// 3–32 of `a-z 0-9 _ - .`.
    pub username: String,
    /// At least 10 characters, 4 distinct, not the username or email.
    pub password: String,
    /// An invitation to an organization, sent to this email: required when
    /// registration is invite-only; the new account joins that org and its
    /// address counts as verified.
    #[serde(default)]
    pub invitation_token: Option<String>,
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email.
    pub login: String,
    /// Password.
    pub password: String,
}

/// `POST /api/v1/auth/refresh` and `/auth/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token (`crr_…`).
    pub refresh_token: String,
}

/// A token pair. The refresh token is single-use: each refresh returns a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Single-use token for `/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// An account as its owner (or an admin) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    /// Id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Username.
    pub username: String,
    /// `user`, `admin` or `super_admin`.
    pub role: String,
    /// Plan id.
    pub plan: String,
    /// Whether the account may sign in.
    pub is_active: bool,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// The personal organization.
    pub personal_org_id: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// A plan and its limits; `null` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Executions per day.
    pub executions_per_day: Option<i64>,
    /// API calls per day with API keys.
    pub api_calls_per_day: Option<i64>,
    /// Longest execution, seconds.
    pub max_time_secs: i64,
    /// Memory per execution, MB.
    pub max_memory_mb: i64,
    /// Library snippets.
    pub max_snippets: Option<i64>,
    /// API keys.
    pub max_api_keys: Option<i64>,
    /// Concurrent sandboxes.
    pub max_sandboxes: Option<i64>,
    /// CPUs per sandbox.
    pub max_cpus: Option<i64>,
    /// Disk per sandbox, MB.
    pub max_disk_mb: Option<i64>,
    /// Executions of one org that run at once; more wait in line.
    pub max_concurrent_executions: i64,
}

/// `POST /api/v1/api-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// A name to recognise the key by.
    pub name: String,
    /// Scopes such as `sandboxes:write`, `executions:read`, `keys:write`.
    pub scopes: Vec<String>,
    /// The org the key acts in; default the caller's current org. The caller must be a member.
    #[serde(default)]
    pub org_id: Option<String>,
    /// Expiry (RFC 3339); default never.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `PATCH /api/v1/api-keys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKeyRequest {
    /// Turn the key on or off.
    pub is_active: bool,
}

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyResponse {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The key's visible start (`crl_` + 8 characters).
    pub prefix: String,
    /// The org it acts in.
    pub org_id: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Whether it is usable.
    pub is_active: bool,
    /// Expiry (RFC 3339).
    pub expires_at: Option<String>,
    /// Last use (RFC 3339).
    pub last_used_at: Option<String>,
    /// Uses so far.
    pub usage_count: i64,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// A new key: the only time `key` is ever shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKeyResponse {
    /// The full key; store it now, it cannot be shown again.
    pub key: String,
    /// The key's details.
    #[serde(flatten)]
    pub api_key: ApiKeyResponse,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordResponse {
    /// Id.
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub actor_user_id: Option<String>,
    /// In which org.
    pub org_id: Option<String>,
    /// What (`auth.login`, `api_key.create`, …).
    pub action: String,
    /// Type of object.
    pub resource_type: String,
    /// Id of object.
    pub resource_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Extra context.
    pub detail: Option<String>,
}

/// A page of a list; pass `next_cursor` as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Records, newest first.
    pub items: Vec<AuditRecordResponse>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// `PATCH /api/v1/users/me`: each field optional. A changed email must be
/// verified again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    /// New username.
    #[serde(default)]
    pub username: Option<String>,
    /// New email.
    #[serde(default)]
    pub email: Option<String>,
}

/// `POST /api/v1/users/me/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new password (same rules as at registration).
    pub new_password: String,
}

/// `PATCH /api/v1/admin/users/{id}`: each field optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdateUserRequest {
    /// Plan id (`free`, `basic`, `premium`, `enterprise`).
    #[serde(default)]
    pub plan: Option<String>,
    /// `user`, `admin` or `super_admin` (only a super admin grants or removes admin roles).
    #[serde(default)]
    pub role: Option<String>,
    /// Enable or disable sign-in; disabling refuses the user's tokens and keys at once.
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// A page of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// Users, oldest first.
    pub items: Vec<UserResponse>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/orgs` and `PATCH /api/v1/orgs/{org}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgRequest {
    /// 1–100 characters.
    pub name: String,
}

/// An organization, with the caller's role in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrgResponse {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Whether it is the caller's personal org (cannot be deleted).
    pub is_personal: bool,
    /// The caller's role: `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberResponse {
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Role.
    pub role: String,
    /// Joined (RFC 3339).
    pub joined_at: String,
}

/// `PATCH /api/v1/orgs/{org}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemberRequest {
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

/// `POST /api/v1/orgs/{org}/invitations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitationRequest {
    /// Who is invited; only an account with this email can accept.
    pub email: String,
    /// Role on acceptance (default `member`).
    #[serde(default)]
    pub role: Option<String>,
}

/// An invitation (without its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvitationResponse {
    /// Id.
    pub id: String,
    /// The org.
    pub org_id: String,
    /// Invited email.
    pub email: String,
    /// Role on acceptance.
    pub role: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// A new invitation: `token` is shown once (and delivered by email when configured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedInvitationResponse {
    /// Accept with `POST /api/v1/invitations/{token}/accept`.
    pub token: String,
    /// The invitation.
    #[serde(flatten)]
    pub invitation: InvitationResponse,
}

/// One quota of the caller's plan and how much of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    /// `executions`, `api_calls` (requests made with API keys), `api_keys`
    /// or `library_snippets`.
    pub name: String,
    /// `day` for daily quotas (reset at 00:00 UTC); absent for totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Used so far (today, for daily quotas).
    pub used: i64,
    /// The plan's limit; `null` is unlimited.
    pub limit: Option<i64>,
    /// What is left; `null` is unlimited.
    pub remaining: Option<i64>,
}

/// `GET /api/v1/users/me/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    /// The caller's plan id.
    pub plan: String,
    /// The UTC day the daily counts are for (`2026-11-24`).
    pub day: String,
    /// When the daily quotas reset (RFC 3339).
    pub resets_at: String,
    /// Every quota of the plan.
    pub quotas: Vec<QuotaUsage>,
}

/// A browser session: `POST` and `GET /api/v1/auth/session`. The session
/// itself travels in an HttpOnly cookie; `csrf_token` goes in the
/// `X-CSRF-Token` header of every state-changing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// The signed-in user.
    pub user: UserResponse,
    /// Send as `X-CSRF-Token` on POST, PUT, PATCH and DELETE.
    pub csrf_token: String,
    /// When the session ends (RFC 3339).
    pub expires_at: String,
}

/// How many audit records share one value (an action, a resource type, an outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditCount {
    /// The value.
    pub name: String,
    /// Records with it.
    pub count: i64,
}

/// `GET /api/v1/admin/audit/stats`: the audit log summarized over a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditStats {
    /// Records in the range.
    pub total: i64,
    /// Records with outcome `failure` or `denied`.
    pub failed: i64,
    /// By outcome, most frequent first.
    pub by_outcome: Vec<AuditCount>,
    /// By action, most frequent first.
    pub by_action: Vec<AuditCount>,
    /// By resource type, most frequent first.
    pub by_resource_type: Vec<AuditCount>,
}

/// `POST /api/v1/auth/verify-email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmailRequest {
    /// The token from the verification mail.
    pub token: String,
}

/// `POST /api/v1/auth/password-reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// The account's email address.
    pub email: String,
}

/// `POST /api/v1/auth/password-reset/confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    /// The token from the reset mail.
    pub token: String,
    /// The new password (same rules as at registration).
    pub new_password: String,
}

/// `POST /api/v1/admin/users/{id}/password-reset`: without `new_password`
/// the user is mailed a reset link; with it, the password is set now. Either
/// way every sign-in of the user ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminPasswordReset {
    /// A new password to set directly (same rules as at registration).
    #[serde(default)]
    pub new_password: Option<String>,
}

/// The answer to requests whose outcome is deliberately not revealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// What happens next.
    pub message: String,
}
