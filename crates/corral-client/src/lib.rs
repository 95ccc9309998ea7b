//! A typed async client of the Corral HTTP API.
//!
//! Every request and response type is the server's own, from
//! [`corral_types`]; an error answer becomes [`ClientError::Api`] carrying
//! the RFC 9457 problem's `code` and `detail`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), corral_client::ClientError> {
//! use corral_client::Client;
//! use corral_client::types::sandbox::{CreateSandboxRequest, ExecRequestBody};
//!
//! let client = Client::new("http://127.0.0.1:8080", Some("crl_…".to_owned()))?;
//! let sandbox = client.create_sandbox(&CreateSandboxRequest::default()).await?;
//! let result = client
//!     .exec(&sandbox.id, &ExecRequestBody { command: Some("uname -a".into()), ..Default::default() })
//!     .await?;
//! print!("{}", result.stdout);
//! client.delete_sandbox(&sandbox.id).await?;
//! # Ok(()) }
//! ```

mod error;
mod exec;
mod judge;
mod terminal;

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use corral_types::agent::{ExecResult, FileInfo};
use corral_types::identity::{
    ApiKeyResponse, CreateApiKeyRequest, CreatedApiKeyResponse, LoginRequest, TokenResponse,
    UserResponse,
};
use corral_types::sandbox::{CreateSandboxRequest, ExecRequestBody, SandboxPage, SandboxResponse};

pub use corral_types as types;
pub use error::{ApiError, ClientError};
pub use exec::{ExecEvent, ExecStream};
pub use judge::LibraryFilter;
pub use terminal::{TerminalEvent, TerminalReader, TerminalSession, TerminalWriter};

/// Results of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one Corral server, with an optional bearer credential
/// (an API key `crl_…` or a JWT access token). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// Which sandboxes `GET /api/v1/sandboxes` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    /// Only in this state (`creating`, `starting`, `running`, `paused`,
    /// `stopped`, `error`).
    pub state: Option<String>,
    /// Only with every one of these labels. The server filters by the first
    /// (`?label=key=value`); [`Client::list_all_sandboxes`] checks the rest.
    pub labels: Vec<(String, String)>,
    /// Page size (server default when `None`).
    pub limit: Option<u32>,
    /// Every org's sandboxes (`GET /api/v1/admin/sandboxes`: platform
    /// administrators only), instead of the caller's org's.
    pub all_orgs: bool,
}

