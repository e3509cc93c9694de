//! How the API reads a request, as it documents it: the route a path matches, chat ids in any
//! UUID spelling, percent-encoding, queries, the bearer token and the body of a PUT or a
//! keep-alive. The oracle (`oracle.rs`) builds its predictions on these rules.

use serde_json::Value;
use uuid::Uuid;

use super::generate::{
    ARCHIVE_ROUTE, BODY_LIMIT, EXEC_ROUTE, FILES_ROUTE, KEEPALIVE_ROUTE, PROCESS_LOGS_ROUTE,
    PROCESS_ROUTE, PROCESS_STDIN_ROUTE, PROCESSES_ROUTE, ROUTES, SANDBOX_ROUTE, TERMINAL_ROUTE,
    WORKSPACE_ROUTE,
};
use super::inside::Refusal;
use super::oracle::Expected;
use super::{MAX_TTL_SECONDS, TOKEN};

/// The route a path matches (before the method is looked at), with its chat id segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Sandbox(&'a str),
    Exec(&'a str),
    KeepAlive(&'a str),
    /// The chat id, and what follows `/files`: `None` for nothing, `Some("")` for a lone `/`.
    Files(&'a str, Option<&'a str>),
    /// `/v1/chats/{chat_id}/workspace`.
    Workspace(&'a str),
    /// `/v1/chats/{chat_id}/workspace/archive`.
    Archive(&'a str),
    Processes(&'a str),
    /// The chat id, the process id segment, and what follows it: `""`, `"logs"` or `"stdin"`.
    Process(&'a str, &'a str, &'a str),
    Terminal(&'a str),
    Fixed(&'static str),
    Unknown,
}

pub(crate) fn route(path: &str) -> Route<'_> {
    if let Some(rest) = path.strip_prefix("/v1/chats/") {
        // A chat id segment may be empty: the route matches, and it is no UUID.
        let (chat, tail) = rest.split_once('/').unwrap_or((rest, ""));
        return match tail {
            "sandbox" => Route::Sandbox(chat),
            "sandbox/exec" => Route::Exec(chat),
            "sandbox/keepalive" => Route::KeepAlive(chat),
            "sandbox/files" => Route::Files(chat, None),
            "workspace" => Route::Workspace(chat),
            "workspace/archive" => Route::Archive(chat),
            "sandbox/processes" => Route::Processes(chat),
            "sandbox/terminal" => Route::Terminal(chat),
            _ => {
                match (tail.strip_prefix("sandbox/files/"), tail.strip_prefix("sandbox/processes/"))
                {
                    (Some(file), _) => Route::Files(chat, Some(file)),
                    (None, Some(process)) => {
                        let (id, part) = process.split_once('/').unwrap_or((process, ""));
                        let known = matches!(part, "" | "logs" | "stdin") && !id.is_empty();
                        if known && !(part.is_empty() && process.ends_with('/')) {
                            Route::Process(chat, id, part)
                        } else {
                            Route::Unknown
                        }
                    }
                    (None, None) => Route::Unknown,
                }
            }
        };
    }
    match ROUTES.iter().find(|known| **known == path) {
        Some(known) => Route::Fixed(known),
        None => Route::Unknown,
    }
}

/// The route template a path matches, as docs/openapi.yaml names it.
pub(crate) fn route_of(path: &str) -> &'static str {
    match route(path) {
        Route::Sandbox(_) => SANDBOX_ROUTE,
        Route::Exec(_) => EXEC_ROUTE,
        Route::KeepAlive(_) => KEEPALIVE_ROUTE,
        Route::Files(..) => FILES_ROUTE,
        Route::Workspace(_) => WORKSPACE_ROUTE,
        Route::Archive(_) => ARCHIVE_ROUTE,
        Route::Processes(_) => PROCESSES_ROUTE,
        Route::Process(_, _, "logs") => PROCESS_LOGS_ROUTE,
        Route::Process(_, _, "stdin") => PROCESS_STDIN_ROUTE,
        Route::Process(..) => PROCESS_ROUTE,
        Route::Terminal(_) => TERMINAL_ROUTE,
        Route::Fixed(known) => known,
        Route::Unknown => "(no such route)",
    }
}

/// `percent_decode` as servers do it: `%` with two hex digits is a byte, any other `%` is kept.
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The pairs of an `application/x-www-form-urlencoded` query, as servers read them.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode =
        |text: &str| String::from_utf8_lossy(&percent_decode(&text.replace('+', " "))).into_owned();
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Whether the `Authorization` header carries the token: `Bearer` in any case, then the token
/// with surrounding whitespace ignored.
pub(crate) fn authorized(header: Option<&[u8]>) -> bool {
    let Some(value) = header else {
        return false;
    };
    // HTTP drops the whitespace around a header value.
    let value = value.trim_ascii();
    let Some((scheme, token)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && token.trim_ascii() == TOKEN.as_bytes()
}

/// The chat id a path segment stands for, if it is a UUID in any spelling, exactly: surrounding
/// whitespace makes it no chat id.
pub(crate) fn chat_of(segment: &str) -> Option<Uuid> {
    let decoded = String::from_utf8(percent_decode(segment)).ok()?;
    Uuid::parse_str(&decoded).ok()
}

/// The body of a PUT or a keep-alive, judged as the API documents: the TTL it asks for
/// (`None`: the default), or how it is refused.
pub(crate) fn judge_put_body(body: Option<&[u8]>) -> Result<Option<u64>, Refusal> {
    let Some(body) = body else {
        return Ok(None);
    };
    if body.len() > BODY_LIMIT {
        return Err((413, "body_too_large"));
    }
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    let invalid = (400, "invalid_body");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid)?;
    let Some(object) = value.as_object() else {
        return Err(invalid);
    };
    if object.keys().any(|key| key != "ttl_seconds") {
        return Err(invalid);
    }
    match object.get("ttl_seconds") {
        None | Some(Value::Null) => Ok(None),
        Some(ttl) => match whole_number(ttl) {
            Some(seconds) if (1..=MAX_TTL_SECONDS).contains(&seconds) => Ok(Some(seconds)),
            _ => Err((400, "invalid_ttl")),
        },
    }
}

/// A JSON number that JSON Schema counts as an integer: `60`, and also `60.0` or `6e1`, as long as
/// a double holds it exactly.
pub(crate) fn whole_number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let number = value.as_f64()?;
        let exact = number.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&number);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        exact.then_some(number as u64)
    })
}

/// The query of a route whose parameters are `names` (each at most once): the values given, in
/// the order of `names`, or the refusal `invalid_query`.
pub(crate) fn named_query<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> Result<[Option<String>; N], Refusal> {
    let mut values = [const { None }; N];
    for (key, value) in query.map(query_pairs).unwrap_or_default() {
        let slot = names.iter().position(|name| *name == key).ok_or((400, "invalid_query"))?;
        if values[slot].replace(value).is_some() {
            return Err((400, "invalid_query"));
        }
    }
    Ok(values)
}

pub(crate) fn judge_list_query(query: Option<&str>) -> Expected {
    let [status, limit] = match named_query(query, ["status", "limit"]) {
        Ok(values) => values,
        Err((status, code)) => return Expected::error(status, code),
    };
    if let Some(status) = status {
        let known = ["running", "stopped", "crashed"];
        if !known.iter().any(|name| name.eq_ignore_ascii_case(status.trim())) {
            return Expected::error(400, "invalid_status");
        }
    }
    if let Some(limit) = limit {
        let fine = limit.trim().parse::<usize>().is_ok_and(|n| (1..=10_000).contains(&n));
        if !fine {
            return Expected::error(400, "invalid_limit");
        }
    }
    Expected::ok(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_reads_ids_queries_and_tokens_as_the_api_documents() {
        let chat = "0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b";
        let uuid = Uuid::parse_str(chat).unwrap();
        for spelling in [
            chat.to_owned(),
            chat.to_uppercase(),
            chat.replace('-', ""),
            format!("{{{chat}}}"),
            format!("urn:uuid:{chat}"),
            chat.replace('-', "%2D"),
        ] {
            assert_eq!(chat_of(&spelling), Some(uuid), "{spelling}");
        }
        let padded = [format!("%20{chat}%09"), format!("{chat}%0A"), format!("%C2%A0{chat}")];
        for bad in ["..", "%2e%2e", "%FF", "%", "abc", &chat[..35], &format!("{chat}0")]
            .into_iter()
            .chain(padded.iter().map(String::as_str))
        {
            assert_eq!(chat_of(bad), None, "{bad}");
        }
        assert_eq!(route("/v1/chats/x/sandbox"), Route::Sandbox("x"));
        assert_eq!(route("/v1/chats//sandbox/exec"), Route::Exec(""));
        assert_eq!(route("/v1/chats/x/sandbox/keepalive"), Route::KeepAlive("x"));
        assert_eq!(route("/v1/chats/x/workspace"), Route::Workspace("x"));
        assert_eq!(route("/v1/chats/x/workspace/archive"), Route::Archive("x"));
        assert_eq!(route("/v1/chats/x/sandbox/processes"), Route::Processes("x"));
        assert_eq!(route("/v1/chats/x/sandbox/processes/p"), Route::Process("x", "p", ""));
        assert_eq!(route("/v1/chats/x/sandbox/processes/p/logs"), Route::Process("x", "p", "logs"));
        assert_eq!(route("/v1/chats/x/sandbox/processes/p/"), Route::Unknown);
        assert_eq!(route("/v1/chats/x/sandbox/processes/p/kill"), Route::Unknown);
        assert_eq!(route("/v1/chats/x/sandbox/terminal"), Route::Terminal("x"));
        assert_eq!(
            named_query(Some("cols=1&rows=2"), ["cols", "rows"]),
            Ok([Some("1".into()), Some("2".into())])
        );
        assert_eq!(
            named_query(Some("cols=1&cols=2"), ["cols", "rows"]),
            Err((400, "invalid_query"))
        );
        assert_eq!(route("/v1/chats/x/sandbox/files"), Route::Files("x", None));
        assert_eq!(route("/v1/chats/x/sandbox/files/"), Route::Files("x", Some("")));
        assert_eq!(route("/v1/chats/x/sandbox/files//a/"), Route::Files("x", Some("/a/")));
        for path in
            ["/v1/chats/x/sandbox/files%2Fa", "/v1/chats/x/sandbox/", "/v1/chats/", "/v1/chats"]
        {
            assert_eq!(route(path), Route::Unknown, "{path}");
        }
        assert_eq!(percent_decode("a%2"), b"a%2");
        assert_eq!(percent_decode("%41%zz%4"), b"A%zz%4");
        assert_eq!(
            query_pairs("status=Running&&limit=+5&x"),
            vec![
                ("status".into(), "Running".into()),
                ("limit".into(), " 5".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(judge_list_query(Some("status=RUNNING&limit=%2B5")).status, 200);
        assert_eq!(judge_list_query(Some("status=a&status=b")).code, Some("invalid_query"));
        assert_eq!(judge_list_query(Some("limit=0")).code, Some("invalid_limit"));
        assert!(authorized(Some(format!("  bEaReR   {TOKEN} ").as_bytes())));
        assert!(!authorized(Some(format!("Bearer\t{TOKEN}").as_bytes())));
        assert!(!authorized(Some(b"Bearer")));
        assert_eq!(
            judge_put_body(Some(br#"{"ttl_seconds": 60, "ttl_seconds": 0}"#)).unwrap_err(),
            (400, "invalid_ttl")
        );
        assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 1e3}"#)), Ok(Some(1000)));
        assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 60.0}"#)), Ok(Some(60)));
        assert_eq!(
            judge_put_body(Some(br#"{"ttl_seconds": 1e4}"#)).unwrap_err(),
            (400, "invalid_ttl")
        );
        assert_eq!(judge_put_body(Some(br#"{"ttl_seconds": 60}"#)), Ok(Some(60)));
        assert_eq!(judge_put_body(Some(b"{}")), Ok(None));
        assert!(judge_put_body(Some(&[b' '; BODY_LIMIT])).is_ok());
        assert_eq!(judge_put_body(Some(&[b' '; BODY_LIMIT + 1])).unwrap_err().0, 413);
    }
}
