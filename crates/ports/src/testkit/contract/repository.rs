//! The contract of [`SessionRepository`].
//!
//! Timestamps in these cases are whole microseconds: the SQL stores keep microseconds.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use sandkeeper_domain::{
    ChatId, ContainerId, EngineName, SandboxSession, SandboxStatus, SessionId, Timestamp,
};

use super::Subject;
use crate::{SaveError, SessionRepository};

super::contract_suite! {
    /// One `#[tokio::test]` per case of this suite: `(factory)` or `(factory, when = condition)`,
    /// as the [module](super) says.
    session_repository_contract for repository: [
        save_then_get_round_trips_every_field,
        a_session_is_found_by_its_container,
        get_of_an_unknown_session_is_none,
        save_replaces_the_row_with_the_same_session_id,
        get_running_by_chat_sees_only_the_running_session_of_that_chat,
        second_running_session_for_a_chat_conflicts_and_changes_nothing,
        stopped_and_crashed_sessions_of_a_chat_do_not_conflict,
        resaving_the_running_session_itself_is_not_a_conflict,
        reviving_a_stopped_session_while_another_runs_conflicts,
        a_chat_may_run_again_once_its_running_session_stopped,
        list_expired_includes_the_boundary_and_only_running_sessions,
        list_expired_orders_by_expiry_then_session_id_and_honours_the_limit,
        list_orders_by_created_at_then_session_id_and_honours_the_limit,
        list_filters_by_statuses_and_an_empty_filter_matches_nothing,
        paging_with_list_after_visits_every_row_once_in_order,
        list_after_starts_strictly_after_the_position_and_past_the_end_is_empty,
        count_running_counts_only_running_sessions,
        delete_reports_whether_a_row_went,
        delete_terminal_deletes_only_stopped_or_crashed_rows,
        transition_changes_status_only_from_the_expected_one,
        transition_never_makes_a_second_running_session,
        concurrent_terminal_deletes_of_one_row_remove_it_once,
        concurrent_transitions_of_one_row_change_it_once,
        concurrent_saves_of_two_running_sessions_for_one_chat_conflict_once,
        extend_expiry_moves_a_running_sessions_expiry_later_and_nothing_else,
        extend_expiry_never_moves_an_expiry_back,
        extend_expiry_never_touches_a_stopped_crashed_or_missing_session,
        an_extended_session_leaves_the_expiry_scan,
        concurrent_extensions_of_one_session_keep_the_latest_expiry,
        save_within_saves_below_the_limit_and_changes_nothing_at_it,
        concurrent_saves_within_a_limit_never_go_past_it,
        a_new_session_is_unused_until_marked_and_stays_used,
        a_session_the_store_does_not_know_counts_as_used,
        each_session_keeps_its_engine_and_running_sessions_are_counted_per_engine,
    ]
}

fn base() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap() + TimeDelta::microseconds(123_456)
}

/// Ids whose order is the order of `n`, whatever the spelling the store keeps.
fn session_id(n: u128) -> SessionId {
    SessionId::parse(&format!("{:032x}", 0x5e55_0000_0000_4000_8000_0000_0000_0000 | n)).unwrap()
}

fn chat_id(n: u128) -> ChatId {
    ChatId::parse(&format!("{:032x}", 0xc4a7_0000_0000_4000_8000_0000_0000_0000 | n)).unwrap()
}

/// A session `n` of chat `chat`, created `created` seconds after the base instant and expiring
/// `expires` seconds after it.
fn session(
    n: u128,
    chat: u128,
    status: SandboxStatus,
    created: i64,
    expires: i64,
) -> SandboxSession {
    SandboxSession {
        session_id: session_id(n),
        chat_id: chat_id(chat),
        container_id: ContainerId::new(format!("container-{n}")).unwrap(),
        status,
        created_at: base() + TimeDelta::seconds(created),
        expires_at: base() + TimeDelta::seconds(expires),
        engine: sandkeeper_domain::EngineName::default(),
    }
}

async fn save_all(repo: &Arc<dyn SessionRepository>, sessions: &[SandboxSession]) {
    for session in sessions {
        repo.save(session).await.unwrap_or_else(|error| panic!("saving {session:?}: {error}"));
    }
}

fn ids(sessions: &[SandboxSession]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.session_id).collect()
}

