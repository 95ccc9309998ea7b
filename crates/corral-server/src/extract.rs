//! Request extractors whose rejections are problem+json naming the bad field,
//! instead of axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::header;
use serde::de::DeserializeOwned;

use corral_types::{ErrorCode, FieldError};

use crate::error::ApiError;

/// A JSON body: `Content-Type: application/json` required; syntax errors are
/// 400 `malformed_json`, type errors and unknown or missing fields are 422
/// `validation_failed` with the field's path. Every body is an object: serde
/// would also fill a struct from an array of its fields in order
/// (`["name", ["sandboxes:read"]]`), which no client means to send.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a body with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::new(ErrorCode::BadRequest, "the request body could not be read")
            }
        })?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// [`parse_json`] for a request body, which must be a JSON object.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Err(ApiError::validation(vec![FieldError {
            field: ".".to_owned(),
            message: "the body must be a JSON object, not an array".to_owned(),
        }]));
    }
    parse_json(bytes)
}

/// Deserializes `bytes` as `T`, mapping failures to problem errors.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| json_error(&error.path().to_string(), error.inner()))?;
    // Trailing garbage after the value is a syntax error too.
    deserializer.end().map_err(|e| json_error(".", &e))?;
    reject_nul(bytes)?;
    Ok(value)
}

/// Refuses a body with a NUL character (`\u0000`) in any string, key or
/// value, naming the field: no text the API takes may hold one (PostgreSQL
/// cannot store it, and names, code and input have no use for it).
///
/// JSON can only spell NUL as an escape, so bodies without `\u0000` in
/// their bytes pass after one scan; only a suspect body is parsed again to
/// find the field.
fn reject_nul(bytes: &[u8]) -> Result<(), ApiError> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match nul_field(&value, String::new()) {
        Some(field) => Err(ApiError::invalid_field(
            &field,
            "must not contain a NUL character (\\u0000)",
        )),
        // `\\u0000`: an escaped backslash followed by the text u0000.
        None => Ok(()),
    }
}

/// The path (`a.b[2].c`, as serde_path_to_error names it) of the first
/// string or key holding a NUL in `value`.
fn nul_field(value: &serde_json::Value, path: String) -> Option<String> {
    let here = || {
        if path.is_empty() {
            ".".to_owned()
        } else {
            path.clone()
        }
    };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(here),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_field(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                return Some(field.replace('\0', "\\u0000"));
            }
            nul_field(item, field)
        }),
        _ => None,
    }
}

fn json_error(path: &str, error: &serde_json::Error) -> ApiError {
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => ApiError::new(
            ErrorCode::MalformedJson,
            format!(
                "the body is not valid JSON: {} at line {} column {}",
                syntax_message(error),
                error.line(),
                error.column()
            ),
        ),
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            ApiError::validation(vec![field_error(path, error)])
        }
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence.to_ascii_lowercase().starts_with("application/")
            && essence.to_ascii_lowercase().ends_with("+json"))
}

/// serde_json's message without its own " at line L column C" suffix.
fn syntax_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    }
}

fn field_error(path: &str, error: &serde_json::Error) -> FieldError {
    let message = syntax_message(error);
    // serde reports a missing field at its parent's path; name the field itself.
    let field = match missing_field_name(&message) {
        Some(name) if path == "." => name,
        Some(name) => format!("{path}.{name}"),
        None => path.to_owned(),
    };
    FieldError { field, message }
}

fn missing_field_name(message: &str) -> Option<String> {
    quoted_after(message, "missing field `")
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split_once(prefix)?.1;
    Some(rest.split_once('`')?.0.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "fields exist to be deserialized")]
    struct Body {
        name: String,
        resources: Option<Resources>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "fields exist to be deserialized")]
    struct Resources {
        memory_mb: u32,
    }

    /// (body, expected code, expected field)
    #[test]
    fn json_failures_name_the_field() {
        let cases: &[(&str, ErrorCode, Option<&str>)] = &[
            (r#"{"name": "a""#, ErrorCode::MalformedJson, None),
            (r#"{"name": "a"} trailing"#, ErrorCode::MalformedJson, None),
            ("", ErrorCode::MalformedJson, None),
            (r#"{"name": 5}"#, ErrorCode::ValidationFailed, Some("name")),
            (r#"{}"#, ErrorCode::ValidationFailed, Some("name")),
            (
                r#"{"name": "a", "org_id": "x"}"#,
                ErrorCode::ValidationFailed,
                Some("org_id"),
            ),
            (
                r#"{"name": "a", "resources": {"memory_mb": -1}}"#,
                ErrorCode::ValidationFailed,
                Some("resources.memory_mb"),
            ),
            (
                r#"{"name": "a", "resources": {"memory_mb": 1, "cpu": 2}}"#,
                ErrorCode::ValidationFailed,
                Some("resources.cpu"),
            ),
            (
                r#"{"name": "a", "resources": {}}"#,
                ErrorCode::ValidationFailed,
                Some("resources.memory_mb"),
            ),
        ];
        for (body, code, field) in cases {
            let err = parse_json::<Body>(body.as_bytes()).unwrap_err();
            let problem = err.problem();
            assert_eq!(problem.code, *code, "{body}: {problem:?}");
            let got = problem.errors.first().map(|e| e.field.as_str());
            assert_eq!(got, *field, "{body}: {problem:?}");
        }
        assert!(parse_json::<Body>(br#"{"name": "ok"}"#).is_ok());
    }

    /// Issue 17 item 1: NUL in any string of a body is a 422 naming the
    /// field, wherever it is (a value, nested, in an array, in a key).
    #[test]
    fn nul_in_any_string_is_a_validation_error_naming_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"name": "a\u0000b"}"#, "name"),
            (r#"{"name": "\u0000"}"#, "name"),
            (r#"{"name": ["a", "b\u0000"]}"#, "name[1]"),
            (r#"{"name": {"k": "\u0000"}}"#, "name.k"),
            (r#"{"name": {"k\u0000": 1}}"#, "name.k\\u0000"),
        ];
        for (body, field) in cases {
            let err = parse_json::<serde_json::Value>(body.as_bytes()).unwrap_err();
            let problem = err.problem();
            assert_eq!(problem.code, ErrorCode::ValidationFailed, "{body}");
            assert_eq!(problem.errors[0].field, *field, "{body}: {problem:?}");
        }
        // The same through a typed body.
        let err = parse_json::<Body>(br#"{"name": "x\u0000"}"#).unwrap_err();
        assert_eq!(err.problem().errors[0].field, "name");
        // An escaped backslash before the text `u0000` is no NUL.
        let ok: serde_json::Value = parse_json(br#"{"name": "\\u0000"}"#).unwrap();
        assert_eq!(ok["name"], "\\u0000");
    }

    #[test]
    fn bodies_are_objects_never_arrays_of_fields() {
        for body in [r#"["a"]"#, r#" ["a", {"memory_mb": 1}]"#] {
            let err = parse_object::<Body>(body.as_bytes()).unwrap_err();
            let problem = err.problem();
            assert_eq!(problem.code, ErrorCode::ValidationFailed, "{body}");
            assert!(problem.errors[0].message.contains("object"), "{problem:?}");
        }
        assert!(parse_object::<Body>(br#"{"name": "ok"}"#).is_ok());
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let deep = "[".repeat(100_000);
        let err = parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(err.problem().code, ErrorCode::MalformedJson);
    }
}