impl Client {
    /// A client of the server at `base_url` (such as `http://127.0.0.1:8080`;
    /// a path prefix is kept), sending `token` as `Authorization: Bearer`.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host_str().is_none() {
            return Err(invalid("no host"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("corral-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&error::root_cause(&e)))?;
        Ok(Client {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The same server with another credential.
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client {
            token: token.filter(|t| !t.is_empty()),
            ..self.clone()
        }
    }

    /// The server's base URL as given (without a trailing slash).
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + `/api/v1/` + `segments`, each percent-encoded as one segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends and turns an error status into [`ClientError::Api`].
    async fn send(&self, builder: RequestBuilder) -> Result<Response> {
        let request = builder.build().map_err(|e| ClientError::Transport {
            url: self.base_url().to_owned(),
            reason: error::root_cause(&e),
        })?;
        let url = request.url().to_string();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.transport(&url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(ClientError::Api(Box::new(ApiError::from_body(
            status.as_u16(),
            &body,
        ))))
    }

    fn transport(&self, url: &str, e: &reqwest::Error) -> ClientError {
        if e.is_connect() || (e.is_timeout() && !e.is_body()) {
            ClientError::Unreachable {
                url: self.base_url().to_owned(),
                reason: error::root_cause(e),
            }
        } else {
            ClientError::Transport {
                url: url.to_owned(),
                reason: error::root_cause(e),
            }
        }
    }

    /// Sends and decodes a JSON answer.
    async fn json<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T> {
        let response = self.send(builder).await?;
        let url = response.url().to_string();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        self.json(self.request(Method::GET, self.url(segments)))
            .await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        self.json(self.request(Method::POST, self.url(segments)).json(body))
            .await
    }

    // --- identity ---------------------------------------------------------

    /// `POST /api/v1/auth/login`: a token pair for a username or email and
    /// password.
    pub async fn login(&self, login: &str, password: &str) -> Result<TokenResponse> {
        let body = LoginRequest {
            login: login.to_owned(),
            password: password.to_owned(),
        };
        self.post(&["auth", "login"], &body).await
    }

    /// `GET /api/v1/users/me`: whose credential this is.
    pub async fn me(&self) -> Result<UserResponse> {
        self.get(&["users", "me"]).await
    }

    /// `POST /api/v1/api-keys`: a new key; its secret (`key`) is only ever
    /// shown in this answer.
    pub async fn create_api_key(
        &self,
        request: &CreateApiKeyRequest,
    ) -> Result<CreatedApiKeyResponse> {
        self.post(&["api-keys"], request).await
    }

    /// `GET /api/v1/api-keys`: the account's keys (without their secrets).
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyResponse>> {
        self.get(&["api-keys"]).await
    }

    /// `DELETE /api/v1/api-keys/{id}`: revokes one of the account's keys.
    pub async fn delete_api_key(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, self.url(&["api-keys", id])))
            .await
            .map(drop)
    }

    /// `DELETE /api/v1/api-keys/current`: revokes the key this client
    /// authenticates with.
    pub async fn revoke_own_key(&self) -> Result<()> {
        self.send(self.request(Method::DELETE, self.url(&["api-keys", "current"])))
            .await
            .map(drop)
    }

    // --- sandboxes --------------------------------------------------------

    /// `POST /api/v1/sandboxes`: creates and starts a sandbox.
    pub async fn create_sandbox(&self, request: &CreateSandboxRequest) -> Result<SandboxResponse> {
        self.post(&["sandboxes"], request).await
    }

    /// `GET /api/v1/sandboxes` (or, for `all_orgs`,
    /// `/api/v1/admin/sandboxes`): one page, from `cursor` (a previous
    /// page's `next_cursor`).
    pub async fn list_sandboxes(
        &self,
        filter: &SandboxFilter,
        cursor: Option<&str>,
    ) -> Result<SandboxPage> {
        let mut url = if filter.all_orgs {
            self.url(&["admin", "sandboxes"])
        } else {
            self.url(&["sandboxes"])
        };
        {
            let mut query = url.query_pairs_mut();
            if let Some(state) = &filter.state {
                query.append_pair("state", state);
            }
            if let Some((key, value)) = filter.labels.first() {
                query.append_pair("label", &format!("{key}={value}"));
            }
            if let Some(limit) = filter.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.json(self.request(Method::GET, url)).await
    }

    /// Every sandbox matching `filter`, following `next_cursor` to the end.
    pub async fn list_all_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxResponse>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_sandboxes(filter, cursor.as_deref()).await?;
            all.extend(page.items.into_iter().filter(|s| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|have| have == v))
            }));
            match page.next_cursor {
                // A server repeating a cursor would loop forever.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /api/v1/sandboxes/{id}`.
    pub async fn sandbox(&self, id: &str) -> Result<SandboxResponse> {
        self.get(&["sandboxes", id]).await
    }

    /// `DELETE /api/v1/sandboxes/{id}`: stops it and deletes everything in it.
    pub async fn delete_sandbox(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, self.url(&["sandboxes", id])))
            .await
            .map(drop)
    }

    /// `POST /api/v1/sandboxes/{id}/start`: starts a stopped sandbox.
    pub async fn start_sandbox(&self, id: &str) -> Result<SandboxResponse> {
        self.json(self.request(Method::POST, self.url(&["sandboxes", id, "start"])))
            .await
    }

    /// `POST /api/v1/sandboxes/{id}/stop`: stops a sandbox, keeping its record.
    pub async fn stop_sandbox(&self, id: &str) -> Result<SandboxResponse> {
        self.json(self.request(Method::POST, self.url(&["sandboxes", id, "stop"])))
            .await
    }

    /// `POST /api/v1/sandboxes/{id}/exec`: runs a command to completion. Any
    /// exit code is a success here; see [`ExecResult`].
    pub async fn exec(&self, id: &str, request: &ExecRequestBody) -> Result<ExecResult> {
        self.post(&["sandboxes", id, "exec"], request).await
    }

