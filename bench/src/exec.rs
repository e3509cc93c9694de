//! Running a command and moving a file through the API, against the same work done directly with
//! bollard in the same sandbox, interleaved round by round:
//!
//! - exec round trip: `POST /v1/chats/<chat>/sandbox/exec` of `sh -c 'echo ok'` (its answer read
//!   whole) against a raw bollard exec of the same command in the same container: create, start
//!   attached, read the output to its end, inspect until the exit code is known (target: median
//!   ratio <= 1.15);
//! - file transfer of 10 MiB: `PUT` and `GET /v1/chats/<chat>/sandbox/files/<path>` against a raw
//!   exec that streams the same bytes through `cat` into and out of `/workspace` (the floor of
//!   any exec-borne transfer; Docker's archive API cannot see the tmpfs workspace, see
//!   `docs/exec.md`). Reported as MiB/s with the ratio to the floor; no goal is set for it.
//!
//! Both run on the default busybox image, then again on `sandkeeper/python:bookworm` (Debian,
//! whose `/bin/sh` is dash and whose tools are GNU coreutils) when the engine has it; its rows
//! name the image.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use sandkeeper_adapters_docker::DEFAULT_IMAGE;
use tokio::io::AsyncWriteExt;

use crate::report::{self, Paired, Row, Summary, Verdict};
use crate::server::Server;

const EXEC_ROUNDS: usize = 40;
const EXEC_GOAL: f64 = 1.15;
/// The command both sides run, and what it prints.
const COMMAND: &[&str] = &["sh", "-c", "echo ok"];
const EXPECTED_STDOUT: &[u8] = b"ok\n";

const FILE_ROUNDS: usize = 8;
const FILE_SIZE: usize = 10 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;
const API_FILE: &str = "bench/blob.bin";
const RAW_FILE: &str = "/workspace/raw-blob.bin";
/// How often the raw side asks whether its exec has ended after its output did.
const RAW_POLL: Duration = Duration::from_millis(5);

/// The Debian image the measurement runs on as well (`cargo xtask image python`).
const PYTHON_IMAGE: &str = "sandkeeper/python:bookworm";

pub(crate) async fn run() -> Result<Vec<Row>, String> {
    let mut rows = run_on(DEFAULT_IMAGE, "").await?;
    let raw = crate::docker::connect().await?;
    let on_python = format!(" [image {PYTHON_IMAGE}]");
    if raw.inspect_image(PYTHON_IMAGE).await.is_err() {
        rows.push(Row::failed(
            &format!("exec round trip and file transfer{on_python}"),
            &format!("the engine has no {PYTHON_IMAGE}: build it with `cargo xtask image python`"),
        ));
        return Ok(rows);
    }
    match run_on(PYTHON_IMAGE, &on_python).await {
        Ok(mut more) => rows.append(&mut more),
        Err(error) => {
            rows.push(Row::failed(&format!("exec round trip and file transfer{on_python}"), &error))
        }
    }
    Ok(rows)
}

/// The exec and file rows on sandboxes of `image`; `suffix` ends each row's name.
async fn run_on(image: &str, suffix: &str) -> Result<Vec<Row>, String> {
    // The sandbox lives through the whole run; no background pass runs during it.
    crate::server::measure_on(image, &crate::server::quiet_with(&[]), async |server, raw| {
        let chat = uuid::Uuid::new_v4().to_string();
        let sandbox = Sandbox::create(server, raw, chat).await?;
        let mut rows = vec![sandbox.exec_round_trip().await?];
        rows.extend(sandbox.file_transfer().await?);
        for row in &mut rows {
            row.name.push_str(suffix);
        }
        Ok(rows)
    })
    .await
}

/// Creates and starts an exec of `argv` in `container` as `user` (`uid:gid`) with bollard alone,
/// attached: its id, output and input.
pub(crate) async fn start_raw(
    raw: &Docker,
    container: &str,
    user: &str,
    argv: Vec<String>,
    attach_stdin: bool,
) -> Result<(String, RawOutput, RawInput), String> {
    let config = ExecConfig {
        user: Some(user.to_owned()),
        attach_stdin: Some(attach_stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        working_dir: Some("/workspace".to_owned()),
        cmd: Some(argv),
        ..Default::default()
    };
    let exec =
        raw.create_exec(container, config).await.map_err(|e| format!("raw create_exec: {e}"))?.id;
    let options = StartExecOptions { detach: false, tty: false, output_capacity: None };
    let started =
        raw.start_exec(&exec, Some(options)).await.map_err(|e| format!("raw start_exec: {e}"))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err("the raw exec started detached".to_owned());
    };
    Ok((exec, output, input))
}

