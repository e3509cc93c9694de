//! The HTTP edge under attack: connections that are held open or fed a byte at a time, web
//! pages that reach a token-less server through DNS rebinding, bodies that are large, slow,
//! many, or written whole before the answer is read, and inputs that are large or padded. None
//! of these requests creates a sandbox, so they run with or without Docker.

use std::time::{Duration, Instant};

use reqwest::Method;
use sandkeeper_tests::{Server, StatusCode, TestEnv, metric};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAT: &str = "7a1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
const TOKEN: &str = "hardening-token-8c2e";
/// Liveness bound: far beyond any timeout the tests configure.
const PATIENCE: Duration = Duration::from_secs(20);

fn address(server: &Server) -> String {
    server.url("").trim_start_matches("http://").trim_end_matches('/').to_owned()
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(address(server)).await.expect("the server accepts connections")
}

/// Reads an HTTP/1.1 answer whole (until its Content-Length or the end of the connection) and
/// returns its status, headers (lower case) and body.
async fn read_answer(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    let answer = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok());
                if let Some(length) = length {
                    if data.len() >= end + 4 + length {
                        return Some((head, data[end + 4..end + 4 + length].to_vec()));
                    }
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    return Some((head, data[end + 4..].to_vec()));
                }
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("an answer within the patience bound")
    .unwrap_or_else(|| panic!("no HTTP answer, got {:?}", String::from_utf8_lossy(&data)));
    let (head, body) = answer;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, body)
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// Whether the server closes the connection (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1024];
    let started = Instant::now();
    while started.elapsed() < within {
        match tokio::time::timeout(within, stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
    false
}

fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    std::fs::read_link(entry.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

#[tokio::test]
async fn held_connections_never_keep_healthz_or_authenticated_calls_from_being_served() {
    let env = TestEnv::new();
    let server = env
        .serve(&[
            "--api-token",
            TOKEN,
            "--http-max-connections",
            "40",
            "--http-header-timeout",
            "30s",
        ])
        .await;
    // An unauthenticated client holds three times the cap: some idle, some sending a head
    // a byte at a time, some with an unauthenticated request answered and kept alive.
    let mut held = Vec::new();
    for n in 0..120 {
        let mut stream = connect(&server).await;
        if n % 3 == 1 {
            stream.write_all(b"GET /v1/sandboxes HTTP/1.1\r\nHo").await.unwrap();
        }
        held.push(stream);
    }
    let started = Instant::now();
    let (status, _) = server.send(server.client().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.get("/v1/sandboxes").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(started.elapsed() < PATIENCE);
    // The cap holds: the server keeps about 40 client sockets, not 120.
    let sockets = sockets_of(server.pid());
    assert!(sockets <= 40 + 12, "{sockets} sockets open at a cap of 40");
    let metrics = server.metrics().await;
    let evicted = metric(&metrics, r#"http_server_connections_closed_total{reason="evicted"}"#);
    assert!(evicted.is_some_and(|n| n >= 60.0), "{metrics}");
    let open = metric(&metrics, "http_server_connections_open").unwrap_or(f64::MAX);
    assert!(open <= 40.0, "{open} connections open at a cap of 40");
    drop(held);
}

#[tokio::test]
async fn a_server_out_of_file_descriptors_still_serves_by_closing_idle_connections() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    // Lower the running server's open-file limit below its connection cap (512): without the
    // eviction, once idle connections take every descriptor, accept fails with EMFILE and
    // nothing is served any more, /healthz included.
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--nofile=160:160"])
        .status()
        .unwrap();
    assert!(limited.success());
    let mut held = Vec::new();
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address(&server)))
            .await
        {
            Ok(Ok(stream)) => held.push(stream),
            _ => break,
        }
    }
    let answer =
        tokio::time::timeout(PATIENCE, server.send(server.client().get(server.url("/healthz"))))
            .await;
    assert!(
        matches!(answer, Ok((StatusCode::OK, _))),
        "/healthz was not served with idle connections holding every descriptor"
    );
    // It was the descriptors that ran out, and the server said so.
    let logs = server.logs();
    assert!(logs.contains("cannot accept a connection"), "{logs}");
    drop(held);
}

