//! The Docker runtime against a real engine.
//!
//! Each test uses its own instance id and removes, when it ends (even by panic), every container
//! labelled with it. The checks read the engine back through the docker CLI, independently of
//! the adapter. Without an engine the tests print that they skipped; with
//! `SANDKEEPER_REQUIRE_DOCKER=1` they fail instead.

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::*;
use sandkeeper_adapters_docker::{
    DEFAULT_UID_RANGE, DockerConfig, DockerRuntime, LABEL_CHAT, LABEL_EXPIRES_AT, LABEL_INSTANCE,
    LABEL_MANAGED, LABEL_POOL, LABEL_POOL_CONFIG, LABEL_SESSION, LABEL_UID,
};
use sandkeeper_domain::ContainerId;
use sandkeeper_ports::{ContainerSpec, ContainerState, RuntimeError, SandboxRuntime};

#[tokio::test]
async fn create_starts_a_named_labelled_container_with_every_hardening_applied() {
    let Some(engine) = Engine::start("create_starts_a_named_labelled_container").await else {
        return;
    };
    let spec = spec();
    let id = engine.runtime.create(&spec).await.unwrap();
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Running);

    let found = inspect_json(id.as_str()).expect("the engine knows the container");
    assert_eq!(found["Name"], format!("/sandkeeper-{}", spec.session_id));
    assert_eq!(found["State"]["Running"], true);
    let labels = &found["Config"]["Labels"];
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_INSTANCE], engine.instance.as_str());
    assert_eq!(labels[LABEL_SESSION], spec.session_id.to_string());
    assert_eq!(labels[LABEL_CHAT], spec.chat_id.to_string());
    let expires_at = labels[LABEL_EXPIRES_AT].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(expires_at).unwrap().timestamp(),
        spec.expires_at.timestamp()
    );
    let uid: u32 = labels[LABEL_UID].as_str().unwrap().parse().unwrap();
    assert!(DEFAULT_UID_RANGE.contains(uid), "{uid}");
    // The main process runs as the keeper uid; commands as the sandbox's (see below).
    let keeper = DEFAULT_UID_RANGE.keeper();
    assert_eq!(found["Config"]["User"], format!("{keeper}:{keeper}"));
    let env = found["Config"]["Env"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!("HOME=/workspace")), "{env:?}");
    assert_eq!(found["Config"]["Image"], "sandkeeper/sandbox:latest");
    assert_eq!(found["Config"]["Cmd"], serde_json::json!(["sleep", "infinity"]));

    let host = &found["HostConfig"];
    assert_eq!(host["NetworkMode"], "none");
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert!(host["CapAdd"].is_null(), "{}", host["CapAdd"]);
    assert_eq!(host["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["Init"], true);
    assert_eq!(host["PidsLimit"], 256);
    assert_eq!(host["Memory"], 512 * 1024 * 1024);
    assert_eq!(host["MemorySwap"], 512 * 1024 * 1024);
    assert_eq!(host["NanoCpus"], 1_000_000_000);
    assert_eq!(host["LogConfig"]["Type"], "none");
    let tmp = host["Tmpfs"]["/tmp"].as_str().unwrap();
    assert!(tmp.contains("noexec") && tmp.contains("size=67108864"), "{tmp}");
    let workspace = host["Tmpfs"]["/workspace"].as_str().unwrap();
    assert!(
        workspace.contains("size=268435456") && workspace.contains(&format!("uid={uid},gid={uid}")),
        "{workspace}"
    );
    assert_eq!(
        found["NetworkSettings"]["Networks"]
            .as_object()
            .map(|n| n.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["none".to_owned()])
    );
}

#[tokio::test]
async fn inside_the_sandbox_the_user_is_unprivileged_offline_and_writes_only_tmp_and_workspace() {
    let Some((_engine, id)) = Engine::with_sandbox("inside_the_sandbox").await else { return };

    let (_, ids) = exec(&id, "id -u; id -g");
    let ids: Vec<u32> = ids.lines().map(|id| id.parse().unwrap()).collect();
    assert!(ids.len() == 2 && ids[0] == ids[1] && DEFAULT_UID_RANGE.contains(ids[0]), "{ids:?}");
    assert_eq!(exec(&id, "pwd"), (true, "/workspace".to_owned()));
    let (wrote, output) = exec(&id, "echo hi > /workspace/a && cat /workspace/a");
    assert_eq!((wrote, output.as_str()), (true, "hi"));
    let (wrote, output) = exec(&id, "echo hi > /tmp/a && cat /tmp/a");
    assert_eq!((wrote, output.as_str()), (true, "hi"));
    let (wrote, output) = exec(&id, "touch /a");
    assert!(!wrote && output.contains("Read-only file system"), "{output}");
    let (wrote, output) = exec(&id, "touch /etc/passwd");
    assert!(!wrote, "{output}");
    // Scripts may be copied to /workspace and run; /tmp is noexec.
    let (ran, output) = exec(
        &id,
        "printf '#!/bin/sh\\necho ran\\n' > /workspace/s && chmod +x /workspace/s && /workspace/s",
    );
    assert_eq!((ran, output.as_str()), (true, "ran"));
    let (ran, _) = exec(&id, "cp /workspace/s /tmp/s && /tmp/s");
    assert!(!ran, "/tmp must be noexec");

    assert_eq!(exec(&id, "ls /sys/class/net"), (true, "lo".to_owned()), "network none");
    let (_, status) = exec(&id, "cat /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
            .unwrap_or_else(|| panic!("{name} missing in {status}"))
    };
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    // docker-init is PID 1, the command runs under it.
    assert_eq!(exec(&id, "cat /proc/1/comm"), (true, "docker-init".to_owned()));
}

#[tokio::test]
async fn stop_removes_the_container_and_succeeds_when_it_is_already_gone() {
    let Some((engine, id)) = Engine::with_sandbox("stop_removes_the_container").await else {
        return;
    };

    let started = Instant::now();
    engine.runtime.stop(&id).await.unwrap();
    // Force removal, not `docker stop` with its 10 s grace period.
    assert!(started.elapsed() < Duration::from_secs(8), "stop took {:?}", started.elapsed());
    assert!(inspect_json(id.as_str()).is_none(), "the container is gone");
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Missing);

    engine.runtime.stop(&id).await.unwrap();
    engine.runtime.stop(&ContainerId::new("sandkeeper-never-existed").unwrap()).await.unwrap();
}

