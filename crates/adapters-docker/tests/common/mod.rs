//! What every engine test shares: a runtime with a fresh instance id per test, the guard that
//! removes every container of that instance when the test ends (even by panic), and readers of
//! the engine through the docker CLI, independent of the adapter.

// Each test binary uses a part of this module.
#![allow(dead_code, unreachable_pub)]

// The image is built with the same code as `cargo xtask image`, without depending on xtask.
#[path = "../../../../xtask/src/image/mod.rs"]
pub(crate) mod image;

use std::process::Command;
use std::sync::OnceLock;

use chrono::{TimeDelta, Utc};
use sandkeeper_adapters_docker::{DURATION_METRIC, DockerConfig, DockerRuntime, LABEL_INSTANCE};
use sandkeeper_domain::{ChatId, ContainerId, SessionId};
use sandkeeper_ports::{ContainerSpec, SandboxRuntime};
use serde_json::Value;

/// Containers a test makes behind the adapter's back carry this label so they are cleaned up too.
pub(crate) const TEST_OWNER_LABEL: &str = "sandkeeper-test.owner";

/// One test's view of the engine: a runtime with a fresh instance id, and the guard that
/// removes everything of that instance when the test ends.
pub(crate) struct Engine {
    pub(crate) runtime: DockerRuntime,
    pub(crate) instance: String,
    _cleanup: Cleanup,
}

impl Engine {
    /// `None` (after saying so) when no engine answers, unless one is required.
    pub(crate) async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, |config| config).await
    }

    /// An engine (as [`Engine::start`]) with one sandbox of a fresh [`spec`] created on it.
    pub(crate) async fn with_sandbox(test: &str) -> Option<(Self, ContainerId)> {
        let engine = Self::start(test).await?;
        let id = engine.runtime.create(&spec()).await.unwrap();
        Some((engine, id))
    }

    pub(crate) async fn start_with(
        test: &str,
        adjust: impl FnOnce(DockerConfig) -> DockerConfig,
    ) -> Option<Self> {
        let instance = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let cleanup = Cleanup { instance: instance.clone() };
        let config = adjust(DockerConfig::new(test_image(), instance.clone()));
        let runtime = DockerRuntime::new(config).expect("the test configuration is valid");
        if let Err(error) = runtime.ping().await {
            let reason = format!("no Docker engine at {}: {error}", runtime.endpoint());
            if std::env::var("SANDKEEPER_REQUIRE_DOCKER").is_ok_and(|value| value == "1") {
                panic!("SANDKEEPER_REQUIRE_DOCKER=1 but {reason}");
            }
            eprintln!("skipped {test}: {reason}");
            return None;
        }
        if std::env::var_os("SANDKEEPER_TEST_IMAGE").is_none() {
            let image = IMAGE_ID.get_or_init(|| image::build_image(false));
            if let Err(error) = image {
                panic!("cannot build the sandbox image {}: {error}", image::IMAGE);
            }
        }
        Some(Self { runtime, instance, _cleanup: cleanup })
    }

    /// Another runtime on the same engine for another instance, cleaned up with this test.
    pub(crate) fn other_instance(&self) -> (DockerRuntime, Cleanup) {
        let instance = format!("{}-other", self.instance);
        let runtime =
            DockerRuntime::new(DockerConfig::new(test_image(), instance.clone())).unwrap();
        (runtime, Cleanup { instance })
    }

    /// Starts a container with the given labels through the docker CLI, not the adapter.
    pub(crate) fn run_foreign(&self, labels: &[(&str, &str)]) -> ContainerId {
        let mut command = Command::new("docker");
        command.args(["run", "--detach", "--network", "none", "--label"]);
        command.arg(format!("{TEST_OWNER_LABEL}={}", self.instance));
        for (key, value) in labels {
            command.arg("--label").arg(format!("{key}={value}"));
        }
        command.args([test_image().as_str(), "sleep", "infinity"]);
        ContainerId::new(docker_ok(&mut command)).unwrap()
    }
}

pub(crate) static IMAGE_ID: OnceLock<Result<String, String>> = OnceLock::new();

/// The image the tests run: `SANDKEEPER_TEST_IMAGE` (e.g. one whose `/bin/sh` is dash or
/// bash, to check that what runs inside a sandbox works there too), else the default sandbox
/// image, built when missing.
pub(crate) fn test_image() -> String {
    std::env::var("SANDKEEPER_TEST_IMAGE").unwrap_or_else(|_| image::IMAGE.to_owned())
}

