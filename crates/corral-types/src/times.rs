//! Times on the wire: every time the API shows is RFC 3339 UTC. Some
//! records keep Unix seconds in Rust (the agent counts in seconds); these
//! `serde(with = …)` modules write them as RFC 3339 and read either form,
//! so an agent built before the change still talks to a newer host.

use serde::{Deserialize, Deserializer, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds as RFC 3339 UTC (`2026-12-07T10:05:09Z`); the number itself
/// when it is out of the representable range (never for a real clock).
pub fn format_seconds(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| seconds.to_string())
}

/// A time written either as RFC 3339 or as Unix seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Seconds(i64),
    Text(String),
}

fn seconds_of<E: serde::de::Error>(value: Either) -> Result<i64, E> {
    match value {
        Either::Seconds(seconds) => Ok(seconds),
        Either::Text(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map(OffsetDateTime::unix_timestamp)
            .map_err(|e| E::custom(format!("`{text}` is not an RFC 3339 time: {e}"))),
    }
}

/// `serde(with = "corral_types::times::rfc3339_seconds")` for an `i64`.
pub mod rfc3339_seconds {
    use super::*;

    /// Writes RFC 3339.
    pub fn serialize<S: Serializer>(seconds: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_seconds(*seconds))
    }

    /// Reads RFC 3339 or Unix seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        seconds_of(Either::deserialize(deserializer)?)
    }
}

/// `serde(with = "corral_types::times::rfc3339_seconds_opt")` for an
/// `Option<i64>` (`null` stays `null`).
pub mod rfc3339_seconds_opt {
    use super::*;

    /// Writes RFC 3339 or `null`.
    pub fn serialize<S: Serializer>(
        seconds: &Option<i64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match seconds {
            Some(seconds) => serializer.serialize_str(&format_seconds(*seconds)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads RFC 3339, Unix seconds or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        Option::<Either>::deserialize(deserializer)?
            .map(seconds_of)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct At {
        #[serde(with = "super::rfc3339_seconds")]
        at: i64,
        #[serde(default, with = "super::rfc3339_seconds_opt")]
        until: Option<i64>,
    }

    #[test]
    fn seconds_are_written_as_rfc3339() {
        let json = serde_json::to_string(&At {
            at: 1_796_637_909,
            until: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"at":"2026-12-07T10:05:09Z","until":null}"#);
    }

    #[test]
    fn both_forms_are_read() {
        let at = |json: &str| serde_json::from_str::<At>(json).unwrap();
        let want = At {
            at: 1_796_637_909,
            until: Some(1_796_637_910),
        };
        assert_eq!(
            at(r#"{"at":"2026-12-07T10:05:09Z","until":"2026-12-07T11:05:10+01:00"}"#),
            want
        );
        assert_eq!(at(r#"{"at":1796637909,"until":1796637910}"#), want);
        assert!(serde_json::from_str::<At>(r#"{"at":"yesterday"}"#).is_err());
    }
}