#[tokio::test]
async fn stop_refuses_containers_without_this_instances_labels_and_leaves_them_running() {
    let Some(engine) = Engine::start("stop_refuses_foreign_containers").await else { return };
    let unlabelled = engine.run_foreign(&[]);
    let other_instance = format!("{}-elsewhere", engine.instance);
    let other = engine.run_foreign(&[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, &other_instance)]);
    let unmanaged = engine.run_foreign(&[(LABEL_INSTANCE, &engine.instance)]);

    for id in [&unlabelled, &other, &unmanaged] {
        let error = engine.runtime.stop(id).await.unwrap_err();
        assert!(
            matches!(&error, RuntimeError::NotManaged { container_id } if container_id == id),
            "{error:?}"
        );
        assert!(error.to_string().contains(id.as_str()), "{error}");
        let found = inspect_json(id.as_str()).expect("it was left alone");
        assert_eq!(found["State"]["Running"], true);
    }
}

#[tokio::test]
async fn inspect_says_exited_for_a_killed_container_and_missing_for_a_removed_one() {
    let Some((engine, id)) = Engine::with_sandbox("inspect_says_exited").await else { return };

    docker(&["kill", id.as_str()]);
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Exited);
    docker(&["rm", "--force", id.as_str()]);
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Missing);
}

