//! The API keeps to its document: Schemathesis, an API tester that knows nothing of sandkeeper
//! but `docs/openapi.yaml`, generates valid and invalid requests for every operation and checks
//! every answer against the document (status codes, content types, bodies, headers, that valid
//! requests are accepted and invalid ones refused, that no answer is a server error).
//!
//! It runs against the real binary with a token, with a fixed seed and a bounded number of
//! examples. Half of the generated requests name a chat whose sandbox exists, so that exec,
//! files and keep-alive are reached and not only answered 404.
//!
//! `cargo xtask test` installs Schemathesis (a pinned version, from PyPI, into
//! `target/schemathesis`) and passes its path in `SANDKEEPER_SCHEMATHESIS`. Without it the test
//! skips, saying so; with `SANDKEEPER_REQUIRE_SCHEMATHESIS=1` (as in CI) it fails instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sandkeeper_tests::{TestEnv, docker, or_skip};

const TOKEN: &str = "schemathesis-token";
/// Examples per operation and phase: enough to reach every rule of the document, small enough
/// for a CI run.
const MAX_EXAMPLES: &str = "40";
const SEED: &str = "20261205";
/// A run takes well under a minute here; a hung server must still fail the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn schemathesis(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SANDKEEPER_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let message = format!(
        "{test}: SANDKEEPER_SCHEMATHESIS does not name a schemathesis binary; `cargo xtask \
         test` installs one"
    );
    if std::env::var("SANDKEEPER_REQUIRE_SCHEMATHESIS").is_ok_and(|value| value == "1") {
        panic!("{message} (SANDKEEPER_REQUIRE_SCHEMATHESIS=1)");
    }
    eprintln!("{message}; skipped");
    None
}

fn openapi_document() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")
}

/// The run's configuration: the chat with a live sandbox is offered for half of the generated
/// chat ids.
///
/// File paths are generated in ASCII: the server bounds a path and each of its names in bytes
/// (what the kernel bounds), and a schema can only count characters, which are the same thing
/// in ASCII alone. Everything else is generated from all of Unicode. The terminal is left out: it
/// is a WebSocket, which Schemathesis does not speak (its black-box tests drive it with a real
/// WebSocket client). So is the upload of a workspace archive: Schemathesis cannot make an
/// `application/x-tar` body (the workspace tests and the fuzzer send good and bad archives).
fn config(live_chat: &str) -> String {
    format!(
        "[dictionaries.live-chat]\n\
         values = [\"{live_chat}\"]\n\
         \n\
         [parameters]\n\
         \"path.chat_id\" = {{ dictionary = \"live-chat\", probability = 0.5 }}\n\
         \n\
         [[operations]]\n\
         include-path-regex = \"/files/\"\n\
         generation.codec = \"ascii\"\n\
         \n\
         [[operations]]\n\
         include-path-regex = \"/terminal$\"\n\
         enabled = false\n\
         \n\
         [[operations]]\n\
         include-operation-id = \"uploadWorkspace\"\n\
         enabled = false\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_against_the_openapi_document() {
    let test = "schemathesis_finds_no_failure_against_the_openapi_document";
    if docker(test).is_none() {
        return;
    }
    let binary = or_skip!(schemathesis(test));
    let env = TestEnv::new();
    let server = env.serve(&["--api-token", TOKEN]).await;
    let live_chat = uuid::Uuid::new_v4().to_string();
    server.created(&live_chat).await;

    let config_path = env.data_dir().join("schemathesis.toml");
    std::fs::write(&config_path, config(&live_chat)).expect("the config can be written");
    let report = env.data_dir().join("schemathesis-report");
    let mut command = tokio::process::Command::new(&binary);
    command
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(openapi_document())
        .args(["--url", &server.url("")])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all", "--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1", "--request-timeout", "120"])
        .arg("--report-dir")
        .arg(&report)
        .current_dir(env.data_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let logs = server.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "schemathesis found failures ({}):\n{stdout}\n{stderr}\n--- the server's last log \
             lines ---\n{}",
            output.status,
            tail.join("\n")
        );
    }
    // A run that tested nothing would also exit 0.
    assert!(stdout.contains("Tested:"), "no summary in schemathesis' output:\n{stdout}");
    assert!(!stdout.contains("Tested: 0"), "schemathesis tested no operation:\n{stdout}");
}
