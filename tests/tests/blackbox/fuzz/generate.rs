//! Generators of requests shaped like sandkeeper's API (docs/openapi.yaml): every route, with
//! right and wrong methods, chat ids in every UUID spelling and in many non-UUID ones, query
//! strings, bodies from valid to huge, content types, and authorization headers right and wrong.
//! Everything is drawn from one seeded RNG, so that a seed replays the same requests.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use uuid::Uuid;

/// The body limit of the API.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

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

/// The routes of docs/openapi.yaml the generator targets (the chat route is built apart).
pub(crate) const CHAT_ROUTE: &str = "/v1/chats/{chat_id}/sandbox";
pub(crate) const ROUTES: &[&str] = &[
    "/v1/sandboxes",
    "/v1/maintenance/cleanup",
    "/v1/maintenance/sweep",
    "/metrics",
    "/healthz",
    "/readyz",
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
        let (path, allowed): (String, &[&str]) = match roll {
            0..45 => {
                (format!("/v1/chats/{}/sandbox", self.chat_segment()), &["PUT", "GET", "DELETE"])
            }
            45..65 => ("/v1/sandboxes".into(), &["GET"]),
            65..69 => ("/v1/maintenance/cleanup".into(), &["POST"]),
            69..71 => ("/v1/maintenance/sweep".into(), &["POST"]),
            71..80 => ((*ROUTES[3..].choose(&mut self.rng).unwrap()).into(), &["GET"]),
            80..88 => ((*NOT_ROUTES.choose(&mut self.rng).unwrap()).into(), &["GET"]),
            _ => (self.random_path(), &["GET"]),
        };
        let method = if self.rng.random_bool(0.75) {
            allowed.choose(&mut self.rng).unwrap().to_string()
        } else {
            METHODS.choose(&mut self.rng).unwrap().to_string()
        };
        let query = if path == "/v1/sandboxes" {
            self.rng.random_bool(0.85).then(|| self.list_query())
        } else {
            self.rng.random_bool(0.1).then(|| self.list_query())
        };
        let body = if method == "PUT" || method == "Put" {
            self.rng.random_bool(0.7).then(|| self.put_body())
        } else {
            self.rng.random_bool(0.15).then(|| self.any_body())
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

    /// A chat id as a path segment: some UUID spelling (of a known chat or a new one), or not a
    /// UUID at all.
    fn chat_segment(&mut self) -> String {
        if self.rng.random_bool(0.5) {
            let uuid = match self.known_chats.choose(&mut self.rng) {
                Some(known) if self.rng.random_bool(0.6) => *known,
                _ => Uuid::new_v4_from(&mut self.rng),
            };
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
            // Surrounding whitespace is trimmed.
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
