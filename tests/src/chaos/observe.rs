//! What the store and the engine hold, read directly: the rows of the SQLite file, read-only,
//! and the containers Docker lists with the instance's label.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};

use super::{
    CHAT_LABEL, DockerContainer, MANAGED_LABEL, POOL_STATUS_PREFIX, Row, SESSION_LABEL, docker,
};
use crate::INSTANCE_LABEL;

/// Reads every session straight from the SQLite file, read-only: the store's truth, whatever
/// the API says; and the warm pool's slots that hold a container, first (a claimed container's
/// session row comes after its slot's), with a status of [`POOL_STATUS_PREFIX`] and the slot's
/// state.
pub(super) async fn read_rows(db: &Path) -> Result<Vec<Row>, String> {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .map_err(|error| format!("cannot open {} read-only: {error}", db.display()))?;
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT session_id, chat_id, container_id, status FROM sandbox_sessions \
         ORDER BY created_at, session_id",
    )
    .fetch_all(&mut connection)
    .await
    .map_err(|error| format!("cannot read the sessions of {}: {error}", db.display()))?;
    // The warm pool's slots that hold a container: rows too, of no chat.
    let slots: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT slot_id, container_id, state FROM sandbox_pool WHERE container_id IS NOT NULL \
         ORDER BY created_at, slot_id",
    )
    .fetch_all(&mut connection)
    .await
    .map_err(|error| format!("cannot read the pool of {}: {error}", db.display()))?;
    connection.close().await.ok();
    let slots = slots.into_iter().map(|(slot_id, container_id, state)| Row {
        session_id: slot_id,
        chat_id: String::new(),
        container_id,
        status: format!("{POOL_STATUS_PREFIX}{state}"),
    });
    Ok(slots
        .chain(rows.into_iter().map(|(session_id, chat_id, container_id, status)| Row {
            session_id,
            chat_id,
            container_id,
            status,
        }))
        .collect())
}

/// Every container (in any state) that carries this instance's label.
pub(super) fn containers_of_instance(instance_id: &str) -> Result<Vec<DockerContainer>, String> {
    let ids = docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={INSTANCE_LABEL}={instance_id}"),
    ])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let format = format!(
        "{{{{.Id}}}}|{{{{.State.Status}}}}|{{{{.Created}}}}|{{{{index .Config.Labels \
         \"{MANAGED_LABEL}\"}}}}|{{{{index .Config.Labels \"{SESSION_LABEL}\"}}}}|{{{{index \
         .Config.Labels \"{CHAT_LABEL}\"}}}}"
    );
    // A container can go between the listing and the inspection (right after a kill, the
    // engine is still finishing removals the server asked for): it is simply not there.
    let output = Command::new("docker")
        .args(["inspect", "--format", &format])
        .args(&ids)
        .output()
        .map_err(|error| format!("cannot run docker: {error}"))?;
    let errors = String::from_utf8_lossy(&output.stderr);
    if let Some(error) =
        errors.lines().find(|line| !line.trim().is_empty() && !line.contains("No such object"))
    {
        return Err(format!("`docker inspect` of the instance's containers failed: {error}"));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().filter(|line| !line.trim().is_empty()).map(container_of_line).collect()
}

/// A container from a line of the `docker inspect` format above.
fn container_of_line(line: &str) -> Result<DockerContainer, String> {
    let fields: Vec<&str> = line.trim().split('|').collect();
    let [id, state, created, managed, session, chat] = fields[..] else {
        return Err(format!("unexpected `docker inspect` line: {line}"));
    };
    let created = DateTime::parse_from_rfc3339(created)
        .map_err(|error| format!("container {id}: creation time `{created}`: {error}"))?
        .with_timezone(&Utc);
    Ok(DockerContainer {
        id: id.to_owned(),
        state: state.to_owned(),
        created,
        managed: managed.to_owned(),
        session: session.to_owned(),
        chat: chat.to_owned(),
    })
}
