//! The calls of the routes inside a sandbox (commands, files, keep-alive) and the checks the
//! black-box tests share: one home for what every test file would otherwise write again.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Server, StatusCode};

/// A fresh chat id.
pub fn chat() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `body` is an API error with `code` whose message mentions `message_part`.
pub fn assert_error(body: &Value, code: &str, message_part: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "`{message_part}` not in the message of {body}");
}

impl Server {
    /// `PUT /v1/chats/{chat_id}/sandbox`, which must create the sandbox (201); its answer.
    pub async fn created(&self, chat_id: &str) -> Value {
        let (status, body) = self.put_sandbox(chat_id).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// A fresh chat with a sandbox just created for it; its chat id.
    pub async fn new_sandbox(&self) -> String {
        let chat_id = chat();
        self.created(&chat_id).await;
        chat_id
    }

    /// `POST /v1/chats/{chat_id}/sandbox/exec` with a JSON body.
    pub async fn exec(&self, chat_id: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .request(Method::POST, &format!("/v1/chats/{chat_id}/sandbox/exec"))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    /// Runs `script` with `sh -c` and expects it to run (200); returns the answer.
    pub async fn shell(&self, chat_id: &str, script: &str) -> Value {
        let (status, body) = self.exec(chat_id, json!({"command": ["sh", "-c", script]})).await;
        assert_eq!(status, StatusCode::OK, "{script}: {body}");
        body
    }

    /// Runs `script` with `sh -c`, expects it to run and exit 0, and returns its stdout.
    pub async fn shell_stdout(&self, chat_id: &str, script: &str) -> String {
        let body = self.shell(chat_id, script).await;
        assert_eq!(body["exit_code"], 0, "{script}: {body}");
        body["stdout"].as_str().expect("an exec answer has a stdout").to_owned()
    }

    /// `PUT /v1/chats/{chat_id}/sandbox/files/{path}` with `bytes`.
    pub async fn upload(&self, chat_id: &str, path: &str, bytes: &[u8]) -> (StatusCode, Value) {
        let request = self
            .request(Method::PUT, &format!("/v1/chats/{chat_id}/sandbox/files/{path}"))
            .body(bytes.to_vec());
        self.send(request).await
    }

    /// Uploads `bytes` to `path` and expects the upload to succeed; its answer.
    pub async fn uploaded(&self, chat_id: &str, path: &str, bytes: &[u8]) -> Value {
        let (status, body) = self.upload(chat_id, path, bytes).await;
        assert!(status.is_success(), "upload of {path}: {status} {body}");
        body
    }

    /// `GET /v1/chats/{chat_id}/sandbox/files/{path}`: status, content type and bytes.
    pub async fn download(&self, chat_id: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
        let response = self
            .request(Method::GET, &format!("/v1/chats/{chat_id}/sandbox/files/{path}"))
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        (status, content_type, response.bytes().await.expect("a body").to_vec())
    }

    /// A download that is answered with an error: its status and JSON body.
    pub async fn download_error(&self, chat_id: &str, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.download(chat_id, path).await;
        let text = String::from_utf8_lossy(&body);
        let body = serde_json::from_slice(&body).unwrap_or_else(|error| {
            panic!("download of {path}: {status}, not JSON ({error}): {text}")
        });
        (status, body)
    }

    /// `POST /v1/chats/{chat_id}/sandbox/keepalive` with a JSON body.
    pub async fn keep_alive(&self, chat_id: &str, body: &str) -> (StatusCode, Value) {
        let request = self
            .request(Method::POST, &format!("/v1/chats/{chat_id}/sandbox/keepalive"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }
}
