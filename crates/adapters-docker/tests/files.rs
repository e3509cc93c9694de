//! `SandboxRuntime::upload` and `download` against a real engine: round trips, limits, and
//! confinement to `/workspace` when the sandbox plants symbolic links.
//!
//! Each test uses its own instance id and removes its containers when it ends (even by
//! panic). Without an engine the tests print that they skipped; with
//! `SANDKEEPER_REQUIRE_DOCKER=1` they fail instead.

mod common;

use common::*;
use sandkeeper_adapters_docker::DockerConfig;
use sandkeeper_domain::ContainerId;
use sandkeeper_ports::{FileError, SandboxRuntime, WorkspacePath};

const LIMIT: u64 = 1024 * 1024;

fn path(path: &str) -> WorkspacePath {
    WorkspacePath::parse(path).unwrap()
}

/// Bytes that a text-only transport would mangle: every byte value, NULs and CR/LF included.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// Runs a shell script in the sandbox that must succeed; returns its output.
fn sh(id: &ContainerId, script: &str) -> String {
    let (ok, output) = exec(id, script);
    assert!(ok, "`{script}` failed: {output}");
    output
}

#[tokio::test]
async fn an_upload_creates_its_directories_and_downloads_back_byte_for_byte() {
    let Some((engine, id)) = Engine::with_sandbox("upload_round_trip").await else { return };
    let bytes = binary(300_000);

    engine.runtime.upload(&id, &path("project/src/data.bin"), &bytes).await.unwrap();
    let back = engine.runtime.download(&id, &path("project/src/data.bin"), LIMIT).await.unwrap();
    assert!(back == bytes, "the download differs from the upload ({} bytes)", back.len());

    // Written as the sandbox's user, so code in the sandbox can change and remove them.
    let uid = sh(&id, "id -u");
    assert_eq!(
        sh(
            &id,
            "stat -c '%u:%g %A %n' /workspace/project /workspace/project/src /workspace/project/src/data.bin"
        ),
        format!(
            "{uid}:{uid} drwxr-xr-x /workspace/project\n\
             {uid}:{uid} drwxr-xr-x /workspace/project/src\n\
             {uid}:{uid} -rw-r--r-- /workspace/project/src/data.bin"
        )
    );
    assert_eq!(sh(&id, "stat -c %s /workspace/project/src/data.bin"), "300000");
    // No temporary file is left beside it.
    assert_eq!(sh(&id, "ls -A /workspace/project/src"), "data.bin");

    // Large enough to fill every pipe and buffer on the way many times over.
    let large = binary(10 * 1024 * 1024);
    engine.runtime.upload(&id, &path("large.bin"), &large).await.unwrap();
    let back = engine.runtime.download(&id, &path("large.bin"), 16 * LIMIT).await.unwrap();
    assert!(back == large, "the 10 MiB download differs ({} bytes)", back.len());

    // Replacing a file replaces it whole; an empty file is a file too.
    engine.runtime.upload(&id, &path("project/src/data.bin"), b"short").await.unwrap();
    assert_eq!(
        engine.runtime.download(&id, &path("project/src/data.bin"), LIMIT).await.unwrap(),
        b"short"
    );
    engine.runtime.upload(&id, &path("empty"), b"").await.unwrap();
    assert_eq!(engine.runtime.download(&id, &path("empty"), LIMIT).await.unwrap(), b"");

    // What the sandbox writes can be downloaded, and names are taken literally.
    sh(&id, "printf made-inside > '/workspace/odd name $(x).txt'");
    let back = engine.runtime.download(&id, &path("odd name $(x).txt"), LIMIT).await.unwrap();
    assert_eq!(back, b"made-inside");
}

