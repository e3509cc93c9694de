//! A reader of Server-Sent Events (`text/event-stream`) over a real HTTP response, for the
//! streamed routes: a streamed exec and a followed process log.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::{Server, StatusCode};

/// One event: its name (`event:`) and its data (`data:`) read as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

/// The events of a response, read as they arrive.
#[derive(Debug)]
pub struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    /// Reads `response` as an event stream; it must say so in its `content-type`.
    pub fn new(response: reqwest::Response) -> Self {
        let kind = response.headers().get("content-type").and_then(|value| value.to_str().ok());
        assert!(
            kind.is_some_and(|kind| kind.starts_with("text/event-stream")),
            "not an event stream: {kind:?}"
        );
        Self { response, buffer: Vec::new() }
    }

    /// The next event (comments skipped), or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("events are UTF-8");
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|_| panic!("event {name} has data that is not JSON: {data}"));
                return Some(Event { name, data });
            }
            match self.response.chunk().await.expect("the event stream can be read") {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }

    /// The next event within `within`; fails the test if none comes.
    pub async fn next_within(&mut self, within: Duration) -> Event {
        tokio::time::timeout(within, self.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
            .expect("the stream ended early")
    }

    /// Every event until the stream ends.
    pub async fn rest(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The bytes a list of output events carried for `stream` (`stdout` or `stderr`), text and
/// base64 alike.
pub fn output_of(events: &[Event], stream: &str) -> Vec<u8> {
    events
        .iter()
        .filter(|event| event.name == stream)
        .flat_map(|event| match (&event.data["text"], &event.data["base64"]) {
            (Value::String(text), _) => text.as_bytes().to_vec(),
            (_, Value::String(encoded)) => decode_base64(encoded),
            _ => panic!("output event without text or base64: {event:?}"),
        })
        .collect()
}

/// Standard base64 with padding.
pub fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> u32 {
        match byte {
            b'A'..=b'Z' => u32::from(byte - b'A'),
            b'a'..=b'z' => u32::from(byte - b'a') + 26,
            b'0'..=b'9' => u32::from(byte - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("`{text}` is not base64"),
        }
    };
    let mut bytes = Vec::new();
    for group in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = group.iter().copied().filter(|&byte| byte != b'=').collect();
        let bits = digits.iter().fold(0u32, |bits, &digit| (bits << 6) | value(digit))
            << (6 * (4 - digits.len()));
        let whole = bits.to_be_bytes();
        bytes.extend_from_slice(&whole[1..digits.len()]);
    }
    bytes
}

impl Server {
    /// `POST /v1/chats/{chat_id}/sandbox/exec` with `Accept: text/event-stream`: the events, or
    /// the status and JSON body of a refusal.
    pub async fn exec_events(
        &self,
        chat_id: &str,
        body: Value,
    ) -> Result<Events, (StatusCode, Value)> {
        let request = self
            .request(Method::POST, &format!("/v1/chats/{chat_id}/sandbox/exec"))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string());
        self.events(request).await
    }

    /// Sends `request` asking for events: the events of a 200, else the status and JSON body.
    pub async fn events(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Events, (StatusCode, Value)> {
        let response = request.send().await.expect("the server answers");
        if response.status() != StatusCode::OK {
            let status = response.status();
            let text = response.text().await.expect("a body");
            let body = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("refusal {status} is not JSON: {text}"));
            return Err((status, body));
        }
        Ok(Events::new(response))
    }
}

impl Server {
    /// `POST /v1/chats/{chat_id}/sandbox/processes` with an exec body, which must start it
    /// (201); the process.
    pub async fn start_process(&self, chat_id: &str, body: Value) -> Value {
        let (status, process) = self.post_process(chat_id, body).await;
        assert_eq!(status, StatusCode::CREATED, "{process}");
        process
    }

    /// `POST /v1/chats/{chat_id}/sandbox/processes` with an exec body: the status and answer.
    pub async fn post_process(&self, chat_id: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/chats/{chat_id}/sandbox/processes");
        self.send(self.request(Method::POST, &path).body(body.to_string())).await
    }

    /// `.../processes/{process_id}{rest}` of the chat's sandbox.
    pub fn process_path(chat_id: &str, process_id: &str, rest: &str) -> String {
        format!("/v1/chats/{chat_id}/sandbox/processes/{process_id}{rest}")
    }

    /// `GET .../processes/{process_id}/logs` from the offsets: the status and the answer.
    pub async fn process_logs(
        &self,
        chat_id: &str,
        process_id: &str,
        offsets: (u64, u64),
    ) -> (StatusCode, Value) {
        let query = format!("/logs?stdout_offset={}&stderr_offset={}", offsets.0, offsets.1);
        self.get(&Self::process_path(chat_id, process_id, &query)).await
    }

    /// The process's logs followed as events from the offsets.
    pub async fn follow_process(
        &self,
        chat_id: &str,
        process_id: &str,
        offsets: (u64, u64),
    ) -> Result<Events, (StatusCode, Value)> {
        let query = format!("/logs?stdout_offset={}&stderr_offset={}", offsets.0, offsets.1);
        let path = Self::process_path(chat_id, process_id, &query);
        self.events(self.request(Method::GET, &path).header("accept", "text/event-stream")).await
    }

    /// Waits (up to `within`) until the process is no longer running; its last state.
    pub async fn ended_process(&self, chat_id: &str, process_id: &str, within: Duration) -> Value {
        let path = Self::process_path(chat_id, process_id, "");
        let state = || async {
            let (status, process) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{process}");
            process
        };
        let ended = crate::eventually(within, || async {
            Some(state().await).filter(|process| process["status"] != "running")
        })
        .await;
        match ended {
            Some(process) => process,
            None => state().await,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(super::decode_base64("rP8="), [0xac, 0xff]);
        assert_eq!(super::decode_base64("4oKs"), "€".as_bytes());
        assert_eq!(super::decode_base64("/w=="), [0xff]);
    }
}