/// Checks a listing that is sorted and bounded: `list(limit)` answers the first `limit`
/// sessions of `expected` (by their `n`), or all of them when there are fewer, for a limit of
/// 100, 3, 0 and `usize::MAX`.
async fn assert_sorted_and_limited(
    list: impl AsyncFn(usize) -> Vec<SandboxSession>,
    expected: &[u128],
) {
    for limit in [100, 3, 0, usize::MAX] {
        let first: Vec<SessionId> = expected.iter().take(limit).map(|n| session_id(*n)).collect();
        assert_eq!(ids(&list(limit).await), first, "limit {limit}");
    }
}

pub async fn save_then_get_round_trips_every_field(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    for (n, status) in SandboxStatus::ALL.into_iter().enumerate() {
        let n = n as u128 + 1;
        let mut saved = session(n, n, status, -30, 270);
        // Sub-second precision survives (microseconds).
        saved.created_at += TimeDelta::microseconds(7);
        repo.save(&saved).await.unwrap();
        assert_eq!(repo.get(saved.session_id).await.unwrap(), Some(saved.clone()), "{status}");
    }
}

pub async fn a_session_is_found_by_its_container(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 300);
    let crashed = session(2, 2, SandboxStatus::Crashed, 0, 300);
    save_all(repo, &[running.clone(), crashed.clone()]).await;
    for saved in [&running, &crashed] {
        assert_eq!(repo.get_by_container(&saved.container_id).await.unwrap().as_ref(), Some(saved));
    }
    let unknown = ContainerId::new("container-unknown").unwrap();
    assert_eq!(repo.get_by_container(&unknown).await.unwrap(), None);
    repo.delete(running.session_id).await.unwrap();
    assert_eq!(repo.get_by_container(&running.container_id).await.unwrap(), None, "deleted");
}

pub async fn get_of_an_unknown_session_is_none(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    assert_eq!(repo.get(session_id(404)).await.unwrap(), None);
    assert_eq!(repo.get_running_by_chat(chat_id(404)).await.unwrap(), None);
}

pub async fn save_replaces_the_row_with_the_same_session_id(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let first = session(1, 1, SandboxStatus::Running, 0, 300);
    repo.save(&first).await.unwrap();
    let replaced = SandboxSession {
        container_id: ContainerId::new("container-replaced").unwrap(),
        status: SandboxStatus::Stopped,
        expires_at: base() + TimeDelta::seconds(900),
        ..first.clone()
    };
    repo.save(&replaced).await.unwrap();
    assert_eq!(repo.get(first.session_id).await.unwrap(), Some(replaced));
    assert_eq!(repo.list(&SandboxStatus::ALL, 10).await.unwrap().len(), 1, "one row, not two");
}

pub async fn get_running_by_chat_sees_only_the_running_session_of_that_chat(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let running = session(3, 1, SandboxStatus::Running, 20, 320);
    save_all(
        repo,
        &[
            session(1, 1, SandboxStatus::Stopped, 0, 300),
            session(2, 1, SandboxStatus::Crashed, 10, 310),
            running.clone(),
            session(4, 2, SandboxStatus::Running, 30, 330),
        ],
    )
    .await;
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(running));
    assert_eq!(
        repo.get_running_by_chat(chat_id(2)).await.unwrap().map(|s| s.session_id),
        Some(session_id(4))
    );
    assert_eq!(repo.get_running_by_chat(chat_id(3)).await.unwrap(), None);
}

pub async fn second_running_session_for_a_chat_conflicts_and_changes_nothing(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let first = session(1, 1, SandboxStatus::Running, 0, 300);
    repo.save(&first).await.unwrap();
    let second = session(2, 1, SandboxStatus::Running, 10, 310);
    assert_eq!(repo.save(&second).await, Err(SaveError::Conflict { chat_id: chat_id(1) }));
    assert_eq!(repo.get(second.session_id).await.unwrap(), None, "nothing was written");
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(first));
    assert_eq!(repo.count_running().await.unwrap(), 1);
}

pub async fn stopped_and_crashed_sessions_of_a_chat_do_not_conflict(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    // Terminal sessions first, then a running one; and terminal sessions beside a running one.
    save_all(
        repo,
        &[
            session(1, 1, SandboxStatus::Stopped, 0, 300),
            session(2, 1, SandboxStatus::Crashed, 10, 310),
            session(3, 1, SandboxStatus::Running, 20, 320),
            session(4, 1, SandboxStatus::Stopped, 30, 330),
            session(5, 1, SandboxStatus::Crashed, 40, 340),
        ],
    )
    .await;
    assert_eq!(repo.list(&SandboxStatus::ALL, 10).await.unwrap().len(), 5);
    assert_eq!(repo.count_running().await.unwrap(), 1);
}

