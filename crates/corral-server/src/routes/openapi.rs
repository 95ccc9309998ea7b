//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//!
//! The committed snapshot (`openapi.json` at the repository root) is checked
//! against this by a test, so an API change is always a visible diff.

use utoipa::OpenApi;

use corral_types::meta::{Check, Health, Ready};
use corral_types::queue::{
    JobPage, JobResponse, QueueActionResponse, QueueList, QueueStatsResponse,
};
use corral_types::{ErrorCode, FieldError, Problem};

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use corral_types::identity::{
    AdminUpdateUserRequest, ApiKeyResponse, AuditCount, AuditPage, AuditRecordResponse, AuditStats,
    ChangePasswordRequest, CreateApiKeyRequest, CreatedApiKeyResponse, LoginRequest, PlanResponse,
    RefreshRequest, RegisterRequest, TokenResponse, UpdateApiKeyRequest, UserPage, UserResponse,
};

use corral_types::identity::{
    Accepted, AdminPasswordReset, CreateInvitationRequest, CreatedInvitationResponse,
    InvitationResponse, MemberResponse, OrgRequest, OrgResponse, PasswordResetConfirm,
    PasswordResetRequest, QuotaUsage, SessionResponse, UpdateMeRequest, UpdateMemberRequest,
    UsageResponse, VerifyEmailRequest,
};

