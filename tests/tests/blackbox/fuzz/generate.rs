//! Generators of requests shaped like sandkeeper's API (docs/openapi.yaml): every route, with
//! right and wrong methods, chat ids in every UUID spelling and in many non-UUID ones, query
//! strings, bodies from valid to huge, content types, and authorization headers right and wrong;
//! for the routes inside a sandbox, exec bodies valid and broken field by field, file paths that
//! keep to `/workspace` and paths that try to leave it, and files of every size around the limit.
//! Everything is drawn from one seeded RNG, so that a seed replays the same requests.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::inside::{BOTH_STREAMS, NO_SUCH_PROGRAM, PRINT_VARIABLE};

/// The body limit of the API.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;
/// The fuzzed server's `--exec-stdin-limit`; an exec body may be 1 MiB larger.
pub(crate) const STDIN_LIMIT: usize = 32 * 1024;
pub(crate) const EXEC_BODY_LIMIT: usize = STDIN_LIMIT + 1024 * 1024;
/// The fuzzed server's `--file-size-limit`: below [`BODY_LIMIT`], so that the route's own limit
/// shows.
pub(crate) const FILE_LIMIT: usize = 40 * 1024;
/// The fuzzed server's `--exec-max-timeout`, in milliseconds.
pub(crate) const MAX_EXEC_TIMEOUT_MS: u64 = 60_000;

/// One generated request, and the parts of it the oracle needs.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) method: String,
    /// The path as sent (percent-encoding and all), without the query.
    pub(crate) path: String,
    /// The query as sent, without the `?`.
    pub(crate) query: Option<String>,
    /// Send the target in absolute form (`http://host/path`), which servers must accept.
    pub(crate) absolute_form: bool,
    pub(crate) authorization: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) chunked: bool,
}

impl Case {
    pub(crate) fn target(&self, authority: &str) -> String {
        let mut target = String::new();
        if self.absolute_form {
            target.push_str("http://");
            target.push_str(authority);
        }
        target.push_str(&self.path);
        if let Some(query) = &self.query {
            target.push('?');
            target.push_str(query);
        }
        target
    }

    /// The request's bytes on the wire.
    pub(crate) fn to_bytes(&self, authority: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            format!(
                "{} {} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n",
                self.method,
                self.target(authority)
            )
            .as_bytes(),
        );
        if let Some(value) = &self.authorization {
            out.extend_from_slice(b"authorization: ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Some(body) if self.chunked => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                out.extend_from_slice(&super::raw_http::chunked(body, 7919));
            }
            Some(body) => {
                out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            None => out.extend_from_slice(b"\r\n"),
        }
        out
    }

    /// A one-line description for failure reports (long parts cut short).
    pub(crate) fn describe(&self) -> String {
        let cut = |text: &str| {
            if text.chars().count() > 120 {
                format!(
                    "{}...({} chars)",
                    text.chars().take(120).collect::<String>(),
                    text.chars().count()
                )
            } else {
                text.to_owned()
            }
        };
        let body = self.body.as_ref().map(|body| {
            format!(
                "{} bytes{} {:?}",
                body.len(),
                if self.chunked { " chunked" } else { "" },
                cut(&String::from_utf8_lossy(body))
            )
        });
        format!(
            "{} {}{}{} auth={:?} headers={:?} body={}",
            self.method,
            if self.absolute_form { "http://<host>" } else { "" },
            cut(&self.path),
            self.query.as_ref().map(|q| format!("?{}", cut(q))).unwrap_or_default(),
            self.authorization.as_ref().map(|a| cut(&String::from_utf8_lossy(a))),
            self.headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", cut(&String::from_utf8_lossy(v))))
                .collect::<Vec<_>>(),
            body.unwrap_or_else(|| "none".into()),
        )
    }
}

/// Which route a case is built for, to give it a body of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Sandbox,
    Exec,
    Files,
    KeepAlive,
    /// The workspace archive: its body is bytes, like a file's.
    Archive,
    Other,
}

/// File and directory names: plain, odd but allowed, and the ones planted in the sandboxes
/// (`seed/hello.txt`, the links `inside`, `escape`, `tmplink`).
const NAMES: &[&str] = &[
    "a",
    "b",
    "notes.txt",
    "dir",
    "src",
    "main.py",
    ".hidden",
    "a..b",
    "...",
    "with space",
    "ünïcødé",
    "日本語.txt",
    "\u{1F600}",
    "%",
    "100%",
    "q?x",
    "h#x",
    "semi;colon",
    "\u{202e}rtl",
    "\u{feff}bom",
    "-dash",
    "~tilde",
    "'quote'",
    "\"dq\"",
    "seed",
    "hello.txt",
    "inside",
    "escape",
    "tmplink",
];

/// Paths that meet in the workspace: through the planted links, and files that other paths
/// need as directories (`a` and `a/b`).
const PATHS: &[&str] = &[
    "seed/hello.txt",
    "inside/hello.txt",
    "inside",
    "seed",
    "escape",
    "escape/x",
    "tmplink/x",
    "tmplink/new/x",
    "inside/new.txt",
    "seed/hello.txt/x",
    "a",
    "a/b",
    "a/b/c",
    "b/c",
];

/// Segments that break the path rule, as sent (percent-encoded where a URL needs it).
const BAD_SEGMENTS: &[&str] = &[
    "..",
    ".",
    "%2e%2e",
    "%2E",
    ".%2e",
    "%2e.",
    "a%5Cb",
    "%5C",
    "%00",
    "a%00b",
    "%0A",
    "a%0D%0Ab",
    "%09",
    "%1B[31m",
    "%7F",
    "%C2%80",
    "%C2%9F",
    "%FF",
    "a%C3",
    "%ED%A0%80",
    "%C0%AE%C0%AE",
    "%F8%88%80%80%80",
    "%80",
];

