//! `/api/v1/library`: the code library. Snippets belong to a user (and
//! record the org they were made in); public ones are readable by every
//! signed-in user, private ones by their owner only — to anyone else a
//! private snippet does not exist (404, never 403). Only the owner changes
//! a snippet; the owner or a platform administrator deletes it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use corral_core::auth::{PlatformRole, Principal};
use corral_core::clock::rfc3339;
use corral_store::{NewSnippet, Snippet, SnippetChanges, SnippetFilter, StoreError};
use corral_types::library::{
    CreateSnippetRequest, SnippetPage, SnippetResponse, SnippetSummary, UpdateSnippetRequest,
};
use corral_types::{ErrorCode, FieldError};

use crate::auth::Caller;
use crate::auth::{ClientInfo, CurrentUser};
use crate::extract::ApiJson;
use crate::routes::admin::{page_cut, page_limit};
use crate::routes::auth::audit;
use crate::{ApiError, AppState};

/// Largest snippet code, bytes.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
/// Most tags on one snippet.
const MAX_TAGS: usize = 16;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/library", get(list).post(create))
        .route(
            "/api/v1/library/{id}",
            get(show).patch(update).delete(remove),
        )
}

/// The snippet `id` as `principal` may see it (public, or theirs), or 404.
/// This is the lookup for anything that uses a snippet on a caller's
/// behalf (running it, for one).
pub async fn snippet_for(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Snippet, ApiError> {
    state
        .store
        .snippet_for(&principal.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("snippet"))
}

fn response(s: Snippet) -> SnippetResponse {
    SnippetResponse {
        id: s.id,
        owner_id: s.owner_id,
        org_id: s.org_id,
        title: s.title,
        description: s.description,
        language: s.language,
        code: s.code,
        tags: s.tags,
        is_public: s.is_public,
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
    }
}

fn summary(s: Snippet) -> SnippetSummary {
    SnippetSummary {
        code_bytes: i64::try_from(s.code.len()).unwrap_or(i64::MAX),
        id: s.id,
        owner_id: s.owner_id,
        title: s.title,
        description: s.description,
        language: s.language,
        tags: s.tags,
        is_public: s.is_public,
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
    }
}

/// Field errors, gathered so one answer names every bad field.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: &str, message: &str) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

fn check_title(p: &mut Problems, title: &str) {
    if title.trim().is_empty() || title.chars().count() > 200 {
        p.add("title", "must be 1 to 200 characters");
    }
}

fn check_description(p: &mut Problems, description: &str) {
    if description.chars().count() > 2000 {
        p.add("description", "must be at most 2000 characters");
    }
}

fn check_code(p: &mut Problems, code: &str) {
    if code.is_empty() || code.len() > MAX_CODE_BYTES {
        p.add("code", "must be 1 byte to 256 KiB");
    }
}

/// A language name: 1–32 of `a-z 0-9 + # -` (whether it can run is the
/// executions' concern).
fn check_language(p: &mut Problems, language: &str) {
    let ok = (1..=32).contains(&language.len())
        && language
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+#-".contains(&b));
    if !ok {
        p.add(
            "language",
            "must be 1 to 32 characters of a-z, 0-9, `+`, `#` and `-`",
        );
    }
}

fn valid_tag(tag: &str) -> bool {
    (1..=32).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The tags, duplicates dropped (first kept), or field errors.
fn check_tags(p: &mut Problems, tags: &[String]) -> Vec<String> {
    if tags.len() > MAX_TAGS {
        p.add("tags", "at most 16 tags");
    }
    let mut distinct: Vec<String> = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        if !valid_tag(tag) {
            p.add(
                &format!("tags[{i}]"),
                "must be 1 to 32 characters of a-z, 0-9 and `-`",
            );
        } else if !distinct.contains(tag) {
            distinct.push(tag.clone());
        }
    }
    distinct
}

/// Creates a snippet owned by the caller, in the caller's org.
#[utoipa::path(
    post, path = "/api/v1/library", tag = "library", security(("bearer" = [])),
    request_body = CreateSnippetRequest,
    responses(
        (status = 201, description = "Created", body = SnippetResponse),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
        (status = 429, description = "The plan's snippet limit is reached", body = corral_types::Problem),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Caller,
    CurrentUser(user): CurrentUser,
    client: ClientInfo,
    ApiJson(body): ApiJson<CreateSnippetRequest>,
) -> Result<(StatusCode, Json<SnippetResponse>), ApiError> {
    let mut problems = Problems::default();
    check_title(&mut problems, &body.title);
    check_description(&mut problems, &body.description);
    check_language(&mut problems, &body.language);
    check_code(&mut problems, &body.code);
    let tags = check_tags(&mut problems, &body.tags);
    problems.finish()?;
    let max_snippets = state.plans.get(&user.plan_id).and_then(|p| p.max_snippets);
    let new = NewSnippet {
        owner_id: principal.user_id.clone(),
        org_id: principal.org_id.clone(),
        title: body.title.trim().to_owned(),
        description: body.description,
        language: body.language,
        code: body.code,
        tags,
        is_public: body.is_public,
        max_snippets,
    };
    let snippet = state
        .store
        .create_snippet(state.clock.now_ms(), new)
        .await
        .map_err(|e| match e {
            StoreError::QuotaExceeded(_) => ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "your plan's limit of {} library snippets is reached; delete one or change plan",
                    max_snippets.unwrap_or_default()
                ),
            ),
            other => other.into(),
        })?;
    audit_step(&state, &client, &principal, "library.create", &snippet.id).await;
    Ok((StatusCode::CREATED, Json(response(snippet))))
}

