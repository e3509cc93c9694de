//! `SandboxRuntime::archive_workspace` and `restore_workspace` against a real engine: a round
//! trip between two sandboxes, refused archives that change nothing, and the size bound. Run on
//! other images with `SANDKEEPER_TEST_IMAGE` (busybox, bash, Debian's GNU tar).
//!
//! Without an engine the tests print that they skipped; with `SANDKEEPER_REQUIRE_DOCKER=1`
//! they fail instead.

mod common;

use common::*;
use sandkeeper_domain::ContainerId;
use sandkeeper_ports::tar::{Entry, files, tar};
use sandkeeper_ports::{ArchiveError, ArchiveFile, SandboxRuntime, check_archive_file};

const LIMIT: u64 = 64 * 1024 * 1024;

fn sh(id: &ContainerId, script: &str) -> String {
    let (ok, output) = exec(id, script);
    assert!(ok, "`{script}` failed: {output}");
    output
}

/// What a workspace holds, as `find` lists it with each file's checksum.
fn listing(id: &ContainerId) -> String {
    sh(
        id,
        "cd /workspace && find . | sort | while read -r p; do \
           if [ -L \"$p\" ]; then echo \"$p -> $(readlink \"$p\")\"; \
           elif [ -f \"$p\" ]; then echo \"$p $(cksum < \"$p\")\"; else echo \"$p/\"; fi; done",
    )
}

/// The engine of the test `test` (`None` when it skipped), a directory for the archives, and a
/// new sandbox on the engine.
async fn sandbox(test: &str) -> Option<(Engine, tempfile::TempDir, ContainerId)> {
    let engine = Engine::start(test).await?;
    let scratch = tempfile::tempdir().unwrap();
    let id = engine.runtime.create(&spec()).await.unwrap();
    Some((engine, scratch, id))
}

#[tokio::test]
async fn a_workspace_archived_in_one_sandbox_is_restored_whole_in_another() {
    let Some((engine, scratch, first)) = sandbox("workspace_round_trip").await else { return };
    sh(
        &first,
        "cd /workspace && mkdir -p src/deep/er .hidden 'with space' && printf 'print(1)\\n' > src/main.py \
         && head -c 3000000 /dev/urandom > src/deep/er/blob.bin && echo secret > .hidden/key \
         && echo x > 'with space/f i l e' && ln -s src/main.py link.py && ln -s /usr/bin/python3 python \
         && chmod 700 .hidden",
    );
    let before = listing(&first);

    let archive = engine.runtime.archive_workspace(&first, LIMIT, scratch.path()).await.unwrap();
    assert!(archive.size() > 3_000_000, "the archive holds the blob: {} bytes", archive.size());
    check_archive_file(archive.path()).await.expect("sandkeeper accepts its own archives");

    let second = engine.runtime.create(&spec()).await.unwrap();
    sh(&second, "echo stale > /workspace/stale.txt");
    engine.runtime.restore_workspace(&second, &archive).await.unwrap();
    assert_eq!(listing(&second), before, "the restored workspace is the archived one");
    assert_eq!(sh(&second, "stat -c %a /workspace/.hidden"), "700");
    let uid = sandbox_user(&second);
    assert_eq!(
        sh(&second, "stat -c %u:%g /workspace/src/main.py"),
        uid,
        "owned by the sandbox user"
    );
    drop(archive);
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0, "no temporary file is left");
}

#[tokio::test]
async fn a_refused_archive_changes_nothing_in_the_workspace() {
    let Some((engine, scratch, id)) = sandbox("workspace_refused").await else { return };
    sh(&id, "echo kept > /workspace/kept.txt");
    let bad = [
        tar(&[Entry::symlink("etc", "/etc"), Entry::file("etc/evil", b"x")]),
        tar(&[Entry::file("../evil", b"x")]),
        tar(&[Entry::file("/tmp/evil", b"x")]),
        b"this is not a tar archive, just text".repeat(40),
    ];
    for bytes in bad {
        let archive = ArchiveFile::from_bytes(scratch.path(), &bytes).await.unwrap();
        let error = engine.runtime.restore_workspace(&id, &archive).await.unwrap_err();
        assert!(matches!(error, ArchiveError::Invalid(_)), "{error:?}");
        assert_eq!(sh(&id, "ls -A /workspace"), "kept.txt");
    }
    assert_eq!(sh(&id, "ls -A /tmp"), "", "nothing landed outside /workspace");
}

#[tokio::test]
async fn an_archive_beyond_the_limit_is_refused_and_nothing_is_kept() {
    let Some((engine, scratch, id)) = sandbox("workspace_too_large").await else { return };
    sh(&id, "head -c 200000 /dev/zero > /workspace/big");
    let error = engine.runtime.archive_workspace(&id, 100_000, scratch.path()).await.unwrap_err();
    assert_eq!(error, ArchiveError::TooLarge { limit: 100_000 });
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    let archive = engine.runtime.archive_workspace(&id, LIMIT, scratch.path()).await.unwrap();
    let bytes = archive.read_all().await.unwrap();
    let contents = files(&bytes).expect("a readable tar");
    assert_eq!(contents, vec![("big".to_owned(), vec![0u8; 200_000])]);
}

#[tokio::test]
async fn a_stopped_sandbox_cannot_be_archived_or_restored() {
    let Some((engine, scratch, id)) = sandbox("workspace_stopped").await else { return };
    engine.runtime.stop(&id).await.unwrap();
    let error = engine.runtime.archive_workspace(&id, LIMIT, scratch.path()).await.unwrap_err();
    assert!(matches!(error, ArchiveError::ContainerNotRunning { .. }), "{error:?}");
    let archive =
        ArchiveFile::from_bytes(scratch.path(), &tar(&[Entry::file("a", b"1")])).await.unwrap();
    let error = engine.runtime.restore_workspace(&id, &archive).await.unwrap_err();
    assert!(matches!(error, ArchiveError::ContainerNotRunning { .. }), "{error:?}");
}