#[tokio::test]
async fn list_managed_sees_every_state_of_this_instance_and_nothing_else() {
    let Some(engine) = Engine::start("list_managed").await else { return };
    let (other, _other_cleanup) = engine.other_instance();
    let before = Utc::now() - TimeDelta::seconds(2);
    let (first, second) = (spec(), spec());
    let first_id = engine.runtime.create(&first).await.unwrap();
    let second_id = engine.runtime.create(&second).await.unwrap();
    docker(&["kill", second_id.as_str()]);
    other.create(&spec()).await.unwrap();
    engine.run_foreign(&[(LABEL_MANAGED, "true")]);

    let mut listed = engine.runtime.list_managed().await.unwrap();
    listed.sort_by_key(|container| container.container_id == second_id);
    let seen: Vec<_> = listed.iter().map(|c| (c.container_id.clone(), c.session_id)).collect();
    assert_eq!(
        seen,
        vec![(first_id, Some(first.session_id)), (second_id, Some(second.session_id))]
    );
    for container in &listed {
        assert!(
            container.created_at >= before && container.created_at <= Utc::now(),
            "{container:?}"
        );
    }
    assert_eq!(other.list_managed().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_retried_create_returns_the_running_container_of_the_first_attempt() {
    let Some(engine) = Engine::start("a_retried_create").await else { return };
    let spec = spec();
    let first = engine.runtime.create(&spec).await.unwrap();
    let again = engine.runtime.create(&spec).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(engine.runtime.list_managed().await.unwrap().len(), 1);

    // A leftover that never ran is replaced by a fresh, running one.
    docker(&["kill", first.as_str()]);
    let replaced = engine.runtime.create(&spec).await.unwrap();
    assert_ne!(replaced, first);
    assert_eq!(engine.runtime.inspect(&replaced).await.unwrap(), ContainerState::Running);
    assert_eq!(engine.runtime.inspect(&first).await.unwrap(), ContainerState::Missing);
}

#[tokio::test]
async fn a_create_refuses_to_adopt_a_foreign_container_with_the_same_name() {
    let Some(engine) = Engine::start("create_refuses_to_adopt").await else { return };
    let spec = spec();
    let name = DockerRuntime::container_name(&spec.session_id);
    let foreign = docker(&[
        "run",
        "--detach",
        "--network",
        "none",
        "--name",
        &name,
        "--label",
        &format!("{TEST_OWNER_LABEL}={}", engine.instance),
        image::IMAGE,
        "sleep",
        "infinity",
    ]);
    let error = engine.runtime.create(&spec).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(message) if report(message).contains(&name) && report(message).contains("not this instance")),
        "{error:?}"
    );
    assert_eq!(inspect_json(&foreign).unwrap()["State"]["Running"], true);
}

#[tokio::test]
async fn a_container_that_cannot_start_is_removed_and_the_error_says_why() {
    let Some((engine, error)) = refused_create("a_container_that_cannot_start", |config| {
        DockerConfig {
            // Created fine, refused at start: the image has no such program.
            // (Without docker-init, which would start and then fail to run it.)
            command: Some(vec!["nosuchprogram".to_owned()]),
            init: false,
            ..config
        }
    })
    .await
    else {
        return;
    };
    assert!(
        matches!(&error, RuntimeError::Failed(message) if report(message).contains("could not start") && report(message).contains("nosuchprogram")),
        "{error:?}"
    );
    let filter = format!("label={LABEL_INSTANCE}={}", engine.instance);
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]), "");
}

#[tokio::test]
async fn a_missing_image_is_reported_as_such() {
    let image = "sandkeeper/no-such-image:never";
    let configure = |config| DockerConfig { image: image.to_owned(), ..config };
    let Some((_engine, error)) = refused_create("a_missing_image", configure).await else {
        return;
    };
    assert_eq!(error, RuntimeError::ImageMissing { image: image.into() });
    assert!(error.to_string().contains(image), "{error}");
}

#[tokio::test]
async fn twenty_parallel_creates_all_succeed_and_are_all_removed() {
    let Some(engine) = Engine::start("twenty_parallel_creates").await else { return };
    let specs: Vec<ContainerSpec> = (0..20).map(|_| spec()).collect();
    let created =
        futures::future::join_all(specs.iter().map(|spec| engine.runtime.create(spec))).await;
    let ids: Vec<ContainerId> = created.into_iter().map(Result::unwrap).collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 20);
    let mut listed: Vec<_> = engine
        .runtime
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .map(|container| container.session_id.unwrap())
        .collect();
    let mut sessions: Vec<_> = specs.iter().map(|spec| spec.session_id).collect();
    listed.sort();
    sessions.sort();
    assert_eq!(listed, sessions);

    let stopped = futures::future::join_all(ids.iter().map(|id| engine.runtime.stop(id))).await;
    assert!(stopped.iter().all(Result::is_ok), "{stopped:?}");
    assert_eq!(engine.runtime.list_managed().await.unwrap(), vec![]);
}

