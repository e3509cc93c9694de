//! Crash consistency: the short form of the chaos run (`cargo xtask chaos` is the full one), and
//! the orphan grace measured to the sub-second. Each test skips (printing so) without a Docker
//! engine, and fails without one when SANDKEEPER_REQUIRE_DOCKER=1.

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sandkeeper_tests::chaos::{self, ChaosConfig};
use sandkeeper_tests::{INSTANCE_LABEL, TestEnv, docker, or_skip};

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_leaves_nothing_one_sweep_cannot_repair() {
    if docker("sigkill_at_random_moments_leaves_nothing_one_sweep_cannot_repair").is_none() {
        return;
    }
    let config = ChaosConfig::short(chaos::seed_from_env());
    let summary = chaos::run(&config).await.unwrap_or_else(|violation| panic!("{violation}"));
    assert_eq!(summary.cycles.len(), config.cycles);
    for cycle in &summary.cycles {
        assert!(cycle.orphans_reaped >= 1, "the planted orphan was reaped: {cycle:?}");
    }
}

/// A row-less container is reaped only once it is older than `--orphan-grace`, to the
/// sub-second: the engine lists creation times in whole seconds, which must not make a container
/// look up to a second older than it is (with a short grace, a sandbox between its container's
/// start and its row's save would be reaped).
#[tokio::test(flavor = "multi_thread")]
async fn a_container_younger_than_the_orphan_grace_is_never_reaped() {
    let image = or_skip!(docker("a_container_younger_than_the_orphan_grace_is_never_reaped"));
    let env = TestEnv::new();
    let grace = Duration::from_secs(1);
    for attempt in 1..=3 {
        // Created late in a second, swept just after the next one begins: the container is a few
        // hundred milliseconds old, but its whole-second creation time is almost a second older.
        wait_for_fraction_of_second(700..850).await;
        let container = create_orphan(&env, &image);
        let created = created_at(&container);
        let next_second = created.timestamp() + 1;
        let wait = DateTime::from_timestamp(next_second, 20_000_000).unwrap() - Utc::now();
        tokio::time::sleep(wait.to_std().unwrap_or_default()).await;

        let report = maintain(&env, grace);
        let swept_by = Utc::now();
        let survived = container_exists(&container);
        let age = (swept_by - created).as_seconds_f64();
        if !survived && age > grace.as_secs_f64() {
            println!("attempt {attempt}: the sweep came {age:.3} s after the create; again");
            continue;
        }
        assert!(
            survived && report["orphans_removed"] == 0,
            "a container at most {age:.3} s old was reaped as an orphan with --orphan-grace 1s: \
             {report}"
        );

        // Once it is truly older than the grace, the next sweep reaps it.
        tokio::time::sleep(grace + Duration::from_millis(1100)).await;
        let report = maintain(&env, grace);
        assert_eq!(report["orphans_removed"], 1, "{report}");
        assert!(!container_exists(&container), "the orphan is gone once older than the grace");
        return;
    }
    panic!(
        "no sweep ran within the second after the create in 3 attempts: the machine is too slow"
    );
}

async fn wait_for_fraction_of_second(window: std::ops::Range<u32>) {
    loop {
        let millis = Utc::now().timestamp_subsec_millis();
        if window.contains(&millis) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A created (never started) container with this instance's labels and no row: what a create cut
/// short before the row's save leaves.
fn create_orphan(env: &TestEnv, image: &str) -> String {
    let output = Command::new("docker")
        .args(["create", "--network", "none", "--label", "io.sandkeeper.managed=true"])
        .args(["--label", &format!("{INSTANCE_LABEL}={}", env.instance_id())])
        .args(["--label", &format!("io.sandkeeper.session={}", uuid::Uuid::new_v4())])
        .args([image, "sleep", "infinity"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn created_at(container: &str) -> DateTime<Utc> {
    let output =
        Command::new("docker").args(["inspect", "--format", "{{.Created}}", container]).output();
    let text = String::from_utf8(output.unwrap().stdout).unwrap();
    DateTime::parse_from_rfc3339(text.trim()).unwrap().with_timezone(&Utc)
}

fn container_exists(container: &str) -> bool {
    Command::new("docker").args(["inspect", container]).output().unwrap().status.success()
}

/// `sandkeeper maintain` until a pass was not cut short by its time budget (a fresh process
/// spends part of it connecting to the engine); the report of that pass, with `orphans_removed`
/// summed over all of them.
fn maintain(env: &TestEnv, grace: Duration) -> serde_json::Value {
    let mut orphans_removed = 0;
    for _ in 0..5 {
        let output = env
            .command("maintain")
            .args(["--orphan-grace", &format!("{}ms", grace.as_millis())])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let mut report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        orphans_removed += report["orphans_removed"].as_u64().unwrap();
        if report["timed_out"] == false {
            report["orphans_removed"] = orphans_removed.into();
            return report;
        }
    }
    panic!("5 maintain passes in a row were cut short by their time budget");
}
