//! The real `sandkeeper serve`, as users run it: the release binary on a free loopback port, with
//! a fresh data dir and a unique instance id. Stopping it (or dropping it) kills the process and
//! removes every container that carries its instance label.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use sandkeeper_adapters_docker::{DEFAULT_IMAGE, LABEL_INSTANCE};

use crate::docker;

/// How long the server may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The log lines shown when something went wrong.
const TAIL_LINES: usize = 30;
/// The bound on one request of the bench's own (a cleanup of 500 sandboxes included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The server's `RUST_LOG`: `info`, the default, since what a deployment logs is part of what it
/// costs; `BENCH_SERVER_LOG` overrides it to see that cost (keep `sandkeeper::serve` and
/// `sandkeeper_usecase::maintenance` at `info`: the bench waits for their lines).
pub(crate) fn log_filter() -> String {
    std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "info".to_owned())
}

/// The release `sandkeeper` binary next to this bench's executable (`target/release/`), or
/// `SANDKEEPER_BIN`.
fn binary() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("SANDKEEPER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("the bench's own path: {e}"))?;
    let binary = exe
        .parent()
        .ok_or("the bench executable has no directory")?
        .join(format!("sandkeeper{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "the sandkeeper binary is missing at {}: build it with \
             `cargo build --release -p sandkeeper-app` (cargo xtask bench does), or point \
             SANDKEEPER_BIN at it",
            binary.display()
        ))
    }
}

/// The arguments of a server that runs no background pass (cleanup, sweep) during a
/// measurement (their intervals outlast it), followed by the bench's own `extra`.
pub(crate) fn without_passes<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    ["--cleanup-interval", "1h", "--maintenance-interval", "1h"]
        .iter()
        .chain(extra)
        .copied()
        .collect()
}

/// [`without_passes`] for a server whose sandboxes also outlive the measurement, followed by
/// `extra`.
pub(crate) fn quiet_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    without_passes(&[&["--ttl", "30m"], extra].concat())
}

/// What the server logs once its start-up sweep is done.
pub(crate) const SWEEP_DONE: &str = "maintenance_sweep_completed";

/// Starts a server with `args` added, waits for its start-up sweep (so that no background pass
/// runs during the measurement), runs `measure` with it and a raw bollard client, then stops the
/// server and removes its containers, whatever `measure` returned.
pub(crate) async fn measure_with<T>(
    args: &[&str],
    measure: impl AsyncFnOnce(&Server, &Docker) -> Result<T, String>,
) -> Result<T, String> {
    measure_on(DEFAULT_IMAGE, args, measure).await
}

/// [`measure_with`] with a server whose sandboxes run `image`.
pub(crate) async fn measure_on<T>(
    image: &str,
    args: &[&str],
    measure: impl AsyncFnOnce(&Server, &Docker) -> Result<T, String>,
) -> Result<T, String> {
    let raw = docker::connect().await?;
    let server = Server::start_on(image, args).await?;
    let measured = match server.wait_for_log(SWEEP_DONE, Duration::from_secs(30)).await {
        Ok(()) => measure(&server, &raw).await,
        Err(error) => Err(error),
    };
    let removed = server.stop(&raw).await;
    let value = measured?;
    removed?;
    Ok(value)
}

