//! Terminals and background processes: the REST calls, and a terminal's
//! WebSocket as a typed session.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use corral_types::terminal::{
    OpenTerminalRequest, ProcessInfo, ProcessLogs, ProcessSignalRequest, ProcessStdinRequest,
    StartProcessRequest, TerminalClientMessage, TerminalInfo, TerminalServerMessage,
};

use crate::{Client, ClientError, Result};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a terminal sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalEvent {
    /// Output for the screen (raw bytes, escape sequences included).
    Output(Bytes),
    /// The answer to [`TerminalSession::ping`].
    Pong,
    /// The terminal's program ended (a [`TerminalEvent::Closed`] follows).
    Exited {
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that ended it, when one did.
        signal: Option<i32>,
    },
    /// The server closed the session (`1000`: the terminal ended or the
    /// connection was idle; `1008`: refused).
    Closed {
        /// WebSocket close code.
        code: u16,
        /// Why.
        reason: String,
    },
}

/// An attached terminal.
#[derive(Debug)]
pub struct TerminalSession {
    socket: Socket,
}

/// The sending half of a split [`TerminalSession`].
#[derive(Debug)]
pub struct TerminalWriter {
    sink: futures_util::stream::SplitSink<Socket, Message>,
}

/// The receiving half of a split [`TerminalSession`].
#[derive(Debug)]
pub struct TerminalReader {
    stream: futures_util::stream::SplitStream<Socket>,
}

fn ws_error(url: &str, error: &tungstenite::Error) -> ClientError {
    ClientError::Transport {
        url: url.to_owned(),
        reason: error.to_string(),
    }
}

async fn send(sink: &mut (impl SinkExt<Message> + Unpin), message: &TerminalClientMessage) -> bool {
    let text = serde_json::to_string(message).unwrap_or_default();
    sink.send(Message::text(text)).await.is_ok()
}

fn event(
    message: Option<std::result::Result<Message, tungstenite::Error>>,
) -> Option<TerminalEvent> {
    match message {
        Some(Ok(Message::Binary(bytes))) => Some(TerminalEvent::Output(bytes)),
        Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
            Ok(TerminalServerMessage::Pong) => Some(TerminalEvent::Pong),
            Ok(TerminalServerMessage::Exit { exit_code, signal }) => {
                Some(TerminalEvent::Exited { exit_code, signal })
            }
            // A message from a newer server: not for this client.
            Err(_) => None,
        },
        Some(Ok(Message::Close(Some(frame)))) => Some(TerminalEvent::Closed {
            code: u16::from(frame.code),
            reason: frame.reason.to_string(),
        }),
        Some(Ok(Message::Close(None))) | None => Some(TerminalEvent::Closed {
            code: 1005,
            reason: String::new(),
        }),
        Some(Err(error)) => Some(TerminalEvent::Closed {
            code: 1006,
            reason: error.to_string(),
        }),
        // Protocol pings: not for the caller.
        Some(Ok(_)) => None,
    }
}

impl TerminalWriter {
    /// Sends keystrokes or text.
    pub async fn input(&mut self, data: &str) -> bool {
        send(
            &mut self.sink,
            &TerminalClientMessage::Input {
                data: data.to_owned(),
            },
        )
        .await
    }

    /// Tells the terminal the window's new size.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> bool {
        send(
            &mut self.sink,
            &TerminalClientMessage::Resize { cols, rows },
        )
        .await
    }

    /// Keep-alive (answered with [`TerminalEvent::Pong`]).
    pub async fn ping(&mut self) -> bool {
        send(&mut self.sink, &TerminalClientMessage::Ping).await
    }

    /// Ends the session (the terminal keeps running).
    pub async fn close(&mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
    }
}

impl TerminalReader {
    /// The next event; [`TerminalEvent::Closed`] is the last.
    pub async fn next(&mut self) -> TerminalEvent {
        loop {
            if let Some(event) = event(self.stream.next().await) {
                return event;
            }
        }
    }
}

impl TerminalSession {
    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (TerminalWriter, TerminalReader) {
        let (sink, stream) = self.socket.split();
        (TerminalWriter { sink }, TerminalReader { stream })
    }

    /// Sends keystrokes or text.
    pub async fn input(&mut self, data: &str) -> bool {
        send(
            &mut self.socket,
            &TerminalClientMessage::Input {
                data: data.to_owned(),
            },
        )
        .await
    }

