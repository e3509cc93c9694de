//! The faults a cycle plants while the server is down, and the foreign containers that
//! sandkeeper must never touch.

use std::process::{Command, Stdio};

use super::{CHAT_LABEL, DockerContainer, MANAGED_LABEL, Row, SESSION_LABEL, SeededRng, docker};
use crate::INSTANCE_LABEL;

/// Kills the container of one running session, as if it had crashed while sandkeeper was
/// down. Returns its session id, or `None` when no session was running.
pub(super) fn plant_dead_container(
    rows: &[Row],
    containers: &[DockerContainer],
    rng: &mut SeededRng,
) -> Result<Option<String>, String> {
    let live: Vec<&Row> = rows
        .iter()
        .filter(|row| row.status == "running")
        .filter(|row| containers.iter().any(|c| c.id == row.container_id && c.state == "running"))
        .collect();
    if live.is_empty() {
        return Ok(None);
    }
    let victim = live[rng.below(live.len() as u64) as usize];
    docker(&["kill", &victim.container_id])?;
    Ok(Some(victim.session_id.clone()))
}

/// A container with this instance's labels and no row, as a create cut short before its
/// save leaves behind.
pub(super) fn plant_orphan(image: &str, instance_id: &str) -> Result<String, String> {
    run_with_sandkeeper_labels(image, instance_id)
}

/// Starts a sleeping container with every label sandkeeper puts on its own, for `instance_id`
/// and a fresh session and chat. Returns its id.
fn run_with_sandkeeper_labels(image: &str, instance_id: &str) -> Result<String, String> {
    let output = docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        &format!("{MANAGED_LABEL}=true"),
        "--label",
        &format!("{INSTANCE_LABEL}={instance_id}"),
        "--label",
        &format!("{SESSION_LABEL}={}", uuid::Uuid::new_v4()),
        "--label",
        &format!("{CHAT_LABEL}={}", uuid::Uuid::new_v4()),
        image,
        "sleep",
        "infinity",
    ])?;
    Ok(output.trim().to_owned())
}

/// Containers sandkeeper must never touch: one without any label, one of another instance
/// (every sandkeeper label, another instance id). Both exist before the first cycle, so they
/// are older than the grace at every sweep. Removed when dropped.
#[derive(Debug)]
pub(super) struct Foreign {
    containers: Vec<ForeignContainer>,
}

#[derive(Debug)]
struct ForeignContainer {
    what: &'static str,
    id: String,
    started_at: String,
}

impl Foreign {
    pub(super) fn create(image: &str, instance_id: &str) -> Result<Self, String> {
        let mut foreign = Self { containers: Vec::new() };
        let unlabelled = docker(&["run", "-d", "--network", "none", image, "sleep", "infinity"])?;
        foreign.add("unlabelled container", unlabelled.trim())?;
        let other_instance = run_with_sandkeeper_labels(image, &format!("{instance_id}-other"))?;
        foreign.add("container of another instance", &other_instance)?;
        Ok(foreign)
    }

    pub(super) fn len(&self) -> usize {
        self.containers.len()
    }

    fn add(&mut self, what: &'static str, id: &str) -> Result<(), String> {
        let started_at = docker(&["inspect", "--format", "{{.State.StartedAt}}", id])?;
        self.containers.push(ForeignContainer {
            what,
            id: id.to_owned(),
            started_at: started_at.trim().to_owned(),
        });
        Ok(())
    }

    pub(super) fn describe(&self) -> String {
        let parts: Vec<String> =
            self.containers.iter().map(|c| format!("{} {:.12}", c.what, c.id)).collect();
        parts.join(", ")
    }

    /// Invariant (d): each still runs, and was never restarted.
    pub(super) fn check(&self) -> Result<(), String> {
        for container in &self.containers {
            let state = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.State.StartedAt}} {{.RestartCount}}",
                &container.id,
            ])
            .map_err(|why| format!("(d) the {} {} is gone: {why}", container.what, container.id))?;
            let expected = format!("true {} 0", container.started_at);
            if state.trim() != expected {
                return Err(format!(
                    "(d) the {} {} was touched: running/started/restarts is `{}`, expected `{}`",
                    container.what,
                    container.id,
                    state.trim(),
                    expected
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let ids: Vec<&str> = self.containers.iter().map(|c| c.id.as_str()).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