pub async fn resaving_the_running_session_itself_is_not_a_conflict(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let first = session(1, 1, SandboxStatus::Running, 0, 300);
    repo.save(&first).await.unwrap();
    let extended = SandboxSession { expires_at: base() + TimeDelta::seconds(600), ..first };
    repo.save(&extended).await.unwrap();
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(extended));
}

pub async fn reviving_a_stopped_session_while_another_runs_conflicts(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let stopped = session(1, 1, SandboxStatus::Stopped, 0, 300);
    let running = session(2, 1, SandboxStatus::Running, 10, 310);
    save_all(repo, &[stopped.clone(), running.clone()]).await;
    let revived = SandboxSession { status: SandboxStatus::Running, ..stopped.clone() };
    assert_eq!(repo.save(&revived).await, Err(SaveError::Conflict { chat_id: chat_id(1) }));
    assert_eq!(repo.get(stopped.session_id).await.unwrap(), Some(stopped), "row unchanged");
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(running));
}

pub async fn a_chat_may_run_again_once_its_running_session_stopped(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let first = session(1, 1, SandboxStatus::Running, 0, 300);
    repo.save(&first).await.unwrap();
    repo.save(&SandboxSession { status: SandboxStatus::Stopped, ..first }).await.unwrap();
    let next = session(2, 1, SandboxStatus::Running, 10, 310);
    repo.save(&next).await.unwrap();
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(next));
}

pub async fn list_expired_includes_the_boundary_and_only_running_sessions(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let now = base() + TimeDelta::seconds(300);
    let at_boundary = session(1, 1, SandboxStatus::Running, 0, 300);
    let mut one_micro_later = session(2, 2, SandboxStatus::Running, 0, 300);
    one_micro_later.expires_at += TimeDelta::microseconds(1);
    let mut one_micro_earlier = session(3, 3, SandboxStatus::Running, 0, 300);
    one_micro_earlier.expires_at -= TimeDelta::microseconds(1);
    save_all(
        repo,
        &[
            at_boundary.clone(),
            one_micro_later,
            one_micro_earlier.clone(),
            session(4, 4, SandboxStatus::Stopped, 0, 100),
            session(5, 5, SandboxStatus::Crashed, 0, 100),
        ],
    )
    .await;
    let expired = repo.list_expired(now, 100).await.unwrap();
    assert_eq!(expired, vec![one_micro_earlier, at_boundary]);
}

pub async fn list_expired_orders_by_expiry_then_session_id_and_honours_the_limit(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    // Saved out of order; sessions 7 and 3 expire at the same instant (3 sorts first).
    save_all(
        repo,
        &[
            session(9, 9, SandboxStatus::Running, 0, 50),
            session(7, 7, SandboxStatus::Running, 0, 20),
            session(1, 1, SandboxStatus::Running, 0, 40),
            session(3, 3, SandboxStatus::Running, 0, 20),
            session(5, 5, SandboxStatus::Running, 0, 10),
            session(8, 8, SandboxStatus::Running, 0, 500),
        ],
    )
    .await;
    let now = base() + TimeDelta::seconds(100);
    let expired = async |limit| repo.list_expired(now, limit).await.unwrap();
    assert_sorted_and_limited(expired, &[5, 3, 7, 1, 9]).await;
}

pub async fn list_orders_by_created_at_then_session_id_and_honours_the_limit(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    // Statuses interleave in time, so the order must be merged across statuses.
    save_all(
        repo,
        &[
            session(6, 6, SandboxStatus::Crashed, 30, 330),
            session(2, 2, SandboxStatus::Stopped, 10, 310),
            session(8, 8, SandboxStatus::Stopped, 20, 320),
            session(4, 4, SandboxStatus::Crashed, 20, 320),
            session(1, 1, SandboxStatus::Running, 0, 300),
            session(9, 9, SandboxStatus::Stopped, 40, 340),
        ],
    )
    .await;
    let terminal = [SandboxStatus::Stopped, SandboxStatus::Crashed];
    let listed = async |limit| repo.list(&terminal, limit).await.unwrap();
    assert_sorted_and_limited(listed, &[2, 4, 8, 6, 9]).await;
    let listed = async |limit| repo.list(&SandboxStatus::ALL, limit).await.unwrap();
    assert_sorted_and_limited(listed, &[1, 2, 4, 8, 6, 9]).await;
}

