//! Secrets: password hashes (Argon2id), access tokens (JWT, HS256 only),
//! refresh tokens and API keys (random, stored as SHA-256).
//!
//! API keys and refresh tokens are 190+ bits of randomness, so a fast hash is
//! safe for them and keeps key verification off the slow path; only human
//! passwords need Argon2id.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The visible start of every API key.
pub const API_KEY_PREFIX: &str = "crl_";
/// The visible start of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "crr_";
/// Characters of an API key shown in listings (`crl_` plus 8).
pub const API_KEY_VISIBLE: usize = 12;

/// Lifetime of an access token.
pub const ACCESS_TOKEN_SECS: i64 = 15 * 60;
/// Lifetime of a refresh token.
pub const REFRESH_TOKEN_SECS: i64 = 30 * 24 * 3600;

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC `hash`; any malformed hash is a mismatch.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so an unknown
/// login costs the same time as a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("corral-timing-equaliser").unwrap_or_default())
}

/// A random string of `len` alphanumeric characters.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// SHA-256 of a secret, hex; what the store keeps instead of the secret.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new API key: `crl_` + 40 alphanumerics (≈238 bits).
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_token(40))
}

/// A new refresh token: `crr_` + 48 alphanumerics.
pub fn new_refresh_token() -> String {
    format!("{REFRESH_TOKEN_PREFIX}{}", random_token(48))
}

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Always `access`, so no other token kind can pass as one.
    pub typ: String,
    /// The sign-in it belongs to (its refresh token family): signing out,
    /// a detected refresh reuse or a password change revokes the family,
    /// and with it this token before it expires.
    pub sid: String,
}

/// Signs and checks access tokens with one HS256 key.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a shared secret.
    pub fn new(secret: &str) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A signed access token for `user_id` of the sign-in `sign_in` (its
    /// refresh token family), valid from `now_secs`.
    pub fn issue(
        &self,
        user_id: &str,
        sign_in: &str,
        now_secs: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            iat: now_secs,
            exp: now_secs + ACCESS_TOKEN_SECS,
            typ: "access".into(),
            sid: sign_in.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid access token at `now_secs`. Only HS256 is
    /// accepted: `alg: none` and algorithm-confusion tokens fail here.
    pub fn verify(&self, token: &str, now_secs: i64) -> Option<AccessClaims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // We check expiry against our clock below (tests can move it).
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation).ok()?;
        let claims = data.claims;
        (claims.typ == "access" && claims.exp > now_secs).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_with_the_right_secret() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn access_tokens_expire_and_need_the_key() {
        let keys = TokenKeys::new("k1");
        let token = keys.issue("u1", "f1", 1_000).unwrap();
        assert_eq!(keys.verify(&token, 1_001).unwrap().sub, "u1");
        assert!(
            keys.verify(&token, 1_000 + ACCESS_TOKEN_SECS).is_none(),
            "expired"
        );
        assert!(
            TokenKeys::new("k2").verify(&token, 1_001).is_none(),
            "wrong key"
        );
    }

    #[test]
    fn keys_and_tokens_have_their_prefixes_and_entropy() {
        let key = new_api_key();
        assert!(key.starts_with(API_KEY_PREFIX) && key.len() == 44);
        assert_ne!(new_api_key(), key);
        assert!(new_refresh_token().starts_with(REFRESH_TOKEN_PREFIX));
        assert_eq!(sha256_hex("abc").len(), 64);
    }
}
