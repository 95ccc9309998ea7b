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
    Ok(value)
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