pub async fn list_filters_by_statuses_and_an_empty_filter_matches_nothing(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    save_all(
        repo,
        &[
            session(1, 1, SandboxStatus::Running, 0, 300),
            session(2, 2, SandboxStatus::Stopped, 10, 310),
            session(3, 3, SandboxStatus::Crashed, 20, 320),
        ],
    )
    .await;
    for status in SandboxStatus::ALL {
        let found = repo.list(&[status], 10).await.unwrap();
        assert_eq!(found.len(), 1, "{status}");
        assert_eq!(found[0].status, status);
    }
    let twice = [SandboxStatus::Crashed, SandboxStatus::Crashed];
    assert_eq!(ids(&repo.list(&twice, 10).await.unwrap()), [session_id(3)]);
    assert!(repo.list(&[], 10).await.unwrap().is_empty());
}

/// The position of a session in a listing by status.
fn position(session: &SandboxSession) -> (Timestamp, SessionId) {
    (session.created_at, session.session_id)
}

/// Every page of `statuses`, `limit` rows at a time, until a page comes back short.
async fn all_pages(
    repo: &Arc<dyn SessionRepository>,
    statuses: &[SandboxStatus],
    limit: usize,
) -> Vec<Vec<SessionId>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = repo.list_after(statuses, after, limit).await.unwrap();
        assert!(page.len() <= limit, "a page of {} rows for a limit of {limit}", page.len());
        after = page.last().map(position).or(after);
        let short = page.len() < limit;
        pages.push(ids(&page));
        if short {
            return pages;
        }
        assert!(pages.len() <= 100, "paging does not end: {pages:?}");
    }
}

pub async fn paging_with_list_after_visits_every_row_once_in_order(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    // Statuses interleave in time and several rows share a created_at, so that a page boundary
    // falls between rows of one instant and the order must be merged across statuses.
    save_all(
        repo,
        &[
            session(7, 7, SandboxStatus::Running, 0, 300),
            session(3, 3, SandboxStatus::Running, 0, 300),
            session(5, 5, SandboxStatus::Crashed, 0, 300),
            session(1, 1, SandboxStatus::Running, 10, 300),
            session(9, 9, SandboxStatus::Stopped, 10, 300),
            session(2, 2, SandboxStatus::Running, 10, 300),
            session(8, 8, SandboxStatus::Crashed, 20, 300),
            session(4, 4, SandboxStatus::Running, 30, 300),
            session(6, 6, SandboxStatus::Stopped, 30, 300),
        ],
    )
    .await;

    let running = [SandboxStatus::Running];
    assert_eq!(
        all_pages(repo, &running, 2).await,
        [vec![3, 7], vec![1, 2], vec![4]]
            .map(|page| page.into_iter().map(session_id).collect::<Vec<_>>())
    );
    let everything: Vec<SessionId> = [3, 5, 7, 1, 2, 9, 8, 4, 6].map(session_id).into();
    for limit in 1..=10 {
        let pages = all_pages(repo, &SandboxStatus::ALL, limit).await;
        assert_eq!(pages.concat(), everything, "limit {limit}: {pages:?}");
        let terminal = [SandboxStatus::Stopped, SandboxStatus::Crashed];
        let pages = all_pages(repo, &terminal, limit).await;
        assert_eq!(pages.concat(), [5, 9, 8, 6].map(session_id), "limit {limit}: {pages:?}");
    }
    // The first page is `list`'s answer.
    assert_eq!(
        repo.list_after(&SandboxStatus::ALL, None, 4).await.unwrap(),
        repo.list(&SandboxStatus::ALL, 4).await.unwrap()
    );
}

