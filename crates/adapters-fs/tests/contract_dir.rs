//! The workspace store contract against the directory store, on a real directory.

use std::sync::Arc;

use sandkeeper_adapters_fs::DirWorkspaceStore;
use sandkeeper_ports::WorkspaceStore;
use sandkeeper_ports::testkit::contract::Subject;

async fn store() -> Subject<dyn WorkspaceStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = DirWorkspaceStore::open(dir.path().join("workspaces")).await.unwrap();
    Subject::keeping(Arc::new(store), dir)
}

mod dir_workspaces {
    sandkeeper_ports::workspace_store_contract!(super::store);
}

#[tokio::test]
async fn a_crash_leftover_is_removed_and_the_archive_in_place_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let chat = sandkeeper_domain::ChatId::parse("0b5e8a52-3c1f-4d6e-9a7b-1c2d3e4f5a6b").unwrap();
    let store = DirWorkspaceStore::open(dir.path()).await.unwrap();
    let meta = sandkeeper_ports::WorkspaceMeta {
        chat_id: chat,
        size_bytes: 3,
        saved_at: chrono::Utc::now(),
        session_id: None,
    };
    let file = sandkeeper_ports::ArchiveFile::from_bytes(dir.path(), b"abc").await.unwrap();
    store.put(&meta, file).await.unwrap();
    let leftover = dir.path().join(format!(".put-{chat}-dead"));
    std::fs::write(&leftover, b"half an archive").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let in_progress = dir.path().join(format!(".put-{chat}-another-process"));
    std::fs::write(&in_progress, b"being written").unwrap();
    let store = DirWorkspaceStore::open(dir.path()).await.unwrap();
    assert!(!leftover.exists(), "a half-written archive left by a crash is removed at start");
    assert!(in_progress.exists(), "a young one may be another process's put in progress");
    let (_, archive) = store.get(chat, dir.path()).await.unwrap().unwrap();
    assert_eq!(archive.read_all().await.unwrap(), b"abc");
}
