//! The harness of sandkeeper's black-box tests: it runs the real `sandkeeper` binary.
//!
//! Every test gets a [`TestEnv`]: a fresh data dir and a unique instance id, so that the
//! containers it makes carry a label of their own. Dropping the environment removes every
//! container with that label, also when the test failed. [`TestEnv::serve`] starts
//! `sandkeeper serve --listen 127.0.0.1:0` and reads the bound address from its log.
//!
//! Tests that need Docker or PostgreSQL call [`docker`] / [`postgres_url`] first: without the
//! service they print that they skipped, unless `SANDKEEPER_REQUIRE_DOCKER=1` /
//! `SANDKEEPER_REQUIRE_POSTGRES=1` is set, in which case they fail. Those checks, and the starts
//! built on them ([`TestEnv::docker_server`] and the like), answer `None` where the test skips;
//! [`or_skip!`] returns from the test there.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use reqwest::StatusCode;
use serde_json::Value;

mod cluster;
mod engine;
pub mod events;
mod immutable;
mod sandbox;
pub use cluster::PrivateCluster;
pub use engine::PrivateEngine;
pub use immutable::Immutable;
pub use sandbox::{assert_error, chat};

/// The label every container of an instance carries.
pub const INSTANCE_LABEL: &str = "io.sandkeeper.instance";

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `sandkeeper` binary of this build: `target/<profile>/sandkeeper`, next to the directory
/// of this test executable (`target/<profile>/deps`). `SANDKEEPER_BIN` overrides it.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("SANDKEEPER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let binary = profile_dir.join(format!("sandkeeper{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the sandkeeper binary is missing at {}: build it with `cargo build -p sandkeeper-app` \
         (cargo xtask test does), or point SANDKEEPER_BIN at it",
        binary.display()
    );
    binary
}

/// The value in an `Option` that a check of a test's services answered ([`docker`],
/// [`TestEnv::docker_server`], ...); at `None`, which the check answers only once it has said
/// that the test skips, it returns from the test.
#[macro_export]
macro_rules! or_skip {
    ($checked:expr) => {
        match $checked {
            Some(value) => value,
            None => return,
        }
    };
}

fn required(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|value| value == "1")
}

/// The name of the running test, for the messages of a skipped or failed test: libtest runs
/// every test on a thread of its own, named after the test (`module::test`).
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("a test").to_owned()
}

/// Whether the Docker tests can run. Without an engine it prints that the test skipped and
/// returns `None`, unless `SANDKEEPER_REQUIRE_DOCKER=1`, when it panics. With an engine it
/// checks that the sandbox image is there and returns its name.
pub fn docker(test: &str) -> Option<String> {
    if !engine_answers(test) {
        return None;
    }
    let image = sandbox_image();
    assert!(
        image_present(&image),
        "{test}: the sandbox image `{image}` is not on the Docker engine: build it with \
         `cargo xtask image`, or set SANDKEEPER_TEST_IMAGE to an image that runs `sleep infinity`"
    );
    Some(image)
}

/// Like [`docker`] for a test that always runs on one image of its own, whatever
/// `SANDKEEPER_TEST_IMAGE` says: without the engine or without that image it prints that the
/// test skipped and returns `false`, unless `SANDKEEPER_REQUIRE_DOCKER=1`, when it panics.
/// `build` is the command that makes the image.
pub fn docker_with_image(test: &str, image: &str, build: &str) -> bool {
    if !engine_answers(test) {
        return false;
    }
    if image_present(image) {
        return true;
    }
    skip_without_docker(
        test,
        &format!("the image `{image}` is not on the Docker engine: build it with `{build}`"),
    );
    false
}

/// Says that `test` skipped for `reason`, or panics when `SANDKEEPER_REQUIRE_DOCKER=1`.
fn skip_without_docker(test: &str, reason: &str) {
    assert!(
        !required("SANDKEEPER_REQUIRE_DOCKER"),
        "{test}: SANDKEEPER_REQUIRE_DOCKER=1 but {reason}"
    );
    println!("skipped {test}: {reason}");
}

/// Whether an engine answers; without one, says that `test` skipped (or panics when
/// `SANDKEEPER_REQUIRE_DOCKER=1`).
fn engine_answers(test: &str) -> bool {
    let answers = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !answers {
        skip_without_docker(test, "no Docker engine answers `docker version`");
    }
    answers
}

fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The image the tests run: `SANDKEEPER_TEST_IMAGE`, else sandkeeper's default.
pub fn sandbox_image() -> String {
    std::env::var("SANDKEEPER_TEST_IMAGE").unwrap_or_else(|_| "sandkeeper/sandbox:latest".into())
}

/// The pids limit the tests give sandboxes under gVisor: the one `docs/security.md` advises.
pub const GVISOR_PIDS_LIMIT: &str = "1024";

/// The OCI runtime the tests' sandboxes run under: `SANDKEEPER_TEST_RUNTIME` (`runsc` for
/// gVisor; the engine of `DOCKER_HOST` must have it registered), else the engine's default.
pub fn sandbox_runtime() -> Option<String> {
    std::env::var("SANDKEEPER_TEST_RUNTIME").ok().filter(|runtime| !runtime.is_empty())
}

/// The PostgreSQL server of `DATABASE_URL`, if set. Without it the test prints that it skipped
/// and gets `None`, unless `SANDKEEPER_REQUIRE_POSTGRES=1`, when it panics.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Some(url),
        _ => {
            assert!(
                !required("SANDKEEPER_REQUIRE_POSTGRES"),
                "{test}: SANDKEEPER_REQUIRE_POSTGRES=1 but DATABASE_URL is not a postgres:// URL"
            );
            println!("skipped {test}: DATABASE_URL is not a postgres:// URL");
            None
        }
    }
}

/// A fresh, uniquely named database on the server of `url`, dropped (with its connections) when
/// this is dropped.
#[derive(Debug)]
pub struct TempDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TempDatabase {
    pub async fn create(admin_url: &str) -> Self {
        use sqlx::Connection;
        let name = format!("sandkeeper_bb_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to DATABASE_URL: {error}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        admin.close().await.ok();
        let url = replace_database(admin_url, &name);
        Self { admin_url: admin_url.to_owned(), name, url }
    }

    /// The database of a test that needs PostgreSQL and Docker: `None` where [`postgres_url`]
    /// or [`docker`] says the test skips (naming it by [`test_name`]).
    pub async fn for_docker_test() -> Option<Self> {
        let test = test_name();
        let admin_url = postgres_url(&test)?;
        docker(&test)?;
        Some(Self::create(&admin_url).await)
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread with its own runtime can block on it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin =
                    sqlx::PgConnection::connect(&admin_url).await.map_err(std::io::Error::other)?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}: {dropped:?}", self.name);
        }
    }
}

/// `postgres://user@host:port/db?query` with `db` replaced by `name`.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut replaced = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