    /// `PUT /api/v1/sandboxes/{id}/files/content?path=`: replaces the file at
    /// `path` (absolute, inside the sandbox) with `content`.
    pub async fn upload(&self, id: &str, path: &str, content: impl Into<Bytes>) -> Result<()> {
        let mut url = self.url(&["sandboxes", id, "files", "content"]);
        url.query_pairs_mut().append_pair("path", path);
        let builder = self
            .request(Method::PUT, url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(content.into());
        self.send(builder).await.map(drop)
    }

    /// `GET /api/v1/sandboxes/{id}/files/content?path=`: the whole file.
    pub async fn download(&self, id: &str, path: &str) -> Result<Bytes> {
        let mut download = self.download_stream(id, path).await?;
        let mut content = Vec::new();
        while let Some(chunk) = download.chunk().await? {
            content.extend_from_slice(&chunk);
        }
        Ok(content.into())
    }

    /// `GET /api/v1/sandboxes/{id}/files/content?path=`, read chunk by chunk.
    pub async fn download_stream(&self, id: &str, path: &str) -> Result<Download> {
        let mut url = self.url(&["sandboxes", id, "files", "content"]);
        url.query_pairs_mut().append_pair("path", path);
        let response = self.send(self.request(Method::GET, url)).await?;
        Ok(Download {
            client: self.clone(),
            response,
        })
    }

    /// `GET /api/v1/sandboxes/{id}/files?path=`: a directory's entries.
    pub async fn list_files(&self, id: &str, path: &str) -> Result<Vec<FileInfo>> {
        let mut url = self.url(&["sandboxes", id, "files"]);
        url.query_pairs_mut().append_pair("path", path);
        self.json(self.request(Method::GET, url)).await
    }
}

/// A file being downloaded.
#[derive(Debug)]
pub struct Download {
    client: Client,
    response: Response,
}

impl Download {
    /// The size the server announced, if it did.
    pub fn content_length(&self) -> Option<u64> {
        self.response.content_length()
    }

    /// The next piece of the file; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        let url = self.response.url().to_string();
        self.response
            .chunk()
            .await
            .map_err(|e| self.client.transport(&url, &e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

    use super::*;
    use corral_types::ErrorCode;

    #[test]
    fn urls_keep_a_path_prefix_and_encode_each_segment() {
        let c = Client::new("https://example.com/corral/", None).unwrap();
        assert_eq!(
            c.url(&["sandboxes", "a/b?c", "exec"]).as_str(),
            "https://example.com/corral/api/v1/sandboxes/a%2Fb%3Fc/exec"
        );
        assert_eq!(c.base_url(), "https://example.com/corral");
        let c = Client::new("http://127.0.0.1:8080", None).unwrap();
        assert_eq!(
            c.url(&["users", "me"]).as_str(),
            "http://127.0.0.1:8080/api/v1/users/me"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["", "127.0.0.1:8080", "ftp://x", "mailto:a@b", "http://"] {
            let e = Client::new(bad, None).unwrap_err();
            assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}: {e:?}");
        }
    }

    /// A one-request HTTP server answering `response`, returning the
    /// request it received.
    async fn serve_once(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.ok();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, task)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_error_answer_becomes_the_problems_code_and_detail() {
        let body = r#"{"type":"urn:corral:error:not_found","title":"Not found","status":404,"detail":"no such sandbox","code":"not_found"}"#;
        let response: &'static str = Box::leak(
            format!(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (url, server) = serve_once(response).await;
        let client = Client::new(&url, Some("crl_test".to_owned())).unwrap();
        let e = client.sandbox("s1").await.unwrap_err();
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.to_string(), "not_found: no such sandbox");
        assert_eq!(
            e.api().unwrap().problem.as_ref().unwrap().code,
            ErrorCode::NotFound
        );
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /api/v1/sandboxes/s1 HTTP/1.1"),
            "{request}"
        );
        assert!(
            request
                .to_lowercase()
                .contains("authorization: bearer crl_test"),
            "{request}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn list_sends_state_labels_and_cursor_in_the_query() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"items\":[]}",
        )
        .await;
        let client = Client::new(&url, None).unwrap();
        let filter = SandboxFilter {
            state: Some("running".into()),
            labels: vec![("team".into(), "a b".into()), ("x".into(), "y".into())],
            limit: None,
            all_orgs: false,
        };
        let page = client.list_sandboxes(&filter, Some("c1")).await.unwrap();
        assert!(page.items.is_empty() && page.next_cursor.is_none());
        let request = server.await.unwrap();
        assert!(
            request.starts_with(
                "GET /api/v1/sandboxes?state=running&label=team%3Da+b&cursor=c1 HTTP/1.1"
            ),
            "{request}"
        );
        assert!(
            !request.to_lowercase().contains("authorization"),
            "{request}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn upload_sends_raw_bytes_with_the_path_in_the_query() {
        let (url, server) =
            serve_once("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
        let client = Client::new(&url, None).unwrap();
        client
            .upload("s1", "/tmp/a b.bin", vec![0u8, 255, 10])
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(
            request.starts_with("PUT /api/v1/sandboxes/s1/files/content?path=%2Ftmp%2Fa+b.bin "),
            "{request}"
        );
        assert!(request.contains("application/octet-stream"), "{request}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_port_is_unreachable_naming_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let e = Client::new(&url, None).unwrap().me().await.unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.contains(&url), "{message}");
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_success_that_is_not_the_expected_json_is_a_decode_error() {
        let (url, _server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
        )
        .await;
        let e = Client::new(&url, None).unwrap().me().await.unwrap_err();
        assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
    }
}