pub(crate) type RawOutput = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;
pub(crate) type RawInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// The `uid:gid` a sandbox's commands run as, from its container's label.
pub(crate) async fn sandbox_user(raw: &Docker, container: &str) -> Result<String, String> {
    let inspected =
        raw.inspect_container(container, None).await.map_err(|e| format!("inspect: {e}"))?;
    let uid = inspected
        .config
        .and_then(|config| config.labels)
        .and_then(|labels| labels.get("io.sandkeeper.uid").cloned())
        .ok_or_else(|| format!("container {container} has no io.sandkeeper.uid label"))?;
    Ok(format!("{uid}:{uid}"))
}

/// One sandbox, reached through the API and directly.
pub(crate) struct Sandbox<'a> {
    server: &'a Server,
    raw: &'a Docker,
    chat: String,
    container: String,
    /// `uid:gid` of the sandbox's commands.
    user: String,
}

impl<'a> Sandbox<'a> {
    /// Creates the chat's sandbox through the API (`201`), and finds the user its commands run
    /// as, for the raw side.
    pub(crate) async fn create(
        server: &'a Server,
        raw: &'a Docker,
        chat: String,
    ) -> Result<Sandbox<'a>, String> {
        let path = format!("/v1/chats/{chat}/sandbox");
        let created = server.expect(Method::PUT, &path, None, 201).await?;
        let container = created["container_id"]
            .as_str()
            .ok_or_else(|| format!("PUT answered no container_id: {created}"))?
            .to_owned();
        // The raw side runs as sandkeeper runs commands: as the sandbox's uid, not as the
        // container's main process.
        let user = sandbox_user(raw, &container).await?;
        Ok(Sandbox { server, raw, chat, container, user })
    }

    async fn exec_round_trip(&self) -> Result<Row, String> {
        let body = serde_json::json!({ "command": COMMAND }).to_string();
        let url = self.server.url(&format!("/v1/chats/{}/sandbox/exec", self.chat));
        let argv: Vec<String> = COMMAND.iter().map(|&arg| arg.to_owned()).collect();
        // One unmeasured round of each warms the connections and the engine.
        self.api_exec(&url, &body).await?;
        self.raw_exec(argv.clone(), None).await?;

        let (mut api, mut direct) = (Vec::new(), Vec::new());
        for round in 0..EXEC_ROUNDS {
            for api_turn in report::sides(round) {
                let started = Instant::now();
                if api_turn {
                    self.api_exec(&url, &body).await?;
                    api.push(started.elapsed());
                } else {
                    let stdout = self.raw_exec(argv.clone(), None).await?;
                    direct.push(started.elapsed());
                    if stdout != EXPECTED_STDOUT {
                        return Err(format!(
                            "the raw exec printed {:?}",
                            String::from_utf8_lossy(&stdout)
                        ));
                    }
                }
            }
        }
        Ok(Row::paired_at_most(
            "exec round trip: API POST .../exec vs raw bollard exec (same command, same \
             sandbox)",
            2,
            EXEC_GOAL,
            Paired::of(&format!(" of `{}`", COMMAND.join(" ")), ("API", &api), ("raw", &direct)),
        ))
    }

    /// One exec through the API; fails unless it ran and printed what it should.
    async fn api_exec(&self, url: &str, body: &str) -> Result<(), String> {
        let request = self.server.client().post(url).header("content-type", "application/json");
        let (status, json) = json_answer(request.body(body.to_owned()), "POST exec").await?;
        if status != StatusCode::OK
            || json["exit_code"] != 0
            || json["stdout"].as_str().map(str::as_bytes) != Some(EXPECTED_STDOUT)
        {
            return Err(format!("POST exec answered {status}: {json}"));
        }
        Ok(())
    }

    /// Runs `argv` in the container with bollard alone: its stdout once its exit code is 0.
    pub(crate) async fn raw_exec(
        &self,
        argv: Vec<String>,
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, String> {
        let (exec, mut output, mut input) =
            start_raw(self.raw, &self.container, &self.user, argv, stdin.is_some()).await?;
        let feed = async {
            if let Some(bytes) = stdin {
                input.write_all(bytes).await.map_err(|e| format!("raw stdin: {e}"))?;
                input.shutdown().await.map_err(|e| format!("raw stdin: {e}"))?;
            }
            Ok::<(), String>(())
        };
        let read = async {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(frame) = output.next().await {
                match frame.map_err(|e| format!("raw exec output: {e}"))? {
                    LogOutput::StdOut { message } => stdout.extend_from_slice(&message),
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    _ => {}
                }
            }
            Ok::<_, String>((stdout, stderr))
        };
        let (fed, read) = tokio::join!(feed, read);
        fed?;
        let (stdout, stderr) = read?;
        let exit_code = loop {
            let inspected =
                self.raw.inspect_exec(&exec).await.map_err(|e| format!("raw inspect_exec: {e}"))?;
            if inspected.running != Some(true) {
                break inspected.exit_code;
            }
            tokio::time::sleep(RAW_POLL).await;
        };
        if exit_code != Some(0) {
            return Err(format!(
                "the raw exec exited {exit_code:?}: {}",
                String::from_utf8_lossy(&stderr)
            ));
        }
        Ok(stdout)
    }

    async fn file_transfer(&self) -> Result<Vec<Row>, String> {
        let blob = blob(FILE_SIZE);
        let url = self.server.url(&format!("/v1/chats/{}/sandbox/files/{API_FILE}", self.chat));
        let raw_write = vec!["sh".to_owned(), "-c".to_owned(), format!("cat > {RAW_FILE}")];
        let raw_read = vec!["cat".to_owned(), RAW_FILE.to_owned()];
        // Unmeasured: the first upload creates the directory, and both sides warm up.
        self.api_upload(&url, &blob).await?;
        same_bytes("API", &self.api_download(&url).await?, &blob)?;
        self.raw_exec(raw_write.clone(), Some(&blob)).await?;
        self.raw_exec(raw_read.clone(), None).await?;

        let mut upload = (Vec::new(), Vec::new());
        let mut download = (Vec::new(), Vec::new());
        for round in 0..FILE_ROUNDS {
            for api_turn in report::sides(round) {
                let started = Instant::now();
                if api_turn {
                    self.api_upload(&url, &blob).await?;
                    upload.0.push(started.elapsed());
                } else {
                    self.raw_exec(raw_write.clone(), Some(&blob)).await?;
                    upload.1.push(started.elapsed());
                }
            }
            for api_turn in report::sides(round) {
                let started = Instant::now();
                if api_turn {
                    let read = self.api_download(&url).await?;
                    download.0.push(started.elapsed());
                    same_bytes("API", &read, &blob)?;
                } else {
                    let read = self.raw_exec(raw_read.clone(), None).await?;
                    download.1.push(started.elapsed());
                    same_bytes("raw", &read, &blob)?;
                }
            }
        }
        Ok(vec![transfer_row("upload", "PUT", &upload), transfer_row("download", "GET", &download)])
    }

    /// Uploads `blob`; a clone of `Bytes` shares the buffer, so no copy is timed.
    async fn api_upload(&self, url: &str, blob: &Bytes) -> Result<(), String> {
        let request =
            self.server.client().put(url).header("content-type", "application/octet-stream");
        let (status, json) = json_answer(request.body(blob.clone()), "PUT file").await?;
        if status != StatusCode::OK || json["size"] != blob.len() {
            return Err(format!("PUT file answered {status}: {json}"));
        }
        Ok(())
    }

    /// Downloads the file; the caller compares it, outside the timed part.
    async fn api_download(&self, url: &str) -> Result<Bytes, String> {
        let response = self
            .server
            .client()
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET file: no answer: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("GET file: the body: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("GET file answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body)
    }
}