/// One test's world: a data dir, an instance id, and the removal of its containers at the end.
#[derive(Debug)]
pub struct TestEnv {
    instance_id: String,
    data_dir: tempfile::TempDir,
    image: String,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_image(&sandbox_image())
    }

    /// The environment of a test that needs Docker: `None` where [`docker`] says the test skips
    /// (naming it by [`test_name`]).
    pub fn for_docker() -> Option<Self> {
        docker(&test_name()).map(|_| Self::new())
    }

    /// How most Docker tests start: the environment (`None` where [`docker`] says the test
    /// skips) and a server with `args`. Keep the environment bound to the end of the test:
    /// dropping it checks for leftover containers.
    pub async fn docker_server(args: &[&str]) -> Option<(Self, Server)> {
        let env = Self::for_docker()?;
        let server = env.serve(args).await;
        Some((env, server))
    }

    /// Like [`TestEnv::docker_server`], and a chat whose sandbox runs.
    pub async fn docker_sandbox_with(args: &[&str]) -> Option<(Self, Server, String)> {
        let (env, server) = Self::docker_server(args).await?;
        let chat_id = server.new_sandbox().await;
        Some((env, server, chat_id))
    }

    /// [`TestEnv::docker_sandbox_with`] the default settings.
    pub async fn docker_sandbox() -> Option<(Self, Server, String)> {
        Self::docker_sandbox_with(&[]).await
    }

    /// An environment whose servers run sandboxes of `image` (`--image`).
    pub fn with_image(image: &str) -> Self {
        let instance_id = format!("bb-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let data_dir = tempfile::Builder::new()
            .prefix("sandkeeper-blackbox-")
            .tempdir()
            .expect("a temporary data dir");
        Self { instance_id, data_dir, image: image.to_owned() }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// `sandkeeper <subcommand>` with this environment's data dir and instance id (and image,
    /// for the commands that take one), and no `SANDKEEPER_*` variable of the caller's shell.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(binary());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SANDKEEPER_") {
                command.env_remove(name);
            }
        }
        command.arg(subcommand).arg("--data-dir").arg(self.data_dir());
        if subcommand != "migrate" {
            command.args(["--instance-id", &self.instance_id, "--image", &self.image]);
            if let Some(runtime) = sandbox_runtime() {
                command.args(["--runtime", &runtime]);
                if runtime == "runsc" {
                    // gVisor's own threads count against the pids limit (docs/security.md).
                    command.args(["--pids-limit", GVISOR_PIDS_LIMIT]);
                }
            }
        }
        command
    }

    /// Starts `sandkeeper serve` on a free loopback port with `args` added.
    pub async fn serve(&self, args: &[&str]) -> Server {
        self.serve_with_env(args, &[]).await
    }

    /// Starts `sandkeeper serve` with `args` and extra environment variables.
    pub async fn serve_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = self.command("serve");
        command.args(["--listen", "127.0.0.1:0"]).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let token = args
            .iter()
            .position(|arg| *arg == "--api-token")
            .and_then(|i| args.get(i + 1))
            .map(|token| (*token).to_owned());
        Server::start(command, token).await
    }

    /// The ids of this instance's containers: running ones, or all with `all`.
    pub fn containers(&self, all: bool) -> Vec<String> {
        containers_of(&self.instance_id, all)
    }

    /// The ids of this instance's containers made for the warm pool (`io.sandkeeper.pool`),
    /// all of them: ready, starting, or claimed by a chat since (labels never change).
    pub fn pooled_containers(&self) -> Vec<String> {
        let mut command = Command::new("docker");
        command
            .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
            .arg(format!("label={INSTANCE_LABEL}={}", self.instance_id))
            .args(["--filter", "label=io.sandkeeper.pool=true"]);
        listed(&mut command)
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let leftovers = containers_of(&self.instance_id, true);
        if !leftovers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&leftovers)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn containers_of(instance_id: &str, all: bool) -> Vec<String> {
    let mut command = Command::new("docker");
    command
        .args(["ps", "-q", "--no-trunc", "--filter"])
        .arg(format!("label={INSTANCE_LABEL}={instance_id}"));
    if all {
        command.arg("-a");
    }
    listed(&mut command)
}