/// Needs no engine: an address where nothing listens.
#[tokio::test]
async fn an_unreachable_engine_is_unavailable_fast_and_named() {
    for endpoint in ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"] {
        let config = DockerConfig {
            docker_host: Some(endpoint.to_owned()),
            ..DockerConfig::new(image::IMAGE, "test-unreachable")
        };
        // Building the runtime needs no engine.
        let runtime = DockerRuntime::new(config).unwrap();
        assert_eq!(runtime.endpoint(), endpoint);
        let id = ContainerId::new("sandkeeper-x").unwrap();
        let started = Instant::now();
        let errors = [
            runtime.ping().await.unwrap_err(),
            runtime.create(&spec()).await.unwrap_err(),
            runtime.stop(&id).await.unwrap_err(),
            runtime.inspect(&id).await.unwrap_err(),
            runtime.list_managed().await.unwrap_err(),
        ];
        assert!(started.elapsed() < Duration::from_secs(3), "{endpoint}: {:?}", started.elapsed());
        for error in errors {
            assert!(
                matches!(&error, RuntimeError::Unavailable(message) if report(message).contains(endpoint)),
                "{endpoint}: {error:?}"
            );
        }
    }
}

/// Needs no engine: every call is timed, failed ones too.
#[test]
fn every_call_records_its_duration_by_operation() {
    let counts = durations_recorded(|runtime| async move {
        let id = ContainerId::new("sandkeeper-x").unwrap();
        let _ = runtime.ping().await;
        let _ = runtime.inspect(&id).await;
        let _ = runtime.inspect(&id).await;
    });
    assert_eq!(counts, vec![("inspect".to_owned(), 2), ("ping".to_owned(), 1)]);
}

#[tokio::test]
async fn the_runtime_recovers_by_itself_when_the_engine_appears() {
    let Some(engine) = Engine::start("the_runtime_recovers_by_itself").await else { return };
    // The engine "appears" when a link to its socket is created where the runtime looks.
    let real_socket = engine.runtime.endpoint().strip_prefix("unix://").map(str::to_owned);
    let Some(real_socket) = real_socket else {
        eprintln!("skipped the_runtime_recovers_by_itself: the engine is not on a unix socket");
        return;
    };
    let link = std::env::temp_dir().join(format!("{}.sock", engine.instance));
    let config = DockerConfig {
        docker_host: Some(format!("unix://{}", link.display())),
        ..engine.runtime.config().clone()
    };
    let runtime = DockerRuntime::new(config).unwrap();
    assert!(matches!(runtime.ping().await, Err(RuntimeError::Unavailable(_))));

    std::os::unix::fs::symlink(&real_socket, &link).unwrap();
    let answered = runtime.ping().await;
    let created = runtime.create(&spec()).await;
    std::fs::remove_file(&link).unwrap();
    assert_eq!(answered, Ok(()));
    assert!(created.is_ok(), "{created:?}");
}

#[tokio::test]
async fn a_network_that_does_not_exist_is_named_in_the_error_and_nothing_is_left() {
    let network = "sandkeeper-no-such-network";
    let configure = |config| DockerConfig { network_mode: network.to_owned(), ..config };
    let Some((_engine, error)) = refused_create("a_network_that_does_not_exist", configure).await
    else {
        return;
    };
    assert!(
        matches!(&error, RuntimeError::Failed(message) if report(message).contains(network)),
        "{error:?}"
    );
}

