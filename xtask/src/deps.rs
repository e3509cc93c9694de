//! The crate dependency rule of the architecture, checked from `cargo metadata`.
//!
//! - `domain` depends on nothing of ours; `ports` on `domain`; `usecase` on `ports` and
//!   `domain`; every adapter on `ports` and `domain`; only `app`, the black-box tests, the
//!   benchmarks and xtask may know every crate.
//! - `domain`, `ports` and `usecase` never reach, even transitively, a database driver, the
//!   Docker client, an HTTP stack or a telemetry exporter.
//!
//! Dev-dependencies may add the telemetry test capture of `adapters-observability` (the use-case
//! tests assert spans and metrics with it); the rule is about what ships.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const OURS: &str = "sandkeeper-";

/// Our crates each crate may depend on (normal and build dependencies).
fn allowed(package: &str) -> Option<&'static [&'static str]> {
    Some(match package {
        "sandkeeper-domain" => &[],
        "sandkeeper-ports" => &["sandkeeper-domain"],
        "sandkeeper-usecase" => &["sandkeeper-domain", "sandkeeper-ports"],
        "sandkeeper-adapters-sql"
        | "sandkeeper-adapters-docker"
        | "sandkeeper-adapters-fs"
        | "sandkeeper-adapters-observability" => &["sandkeeper-domain", "sandkeeper-ports"],
        _ => return None, // app, tests, bench: may know every crate
    })
}

/// External crates the inner crates must never reach.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "sqlx",
    "sqlx-core",
    "rusqlite",
    "bollard",
    "axum",
    "hyper",
    "tower-http",
    "reqwest",
    "metrics-exporter-prometheus",
    "opentelemetry",
    "opentelemetry-otlp",
    "tracing-subscriber",
];
const CORE: &[&str] = &["sandkeeper-domain", "sandkeeper-ports", "sandkeeper-usecase"];

pub(crate) fn check(root: &Path) -> Result<(), String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--all-features"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let violations = violations(&metadata);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!("the crate dependency rule is broken:\n  {}", violations.join("\n  ")))
    }
}

/// package id -> (name, normal/build dependency ids, dev dependency ids)
type Graph = HashMap<String, (String, Vec<String>, Vec<String>)>;

fn graph(metadata: &Value) -> Graph {
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut graph = Graph::new();
    for node in metadata["resolve"]["nodes"].as_array().into_iter().flatten() {
        let Some(id) = node["id"].as_str() else { continue };
        let mut shipped = Vec::new();
        let mut dev = Vec::new();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let Some(dep_id) = dep["pkg"].as_str() else { continue };
            for kind in dep["dep_kinds"].as_array().into_iter().flatten() {
                if kind["kind"].as_str() == Some("dev") {
                    dev.push(dep_id.to_owned());
                } else {
                    shipped.push(dep_id.to_owned());
                }
            }
        }
        let name = names.get(id).copied().unwrap_or(id).to_owned();
        graph.insert(id.to_owned(), (name, shipped, dev));
    }
    graph
}

fn violations(metadata: &Value) -> Vec<String> {
    let graph = graph(metadata);
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut found = Vec::new();
    for member in members {
        let Some((name, shipped, dev)) = graph.get(member) else { continue };
        let Some(allowed) = allowed(name) else { continue };
        for dep in shipped {
            let dep_name = &graph[dep].0;
            if dep_name.starts_with(OURS) && !allowed.contains(&dep_name.as_str()) {
                found.push(format!("{name} depends on {dep_name}"));
            }
        }
        for dep in dev {
            let dep_name = &graph[dep].0;
            let capture = dep_name == "sandkeeper-adapters-observability";
            if dep_name.starts_with(OURS) && !allowed.contains(&dep_name.as_str()) && !capture {
                found.push(format!("{name} has a dev-dependency on {dep_name}"));
            }
        }
        if CORE.contains(&name.as_str()) {
            let reached = reachable(&graph, member);
            for forbidden in FORBIDDEN_IN_CORE {
                if reached.contains(*forbidden) {
                    found.push(format!(
                        "{name} reaches {forbidden}, which only adapters and app may use"
                    ));
                }
            }
        }
    }
    found
}

/// Names of every crate reachable through normal and build dependencies.
fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some((_, shipped, _)) = graph.get(&id) {
            for dep in shipped {
                names.insert(graph[dep].0.clone());
                stack.push(dep.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn metadata(edges: &[(&str, &str, &str)]) -> Value {
        let mut packages = BTreeSet::new();
        for (from, to, _) in edges {
            packages.insert(*from);
            packages.insert(*to);
        }
        let nodes: Vec<Value> = packages
            .iter()
            .map(|package| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(from, _, _)| from == package)
                    .map(|(_, to, kind)| {
                        let kind = if *kind == "normal" { Value::Null } else { json!(kind) };
                        json!({"pkg": to, "dep_kinds": [{"kind": kind}]})
                    })
                    .collect();
                json!({"id": package, "deps": deps})
            })
            .collect();
        json!({
            "packages": packages.iter().map(|p| json!({"id": p, "name": p})).collect::<Vec<_>>(),
            "workspace_members": packages.iter().filter(|p| p.starts_with(OURS)).collect::<Vec<_>>(),
            "resolve": {"nodes": nodes},
        })
    }

    #[test]
    fn the_layered_graph_passes() {
        let m = metadata(&[
            ("sandkeeper-ports", "sandkeeper-domain", "normal"),
            ("sandkeeper-usecase", "sandkeeper-ports", "normal"),
            ("sandkeeper-usecase", "sandkeeper-adapters-observability", "dev"),
            ("sandkeeper-adapters-sql", "sqlx", "normal"),
            ("sandkeeper-app", "sandkeeper-adapters-sql", "normal"),
        ]);
        assert_eq!(violations(&m), Vec::<String>::new());
    }

    #[test]
    fn an_inner_crate_knowing_an_adapter_is_reported() {
        let m = metadata(&[("sandkeeper-usecase", "sandkeeper-adapters-sql", "normal")]);
        assert_eq!(violations(&m), vec!["sandkeeper-usecase depends on sandkeeper-adapters-sql"]);
    }

    #[test]
    fn a_transitive_driver_in_the_core_is_reported() {
        let m = metadata(&[
            ("sandkeeper-domain", "some-helper", "normal"),
            ("some-helper", "sqlx", "normal"),
        ]);
        assert_eq!(
            violations(&m),
            vec!["sandkeeper-domain reaches sqlx, which only adapters and app may use"]
        );
    }
}
