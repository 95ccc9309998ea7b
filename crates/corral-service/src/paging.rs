//! Pages of lists: every list use case takes a page size and a cursor the
//! same way, so every surface pages alike.

use crate::ServiceError;

/// Given `limit + 1` rows, keeps `limit` and returns the cursor of the next
/// page (the last kept row's), or `None` when this page is the last.
pub fn page_cut<T>(rows: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// The page size asked for (default 50), or a validation error naming `limit`.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ServiceError> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ServiceError::invalid_field(
            "limit",
            "must be between 1 and 200",
        ))
    }
}