/// Fails unless `read` is `written`, byte for byte.
fn same_bytes(side: &str, read: &[u8], written: &[u8]) -> Result<(), String> {
    if read == written {
        Ok(())
    } else {
        Err(format!(
            "the {side} read returned {} bytes unlike the {} written",
            read.len(),
            written.len()
        ))
    }
}

/// Sends `request` and reads its answer as JSON; `what` names the request in errors.
pub(crate) async fn json_answer(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(StatusCode, serde_json::Value), String> {
    let response = request.send().await.map_err(|e| format!("{what}: no answer: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{what}: the answer: {e}"))?;
    let json = serde_json::from_str(&text)
        .map_err(|e| format!("{what} answered {status}, not JSON ({e}): {text}"))?;
    Ok((status, json))
}

/// Bytes that do not compress, the same in every run.
pub(crate) fn blob(size: usize) -> Bytes {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Throughput of each side (MiB/s) and the median of the paired time ratios, API over raw.
fn transfer_row(
    operation: &str,
    method: &str,
    (api, direct): &(Vec<Duration>, Vec<Duration>),
) -> Row {
    let rate = |samples: &[Duration]| -> Vec<f64> {
        samples.iter().map(|taken| FILE_SIZE as f64 / MIB / taken.as_secs_f64()).collect()
    };
    let (api_rate, raw_rate) = (rate(api), rate(direct));
    let ratio = report::paired_ratio(&report::seconds(api), &report::seconds(direct));
    Row {
        name: format!(
            "file {operation} of 10 MiB: API {method} .../files/<path> vs a raw exec streaming \
             the bytes through cat"
        ),
        figure: format!("{:.0} MiB/s ({ratio:.2}x the time)", report::median(&api_rate)),
        goal: "none (reported)".to_owned(),
        met: Verdict::Reported,
        detail: format!(
            "median of {FILE_ROUNDS} interleaved rounds; API {}; raw {} ({})",
            report::spread(&api_rate, 0, " MiB/s"),
            report::spread(&raw_rate, 0, " MiB/s"),
            Summary::of(direct)
        ),
    }
}
