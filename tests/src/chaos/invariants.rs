//! The invariants a cycle checks after its recovery, one function per rule, each message named
//! by its letter (see the module documentation of `chaos`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::docker;
use super::{DockerContainer, HandedOut, POOL_STATUS_PREFIX, Row};
use crate::Server;

/// The invariants (a), (b) and (c) over the store's rows and the engine's containers.
pub(super) fn invariants(rows: &[Row], containers: &[DockerContainer]) -> Vec<String> {
    let mut violations = containers_match_rows(rows, containers);
    violations.extend(running_rows_have_running_containers(rows, containers));
    violations.extend(one_running_session_per_chat(rows));
    violations.extend(one_running_container_per_chat(rows, containers));
    violations.extend(one_chat_per_container(rows));
    violations
}

/// (g) every workspace archive the directory store holds (`<data-dir>/workspaces`, the default
/// store on SQLite) is whole: its header's size is the file's, and its tar is complete and
/// extractable. A kill during a save must leave the previous archive or the new one, never a
/// part of one or a mix: what a restore would extract is always the last complete archive or a
/// later one.
pub(super) fn workspace_archives_whole(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut violations = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".workspace") {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else { continue };
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        let size = header
            .lines()
            .find_map(|line| line.strip_prefix("size="))
            .and_then(|size| size.parse::<usize>().ok());
        let Some(size) = size.filter(|size| bytes.len() == 512 + size) else {
            violations.push(format!(
                "(g) workspace archive {name} is {} bytes, its header says otherwise: {header:?}",
                bytes.len()
            ));
            continue;
        };
        let tar = &bytes[512..512 + size];
        if let Err(refused) = sandkeeper_ports::check_archive(&mut std::io::Cursor::new(tar)) {
            violations.push(format!("(g) workspace archive {name} is not whole: {refused}"));
        }
    }
    violations
}

/// (a) every container has a row (a session's or a pool slot's), and (b) a running
/// container's session row is `running`. The session row of a claimed pooled container comes
/// after its slot's and wins.
fn containers_match_rows(rows: &[Row], containers: &[DockerContainer]) -> Vec<String> {
    let row_of: HashMap<&str, &Row> =
        rows.iter().map(|row| (row.container_id.as_str(), row)).collect();
    let mut violations = Vec::new();
    for container in containers {
        match row_of.get(container.id.as_str()) {
            None => violations.push(format!(
                "(a) container {} ({}, session label {}, chat label {}, managed={}, created {}) \
                 has no row after the sweep",
                container.id,
                container.state,
                container.session,
                container.chat,
                container.managed,
                container.created
            )),
            Some(row) if row.status.starts_with(POOL_STATUS_PREFIX) => {}
            Some(row) if container.state == "running" && row.status != "running" => violations
                .push(format!(
                    "(b) container {} is running but its session {} (chat {}) is {}",
                    container.id, row.session_id, row.chat_id, row.status
                )),
            Some(_) => {}
        }
    }
    violations
}

/// (b) every `running` row has a running container.
fn running_rows_have_running_containers(
    rows: &[Row],
    containers: &[DockerContainer],
) -> Vec<String> {
    let container_of: HashMap<&str, &DockerContainer> =
        containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut violations = Vec::new();
    for row in rows.iter().filter(|row| row.status == "running") {
        match container_of.get(row.container_id.as_str()) {
            Some(container) if container.state == "running" => {}
            found => violations.push(format!(
                "(b) session {} (chat {}) is running but its container {} is {}",
                row.session_id,
                row.chat_id,
                row.container_id,
                found.map_or("missing", |c| c.state.as_str())
            )),
        }
    }
    violations
}

/// (c) never two running sessions for one chat.
fn one_running_session_per_chat(rows: &[Row]) -> Vec<String> {
    let running = rows.iter().filter(|row| row.status == "running");
    more_than_one_per_chat(running.map(|row| (row.chat_id.as_str(), row.session_id.as_str())))
        .map(|(chat, sessions)| {
            format!("(c) chat {chat} has {} running sessions: {sessions:?}", sessions.len())
        })
        .collect()
}