/// Removes every container of one instance (and the test's own foreign ones).
pub(crate) struct Cleanup {
    pub(crate) instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for filter in [
            format!("label={LABEL_INSTANCE}={}", self.instance),
            format!("label={TEST_OWNER_LABEL}={}", self.instance),
        ] {
            let Ok(listed) =
                Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output()
            else {
                return;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ =
                    Command::new("docker").args(["rm", "--force", "--volumes"]).args(&ids).output();
            }
        }
    }
}

pub(crate) fn spec() -> ContainerSpec {
    let now = Utc::now();
    ContainerSpec {
        session_id: SessionId::new_v4(),
        chat_id: ChatId::from_uuid(uuid::Uuid::new_v4()),
        created_at: now,
        expires_at: now + TimeDelta::minutes(5),
    }
}

/// A runtime whose engine is nowhere (`unix:///nonexistent.sock`): every call fails at once.
pub(crate) fn runtime_without_engine() -> DockerRuntime {
    let config = DockerConfig {
        docker_host: Some("unix:///nonexistent.sock".to_owned()),
        ..DockerConfig::new(image::IMAGE, "test-no-engine")
    };
    DockerRuntime::new(config).unwrap()
}

/// The engine calls `calls` made on a [`runtime_without_engine`], as the durations they
/// recorded: how many samples of [`DURATION_METRIC`] each `operation` got, sorted.
pub(crate) fn durations_recorded<F>(calls: impl FnOnce(DockerRuntime) -> F) -> Vec<(String, usize)>
where
    F: std::future::Future<Output = ()>,
{
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = runtime_without_engine();
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio.block_on(calls(runtime));
    });
    let mut counts: Vec<(String, usize)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == DURATION_METRIC)
        .map(|(key, _, _, value)| {
            let operation = key
                .key()
                .labels()
                .find(|label| label.key() == "operation")
                .map(|label| label.value().to_owned())
                .unwrap_or_default();
            let metrics_util::debugging::DebugValue::Histogram(samples) = value else {
                panic!("{DURATION_METRIC} is not a histogram")
            };
            (operation, samples.len())
        })
        .collect();
    counts.sort();
    counts
}

/// Runs a docker CLI command that must succeed; returns its trimmed stdout.
pub(crate) fn docker_ok(command: &mut Command) -> String {
    let output = command.output().expect("the docker CLI runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub(crate) fn docker(args: &[&str]) -> String {
    docker_ok(Command::new("docker").args(args))
}

/// `docker inspect` of one container, or `None` when the engine does not know it.
pub(crate) fn inspect_json(id: &str) -> Option<Value> {
    let output =
        Command::new("docker").args(["inspect", "--type", "container", id]).output().unwrap();
    if !output.status.success() {
        return None;
    }
    let mut all: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    Some(all.remove(0))
}

/// `uid:gid` of the sandbox's commands, from the container's `io.sandkeeper.uid` label (for
/// `docker exec --user`: without it, `docker exec` runs as the container's main process).
pub(crate) fn sandbox_user(id: &ContainerId) -> String {
    let uid = docker(&[
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{}\"}}}}", sandkeeper_adapters_docker::LABEL_UID),
        id.as_str(),
    ]);
    format!("{uid}:{uid}")
}

/// Runs `script` in the container as sandkeeper runs commands there: as the sandbox's uid (its
/// `io.sandkeeper.uid` label), not as the container's main process; returns (success, output).
pub(crate) fn exec(id: &ContainerId, script: &str) -> (bool, String) {
    let user = sandbox_user(id);
    let output = Command::new("docker")
        .args(["exec", "--user", &user, id.as_str(), "sh", "-c", script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text.trim().to_owned())
}

/// The processes in the container whose command line contains `needle`, as `ps` lists them,
/// leaving out zombies (already dead, waiting for init to reap them).
pub(crate) fn processes_matching(id: &ContainerId, needle: &str) -> Vec<String> {
    let (_, listing) = exec(id, "ps -o pid,stat,args");
    listing
        .lines()
        .filter(|line| line.contains(needle))
        .filter(|line| line.split_whitespace().nth(1).is_none_or(|stat| !stat.starts_with('Z')))
        .map(str::to_owned)
        .collect()
}
