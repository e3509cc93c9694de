//! Durable workspaces with fakes: saved before every removal, restored on the chat's next
//! create, kept when saving or restoring fails, checkpointed when changed, reaped by retention,
//! and the archive routes' use cases.

mod workspace_support;

use chrono::TimeDelta;
use sandkeeper_ports::tar::{Entry, tar};
use sandkeeper_ports::testkit::{FakeRuntime, RuntimeCall};
use sandkeeper_ports::{ArchiveError, ArchiveFile, SessionRepository};
use sandkeeper_usecase::{
    CreateResult, CreateSandboxCommand, CreateSandboxError, DeleteSandboxError, Operation,
    SandboxAccess, SandboxSlots, WorkspaceError, WorkspaceRestore,
};
use workspace_support::*;

#[tokio::test]
async fn a_deleted_sandboxs_files_are_there_again_when_the_chat_comes_back() {
    let h = Harness::new();
    let chat_id = chat();
    let (first, workspace) = h.create(chat_id).await;
    assert_eq!(
        workspace,
        Some(WorkspaceRestore { restored: false, size_bytes: 0, saved_at: None })
    );
    h.write(&first, "src/main.py", b"print(1)\n").await;

    h.delete.execute(chat_id).await.unwrap().expect("a sandbox was deleted");
    let saved = h.stored(chat_id).await.expect("the workspace was saved before the removal");
    assert_eq!(saved.session_id, Some(first.session_id));

    h.clock.advance(TimeDelta::minutes(3));
    let (second, workspace) = h.create(chat_id).await;
    assert_ne!(second.session_id, first.session_id);
    assert_eq!(h.files(&second), only_file("src/main.py", b"print(1)\n"));
    assert_eq!(
        workspace,
        Some(WorkspaceRestore {
            restored: true,
            size_bytes: saved.size_bytes,
            saved_at: Some(start())
        })
    );
    assert!(h.scratch_is_empty(), "no temporary archive is left behind");
}

#[tokio::test]
async fn an_expired_sandbox_is_saved_by_the_cleanup_and_by_a_replacement() {
    let h = Harness::new();
    let (one, two) = (chat(), chat());
    let (first, _) = h.create(one).await;
    let (other, _) = h.create(two).await;
    h.write(&first, "a.txt", b"from the cleanup").await;
    h.write(&other, "b.txt", b"from the replacement").await;
    h.clock.advance(TimeDelta::minutes(6));

    // One chat comes back before the cleanup: the replacement saves and restores.
    let outcome = h.create.execute(CreateSandboxCommand::new(two)).await.unwrap();
    assert_eq!(outcome.result, CreateResult::Replaced);
    assert_eq!(h.files(&outcome.session), only_file("b.txt", b"from the replacement"));

    let report = h.cleanup.execute().await.unwrap();
    assert_eq!(report.cleaned.len(), 1);
    let (back, _) = h.create(one).await;
    assert_eq!(h.files(&back), only_file("a.txt", b"from the cleanup"));
}

#[tokio::test]
async fn a_sandbox_whose_workspace_cannot_be_saved_stays_and_the_next_pass_saves_it() {
    let h = Harness::new();
    let chat_id = chat();
    let previous = h.put_stored_file(chat_id, "old.txt", b"old").await;
    let (session, _) = h.create(chat_id).await;
    h.write(&session, "new.txt", b"new").await;
    h.clock.advance(TimeDelta::minutes(6));

    h.runtime.fail_archive(unavailable());
    let report = h.cleanup.execute().await.unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(report.errors[0].error.kind(), "workspace_archive_failed");
    assert!(h.runtime.container_ids().contains(&session.container_id), "the container stays");
    assert!(h.repository.get(session.session_id).await.unwrap().is_some(), "the row stays");
    assert_eq!(h.stored(chat_id).await, Some(previous), "the previous archive is kept");

    h.runtime.fail_archive(unavailable());
    let error = h.delete.execute(chat_id).await.unwrap_err();
    assert!(matches!(error, DeleteSandboxError::Workspace(_)), "{error:?}");
    assert!(h.runtime.container_ids().contains(&session.container_id));

    let report = h.cleanup.execute().await.unwrap();
    assert_eq!(report.cleaned.len(), 1);
    assert_eq!(h.stored(chat_id).await.unwrap().session_id, Some(session.session_id));
}