/// (c) never two running containers for one chat. A container's chat is its session row's
/// (a pooled container claimed by a chat has no chat label), else its label; a pooled one that
/// no chat claimed has none.
fn one_running_container_per_chat(rows: &[Row], containers: &[DockerContainer]) -> Vec<String> {
    let chat_of: HashMap<&str, &str> = rows
        .iter()
        .filter(|row| !row.status.starts_with(POOL_STATUS_PREFIX))
        .map(|row| (row.container_id.as_str(), row.chat_id.as_str()))
        .collect();
    let running = containers.iter().filter(|c| c.state == "running").filter_map(|c| {
        let chat = chat_of.get(c.id.as_str()).copied().unwrap_or(c.chat.as_str());
        // `docker inspect` prints a missing label as `<no value>`.
        (!chat.is_empty() && chat != "<no value>").then_some((chat, c.id.as_str()))
    });
    more_than_one_per_chat(running)
        .map(|(chat, ids)| format!("(c) chat {chat} has {} running containers: {ids:?}", ids.len()))
        .collect()
}

/// (c) never one container for two chats: no container is named by two sessions' rows (a
/// pooled container is claimed once).
fn one_chat_per_container(rows: &[Row]) -> Vec<String> {
    let mut chats_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in rows.iter().filter(|row| !row.status.starts_with(POOL_STATUS_PREFIX)) {
        chats_of.entry(row.container_id.as_str()).or_default().push(row.chat_id.as_str());
    }
    chats_of
        .into_iter()
        .filter(|(_, chats)| chats.len() > 1)
        .map(|(container, chats)| format!("(c) container {container} serves chats {chats:?}"))
        .collect()
}

/// The chats with more than one of the `(chat, id)` pairs, in chat order, with their ids.
fn more_than_one_per_chat<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> impl Iterator<Item = (&'a str, Vec<&'a str>)> {
    let mut per_chat: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (chat, id) in pairs {
        per_chat.entry(chat).or_default().push(id);
    }
    per_chat.into_iter().filter(|(_, ids)| ids.len() > 1)
}

/// The faults planted after the kill were repaired: the orphan is gone and was counted, and a
/// killed running session was reconciled.
pub(super) fn planted_faults_repaired(
    containers: &[DockerContainer],
    planted_orphan: &str,
    planted_dead: bool,
    orphans_reaped: u64,
    reconciled: u64,
) -> Vec<String> {
    let mut violations = Vec::new();
    if containers.iter().any(|c| c.id == planted_orphan) {
        violations.push(format!(
            "the orphan planted after the kill ({planted_orphan}) survived the sweep"
        ));
    }
    if orphans_reaped == 0 {
        violations
            .push("the recovery reaped no orphan, yet one was planted after the kill".to_owned());
    }
    if planted_dead && reconciled == 0 {
        violations.push(
            "the recovery reconciled no crashed session, yet a running session's container \
             was killed while the server was down"
                .to_owned(),
        );
    }
    violations
}

/// `orphan_container_removed` events of a JSON log: when and which.
pub(super) fn orphan_removals(logs: &str) -> Vec<(DateTime<Utc>, String)> {
    logs.lines()
        .filter(|line| line.contains("orphan_container_removed"))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "orphan_container_removed")
        .filter_map(|event| {
            let at = DateTime::parse_from_rfc3339(event["timestamp"].as_str()?).ok()?;
            Some((at.with_timezone(&Utc), event["container_id"].as_str()?.to_owned()))
        })
        .collect()
}

