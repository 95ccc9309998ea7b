//! Result callbacks: a finished execution POSTed to the URL its request
//! named, signed, and only to public addresses.
//!
//! SSRF: the host is resolved here and every address is checked (loopback,
//! private, link-local — cloud metadata lives at 169.254.169.254 —,
//! carrier-grade NAT, multicast, unspecified, IPv6 unique-local and
//! link-local, and IPv4-mapped forms of those are refused); the request is
//! then pinned to the checked address, so a second DNS answer cannot
//! point it elsewhere (DNS rebinding). Redirects are not followed.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use corral_types::executions::ExecutionResponse;

use crate::Service;

/// How long a callback may take.
const TIMEOUT: Duration = Duration::from_secs(10);

use corral_core::net::forbidden_address;

/// Checks a callback URL and resolves it to one allowed address.
pub async fn resolve(url: &str, allow_private: bool) -> Result<(reqwest::Url, SocketAddr), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".to_owned());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not allowed".to_owned());
    }
    let host = parsed
        .host_str()
        .ok_or("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let first = *addresses.first().ok_or("the host has no address")?;
    if !allow_private && let Some(bad) = addresses.iter().find(|a| forbidden_address(a.ip())) {
        return Err(format!(
            "{host} resolves to {}: loopback, private, link-local and metadata addresses are refused",
            bad.ip()
        ));
    }
    Ok((parsed, first))
}

/// `sha256=<hex HMAC-SHA256 of the body>` under the instance's secret.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a finished execution to its callback URL (best effort: a failure
/// is logged; the result stays available at `GET /api/v1/executions/{id}`).
pub async fn deliver(state: &Service, url: &str, execution: &ExecutionResponse) {
    let allow_private = state.config.executions.allow_private_callbacks;
    let (url, address) = match resolve(url, allow_private).await {
        Ok(resolved) => resolved,
        Err(error) => {
            tracing::warn!(%error, id = %execution.id, "callback refused");
            return;
        }
    };
    let Ok(body) = serde_json::to_vec(execution) else {
        return;
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, address)
        .build();
    let Ok(client) = client else { return };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-corral-signature",
            signature(state.config.executions.callback_secret.as_bytes(), &body),
        )
        .header("x-corral-execution", &execution.id)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            tracing::warn!(status = %response.status(), id = %execution.id, "callback answered with an error");
        }
        Err(error) => tracing::warn!(%error, id = %execution.id, "callback failed"),
    }
}