/// Generates cases for one server.
#[derive(Debug)]
pub(crate) struct Generator {
    pub(crate) rng: StdRng,
    token: String,
    /// Chats that have a running sandbox (a valid PUT reuses it).
    known_chats: Vec<Uuid>,
}

const METHODS: &[&str] = &[
    "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "get", "Put", "PROPFIND",
    "PURGE", "M-SEARCH", "X",
];

/// The routes of docs/openapi.yaml the generator targets: the routes of a chat are built with
/// chat ids (and file paths) of every kind, the others are fixed paths.
pub(crate) const SANDBOX_ROUTE: &str = "/v1/chats/{chat_id}/sandbox";
pub(crate) const EXEC_ROUTE: &str = "/v1/chats/{chat_id}/sandbox/exec";
pub(crate) const FILES_ROUTE: &str = "/v1/chats/{chat_id}/sandbox/files/{path}";
pub(crate) const KEEPALIVE_ROUTE: &str = "/v1/chats/{chat_id}/sandbox/keepalive";
pub(crate) const WORKSPACE_ROUTE: &str = "/v1/chats/{chat_id}/workspace";
pub(crate) const ARCHIVE_ROUTE: &str = "/v1/chats/{chat_id}/workspace/archive";
pub(crate) const PROCESSES_ROUTE: &str = "/v1/chats/{chat_id}/sandbox/processes";
pub(crate) const PROCESS_ROUTE: &str = "/v1/chats/{chat_id}/sandbox/processes/{process_id}";
pub(crate) const PROCESS_LOGS_ROUTE: &str =
    "/v1/chats/{chat_id}/sandbox/processes/{process_id}/logs";
pub(crate) const PROCESS_STDIN_ROUTE: &str =
    "/v1/chats/{chat_id}/sandbox/processes/{process_id}/stdin";
pub(crate) const TERMINAL_ROUTE: &str = "/v1/chats/{chat_id}/sandbox/terminal";
pub(crate) const ROUTES: &[&str] = &[
    "/v1/sandboxes",
    "/v1/maintenance/cleanup",
    "/v1/maintenance/sweep",
    "/metrics",
    "/healthz",
    "/readyz",
    "/v1/pool",
    "/v1/engines",
];

/// Paths that are not routes and never will be.
const NOT_ROUTES: &[&str] = &[
    "/",
    "/v1",
    "/v1/",
    "/v2/sandboxes",
    "/V1/sandboxes",
    "/v1/sandboxes/",
    "/v1//sandboxes",
    "/v1/sandboxes/x",
    "/v1/%73andboxes",
    "/v1/chats",
    "/v1/chats/",
    "/v1/chats/sandbox",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandboxes",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/zz",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/exec/",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/Exec",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/%65xec",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/keepalive/",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/keep-alive",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/file/a.txt",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/sandbox/files%2Fa.txt",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/exec",
    "/v1/chats/0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b/files/a.txt",
    "/v1/chats/exec",
    "/v1/chats/a/b/sandbox",
    "/v1/chats/../sandbox/..",
    "/v1/maintenance",
    "/v1/maintenance/",
    "/v1/maintenance/zz",
    "/metrics/",
    "/healthz/zz",
    "/readyz.json",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/../../etc/passwd",
    "//",
    "/~",
    "/v1/sandboxes;jsessionid=1",
    "/ünïcødé",
    "/\u{1F600}",
];

/// Characters that may stand as they are in a path.
const PATH_SAFE: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@[]^|\"{}";
/// Characters that may stand as they are in a query (besides letters and digits).
const QUERY_SAFE: &[u8] = b"-._~!$'()*+,;:@/?[]^`{|}\\";

fn percent_encode_all(text: &str) -> String {
    text.bytes().map(|byte| format!("%{byte:02X}")).collect()
}

