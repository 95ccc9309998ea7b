//! Ids are UUIDv7: time-ordered (good index locality) and unguessable enough
//! that knowing one id tells nothing about another tenant's.

use uuid::Uuid;

/// A new UUIDv7, as the lowercase hyphenated string used everywhere on the wire and in the store.
pub fn new_id() -> String {
    Uuid::now_v7().hyphenated().to_string()
}

/// Whether `s` is a well-formed id (any UUID in canonical hyphenated form).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 36 && Uuid::try_parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_ordered() {
        let a = new_id();
        let b = new_id();
        assert!(is_valid_id(&a));
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 7);
        assert!(a < b, "v7 ids sort by creation time");
        assert!(!is_valid_id("not-an-id"));
        assert!(!is_valid_id("0190d3c4e5f67a8b9c0d1e2f3a4b5c6d"));
    }
}