pub async fn list_after_starts_strictly_after_the_position_and_past_the_end_is_empty(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let sessions = [
        session(1, 1, SandboxStatus::Running, 0, 300),
        session(2, 2, SandboxStatus::Running, 10, 300),
        session(3, 3, SandboxStatus::Running, 10, 300),
        session(4, 4, SandboxStatus::Running, 20, 300),
        session(5, 5, SandboxStatus::Stopped, 30, 300),
    ];
    save_all(repo, &sessions).await;
    let running = [SandboxStatus::Running];
    let after = |n: usize| Some(position(&sessions[n - 1]));

    // Strictly after: the row at the position is not repeated; a tie on created_at is broken
    // by session_id.
    assert_eq!(
        ids(&repo.list_after(&running, after(2), 10).await.unwrap()),
        [3, 4].map(session_id)
    );
    assert_eq!(ids(&repo.list_after(&running, after(2), 1).await.unwrap()), [session_id(3)]);
    // The last running row, and a position later than every row, leave nothing.
    assert!(repo.list_after(&running, after(4), 10).await.unwrap().is_empty());
    let later = Some((base() + TimeDelta::seconds(3600), session_id(0)));
    assert!(repo.list_after(&SandboxStatus::ALL, later, 10).await.unwrap().is_empty());
    // A row of another status past the position is still listed when its status is asked for.
    assert_eq!(
        ids(&repo.list_after(&SandboxStatus::ALL, after(4), 10).await.unwrap()),
        [session_id(5)]
    );
    // A position that is no row (deleted, or never there) works all the same.
    assert!(repo.delete(session_id(2)).await.unwrap());
    assert_eq!(
        ids(&repo.list_after(&running, after(2), 10).await.unwrap()),
        [3, 4].map(session_id)
    );
    let between = Some((base() + TimeDelta::seconds(5), session_id(99)));
    assert_eq!(ids(&repo.list_after(&running, between, 10).await.unwrap()), [3, 4].map(session_id));
    // Before every row: everything.
    let earliest = Some((base() - TimeDelta::seconds(1), session_id(99)));
    assert_eq!(
        ids(&repo.list_after(&running, earliest, 10).await.unwrap()),
        [1, 3, 4].map(session_id)
    );
    // A limit of zero and an empty filter match nothing, wherever the position.
    assert!(repo.list_after(&running, earliest, 0).await.unwrap().is_empty());
    assert!(repo.list_after(&[], earliest, 10).await.unwrap().is_empty());
}

pub async fn count_running_counts_only_running_sessions(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    assert_eq!(repo.count_running().await.unwrap(), 0);
    save_all(
        repo,
        &[
            session(1, 1, SandboxStatus::Running, 0, 300),
            session(2, 2, SandboxStatus::Running, 0, -300),
            session(3, 3, SandboxStatus::Stopped, 0, 300),
            session(4, 4, SandboxStatus::Crashed, 0, 300),
        ],
    )
    .await;
    assert_eq!(repo.count_running().await.unwrap(), 2, "expired but running still counts");
}

pub async fn delete_reports_whether_a_row_went(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 300);
    let other = session(2, 2, SandboxStatus::Running, 0, 300);
    save_all(repo, &[running.clone(), other.clone()]).await;
    assert!(repo.delete(running.session_id).await.unwrap());
    assert_eq!(repo.get(running.session_id).await.unwrap(), None);
    assert!(!repo.delete(running.session_id).await.unwrap(), "already gone");
    assert_eq!(repo.get(other.session_id).await.unwrap(), Some(other), "others untouched");
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), None);
}

pub async fn delete_terminal_deletes_only_stopped_or_crashed_rows(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 300);
    save_all(
        repo,
        &[
            running.clone(),
            session(2, 2, SandboxStatus::Stopped, 0, 300),
            session(3, 3, SandboxStatus::Crashed, 0, 300),
        ],
    )
    .await;
    assert!(!repo.delete_terminal(running.session_id).await.unwrap(), "running is not terminal");
    assert_eq!(repo.get(running.session_id).await.unwrap(), Some(running));
    assert!(repo.delete_terminal(session_id(2)).await.unwrap());
    assert!(repo.delete_terminal(session_id(3)).await.unwrap());
    assert!(!repo.delete_terminal(session_id(2)).await.unwrap(), "already claimed");
    assert!(!repo.delete_terminal(session_id(404)).await.unwrap(), "never existed");
    assert_eq!(ids(&repo.list(&SandboxStatus::ALL, 10).await.unwrap()), [session_id(1)]);
}

pub async fn transition_changes_status_only_from_the_expected_one(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 300);
    repo.save(&running).await.unwrap();
    let id = running.session_id;
    assert!(!repo.transition(id, SandboxStatus::Stopped, SandboxStatus::Crashed).await.unwrap());
    assert_eq!(repo.get(id).await.unwrap().unwrap().status, SandboxStatus::Running);
    assert!(repo.transition(id, SandboxStatus::Running, SandboxStatus::Crashed).await.unwrap());
    let crashed = repo.get(id).await.unwrap().unwrap();
    assert_eq!(crashed, SandboxSession { status: SandboxStatus::Crashed, ..running });
    assert!(!repo.transition(id, SandboxStatus::Running, SandboxStatus::Crashed).await.unwrap());
    assert!(
        !repo
            .transition(session_id(404), SandboxStatus::Running, SandboxStatus::Crashed)
            .await
            .unwrap()
    );
    assert_eq!(repo.count_running().await.unwrap(), 0);
}

