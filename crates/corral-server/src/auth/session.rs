//! Cookie sessions for the browser (the dashboard), with CSRF protection.
//!
//! The cookie holds a random token (HttpOnly, SameSite=Lax, Path=/; Secure
//! and the `__Host-` prefix when Corral is served over HTTPS). Only its
//! SHA-256 is stored. A request that changes state with a cookie session
//! must pass two checks:
//!
//! - `X-CSRF-Token` equal to the session's CSRF token, which is derived from
//!   the cookie's secret (so another site, which cannot read the cookie,
//!   cannot compute it) and handed to the page when it signs in or asks
//!   `GET /api/v1/auth/session`;
//! - an `Origin` header, when the browser sends one, naming this server.
//!
//! Bearer credentials (API keys, access tokens) are not ambient, so they
//! need neither check.

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, Method, header};
use subtle::ConstantTimeEq;

use corral_types::ErrorCode;

use crate::ApiError;
use corral_service::config::Config;
use corral_service::credentials::sha256_hex;
use corral_service::sessions::SESSION_SECS;

/// The request header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's name: `__Host-` prefixed when served over HTTPS
/// (the browser then insists on Secure, Path=/ and no Domain).
pub fn cookie_name(config: &Config) -> &'static str {
    if config.hsts() {
        "__Host-corral_session"
    } else {
        "corral_session"
    }
}

/// The session token in the request's cookies, if any.
pub fn session_token(config: &Config, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(config);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The CSRF token belonging to a session token.
pub fn csrf_token(session_token: &str) -> String {
    sha256_hex(&format!("corral-csrf:{session_token}"))
}

/// `Set-Cookie` starting a session (`Some(token)`) or ending it (`None`).
pub fn set_cookie(config: &Config, token: Option<&str>) -> HeaderValue {
    let secure = config.hsts();
    let cookie = Cookie::build((cookie_name(config), token.unwrap_or_default().to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(if token.is_some() {
            SESSION_SECS
        } else {
            0
        }))
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Refuses a state-changing cookie-authenticated request that fails the
/// CSRF token or Origin check. Safe methods pass.
pub fn check_csrf(
    config: &Config,
    method: &Method,
    headers: &HeaderMap,
    session_token: &str,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refused = |why: &str| {
        ApiError::new(
            ErrorCode::Forbidden,
            format!("cross-site request refused: {why}"),
        )
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !is_own_origin(config, headers, origin) {
            return Err(refused("the Origin is not this server"));
        }
    }
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("missing X-CSRF-Token"))?;
    let expected = csrf_token(session_token);
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(refused("wrong X-CSRF-Token"));
    }
    Ok(())
}

/// Whether `origin` is this server: the configured public URL's origin, else
/// the origin the request's `Host` names.
pub(crate) fn is_own_origin(config: &Config, headers: &HeaderMap, origin: &str) -> bool {
    if let Some(public) = &config.server.public_url {
        return origin_of(public) == origin;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let scheme = if config.hsts() { "https" } else { "http" };
    origin == format!("{scheme}://{host}")
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::origin_of;

    #[test]
    fn origin_of_drops_the_path() {
        assert_eq!(
            origin_of("https://corral.example.com/"),
            "https://corral.example.com"
        );
        assert_eq!(origin_of("http://h:8080/x/y"), "http://h:8080");
        assert_eq!(origin_of("http://h:8080"), "http://h:8080");
    }
}
