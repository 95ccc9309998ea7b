//! Validation of identity inputs; messages are shown to users as they are.

/// Why a password is refused, or `Ok`.
pub fn check_password(password: &str, username: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < 10 {
        return Err("must be at least 10 characters".into());
    }
    if password.len() > 256 {
        return Err("must be at most 256 bytes".into());
    }
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() || lower == email.to_lowercase() {
        return Err("must not be your username or email".into());
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err("must use at least 4 different characters".into());
    }
    Ok(())
}

/// Why a username is refused, or `Ok`: 3–32 of `a-z 0-9 _ - .`, starting with a letter or digit.
pub fn check_username(username: &str) -> Result<(), String> {
    let len = username.len();
    if !(3..=32).contains(&len) {
        return Err("must be 3 to 32 characters".into());
    }
    if !username
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("may contain only lowercase letters, digits, `_`, `-` and `.`".into());
    }
    if !username.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".into());
    }
    Ok(())
}

/// The normalised (lowercased, trimmed) email, or why it is refused.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an email address".into());
    };
    if email.len() > 254
        || local.is_empty()
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains('@')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be an email address".into());
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let cases = [
            ("short", false),
            ("aaaaaaaaaaaa", false),
            ("alice-the-user", false),
            ("correct horse battery", true),
            ("Tr0ub4dor&3x", true),
        ];
        for (pw, ok) in cases {
            assert_eq!(
                check_password(pw, "alice-the-user", "a@x.io").is_ok(),
                ok,
                "{pw}"
            );
        }
    }

    #[test]
    fn usernames() {
        for (u, ok) in [
            ("al", false),
            ("alice", true),
            ("Alice", false),
            ("_x1", false),
            ("a.b-c_d", true),
            ("a b", false),
        ] {
            assert_eq!(check_username(u).is_ok(), ok, "{u}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email(" Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "alice", "@x.io", "a@b", "a@.io", "a@x.io.", "a b@x.io", "a@b@c.io",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