    /// The next event; [`TerminalEvent::Closed`] is the last.
    pub async fn next(&mut self) -> TerminalEvent {
        loop {
            if let Some(event) = event(self.socket.next().await) {
                return event;
            }
        }
    }
}

impl Client {
    /// `POST /api/v1/sandboxes/{id}/terminals`: a new terminal.
    pub async fn open_terminal(
        &self,
        id: &str,
        request: &OpenTerminalRequest,
    ) -> Result<TerminalInfo> {
        self.post(&["sandboxes", id, "terminals"], request).await
    }

    /// `GET /api/v1/sandboxes/{id}/terminals`.
    pub async fn terminals(&self, id: &str) -> Result<Vec<TerminalInfo>> {
        self.get(&["sandboxes", id, "terminals"]).await
    }

    /// `DELETE /api/v1/sandboxes/{id}/terminals/{tid}`: ends one.
    pub async fn close_terminal(&self, id: &str, tid: &str) -> Result<()> {
        let url = self.url(&["sandboxes", id, "terminals", tid]);
        self.send(self.request(Method::DELETE, url)).await.map(drop)
    }

    /// Attaches to a terminal over its WebSocket (credentials in the
    /// `Authorization` header, never in the URL).
    pub async fn attach_terminal(&self, id: &str, tid: &str) -> Result<TerminalSession> {
        let mut url = self.url(&["sandboxes", id, "terminals", tid, "ws"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        let shown = url.to_string();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ws_error(&shown, &e))?;
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        let connected =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, tls_connector())
                .await;
        match connected {
            Ok((socket, _)) => Ok(TerminalSession { socket }),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.into_body().unwrap_or_default();
                Err(ClientError::Api(Box::new(crate::ApiError::from_body(
                    status, &body,
                ))))
            }
            Err(tungstenite::Error::Io(error)) => Err(ClientError::Unreachable {
                url: self.base_url().to_owned(),
                reason: error.to_string(),
            }),
            Err(error) => Err(ws_error(&shown, &error)),
        }
    }

    /// `POST /api/v1/sandboxes/{id}/processes`: starts a background process.
    pub async fn start_process(
        &self,
        id: &str,
        request: &StartProcessRequest,
    ) -> Result<ProcessInfo> {
        self.post(&["sandboxes", id, "processes"], request).await
    }

    /// `GET /api/v1/sandboxes/{id}/processes`.
    pub async fn processes(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        self.get(&["sandboxes", id, "processes"]).await
    }

    /// `GET /api/v1/sandboxes/{id}/processes/{pid}/logs?offset=`: stored output.
    pub async fn process_logs(&self, id: &str, pid: i32, offset: u64) -> Result<ProcessLogs> {
        let pid = pid.to_string();
        let mut url = self.url(&["sandboxes", id, "processes", &pid, "logs"]);
        url.query_pairs_mut()
            .append_pair("offset", &offset.to_string());
        self.json(self.request(Method::GET, url)).await
    }

    /// `POST /api/v1/sandboxes/{id}/processes/{pid}/stdin`.
    pub async fn process_stdin(&self, id: &str, pid: i32, data: &str, close: bool) -> Result<()> {
        let pid = pid.to_string();
        let url = self.url(&["sandboxes", id, "processes", &pid, "stdin"]);
        let body = ProcessStdinRequest {
            data: data.to_owned(),
            close,
        };
        self.send(self.request(Method::POST, url).json(&body))
            .await
            .map(drop)
    }

    /// `POST /api/v1/sandboxes/{id}/processes/{pid}/signal`.
    pub async fn signal_process(&self, id: &str, pid: i32, signal: &str) -> Result<()> {
        let pid = pid.to_string();
        let url = self.url(&["sandboxes", id, "processes", &pid, "signal"]);
        let body = ProcessSignalRequest {
            signal: signal.to_owned(),
        };
        self.send(self.request(Method::POST, url).json(&body))
            .await
            .map(drop)
    }
}

/// TLS for `wss://` with the WebPKI roots and the ring provider, named
/// explicitly (a program may link more than one rustls provider).
#[cfg(feature = "rustls")]
fn tls_connector() -> Option<tokio_tungstenite::Connector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
        config,
    )))
}

#[cfg(not(feature = "rustls"))]
fn tls_connector() -> Option<tokio_tungstenite::Connector> {
    None
}
