//! Executions as records: what ran, its limits and its verdict.
//!
//! A program's output is whatever it wrote, NUL bytes included, and
//! PostgreSQL's text cannot hold a NUL. Output columns (`stdout`, `stderr`,
//! `compile_output`, `error`) are therefore stored escaped when they must
//! be, and marked so (see [`escape_output`]); records read back carry the
//! output exactly as it was given. Both backends store the same text.

use std::borrow::Cow;

use crate::{Store, StoreError};

/// Starts a stored output that was escaped: `\0` is NUL, `\\` a
/// backslash. Output that begins with the mark itself is escaped too, so
/// the mark never misleads.
const ESCAPED_MARK: &str = "\u{1}corral-escaped:";

/// `text` as an output column stores it: as it is when it holds no NUL
/// (nearly always), else marked and escaped.
fn escape_output(text: &str) -> Cow<'_, str> {
    if !text.contains('\0') && !text.starts_with(ESCAPED_MARK) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(ESCAPED_MARK.len() + text.len() + 16);
    out.push_str(ESCAPED_MARK);
    for c in text.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The output that [`escape_output`] stored as `stored`.
fn unescape_output(stored: String) -> String {
    let Some(escaped) = stored.strip_prefix(ESCAPED_MARK) else {
        return stored;
    };
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl ExecutionRecord {
    /// The record with its output columns as they were given.
    fn unescaped(mut self) -> ExecutionRecord {
        self.stdout = unescape_output(self.stdout);
        self.stderr = unescape_output(self.stderr);
        self.compile_output = unescape_output(self.compile_output);
        self.error = self.error.map(unescape_output);
        self
    }
}

/// An execution (its fields are the columns of `COLUMNS`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExecutionRecord {
    /// Id.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Who asked for it.
    pub user_id: String,
    /// The batch it belongs to.
    pub batch_id: Option<String>,
    /// Language name.
    pub language: String,
    /// `queued`, `running`, or a verdict.
    pub status: String,
    /// Source code.
    pub code: String,
    /// Standard input.
    pub stdin: String,
    /// Extra files, a JSON array of `{name, content}`.
    pub files: String,
    /// What the output must be for `ok`.
    pub expected_output: Option<String>,
    /// CPU time limit, ms.
    pub time_limit_ms: i64,
    /// Wall-clock limit, ms (`None`: recorded before there was one).
    pub wall_limit_ms: Option<i64>,
    /// Memory limit, MiB.
    pub memory_limit_mb: i64,
    /// Output limit per stream, KiB.
    pub output_limit_kb: i64,
    /// Where the result is posted.
    pub callback_url: Option<String>,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Signal that ended it.
    pub signal: Option<i64>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The compiler's output.
    pub compile_output: String,
    /// CPU time, ms.
    pub time_ms: Option<i64>,
    /// Wall time, ms.
    pub wall_ms: Option<i64>,
    /// Peak memory, KiB.
    pub memory_kb: Option<i64>,
    /// Why it is `internal_error`.
    pub error: Option<String>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Started (Unix ms).
    pub started_at: Option<i64>,
    /// Finished (Unix ms).
    pub finished_at: Option<i64>,
}

/// The outcome of a run, written once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionOutcome {
    /// The verdict.
    pub status: String,
    /// Exit code.
    pub exit_code: Option<i64>,
    /// Signal.
    pub signal: Option<i64>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Compiler output.
    pub compile_output: String,
    /// CPU ms.
    pub time_ms: Option<i64>,
    /// Wall ms.
    pub wall_ms: Option<i64>,
    /// Peak KiB.
    pub memory_kb: Option<i64>,
    /// Why it failed internally.
    pub error: Option<String>,
}

/// Which executions a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// Only this org's (`None`: every org, for administrators).
    pub org_id: Option<String>,
    /// Only this user's.
    pub user_id: Option<String>,
    /// Only in this status.
    pub status: Option<String>,
    /// Only this language.
    pub language: Option<String>,
    /// Only this batch.
    pub batch_id: Option<String>,
    /// Newest first, before this id.
    pub before_id: Option<String>,
    /// At most this many.
    pub limit: i64,
}

