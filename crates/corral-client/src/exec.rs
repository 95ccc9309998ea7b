//! An exec as an event stream: output as the program writes it, and its
//! standard input written while it runs.

use bytes::{Buf, BytesMut};
use reqwest::Method;

use corral_types::ErrorCode;
use corral_types::agent::ExecResult;
use corral_types::sandbox::{ExecRequestBody, ExecStarted};
use corral_types::terminal::ProcessStdinRequest;

use crate::{ApiError, Client, ClientError, Result};

/// What a streaming exec sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The exec's id, for [`Client::exec_stdin`] (only with `stream_stdin`).
    Started(String),
    /// Standard output, as written.
    Stdout(String),
    /// Standard error, as written.
    Stderr(String),
    /// How it ended (stdout and stderr empty: they came as events); the last event.
    Exited(Box<ExecResult>),
}

/// A running exec's events.
#[derive(Debug)]
pub struct ExecStream {
    client: Client,
    response: reqwest::Response,
    buffer: BytesMut,
    done: bool,
}

/// `{"data": …}` of an output event.
#[derive(serde::Deserialize)]
struct Output {
    data: String,
}

/// `{"code", "detail"}` of an error event.
#[derive(serde::Deserialize)]
struct Failed {
    code: String,
    detail: Option<String>,
}

impl Client {
    /// `POST /api/v1/sandboxes/{id}/exec` as an event stream.
    pub async fn exec_stream(&self, id: &str, request: &ExecRequestBody) -> Result<ExecStream> {
        let builder = self
            .request(Method::POST, self.url(&["sandboxes", id, "exec"]))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(request);
        let response = self.send(builder).await?;
        Ok(ExecStream {
            client: self.clone(),
            response,
            buffer: BytesMut::new(),
            done: false,
        })
    }

    /// `POST /api/v1/sandboxes/{id}/exec/{exec_id}/stdin`: writes to a
    /// running exec's standard input (`close`: then end it).
    pub async fn exec_stdin(&self, id: &str, exec_id: &str, data: &str, close: bool) -> Result<()> {
        let body = ProcessStdinRequest {
            data: data.to_owned(),
            close,
        };
        let url = self.url(&["sandboxes", id, "exec", exec_id, "stdin"]);
        self.send(self.request(Method::POST, url).json(&body))
            .await
            .map(drop)
    }
}

impl ExecStream {
    /// The next event; after [`ExecEvent::Exited`], an error. A failure the
    /// server reports in the stream is [`ClientError::Api`].
    pub async fn next(&mut self) -> Result<ExecEvent> {
        let url = self.response.url().to_string();
        loop {
            if let Some((name, data)) = take_event(&mut self.buffer)
                && let Some(event) = self.decode(&url, &name, &data)?
            {
                return Ok(event);
            }
            if self.done {
                return Err(ClientError::Transport {
                    url,
                    reason: "the exec's event stream ended before its result".to_owned(),
                });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => self.done = true,
                Err(e) => return Err(self.client.transport(&url, &e)),
            }
        }
    }

    fn decode(&mut self, url: &str, name: &str, data: &str) -> Result<Option<ExecEvent>> {
        let bad = |e: serde_json::Error| ClientError::Decode {
            url: url.to_owned(),
            reason: format!("`{name}` event: {e}"),
        };
        Ok(Some(match name {
            "started" => ExecEvent::Started(
                serde_json::from_str::<ExecStarted>(data)
                    .map_err(bad)?
                    .exec_id,
            ),
            "stdout" => ExecEvent::Stdout(serde_json::from_str::<Output>(data).map_err(bad)?.data),
            "stderr" => ExecEvent::Stderr(serde_json::from_str::<Output>(data).map_err(bad)?.data),
            "exit" => {
                self.done = true;
                ExecEvent::Exited(Box::new(serde_json::from_str(data).map_err(bad)?))
            }
            "error" => {
                self.done = true;
                let failed: Failed = serde_json::from_str(data).map_err(bad)?;
                // The status the code always has (the stream itself was 200).
                let status = ErrorCode::ALL
                    .iter()
                    .find(|c| c.as_str() == failed.code)
                    .map_or(500, |c| c.status());
                let body = serde_json::json!({
                    "status": status,
                    "code": failed.code,
                    "detail": failed.detail,
                });
                return Err(ClientError::Api(Box::new(ApiError::from_body(
                    status,
                    body.to_string().as_bytes(),
                ))));
            }
            // Comments (keep-alives) and events of a newer server.
            _ => return Ok(None),
        }))
    }
}

/// Takes one whole server-sent event (`event:` name, `data:` lines joined)
/// off the front of `buffer`, if one has fully arrived.
fn take_event(buffer: &mut BytesMut) -> Option<(String, String)> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let block = buffer.split_to(end);
    buffer.advance(2);
    let text = String::from_utf8_lossy(&block);
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim_start().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    Some((name, data.join("\n")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn events_are_taken_whole_and_in_order() {
        let mut buffer = BytesMut::from(
            &b"event: stdout\ndata: {\"data\":\"a\"}\n\n: keep-alive\n\nevent: exit\ndata: {\"x\":"
                [..],
        );
        assert_eq!(
            take_event(&mut buffer),
            Some(("stdout".into(), "{\"data\":\"a\"}".into()))
        );
        assert_eq!(
            take_event(&mut buffer),
            Some(("message".into(), String::new()))
        );
        assert_eq!(take_event(&mut buffer), None);
        buffer.extend_from_slice(b"1}\n\n");
        assert_eq!(
            take_event(&mut buffer),
            Some(("exit".into(), "{\"x\":1}".into()))
        );
    }
}