/// A running `sandkeeper serve`.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    base_url: String,
    instance: String,
    log_path: PathBuf,
    client: reqwest::Client,
    /// Kept for the server's lifetime: the SQLite file and the log live in it.
    _data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `sandkeeper serve` with a fresh data dir, a fresh instance id, sandboxes of
    /// `image` (`--image`) and `args` added.
    pub(crate) async fn start_on(image: &str, args: &[&str]) -> Result<Self, String> {
        let data_dir = tempfile::Builder::new()
            .prefix("sandkeeper-bench-")
            .tempdir()
            .map_err(|e| format!("a temporary data dir: {e}"))?;
        Self::launch_on(None, data_dir, docker::instance_id(), image, args).await
    }

    /// [`Server::start_on`] with the engine at `host` (a `DOCKER_HOST` URL) instead of the
    /// default one.
    pub(crate) async fn start_on_engine(
        host: &str,
        image: &str,
        args: &[&str],
    ) -> Result<Self, String> {
        let data_dir = tempfile::Builder::new()
            .prefix("sandkeeper-bench-")
            .tempdir()
            .map_err(|e| format!("a temporary data dir: {e}"))?;
        Self::launch_on(Some(host), data_dir, docker::instance_id(), image, args).await
    }

    /// Starts `sandkeeper serve` on an existing data dir (for a store filled beforehand).
    pub(crate) async fn start_in(
        data_dir: tempfile::TempDir,
        instance: String,
        args: &[&str],
    ) -> Result<Self, String> {
        Self::launch_on(None, data_dir, instance, DEFAULT_IMAGE, args).await
    }

    async fn launch_on(
        engine: Option<&str>,
        data_dir: tempfile::TempDir,
        instance: String,
        image: &str,
        args: &[&str],
    ) -> Result<Self, String> {
        let binary = binary()?;
        // The log goes to a file, as in a deployment; a pipe would make the bench itself pay
        // for reading every line while it measures.
        let log_path = data_dir.path().join("sandkeeper.log");
        let log_file = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let mut command = Command::new(&binary);
        // The bench decides every setting; none leaks in from the caller's shell.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SANDKEEPER_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--image", image, "--instance-id", &instance])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(args)
            .env("RUST_LOG", log_filter())
            .envs(engine.map(|host| ("DOCKER_HOST", host)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child =
            command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("an HTTP client: {e}"))?;
        let mut server = Self {
            child,
            base_url: String::new(),
            instance,
            log_path,
            client,
            _data_dir: data_dir,
        };
        let started = Instant::now();
        loop {
            if let Some(address) = listening_address(&server.log()) {
                server.base_url = format!("http://{address}");
                eprintln!("bench: sandkeeper serve (pid {}) at {}", server.pid(), server.base_url);
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(format!(
                    "sandkeeper serve exited ({status}) before listening:\n{}",
                    server.log_tail()
                ));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "sandkeeper serve did not log `listening on` within {START_TIMEOUT:?}:\n{}",
                    server.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the server logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines the server logged.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// Waits until the server logs a line that contains `needle` (read from the whole log: use
    /// it before the log grows large).
    pub(crate) async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        while !self.log().contains(needle) {
            if started.elapsed() > timeout {
                return Err(format!(
                    "the server did not log `{needle}` within {timeout:?}:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// A keep-alive HTTP/1.1 client for this server.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request and returns its status and body, parsed as JSON when there is one.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), String> {
        let mut request = self.client.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response =
            request.send().await.map_err(|e| format!("{method} {path}: no answer: {e}"))?;
        let status = response.status();
        let text =
            response.text().await.map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                format!("{method} {path}: answer {status} is not JSON ({e}): {text}")
            })?
        };
        Ok((status, json))
    }

    /// Like [`Server::call`], failing unless the status is `expected`.
    pub(crate) async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        expected: u16,
    ) -> Result<serde_json::Value, String> {
        let (status, json) = self.call(method.clone(), path, body).await?;
        if status.as_u16() == expected {
            Ok(json)
        } else {
            Err(format!("{method} {path} answered {status}, expected {expected}: {json}"))
        }
    }

    /// `/proc/<pid>/status` fields in KiB, e.g. `VmRSS`, `VmHWM`.
    pub(crate) fn memory_kib(&self, field: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
            .ok_or_else(|| format!("{path} has no `{field}: <n> kB` line"))
    }

    /// Stops the server (SIGTERM, then SIGKILL if it lingers) and removes every container of its
    /// instance; returns how many containers were left to remove.
    pub(crate) async fn stop(mut self, raw: &Docker) -> Result<usize, String> {
        self.terminate().await;
        docker::remove_instance(raw, &self.instance).await
    }

    async fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let asked = Instant::now();
        while asked.elapsed() < STOP_TIMEOUT {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    /// The backstop when a bench fails or panics before [`Server::stop`]: kill the process and
    /// remove the instance's containers with the docker CLI (a drop cannot await bollard).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let filter = format!("label={LABEL_INSTANCE}={}", self.instance);
        let listed =
            Command::new("docker").args(["ps", "-aq", "--no-trunc", "--filter", &filter]).output();
        let ids: Vec<String> = match &listed {
            Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        if ids.is_empty() {
            return;
        }
        let removed = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !removed.is_ok_and(|status| status.success()) {
            eprintln!(
                "bench: could not remove the containers of instance {}; remove them with \
                 `docker rm -f $(docker ps -aq --filter {filter})`",
                self.instance
            );
        }
    }
}

/// The address of the first `listening on <addr>` log line.
fn listening_address(log: &str) -> Option<String> {
    let start = log.find("listening on ")? + "listening on ".len();
    let rest = &log[start..];
    // Only a finished line counts: the file may end in the middle of one.
    let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == ',')?;
    Some(rest[..end].to_owned()).filter(|address| !address.is_empty())
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn the_address_comes_from_a_finished_listening_line() {
        let log = "2026-11-23T14:50:03Z  INFO sandkeeper::serve: sandkeeper started\n\
                   2026-11-23T14:50:03Z  INFO sandkeeper::serve: listening on 127.0.0.1:46801\n";
        assert_eq!(listening_address(log).as_deref(), Some("127.0.0.1:46801"));
        // The server may be in the middle of writing the line.
        assert_eq!(listening_address("INFO sandkeeper::serve: listening on 127.0.0"), None);
        assert_eq!(listening_address("INFO sandkeeper::serve: sandkeeper started\n"), None);
    }
}
