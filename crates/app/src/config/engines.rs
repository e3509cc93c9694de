//! `--engine NAME=URL[,max=N][,runtime=R]`: the Docker engines a deployment places sandboxes
//! on, each parsed alone and then checked together (distinct names, each engine's URL and
//! runtime by the Docker adapter's rules) into one [`EngineConfig`] per engine.

use sandkeeper_adapters_docker::DockerConfig;
use sandkeeper_domain::EngineName;

use super::setting::{ConfigError, ENGINE};

/// The separator of several engines in one `SANDKEEPER_ENGINE` value (and in one flag).
pub(crate) const ENGINE_SEPARATOR: char = ';';

/// One `--engine` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EngineArg {
    pub(crate) name: EngineName,
    /// As `DOCKER_HOST` takes it; checked at validation.
    pub(crate) url: String,
    pub(crate) max: Option<u64>,
    pub(crate) runtime: Option<String>,
}

const SHAPE: &str = "NAME=URL[,max=N][,runtime=R]";

/// Parses `NAME=URL[,max=N][,runtime=R]`; the error names the part that is wrong.
pub(crate) fn engine_arg(value: &str) -> Result<EngineArg, ConfigError> {
    let bad = |message: String| ConfigError::new(ENGINE, message);
    let mut parts = value.trim().split(',');
    let first = parts.next().unwrap_or_default();
    let Some((name, url)) = first.split_once('=') else {
        return Err(bad(format!(
            "`{value}` is not {SHAPE}: the engine's name and `=` are missing"
        )));
    };
    let name = EngineName::parse(name.trim()).map_err(|error| bad(error.to_string()))?;
    let url = url.trim();
    if url.is_empty() {
        return Err(bad(format!("engine `{name}` has no URL (expected {SHAPE})")));
    }
    let mut engine = EngineArg { name, url: url.to_owned(), max: None, runtime: None };
    for option in parts {
        match option.trim().split_once('=') {
            Some(("max", n)) => {
                let max = n.trim().parse::<u64>().ok().filter(|max| *max > 0).ok_or_else(|| {
                    bad(format!(
                        "engine `{}`: max=`{n}` is not a whole number of sandboxes above 0",
                        engine.name
                    ))
                })?;
                engine.max = Some(max);
            }
            Some(("runtime", runtime)) if !runtime.trim().is_empty() => {
                engine.runtime = Some(runtime.trim().to_owned());
            }
            _ => {
                return Err(bad(format!(
                    "engine `{}`: `{option}` is not one of max=N or runtime=R (expected {SHAPE})",
                    engine.name
                )));
            }
        }
    }
    Ok(engine)
}

/// One engine, ready for the wiring.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub(crate) name: EngineName,
    /// The sandboxes' settings on this engine: the shared ones, with the engine's URL, name
    /// and runtime.
    pub(crate) docker: DockerConfig,
    pub(crate) max: Option<u64>,
}

/// The engines of the deployment: those given, or without `--engine` one named `default` at
/// `DOCKER_HOST` (with `--runtime`, unbounded but for `--max-sandboxes`).
pub(crate) fn engine_configs(
    given: &[EngineArg],
    base: &DockerConfig,
) -> Result<Vec<EngineConfig>, ConfigError> {
    if given.is_empty() {
        let mut docker = base.clone();
        docker.engine = EngineName::DEFAULT.to_owned();
        return Ok(vec![EngineConfig { name: EngineName::default_engine(), docker, max: None }]);
    }
    let mut engines: Vec<EngineConfig> = Vec::with_capacity(given.len());
    for arg in given {
        if engines.iter().any(|engine| engine.name == arg.name) {
            return Err(ConfigError::new(
                ENGINE,
                format!(
                    "engine `{}` is given twice; each engine needs a name of its own",
                    arg.name
                ),
            ));
        }
        let mut docker = base.clone();
        docker.docker_host = Some(arg.url.clone());
        docker.runtime = arg.runtime.clone().or_else(|| base.runtime.clone());
        docker.engine = arg.name.to_string();
        docker.validate().map_err(|error| {
            let part = if error.field == "runtime" { "runtime" } else { "URL" };
            ConfigError::new(
                ENGINE,
                format!("engine `{}`: {part} `{}` {}", arg.name, error.value, error.reason),
            )
        })?;
        engines.push(EngineConfig { name: arg.name.clone(), docker, max: arg.max });
    }
    Ok(engines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: &str) -> String {
        let error = engine_arg(value).unwrap_err();
        assert_eq!(error.setting, ENGINE.into());
        error.message
    }

    #[test]
    fn an_engine_is_a_name_a_url_and_options() {
        let engine = engine_arg("gvisor=unix:///run/g/docker.sock,max=8,runtime=runsc").unwrap();
        assert_eq!(engine.name.as_str(), "gvisor");
        assert_eq!(engine.url, "unix:///run/g/docker.sock");
        assert_eq!((engine.max, engine.runtime.as_deref()), (Some(8), Some("runsc")));
        let plain = engine_arg("a=tcp://10.0.0.1:2376").unwrap();
        assert_eq!((plain.max, plain.runtime), (None, None));
    }

    #[test]
    fn each_bad_part_is_named() {
        assert!(message("unix:///x").contains("is not NAME=URL"), "{}", message("unix:///x"));
        assert!(message("Big=unix:///x").contains("engine name `Big` is not valid"));
        assert!(message("a=").contains("engine `a` has no URL"));
        assert!(message("a=unix:///x,max=0").contains("max=`0` is not a whole number"));
        assert!(message("a=unix:///x,max=lots").contains("max=`lots`"));
        assert!(message("a=unix:///x,color=red").contains("`color=red` is not one of max=N"));
    }

    #[test]
    fn validation_refuses_a_repeated_name_and_a_bad_url_naming_the_engine() {
        let base = DockerConfig::new("sandkeeper/sandbox:latest", "default");
        let twice = [engine_arg("a=unix:///x").unwrap(), engine_arg("a=unix:///y").unwrap()];
        let error = engine_configs(&twice, &base).unwrap_err();
        assert!(error.message.contains("engine `a` is given twice"), "{error}");
        let ftp = [engine_arg("a=ftp://x").unwrap()];
        let error = engine_configs(&ftp, &base).unwrap_err();
        assert_eq!(error.setting, ENGINE.into());
        assert!(error.message.starts_with("engine `a`: URL `ftp://x` must be"), "{error}");
    }

    #[test]
    fn without_engines_there_is_one_named_default_and_each_engine_labels_its_own() {
        let mut base = DockerConfig::new("sandkeeper/sandbox:latest", "default");
        base.runtime = Some("runc".into());
        let single = engine_configs(&[], &base).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(
            (single[0].name.as_str(), single[0].docker.engine.as_str()),
            ("default", "default")
        );
        let given = [
            engine_arg("a=unix:///a.sock,max=2").unwrap(),
            engine_arg("b=unix:///b.sock,runtime=runsc").unwrap(),
        ];
        let engines = engine_configs(&given, &base).unwrap();
        assert_eq!(engines[0].docker.docker_host.as_deref(), Some("unix:///a.sock"));
        assert_eq!((engines[0].max, engines[0].docker.runtime.as_deref()), (Some(2), Some("runc")));
        assert_eq!(
            (engines[1].docker.engine.as_str(), engines[1].docker.runtime.as_deref()),
            ("b", Some("runsc"))
        );
    }
}
