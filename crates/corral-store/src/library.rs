//! The code library: snippets of code a user keeps, private or shared with
//! every signed-in user, searchable by text, tag and language.
//!
//! Who may see what is decided here, in the queries, rather than by the
//! caller filtering rows: a snippet is visible to a viewer when it is
//! public or theirs ([`Store::snippet_for`], [`Store::snippets`]), and only
//! its owner changes it ([`Store::update_snippet`]).

use corral_core::id::new_id;

use crate::{Store, StoreError};

/// A stored snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// Id (UUIDv7).
    pub id: String,
    /// The user it belongs to.
    pub owner_id: String,
    /// The org it was made in.
    pub org_id: String,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// Language name (`python`, `c`, …).
    pub language: String,
    /// The code.
    pub code: String,
    /// Tags, in the order given.
    pub tags: Vec<String>,
    /// Readable by every signed-in user.
    pub is_public: bool,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Last changed (Unix ms).
    pub updated_at: i64,
}

/// A snippet to record.
#[derive(Debug, Clone)]
pub struct NewSnippet {
    /// Owner.
    pub owner_id: String,
    /// The org it is made in.
    pub org_id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Language.
    pub language: String,
    /// Code.
    pub code: String,
    /// Tags (distinct).
    pub tags: Vec<String>,
    /// Public or private.
    pub is_public: bool,
    /// The owner's plan limit on snippets (`None`: unlimited).
    pub max_snippets: Option<i64>,
}

/// The editable parts of a snippet (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct SnippetChanges {
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Code.
    pub code: Option<String>,
    /// Tags (distinct; replaces them all).
    pub tags: Option<Vec<String>>,
    /// Public or private.
    pub is_public: Option<bool>,
}

/// Which snippets a search returns; every field narrows. The viewer sees
/// public snippets and their own, never another user's private ones.
#[derive(Debug, Clone, Default)]
pub struct SnippetFilter {
    /// Who is looking.
    pub viewer_id: String,
    /// Text found in the title, description or code, ignoring case.
    pub text: Option<String>,
    /// Carries this tag.
    pub tag: Option<String>,
    /// In this language.
    pub language: Option<String>,
    /// Only the viewer's own.
    pub only_own: bool,
    /// Only public (`Some(true)`) or only private (`Some(false)`) ones.
    pub is_public: Option<bool>,
    /// Only ids above this (the page cursor).
    pub after_id: Option<String>,
    /// Page size.
    pub limit: i64,
}