#[tokio::test]
async fn a_workspace_that_can_never_be_archived_does_not_keep_its_sandbox_alive() {
    let h = Harness::new();
    let chat_id = chat();
    let previous = h.put_stored_file(chat_id, "old.txt", b"old").await;
    let (session, _) = h.create(chat_id).await;
    h.runtime.fail_archive(ArchiveError::TooLarge { limit: 1 });
    h.delete.execute(chat_id).await.unwrap().expect("deleted");
    assert!(!h.runtime.container_ids().contains(&session.container_id));
    assert_eq!(h.stored(chat_id).await, Some(previous), "the previous archive is kept");
}

#[tokio::test]
async fn a_failed_restore_removes_the_new_sandbox_and_keeps_the_archive() {
    let h = Harness::new();
    let chat_id = chat();
    let stored = h.put_stored_file(chat_id, "keep.txt", b"keep").await;
    h.runtime.fail_restore(unavailable());
    let error = h.create.execute(CreateSandboxCommand::new(chat_id)).await.unwrap_err();
    assert!(
        matches!(error, CreateSandboxError::Workspace(WorkspaceError::Restore { .. })),
        "{error:?}"
    );
    assert_eq!(error.kind(), "workspace_restore_failed");
    assert!(h.runtime.container_ids().is_empty(), "the new container was removed");
    assert_eq!(h.repository.get_running_by_chat(chat_id).await.unwrap(), None);
    assert_eq!(h.stored(chat_id).await, Some(stored));

    // Once the engine is back, the same archive is restored.
    let (session, workspace) = h.create(chat_id).await;
    assert!(workspace.unwrap().restored);
    assert_eq!(h.files(&session), only_file("keep.txt", b"keep"));
}

#[tokio::test]
async fn a_stored_archive_that_is_refused_is_corrupt_and_kept() {
    let h = Harness::new();
    let chat_id = chat();
    let stored = h.put_stored_file(chat_id, "../escape", b"x").await;
    let error = h.create.execute(CreateSandboxCommand::new(chat_id)).await.unwrap_err();
    let CreateSandboxError::Workspace(WorkspaceError::Corrupt { reason, .. }) = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("outside /workspace"), "{reason}");
    assert!(error.to_string().contains("DELETE /v1/chats/"), "says how to reset it: {error}");
    assert!(h.runtime.container_ids().is_empty());
    assert_eq!(h.stored(chat_id).await, Some(stored));
}

#[tokio::test]
async fn a_checkpoint_archives_the_sandboxes_that_changed_and_only_those() {
    let h = Harness::new();
    let access = SandboxAccess::new(
        h.repository.clone(),
        h.runtime.clone(),
        h.clock.clone(),
        SandboxSlots::new(4),
    )
    .with_workspace_changes(h.workspaces.changes().clone());
    let (changed, quiet) = (chat(), chat());
    let (session, _) = h.create(changed).await;
    h.create(quiet).await;
    h.write(&session, "work.txt", b"done").await;
    drop(access.enter(changed, Operation::Exec).await.unwrap());
    drop(access.enter(quiet, Operation::Download).await.unwrap());

    let report = h.workspaces.checkpoint().await;
    assert_eq!(report.archived, 1);
    assert_eq!(h.stored(changed).await.unwrap().session_id, Some(session.session_id));
    assert_eq!(h.stored(quiet).await, None, "a download changes nothing");

    let archives_before = archive_calls(&h.runtime);
    assert_eq!(h.workspaces.checkpoint().await.archived, 0, "nothing changed since");
    assert_eq!(archive_calls(&h.runtime), archives_before);

    // A sandbox removed meanwhile is not checkpointed.
    drop(access.enter(changed, Operation::Upload).await.unwrap());
    h.delete.execute(changed).await.unwrap();
    let archives_before = archive_calls(&h.runtime);
    assert_eq!(h.workspaces.checkpoint().await.archived, 0);
    assert_eq!(archive_calls(&h.runtime), archives_before);
}