pub async fn transition_never_makes_a_second_running_session(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 300);
    let stopped = session(2, 1, SandboxStatus::Stopped, 10, 310);
    save_all(repo, &[running.clone(), stopped.clone()]).await;
    let revived =
        repo.transition(stopped.session_id, SandboxStatus::Stopped, SandboxStatus::Running).await;
    assert!(!matches!(revived, Ok(true)), "a second running session was made: {revived:?}");
    assert_eq!(repo.get(stopped.session_id).await.unwrap(), Some(stopped));
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(running));
}

pub async fn concurrent_terminal_deletes_of_one_row_remove_it_once(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    for round in 1..=10u128 {
        repo.save(&session(round, round, SandboxStatus::Crashed, 0, 300)).await.unwrap();
        let (a, b) = tokio::join!(
            repo.delete_terminal(session_id(round)),
            repo.delete_terminal(session_id(round))
        );
        let removed = [a.unwrap(), b.unwrap()].into_iter().filter(|r| *r).count();
        assert_eq!(removed, 1, "round {round}: exactly one delete claims the row");
        assert_eq!(repo.get(session_id(round)).await.unwrap(), None);
    }
}

pub async fn concurrent_transitions_of_one_row_change_it_once(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    for round in 1..=10u128 {
        repo.save(&session(round, round, SandboxStatus::Running, 0, 300)).await.unwrap();
        let id = session_id(round);
        let (a, b) = tokio::join!(
            repo.transition(id, SandboxStatus::Running, SandboxStatus::Crashed),
            repo.transition(id, SandboxStatus::Running, SandboxStatus::Stopped)
        );
        let changed = [a.unwrap(), b.unwrap()].into_iter().filter(|c| *c).count();
        assert_eq!(changed, 1, "round {round}: exactly one transition applies");
    }
    assert_eq!(repo.count_running().await.unwrap(), 0);
}

pub async fn concurrent_saves_of_two_running_sessions_for_one_chat_conflict_once(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    for round in 1..=10u128 {
        let a = session(round * 2, round, SandboxStatus::Running, 0, 300);
        let b = session(round * 2 + 1, round, SandboxStatus::Running, 0, 300);
        let (saved_a, saved_b) = tokio::join!(repo.save(&a), repo.save(&b));
        let outcomes = [&saved_a, &saved_b];
        let conflicts = outcomes
            .iter()
            .filter(|r| matches!(r, Err(SaveError::Conflict { chat_id }) if *chat_id == a.chat_id))
            .count();
        let saved = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!((saved, conflicts), (1, 1), "round {round}: {saved_a:?} / {saved_b:?}");
        let winner = if saved_a.is_ok() { &a } else { &b };
        let running = repo.get_running_by_chat(a.chat_id).await.unwrap();
        assert_eq!(running.as_ref(), Some(winner), "round {round}");
    }
    let chats: HashSet<_> =
        repo.list(&SandboxStatus::ALL, 100).await.unwrap().iter().map(|s| s.chat_id).collect();
    assert_eq!(chats.len(), 10);
    assert_eq!(repo.count_running().await.unwrap(), 10);
}

pub async fn extend_expiry_moves_a_running_sessions_expiry_later_and_nothing_else(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 300);
    let neighbour = session(2, 2, SandboxStatus::Running, 0, 300);
    save_all(repo, &[running.clone(), neighbour.clone()]).await;
    let later = base() + TimeDelta::seconds(900) + TimeDelta::microseconds(3);
    assert!(repo.extend_expiry(running.session_id, later).await.unwrap());
    let extended = SandboxSession { expires_at: later, ..running };
    assert_eq!(repo.get(extended.session_id).await.unwrap(), Some(extended.clone()));
    assert_eq!(repo.get_running_by_chat(chat_id(1)).await.unwrap(), Some(extended));
    assert_eq!(repo.get(neighbour.session_id).await.unwrap(), Some(neighbour), "untouched");
}

pub async fn extend_expiry_never_moves_an_expiry_back(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    let running = session(1, 1, SandboxStatus::Running, 0, 600);
    repo.save(&running).await.unwrap();
    let id = running.session_id;
    assert!(!repo.extend_expiry(id, running.expires_at).await.unwrap(), "the same instant");
    let earlier = running.expires_at - TimeDelta::microseconds(1);
    assert!(!repo.extend_expiry(id, earlier).await.unwrap(), "one microsecond earlier");
    assert!(!repo.extend_expiry(id, base()).await.unwrap(), "much earlier");
    assert_eq!(repo.get(id).await.unwrap(), Some(running.clone()), "unchanged");
    let one_micro_later = running.expires_at + TimeDelta::microseconds(1);
    assert!(repo.extend_expiry(id, one_micro_later).await.unwrap());
    assert_eq!(repo.get(id).await.unwrap().unwrap().expires_at, one_micro_later);
}

