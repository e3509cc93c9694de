//! What the server and its sandboxes hold, read through the API: the state compared before and
//! after the run, and the workspaces checked against the model once it is over.

use std::collections::BTreeMap;

use sandkeeper_tests::{Server, StatusCode, TestEnv};
use serde_json::Value;
use uuid::Uuid;

use super::oracle::Model;

/// Everything the state comparison looks at: each session as listed, and the containers.
pub(crate) async fn state(
    server: &Server,
    env: &TestEnv,
) -> (BTreeMap<String, Value>, Vec<String>) {
    let sessions = server
        .sandboxes()
        .await
        .into_iter()
        .map(|session| (session["session_id"].as_str().unwrap_or_default().to_owned(), session))
        .collect();
    let mut containers = env.containers(true);
    containers.sort();
    (sessions, containers)
}

/// `find <dirs> -mindepth 1` in the chat's sandbox, sorted.
pub(crate) async fn listing(server: &Server, chat: Uuid, dirs: &str) -> Vec<String> {
    let printed = server.shell_stdout(&chat.to_string(), &format!("find {dirs} -mindepth 1")).await;
    let mut entries: Vec<String> = printed.lines().map(str::to_owned).collect();
    entries.sort();
    entries
}

/// A path with every byte but the unreserved ones percent-encoded, `/` kept.
fn url_path(path: &str) -> String {
    path.split('/')
        .map(|name| {
            name.bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(byte).to_string()
                    }
                    _ => format!("%{byte:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// After the run each sandbox holds exactly what the accepted uploads put there, byte for
/// byte, and nothing else: no refused upload left a file, a directory or a temporary file,
/// in `/workspace` or (through a link) in `/tmp`.
pub(crate) async fn check_workspaces(
    server: &Server,
    model: &Model,
    tmp: &[String],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (chat, live) in &model.chats {
        let mut expected = live.workspace.listing();
        expected.extend(tmp.iter().cloned());
        expected.sort();
        let found = listing(server, *chat, "/workspace /tmp").await;
        if found != expected {
            failures.push(format!(
                "chat {chat}: the sandbox holds {found:?}, where {expected:?} was expected"
            ));
        }
        for (path, bytes) in live.workspace.files() {
            let (status, _, body) = server.download(&chat.to_string(), &url_path(path)).await;
            if status != StatusCode::OK || body != *bytes {
                failures.push(format!(
                    "chat {chat}: `{path}` answers {status} with {} bytes, not the {} uploaded",
                    body.len(),
                    bytes.len()
                ));
            }
        }
    }
    failures
}
