//! Keyset paging rules shared by every list use case: the page size a
//! caller may ask for and how a page is cut from `limit + 1` rows.

use crate::{ServiceError, ServiceResult};

/// The page size when the caller names none.
pub const DEFAULT_PAGE_LIMIT: i64 = 50;

/// The largest page a caller may ask for.
pub const MAX_PAGE_LIMIT: i64 = 200;

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

/// The page size asked for (`limit`, default 50), refused outside 1–200.
pub fn page_limit(limit: Option<i64>) -> ServiceResult<i64> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if (1..=MAX_PAGE_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ServiceError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_PAGE_LIMIT}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_limit_outside_1_to_200_names_the_field() {
        assert_eq!(page_limit(None).ok(), Some(50));
        assert_eq!(page_limit(Some(200)).ok(), Some(200));
        for bad in [0, -1, 201] {
            let error = page_limit(Some(bad)).err().map(|error| error.to_string());
            assert_eq!(
                error.as_deref(),
                Some("`limit`: must be between 1 and 200"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_page_cut_keeps_limit_rows_and_names_the_last_as_cursor() {
        let mut rows = vec![1, 2, 3];
        assert_eq!(
            page_cut(&mut rows, 2, |n| n.to_string()).as_deref(),
            Some("2")
        );
        assert_eq!(rows, [1, 2]);
        let mut rows = vec![1, 2];
        assert_eq!(page_cut(&mut rows, 2, |n| n.to_string()), None);
        assert_eq!(rows, [1, 2]);
    }
}
