//! A Python workload end to end on `sandkeeper/python:bookworm` (built by `cargo xtask image
//! python`), whatever `SANDKEEPER_TEST_IMAGE` says: a script uploaded through the file API runs
//! with `python3`, the file it wrote comes back, a virtual environment made under /workspace
//! runs its own interpreter, and non-ASCII text survives the trip. Skips (printing so) without
//! the engine or the image, and fails without them when SANDKEEPER_REQUIRE_DOCKER=1.

use reqwest::Method;
use sandkeeper_tests::{Server, StatusCode, TestEnv, docker_with_image};
use serde_json::{Value, json};

const IMAGE: &str = "sandkeeper/python:bookworm";
const GREETING: &str = "héllo ✓ 日本";

const SCRIPT: &str = r#"import json, pathlib, sys

data = json.load(sys.stdin)
total = sum(data["values"])
out = pathlib.Path("reports/result.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"total": total, "greeting": data["greeting"]}, ensure_ascii=False), encoding="utf-8")
print(data["greeting"], total)
print("python", sys.version_info.major, file=sys.stderr)
"#;

async fn exec(server: &Server, chat_id: &str, body: Value) -> Value {
    let (status, answer) = server.exec(chat_id, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_script_uploaded_runs_writes_a_file_and_a_venv_works() {
    let test = "a_python_script_uploaded_runs_writes_a_file_and_a_venv_works";
    if !docker_with_image(test, IMAGE, "cargo xtask image python") {
        return;
    }
    let env = TestEnv::with_image(IMAGE);
    let server = env.serve(&[]).await;
    let chat_id = uuid::Uuid::new_v4().to_string();
    let sandbox = server.created(&chat_id).await;
    let container = sandbox["container_id"].as_str().expect("a container id");
    let inspect = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Config.Image}}", container])
        .output()
        .expect("docker inspect runs");
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), IMAGE, "the sandbox's image");

    let request = server
        .request(Method::PUT, &format!("/v1/chats/{chat_id}/sandbox/files/jobs/report.py"))
        .body(SCRIPT);
    let (status, body) = server.send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["size"], SCRIPT.len());

    let input = json!({"values": [1, 2, 3.5], "greeting": GREETING}).to_string();
    let answer =
        exec(&server, &chat_id, json!({"command": ["python3", "jobs/report.py"], "stdin": input}))
            .await;
    assert_eq!(answer["exit_code"], 0, "{answer}");
    assert_eq!(answer["stdout"], format!("{GREETING} 6.5\n"), "non-ASCII output intact");
    assert_eq!(answer["stderr"], "python 3\n");

    let response = server
        .request(Method::GET, &format!("/v1/chats/{chat_id}/sandbox/files/reports/result.json"))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), StatusCode::OK);
    let written = response.bytes().await.expect("a body");
    let written: Value = serde_json::from_slice(&written).expect("the script wrote JSON");
    assert_eq!(written, json!({"total": 6.5, "greeting": GREETING}));

    // An exception is the script's failure, not sandkeeper's: exit 1 and the traceback.
    let answer = exec(&server, &chat_id, json!({"command": ["python3", "-c", "1/0"]})).await;
    assert_eq!(answer["exit_code"], 1, "{answer}");
    let stderr = answer["stderr"].as_str().unwrap_or_default();
    assert!(stderr.contains("ZeroDivisionError"), "{answer}");

    // A virtual environment under /workspace, with its own interpreter and pip.
    let answer = exec(
        &server,
        &chat_id,
        json!({"command": ["python3", "-m", "venv", "/workspace/venv"], "timeout_ms": 180_000}),
    )
    .await;
    assert_eq!(answer["exit_code"], 0, "{answer}");
    let answer = exec(
        &server,
        &chat_id,
        json!({"command": ["venv/bin/python", "-c",
            "import sys; print(sys.prefix, sys.prefix != sys.base_prefix)"]}),
    )
    .await;
    assert_eq!(answer["stdout"], "/workspace/venv True\n", "{answer}");
    let answer = exec(
        &server,
        &chat_id,
        json!({"command": ["venv/bin/pip", "--version"], "timeout_ms": 60_000}),
    )
    .await;
    let pip = answer["stdout"].as_str().unwrap_or_default();
    assert!(pip.contains("/workspace/venv/lib/python3"), "pip of the venv: {answer}");
}
