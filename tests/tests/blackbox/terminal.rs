//! The terminal through the real binary and the real Docker engine, driven by a real WebSocket
//! client (tokio-tungstenite): typing runs commands, a resize reaches the shell, the socket
//! closes when the shell exits, closing the socket kills the shell and what it started
//! (checked with `ps`), and a browser's way of authenticating (the `bearer.<token>`
//! subprotocol) works where no `Authorization` header can be set.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sandkeeper_tests::{Server, StatusCode, TestEnv, or_skip};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::exec::{assert_all_gone, processes_matching};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the chat's terminal, with the subprotocols `protocols` if given.
pub(crate) async fn connect(
    server: &Server,
    chat_id: &str,
    query: &str,
    protocols: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = server.url(&format!("/v1/chats/{chat_id}/sandbox/terminal{query}"));
    let mut request = url.replacen("http://", "ws://", 1).into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_str(protocols).unwrap());
    }
    tokio_tungstenite::connect_async(request).await.map(|(socket, _)| socket)
}

/// Reads the terminal until what it showed contains `needle`, answering its cursor position
/// queries as a terminal does; everything shown.
pub(crate) async fn read_until(socket: &mut Socket, needle: &str) -> String {
    let mut shown = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(message) = socket.next().await {
            match message.expect("the socket can be read") {
                Message::Binary(bytes) => {
                    // A shell's line editor (busybox's) asks where the cursor is; a terminal
                    // answers, or what is typed next is taken for the answer.
                    if bytes.windows(4).any(|window| window == b"\x1b[6n") {
                        let answer = Message::Binary(b"\x1b[1;1R".to_vec().into());
                        let _ = socket.send(answer).await;
                    }
                    shown.push_str(&String::from_utf8_lossy(&bytes));
                }
                Message::Close(_) => return false,
                _ => {}
            }
            if shown.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(found == Ok(true), "`{needle}` never shown; the terminal showed: {shown:?}");
    shown
}

pub(crate) async fn type_in(socket: &mut Socket, text: &str) {
    socket.send(Message::Binary(text.as_bytes().to_vec().into())).await.expect("typed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_runs_what_is_typed_resizes_and_closes_when_its_shell_exits() {
    let (_env, server, chat_id) = or_skip!(TestEnv::docker_sandbox().await);
    let mut socket = connect(&server, &chat_id, "?cols=100&rows=30", None).await.expect("upgraded");
    type_in(&mut socket, "echo \"sum=$((40 + 2))\"; stty size\n").await;
    let shown = read_until(&mut socket, "30 100").await;
    assert!(shown.contains("sum=42"), "{shown:?}");
    assert!(!shown.contains("0000000"), "the wrapper's header is not shown: {shown:?}");

    socket
        .send(Message::Text(r#"{"type": "resize", "cols": 132, "rows": 43}"#.into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    type_in(&mut socket, "stty size\n").await;
    read_until(&mut socket, "43 132").await;

    type_in(&mut socket, "exit\n").await;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(message) = socket.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|frame| frame.reason.to_string());
            }
        }
        None
    })
    .await
    .expect("the socket closes when the shell exits");
    assert_eq!(closed.as_deref(), Some("the shell exited"));

    // Refusals are HTTP answers.
    let refused = connect(&server, &chat_id, "?cols=0", None).await.unwrap_err();
    assert!(refused.to_string().contains("400"), "{refused}");
    let (status, body) = server.get(&format!("/v1/chats/{chat_id}/sandbox/terminal")).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_the_socket_kills_the_shell_and_a_browser_authenticates_by_subprotocol() {
    let env = or_skip!(TestEnv::for_docker());
    let token = "terminal-test-token-0123456789";
    let server = env.serve(&["--api-token", token]).await;
    let chat_id = server.new_sandbox().await;

    let refused = connect(&server, &chat_id, "", None).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let offered = format!("sandkeeper, bearer.{token}");
    let mut socket = connect(&server, &chat_id, "", Some(&offered)).await.expect("authenticated");
    type_in(&mut socket, "sleep 711 & (setsid sleep 712 &); echo started\n").await;
    read_until(&mut socket, "started").await;
    assert!(processes_matching(&server, &chat_id, "sleep 71").await.len() >= 2);

    socket.close(None).await.unwrap();
    drop(socket);
    assert_all_gone(&server, &chat_id, "sleep 71").await;
}
