//! The contract of [`WorkspaceStore`](crate::WorkspaceStore).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_domain::{ChatId, SessionId, Timestamp};

use super::Subject;
use crate::{ArchiveFile, WorkspaceMeta, WorkspaceStore};

super::contract_suite! {
    /// One `#[tokio::test]` per case of this suite; see [`crate::session_repository_contract`].
    workspace_store_contract for workspaces: [
        a_stored_archive_comes_back_whole_with_its_metadata,
        a_chat_without_an_archive_has_none,
        a_new_archive_replaces_the_previous_one,
        archives_of_different_chats_are_independent,
        delete_removes_the_archive_and_says_whether_there_was_one,
        a_large_archive_comes_back_byte_for_byte,
        a_reader_never_sees_a_mix_of_two_archives,
        stale_archives_are_deleted_in_bounded_batches,
        a_restore_or_a_save_keeps_an_archive_from_retention,
        an_archive_without_a_session_is_stored_too,
    ]
}

/// A directory for the temporary files of one case, removed when it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        Self(
            std::env::temp_dir()
                .join(format!("sandkeeper-contract-{}", crate::archive::random_token())),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_chat() -> ChatId {
    ChatId::parse(&SessionId::new_v4().to_string()).unwrap()
}

fn at(minute: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap() + TimeDelta::minutes(minute)
}

fn meta(chat_id: ChatId, size: usize, minute: i64) -> WorkspaceMeta {
    WorkspaceMeta {
        chat_id,
        size_bytes: size as u64,
        saved_at: at(minute),
        session_id: Some(SessionId::new_v4()),
    }
}

/// Bytes that differ at every position from those of another `seed`.
fn bytes(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn put(
    store: &Arc<dyn WorkspaceStore>,
    scratch: &Scratch,
    meta: &WorkspaceMeta,
    data: &[u8],
) {
    let file = ArchiveFile::from_bytes(&scratch.0, data).await.unwrap();
    store.put(meta, file).await.unwrap();
}

async fn get(
    store: &Arc<dyn WorkspaceStore>,
    scratch: &Scratch,
    chat_id: ChatId,
) -> Option<(WorkspaceMeta, Vec<u8>)> {
    let (meta, file) = store.get(chat_id, &scratch.0).await.unwrap()?;
    assert_eq!(file.size(), meta.size_bytes, "the file's size is the metadata's");
    let data = file.read_all().await.unwrap();
    Some((meta, data))
}

pub async fn a_stored_archive_comes_back_whole_with_its_metadata(
    subject: &Subject<dyn WorkspaceStore>,
) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    let data = bytes(10_000, 1);
    let saved = meta(chat, data.len(), 0);
    put(store, &scratch, &saved, &data).await;
    assert_eq!(get(store, &scratch, chat).await, Some((saved.clone(), data)));
    assert_eq!(store.meta(chat).await.unwrap(), Some(saved));
}

pub async fn a_chat_without_an_archive_has_none(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    assert_eq!(get(store, &scratch, chat).await, None);
    assert_eq!(store.meta(chat).await.unwrap(), None);
    assert!(!store.delete(chat).await.unwrap());
    store.mark_restored(chat, at(1)).await.unwrap();
    assert_eq!(store.meta(chat).await.unwrap(), None, "marking nothing creates nothing");
}

pub async fn a_new_archive_replaces_the_previous_one(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    put(store, &scratch, &meta(chat, 3000, 0), &bytes(3000, 1)).await;
    let second = meta(chat, 1000, 5);
    put(store, &scratch, &second, &bytes(1000, 2)).await;
    assert_eq!(get(store, &scratch, chat).await, Some((second, bytes(1000, 2))));
}

pub async fn archives_of_different_chats_are_independent(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let (one, two) = (new_chat(), new_chat());
    let first = meta(one, 700, 0);
    put(store, &scratch, &first, &bytes(700, 1)).await;
    put(store, &scratch, &meta(two, 900, 0), &bytes(900, 2)).await;
    assert!(store.delete(two).await.unwrap());
    assert_eq!(get(store, &scratch, one).await, Some((first, bytes(700, 1))));
    assert_eq!(get(store, &scratch, two).await, None);
}