pub async fn extend_expiry_never_touches_a_stopped_crashed_or_missing_session(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let stopped = session(1, 1, SandboxStatus::Stopped, 0, 300);
    let crashed = session(2, 2, SandboxStatus::Crashed, 0, 300);
    save_all(repo, &[stopped.clone(), crashed.clone()]).await;
    let later = base() + TimeDelta::seconds(900);
    assert!(!repo.extend_expiry(stopped.session_id, later).await.unwrap());
    assert!(!repo.extend_expiry(crashed.session_id, later).await.unwrap());
    assert!(!repo.extend_expiry(session_id(404), later).await.unwrap(), "never existed");
    assert_eq!(repo.get(stopped.session_id).await.unwrap(), Some(stopped));
    assert_eq!(repo.get(crashed.session_id).await.unwrap(), Some(crashed));
    assert_eq!(repo.get(session_id(404)).await.unwrap(), None, "nothing was created");

    // A session deleted after a caller read it is not brought back by a late extension.
    let deleted = session(3, 3, SandboxStatus::Running, 0, 300);
    repo.save(&deleted).await.unwrap();
    assert!(repo.delete(deleted.session_id).await.unwrap());
    assert!(!repo.extend_expiry(deleted.session_id, later).await.unwrap());
    assert_eq!(repo.get(deleted.session_id).await.unwrap(), None);
}

pub async fn an_extended_session_leaves_the_expiry_scan(subject: &Subject<dyn SessionRepository>) {
    let repo = subject.port();
    let now = base() + TimeDelta::seconds(300);
    let due = session(1, 1, SandboxStatus::Running, 0, 300);
    let other = session(2, 2, SandboxStatus::Running, 0, 200);
    save_all(repo, &[due.clone(), other.clone()]).await;
    assert_eq!(ids(&repo.list_expired(now, 10).await.unwrap()), [2, 1].map(session_id));
    assert!(repo.extend_expiry(due.session_id, now + TimeDelta::microseconds(1)).await.unwrap());
    assert_eq!(ids(&repo.list_expired(now, 10).await.unwrap()), [session_id(2)]);
    assert_eq!(repo.count_running().await.unwrap(), 2);
}

pub async fn concurrent_extensions_of_one_session_keep_the_latest_expiry(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    for round in 1..=10u128 {
        let running = session(round, round, SandboxStatus::Running, 0, 300);
        repo.save(&running).await.unwrap();
        let sooner = base() + TimeDelta::seconds(400);
        let latest = base() + TimeDelta::seconds(500);
        // Both orders of arrival, over the rounds.
        let (a, b) = if round % 2 == 0 { (sooner, latest) } else { (latest, sooner) };
        let (first, second) = tokio::join!(
            repo.extend_expiry(running.session_id, a),
            repo.extend_expiry(running.session_id, b)
        );
        let changed = [first.unwrap(), second.unwrap()].into_iter().filter(|c| *c).count();
        assert!(changed >= 1, "round {round}: at least one extension applies");
        let stored = repo.get(running.session_id).await.unwrap().unwrap();
        assert_eq!(stored.expires_at, latest, "round {round}: the later expiry wins");
    }
}

pub async fn save_within_saves_below_the_limit_and_changes_nothing_at_it(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let stopped = session(9, 9, SandboxStatus::Stopped, 0, 300);
    save_all(repo, &[stopped]).await;
    assert!(repo.save_within(&session(1, 1, SandboxStatus::Running, 0, 300), 2).await.unwrap());
    assert!(repo.save_within(&session(2, 2, SandboxStatus::Running, 0, 300), 2).await.unwrap());
    let third = session(3, 3, SandboxStatus::Running, 0, 300);
    assert!(!repo.save_within(&third, 2).await.unwrap(), "two running: the limit");
    assert_eq!(repo.get(third.session_id).await.unwrap(), None, "nothing saved");
    assert_eq!(repo.count_running().await.unwrap(), 2);
    // A session already running does not count against itself when saved again.
    let again = session(2, 2, SandboxStatus::Running, 0, 600);
    assert!(repo.save_within(&again, 2).await.unwrap());
    assert_eq!(repo.get(again.session_id).await.unwrap(), Some(again));
    // The chat rule still holds.
    let second_of_chat_1 = session(4, 1, SandboxStatus::Running, 0, 300);
    let error = repo.save_within(&second_of_chat_1, 10).await.unwrap_err();
    assert!(matches!(error, SaveError::Conflict { .. }), "{error:?}");
    assert!(!repo.save_within(&third, 0).await.unwrap(), "a limit of zero admits none");
}

