//! Terminals over a real WebSocket and background processes, against real
//! sandboxes (runc as root, the agent as PID 1).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::sandboxes::app_in;
use crate::support::{TestApp, on_both_backends};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `path` with extra request headers.
async fn connect(
    address: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, WsError> {
    let mut request = format!("ws://{address}{path}").into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// A client attached to a terminal: what it has seen so far.
struct Term {
    socket: Socket,
    seen: Vec<u8>,
    texts: Vec<String>,
}

impl Term {
    fn new(socket: Socket) -> Term {
        Term {
            socket,
            seen: Vec::new(),
            texts: Vec::new(),
        }
    }

    async fn send(&mut self, message: serde_json::Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
    }

    async fn type_text(&mut self, text: &str) {
        self.send(json!({"type": "input", "data": text})).await;
    }

    /// Reads until the output shows `needle`; all output seen.
    async fn until(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // Only new output is searched: a flood of many megabytes stays cheap.
        let mut searched: usize = 0;
        loop {
            let from = searched.saturating_sub(needle.len());
            if self.seen[from..]
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                return String::from_utf8_lossy(&self.seen).into_owned();
            }
            searched = self.seen.len();
            let text = || String::from_utf8_lossy(&self.seen).into_owned();
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within 30 s; saw {:?}", text()));
            match message {
                Some(Ok(Message::Binary(bytes))) => self.seen.extend_from_slice(&bytes),
                Some(Ok(Message::Text(text))) => self.texts.push(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    panic!("closed ({frame:?}) before {needle:?}; saw {:?}", text())
                }
                Some(Ok(_)) => {}
                other => panic!("{other:?} before {needle:?}; saw {:?}", text()),
            }
        }
    }

    /// The close frame the server ends with (output and text frames until
    /// then are kept).
    async fn closed(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("the server did not close the socket");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(Message::Binary(bytes))) => self.seen.extend_from_slice(&bytes),
                Some(Ok(Message::Text(text))) => self.texts.push(text.to_string()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return (1006, error.to_string()),
            }
        }
    }
}