pub async fn delete_removes_the_archive_and_says_whether_there_was_one(
    subject: &Subject<dyn WorkspaceStore>,
) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    put(store, &scratch, &meta(chat, 100, 0), &bytes(100, 1)).await;
    assert!(store.delete(chat).await.unwrap());
    assert!(!store.delete(chat).await.unwrap());
    assert_eq!(get(store, &scratch, chat).await, None);
    assert_eq!(store.meta(chat).await.unwrap(), None);
}

pub async fn a_large_archive_comes_back_byte_for_byte(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    let data = bytes(5 * 1024 * 1024 + 17, 3);
    put(store, &scratch, &meta(chat, data.len(), 0), &data).await;
    let (_, back) = get(store, &scratch, chat).await.unwrap();
    assert!(back == data, "the archive came back changed ({} bytes)", back.len());
}

pub async fn a_reader_never_sees_a_mix_of_two_archives(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    let size = 600 * 1024;
    let versions: Vec<Vec<u8>> = (0..4).map(|seed| bytes(size, seed)).collect();
    put(store, &scratch, &meta(chat, size, 0), &versions[0]).await;
    let writer = {
        let store = Arc::clone(store);
        let versions = versions.clone();
        let dir = scratch.0.clone();
        tokio::spawn(async move {
            for (index, data) in versions.iter().enumerate().skip(1) {
                let file = ArchiveFile::from_bytes(&dir, data).await.unwrap();
                store.put(&meta(chat, size, index as i64), file).await.unwrap();
            }
        })
    };
    for _ in 0..6 {
        let (_, data) = get(store, &scratch, chat).await.unwrap();
        assert!(versions.contains(&data), "a read returned bytes of no single archive");
    }
    writer.await.unwrap();
}

pub async fn stale_archives_are_deleted_in_bounded_batches(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let old: Vec<ChatId> = (0..3).map(|_| new_chat()).collect();
    for chat in &old {
        put(store, &scratch, &meta(*chat, 10, 0), &bytes(10, 1)).await;
    }
    let fresh = new_chat();
    put(store, &scratch, &meta(fresh, 10, 20), &bytes(10, 1)).await;

    let first = store.delete_stale(at(10), 2).await.unwrap();
    assert_eq!(first.len(), 2, "at most the limit per batch");
    let second = store.delete_stale(at(10), 2).await.unwrap();
    assert_eq!(second.len(), 1);
    let mut deleted: Vec<ChatId> = first.into_iter().chain(second).collect();
    deleted.sort();
    let mut expected = old.clone();
    expected.sort();
    assert_eq!(deleted, expected);
    assert!(store.delete_stale(at(10), 2).await.unwrap().is_empty());
    for chat in &old {
        assert_eq!(store.meta(*chat).await.unwrap(), None);
    }
    assert!(store.meta(fresh).await.unwrap().is_some(), "a fresh archive is kept");
}

pub async fn a_restore_or_a_save_keeps_an_archive_from_retention(
    subject: &Subject<dyn WorkspaceStore>,
) {
    let store = subject.port();
    let scratch = Scratch::new();
    let (restored, saved_again) = (new_chat(), new_chat());
    put(store, &scratch, &meta(restored, 10, 0), &bytes(10, 1)).await;
    put(store, &scratch, &meta(saved_again, 10, 0), &bytes(10, 1)).await;
    store.mark_restored(restored, at(15)).await.unwrap();
    put(store, &scratch, &meta(saved_again, 10, 15), &bytes(10, 2)).await;
    assert!(store.delete_stale(at(10), 10).await.unwrap().is_empty());
    let restored_meta = store.meta(restored).await.unwrap().unwrap();
    assert_eq!(restored_meta.saved_at, at(0), "a restore does not change when it was saved");
    let mut deleted = store.delete_stale(at(20), 10).await.unwrap();
    deleted.sort();
    let mut both = vec![restored, saved_again];
    both.sort();
    assert_eq!(deleted, both);
}

pub async fn an_archive_without_a_session_is_stored_too(subject: &Subject<dyn WorkspaceStore>) {
    let store = subject.port();
    let scratch = Scratch::new();
    let chat = new_chat();
    let uploaded = WorkspaceMeta { session_id: None, ..meta(chat, 1024, 3) };
    put(store, &scratch, &uploaded, &bytes(1024, 9)).await;
    assert_eq!(store.meta(chat).await.unwrap(), Some(uploaded));
}
