//! Code library API types: snippets of code, private or public.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/library`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnippetRequest {
    /// Title (1–200 characters).
    pub title: String,
    /// Description (at most 2000 characters).
    #[serde(default)]
    pub description: String,
    /// Language (1–32 of `a-z 0-9 + # -`, e.g. `python`, `cpp`, `c#`).
    pub language: String,
    /// The code (1 byte to 256 KiB).
    pub code: String,
    /// Tags (at most 16, each 1–32 of `a-z 0-9 -`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Readable by every signed-in user (default: private).
    #[serde(default)]
    pub is_public: bool,
}

/// `PATCH /api/v1/library/{id}`: each field optional, with the limits of
/// [`CreateSnippetRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSnippetRequest {
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Language.
    #[serde(default)]
    pub language: Option<String>,
    /// The code.
    #[serde(default)]
    pub code: Option<String>,
    /// Replaces all tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Public or private.
    #[serde(default)]
    pub is_public: Option<bool>,
}

/// A snippet with its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnippetResponse {
    /// Id.
    pub id: String,
    /// The user it belongs to.
    pub owner_id: String,
    /// The org it was made in.
    pub org_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Language.
    pub language: String,
    /// The code.
    pub code: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Readable by every signed-in user.
    pub is_public: bool,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

/// A snippet in a search result: everything but the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnippetSummary {
    /// Id.
    pub id: String,
    /// The user it belongs to.
    pub owner_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Language.
    pub language: String,
    /// Size of the code in bytes.
    pub code_bytes: i64,
    /// Tags.
    pub tags: Vec<String>,
    /// Readable by every signed-in user.
    pub is_public: bool,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

/// A page of snippets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnippetPage {
    /// The snippets, oldest first.
    pub items: Vec<SnippetSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