/// When sandkeeper ended each container's session itself (a delete, a cleanup, a replace or
/// the removal of a terminal session), from the JSON logs: container id -> time.
pub(super) fn sessions_ended(logs: &str) -> HashMap<String, DateTime<Utc>> {
    const ENDINGS: [&str; 4] =
        ["sandbox_deleted", "sandbox_cleaned", "sandbox_replaced", "sandbox_removed"];
    let mut ended = HashMap::new();
    for event in logs
        .lines()
        .filter(|line| ENDINGS.iter().any(|ending| line.contains(ending)))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| ENDINGS.iter().any(|ending| event["message"] == *ending))
    {
        let (Some(at), Some(id)) = (
            event["timestamp"].as_str().and_then(|at| DateTime::parse_from_rfc3339(at).ok()),
            event["container_id"].as_str(),
        ) else {
            continue;
        };
        ended.entry(id.to_owned()).or_insert(at.with_timezone(&Utc));
    }
    ended
}

/// How much later than the orphan removal the end of the same session may be logged and still
/// count as earlier: the sweep's listing can predate a delete that then removes the container
/// and the row, so the sweep finds no row and "removes" a container that is already gone; the
/// delete logs right after its row is gone, the sweep only after another engine call.
const LOG_RACE: chrono::TimeDelta = chrono::TimeDelta::milliseconds(100);

/// Invariant (e): no container a client was handed was reaped as an orphan while its session
/// was alive. An orphan removal of a container whose session sandkeeper had already ended is a
/// removal of something already gone, and harmless.
pub(super) fn handed_out_reaped(
    handed_out: &HashMap<String, HandedOut>,
    reaped: &[(DateTime<Utc>, String)],
    ended: &HashMap<String, DateTime<Utc>>,
    grace: Duration,
) -> Vec<String> {
    let grace = chrono::TimeDelta::from_std(grace).expect("a small duration");
    reaped
        .iter()
        .filter_map(|(at, container_id)| {
            let given = handed_out.get(container_id)?;
            if was_ended_before(ended, container_id, *at) {
                return None;
            }
            // The session's created_at is taken just before its container is created, so this
            // age is an upper bound of the container's.
            let age = *at - given.session_created_at;
            let why =
                if age < grace { "inside the orphan grace" } else { "while its session was alive" };
            Some(format!(
                "(e) container {container_id} of session {} (chat {}) was handed to a client, \
                 then reaped as an orphan {:.3} s after its session was created ({why}, grace \
                 {:.3} s)",
                given.session_id,
                given.chat_id,
                age.as_seconds_f64(),
                grace.as_seconds_f64()
            ))
        })
        .collect()
}

/// Orphan removals of a container whose session sandkeeper had ended itself (harmless; see
/// [`LOG_RACE`]).
pub(super) fn removals_of_ended(
    removals: &[(DateTime<Utc>, String)],
    ended: &HashMap<String, DateTime<Utc>>,
) -> usize {
    removals.iter().filter(|(at, id)| was_ended_before(ended, id, *at)).count()
}

fn was_ended_before(
    ended: &HashMap<String, DateTime<Utc>>,
    container_id: &str,
    at: DateTime<Utc>,
) -> bool {
    ended.get(container_id).is_some_and(|end| *end <= at + LOG_RACE)
}

/// (f) before the kill, every request got one of the answers its route promises.
pub(super) fn expected_answers(unexpected: &[String]) -> Vec<String> {
    unexpected.iter().map(|answer| format!("(f) unexpected answer: {answer}")).collect()
}