#[derive(sqlx::FromRow)]
struct SnippetRow {
    id: String,
    owner_id: String,
    org_id: String,
    title: String,
    description: String,
    language: String,
    code: String,
    tags: String,
    is_public: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<SnippetRow> for Snippet {
    type Error = StoreError;

    fn try_from(r: SnippetRow) -> Result<Snippet, StoreError> {
        let tags = serde_json::from_str(&r.tags)
            .map_err(|e| StoreError::Corrupt(format!("library_snippets.tags of {}: {e}", r.id)))?;
        Ok(Snippet {
            id: r.id,
            owner_id: r.owner_id,
            org_id: r.org_id,
            title: r.title,
            description: r.description,
            language: r.language,
            code: r.code,
            tags,
            is_public: r.is_public != 0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const COLUMNS: &str = "s.id, s.owner_id, s.org_id, s.title, s.description, s.language, s.code, \
     s.tags, s.is_public, s.created_at, s.updated_at";

/// `%text%` for LIKE, lowercased, with `\`, `%` and `_` taken literally
/// (`ESCAPE '\'`).
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn tags_json(tags: &[String]) -> String {
    serde_json::Value::from(tags.to_vec()).to_string()
}

async fn insert_tags(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    snippet_id: &str,
    tags: &[String],
) -> Result<(), StoreError> {
    for tag in tags {
        sqlx::query("INSERT INTO library_tags (snippet_id, tag) VALUES ($1, $2)")
            .bind(snippet_id)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Records a snippet within its owner's plan limit (`QuotaExceeded`
    /// past it).
    ///
    /// The limit is checked by counting the owner's snippets after taking
    /// the owner's `users` row (a row lock on PostgreSQL, where the count,
    /// a later statement, then sees every committed insert; the write lock
    /// on SQLite), so concurrent creations cannot overshoot. Counting
    /// rather than keeping a counter means snippets removed by a cascade
    /// (an org deleted) give their place back by themselves.
    pub async fn create_snippet(&self, now: i64, new: NewSnippet) -> Result<Snippet, StoreError> {
        let id = new_id();
        let mut tx = self.pool().begin().await?;
        let locked = sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
            .bind(&new.owner_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::Corrupt(format!(
                "snippet owner {} does not exist",
                new.owner_id
            )));
        }
        if let Some(max) = new.max_snippets {
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM library_snippets WHERE owner_id = $1")
                    .bind(&new.owner_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if count >= max {
                return Err(StoreError::QuotaExceeded("library snippets".into()));
            }
        }
        sqlx::query(
            "INSERT INTO library_snippets (id, owner_id, org_id, title, description, language, \
             code, tags, is_public, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&id)
        .bind(&new.owner_id)
        .bind(&new.org_id)
        .bind(&new.title)
        .bind(&new.description)
        .bind(&new.language)
        .bind(&new.code)
        .bind(tags_json(&new.tags))
        .bind(i64::from(new.is_public))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_tags(&mut tx, &id, &new.tags).await?;
        tx.commit().await?;
        Ok(Snippet {
            id,
            owner_id: new.owner_id,
            org_id: new.org_id,
            title: new.title,
            description: new.description,
            language: new.language,
            code: new.code,
            tags: new.tags,
            is_public: new.is_public,
            created_at: now,
            updated_at: now,
        })
    }

    /// One snippet, whoever owns it (administration; callers acting for a
    /// user want [`Store::snippet_for`]).
    pub async fn snippet(&self, id: &str) -> Result<Option<Snippet>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM library_snippets s WHERE s.id = $1"
        ));
        let row: Option<SnippetRow> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(Snippet::try_from).transpose()
    }

    /// One snippet as `viewer_id` may see it: public, or theirs. Another
    /// user's private snippet is `None`, exactly like a missing one.
    pub async fn snippet_for(
        &self,
        viewer_id: &str,
        id: &str,
    ) -> Result<Option<Snippet>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM library_snippets s \
             WHERE s.id = $1 AND (s.is_public = 1 OR s.owner_id = $2)"
        ));
        let row: Option<SnippetRow> = sqlx::query_as(sql)
            .bind(id)
            .bind(viewer_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(Snippet::try_from).transpose()
    }

    /// The snippets `filter.viewer_id` may see that match `filter`, oldest
    /// first (by id), after `filter.after_id`.
    ///
    /// Text matching lowercases both sides (`LOWER()` in SQL): on PostgreSQL
    /// that folds all of Unicode, on SQLite ASCII only.
    pub async fn snippets(&self, filter: &SnippetFilter) -> Result<Vec<Snippet>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM library_snippets s \
             WHERE (s.is_public = 1 OR s.owner_id = $1) \
             AND ($2 IS NULL OR s.id > $2) \
             AND ($3 = 0 OR s.owner_id = $1) \
             AND ($4 IS NULL OR s.is_public = $4) \
             AND ($5 IS NULL OR s.language = $5) \
             AND ($6 IS NULL OR EXISTS (SELECT 1 FROM library_tags t \
                  WHERE t.snippet_id = s.id AND t.tag = $6)) \
             AND ($7 IS NULL OR LOWER(s.title) LIKE $7 ESCAPE '\\' \
                  OR LOWER(s.description) LIKE $7 ESCAPE '\\' \
                  OR LOWER(s.code) LIKE $7 ESCAPE '\\') \
             ORDER BY s.id LIMIT $8"
        ));
        let rows: Vec<SnippetRow> = sqlx::query_as(sql)
            .bind(&filter.viewer_id)
            .bind(filter.after_id.clone())
            .bind(i64::from(filter.only_own))
            .bind(filter.is_public.map(i64::from))
            .bind(filter.language.clone())
            .bind(filter.tag.clone())
            .bind(filter.text.as_deref().map(contains_pattern))
            .bind(filter.limit)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(Snippet::try_from).collect()
    }

    /// How many snippets `owner_id` has (what the plan limit counts).
    pub async fn snippet_count(&self, owner_id: &str) -> Result<i64, StoreError> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM library_snippets WHERE owner_id = $1")
                .bind(owner_id)
                .fetch_one(self.pool())
                .await?;
        Ok(count)
    }

    /// Applies `changes` to a snippet of `owner_id`; `None` when they have
    /// no such snippet (another user's snippet is not theirs to change).
    pub async fn update_snippet(
        &self,
        now: i64,
        owner_id: &str,
        id: &str,
        changes: &SnippetChanges,
    ) -> Result<Option<Snippet>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE library_snippets SET title = COALESCE($3, title), \
             description = COALESCE($4, description), language = COALESCE($5, language), \
             code = COALESCE($6, code), tags = COALESCE($7, tags), \
             is_public = COALESCE($8, is_public), updated_at = $9 \
             WHERE id = $1 AND owner_id = $2",
        )
        .bind(id)
        .bind(owner_id)
        .bind(changes.title.clone())
        .bind(changes.description.clone())
        .bind(changes.language.clone())
        .bind(changes.code.clone())
        .bind(changes.tags.as_deref().map(tags_json))
        .bind(changes.is_public.map(i64::from))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(tags) = &changes.tags {
            sqlx::query("DELETE FROM library_tags WHERE snippet_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            insert_tags(&mut tx, id, tags).await?;
        }
        tx.commit().await?;
        self.snippet(id).await
    }

    /// Deletes a snippet: `owner_id`'s, or any when `owner_id` is `None`
    /// (an administrator). `false` when there is no such snippet.
    pub async fn delete_snippet(
        &self,
        owner_id: Option<&str>,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM library_snippets WHERE id = $1 AND ($2 IS NULL OR owner_id = $2)",
        )
        .bind(id)
        .bind(owner_id.map(str::to_owned))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::contains_pattern;

    #[test]
    fn like_wildcards_in_search_text_are_literal() {
        let cases = [
            ("abc", "%abc%"),
            ("ABC", "%abc%"),
            ("100%", "%100\\%%"),
            ("a_b", "%a\\_b%"),
            ("c:\\x", "%c:\\\\x%"),
        ];
        for (text, expected) in cases {
            assert_eq!(contains_pattern(text), expected, "{text}");
        }
    }
}
