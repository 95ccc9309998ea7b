//! Cursor paging shared by every list use case: a page size within bounds,
//! and the cursor of the next page.

use crate::{ServiceError, ServiceResult};

/// The page size when the caller names none.
const DEFAULT_PAGE: i64 = 50;
/// The largest page a caller may ask for.
const MAX_PAGE: i64 = 200;

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

/// The page size asked for (`limit`), 1 to 200, 50 when not given.
pub fn page_limit(limit: Option<i64>) -> ServiceResult<i64> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ServiceError::invalid_field(
            "limit",
            "must be between 1 and 200",
        ))
    }
}
