//! The Docker floor that sandkeeper is compared with: direct bollard calls, made with exactly the
//! configuration sandkeeper sends, and the removal of everything a bench created.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use futures::StreamExt;
use sandkeeper_adapters_docker::{
    DEFAULT_IMAGE, DockerConfig, DockerRuntime, LABEL_INSTANCE, LABEL_SESSION,
};
use sandkeeper_domain::SessionId;

/// How many removals run at once when a bench tidies up (not measured).
const TIDY_CONCURRENCY: usize = 8;

/// A fresh instance id: every container a bench creates carries it in its instance label, so
/// that the bench removes exactly its own containers and never another deployment's.
pub(crate) fn instance_id() -> String {
    format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A bollard client for the engine sandkeeper would use (`DOCKER_HOST`, else the local socket),
/// with the API version negotiated.
pub(crate) async fn connect() -> Result<Docker, String> {
    let runtime = DockerRuntime::new(DockerConfig::new(DEFAULT_IMAGE, "bench"))
        .map_err(|error| error.to_string())?;
    let endpoint = runtime.endpoint();
    let docker = Docker::connect_with_host(endpoint)
        .map_err(|error| format!("bollard cannot connect to {endpoint}: {error}"))?
        .negotiate_version()
        .await
        .map_err(|error| {
            format!("the Docker engine at {endpoint} does not answer (is it running?): {error}")
        })?;
    Ok(docker)
}

/// A bollard client for the engine at `host` (a `DOCKER_HOST` URL: `unix://` or `tcp://`).
pub(crate) async fn connect_to(host: &str) -> Result<Docker, String> {
    Docker::connect_with_host(host)
        .map_err(|error| format!("bollard cannot connect to {host}: {error}"))?
        .negotiate_version()
        .await
        .map_err(|error| format!("the Docker engine at {host} does not answer: {error}"))
}

/// The create request that made container `id`, read back with inspect: a raw create with it
/// asks the engine for the same container (image, command, user, labels, host configuration).
pub(crate) async fn body_of(raw: &Docker, id: &str) -> Result<ContainerCreateBody, String> {
    let found = raw.inspect_container(id, None).await.map_err(|e| format!("inspect {id}: {e}"))?;
    let config = found.config.ok_or("inspect returned no Config")?;
    Ok(ContainerCreateBody {
        image: config.image,
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        user: config.user,
        working_dir: config.working_dir,
        env: config.env,
        labels: config.labels,
        tty: config.tty,
        open_stdin: config.open_stdin,
        host_config: found.host_config,
        ..Default::default()
    })
}

/// A raw create+start with `body`; a fresh name and session label each time. A container that
/// does not start is removed again.
pub(crate) async fn raw_create(raw: &Docker, body: &ContainerCreateBody) -> Result<String, String> {
    let session = SessionId::new_v4();
    let mut body = body.clone();
    if let Some(labels) = body.labels.as_mut() {
        labels.insert(LABEL_SESSION.to_owned(), session.to_string());
    }
    let options = CreateContainerOptions {
        name: Some(format!("sandkeeper-{session}")),
        ..Default::default()
    };
    let created =
        raw.create_container(Some(options), body).await.map_err(|e| format!("raw create: {e}"))?;
    if let Err(error) = raw.start_container(&created.id, None).await {
        let _ = raw.remove_container(&created.id, Some(force_remove())).await;
        return Err(format!("raw start: {error}"));
    }
    Ok(created.id)
}

/// Kill and remove at once, with anonymous volumes: what sandkeeper does to a sandbox.
pub(crate) fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions { force: true, v: true, link: false }
}

/// The ids of every container (running or not) that carries `instance` in its instance label.
pub(crate) async fn containers_of(raw: &Docker, instance: &str) -> Result<Vec<String>, String> {
    let filters =
        HashMap::from([("label".to_owned(), vec![format!("{LABEL_INSTANCE}={instance}")])]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let listed = raw
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("listing the containers of {instance}: {e}"))?;
    Ok(listed.into_iter().filter_map(|summary| summary.id).collect())
}

/// Removes every container of the bench's instance, whatever happened; returns how many.
pub(crate) async fn remove_instance(raw: &Docker, instance: &str) -> Result<usize, String> {
    let ids = containers_of(raw, instance).await?;
    let count = ids.len();
    let failures: Vec<String> = futures::stream::iter(ids)
        .map(|id| async move {
            raw.remove_container(&id, Some(force_remove()))
                .await
                .map_err(|e| format!("removing {id}: {e}"))
        })
        .buffer_unordered(TIDY_CONCURRENCY)
        .filter_map(|result| async move { result.err() })
        .collect()
        .await;
    match failures.first() {
        None => Ok(count),
        Some(first) => Err(format!(
            "{} of {count} containers of instance {instance} could not be removed \
             (remove them with `docker rm -f $(docker ps -aq --filter label={LABEL_INSTANCE}={instance})`); \
             first error: {first}",
            failures.len()
        )),
    }
}