#[tokio::test]
async fn watch_exits_reports_a_container_of_this_instance_that_stops_and_nothing_else() {
    let Some(engine) = Engine::start("watch_exits_reports").await else { return };
    let (other, _cleanup) = engine.other_instance();
    let spec = spec();
    let id = engine.runtime.create(&spec).await.unwrap();
    let other_id = other.create(&common::spec()).await.unwrap();
    let (sender, mut exits) = tokio::sync::mpsc::channel(16);
    let runtime = engine.runtime.clone();
    let watch = tokio::spawn(async move { runtime.watch_exits(None, &sender).await });
    // The watch is in place once the engine answered it; a moment is enough on any engine.
    tokio::time::sleep(Duration::from_millis(500)).await;

    docker(&["kill", other_id.as_str()]);
    docker(&["kill", id.as_str()]);
    let exit = tokio::time::timeout(Duration::from_secs(20), exits.recv())
        .await
        .unwrap_or_else(|_| panic!("no exit reported within 20 s"))
        .unwrap();
    assert_eq!(exit.container_id, id);
    assert_eq!(exit.session_id, Some(spec.session_id));
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Exited);

    // A watch from a time before the exit reports it again.
    let (sender, mut again) = tokio::sync::mpsc::channel(16);
    let since = Utc::now() - TimeDelta::seconds(60);
    let runtime = engine.runtime.clone();
    let replay = tokio::spawn(async move { runtime.watch_exits(Some(since), &sender).await });
    let replayed = tokio::time::timeout(Duration::from_secs(20), again.recv()).await.unwrap();
    assert_eq!(replayed.map(|exit| exit.container_id), Some(id.clone()));

    // Nothing of the other instance came through; closing the receiver ends the watch.
    assert!(exits.try_recv().is_err());
    drop(exits);
    drop(again);
    let ended = tokio::time::timeout(Duration::from_secs(10), watch).await.unwrap().unwrap();
    assert_eq!(ended, Ok(()));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), replay).await.unwrap().unwrap(),
        Ok(())
    );
}

#[tokio::test]
async fn watch_exits_fails_when_the_engine_cannot_be_reached() {
    let runtime = DockerRuntime::new(DockerConfig {
        docker_host: Some("unix:///nonexistent/docker.sock".to_owned()),
        ..DockerConfig::new("sandkeeper/sandbox:latest", "test-unreachable")
    })
    .unwrap();
    let (sender, _exits) = tokio::sync::mpsc::channel(1);
    let error = runtime.watch_exits(None, &sender).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Unavailable(message) if report(message).contains("/nonexistent/docker.sock")),
        "{error:?}"
    );
}

#[tokio::test]
async fn two_sandboxes_run_as_different_uids_and_cannot_reach_their_main_process() {
    let Some(engine) = Engine::start("uids_and_logs").await else { return };
    let first = engine.runtime.create(&spec()).await.unwrap();
    let second = engine.runtime.create(&spec()).await.unwrap();
    let uid_of = |id: &ContainerId| -> u32 {
        let (ok, uid) = exec(id, "id -u");
        assert!(ok, "{uid}");
        uid.parse().unwrap()
    };
    let (a, b) = (uid_of(&first), uid_of(&second));
    assert_ne!(a, b);
    assert!(DEFAULT_UID_RANGE.contains(a) && DEFAULT_UID_RANGE.contains(b), "{a} {b}");
    let label = |id: &ContainerId| {
        inspect_json(id.as_str()).unwrap()["Config"]["Labels"][LABEL_UID].clone()
    };
    assert_eq!(label(&first), a.to_string());
    assert_eq!(
        exec(&first, "echo $HOME; stat -c %u /workspace"),
        (true, format!("/workspace\n{a}"))
    );

    // The main process runs as another uid: its output, which the engine reads, is out of the
    // sandbox's reach, and so is the process itself.
    let (wrote, output) = exec(&first, "yes A | head -c 1048576 > /proc/1/fd/1");
    assert!(!wrote && output.contains("Permission denied"), "{output}");
    let (killed, output) = exec(&first, "kill 1");
    assert!(!killed, "kill 1 from the sandbox: {output}");
    let found = inspect_json(first.as_str()).unwrap();
    assert_eq!(found["HostConfig"]["LogConfig"]["Type"], "none");
    let log_path = inspect_json(first.as_str()).unwrap()["LogPath"].clone();
    assert!(log_path.as_str().is_none_or(str::is_empty), "{log_path}");
}

