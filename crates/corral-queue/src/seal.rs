//! Payload encryption at rest for jobs marked sensitive.
//!
//! AES-256-GCM with a random 96-bit nonce per payload; the job id is the
//! associated data, so a sealed payload copied onto another job does not
//! open. Stored as `gcm1:` + base64(nonce ‖ ciphertext ‖ tag) in the same
//! text column as plain JSON payloads.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::QueueError;

const PREFIX: &str = "gcm1:";
const NONCE_LEN: usize = 12;

/// The 256-bit key sensitive payloads are sealed with.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> EncryptionKey {
        EncryptionKey(bytes)
    }

    /// A key from standard base64 of 32 bytes (as written in configuration;
    /// make one with `openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<EncryptionKey, QueueError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            QueueError::Invalid("the queue encryption key is not valid base64".to_owned())
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            QueueError::Invalid("the queue encryption key must be 32 bytes".to_owned())
        })?;
        Ok(EncryptionKey(bytes))
    }
}

/// Seals and opens payloads with one key.
#[derive(Clone)]
pub(crate) struct Sealer(Aes256Gcm);

impl Sealer {
    pub(crate) fn new(key: &EncryptionKey) -> Sealer {
        Sealer(Aes256Gcm::new(&key.0.into()))
    }

    pub(crate) fn seal(&self, job_id: &str, plain: &str) -> Result<String, QueueError> {
        let nonce = Nonce::generate();
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plain.as_bytes(),
                    aad: job_id.as_bytes(),
                },
            )
            // Encryption fails only for messages beyond GCM's 64 GiB limit.
            .map_err(|_| QueueError::Invalid(format!("payload of job {job_id} is too large")))?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(bytes)))
    }

    pub(crate) fn open(&self, job_id: &str, stored: &str) -> Result<String, QueueError> {
        let fail = || QueueError::Decrypt {
            id: job_id.to_owned(),
        };
        let encoded = stored.strip_prefix(PREFIX).ok_or_else(fail)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| fail())?;
        if bytes.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| fail())?;
        let plain = self
            .0
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: job_id.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_job() {
        let sealer = Sealer::new(&EncryptionKey::from_bytes([7; 32]));
        let sealed = sealer.seal("job-1", r#"{"password":"hunter2"}"#).unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            sealer.open("job-1", &sealed).unwrap(),
            r#"{"password":"hunter2"}"#
        );
        assert!(matches!(
            sealer.open("job-2", &sealed),
            Err(QueueError::Decrypt { .. })
        ));
        let other = Sealer::new(&EncryptionKey::from_bytes([8; 32]));
        assert!(other.open("job-1", &sealed).is_err());
        assert!(sealer.open("job-1", "gcm1:AAAA").is_err());
        assert!(sealer.open("job-1", "{}").is_err());
        // Fresh nonce every time.
        assert_ne!(
            sealer.seal("job-1", "x").unwrap(),
            sealer.seal("job-1", "x").unwrap()
        );
    }

    #[test]
    fn keys_from_base64_must_be_32_bytes() {
        assert!(EncryptionKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
        assert!(EncryptionKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
        assert!(EncryptionKey::from_base64("not base64!").is_err());
        assert_eq!(
            format!("{:?}", EncryptionKey::from_bytes([1; 32])),
            "EncryptionKey(..)"
        );
    }
}
