//! Server-Sent Events of a command's output, as a streamed exec and a followed process log
//! send them: `stdout` and `stderr` events whose data is `{"text": "..."}` (split only at
//! UTF-8 character boundaries) or `{"base64": "..."}` (bytes that are not UTF-8), then one
//! last event that says how the command ended.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use futures::{Stream, StreamExt};
use sandkeeper_ports::{OutputChunk, OutputStream};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::ApiError;

/// How often an idle stream sends a comment: it keeps proxies from closing a quiet stream,
/// and finds a client that went away (its command is then killed) within this time.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Whether the client asks for Server-Sent Events (`Accept: text/event-stream`).
pub(crate) fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|kind| {
            kind.split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// A piece of output as an event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Binary(Vec<u8>),
}

impl Piece {
    fn data(&self) -> serde_json::Value {
        match self {
            Self::Text(text) => serde_json::json!({ "text": text }),
            Self::Binary(bytes) => {
                serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
            }
        }
    }
}

/// Cuts one stream's bytes into text at character boundaries: a character split across two
/// reads waits for its end; bytes that can never be UTF-8 come out as binary.
#[derive(Debug, Default)]
pub(crate) struct Utf8Splitter {
    pending: Vec<u8>,
}

impl Utf8Splitter {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut buffer = std::mem::take(&mut self.pending);
        buffer.extend_from_slice(bytes);
        let mut pieces = Vec::new();
        let mut rest = &buffer[..];
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    push(&mut pieces, Piece::Text(text.to_owned()));
                    break;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    if !valid.is_empty() {
                        // Checked by from_utf8 up to here.
                        let text = String::from_utf8_lossy(valid).into_owned();
                        push(&mut pieces, Piece::Text(text));
                    }
                    match error.error_len() {
                        // A character that the next read may complete.
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                        Some(len) => {
                            push(&mut pieces, Piece::Binary(after[..len].to_vec()));
                            rest = &after[len..];
                        }
                    }
                }
            }
        }
        pieces
    }

    /// At the end of the stream, a character that never completed is binary.
    pub(crate) fn finish(&mut self) -> Option<Piece> {
        let pending = std::mem::take(&mut self.pending);
        (!pending.is_empty()).then_some(Piece::Binary(pending))
    }
}

/// Adds `piece`, joined to the last one when both are binary.
fn push(pieces: &mut Vec<Piece>, piece: Piece) {
    if let (Some(Piece::Binary(last)), Piece::Binary(bytes)) = (pieces.last_mut(), &piece) {
        last.extend_from_slice(bytes);
        return;
    }
    pieces.push(piece);
}

/// The output events of one stream's bytes.
fn output_events(stream: OutputStream, pieces: Vec<Piece>) -> impl Iterator<Item = Event> {
    pieces.into_iter().map(move |piece| event(stream.as_str(), &piece.data()))
}

/// An event named `name` whose data is `data` as JSON.
pub(crate) fn event(name: &str, data: &impl Serialize) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    Event::default().event(name).data(data)
}

/// The `error` event: the API's error envelope, for a failure once the stream has begun.
pub(crate) fn error_event(error: &ApiError) -> Event {
    event("error", &error.envelope())
}

type Ending = Pin<Box<dyn Future<Output = Event> + Send>>;

/// Both streams' splitters.
#[derive(Default)]
struct Splitters {
    stdout: Utf8Splitter,
    stderr: Utf8Splitter,
}

impl Splitters {
    fn feed(&mut self, chunk: &OutputChunk) -> Vec<Event> {
        let splitter = match chunk.stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        output_events(chunk.stream, splitter.feed(&chunk.bytes)).collect()
    }

    fn finish(&mut self) -> Vec<Event> {
        let stdout = self.stdout.finish().map(|piece| (OutputStream::Stdout, piece));
        let stderr = self.stderr.finish().map(|piece| (OutputStream::Stderr, piece));
        stdout
            .into_iter()
            .chain(stderr)
            .flat_map(|(stream, piece)| output_events(stream, vec![piece]))
            .collect()
    }
}

/// The answer of a streamed command: an event for each piece of `output` as it arrives, then,
/// once every sender of `output` is gone, the event `ending` resolves to. Dropping the answer
/// (the client went away) drops `output`'s receiver, which tells the sender.
pub(crate) fn output_answer(
    output: UnboundedReceiver<OutputChunk>,
    ending: impl Future<Output = Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct State {
        output: Option<UnboundedReceiver<OutputChunk>>,
        ending: Option<Ending>,
        splitters: Splitters,
    }
    let state = State {
        output: Some(output),
        ending: Some(Box::pin(ending)),
        splitters: Splitters::default(),
    };
    let events = futures::stream::unfold(state, |mut state| async move {
        if let Some(output) = &mut state.output {
            match output.recv().await {
                Some(chunk) => {
                    let events = state.splitters.feed(&chunk);
                    return Some((events, state));
                }
                None => {
                    state.output = None;
                    let events = state.splitters.finish();
                    return Some((events, state));
                }
            }
        }
        let ending = state.ending.take()?.await;
        Some((vec![ending], state))
    });
    let events = events.flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Piece {
        Piece::Text(text.to_owned())
    }

    #[test]
    fn a_character_split_across_reads_waits_for_its_end() {
        let mut splitter = Utf8Splitter::default();
        let euro = "€".as_bytes();
        assert_eq!(splitter.feed(&[b'a', euro[0]]), [text("a")]);
        assert_eq!(splitter.feed(&euro[1..2]), []);
        assert_eq!(splitter.feed(&[euro[2], b'b']), [text("€b")]);
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_binary_and_the_text_around_them_stays_text() {
        let mut splitter = Utf8Splitter::default();
        assert_eq!(
            splitter.feed(b"ok\xff\xfeend\xe2"),
            [text("ok"), Piece::Binary(vec![0xff, 0xfe]), text("end")]
        );
        assert_eq!(splitter.finish(), Some(Piece::Binary(vec![0xe2])));
        assert_eq!(Piece::Binary(vec![0xff]).data(), serde_json::json!({"base64": "/w=="}));
        assert_eq!(text("a\"b").data(), serde_json::json!({"text": "a\"b"}));
    }

    #[test]
    fn event_streams_are_asked_for_with_accept() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().unwrap());
            wants_events(&headers)
        };
        assert!(with("text/event-stream"));
        assert!(with("application/json, Text/Event-Stream;q=0.9"));
        assert!(!with("application/json"));
        assert!(!with("*/*"));
        assert!(!wants_events(&HeaderMap::new()));
    }
}
