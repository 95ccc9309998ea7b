//! The egress guard of a pull: no connection a pull makes reaches a
//! loopback, private or metadata address unless the operator opened that
//! registry.
//!
//! oci-client gives no hook on its connections, and a pull makes several:
//! the registry, the token service its `WWW-Authenticate` realm names, and
//! wherever a redirect points (blob storage). So the pull's client is told
//! to use this in-process forward proxy for both `https` and `http`. The
//! proxy resolves each `CONNECT host:port` itself, refuses it when any
//! address is forbidden ([`corral_core::net::forbidden_address`], which
//! covers every spelling of an address since it checks the resolved one),
//! and connects to the address it checked, so a second DNS answer cannot
//! point elsewhere. Plain-HTTP requests through it are refused: only the
//! registries the operator lists (`insecure_registries`, which bypass the
//! proxy) are spoken to over HTTP. Every check is made at connect time, for
//! every connection.
//!
//! A refusal is recorded, so the pull can say "refused" instead of passing
//! on the client's error; no answer tells a closed port from an open one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head the proxy reads.
const HEAD_LIMIT: usize = 8 * 1024;
/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running guard; it stops when dropped.
pub(super) struct EgressGuard {
    address: SocketAddr,
    refused: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressGuard {
    /// Starts a guard that lets through only public addresses and the
    /// hosts in `open` (`host` or `host:port`).
    pub(super) async fn start(open: Vec<String>) -> std::io::Result<EgressGuard> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(None));
        let open = Arc::new(open);
        let task = {
            let refused = refused.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (open, refused) = (open.clone(), refused.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, &open, &refused).await;
                    });
                }
            })
        };
        Ok(EgressGuard {
            address,
            refused,
            task,
        })
    }

    /// The proxy URL for the pull's client.
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The first `host:port` the guard refused, if any.
    pub(super) fn refused(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }
}

/// Whether `authority` (`host:port`) is one the operator opened.
pub(super) fn is_open(open: &[String], host: &str, port: u16) -> bool {
    open.iter().any(|entry| {
        let entry = entry.trim();
        entry.eq_ignore_ascii_case(host) || entry.eq_ignore_ascii_case(&format!("{host}:{port}"))
    })
}

/// `host` and `port` of a `CONNECT` target (`[v6]:port` too).
fn split_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

async fn serve(
    mut client: TcpStream,
    open: &[String],
    refused: &Mutex<Option<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).await?;
        if n == 0 || head.len() + n > HEAD_LIMIT {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next(), words.next().unwrap_or_default());
    let Some((host, port)) = split_authority(target).filter(|_| method == Some("CONNECT")) else {
        // Plain HTTP to a registry nobody listed as insecure.
        let host = target
            .split_once("://")
            .map_or(target, |(_, rest)| rest)
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        if let Ok(mut first_refused) = refused.lock() {
            first_refused.get_or_insert_with(|| host.to_owned());
        }
        return answer(&mut client, "403 Forbidden").await;
    };
    let addresses: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addresses) => addresses.collect(),
        Err(_) => return answer(&mut client, "502 Bad Gateway").await,
    };
    let allowed = is_open(open, &host, port)
        || (!addresses.is_empty()
            && !addresses
                .iter()
                .any(|a| corral_core::net::forbidden_address(a.ip())));
    let Some(&first) = addresses.first().filter(|_| allowed) else {
        if let Ok(mut first_refused) = refused.lock() {
            first_refused.get_or_insert_with(|| target.to_owned());
        }
        return answer(&mut client, "403 Forbidden").await;
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(first)).await {
        Ok(Ok(upstream)) => upstream,
        _ => return answer(&mut client, "502 Bad Gateway").await,
    };
    answer_open(&mut client).await?;
    let mut upstream = upstream;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn answer(client: &mut TcpStream, status: &str) -> std::io::Result<()> {
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(response.as_bytes()).await
}

async fn answer_open(client: &mut TcpStream) -> std::io::Result<()> {
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_and_open_entries_match() {
        assert_eq!(
            split_authority("registry.example:443"),
            Some(("registry.example".to_owned(), 443))
        );
        assert_eq!(
            split_authority("[::1]:5000"),
            Some(("::1".to_owned(), 5000))
        );
        assert_eq!(split_authority("nohost"), None);
        let open = vec!["127.0.0.1:5000".to_owned(), "mirror.internal".to_owned()];
        assert!(is_open(&open, "127.0.0.1", 5000));
        assert!(!is_open(&open, "127.0.0.1", 5432));
        assert!(is_open(&open, "mirror.internal", 443));
        assert!(!is_open(&open, "other.internal", 443));
    }
}