/// The restarted server lists exactly the store's sessions, and serves every chat again:
/// each PUT answers 200 or 201 with a running container.
pub(super) async fn api_agrees(server: &Server, chats: &[String], rows: &[Row]) -> Vec<String> {
    let mut violations = listing_matches_store(server, rows).await;
    // Half of the chats get a sandbox for a minute: it outlives this cycle, so the next one
    // starts with live sessions to reuse, to delete, and to find dead after the kill.
    let mut puts = tokio::task::JoinSet::new();
    for (i, chat) in chats.iter().enumerate() {
        let mut request =
            server.request(reqwest::Method::PUT, &format!("/v1/chats/{chat}/sandbox"));
        if i % 2 == 0 {
            request = request.body(r#"{"ttl_seconds": 60}"#);
        }
        let chat = chat.clone();
        puts.spawn(async move { (chat, put_answer(request).await) });
    }
    while let Some(joined) = puts.join_next().await {
        let (chat, answer) = joined.expect("a PUT task finished");
        violations.extend(chat_served_again(&chat, answer));
    }
    violations
}

/// `GET /v1/sandboxes` lists exactly the sessions the store holds.
async fn listing_matches_store(server: &Server, rows: &[Row]) -> Vec<String> {
    let listed: HashSet<String> = server
        .sandboxes()
        .await
        .iter()
        .filter_map(|session| session["session_id"].as_str().map(str::to_owned))
        .collect();
    let stored: HashSet<String> = rows
        .iter()
        .filter(|row| !row.status.starts_with(POOL_STATUS_PREFIX))
        .map(|row| row.session_id.clone())
        .collect();
    if listed == stored {
        Vec::new()
    } else {
        vec![format!("GET /v1/sandboxes lists {listed:?} but the store holds {stored:?}")]
    }
}

async fn put_answer(
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, Value), String> {
    let response = request.send().await.map_err(|error| error.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|error| error.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A PUT after the recovery answered 200 or 201 with a running container.
fn chat_served_again(
    chat: &str,
    answer: Result<(reqwest::StatusCode, Value), String>,
) -> Option<String> {
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(error) => {
            return Some(format!("after the recovery, PUT for chat {chat} failed: {error}"));
        }
    };
    if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::CREATED {
        return Some(format!("after the recovery, PUT for chat {chat} answered {status}: {body}"));
    }
    let container = body["container_id"].as_str().unwrap_or_default();
    let running = docker(&["inspect", "--format", "{{.State.Running}}", container])
        .is_ok_and(|out| out.trim() == "true");
    (!running).then(|| {
        format!(
            "after the recovery, PUT for chat {chat} answered {status} with container \
             {container}, which is not running"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(session: &str, chat: &str, container: &str, status: &str) -> Row {
        Row {
            session_id: session.into(),
            chat_id: chat.into(),
            container_id: container.into(),
            status: status.into(),
        }
    }

    fn container(id: &str, chat: &str, state: &str) -> DockerContainer {
        DockerContainer {
            id: id.into(),
            state: state.into(),
            created: Utc::now(),
            managed: "true".into(),
            session: "s".into(),
            chat: chat.into(),
        }
    }

    #[test]
    fn consistent_state_passes_and_each_invariant_is_named_when_broken() {
        let rows = [row("s1", "c1", "k1", "running"), row("s2", "c2", "k2", "crashed")];
        let containers = [container("k1", "c1", "running"), container("k2", "c2", "exited")];
        assert!(invariants(&rows, &containers).is_empty());

        let orphan = [container("k1", "c1", "running"), container("k9", "c9", "running")];
        let violations = invariants(&rows[..1], &orphan);
        assert!(
            violations.len() == 1 && violations[0].starts_with("(a) container k9"),
            "{violations:?}"
        );

        let dead = [container("k1", "c1", "exited")];
        let violations = invariants(&rows[..1], &dead);
        assert!(violations[0].starts_with("(b) session s1"), "{violations:?}");

        let twice = [row("s1", "c1", "k1", "running"), row("s3", "c1", "k3", "running")];
        let both = [container("k1", "c1", "running"), container("k3", "c1", "running")];
        let violations = invariants(&twice, &both);
        assert!(violations.iter().any(|v| v.starts_with("(c) chat c1 has 2 running sessions")));
        assert!(violations.iter().any(|v| v.starts_with("(c) chat c1 has 2 running containers")));
    }

    #[test]
    fn orphan_removals_are_read_from_json_logs() {
        let logs = concat!(
            r#"{"timestamp":"2026-11-23T14:56:32.317962Z","level":"INFO","message":"orphan_container_removed","container_id":"abc"}"#,
            "\n",
            r#"{"timestamp":"2026-11-23T14:56:32.319787Z","level":"INFO","message":"maintenance_sweep_completed"}"#,
            "\n"
        );
        let removals = orphan_removals(logs);
        assert_eq!(removals.len(), 1);
        assert_eq!(removals[0].1, "abc");
    }
}