/// A running sandbox of a new user's: (key, sandbox id).
async fn sandbox_of(app: &TestApp, name: &str) -> (String, String) {
    let (access, _) = app.register_and_login(name).await;
    let (key, _) = app
        .create_key(&access, &["sandboxes:read", "sandboxes:write"])
        .await;
    let created = app
        .call(
            "POST",
            "/api/v1/sandboxes",
            &key,
            Some(json!({"resources": {"memory_mb": 64}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    (key, created.json()["id"].as_str().unwrap().to_owned())
}

on_both_backends!(
    a_terminal_is_driven_over_the_websocket_and_survives_disconnects,
    |app| {
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(app.state.store.backend(), dir.path()).await;
        let address = app.serve().await;
        let (key, id) = sandbox_of(&app, "typist").await;
        let opened = app
            .call(
                "POST",
                &format!("/api/v1/sandboxes/{id}/terminals"),
                &key,
                Some(json!({"cols": 80, "rows": 24, "command": ["/bin/sh"]})),
            )
            .await;
        assert_eq!(opened.status, 201, "{}", opened.text());
        let tid = opened.json()["id"].as_str().unwrap().to_owned();
        let ws = format!("/api/v1/sandboxes/{id}/terminals/{tid}/ws");

        // Token in the query: input reaches the shell.
        let mut first = Term::new(
            connect(address, &format!("{ws}?token={key}"), &[])
                .await
                .unwrap(),
        );
        first
            .type_text("export KEPT=survived; echo typed-$((40+2))\n")
            .await;
        first.until("typed-42").await;
        // Resize reaches the PTY.
        first
            .send(json!({"type": "resize", "cols": 100, "rows": 30}))
            .await;
        first.type_text("stty size\n").await;
        first.until("30 100").await;
        // Ping is answered.
        first.send(json!({"type": "ping"})).await;
        first.type_text("echo after-ping\n").await;
        first.until("after-ping\r\n").await;
        assert!(
            first.texts.iter().any(|t| t == r#"{"type":"pong"}"#),
            "{:?}",
            first.texts
        );

        // A second client (bearer header) sees the same output.
        let bearer = format!("Bearer {key}");
        let mut second = Term::new(
            connect(address, &ws, &[("authorization", &bearer)])
                .await
                .unwrap(),
        );
        first.type_text("echo both-$((6*7))\n").await;
        first.until("both-42").await;
        second.until("both-42").await;

        // The detail shows the terminal with its clients.
        let detail = app
            .call("GET", &format!("/api/v1/sandboxes/{id}"), &key, None)
            .await
            .json();
        assert_eq!(detail["terminals"][0]["id"], tid.as_str(), "{detail}");
        assert_eq!(detail["terminals"][0]["attached"], 2, "{detail}");
        assert_eq!(detail["processes"], json!([]), "{detail}");

        // Everyone disconnects; the shell keeps running.
        drop(first);
        drop(second);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listed = app
            .call(
                "GET",
                &format!("/api/v1/sandboxes/{id}/terminals"),
                &key,
                None,
            )
            .await
            .json();
        assert_eq!(listed[0]["running"], true, "{listed}");
        assert_eq!(listed[0]["attached"], 0, "{listed}");

        // Re-attaching (credentials in the first message) shows the earlier
        // output, and the shell's state survived.
        let mut again = Term::new(connect(address, &ws, &[]).await.unwrap());
        again.send(json!({"type": "auth", "token": key})).await;
        let greeting = again.until("both-42").await;
        assert!(greeting.contains("typed-42"), "{greeting:?}");
        again.type_text("echo \"kept=$KEPT\"\n").await;
        again.until("kept=survived").await;

        // Ending it closes attached clients; it is gone afterwards.
        let ended = app
            .call(
                "DELETE",
                &format!("/api/v1/sandboxes/{id}/terminals/{tid}"),
                &key,
                None,
            )
            .await;
        assert_eq!(ended.status, 204, "{}", ended.text());
        let (code, reason) = again.closed().await;
        assert_eq!((code, reason.as_str()), (1000, "the terminal ended"));
        let gone = connect(address, &format!("{ws}?token={key}"), &[]).await;
        match gone {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
            other => panic!("attached to an ended terminal: {other:?}"),
        }
        let audit = app
            .state
            .store
            .list_audit(&corral_store::AuditFilter {
                action: Some("sandbox.terminal.open".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(audit.len(), 1);
    }
);

on_both_backends!(terminal_websockets_refuse_strangers_and_bad_input, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "owner").await;
    let (stranger, _) = sandbox_of(&app, "stranger").await;
    let path = format!("/api/v1/sandboxes/{id}/terminals");
    // Bad sizes and programs are named.
    app.call("POST", &path, &key, Some(json!({"cols": 0})))
        .await
        .assert_problem(422, "validation_failed");
    app.call("POST", &path, &key, Some(json!({"command": []})))
        .await
        .assert_problem(422, "validation_failed");
    app.call(
        "POST",
        &path,
        &key,
        Some(json!({"command": ["/no/such/shell"]})),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.call("POST", &path, &key, Some(json!({"colour": 1})))
        .await
        .assert_problem(422, "validation_failed");
    let tid = app.call("POST", &path, &key, Some(json!({}))).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = format!("{path}/{tid}/ws");
    let status = |result: Result<Socket, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => 101,
        Err(other) => panic!("{other}"),
    };
    // A bad token, another tenant, another site, an unknown terminal.
    assert_eq!(
        status(connect(address, &format!("{ws}?token=crl_forged"), &[]).await),
        401
    );
    assert_eq!(
        status(connect(address, &format!("{ws}?token={stranger}"), &[]).await),
        404
    );
    assert_eq!(
        status(
            connect(
                address,
                &format!("{ws}?token={key}"),
                &[("origin", "https://evil.example")]
            )
            .await
        ),
        403
    );
    assert_eq!(
        status(connect(address, &format!("{path}/t999/ws?token={key}"), &[]).await),
        404
    );
    // This server's own origin is fine.
    let own = format!("http://{address}");
    assert_eq!(
        status(connect(address, &format!("{ws}?token={key}"), &[("origin", &own)]).await),
        101
    );
    // Without credentials, the first message must carry good ones.
    let mut anonymous = Term::new(connect(address, &ws, &[]).await.unwrap());
    anonymous.type_text("id\n").await;
    assert_eq!(anonymous.closed().await.0, 1008);
    let mut forged = Term::new(connect(address, &ws, &[]).await.unwrap());
    forged
        .send(json!({"type": "auth", "token": "crl_forged"}))
        .await;
    assert_eq!(forged.closed().await.0, 1008);
    let mut foreign = Term::new(connect(address, &ws, &[]).await.unwrap());
    foreign
        .send(json!({"type": "auth", "token": stranger}))
        .await;
    let (code, reason) = foreign.closed().await;
    assert_eq!(code, 1008);
    assert!(
        reason.contains("not found") || reason.contains("no sandbox"),
        "{reason}"
    );
    // Nonsense and oversized messages end the connection with a reason.
    let mut rude = Term::new(
        connect(address, &format!("{ws}?token={key}"), &[])
            .await
            .unwrap(),
    );
    rude.send(json!({"type": "shout"})).await;
    assert_eq!(rude.closed().await.0, 1003);
    let mut huge = Term::new(
        connect(address, &format!("{ws}?token={key}"), &[])
            .await
            .unwrap(),
    );
    huge.type_text(&"x".repeat(200 * 1024)).await;
    assert_eq!(huge.closed().await.0, 1009);
    // The terminal itself is unharmed.
    let mut fine = Term::new(
        connect(address, &format!("{ws}?token={key}"), &[])
            .await
            .unwrap(),
    );
    fine.type_text("echo still-$((1+1))\n").await;
    fine.until("still-2").await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_terminal_connections_are_closed_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::sandboxes::app_configured(corral_store::Backend::Sqlite, dir.path(), |c| {
        c.sandbox.terminal_idle_secs = 1;
    })
    .await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "idler").await;
    let path = format!("/api/v1/sandboxes/{id}/terminals");
    let tid = app.call("POST", &path, &key, Some(json!({}))).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut idle = Term::new(
        connect(address, &format!("{path}/{tid}/ws?token={key}"), &[])
            .await
            .unwrap(),
    );
    let (code, reason) = idle.closed().await;
    assert_eq!(code, 1000);
    assert!(reason.contains("without a message"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_stall_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "flood").await;
    let path = format!("/api/v1/sandboxes/{id}/terminals");
    let tid = app
        .call("POST", &path, &key, Some(json!({"command": ["/bin/sh"]})))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = format!("{path}/{tid}/ws?token={key}");
    // The stalled client attaches and then never reads.
    let mut stalled = Term::new(connect(address, &ws, &[]).await.unwrap());
    let mut reader = Term::new(connect(address, &ws, &[]).await.unwrap());
    // Far more output than the stalled client's socket buffers and queue hold.
    reader
        .type_text("head -c 40000000 /dev/zero | tr '\\0' a; echo; echo END-$((3*3))\n")
        .await;
    let started = std::time::Instant::now();
    // The reading client keeps up, so it gets every byte: the stalled one
    // holds up the PTY once, for at most half a second, and is then dropped.
    reader.until("END-9").await;
    let took = started.elapsed();
    let longest_run = reader
        .seen
        .split(|b| *b != b'a')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert_eq!(longest_run, 40_000_000, "the reading client lost bytes");
    let redraw = b"\x1b[H\x1b[2J";
    assert!(
        !reader.seen.windows(redraw.len()).any(|w| w == redraw),
        "the reading client was redrawn"
    );
    // The PTY kept going too: the shell answers at once.
    reader.type_text("echo alive-$((2+3))\n").await;
    reader.until("alive-5").await;
    // When the stalled client reads again it catches up by a redraw: it
    // ends up with the final screen without getting all 40 MB.
    stalled.until("alive-5").await;
    assert!(
        stalled.seen.len() < 30_000_000,
        "the stalled client was sent {} bytes: nothing was dropped",
        stalled.seen.len()
    );
    eprintln!("40 MB to the reading client in {took:?}");
}

on_both_backends!(background_processes_run_log_take_input_and_signals, |app| {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(app.state.store.backend(), dir.path()).await;
    let (key, id) = sandbox_of(&app, "worker").await;
    let path = format!("/api/v1/sandboxes/{id}/processes");
    let started = app
            .call(
                "POST",
                &path,
                &key,
                Some(json!({"command": "echo started; echo warn >&2; read name; echo hello-$name; exit 3"})),
            )
            .await;
    assert_eq!(started.status, 201, "{}", started.text());
    let pid = started.json()["pid"].as_i64().unwrap();
    let stdin = app
        .call(
            "POST",
            &format!("{path}/{pid}/stdin"),
            &key,
            Some(json!({"data": "corral\n", "close": true})),
        )
        .await;
    assert_eq!(stdin.status, 204, "{}", stdin.text());
    // Followed as server-sent events until it ends.
    let followed = app
        .send(
            http::Request::get(format!("{path}/{pid}/logs"))
                .header("authorization", format!("Bearer {key}"))
                .header("accept", "text/event-stream")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(followed.status, 200);
    let events = followed.text();
    assert!(events.contains("event: log"), "{events}");
    assert!(events.contains("hello-corral"), "{events}");
    let exit = events
        .split("event: exit\ndata: ")
        .nth(1)
        .expect("an exit event")
        .lines()
        .next()
        .unwrap();
    let exit: serde_json::Value = serde_json::from_str(exit).unwrap();
    assert_eq!(exit["status"], "exited");
    assert_eq!(exit["exit_code"], 3);
    // Stored logs, by stream.
    let logs = app
        .call("GET", &format!("{path}/{pid}/logs"), &key, None)
        .await
        .json();
    let stderr: Vec<_> = logs["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["stream"] == "stderr")
        .collect();
    assert_eq!(stderr.len(), 1, "{logs}");
    assert_eq!(stderr[0]["data"], "warn\n");
    let next = logs["next_offset"].as_u64().unwrap();
    let tail = app
        .call(
            "GET",
            &format!("{path}/{pid}/logs?offset={next}"),
            &key,
            None,
        )
        .await
        .json();
    assert_eq!(tail["chunks"], json!([]));

    // A signal ends a long one; its status says so.
    let sleeper = app
        .call("POST", &path, &key, Some(json!({"argv": ["sleep", "60"]})))
        .await
        .json()["pid"]
        .as_i64()
        .unwrap();
    app.call(
        "POST",
        &format!("{path}/{sleeper}/signal"),
        &key,
        Some(json!({"signal": "nope"})),
    )
    .await
    .assert_problem(422, "validation_failed");
    let sent = app
        .call(
            "POST",
            &format!("{path}/{sleeper}/signal"),
            &key,
            Some(json!({"signal": "SIGTERM"})),
        )
        .await;
    assert_eq!(sent.status, 204, "{}", sent.text());
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        listed = app.call("GET", &path, &key, None).await.json();
        let sleeping = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == sleeper)
            .unwrap()
            .clone();
        if sleeping["status"] == "exited" {
            assert_eq!(sleeping["signal"], 15);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // They show in the sandbox's detail.
    let detail = app
        .call("GET", &format!("/api/v1/sandboxes/{id}"), &key, None)
        .await
        .json();
    assert_eq!(detail["processes"].as_array().unwrap().len(), 2, "{detail}");
    // Bad input is named; unknown processes are 404.
    app.call("POST", &path, &key, Some(json!({})))
        .await
        .assert_problem(422, "validation_failed");
    // A blank command line is refused, for processes and exec alike.
    app.call("POST", &path, &key, Some(json!({"command": "  "})))
        .await
        .assert_problem(422, "validation_failed");
    let exec = format!("/api/v1/sandboxes/{id}/exec");
    app.call("POST", &exec, &key, Some(json!({"command": ""})))
        .await
        .assert_problem(422, "validation_failed");
    app.call("POST", &path, &key, Some(json!({"argv": ["/no/such"]})))
        .await
        .assert_problem(422, "validation_failed");
    app.call("GET", &format!("{path}/424242/logs"), &key, None)
        .await
        .assert_problem(404, "not_found");
    app.call(
        "POST",
        &format!("{path}/{pid}/stdin"),
        &key,
        Some(json!({"data": "late"})),
    )
    .await
    .assert_problem(422, "validation_failed");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_terminal_keeps_the_sandbox_from_auto_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "watcher").await;
    app.call(
        "PATCH",
        &format!("/api/v1/sandboxes/{id}"),
        &key,
        Some(json!({"auto_stop_minutes": 1})),
    )
    .await;
    let path = format!("/api/v1/sandboxes/{id}/terminals");
    let tid = app.call("POST", &path, &key, Some(json!({}))).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut attached = Term::new(
        connect(address, &format!("{path}/{tid}/ws?token={key}"), &[])
            .await
            .unwrap(),
    );
    attached.send(json!({"type": "ping"})).await;
    app.clock.advance(5 * 60_000);
    corral_service::sandbox::sweep(&app.state).await.unwrap();
    let detail = format!("/api/v1/sandboxes/{id}");
    assert_eq!(
        app.call("GET", &detail, &key, None).await.json()["state"],
        "running"
    );
    // Once nobody is attached, idleness counts again.
    drop(attached);
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.clock.advance(5 * 60_000);
    corral_service::sandbox::sweep(&app.state).await.unwrap();
    assert_eq!(
        app.call("GET", &detail, &key, None).await.json()["state"],
        "stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_that_exits_ends_its_clients_and_shows_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "leaver").await;
    let path = format!("/api/v1/sandboxes/{id}/terminals");
    let tid = app
        .call("POST", &path, &key, Some(json!({"command": ["/bin/sh"]})))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = format!("{path}/{tid}/ws?token={key}");
    let mut first = Term::new(connect(address, &ws, &[]).await.unwrap());
    first.type_text("echo one-$((0+1))\n").await;
    first.until("one-1").await;
    first.socket.close(None).await.unwrap();
    drop(first);
    let mut second = Term::new(connect(address, &ws, &[]).await.unwrap());
    second.type_text("exit 3\n").await;
    assert_eq!(
        second.closed().await,
        (1000, "the terminal ended".to_owned())
    );
    // Its status came just before the close.
    assert_eq!(
        second.texts.last().map(String::as_str),
        Some(r#"{"type":"exit","exit_code":3,"signal":null}"#),
        "{:?}",
        second.texts
    );
    let listed = app.call("GET", &path, &key, None).await.json();
    assert_eq!(listed[0]["running"], false, "{listed}");
    assert_eq!(listed[0]["exit_code"], 3, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_ended_before_anyone_attached_still_shows_its_output_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(corral_store::Backend::Sqlite, dir.path()).await;
    let address = app.serve().await;
    let (key, id) = sandbox_of(&app, "quick").await;
    let path = format!("/api/v1/sandboxes/{id}/terminals");
    let tid = app
        .call(
            "POST",
            &path,
            &key,
            Some(json!({"command": ["sh", "-c", "echo hi-$((40+2)); exit 3"]})),
        )
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Wait until it has ended (as `corral shell -- CMD` may find it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = app.call("GET", &path, &key, None).await.json();
        if listed[0]["running"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ws = format!("{path}/{tid}/ws?token={key}");
    let mut late = Term::new(connect(address, &ws, &[]).await.unwrap());
    assert_eq!(late.closed().await, (1000, "the terminal ended".to_owned()));
    let seen = String::from_utf8_lossy(&late.seen).into_owned();
    assert!(seen.contains("hi-42"), "{seen:?}");
    assert_eq!(
        late.texts,
        vec![r#"{"type":"exit","exit_code":3,"signal":null}"#.to_owned()]
    );
}
