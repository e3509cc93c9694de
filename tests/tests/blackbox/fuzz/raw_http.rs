//! A bare HTTP/1.1 client over TCP: it sends the bytes it is given, as they are (odd methods,
//! request targets no URL library would produce, chunked bodies), and reads one response.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What came back for one request.
#[derive(Debug)]
pub(crate) enum Answer {
    Response(Response),
    /// The server closed the connection without a (complete) response; `status` is the one
    /// of its head, if that arrived.
    Closed {
        received: usize,
        status: Option<u16>,
    },
}

/// Sends `request` on a fresh connection and reads the response. The request is written while
/// the response is read, so that a server that answers before reading the whole body (401, 413)
/// is heard before it closes the connection.
pub(crate) async fn exchange(
    address: SocketAddr,
    request: Vec<u8>,
    head: bool,
    timeout: Duration,
) -> Result<Answer, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("cannot connect to {address}: {error}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        // The server may close early on purpose; what it answered is what counts.
        let _ = writer.write_all(&request).await;
        let _ = writer.flush().await;
        writer
    });
    let reading = async {
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(response) = parse(&received, head)? {
                return Ok(Answer::Response(response));
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return Ok(match parse_at_eof(&received, head)? {
                        Some(response) => Answer::Response(response),
                        None => Answer::Closed {
                            received: received.len(),
                            status: parse_head(&received).ok().flatten().map(|head| head.status),
                        },
                    });
                }
                Ok(read) => received.extend_from_slice(&chunk[..read]),
            }
        }
    };
    let answer = tokio::time::timeout(timeout, reading)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?;
    // Keep the write half open until the answer is in: dropping it would half-close the
    // connection, which a server may take as the end of the request.
    if let Ok(writer) = tokio::time::timeout(Duration::from_secs(1), writing).await {
        drop(writer);
    }
    answer
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    body_start: usize,
}

fn parse_head(received: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&received[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Some(Head { status, headers, body_start: end + 4 }))
}

/// A complete response in `received`, if there is one yet.
fn parse(received: &[u8], head_request: bool) -> Result<Option<Response>, String> {
    let Some(head) = parse_head(received)? else {
        return Ok(None);
    };
    if (100..200).contains(&head.status) {
        // An interim response; the final one follows.
        return parse(&received[head.body_start..], head_request);
    }
    let rest = &received[head.body_start..];
    let find = |name: &str| {
        head.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    };
    let body = if head_request || head.status == 204 || head.status == 304 {
        Some(Vec::new())
    } else if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(length) = find("content-length") {
        let length: usize = length.parse().map_err(|_| format!("bad content-length {length:?}"))?;
        (rest.len() >= length).then(|| rest[..length].to_vec())
    } else {
        // Delimited by the end of the connection.
        None
    };
    Ok(body.map(|body| Response { status: head.status, headers: head.headers, body }))
}

fn parse_at_eof(received: &[u8], head_request: bool) -> Result<Option<Response>, String> {
    if let Some(response) = parse(received, head_request)? {
        return Ok(Some(response));
    }
    let Some(head) = parse_head(received)? else {
        return Ok(None);
    };
    let framed = head.headers.iter().any(|(key, _)| {
        key.eq_ignore_ascii_case("content-length") || key.eq_ignore_ascii_case("transfer-encoding")
    });
    if framed {
        // The body was cut short.
        return Ok(None);
    }
    let body = received[head.body_start..].to_vec();
    Ok(Some(Response { status: head.status, headers: head.headers, body }))
}

/// The body of a chunked message, if all of it is there.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `body` in the chunked transfer coding, cut into chunks of at most `chunk` bytes.
pub(crate) fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(body.len() + 64);
    for piece in body.chunks(chunk.max(1)) {
        encoded.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        encoded.extend_from_slice(piece);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_framed_by_length_chunks_or_head() {
        let fixed = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        let response = parse(fixed, false).unwrap().unwrap();
        assert_eq!((response.status, response.body.as_slice()), (400, &b"{}"[..]));
        assert!(parse(&fixed[..fixed.len() - 1], false).unwrap().is_none());

        let body = chunked(b"hello world", 4);
        let mut message = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        message.extend_from_slice(&body);
        assert_eq!(parse(&message, false).unwrap().unwrap().body, b"hello world");

        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
        assert!(parse(head, true).unwrap().unwrap().body.is_empty());
    }
}
