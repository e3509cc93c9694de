//! The command line: help, configuration errors, one-shot commands.

use std::process::Output;

use sandkeeper_tests::{TestEnv, binary};

fn run(env: &TestEnv, subcommand: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = env.command(subcommand);
    command.args(args);
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("sandkeeper runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `sandkeeper <subcommand> <args>` with `vars`, which must exit 2 with `message` in its
/// standard error.
fn assert_refused(
    env: &TestEnv,
    subcommand: &str,
    args: &[&str],
    vars: &[(&str, &str)],
    message: &str,
) {
    let output = run(env, subcommand, args, vars);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    assert!(stderr.contains(message), "{stderr}");
}

#[test]
fn help_explains_every_command_and_setting() {
    let top = std::process::Command::new(binary()).arg("--help").output().unwrap();
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    for command in ["serve", "migrate", "cleanup", "maintain"] {
        assert!(text.contains(command), "`{command}` missing from --help:\n{text}");
    }

    let serve = std::process::Command::new(binary()).args(["serve", "--help"]).output().unwrap();
    assert!(serve.status.success());
    let text = String::from_utf8_lossy(&serve.stdout);
    for (flag, default) in [
        ("--listen", Some("127.0.0.1:8080")),
        ("--data-dir", Some("./.sandkeeper")),
        ("--database-url", None),
        ("--ttl", Some("5m")),
        ("--cleanup-interval", Some("10s")),
        ("--maintenance-interval", Some("30s")),
        ("--orphan-grace", Some("60s")),
        ("--image", Some("sandkeeper/sandbox:latest")),
        ("--instance-id", Some("default")),
        ("--api-token", None),
        ("--api-token-file", None),
        ("--max-sandboxes", Some("64")),
        ("--http-header-timeout", Some("10s")),
        ("--http-idle-timeout", Some("60s")),
        ("--http-body-timeout", Some("60s")),
        ("--http-max-connections", Some("512")),
        ("--http-body-memory-limit", Some("256m")),
        ("--allowed-hosts", None),
        ("--max-ttl", Some("1h")),
        ("--log-format", Some("text")),
        ("--engine", None),
        ("--engine-loss-grace", Some("2m")),
    ] {
        assert!(text.contains(flag), "`{flag}` missing from serve --help:\n{text}");
        let variable = format!("SANDKEEPER_{}", flag[2..].replace('-', "_").to_uppercase());
        assert!(text.contains(&variable), "`{variable}` missing from serve --help:\n{text}");
        if let Some(default) = default {
            assert!(
                text.contains(&format!("[default: {default}]")),
                "default of `{flag}` not shown:\n{text}"
            );
        }
    }

    for command in ["migrate", "cleanup", "maintain"] {
        let help = std::process::Command::new(binary()).args([command, "--help"]).output().unwrap();
        assert!(help.status.success(), "{command} --help");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains("--database-url"), "{command} --help:\n{text}");
    }
}

#[test]
fn a_bad_ttl_exits_2_naming_the_setting_and_the_value() {
    let env = TestEnv::new();
    assert_refused(
        &env,
        "serve",
        &["--ttl", "abc"],
        &[],
        "--ttl: `abc` is not a duration like 30s or 5m",
    );

    assert_refused(
        &env,
        "serve",
        &[],
        &[("SANDKEEPER_TTL", "ten minutes")],
        "--ttl: `ten minutes` is not a duration like 30s or 5m (set by SANDKEEPER_TTL)",
    );
    assert!(!env.data_dir().join("sandkeeper.db").exists(), "a bad configuration touches nothing");
}

#[test]
fn a_bad_engine_exits_2_naming_the_flag_and_the_part_that_is_wrong() {
    let env = TestEnv::new();
    for (engine, message) in [
        ("unix:///run/docker.sock", "--engine: `unix:///run/docker.sock` is not NAME=URL"),
        ("Host=unix:///x", "--engine: engine name `Host` is not valid"),
        ("a=unix:///x,max=none", "--engine: engine `a`: max=`none` is not a whole number"),
        ("a=unix:///x,zone=eu", "--engine: engine `a`: `zone=eu` is not one of max=N or runtime=R"),
        ("a=ftp://x", "--engine: engine `a`: URL `ftp://x` must be"),
    ] {
        assert_refused(&env, "serve", &["--engine", engine], &[], message);
    }
    // In the variable, engines are separated by `;`.
    assert_refused(
        &env,
        "serve",
        &[],
        &[("SANDKEEPER_ENGINE", "a=unix:///a.sock,max=2;a=unix:///b.sock")],
        "--engine: engine `a` is given twice; each engine needs a name of its own (set by \
         SANDKEEPER_ENGINE)",
    );
    assert!(!env.data_dir().join("sandkeeper.db").exists(), "a bad configuration touches nothing");
}

#[test]
fn a_flag_wins_over_its_variable() {
    let env = TestEnv::new();
    // The variable alone would be refused as malformed; the flag's value is the one checked.
    let vars = [("SANDKEEPER_TTL", "abc")];
    assert_refused(
        &env,
        "serve",
        &["--ttl", "2h"],
        &vars,
        "--ttl: `2h` is longer than --max-ttl `1h`",
    );
}

#[test]
fn without_a_token_a_public_address_is_refused() {
    let env = TestEnv::new();
    assert_refused(
        &env,
        "serve",
        &["--listen", "0.0.0.0:0"],
        &[],
        "--listen: refusing to listen on `0.0.0.0:0` without an API token",
    );
}

#[test]
fn migrate_creates_the_data_dir_and_the_database() {
    let env = TestEnv::new();
    let data_dir = env.data_dir().join("nested");
    let migrate = || {
        std::process::Command::new(binary())
            .arg("migrate")
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("SANDKEEPER_DATABASE_URL")
            .output()
            .unwrap()
    };
    let output = migrate();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report, serde_json::json!({"migrated": true, "backend": "sqlite"}));
    assert!(data_dir.join("sandkeeper.db").is_file());
    // Migrating again is a no-op.
    let again = migrate();
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn a_bad_database_url_is_named() {
    let env = TestEnv::new();
    assert_refused(
        &env,
        "migrate",
        &["--database-url", "mysql://root@db/x"],
        &[],
        "`mysql://root@db/x` is not a database URL",
    );
}

#[test]
fn a_failed_start_logs_why_before_its_last_words_and_exits_1() {
    let env = TestEnv::new();
    // Port 9 on loopback: nothing listens, the connection is refused at once.
    let url = "postgres://postgres@127.0.0.1:9/sandkeeper";
    let output = run(&env, "migrate", &["--database-url", url], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    let logged = text.find("sandkeeper stopped").expect("the failure is logged");
    let last = text.rfind("error: --database-url: cannot connect").expect("the last words");
    // Log lines are written by a thread of their own; every one is out before the exit.
    assert!(logged < last, "the log line comes first:\n{text}");
    let last_line = text.trim_end().lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("error: --database-url"),
        "nothing follows the last words:\n{text}"
    );
}