#[tokio::test]
async fn missing_files_are_not_found_and_the_limit_is_enforced_before_reading() {
    let Some((engine, id)) = Engine::with_sandbox("download_limits").await else { return };

    for missing in ["nothing-here", "no/such/dir/file"] {
        let error = engine.runtime.download(&id, &path(missing), LIMIT).await.unwrap_err();
        assert_eq!(error, FileError::NotFound { path: path(missing) });
    }

    sh(&id, "yes | head -c 2000 > /workspace/big");
    assert_eq!(engine.runtime.download(&id, &path("big"), 2000).await.unwrap().len(), 2000);
    let error = engine.runtime.download(&id, &path("big"), 1999).await.unwrap_err();
    assert_eq!(error, FileError::TooLarge { path: path("big"), size: 2000, limit: 1999 });
    assert!(error.to_string().contains("2000 bytes"), "{error}");
}

#[tokio::test]
async fn directories_and_files_in_the_way_are_refused() {
    let Some((engine, id)) = Engine::with_sandbox("files_in_the_way").await else { return };
    sh(&id, "mkdir -p /workspace/dir && echo x > /workspace/file");

    let error = engine.runtime.download(&id, &path("dir"), LIMIT).await.unwrap_err();
    assert_eq!(error, FileError::NotARegularFile { path: path("dir"), found: "directory".into() });
    let error = engine.runtime.upload(&id, &path("dir"), b"data").await.unwrap_err();
    assert_eq!(error, FileError::NotARegularFile { path: path("dir"), found: "directory".into() });
    assert_eq!(sh(&id, "[ -d /workspace/dir ] && echo still-a-dir"), "still-a-dir");

    let error = engine.runtime.upload(&id, &path("file/inner.txt"), b"data").await.unwrap_err();
    assert_eq!(
        error,
        FileError::ParentNotADirectory { path: path("file/inner.txt"), parent: "file".into() }
    );
    assert_eq!(sh(&id, "cat /workspace/file"), "x");
}