const COLUMNS: &str = "id, org_id, user_id, batch_id, language, status, code, stdin, files, \
     expected_output, time_limit_ms, memory_limit_mb, output_limit_kb, callback_url, exit_code, \
     signal, stdout, stderr, compile_output, time_ms, wall_ms, memory_kb, error, created_at, \
     started_at, finished_at, wall_limit_ms";

impl Store {
    /// Records executions (`status` queued), all or none.
    pub async fn insert_executions(&self, records: &[ExecutionRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for r in records {
            sqlx::query(
                "INSERT INTO executions (id, org_id, user_id, batch_id, language, status, code, \
                 stdin, files, expected_output, time_limit_ms, memory_limit_mb, output_limit_kb, \
                 callback_url, created_at, wall_limit_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(&r.id)
            .bind(&r.org_id)
            .bind(&r.user_id)
            .bind(&r.batch_id)
            .bind(&r.language)
            .bind(&r.status)
            .bind(&r.code)
            .bind(&r.stdin)
            .bind(&r.files)
            .bind(&r.expected_output)
            .bind(r.time_limit_ms)
            .bind(r.memory_limit_mb)
            .bind(r.output_limit_kb)
            .bind(&r.callback_url)
            .bind(r.created_at)
            .bind(r.wall_limit_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One execution of `org_id` (any org's with `None`).
    pub async fn execution(
        &self,
        org_id: Option<&str>,
        id: &str,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM executions WHERE id = $1 AND ($2 IS NULL OR org_id = $2)"
        ));
        let record: Option<ExecutionRecord> = sqlx::query_as(sql)
            .bind(id)
            .bind(org_id.map(str::to_owned))
            .fetch_optional(self.pool())
            .await?;
        Ok(record.map(ExecutionRecord::unescaped))
    }

    /// Marks a queued execution running; `false` if it was not queued
    /// (another worker has it, or it is done: at-least-once delivery).
    pub async fn execution_started(&self, now: i64, id: &str) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE executions SET status = 'running', started_at = $2 \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    /// Writes the outcome of a run that has not finished before.
    pub async fn execution_finished(
        &self,
        now: i64,
        id: &str,
        outcome: &ExecutionOutcome,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE executions SET status = $2, exit_code = $3, signal = $4, stdout = $5, \
             stderr = $6, compile_output = $7, time_ms = $8, wall_ms = $9, memory_kb = $10, \
             error = $11, finished_at = $12 \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id)
        .bind(&outcome.status)
        .bind(outcome.exit_code)
        .bind(outcome.signal)
        .bind(escape_output(&outcome.stdout).into_owned())
        .bind(escape_output(&outcome.stderr).into_owned())
        .bind(escape_output(&outcome.compile_output).into_owned())
        .bind(outcome.time_ms)
        .bind(outcome.wall_ms)
        .bind(outcome.memory_kb)
        .bind(
            outcome
                .error
                .as_deref()
                .map(|e| escape_output(e).into_owned()),
        )
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    /// Executions matching `filter`, newest first.
    pub async fn executions(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM executions WHERE ($1 IS NULL OR org_id = $1) \
             AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR language = $4) AND ($5 IS NULL OR batch_id = $5) \
             AND ($6 IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
        ));
        let records: Vec<ExecutionRecord> = sqlx::query_as(sql)
            .bind(filter.org_id.clone())
            .bind(filter.user_id.clone())
            .bind(filter.status.clone())
            .bind(filter.language.clone())
            .bind(filter.batch_id.clone())
            .bind(filter.before_id.clone())
            .bind(filter.limit)
            .fetch_all(self.pool())
            .await?;
        Ok(records
            .into_iter()
            .map(ExecutionRecord::unescaped)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_escaping_round_trips_and_leaves_plain_text_alone() {
        for text in [
            "",
            "plain\n",
            "back\\slash \\0 not a NUL",
            "\0",
            "a\0b\\0c\\",
            "\u{1}corral-escaped:looks marked",
            "\u{1}corral-escaped:\\0",
        ] {
            let stored = escape_output(text);
            assert!(!stored.contains('\0'), "{text:?} stored as {stored:?}");
            assert_eq!(unescape_output(stored.into_owned()), text);
        }
        assert!(matches!(escape_output("plain \\0"), Cow::Borrowed(_)));
    }
}