pub async fn concurrent_saves_within_a_limit_never_go_past_it(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    const LIMIT: u64 = 5;
    let saves = (1..=20u128).map(|n| {
        let repo = Arc::clone(repo);
        tokio::spawn(async move {
            repo.save_within(&session(n, n, SandboxStatus::Running, 0, 300), LIMIT).await
        })
    });
    let mut saved = 0;
    for save in saves.collect::<Vec<_>>() {
        if save.await.expect("a saving task panicked").expect("no store error") {
            saved += 1;
        }
    }
    assert_eq!(saved, LIMIT, "exactly the limit was admitted");
    assert_eq!(repo.count_running().await.unwrap(), LIMIT);
}

pub async fn a_new_session_is_unused_until_marked_and_stays_used(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let marked = session(1, 1, SandboxStatus::Running, 0, 300);
    let other = session(2, 2, SandboxStatus::Running, 0, 300);
    save_all(repo, &[marked.clone(), other.clone()]).await;
    assert!(!repo.workspace_used(marked.session_id).await.unwrap(), "a new sandbox is unused");
    repo.mark_workspace_used(marked.session_id).await.unwrap();
    repo.mark_workspace_used(marked.session_id).await.unwrap();
    assert!(repo.workspace_used(marked.session_id).await.unwrap(), "marked twice, used once");
    assert!(!repo.workspace_used(other.session_id).await.unwrap(), "others untouched");
    // Saving the row again (a status change, an expiry) keeps the mark.
    let stopped = SandboxSession { status: SandboxStatus::Stopped, ..marked.clone() };
    repo.save(&stopped).await.unwrap();
    assert!(repo.extend_expiry(other.session_id, base() + TimeDelta::seconds(900)).await.unwrap());
    assert!(repo.workspace_used(marked.session_id).await.unwrap());
    assert!(!repo.workspace_used(other.session_id).await.unwrap());
    assert_eq!(repo.get(marked.session_id).await.unwrap(), Some(stopped), "the row is unchanged");
}

pub async fn a_session_the_store_does_not_know_counts_as_used(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    let gone = session(1, 1, SandboxStatus::Running, 0, 300);
    assert!(repo.workspace_used(gone.session_id).await.unwrap());
    repo.mark_workspace_used(gone.session_id).await.unwrap();
    assert_eq!(repo.get(gone.session_id).await.unwrap(), None, "marking made no row");
    assert_eq!(repo.count_running().await.unwrap(), 0);
}

pub async fn each_session_keeps_its_engine_and_running_sessions_are_counted_per_engine(
    subject: &Subject<dyn SessionRepository>,
) {
    let repo = subject.port();
    assert_eq!(repo.count_running_by_engine().await.unwrap(), vec![]);
    let on = |mut session: SandboxSession, engine: &str| {
        session.engine = EngineName::parse(engine).unwrap();
        session
    };
    let sessions = [
        on(session(1, 1, SandboxStatus::Running, 0, 300), "host-b"),
        on(session(2, 2, SandboxStatus::Running, 0, -300), "host-b"),
        on(session(3, 3, SandboxStatus::Running, 0, 300), "gvisor_1"),
        on(session(4, 4, SandboxStatus::Crashed, 0, 300), "gvisor_1"),
        on(session(5, 5, SandboxStatus::Stopped, 0, 300), "idle"),
        session(6, 6, SandboxStatus::Running, 0, 300),
    ];
    save_all(repo, &sessions).await;
    for saved in &sessions {
        assert_eq!(repo.get(saved.session_id).await.unwrap().as_ref(), Some(saved));
    }
    let running = repo.get_running_by_chat(chat_id(3)).await.unwrap().unwrap();
    assert_eq!(running.engine.as_str(), "gvisor_1");
    let counts: Vec<(String, u64)> = repo
        .count_running_by_engine()
        .await
        .unwrap()
        .into_iter()
        .map(|(engine, count)| (engine.to_string(), count))
        .collect();
    let expected = [("default", 1), ("gvisor_1", 1), ("host-b", 2)];
    assert_eq!(counts, expected.map(|(engine, count)| (engine.to_owned(), count)));
}