/// Encodes what a path cannot hold as it is (and, with `eager`, also some that it can).
fn encode_path_segment(rng: &mut StdRng, text: &str, eager: bool) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        let mut buffer = [0u8; 4];
        let bytes = ch.encode_utf8(&mut buffer).as_bytes();
        let safe = bytes.len() == 1 && PATH_SAFE.contains(&bytes[0]) && bytes[0] != b'/';
        let raw_unicode = bytes.len() > 1 && rng.random_bool(0.5);
        if (safe && !(eager && rng.random_bool(0.3))) || raw_unicode {
            out.push(ch);
        } else {
            for byte in bytes {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

fn encode_query_part(rng: &mut StdRng, text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        let mut buffer = [0u8; 4];
        let bytes = ch.encode_utf8(&mut buffer).as_bytes();
        match bytes {
            [b' '] if rng.random_bool(0.5) => out.push('+'),
            [byte] if byte.is_ascii_alphanumeric() || QUERY_SAFE.contains(byte) => out.push(ch),
            _ if bytes.len() > 1 && rng.random_bool(0.3) => out.push(ch),
            _ => {
                for byte in bytes {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
        }
    }
    out
}

fn random_text(rng: &mut StdRng, max_len: usize) -> String {
    const POOL: &[&str] = &[
        "a",
        "z",
        "0",
        "9",
        "-",
        "_",
        ".",
        " ",
        "\t",
        "%",
        "/",
        "\\",
        "'",
        "\"",
        "{",
        "}",
        "<",
        ">",
        "&",
        "=",
        "?",
        "#",
        ";",
        ":",
        "@",
        "+",
        "é",
        "ß",
        "\u{0}",
        "\u{7f}",
        "\u{202e}",
        "\u{feff}",
        "\u{3000}",
        "日本",
        "\u{1F600}",
        "\u{10FFFF}",
        "NaN",
        "null",
        "..",
    ];
    let len = rng.random_range(0..=max_len);
    (0..len).map(|_| *POOL.choose(rng).unwrap()).collect()
}

impl Generator {
    pub(crate) fn new(rng: StdRng, token: &str) -> Self {
        Self { rng, token: token.to_owned(), known_chats: Vec::new() }
    }

    pub(crate) fn add_known_chat(&mut self, chat: Uuid) {
        self.known_chats.push(chat);
    }

    pub(crate) fn case(&mut self) -> Case {
        let roll = self.rng.random_range(0..100);
        let (route, path, allowed): (Route, String, &[&str]) = match roll {
            0..27 => {
                let chat = self.chat_segment(0.3);
                (Route::Sandbox, format!("/v1/chats/{chat}/sandbox"), &["PUT", "GET", "DELETE"])
            }
            27..39 => {
                let chat = self.chat_segment(0.45);
                (Route::Exec, format!("/v1/chats/{chat}/sandbox/exec"), &["POST"])
            }
            39..52 => {
                let chat = self.chat_segment(0.45);
                let file = self.file_path();
                (Route::Files, format!("/v1/chats/{chat}/sandbox/files{file}"), &["PUT", "GET"])
            }
            52..58 => {
                let chat = self.chat_segment(0.45);
                (Route::KeepAlive, format!("/v1/chats/{chat}/sandbox/keepalive"), &["POST"])
            }
            58..71 => (Route::Other, "/v1/sandboxes".into(), &["GET"]),
            71..74 => (Route::Other, "/v1/maintenance/cleanup".into(), &["POST"]),
            74..76 => (Route::Other, "/v1/maintenance/sweep".into(), &["POST"]),
            76..82 => {
                (Route::Other, (*ROUTES[3..].choose(&mut self.rng).unwrap()).into(), &["GET"])
            }
            82..86 => (Route::Other, (*NOT_ROUTES.choose(&mut self.rng).unwrap()).into(), &["GET"]),
            86..88 => {
                let chat = self.chat_segment(0.45);
                (Route::Other, format!("/v1/chats/{chat}/workspace"), &["GET", "DELETE"])
            }
            88..90 => {
                let chat = self.chat_segment(0.45);
                (Route::Archive, format!("/v1/chats/{chat}/workspace/archive"), &["GET", "PUT"])
            }
            90..95 => self.process_or_terminal(),
            _ => (Route::Other, self.random_path(), &["GET"]),
        };
        let method = if self.rng.random_bool(0.75) {
            allowed.choose(&mut self.rng).unwrap().to_string()
        } else {
            METHODS.choose(&mut self.rng).unwrap().to_string()
        };
        let query = if path == "/v1/sandboxes" {
            self.rng.random_bool(0.85).then(|| self.list_query())
        } else if path.ends_with("/logs") || path.ends_with("/terminal") {
            self.rng.random_bool(0.7).then(|| self.offsets_or_size_query())
        } else {
            self.rng.random_bool(0.1).then(|| self.list_query())
        };
        let body = match (route, method.as_str()) {
            (Route::Exec, "POST") => self.rng.random_bool(0.92).then(|| self.exec_body()),
            (Route::Files | Route::Archive, "PUT") => {
                self.rng.random_bool(0.9).then(|| self.file_body())
            }
            (Route::KeepAlive, "POST") | (_, "PUT" | "Put") => {
                self.rng.random_bool(0.7).then(|| self.put_body())
            }
            _ => self.rng.random_bool(0.15).then(|| self.any_body()),
        };
        let chunked = body.is_some() && self.rng.random_bool(0.15);
        let mut headers = Vec::new();
        if self.rng.random_bool(0.5) {
            headers.push(("content-type".into(), self.content_type()));
        }
        if self.rng.random_bool(0.2) {
            headers.push(self.odd_header());
        }
        Case {
            method,
            path,
            query,
            absolute_form: self.rng.random_bool(0.04),
            authorization: self.authorization(),
            headers,
            body,
            chunked,
        }
    }

    /// A read of the background processes (never a start: its effects are not modelled), or
    /// the terminal (answered without an upgrade).
    fn process_or_terminal(&mut self) -> (Route, String, &'static [&'static str]) {
        let chat = self.chat_segment(0.6);
        let id = *[
            "0123456789abcdef",
            "ffffffffffffffff",
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "..",
            "%2e%2e",
            "x",
        ]
        .choose(&mut self.rng)
        .unwrap();
        match self.rng.random_range(0..5) {
            // A start's body is never an exec's: nothing is started.
            0 => (Route::Other, format!("/v1/chats/{chat}/sandbox/processes"), &["GET", "POST"]),
            4 => {
                (Route::Other, format!("/v1/chats/{chat}/sandbox/processes/{id}/stdin"), &["POST"])
            }
            1 => (
                Route::Other,
                format!("/v1/chats/{chat}/sandbox/processes/{id}"),
                &["GET", "DELETE"],
            ),
            2 => (Route::Other, format!("/v1/chats/{chat}/sandbox/processes/{id}/logs"), &["GET"]),
            _ => (Route::Other, format!("/v1/chats/{chat}/sandbox/terminal"), &["GET"]),
        }
    }

    /// A query of a process's logs or of the terminal: good, odd and bad values.
    fn offsets_or_size_query(&mut self) -> String {
        let keys = ["stdout_offset", "stderr_offset", "cols", "rows", "limit", "Cols"];
        let values =
            ["0", "1", "80", "1000", "1001", "-1", "+5", "", "x", "1.5", "18446744073709551616"];
        let count = self.rng.random_range(1..=3);
        (0..count)
            .map(|_| {
                let key = keys.choose(&mut self.rng).unwrap();
                let value = values.choose(&mut self.rng).unwrap();
                format!("{key}={value}")
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A chat id as a path segment: some UUID spelling of a known chat (with the share
    /// `known`, once there is one) or of a new one, or not a UUID at all.
    fn chat_segment(&mut self, known: f64) -> String {
        if !self.known_chats.is_empty() && self.rng.random_bool(known) {
            let uuid = *self.known_chats.choose(&mut self.rng).unwrap();
            return self.uuid_spelling(uuid);
        }
        if self.rng.random_bool(0.4) {
            let uuid = Uuid::new_v4_from(&mut self.rng);
            return self.uuid_spelling(uuid);
        }
        let rng = &mut self.rng;
        let base = Uuid::new_v4_from(rng).hyphenated().to_string();
        match rng.random_range(0..23) {
            0 => "..".to_owned(),
            1 => ".".to_owned(),
            2 => "%2e%2e".to_owned(),
            3 => "%2F".to_owned(),
            4 => format!("{}%2F{}", &base[..8], &base[9..]),
            5 => base[..35].to_owned(),
            6 => format!("{base}0"),
            7 => base.replace('a', "g").replacen(|c: char| c.is_ascii_digit(), "x", 1),
            8 => format!("{{{base}"),
            9 => format!("urn:uuid:{}", &base[..30]),
            10 => "00000000-0000-0000-0000-00000000000".to_owned(),
            11 => "%FF%FE%FD".to_owned(),
            12 => format!("{}%C3", &base[..10]),
            13 => "%00".to_owned(),
            14 => "'%20OR%201=1--".to_owned(),
            15 => {
                let text = "é".repeat(rng.random_range(1..50));
                encode_path_segment(rng, &text, false)
            }
            16 => "\u{1F600}\u{1F600}".to_owned(),
            17 => "a".repeat(rng.random_range(100..20_000)),
            18 => percent_encode_all(&"x".repeat(rng.random_range(100..3000))),
            19 => format!("{}-{}", base, base),
            20 => "%".to_owned(),
            21 if rng.random_bool(0.3) => String::new(),
            _ => {
                let text = random_text(rng, 40);
                let encoded = encode_path_segment(rng, &text, true);
                if encoded.is_empty() { "%20".to_owned() } else { encoded }
            }
        }
    }

    fn uuid_spelling(&mut self, uuid: Uuid) -> String {
        let rng = &mut self.rng;
        let hyphenated = uuid.hyphenated().to_string();
        let spelled = match rng.random_range(0..9) {
            0 | 1 => hyphenated.clone(),
            2 => hyphenated.to_uppercase(),
            3 => uuid.simple().to_string(),
            4 => uuid.simple().to_string().to_uppercase(),
            5 => uuid.braced().to_string(),
            6 => uuid.urn().to_string(),
            7 => hyphenated
                .chars()
                .map(|c| if rng.random_bool(0.5) { c.to_ascii_uppercase() } else { c })
                .collect(),
            _ => hyphenated.clone(),
        };
        match rng.random_range(0..10) {
            // Percent-encoded in part or in whole: the server decodes before parsing.
            0 => percent_encode_all(&spelled),
            1 => spelled.replace('-', "%2D"),
            // Surrounding whitespace is refused.
            2 => format!("%20{spelled}%09"),
            3 => format!("%E3%80%80{spelled}"),
            _ => spelled,
        }
    }

    fn random_path(&mut self) -> String {
        let segments = self.rng.random_range(1..5);
        let mut path = String::new();
        for _ in 0..segments {
            let text = random_text(&mut self.rng, 12);
            path.push('/');
            path.push_str(&encode_path_segment(&mut self.rng, &text, true));
        }
        // Keep clear of real routes: a random path that happened to be one would be judged as
        // such anyway, but marking it makes the report easier to read.
        path.push_str("/zz");
        path
    }

    fn list_query(&mut self) -> String {
        let parts = self.rng.random_range(0..4);
        let mut pairs: Vec<String> = Vec::new();
        for _ in 0..parts {
            let rng = &mut self.rng;
            let pair = match rng.random_range(0..14) {
                0..4 => {
                    let value = ["running", "stopped", "crashed"].choose(rng).unwrap();
                    let value: String = value
                        .chars()
                        .map(|c| if rng.random_bool(0.3) { c.to_ascii_uppercase() } else { c })
                        .collect();
                    let padded = if rng.random_bool(0.2) { format!(" {value} ") } else { value };
                    format!("status={}", encode_query_part(rng, &padded))
                }
                4 | 5 => {
                    let values = [
                        "paused",
                        "",
                        "RUNNINGX",
                        "run",
                        "running,stopped",
                        "null",
                        "%FF",
                        "\u{0}",
                    ];
                    let value = values.choose(rng).unwrap();
                    if *value == "%FF" {
                        "status=%FF".to_owned()
                    } else {
                        format!("status={}", encode_query_part(rng, value))
                    }
                }
                6..9 => {
                    let value = match rng.random_range(0..12) {
                        0..3 => rng.random_range(1..=10_000u32).to_string(),
                        3 => "0".into(),
                        4 => "10001".into(),
                        5 => "-1".into(),
                        6 => "1.5".into(),
                        7 => "99999999999999999999999".into(),
                        8 => "abc".into(),
                        9 => "".into(),
                        10 => " 5 ".into(),
                        _ => "+7".into(),
                    };
                    format!("limit={}", encode_query_part(rng, &value))
                }
                9 => "foo=bar".into(),
                10 => "Status=running".into(),
                11 => "=x".into(),
                12 => "st%61tus=crashed".into(),
                _ => {
                    let text = random_text(rng, 10);
                    encode_query_part(rng, &text)
                }
            };
            pairs.push(pair);
        }
        let separator = if self.rng.random_bool(0.1) { "&&" } else { "&" };
        let mut query = pairs.join(separator);
        if self.rng.random_bool(0.1) {
            query.push('&');
        }
        query
    }

    /// A body for a PUT: mostly the shapes the API knows, right and wrong.
    fn put_body(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let text = match rng.random_range(0..33) {
            0 => String::new(),
            1 => " \n\t ".into(),
            2 => "{}".into(),
            3 => r#"{"ttl_seconds": null}"#.into(),
            4..8 => format!(r#"{{"ttl_seconds": {}}}"#, rng.random_range(1..=3600)),
            8 => r#"{"ttl_seconds": 3600}"#.into(),
            9 => r#"{"ttl_seconds": 3601}"#.into(),
            10 => r#"{"ttl_seconds": 0}"#.into(),
            11 => format!(r#"{{"ttl_seconds": -{}}}"#, rng.random_range(0..100_000)),
            12 => r#"{"ttl_seconds": 1.5}"#.into(),
            13 => r#"{"ttl_seconds": 60.0}"#.into(),
            14 => r#"{"ttl_seconds": 1e3}"#.into(),
            15 => r#"{"ttl_seconds": 1e400}"#.into(),
            16 => r#"{"ttl_seconds": 18446744073709551616}"#.into(),
            17 => r#"{"ttl_seconds": 18446744073709551615}"#.into(),
            18 => r#"{"ttl_seconds": "60"}"#.into(),
            19 => r#"{"ttl_seconds": true}"#.into(),
            20 => r#"{"ttl_seconds": [60]}"#.into(),
            21 => r#"{"ttl_seconds": 60, "ttl_seconds": 61}"#.into(),
            22 => r#"{"ttl_seconds": 60, "image": "alpine"}"#.into(),
            23 => r#"{"TTL_SECONDS": 60}"#.into(),
            24 => r#"{"ttl_seconds": 60"#.into(),
            25 => "\u{feff}{}".into(),
            26 => return self.any_body(),
            27..30 => return self.sized_body(),
            _ => random_json(rng, 3),
        };
        text.into_bytes()
    }

    /// What follows `/files` in a files route: nothing, a lone `/`, or a path that keeps the
    /// rule or breaks it (in a URL that may encode it in many ways).
    fn file_path(&mut self) -> String {
        match self.rng.random_range(0..100) {
            0..2 => String::new(),
            2..4 => "/".into(),
            4..58 => format!("/{}", self.valid_file_path()),
            _ => format!("/{}", self.odd_file_path()),
        }
    }

    /// One to three names, each percent-encoded where it must be (and sometimes where it
    /// need not be), joined by `/` or by `%2F`; often one of a few paths that meet each other
    /// (a file where another path needs a directory) or the planted links.
    fn valid_file_path(&mut self) -> String {
        if self.rng.random_bool(0.4) {
            let path = *PATHS.choose(&mut self.rng).unwrap();
            return path
                .split('/')
                .map(|name| encode_path_segment(&mut self.rng, name, false))
                .collect::<Vec<_>>()
                .join("/");
        }
        let count = self.rng.random_range(1..=3);
        let names: Vec<String> = (0..count)
            .map(|_| {
                let name = *NAMES.choose(&mut self.rng).unwrap();
                let eager = self.rng.random_bool(0.2);
                encode_path_segment(&mut self.rng, name, eager)
            })
            .collect();
        let separator = if self.rng.random_bool(0.15) { "%2F" } else { "/" };
        names.join(separator)
    }

    /// Paths that break the rule, or sit right at its bounds.
    fn odd_file_path(&mut self) -> String {
        let rng = &mut self.rng;
        let name = |rng: &mut StdRng| {
            let name = *NAMES[..12].choose(rng).unwrap();
            encode_path_segment(rng, name, false)
        };
        match rng.random_range(0..13) {
            0..3 => {
                let bad = *BAD_SEGMENTS.choose(rng).unwrap();
                match rng.random_range(0..3) {
                    0 => format!("{bad}/{}", name(rng)),
                    1 => format!("{}/{bad}", name(rng)),
                    _ => format!("{}/{bad}/{}", name(rng), name(rng)),
                }
            }
            // Empty segments: `a//b`, a trailing `/`, a leading one (absolute).
            3 => ["a//b", "a/", "/a", "a%2F%2Fb", "a%2F", "%2Fa", "//", "a/b//"]
                .choose(rng)
                .unwrap()
                .to_string(),
            4 => [
                "..%2F..%2Fetc%2Fpasswd",
                "%2Fetc%2Fpasswd",
                "%2e%2e/%2e%2e/etc/passwd",
                "../../etc/passwd",
                "....//....//etc/passwd",
                "a/../../b",
                "./a",
                "..%5C..%5Cetc%5Cpasswd",
                "%252e%252e/x",
            ]
            .choose(rng)
            .unwrap()
            .to_string(),
            // Names at and over 255 bytes, in one-byte and two-byte characters.
            5 => "n".repeat(rng.random_range(254..=257)),
            6 => {
                let name = "é".repeat(rng.random_range(127..=128));
                encode_path_segment(rng, &name, false)
            }
            // Paths at and over 1024 bytes.
            7 => long_path(rng.random_range(1022..=1026)),
            8 => long_path(rng.random_range(1100..5000)),
            // `%` that starts no escape stays a `%`.
            9 => ["%", "%%", "%zz", "%4", "a%", "%%41"].choose(rng).unwrap().to_string(),
            10 => percent_encode_all(&format!("{}/{}", NAMES[2], NAMES[3])),
            _ => {
                let text = random_text(rng, 30);
                let encoded = encode_path_segment(rng, &text, true);
                if encoded.is_empty() { "%20".into() } else { encoded }
            }
        }
    }

    /// A file to upload: empty, small, binary, and sizes around the limits.
    fn file_body(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        match rng.random_range(0..14) {
            0 => Vec::new(),
            1..4 => format!("hello {}\n", rng.random::<u32>()).into_bytes(),
            4 => (0..rng.random_range(1..512)).map(|_| rng.random::<u8>()).collect(),
            5 => (0..rng.random_range(512..4096)).map(|_| rng.random::<u8>()).collect(),
            6 => vec![b'x'; FILE_LIMIT],
            7 => vec![0; FILE_LIMIT + 1],
            8 => vec![b'y'; FILE_LIMIT - rng.random_range(1..100)],
            9 => vec![b'z'; FILE_LIMIT + rng.random_range(2..1000)],
            10 => vec![b'j'; BODY_LIMIT + rng.random_range(1..2000)],
            11 => random_json(rng, 3).into_bytes(),
            _ => random_text(rng, 64).into_bytes(),
        }
    }

    /// An exec body: valid, broken in one field or two, or not an exec body at all.
    fn exec_body(&mut self) -> Vec<u8> {
        let mut body = self.valid_exec();
        match self.rng.random_range(0..100) {
            0..45 => {}
            45..80 => self.break_exec(&mut body),
            80..85 => {
                self.break_exec(&mut body);
                self.break_exec(&mut body);
            }
            85..88 => return self.sized_exec_body(),
            88..93 => return self.any_body(),
            93..96 => return random_json(&mut self.rng, 3).into_bytes(),
            _ => {
                let text = [
                    "",
                    " \n",
                    "[]",
                    "null",
                    "\"true\"",
                    "[\"true\"]",
                    r#"{"command": ["true"]} x"#,
                    "\u{feff}{\"command\": [\"true\"]}",
                    r#"{"command": ["true"]"#,
                    // The last of two equal keys counts.
                    r#"{"command": "oops", "command": ["true"]}"#,
                    r#"{"command": ["true"], "command": "oops"}"#,
                    r#"{"command": ["\ud800"]}"#,
                    r#"{"command": ["echo", "\u00e9\u0000"]}"#,
                ];
                return text.choose(&mut self.rng).unwrap().as_bytes().to_vec();
            }
        }
        let value = Value::Object(body);
        let text = if self.rng.random_bool(0.2) {
            serde_json::to_string_pretty(&value)
        } else {
            serde_json::to_string(&value)
        };
        text.unwrap().into_bytes()
    }

    /// A valid exec body, mostly of a command whose answer the oracle knows.
    fn valid_exec(&mut self) -> Map<String, Value> {
        let rng = &mut self.rng;
        let mut body = Map::new();
        let mut timeout =
            rng.random_bool(0.3).then(|| rng.random_range(5000..=MAX_EXEC_TIMEOUT_MS));
        let command: Vec<String> = match rng.random_range(0..13) {
            0 => vec!["true".into()],
            1 => vec!["false".into()],
            2 | 3 => {
                const WORDS: &[&str] = &[
                    "x",
                    "hello",
                    "héllo",
                    "日本",
                    "a b",
                    "",
                    "*",
                    "$HOME",
                    "'q'",
                    "\u{1F600}",
                    "-n",
                ];
                let count = rng.random_range(1..4);
                let mut command = vec!["echo".to_owned()];
                command.extend((0..count).map(|_| WORDS.choose(rng).unwrap().to_string()));
                command
            }
            4 => vec!["sh".into(), "-c".into(), format!("exit {}", rng.random_range(0..=255))],
            5 => vec!["sh".into(), "-c".into(), BOTH_STREAMS.into()],
            6 | 7 => {
                let stdin = match rng.random_range(0..6) {
                    0 => None,
                    1 => Some("x".repeat(STDIN_LIMIT)),
                    _ => Some(random_text(rng, 200)),
                };
                body.insert("stdin".into(), stdin.map_or(Value::Null, Value::String));
                vec!["cat".into()]
            }
            8 => {
                const VALUES: &[&str] = &["", "plain", "two words", "multi\nline", "ünï", "-n"];
                let value = VALUES.choose(rng).unwrap();
                body.insert("env".into(), json!({"FUZZ_V": value}));
                vec!["sh".into(), "-c".into(), PRINT_VARIABLE.into()]
            }
            9 => {
                const DIRS: &[&str] = &[
                    "/",
                    "/tmp",
                    "/workspace",
                    "/etc",
                    "seed",
                    "dir",
                    "a",
                    "nope/deeper",
                    "/nonexistent-zz",
                    "/etc/passwd",
                    "src",
                    "/../tmp",
                ];
                body.insert("workdir".into(), json!(DIRS.choose(rng).unwrap()));
                vec!["pwd".into()]
            }
            10 => {
                timeout = Some(rng.random_range(100..=1500));
                vec!["sleep".into(), "5".into()]
            }
            11 => vec![NO_SUCH_PROGRAM.into()],
            // As many arguments as allowed.
            _ => std::iter::once("true".to_owned())
                .chain(std::iter::repeat_n("x".to_owned(), 4095))
                .collect(),
        };
        body.insert("command".into(), json!(command));
        if rng.random_bool(0.15) {
            body.insert("env".into(), json!({"FUZZ_A": "1", "FUZZ_b9": ""}));
        }
        match timeout {
            Some(ms) => {
                body.insert("timeout_ms".into(), json!(ms));
            }
            None if rng.random_bool(0.1) => {
                body.insert("timeout_ms".into(), Value::Null);
            }
            None => {}
        }
        for field in ["stdin", "env", "workdir"] {
            if !body.contains_key(field) && rng.random_bool(0.05) {
                body.insert(field.into(), Value::Null);
            }
        }
        body
    }

    /// Breaks one field of an exec body (or adds one that does not exist).
    fn break_exec(&mut self, body: &mut Map<String, Value>) {
        let rng = &mut self.rng;
        let pick = |rng: &mut StdRng, values: Vec<Value>| values.choose(rng).unwrap().clone();
        let (field, value) = match rng.random_range(0..9) {
            0 | 1 => {
                let value = pick(
                    rng,
                    vec![
                        Value::Null,
                        json!("ls"),
                        json!(5),
                        json!({}),
                        json!(true),
                        json!([]),
                        json!([""]),
                        json!(["", "x"]),
                        json!(["echo", 1]),
                        json!([null]),
                        json!([["x"]]),
                        json!([1.5]),
                        json!(["a\u{0}b"]),
                        json!(vec!["x"; 4097]),
                        json!(["echo", "x".repeat(256 * 1024)]),
                    ],
                );
                if rng.random_bool(0.15) {
                    body.remove("command");
                    return;
                }
                ("command", value)
            }
            2 => {
                let value = pick(
                    rng,
                    vec![
                        json!(5),
                        json!([]),
                        json!(true),
                        json!({"a": 1}),
                        json!("x".repeat(STDIN_LIMIT + 1)),
                        json!("é".repeat(STDIN_LIMIT / 2 + 1)),
                    ],
                );
                ("stdin", value)
            }
            3 | 4 => {
                let bad_name =
                    *["1A", "A-B", "", "A B", "É", "A=B", "A\u{0}", "ß", " A"].choose(rng).unwrap();
                let many: Map<String, Value> =
                    (0..257).map(|i| (format!("FUZZ_{i}"), json!("v"))).collect();
                let value = pick(
                    rng,
                    vec![
                        json!([]),
                        json!("A=1"),
                        json!(5),
                        json!(true),
                        json!({"FUZZ_A": 1}),
                        json!({"FUZZ_A": null}),
                        json!({"FUZZ_A": ["x"]}),
                        Value::Object(Map::from_iter([(bad_name.to_owned(), json!("x"))])),
                        json!({"FUZZ_A": "a\u{0}b"}),
                        Value::Object(many),
                        json!({"FUZZ_BIG": "x".repeat(64 * 1024)}),
                    ],
                );
                ("env", value)
            }
            5 => {
                let value = pick(
                    rng,
                    vec![
                        json!(5),
                        json!(true),
                        json!([]),
                        json!("../x"),
                        json!("a/../../b"),
                        json!("./a"),
                        json!("a//b"),
                        json!(""),
                        json!("a\\b"),
                        json!("a\u{1}"),
                        json!("/tmp\u{0}"),
                        json!("x".repeat(4097)),
                        json!(format!("/{}", "x".repeat(4096))),
                        json!("a/"),
                    ],
                );
                ("workdir", value)
            }
            6 | 7 => {
                let text = *[
                    "0",
                    "-1",
                    "-100000",
                    "1.5",
                    "\"100\"",
                    "true",
                    "[]",
                    "{}",
                    "60001",
                    "3600000",
                    "18446744073709551615",
                    "18446744073709551616",
                    "1e3",
                    "5000.0",
                ]
                .choose(rng)
                .unwrap();
                ("timeout_ms", serde_json::from_str(text).unwrap())
            }
            _ => {
                let field = *["cmd", "timeout", "Command", "command ", "", "stdin2", "env\u{0}"]
                    .choose(rng)
                    .unwrap();
                body.insert(field.into(), json!(["true"]));
                return;
            }
        };
        body.insert(field.into(), value);
    }

    /// Exec bodies around the exec limit, and over the JSON limit of other routes.
    fn sized_exec_body(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let command = br#"{"command": ["true"]}"#.to_vec();
        let padded = |size: usize| {
            let mut body = command.clone();
            body.resize(size, b' ');
            body
        };
        match rng.random_range(0..4) {
            // Valid, and larger than the JSON limit of other routes.
            0 => padded(BODY_LIMIT + rng.random_range(1..100_000)),
            1 => padded(EXEC_BODY_LIMIT),
            2 => padded(EXEC_BODY_LIMIT + rng.random_range(1..100)),
            _ => {
                let stdin = "s".repeat(EXEC_BODY_LIMIT);
                format!(r#"{{"command": ["cat"], "stdin": "{stdin}"}}"#).into_bytes()
            }
        }
    }

    /// Bodies near and over the 64 KiB limit: valid JSON padded with whitespace, or a long
    /// string field.
    fn sized_body(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let size = match rng.random_range(0..6) {
            0 => BODY_LIMIT,
            1 => BODY_LIMIT + 1,
            2 => BODY_LIMIT - rng.random_range(1..100),
            3 => BODY_LIMIT + rng.random_range(2..100),
            4 => rng.random_range(BODY_LIMIT * 2..BODY_LIMIT * 5),
            _ => rng.random_range(1000..BODY_LIMIT),
        };
        if rng.random_bool(0.5) {
            let mut body = br#"{"ttl_seconds": 120}"#.to_vec();
            body.resize(size.max(body.len()), b' ');
            body
        } else {
            let frame = r#"{"pad": ""}"#.len();
            let pad = "x".repeat(size.saturating_sub(frame));
            format!(r#"{{"pad": "{pad}"}}"#).into_bytes()
        }
    }

    /// Any body at all: JSON or not, text or binary.
    fn any_body(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        match rng.random_range(0..8) {
            0 => random_json(rng, 4).into_bytes(),
            1 => (0..rng.random_range(1..512)).map(|_| rng.random::<u8>()).collect(),
            2 => b"<xml><ttl_seconds>60</ttl_seconds></xml>".to_vec(),
            3 => b"ttl_seconds=60&x=1".to_vec(),
            4 => b"{\"ttl_seconds\": 60} trailing".to_vec(),
            5 => b"/* comment */ {}".to_vec(),
            6 => random_text(rng, 64).into_bytes(),
            _ => self.sized_body(),
        }
    }

    fn content_type(&mut self) -> Vec<u8> {
        const TYPES: &[&str] = &[
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "application/octet-stream",
            "application/xml",
            ";;;",
            "",
            "application/json, text/plain",
            "*/*",
        ];
        TYPES.choose(&mut self.rng).unwrap().as_bytes().to_vec()
    }

    fn odd_header(&mut self) -> (String, Vec<u8>) {
        let rng = &mut self.rng;
        match rng.random_range(0..6) {
            0 => ("accept".into(), b"application/xml".to_vec()),
            1 => ("x-forwarded-for".into(), b"203.0.113.7, 198.51.100.1".to_vec()),
            2 => ("x-large".into(), vec![b'a'; rng.random_range(1000..16_000)]),
            3 => ("x-binary".into(), (0..32).map(|_| rng.random_range(0x80..=0xFF)).collect()),
            4 => ("accept-encoding".into(), b"gzip, br, zstd".to_vec()),
            _ => ("cookie".into(), b"session=abc; token=def".to_vec()),
        }
    }

    /// The `Authorization` header: mostly right (in any spelling the server accepts), sometimes
    /// missing or wrong.
    fn authorization(&mut self) -> Option<Vec<u8>> {
        let token = self.token.clone();
        let rng = &mut self.rng;
        let value = match rng.random_range(0..64) {
            0..50 => format!("Bearer {token}"),
            50 => format!("bearer {token}"),
            51 => format!("BEARER   {token}  "),
            52 | 53 => return None,
            54 => "Bearer".into(),
            55 => "Bearer ".into(),
            56 => format!("Bearer {token}x"),
            57 => format!("Bearer {}", &token[..token.len() - 1]),
            58 => format!("Basic {token}"),
            59 => format!("Token {token}"),
            60 => format!("Bearer\t{token}"),
            61 => {
                let mut value = b"Bearer ".to_vec();
                value.extend((0..8).map(|_| rng.random_range(0x80..=0xFFu8)));
                return Some(value);
            }
            _ => format!("Bearer {}", "t".repeat(5000)),
        };
        Some(value.into_bytes())
    }
}

/// A path of `bytes` bytes, of names no longer than allowed.
pub(crate) fn long_path(bytes: usize) -> String {
    let count = (bytes + 1).div_ceil(256);
    let letters = bytes - (count - 1);
    let names: Vec<String> = (0..count)
        .map(|i| {
            let length = letters / count + usize::from(i < letters % count);
            char::from(b'a' + (i % 26) as u8).to_string().repeat(length)
        })
        .collect();
    names.join("/")
}

fn random_json(rng: &mut StdRng, depth: u32) -> String {
    let choice = if depth == 0 { rng.random_range(0..5) } else { rng.random_range(0..7) };
    match choice {
        0 => "null".into(),
        1 => rng.random_bool(0.5).to_string(),
        2 => match rng.random_range(0..4) {
            0 => rng.random::<i64>().to_string(),
            1 => format!("{}", rng.random::<f64>() * 1e6),
            2 => "-0".into(),
            _ => rng.random_range(0..5000).to_string(),
        },
        3 => serde_json::Value::String(random_text(rng, 20)).to_string(),
        4 => r#""\ud800""#.into(),
        5 => {
            let items: Vec<String> =
                (0..rng.random_range(0..4)).map(|_| random_json(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let keys = ["ttl_seconds", "ttl", "x", "", "\u{0}", "ttl_seconds "];
            let items: Vec<String> = (0..rng.random_range(0..4))
                .map(|_| {
                    let key = serde_json::Value::String((*keys.choose(rng).unwrap()).into());
                    format!("{key}: {}", random_json(rng, depth - 1))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Random UUIDs from the seeded RNG, so that a seed replays the same chat ids.
trait FromRng {
    fn new_v4_from(rng: &mut StdRng) -> Self;
}

impl FromRng for Uuid {
    fn new_v4_from(rng: &mut StdRng) -> Self {
        uuid::Builder::from_random_bytes(rng.random()).into_uuid()
    }
}

/// Requests that break HTTP itself. The HTTP layer answers them (a bare 4xx) or closes the
/// connection; the few it lets through must still be refused. None of them may change anything.
pub(crate) fn malformed(rng: &mut StdRng, token: &str, authority: &str) -> (String, Vec<u8>) {
    let auth = format!("authorization: Bearer {token}\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("space in the target", format!("GET /v1/chats/a b/sandbox HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n").into_bytes()),
        ("control byte in the target", format!("GET /v1/chats/a\x01b/sandbox HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n").into_bytes()),
        ("invalid UTF-8 in the target", {
            let mut bytes = b"GET /v1/chats/\xff\xfe/sandbox HTTP/1.1\r\n".to_vec();
            bytes.extend_from_slice(format!("host: {authority}\r\n{auth}\r\n").as_bytes());
            bytes
        }),
        ("target over 64 KiB", format!("GET /v1/chats/{}/sandbox HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n", "a".repeat(70_000)).into_bytes()),
        ("header without a colon", format!("GET /v1/sandboxes HTTP/1.1\r\nhost: {authority}\r\n{auth}oops\r\n\r\n").into_bytes()),
        ("bad content-length", format!("PUT /v1/chats/{}/sandbox HTTP/1.1\r\nhost: {authority}\r\n{auth}content-length: abc\r\n\r\n", Uuid::nil()).into_bytes()),
        // HTTP lets the server read this one by its chunks (and close after): a chat id that
        // is not one keeps it from creating anything.
        ("content-length and chunked", format!("PUT /v1/chats/not-a-chat/sandbox HTTP/1.1\r\nhost: {authority}\r\n{auth}content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").into_bytes()),
        ("broken chunk", format!("PUT /v1/chats/{}/sandbox HTTP/1.1\r\nhost: {authority}\r\n{auth}transfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n", Uuid::nil()).into_bytes()),
        ("CONNECT with a path", format!("CONNECT /v1/sandboxes HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n").into_bytes()),
        ("unknown HTTP version", format!("GET /v1/sandboxes HTTP/7.3\r\nhost: {authority}\r\n{auth}\r\n").into_bytes()),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec()),
        ("header name with a space", format!("GET /v1/sandboxes HTTP/1.1\r\nhost: {authority}\r\n{auth}bad name: x\r\n\r\n").into_bytes()),
    ];
    let (name, bytes) = cases.choose(rng).unwrap().clone();
    (name.to_owned(), bytes)
}
