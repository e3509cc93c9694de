//! Request bodies: read within the size limit, parsed strictly, turned into domain values.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;

/// The largest request body accepted; a larger one is answered with 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body of `PUT /v1/chats/{chat_id}/sandbox`. Every field is optional; no body at all is
/// the same as `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSandboxBody {
    /// Kept as raw JSON so that a bad value can be named as it was sent.
    #[serde(default)]
    ttl_seconds: Option<serde_json::Value>,
}

/// What a `PUT` asks for, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CreateSandboxRequest {
    /// The TTL of a sandbox this request creates; `None` means the configured `--ttl`.
    pub(crate) ttl: Option<Duration>,
}

/// The body of `PUT .../sandbox` (and of the keep-alive), read as [`create_sandbox_request`]
/// does, with the server's `--max-ttl`.
impl FromRequest<AppState> for CreateSandboxRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        create_sandbox_request(Bytes::from_request(request, state).await, state.max_ttl)
    }
}

/// A body as read, or the answer to one that could not be: 413 past `limit`, else 400.
pub(crate) fn read(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("the request body could not be read: {}", rejection.body_text()),
            )
        }
    })
}

/// Reads the body of a `PUT`: empty is fine, malformed JSON or unknown fields are a 400, a
/// value outside `1..=max_ttl` seconds a 400 naming it, and a body over the limit a 413.
pub(crate) fn create_sandbox_request(
    body: Result<Bytes, BytesRejection>,
    max_ttl: Duration,
) -> Result<CreateSandboxRequest, ApiError> {
    let body = read(body, MAX_BODY_BYTES)?;
    if body.trim_ascii().is_empty() {
        return Ok(CreateSandboxRequest::default());
    }
    let invalid = |why: String| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "the request body is not valid: {why}; send no body or a JSON object like {{\"ttl_seconds\": 600}}"
            ),
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|error| invalid(error.to_string()))?;
    if !value.is_object() {
        return Err(invalid(format!("`{}` is not a JSON object", shorten(&value.to_string()))));
    }
    let parsed: CreateSandboxBody =
        serde_json::from_value(value).map_err(|error| invalid(error.to_string()))?;
    let ttl = match parsed.ttl_seconds {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => Some(ttl_from_json(&value, max_ttl)?),
    };
    Ok(CreateSandboxRequest { ttl })
}

/// A value as sent, cut short enough for an error message.
pub(super) fn shorten(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A JSON number that is a whole number, also when written with a fraction of zero (`30.0`):
/// JSON Schema counts it as an integer, and so do the clients it generates.
pub(super) fn whole_number(value: &serde_json::Value) -> Option<u64> {
    /// Above 2^53 a double no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    value.as_u64().or_else(|| {
        let number = value.as_f64()?;
        // The range check makes the cast exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (number.fract() == 0.0 && (0.0..=EXACT).contains(&number)).then_some(number as u64)
    })
}

fn ttl_from_json(value: &serde_json::Value, max_ttl: Duration) -> Result<Duration, ApiError> {
    let max_seconds = max_ttl.as_secs().max(1);
    match whole_number(value) {
        Some(seconds) if (1..=max_seconds).contains(&seconds) => Ok(Duration::from_secs(seconds)),
        _ => Err(ApiError::bad_request(
            "invalid_ttl",
            format!(
                "ttl_seconds `{}` is not a whole number of seconds from 1 to {max_seconds} (the server's --max-ttl)",
                shorten(&value.to_string())
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn parse(body: &str) -> Result<CreateSandboxRequest, ApiError> {
        create_sandbox_request(Ok(Bytes::from(body.to_owned())), HOUR)
    }

    #[test]
    fn an_empty_body_asks_for_the_default_ttl() {
        assert_eq!(parse("").unwrap().ttl, None);
        assert_eq!(parse(" \n").unwrap().ttl, None);
        assert_eq!(parse("{}").unwrap().ttl, None);
        assert_eq!(parse(r#"{"ttl_seconds": null}"#).unwrap().ttl, None);
    }

    #[test]
    fn a_ttl_within_bounds_is_taken() {
        assert_eq!(parse(r#"{"ttl_seconds": 1}"#).unwrap().ttl, Some(Duration::from_secs(1)));
        assert_eq!(parse(r#"{"ttl_seconds": 3600}"#).unwrap().ttl, Some(HOUR));
        // JSON Schema's integers include numbers written with a zero fraction.
        assert_eq!(parse(r#"{"ttl_seconds": 60.0}"#).unwrap().ttl, Some(Duration::from_secs(60)));
        assert_eq!(parse(r#"{"ttl_seconds": 3.6e3}"#).unwrap().ttl, Some(HOUR));
    }

    #[test]
    fn a_ttl_out_of_bounds_is_named() {
        for (body, shown) in [
            (r#"{"ttl_seconds": 0}"#, "`0`"),
            (r#"{"ttl_seconds": 3601}"#, "`3601`"),
            (r#"{"ttl_seconds": -5}"#, "`-5`"),
            (r#"{"ttl_seconds": 1.5}"#, "`1.5`"),
            (r#"{"ttl_seconds": 3601.0}"#, "`3601.0`"),
            (r#"{"ttl_seconds": 1e300}"#, "`1e+300`"),
            (r#"{"ttl_seconds": "60"}"#, "`\"60\"`"),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.code(), "invalid_ttl", "{body}");
            assert!(error.message().starts_with(&format!("ttl_seconds {shown}")), "{error:?}");
            assert!(error.message().contains("from 1 to 3600"), "{error:?}");
        }
    }

    #[test]
    fn malformed_json_and_unknown_fields_are_refused() {
        let error = parse("{not json").unwrap_err();
        assert_eq!((error.status(), error.code()), (StatusCode::BAD_REQUEST, "invalid_body"));
        let error = parse(r#"{"ttl": 60}"#).unwrap_err();
        assert_eq!(error.code(), "invalid_body");
        assert!(error.message().contains("unknown field `ttl`"), "{error:?}");
        let error = parse("[]").unwrap_err();
        assert_eq!(error.code(), "invalid_body");
        assert!(error.message().contains("`[]` is not a JSON object"), "{error:?}");
        let long = format!("\"{}\"", "y".repeat(500));
        let error = parse(&long).unwrap_err();
        assert!(error.message().len() < 300, "a long value is cut short: {error:?}");
    }
}