#[tokio::test]
async fn symbolic_links_out_of_the_workspace_are_refused_both_ways() {
    let Some((engine, id)) = Engine::with_sandbox("symlinks_out").await else { return };
    sh(
        &id,
        "ln -s /etc/passwd /workspace/passwd && ln -s /tmp /workspace/tmplink \
             && ln -s /nowhere/at/all /workspace/dangling && mkdir /workspace/d \
             && ln -s ../../etc /workspace/d/up",
    );

    let error = engine.runtime.download(&id, &path("passwd"), LIMIT).await.unwrap_err();
    assert_eq!(
        error,
        FileError::OutsideWorkspace { path: path("passwd"), resolved: "/etc/passwd".into() }
    );
    let error = engine.runtime.download(&id, &path("d/up/passwd"), LIMIT).await.unwrap_err();
    assert_eq!(
        error,
        FileError::OutsideWorkspace { path: path("d/up/passwd"), resolved: "/etc/passwd".into() }
    );

    let error = engine.runtime.upload(&id, &path("passwd"), b"root::0:0::/:/bin/sh\n").await;
    assert_eq!(
        error,
        Err(FileError::OutsideWorkspace { path: path("passwd"), resolved: "/etc/passwd".into() })
    );
    // Through a linked directory, into a directory that does not exist yet: nothing is created.
    let error = engine.runtime.upload(&id, &path("tmplink/new/x"), b"escape").await;
    assert_eq!(
        error,
        Err(FileError::OutsideWorkspace {
            path: path("tmplink/new/x"),
            resolved: "/tmp/new/x".into()
        })
    );
    assert_eq!(sh(&id, "ls -A /tmp"), "");
    let error = engine.runtime.upload(&id, &path("dangling"), b"x").await.unwrap_err();
    // A link to nothing is refused with what it points to, without creating its target.
    assert!(
        matches!(&error, FileError::LinkToNowhere { target, .. } if target == "/nowhere/at/all"),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(error.kind(), "outside_workspace");
    // The links themselves were left alone.
    assert_eq!(
        sh(&id, "readlink /workspace/passwd; readlink /workspace/tmplink"),
        "/etc/passwd\n/tmp"
    );
}

#[tokio::test]
async fn symbolic_links_that_stay_inside_the_workspace_are_followed() {
    let Some((engine, id)) = Engine::with_sandbox("symlinks_inside").await else { return };
    sh(
        &id,
        "mkdir -p /workspace/real && echo original > /workspace/real/file \
             && ln -s real /workspace/alias && ln -s real/file /workspace/shortcut",
    );

    let back = engine.runtime.download(&id, &path("shortcut"), LIMIT).await.unwrap();
    assert_eq!(back, b"original\n");
    engine.runtime.upload(&id, &path("alias/new.txt"), b"through the link").await.unwrap();
    assert_eq!(sh(&id, "cat /workspace/real/new.txt"), "through the link");
    // Writing through a link to a file replaces the file it points at, not the link.
    engine.runtime.upload(&id, &path("shortcut"), b"replaced").await.unwrap();
    assert_eq!(
        sh(&id, "cat /workspace/real/file; echo; readlink /workspace/shortcut"),
        "replaced\nreal/file"
    );
}

#[tokio::test]
async fn a_full_workspace_is_reported_and_the_old_file_is_kept() {
    let Some(engine) = Engine::start_with("a_full_workspace", |config| DockerConfig {
        workspace_size_bytes: 1024 * 1024,
        ..config
    })
    .await
    else {
        return;
    };
    let id = engine.runtime.create(&spec()).await.unwrap();
    engine.runtime.upload(&id, &path("keep.txt"), b"old contents").await.unwrap();

    let error = engine.runtime.upload(&id, &path("keep.txt"), &binary(2 * 1024 * 1024)).await;
    assert_eq!(error, Err(FileError::WorkspaceFull { path: path("keep.txt") }));
    assert_eq!(sh(&id, "cat /workspace/keep.txt"), "old contents");
    assert_eq!(sh(&id, "ls -A /workspace"), "keep.txt", "the partial upload was removed");
}

#[tokio::test]
async fn files_of_a_missing_or_stopped_container_say_it_is_not_running() {
    let Some(engine) = Engine::start("files_of_a_missing_container").await else { return };
    let missing = ContainerId::new("sandkeeper-never-existed").unwrap();
    let error = engine.runtime.download(&missing, &path("a"), LIMIT).await.unwrap_err();
    assert_eq!(error, FileError::ContainerNotRunning { container_id: missing.clone() });

    let id = engine.runtime.create(&spec()).await.unwrap();
    docker(&["kill", id.as_str()]);
    let error = engine.runtime.upload(&id, &path("a"), b"x").await.unwrap_err();
    assert_eq!(error, FileError::ContainerNotRunning { container_id: id });
}

#[tokio::test]
async fn a_transfer_that_the_sandbox_holds_up_times_out_as_such() {
    let Some(engine) = Engine::start_with("transfer_held_up", |config| DockerConfig {
        call_timeout: std::time::Duration::from_secs(3),
        ..config
    })
    .await
    else {
        return;
    };
    let id = engine.runtime.create(&spec()).await.unwrap();
    sh(&id, "echo old > /workspace/kept.txt");
    // Code in the sandbox (same user) stops the next shell that starts: the upload's. Only
    // builtins run in its loop, and nothing else runs a shell until it has.
    let watcher = r#"old=' '; for p in /proc/[0-9]*; do old="$old${p#/proc/} "; done
: > /tmp/watching
while :; do
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    case $old in *" $pid "*) continue ;; esac
    old="$old$pid "
    read -r name < "$p/comm" 2>/dev/null || continue
    [ "$name" = sh ] && kill -STOP "$pid" && exit 0
  done
done"#;
    docker(&["exec", "--detach", "--user", &sandbox_user(&id), id.as_str(), "sh", "-c", watcher]);
    let ready = || {
        std::process::Command::new("docker")
            .args(["exec", id.as_str(), "test", "-e", "/tmp/watching"])
            .status()
            .is_ok_and(|status| status.success())
    };
    while !ready() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let error = engine.runtime.upload(&id, &path("kept.txt"), b"new").await.unwrap_err();
    assert!(matches!(&error, FileError::TimedOut { .. }), "{error:?}");
    assert_eq!(error.kind(), "transfer_timed_out");
    assert!(error.to_string().contains("`kept.txt`"), "{error}");
    assert_eq!(sh(&id, "cat /workspace/kept.txt"), "old", "the old file is kept");
}
