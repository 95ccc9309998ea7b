//! The code library. Snippets belong to a user (and record the org they
//! were made in); public ones are readable by every signed-in user, private
//! ones by their owner only — to anyone else a private snippet does not
//! exist (not found, never forbidden). Only the owner changes a snippet;
//! the owner or a platform administrator deletes it.

use corral_core::auth::{PlatformRole, Principal};
use corral_core::clock::rfc3339;
use corral_store::{NewSnippet, Snippet, SnippetChanges, SnippetFilter, StoreError, User};
use corral_types::FieldError;
use corral_types::library::{
    CreateSnippetRequest, SnippetPage, SnippetResponse, SnippetSummary, UpdateSnippetRequest,
};

use crate::audit::{ClientInfo, audit};
use crate::paging::{page_cut, page_limit};
use crate::{Service, ServiceError, ServiceResult};

/// Largest snippet code, bytes.
pub const MAX_CODE_BYTES: usize = 256 * 1024;
/// Most tags on one snippet.
const MAX_TAGS: usize = 16;
/// Longest search text, characters.
const MAX_SEARCH_CHARS: usize = 200;

/// The snippet `id` as `caller` may see it (public, or theirs), or not
/// found. This is the lookup for anything that uses a snippet on a
/// caller's behalf (running it, for one).
pub async fn snippet_for(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<Snippet> {
    service
        .store
        .snippet_for(&caller.user_id, id)
        .await?
        .ok_or_else(|| ServiceError::not_found("snippet"))
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

    fn finish(self) -> ServiceResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Validation(self.0))
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

/// Creates a snippet owned by the caller, in the caller's org, within
/// `user`'s plan's number of snippets.
pub async fn create(
    service: &Service,
    caller: &Principal,
    user: &User,
    client: &ClientInfo,
    input: CreateSnippetRequest,
) -> ServiceResult<SnippetResponse> {
    let mut problems = Problems::default();
    check_title(&mut problems, &input.title);
    check_description(&mut problems, &input.description);
    check_language(&mut problems, &input.language);
    check_code(&mut problems, &input.code);
    let tags = check_tags(&mut problems, &input.tags);
    problems.finish()?;
    let max_snippets = service
        .plans
        .get(&user.plan_id)
        .and_then(|p| p.max_snippets);
    let new = NewSnippet {
        owner_id: caller.user_id.clone(),
        org_id: caller.org_id.clone(),
        title: input.title.trim().to_owned(),
        description: input.description,
        language: input.language,
        code: input.code,
        tags,
        is_public: input.is_public,
        max_snippets,
    };
    let snippet = service
        .store
        .create_snippet(service.clock.now_ms(), new)
        .await
        .map_err(|e| match e {
            StoreError::QuotaExceeded(_) => ServiceError::Quota {
                detail: format!(
                    "your plan's limit of {} library snippets is reached; delete one or change plan",
                    max_snippets.unwrap_or_default()
                ),
                resets_at: None,
                retry_after_secs: None,
            },
            other => other.into(),
        })?;
    audit_step(service, client, caller, "library.create", &snippet.id).await;
    Ok(response(snippet))
}

/// A search of the library; every field optional.
#[derive(Debug, Clone, Default)]
pub struct LibrarySearch {
    /// Text in the title, description or code (ignoring case; `%` and `_`
    /// are literal).
    pub q: Option<String>,
    /// Only snippets with this tag.
    pub tag: Option<String>,
    /// Only snippets in this language.
    pub language: Option<String>,
    /// `me`: only the caller's own snippets.
    pub owner: Option<String>,
    /// `public` or `private` (private ones are only ever the caller's).
    pub visibility: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
}

/// Snippets the caller may see (public ones and their own), oldest first,
/// without their code.
pub async fn list(
    service: &Service,
    caller: &Principal,
    search: LibrarySearch,
) -> ServiceResult<SnippetPage> {
    let limit = page_limit(search.limit)?;
    let only_own = match search.owner.as_deref() {
        None => false,
        Some("me") => true,
        Some(_) => return Err(ServiceError::invalid_field("owner", "must be `me`")),
    };
    let is_public = match search.visibility.as_deref() {
        None => None,
        Some("public") => Some(true),
        Some("private") => Some(false),
        Some(_) => {
            return Err(ServiceError::invalid_field(
                "visibility",
                "must be `public` or `private`",
            ));
        }
    };
    let text = search.q.filter(|q| !q.is_empty());
    if text
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_SEARCH_CHARS)
    {
        return Err(ServiceError::invalid_field(
            "q",
            "must be at most 200 characters",
        ));
    }
    let filter = SnippetFilter {
        viewer_id: caller.user_id.clone(),
        text,
        tag: search.tag,
        language: search.language,
        only_own,
        is_public,
        after_id: search.cursor,
        limit: limit + 1,
    };
    let mut items = service.store.snippets(&filter).await?;
    let next_cursor = page_cut(&mut items, limit, |s| s.id.clone());
    Ok(SnippetPage {
        items: items.into_iter().map(summary).collect(),
        next_cursor,
    })
}

/// One snippet the caller may see, with its code.
pub async fn show(
    service: &Service,
    caller: &Principal,
    id: &str,
) -> ServiceResult<SnippetResponse> {
    snippet_for(service, caller, id).await.map(response)
}

/// Changes one of the caller's snippets (another's is not found).
pub async fn update(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
    input: UpdateSnippetRequest,
) -> ServiceResult<SnippetResponse> {
    let mut problems = Problems::default();
    if let Some(title) = &input.title {
        check_title(&mut problems, title);
    }
    if let Some(description) = &input.description {
        check_description(&mut problems, description);
    }
    if let Some(language) = &input.language {
        check_language(&mut problems, language);
    }
    if let Some(code) = &input.code {
        check_code(&mut problems, code);
    }
    let tags = input.tags.as_deref().map(|t| check_tags(&mut problems, t));
    problems.finish()?;
    let changes = SnippetChanges {
        title: input.title.map(|t| t.trim().to_owned()),
        description: input.description,
        language: input.language,
        code: input.code,
        tags,
        is_public: input.is_public,
    };
    let snippet = service
        .store
        .update_snippet(service.clock.now_ms(), &caller.user_id, id, &changes)
        .await?
        .ok_or_else(|| ServiceError::not_found("snippet"))?;
    audit_step(service, client, caller, "library.update", id).await;
    Ok(response(snippet))
}

/// Deletes one of the caller's snippets; a platform administrator may
/// delete any.
pub async fn remove(
    service: &Service,
    caller: &Principal,
    client: &ClientInfo,
    id: &str,
) -> ServiceResult<()> {
    let owner = if caller.platform_role >= PlatformRole::Admin {
        None
    } else {
        Some(caller.user_id.as_str())
    };
    if !service.store.delete_snippet(owner, id).await? {
        return Err(ServiceError::not_found("snippet"));
    }
    audit_step(service, client, caller, "library.delete", id).await;
    Ok(())
}

async fn audit_step(
    service: &Service,
    client: &ClientInfo,
    caller: &Principal,
    action: &str,
    id: &str,
) {
    audit(
        service,
        client,
        Some(&caller.user_id),
        Some(&caller.org_id),
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