#[tokio::test]
async fn a_sandbox_nothing_entered_is_removed_without_an_archive() {
    let h = Harness::new();
    let (fresh, restored, looked_at, uploaded) = (chat(), chat(), chat(), chat());
    let stored = h.put_stored_file(restored, "kept.txt", b"kept").await;
    for chat_id in [fresh, restored, looked_at, uploaded] {
        h.create(chat_id).await;
    }
    // A download reads the workspace but cannot change it.
    drop(h.access.enter(looked_at, Operation::Download).await.unwrap());
    // An archive uploaded through the workspace routes does change it.
    let body = tar(&[Entry::file("up.txt", b"up")]);
    let file = ArchiveFile::from_bytes(h.scratch.path(), &body).await.unwrap();
    h.workspaces.upload(uploaded, file).await.unwrap();
    let uploaded_meta = h.stored(uploaded).await.unwrap();
    h.clock.advance(TimeDelta::minutes(6));

    let archives_before = archive_calls(&h.runtime);
    h.delete.execute(fresh).await.unwrap().expect("deleted");
    let report = h.cleanup.execute().await.unwrap();
    assert_eq!(report.cleaned.len(), 3, "{report:?}");
    assert!(h.runtime.container_ids().is_empty(), "every sandbox was removed");
    // Only the uploaded one was archived; the others keep what they had (nothing, or the
    // archive restored into them, unchanged).
    assert_eq!(archive_calls(&h.runtime), archives_before + 1);
    assert_eq!(h.stored(fresh).await, None);
    assert_eq!(h.stored(looked_at).await, None);
    assert_eq!(h.stored(restored).await, Some(stored));
    let saved = h.stored(uploaded).await.unwrap();
    assert_eq!(saved.session_id, uploaded_meta.session_id);
    assert!(saved.saved_at > uploaded_meta.saved_at, "saved again at the removal");
}

fn archive_calls(runtime: &FakeRuntime) -> usize {
    runtime.calls().iter().filter(|call| matches!(call, RuntimeCall::ArchiveWorkspace(_))).count()
}

#[tokio::test]
async fn retention_deletes_archives_neither_saved_nor_restored_within_it() {
    let h = Harness::new();
    let (old, restored) = (chat(), chat());
    h.put_stored_file(old, "a", b"1").await;
    h.put_stored_file(restored, "b", b"2").await;
    h.clock.advance(TimeDelta::days(6));
    h.create(restored).await;
    h.clock.advance(TimeDelta::days(2));

    assert_eq!(h.workspaces.reap().await.unwrap(), 1);
    assert_eq!(h.stored(old).await, None);
    assert!(h.stored(restored).await.is_some(), "restored 2 days ago: kept");
}

#[tokio::test]
async fn an_uploaded_archive_replaces_the_stored_one_and_the_running_workspace() {
    let h = Harness::new();
    let (chat_id, session) = h.sandbox_with_file("before.txt", b"before").await;
    let body = tar(&[Entry::file("after.txt", b"after")]);
    let file = ArchiveFile::from_bytes(h.scratch.path(), &body).await.unwrap();
    let meta = h.workspaces.upload(chat_id, file).await.unwrap();
    assert_eq!(meta.size_bytes, body.len() as u64);
    assert_eq!(meta.session_id, Some(session.session_id));
    assert_eq!(h.files(&session), only_file("after.txt", b"after"));
    assert_eq!(h.stored(chat_id).await, Some(meta));

    let download = h.workspaces.download(chat_id).await.unwrap();
    assert_eq!(download.read_all().await.unwrap(), body, "the running workspace, as a tar");
}

#[tokio::test]
async fn a_refused_upload_changes_nothing() {
    let h = Harness::new();
    let (chat_id, session) = h.sandbox_with_file("kept.txt", b"kept").await;
    let stored = h.put_stored_file(chat_id, "kept.txt", b"kept").await;
    for body in [
        b"not a tar at all".repeat(64),
        tar(&[Entry::symlink("l", "/etc"), Entry::file("l/passwd", b"x")]),
    ] {
        let file = ArchiveFile::from_bytes(h.scratch.path(), &body).await.unwrap();
        let error = h.workspaces.upload(chat_id, file).await.unwrap_err();
        assert_eq!(error.kind(), "invalid_archive", "{error}");
        assert_eq!(h.files(&session), only_file("kept.txt", b"kept"));
        assert_eq!(h.stored(chat_id).await, Some(stored.clone()));
    }
}

#[tokio::test]
async fn without_a_sandbox_the_stored_archive_is_served_and_deleting_it_is_final() {
    let h = Harness::new();
    let chat_id = chat();
    assert_eq!(h.workspaces.download(chat_id).await.unwrap_err().kind(), "no_workspace");
    let body = tar(&[Entry::file("x", b"y")]);
    h.put_stored(chat_id, &body).await;
    assert_eq!(h.workspaces.download(chat_id).await.unwrap().read_all().await.unwrap(), body);
    h.workspaces.delete(chat_id).await.unwrap();
    assert_eq!(h.workspaces.delete(chat_id).await.unwrap_err().kind(), "no_workspace");
    assert_eq!(h.workspaces.meta(chat_id).await.unwrap_err().kind(), "no_workspace");
}