#[tokio::test]
async fn slow_heads_idle_connections_and_slow_bodies_are_cut_off() {
    let env = TestEnv::new();
    let server = env
        .serve(&[
            "--http-header-timeout",
            "1s",
            "--http-idle-timeout",
            "2s",
            "--http-body-timeout",
            "1s",
        ])
        .await;

    // A head sent a byte every 300 ms is cut off after about a second, not served for minutes.
    let mut slow = connect(&server).await;
    let started = Instant::now();
    let mut cut = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(cut || closed_within(&mut slow, PATIENCE).await, "a slow head was never cut off");
    assert!(started.elapsed() < PATIENCE);

    // A connection that sends nothing is closed after the header timeout.
    let mut silent = connect(&server).await;
    assert!(closed_within(&mut silent, PATIENCE).await, "a silent connection stayed open");

    // A keep-alive connection is served, then closed once idle.
    let mut idle = connect(&server).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let (status, _, _) = read_answer(&mut idle).await;
    assert_eq!(status, 200);
    assert!(closed_within(&mut idle, PATIENCE).await, "an idle connection stayed open");

    // A body that does not arrive in time is answered 408 with a code.
    let mut body = connect(&server).await;
    body.write_all(
        format!(
            "PUT /v1/chats/{CHAT}/sandbox HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
             application/json\r\nContent-Length: 100\r\n\r\n{{\"ttl"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, head, answer) = read_answer(&mut body).await;
    assert_eq!(status, 408, "{head}");
    let answer = json(&answer);
    assert_eq!(answer["error"]["code"], "body_timeout", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("--http-body-timeout"));
    assert!(server.sandboxes().await.is_empty());
    let metrics = server.metrics().await;
    for reason in ["header_timeout", "idle_timeout"] {
        let series = format!("http_server_connections_closed_total{{reason=\"{reason}\"}}");
        assert!(metric(&metrics, &series).is_some_and(|n| n >= 1.0), "{series}: {metrics}");
    }
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_answered_503() {
    let env = TestEnv::new();
    let server = env.serve(&["--http-max-connections", "3", "--http-body-timeout", "60s"]).await;
    // Three requests in progress: their bodies are still coming.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&server).await;
        stream
            .write_all(
                format!(
                    "PUT /v1/chats/{CHAT}/sandbox HTTP/1.1\r\nHost: localhost\r\nContent-Length: \
                     50\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = connect(&server).await;
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    let (status, head, body) = read_answer(&mut extra).await;
    assert_eq!(status, 503, "{head}");
    assert_eq!(json(&body)["error"]["code"], "too_many_connections");
    assert!(head.contains("retry-after"), "{head}");
    drop(busy);
    // Once they are gone, the server serves again.
    let served = sandkeeper_tests::eventually(PATIENCE, || async {
        let answer = server.client().get(server.url("/healthz")).send().await.ok()?;
        (answer.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(served.is_some());
}

#[tokio::test]
async fn without_a_token_only_loopback_hosts_and_origins_are_served() {
    let env = TestEnv::new();
    let server = env.serve(&["--allowed-hosts", "devbox.internal"]).await;
    let exec = format!("/v1/chats/{CHAT}/sandbox/exec");
    let command = r#"{"command": ["id"]}"#;
    let attempt = |host: Option<&str>, origin: Option<&str>| {
        let mut request = server.request(Method::POST, &exec).body(command);
        if let Some(host) = host {
            request = request.header("Host", host);
        }
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request
    };

    // DNS rebinding: the page's own name as Host, the page as Origin.
    let (status, body) =
        server.send(attempt(Some("attacker.example"), Some("http://attacker.example"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--api-token"), "{body}");
    let (status, body) = server.send(attempt(Some("attacker.example:8080"), None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("host_not_allowed"))
    );
    // A loopback Host but a foreign page.
    let (status, body) = server.send(attempt(None, Some("http://attacker.example"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "cross_origin_refused", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("token"), "{body}");
    let (status, _) = server.send(attempt(None, Some("null"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Loopback names and origins, any port, and the allowed name, reach the handler (which
    // answers 404: the chat has no sandbox).
    for (host, origin) in [
        (Some("localhost"), None),
        (Some("localhost:9999"), Some("http://localhost:3000")),
        (Some("127.0.0.1:1"), Some("http://127.0.0.1:8080")),
        (Some("[::1]:8080"), Some("https://[::1]")),
        (Some("devbox.internal:8080"), Some("http://devbox.internal")),
    ] {
        let (status, body) = server.send(attempt(host, origin)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host:?} {origin:?}: {body}");
        assert_eq!(body["error"]["code"], "sandbox_not_found");
    }
    // /healthz answers whatever the Host, for a supervisor.
    let (status, _) = server
        .send(server.client().get(server.url("/healthz")).header("Host", "probe.example"))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn with_a_token_any_host_is_served_and_no_cors_headers_are_sent() {
    let env = TestEnv::new();
    let server = env.serve(&["--api-token", TOKEN]).await;
    let response = server
        .request(Method::GET, "/v1/sandboxes")
        .header("Host", "sandkeeper.example")
        .header("Origin", "http://attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        !response.headers().keys().any(|name| name.as_str().starts_with("access-control-")),
        "{:?}",
        response.headers()
    );
    // A browser's preflight gets no permission either.
    let preflight = server
        .client()
        .request(Method::OPTIONS, server.url("/v1/sandboxes"))
        .header("Origin", "http://attacker.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight.headers().keys().any(|name| name.as_str().starts_with("access-control-")),
        "{:?}",
        preflight.headers()
    );
}

#[tokio::test]
async fn uploads_to_chats_without_a_sandbox_are_refused_without_holding_their_bodies() {
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    let before = memory_kib(server.pid(), "VmRSS:");
    const UPLOADS: usize = 40;
    const SIZE: usize = 16 << 20;
    let data: &'static [u8] = Box::leak(vec![b'u'; SIZE].into_boxed_slice());
    let uploads = (0..UPLOADS).map(|n| {
        let chat = format!("7a1c2d3e-4f50-4617-8293-{n:012}");
        let request = server
            .request(Method::PUT, &format!("/v1/chats/{chat}/sandbox/files/big.bin"))
            .body(data);
        server.send(request)
    });
    for (status, body) in futures::future::join_all(uploads).await {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "sandbox_not_found", "{body}");
    }
    // 40 uploads of 16 MiB are 640 MiB; the server held none of them.
    let peak = memory_kib(server.pid(), "VmHWM:");
    let sent_kib = (UPLOADS * SIZE / 1024) as u64;
    assert!(
        peak < before + sent_kib / 8,
        "peak resident {peak} KiB (from {before} KiB) for {sent_kib} KiB of uploads"
    );
}

#[tokio::test]
async fn bodies_beyond_the_servers_body_memory_are_answered_503() {
    let env = TestEnv::new();
    // Exec bodies are read before the sandbox is looked up: with 1 MiB of stdin an exec body
    // is at most 2 MiB, and the server holds at most 3 MiB of bodies.
    let server = env
        .serve(&[
            "--exec-stdin-limit",
            "1m",
            "--file-size-limit",
            "1m",
            "--http-body-memory-limit",
            "3m",
        ])
        .await;
    let exec = format!("/v1/chats/{CHAT}/sandbox/exec");
    let declared = 1_900_000;
    // Two bodies on their way take 3.8 MB of the 3 MiB: the second is refused at once.
    let mut first = connect(&server).await;
    first
        .write_all(
            format!(
                "POST {exec} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: {declared}\r\n\r\n{{\"stdin\": \""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second = connect(&server).await;
    let mut request = format!(
        "POST {exec} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b' ', declared));
    // Written whole before the answer is read, as simple clients do.
    second.write_all(&request).await.unwrap();
    let (status, head, body) = read_answer(&mut second).await;
    assert_eq!(status, 503, "{head}");
    let body = json(&body);
    assert_eq!(body["error"]["code"], "body_capacity_reached", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--http-body-memory-limit"));
    drop(first);
    // Once the first is gone, a body of the same size is read and judged (404: no sandbox).
    // Padded with whitespace: the stdin itself must stay within its 1 MiB.
    let padded = format!(
        "{{\"command\": [\"true\"], \"stdin\": \"{}\"}}{}",
        "s".repeat(900_000),
        " ".repeat(declared - 900_100)
    );
    let answered = sandkeeper_tests::eventually(PATIENCE, || async {
        let (status, body) =
            server.send(server.request(Method::POST, &exec).body(padded.clone())).await;
        (status == StatusCode::NOT_FOUND).then_some(body)
    })
    .await;
    assert!(answered.is_some());
}

#[tokio::test]
async fn an_oversized_body_written_whole_before_reading_gets_its_413() {
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    // 4 MiB against a 64 KiB limit, written whole by a client that reads only afterwards.
    let size = 4 << 20;
    let mut stream = connect(&server).await;
    let mut request = format!(
        "PUT /v1/chats/{CHAT}/sandbox HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
         application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b' ', size));
    stream.write_all(&request).await.expect("the whole body is taken, not cut off");
    let (status, head, body) = read_answer(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    assert_eq!(json(&body)["error"]["code"], "body_too_large");

    // Python's urllib writes the whole body first too.
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import urllib.request, urllib.error\n\
             req = urllib.request.Request('{}', data=b' ' * (4 << 20), method='PUT')\n\
             try:\n    urllib.request.urlopen(req)\n\
             except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n",
            server.url(&format!("/v1/chats/{CHAT}/sandbox"))
        ))
        .output();
    match python {
        Ok(output) if output.status.success() || !output.stderr.is_empty() => {
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                text.starts_with("413 ") && text.contains("body_too_large"),
                "urllib saw: {text} {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        _ => eprintln!("python3 is not available: the urllib check is skipped"),
    }
    assert!(server.sandboxes().await.is_empty());
}

#[tokio::test]
async fn chat_ids_are_exact_and_answers_quote_a_bounded_prefix() {
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    for padded in [
        format!("%20{CHAT}"),
        format!("{CHAT}%20"),
        format!("{CHAT}%09"),
        format!("%0A{CHAT}"),
        format!("%C2%A0{CHAT}"),
    ] {
        for path in [
            format!("/v1/chats/{padded}/sandbox"),
            format!("/v1/chats/{padded}/sandbox/files/a.txt"),
        ] {
            let (status, body) = server.get(&path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(body["error"]["code"], "invalid_chat_id", "{path}: {body}");
        }
        let (status, body) =
            server.send(server.request(Method::PUT, &format!("/v1/chats/{padded}/sandbox"))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_chat_id"))
        );
    }

    // 50 KB of bad input anywhere gives a short answer that still names it.
    let long = "x".repeat(50_000);
    let exec_bodies = [
        format!("{{\"command\": [\"true\"], \"{long}\": 1}}"),
        format!("{{\"command\": [\"true\"], \"env\": {{\"{long}\": \"v\"}}}}"),
        format!("{{\"command\": [\"true\"], \"workdir\": \"/{long}\\u0001\"}}"),
    ];
    let exec = format!("/v1/chats/{CHAT}/sandbox/exec");
    let cases = [
        server.request(Method::GET, &format!("/v1/chats/{long}/sandbox")),
        server.request(Method::GET, &format!("/v1/chats/{long}/sandbox/files/a")),
        server.request(Method::GET, &format!("/v1/sandboxes?limit={long}")),
        server.request(Method::GET, &format!("/v1/sandboxes?status={long}")),
        server.request(Method::GET, &format!("/v1/sandboxes?{long}=1")),
        server
            .request(Method::PUT, &format!("/v1/chats/{CHAT}/sandbox"))
            .body(format!("{{\"{long}\": 1}}")),
    ]
    .into_iter()
    .chain(exec_bodies.map(|body| server.request(Method::POST, &exec).body(body)));
    for request in cases {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_client_error(), "{status}: {}", &text[..text.len().min(300)]);
        assert!(text.len() < 2048, "a {} byte answer: {}...", text.len(), &text[..300]);
    }
}

#[tokio::test]
async fn an_argument_over_the_kernels_limit_is_refused_naming_it() {
    let env = TestEnv::new();
    let server = env.serve(&[]).await;
    let exec = format!("/v1/chats/{CHAT}/sandbox/exec");
    // 131,072 bytes with its NUL would be 131,073: over MAX_ARG_STRLEN.
    let request = serde_json::json!({ "command": ["echo", "a".repeat(131_072)] });
    let (status, body) =
        server.send(server.request(Method::POST, &exec).body(request.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_command");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("element 1") && message.contains("131071"), "{message}");
    assert!(message.contains("MAX_ARG_STRLEN"), "{message}");
    // The total of the arguments is bounded too, and the answer says by how much.
    let request = serde_json::json!({ "command": vec!["a".repeat(100_000); 3] });
    let (status, body) =
        server.send(server.request(Method::POST, &exec).body(request.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("262144"), "{body}");
    // One byte under the limit is judged on (here: the chat has no sandbox).
    let request = serde_json::json!({ "command": ["echo", "a".repeat(131_071)] });
    let (status, body) =
        server.send(server.request(Method::POST, &exec).body(request.to_string())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