/// The container ids a `docker ps -q` prints; none when it fails.
fn listed(command: &mut Command) -> Vec<String> {
    match command.stderr(Stdio::null()).output() {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

/// The labels of a container, as `docker inspect` shows them.
pub fn container_label(container_id: &str, label: &str) -> Option<String> {
    let output = Command::new("docker")
        .args([
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{label}\"}}}}"),
            container_id,
        ])
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A running `sandkeeper serve`, killed when dropped unless it was stopped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    base_url: String,
    logs: Arc<Mutex<String>>,
    token: Option<String>,
    client: reqwest::Client,
}

impl Server {
    async fn start(mut command: Command, token: Option<String>) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary().display()));
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let started = Instant::now();
        let address = loop {
            if let Some(address) = listening_address(&logs.lock().unwrap()) {
                break address;
            }
            if let Some(status) = child.try_wait().expect("the server can be waited for") {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "sandkeeper serve exited ({status}) before listening:\n{}",
                    logs.lock().unwrap()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "sandkeeper serve did not log `listening on` within {START_TIMEOUT:?}:\n{}",
                    logs.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Self { child, base_url: format!("http://{address}"), logs, token, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// A client without credentials, to test authentication.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request with the server's token, if it has one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and reads the JSON answer (`Value::Null` for an empty body).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text}"))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn put_sandbox(&self, chat_id: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::PUT, &format!("/v1/chats/{chat_id}/sandbox"))).await
    }

    pub async fn put_sandbox_with(&self, chat_id: &str, body: &str) -> (StatusCode, Value) {
        let request = self
            .request(reqwest::Method::PUT, &format!("/v1/chats/{chat_id}/sandbox"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    pub async fn delete_sandbox(&self, chat_id: &str) -> (StatusCode, Value) {
        self.send(self.request(reqwest::Method::DELETE, &format!("/v1/chats/{chat_id}/sandbox")))
            .await
    }

    /// The sessions `GET /v1/sandboxes` lists.
    pub async fn sandboxes(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/sandboxes").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["sandboxes"].as_array().expect("a sandboxes array").clone()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("a body")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill can be run");
        assert!(sent.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the server can be waited for") {
                return status;
            }
            assert!(
                started.elapsed() < STOP_TIMEOUT,
                "sandkeeper did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in a `listening on <addr>` log line.
fn listening_address(logs: &str) -> Option<String> {
    let start = logs.find("listening on ")? + "listening on ".len();
    let rest = &logs[start..];
    let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == ',')?;
    Some(rest[..end].to_owned())
}

/// A stand-in for the Docker engine's socket: a Unix socket that forwards to the real one, so
/// that a test can make Docker "come back" (start the proxy late) or slow it down (to hold a
/// request in flight).
#[derive(Debug)]
pub struct DockerProxy {
    accept: tokio::task::JoinHandle<()>,
    delay: SharedDelay,
}

/// How long the proxy holds each request, and whom it tells; `None` forwards at once.
type SharedDelay = Arc<Mutex<Option<(Duration, tokio::sync::mpsc::UnboundedSender<()>)>>>;

impl DockerProxy {
    /// The engine's socket, when `DOCKER_HOST` is unset or a `unix://` path.
    pub fn engine_socket() -> Option<PathBuf> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(PathBuf::from),
            _ => Some(PathBuf::from("/var/run/docker.sock")),
        }
    }

    /// The engine's socket for a test that proxies it: `None` where [`docker`] says the test
    /// skips (naming it by [`test_name`]), or (printing so) when `DOCKER_HOST` is not a Unix
    /// socket.
    pub fn engine_for_test() -> Option<PathBuf> {
        let test = test_name();
        docker(&test)?;
        let engine = Self::engine_socket();
        if engine.is_none() {
            println!("skipped {test}: DOCKER_HOST is not a unix socket");
        }
        engine
    }

    /// Listens on `socket` and forwards every connection to `engine`.
    pub fn start(socket: &Path, engine: PathBuf) -> Self {
        let listener = tokio::net::UnixListener::bind(socket).expect("bind the proxy socket");
        let delay = SharedDelay::default();
        let shared = Arc::clone(&delay);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let engine = engine.clone();
                let delay = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::UnixStream::connect(&engine).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_engine, mut to_engine) = outbound.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_engine, &mut to_client).await;
                    });
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let read = match from_client.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        let pause = delay.lock().unwrap().clone();
                        if let Some((pause, seen)) = pause {
                            let _ = seen.send(());
                            tokio::time::sleep(pause).await;
                        }
                        if to_engine.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { accept, delay }
    }

    /// From now on every request to the engine is held for `pause`; the receiver hears of each
    /// one as it arrives.
    pub fn slow_down(&self, pause: Duration) -> tokio::sync::mpsc::UnboundedReceiver<()> {
        let (seen, heard) = tokio::sync::mpsc::unbounded_channel();
        *self.delay.lock().unwrap() = Some((pause, seen));
        heard
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_text_and_json_logs() {
        let text = "2026-04-02T12:00:00Z  INFO sandkeeper: listening on 127.0.0.1:4321\n";
        assert_eq!(listening_address(text).as_deref(), Some("127.0.0.1:4321"));
        let json = r#"{"level":"INFO","message":"listening on 127.0.0.1:4321","addr":"x"}"#;
        assert_eq!(listening_address(json).as_deref(), Some("127.0.0.1:4321"));
        assert_eq!(listening_address("starting\n"), None);
    }

    #[test]
    fn the_database_of_a_postgres_url_is_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:55432/postgres", "x"),
            "postgres://postgres@127.0.0.1:55432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers of the chaos driver and the replica tests.
// ---------------------------------------------------------------------------------------------

pub mod chaos;

impl Server {
    /// Kills the server with SIGKILL, as a crash would, and reaps it: no shutdown runs, nothing
    /// in flight finishes.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("the killed server can be waited for")
    }
}

/// The value of one series in Prometheus text, e.g.
/// `sandbox_maintenance_runs_total{result="completed"}`; `None` when it is absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}