/// Search of `GET /api/v1/library`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LibraryQuery {
    /// Text in the title, description or code (ignoring case; `%` and `_`
    /// are literal).
    q: Option<String>,
    /// Only snippets with this tag.
    tag: Option<String>,
    /// Only snippets in this language.
    language: Option<String>,
    /// `me`: only the caller's own snippets.
    owner: Option<String>,
    /// `public` or `private` (private ones are only ever the caller's).
    visibility: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// Snippets the caller may see (public ones and their own), oldest first.
#[utoipa::path(
    get, path = "/api/v1/library", tag = "library", security(("bearer" = [])),
    params(LibraryQuery),
    responses(
        (status = 200, description = "A page of snippets, without their code", body = SnippetPage),
        (status = 422, description = "A parameter is refused", body = corral_types::Problem),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Caller,
    Query(query): Query<LibraryQuery>,
) -> Result<Json<SnippetPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let only_own = match query.owner.as_deref() {
        None => false,
        Some("me") => true,
        Some(_) => return Err(ApiError::invalid_field("owner", "must be `me`")),
    };
    let is_public = match query.visibility.as_deref() {
        None => None,
        Some("public") => Some(true),
        Some("private") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "visibility",
                "must be `public` or `private`",
            ));
        }
    };
    let text = query.q.filter(|q| !q.is_empty());
    if text.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ApiError::invalid_field(
            "q",
            "must be at most 200 characters",
        ));
    }
    let filter = SnippetFilter {
        viewer_id: principal.user_id.clone(),
        text,
        tag: query.tag,
        language: query.language,
        only_own,
        is_public,
        after_id: query.cursor,
        limit: limit + 1,
    };
    let mut items = state.store.snippets(&filter).await?;
    let next_cursor = page_cut(&mut items, limit, |s| s.id.clone());
    Ok(Json(SnippetPage {
        items: items.into_iter().map(summary).collect(),
        next_cursor,
    }))
}

/// One snippet with its code.
#[utoipa::path(
    get, path = "/api/v1/library/{id}", tag = "library", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    responses(
        (status = 200, description = "The snippet", body = SnippetResponse),
        (status = 404, description = "No such snippet you may see", body = corral_types::Problem),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Caller,
    Path(id): Path<String>,
) -> Result<Json<SnippetResponse>, ApiError> {
    snippet_for(&state, &principal, &id)
        .await
        .map(response)
        .map(Json)
}

/// Changes one of the caller's snippets.
#[utoipa::path(
    patch, path = "/api/v1/library/{id}", tag = "library", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    request_body = UpdateSnippetRequest,
    responses(
        (status = 200, description = "Changed", body = SnippetResponse),
        (status = 404, description = "No such snippet of yours", body = corral_types::Problem),
        (status = 422, description = "A value is refused", body = corral_types::Problem),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSnippetRequest>,
) -> Result<Json<SnippetResponse>, ApiError> {
    let mut problems = Problems::default();
    if let Some(title) = &body.title {
        check_title(&mut problems, title);
    }
    if let Some(description) = &body.description {
        check_description(&mut problems, description);
    }
    if let Some(language) = &body.language {
        check_language(&mut problems, language);
    }
    if let Some(code) = &body.code {
        check_code(&mut problems, code);
    }
    let tags = body.tags.as_deref().map(|t| check_tags(&mut problems, t));
    problems.finish()?;
    let changes = SnippetChanges {
        title: body.title.map(|t| t.trim().to_owned()),
        description: body.description,
        language: body.language,
        code: body.code,
        tags,
        is_public: body.is_public,
    };
    let snippet = state
        .store
        .update_snippet(state.clock.now_ms(), &principal.user_id, &id, &changes)
        .await?
        .ok_or_else(|| ApiError::not_found("snippet"))?;
    audit_step(&state, &client, &principal, "library.update", &id).await;
    Ok(Json(response(snippet)))
}

/// Deletes one of the caller's snippets; a platform administrator may
/// delete any.
#[utoipa::path(
    delete, path = "/api/v1/library/{id}", tag = "library", security(("bearer" = [])),
    params(("id" = String, Path, description = "Snippet id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such snippet of yours", body = corral_types::Problem),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Caller,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = if principal.platform_role >= PlatformRole::Admin {
        None
    } else {
        Some(principal.user_id.as_str())
    };
    if !state.store.delete_snippet(owner, &id).await? {
        return Err(ApiError::not_found("snippet"));
    }
    audit_step(&state, &client, &principal, "library.delete", &id).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit_step(
    state: &AppState,
    client: &ClientInfo,
    principal: &Principal,
    action: &str,
    id: &str,
) {
    audit(
        state,
        client,
        Some(&principal.user_id),
        Some(&principal.org_id),
        action,
        "snippet",
        Some(id),
        "success",
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_tags_are_small_identifiers() {
        let languages = [
            ("python", true),
            ("c++", true),
            ("c#", true),
            ("objective-c", true),
            ("", false),
            ("Python", false),
            ("py thon", false),
            (&"a".repeat(33), false),
        ];
        for (language, ok) in languages {
            let mut p = Problems::default();
            check_language(&mut p, language);
            assert_eq!(p.0.is_empty(), ok, "{language}");
        }
        for (tag, ok) in [("sort", true), ("a-1", true), ("c++", false), ("", false)] {
            assert_eq!(valid_tag(tag), ok, "{tag}");
        }
    }
}
