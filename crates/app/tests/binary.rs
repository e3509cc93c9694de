//! The built binary itself. (Being an integration test of this package also makes
//! `cargo test --workspace` build `target/<profile>/sandkeeper`, which the black-box tests in
//! `tests/` run.)

use std::process::Command;

#[test]
fn the_binary_reports_its_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_sandkeeper")).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("sandkeeper {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_missing_command_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_sandkeeper")).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let usage = String::from_utf8_lossy(&output.stderr);
    assert!(usage.contains("Usage: sandkeeper <COMMAND>"), "{usage}");
}

#[test]
fn a_value_out_of_a_builtin_range_names_its_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_sandkeeper"))
        .args(["serve", "--exec-concurrency", "0"])
        .env_remove("SANDKEEPER_EXEC_CONCURRENCY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--exec-concurrency"), "{message}");
    assert!(message.contains("0 is not in 1..=1024"), "{message}");
}