use super::library;
use super::queues;
use super::{
    account, admin, api_keys, auth, contexts, email, executions, files, meta, orgs, processes,
    sandboxes, sessions, terminals,
};
use corral_types::agent::{ExecResult, FileInfo, SearchMatch};
use corral_types::contexts::{
    ContextInfo, CreateContextRequest, RunCodeRequest, RunError, RunResult,
};
use corral_types::executions::{
    BatchRequest, BatchResponse, CreateExecutionRequest, ExecutionFile, ExecutionLimits,
    ExecutionPage, ExecutionResponse, LanguageResponse, RunSnippetRequest,
};
use corral_types::library::{
    CreateSnippetRequest, SnippetPage, SnippetResponse, SnippetSummary, UpdateSnippetRequest,
};
use corral_types::sandbox::{
    ChmodRequest, CreateSandboxRequest, DeleteRequest, ExecRequestBody, ExecStarted, MkdirRequest,
    MoveRequest, ReplaceRequest, ReplaceResponse, Resources, SandboxPage, SandboxResponse,
    SandboxStats, SearchResponse, UpdateSandboxRequest,
};
use corral_types::terminal::{
    LogChunk, OpenTerminalRequest, ProcessInfo, ProcessLogs, ProcessSignalRequest,
    ProcessStdinRequest, StartProcessRequest, TerminalClientMessage, TerminalInfo,
    TerminalServerMessage,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Corral API",
        description = "Run untrusted code: sandboxes, executions, a code library and more.\n\nErrors are `application/problem+json` (RFC 9457) with a stable `code`; branch on it, never on `title` or `detail`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        meta::health, meta::ready, meta::metrics,
        auth::register, auth::login, auth::refresh, auth::logout,
        sessions::sign_in, sessions::current, sessions::sign_out,
        sandboxes::create, sandboxes::list, sandboxes::show, sandboxes::update, sandboxes::remove,
        sandboxes::start, sandboxes::stop, sandboxes::pause, sandboxes::resume, sandboxes::exec, sandboxes::exec_stdin, sandboxes::stats, sandboxes::admin_list,
        files::list, files::download, files::upload, files::mkdir, files::rename, files::delete, files::chmod, files::replace, files::search,
        terminals::open, terminals::list, terminals::close, terminals::attach,
        executions::list_languages, executions::create, executions::create_batch, executions::batch,
        executions::show, executions::history, executions::admin_history, executions::run_snippet,
        processes::start, processes::list, processes::logs, processes::stdin, processes::signal,
        library::create, library::list, library::show, library::update, library::remove,
        contexts::create, contexts::list, contexts::remove, contexts::run,
        email::verify_email, email::resend_verification, email::request_reset, email::confirm_reset, email::admin_reset,
        account::me, account::update_me, account::usage, account::change_password, account::plans,
        api_keys::create, api_keys::list, api_keys::update, api_keys::revoke, api_keys::revoke_current,
        admin::audit_log, admin::audit_stats, admin::audit_actions, admin::audit_resource_types,
        admin::list_users, admin::update_user,
        queues::list_queues, queues::list_jobs, queues::get_job, queues::retry_job,
        queues::retry_queue, queues::clear_queue,
        orgs::create, orgs::list, orgs::show, orgs::rename, orgs::remove, orgs::members,
        orgs::update_member, orgs::remove_member, orgs::invite, orgs::invitations,
        orgs::uninvite, orgs::accept, orgs::org_audit,
    ),
    components(schemas(
        Problem, ErrorCode, FieldError, Health, Ready, Check,
        RegisterRequest, LoginRequest, RefreshRequest, TokenResponse, UserResponse, PlanResponse,
        CreateApiKeyRequest, UpdateApiKeyRequest, ApiKeyResponse, CreatedApiKeyResponse,
        AuditRecordResponse, AuditPage, AuditCount, AuditStats, ChangePasswordRequest, AdminUpdateUserRequest, UserPage,
        OrgRequest, OrgResponse, MemberResponse, UpdateMeRequest, UpdateMemberRequest, UsageResponse, QuotaUsage, SessionResponse, CreateSandboxRequest, Resources, SandboxResponse, SandboxPage, UpdateSandboxRequest, SandboxStats, ExecRequestBody, ExecStarted, ExecResult, FileInfo, SearchMatch, SearchResponse, ReplaceRequest, ReplaceResponse, MkdirRequest, MoveRequest, DeleteRequest, ChmodRequest, VerifyEmailRequest, PasswordResetRequest, PasswordResetConfirm, AdminPasswordReset, Accepted, CreateInvitationRequest,
        InvitationResponse, CreatedInvitationResponse,
        CreateExecutionRequest, ExecutionResponse, ExecutionPage, ExecutionLimits, ExecutionFile,
        BatchRequest, BatchResponse, LanguageResponse, RunSnippetRequest,
        OpenTerminalRequest, TerminalInfo, TerminalClientMessage, TerminalServerMessage, StartProcessRequest, ProcessInfo,
        ProcessLogs, LogChunk, ProcessStdinRequest, ProcessSignalRequest,
        CreateSnippetRequest, UpdateSnippetRequest, SnippetResponse, SnippetSummary, SnippetPage,
        CreateContextRequest, ContextInfo, RunCodeRequest, RunResult, RunError,
        QueueList, QueueStatsResponse, JobResponse, JobPage, QueueActionResponse,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "meta", description = "Liveness, readiness and metrics"),
        (name = "auth", description = "Sign-up, sign-in and tokens"),
        (name = "account", description = "The caller's account and the plans"),
        (name = "api-keys", description = "Scoped API keys (`crl_…`)"),
        (name = "orgs", description = "Organizations, members, invitations and their audit log"),
        (name = "admin", description = "Platform administration"),
        (name = "executions", description = "One-shot runs to a verdict (the judge), batches and history"),
        (name = "terminals", description = "Persistent terminals in a sandbox, attached over a WebSocket"),
        (name = "processes", description = "Background processes in a sandbox and their logs"),
        (name = "library", description = "The code library: snippets, private or shared with every signed-in user"),
        (name = "contexts", description = "Interpreter contexts: persistent interpreters in a sandbox that keep their state between runs"),
    ),
)]
struct ApiDoc;

/// Declares the `bearer` scheme: a JWT access token or an API key.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A JWT access token from /auth/login, or an API key (`crl_…`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API description served at `/openapi.json`.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The API description as pretty JSON, as committed in `openapi.json`.
pub fn api_doc_json() -> String {
    let mut json = api_doc()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}