/// A cause with the whole chain under it, as the edges show it.
/// Creates a sandbox on an engine with `configure`d settings: the create must fail and leave
/// no container of the instance behind. The engine and the error (`None` where the test skips).
async fn refused_create(
    test: &str,
    configure: impl FnOnce(DockerConfig) -> DockerConfig,
) -> Option<(Engine, RuntimeError)> {
    let engine = Engine::start_with(test, configure).await?;
    let error = engine.runtime.create(&spec()).await.unwrap_err();
    assert_eq!(engine.runtime.list_managed().await.unwrap(), vec![], "after {error:?}");
    Some((engine, error))
}

fn report(cause: &sandkeeper_ports::Cause) -> String {
    sandkeeper_ports::Report(cause).to_string()
}

#[tokio::test]
async fn a_pooled_container_is_hardened_alike_and_labelled_pooled_without_a_session() {
    let Some(engine) = Engine::start("a_pooled_container_is_hardened_alike").await else {
        return;
    };
    let slot = sandkeeper_domain::SlotId::new_v4();
    let id = engine.runtime.create_pooled(slot, Utc::now()).await.unwrap();
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Running);
    let pooled = inspect_json(id.as_str()).expect("the engine knows the pooled container");
    assert_eq!(pooled["Name"], format!("/sandkeeper-pool-{slot}"));
    let labels = &pooled["Config"]["Labels"];
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_INSTANCE], engine.instance.as_str());
    assert_eq!(labels[LABEL_POOL], "true");
    assert_eq!(labels[LABEL_POOL_CONFIG], engine.runtime.fingerprint());
    assert!(labels[LABEL_SESSION].is_null() && labels[LABEL_CHAT].is_null(), "{labels}");
    assert!(labels[LABEL_UID].as_str().is_some(), "{labels}");

    // The same definition as a session's container, apart from labels and uid.
    let fresh = engine.runtime.create(&spec()).await.unwrap();
    let fresh = inspect_json(fresh.as_str()).unwrap();
    for key in ["Memory", "NanoCpus", "PidsLimit", "NetworkMode", "ReadonlyRootfs", "CapDrop"] {
        assert_eq!(pooled["HostConfig"][key], fresh["HostConfig"][key], "{key}");
    }
    assert_eq!(pooled["Config"]["User"], fresh["Config"]["User"]);

    // Listed as this instance's, with no session; removed like any other.
    let listed = engine.runtime.list_managed().await.unwrap();
    let entry = listed.iter().find(|c| c.container_id == id).expect("listed");
    assert_eq!(entry.session_id, None);
    engine.runtime.stop(&id).await.unwrap();
    assert_eq!(engine.runtime.inspect(&id).await.unwrap(), ContainerState::Missing);
}

#[test]
fn the_pool_fingerprint_changes_with_what_shapes_a_container_only() {
    let runtime = |adjust: fn(DockerConfig) -> DockerConfig| {
        DockerRuntime::new(adjust(DockerConfig::new("img:1", "inst"))).unwrap()
    };
    let base = runtime(|c| c);
    assert_eq!(base.fingerprint().len(), 16);
    // Each runtime's hash maps iterate in an order of their own: none may show.
    for _ in 0..32 {
        assert_eq!(base.fingerprint(), runtime(|c| c).fingerprint(), "stable");
    }
    assert_eq!(
        base.fingerprint(),
        runtime(|c| DockerConfig { call_timeout: Duration::from_secs(99), ..c }).fingerprint(),
        "a call timeout does not shape a container"
    );
    let changes: [fn(DockerConfig) -> DockerConfig; 5] = [
        |c| DockerConfig { image: "img:2".into(), ..c },
        |c| DockerConfig { memory_bytes: c.memory_bytes * 2, ..c },
        |c| DockerConfig { runtime: Some("runsc".into()), ..c },
        |c| DockerConfig { network_mode: "bridge".into(), ..c },
        |c| DockerConfig { workspace_size_bytes: c.workspace_size_bytes / 2, ..c },
    ];
    for (n, change) in changes.into_iter().enumerate() {
        assert_ne!(base.fingerprint(), runtime(change).fingerprint(), "change {n}");
    }
}
