use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image `cargo xtask image` builds: static busybox on `scratch`.
pub const DEFAULT_IMAGE: &str = "sandkeeper/sandbox:latest";
/// Where the engine is when neither [`DockerConfig::docker_host`] nor `DOCKER_HOST` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The longest any single engine call (including connecting) may take before it fails with
/// `RuntimeError::Timeout`. Create+start of a small image takes well under a second on an idle
/// engine; the margin covers a busy one.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MEMORY_BYTES: u64 = 512 * MIB;
pub const DEFAULT_CPUS: f64 = 1.0;
pub const DEFAULT_PIDS_LIMIT: u32 = 256;
/// The uids (and gids) sandboxes run as, one of its own for each: far above the accounts of a
/// host (which stay below 65536) and below 2097152, the largest id a plain tar header holds.
pub const DEFAULT_UID_RANGE: UidRange = UidRange { first: 1_000_000, last: 1_999_999 };
pub const DEFAULT_NETWORK_MODE: &str = "none";
pub const DEFAULT_TMP_SIZE_BYTES: u64 = 64 * MIB;
pub const DEFAULT_WORKSPACE_SIZE_BYTES: u64 = 256 * MIB;

const MIB: u64 = 1024 * 1024;
/// The engine refuses memory limits below 6 MiB.
const MIN_MEMORY_BYTES: u64 = 6 * MIB;
const MIN_TMPFS_BYTES: u64 = MIB;
/// docker-init, the command and a shell need a few processes; fewer makes a sandbox unusable.
const MIN_PIDS_LIMIT: u32 = 8;
const MIN_CALL_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// The lowest uid a sandbox may get: the ids below are those of host accounts (`nobody` is 65534).
pub const MIN_SANDBOX_UID: u32 = 65_536;
/// The highest uid a sandbox may get: 7 octal digits, what a ustar (tar) header holds, so that
/// archives of a workspace keep plain numeric owners.
pub const MAX_SANDBOX_UID: u32 = 0o7_777_777;
/// Docker label values may be anything, but the instance id is also matched in list filters
/// (`label=key=value`) and shown in logs, so it is kept to a short, plain alphabet.
const MAX_INSTANCE_ID_LEN: usize = 63;

/// How sandkeeper creates sandbox containers.
///
/// [`DockerConfig::new`] takes what a deployment must choose (the image and the instance id)
/// and fills in secure defaults for the rest; `docs/security.md` explains each one and how to
/// loosen it. There is deliberately no `Default`: two deployments that share an engine must
/// not share an instance id by accident, or each would reap the other's containers.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// The image every sandbox runs. It must exist on the engine (nothing is pulled).
    pub image: String,
    /// The command the container runs; `None` uses the image's own `CMD`. It must keep the
    /// container alive, since commands are executed inside it later.
    pub command: Option<Vec<String>>,
    /// This deployment's id, written to the `io.sandkeeper.instance` label. sandkeeper only
    /// lists, stops and removes containers that carry it.
    pub instance_id: String,
    /// The engine's address (`unix:///path`, `tcp://host:port` or `http://host:port`). `None`
    /// means what the docker CLI uses: `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
    /// TLS to a `tcp://` engine: the directory of the docker CLI's TLS files, `ca.pem` (the CA
    /// that signed the engine's certificate), `cert.pem` and `key.pem` (sandkeeper's client
    /// certificate and key). `None` means what the docker CLI does: TLS when
    /// `DOCKER_TLS_VERIFY` is set, with the files of `DOCKER_CERT_PATH` (else `~/.docker`).
    pub docker_cert_path: Option<PathBuf>,
    /// Memory limit; swap is not allowed beyond it.
    pub memory_bytes: u64,
    /// CPU limit in CPUs (1.5 = one and a half cores).
    pub cpus: f64,
    /// The most processes and threads the container may hold (fork bombs stop here).
    pub pids_limit: u32,
    /// The uids sandboxes run as. Each sandbox gets one of them (as uid and gid) that no other
    /// managed container on the engine uses; it owns `/workspace`, which is also `HOME`.
    pub uid_range: UidRange,
    /// Docker network mode. `none` gives the container a loopback interface only.
    pub network_mode: String,
    /// Mount the image's filesystem read-only; `/tmp` and `/workspace` are tmpfs mounts anyway.
    pub read_only_root: bool,
    /// Size of the tmpfs at `/tmp` (mounted `noexec`).
    pub tmp_size_bytes: u64,
    /// Size of the tmpfs at `/workspace`, the container's working directory.
    pub workspace_size_bytes: u64,
    /// Capabilities added back after all are dropped (e.g. `CHOWN`); empty by default.
    pub cap_add: Vec<String>,
    /// Set `no-new-privileges`, so setuid binaries cannot raise privileges.
    pub no_new_privileges: bool,
    /// Run docker's init as PID 1, so that zombies are reaped and signals are forwarded.
    pub init: bool,
    /// The OCI runtime to use (e.g. `runsc` for gVisor); `None` is the engine's default.
    pub runtime: Option<String>,
    /// The bound on every engine call.
    pub call_timeout: Duration,
    /// The name of this engine in the deployment (`--engine NAME=URL`; `default` without),
    /// written to the `io.sandkeeper.engine` label. The containers listed (for the orphan
    /// sweep) and watched (for exits) are only those of this engine, so that two engine names
    /// on one Docker socket never take each other's containers for orphans.
    pub engine: String,
}

impl DockerConfig {
    /// A configuration for `image`, labelled with `instance_id`, with every hardening default on:
    /// no network, all capabilities dropped, `no-new-privileges`, read-only root, tmpfs `/tmp`
    /// and `/workspace`, memory/CPU/pids limits, a uid of its own per sandbox from
    /// [`DEFAULT_UID_RANGE`], an init process, and
    /// `sleep infinity` to keep the container alive.
    pub fn new(image: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            command: Some(vec!["sleep".to_owned(), "infinity".to_owned()]),
            instance_id: instance_id.into(),
            docker_host: None,
            docker_cert_path: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            cpus: DEFAULT_CPUS,
            pids_limit: DEFAULT_PIDS_LIMIT,
            uid_range: DEFAULT_UID_RANGE,
            network_mode: DEFAULT_NETWORK_MODE.to_owned(),
            read_only_root: true,
            tmp_size_bytes: DEFAULT_TMP_SIZE_BYTES,
            workspace_size_bytes: DEFAULT_WORKSPACE_SIZE_BYTES,
            cap_add: Vec::new(),
            no_new_privileges: true,
            init: true,
            runtime: None,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            engine: "default".to_owned(),
        }
    }

    /// Checks every setting; the error names the first bad one and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_image(&self.image)?;
        if let Some(command) = &self.command {
            if command.first().is_none_or(|program| program.trim().is_empty()) {
                return Err(ConfigError::new(
                    "command",
                    format!("{command:?}"),
                    "must name a program; leave it unset to use the image's CMD",
                ));
            }
        }
        check_instance_id(&self.instance_id)?;
        if let Some(host) = &self.docker_host {
            check_docker_host("docker_host", host)?;
        }
        if self.memory_bytes < MIN_MEMORY_BYTES {
            return Err(ConfigError::new(
                "memory_bytes",
                self.memory_bytes,
                "must be at least 6 MiB (6291456), the engine's minimum",
            ));
        }
        if !self.cpus.is_finite() || self.cpus < 0.01 {
            return Err(ConfigError::new(
                "cpus",
                self.cpus,
                "must be a number of CPUs of at least 0.01",
            ));
        }
        if self.pids_limit < MIN_PIDS_LIMIT {
            return Err(ConfigError::new(
                "pids_limit",
                self.pids_limit,
                format!("must be at least {MIN_PIDS_LIMIT} (init, the command and a shell)"),
            ));
        }
        self.uid_range.check()?;
        if self.network_mode.is_empty() || !plain(&self.network_mode, ":") {
            return Err(ConfigError::new(
                "network_mode",
                &self.network_mode,
                "must be a Docker network mode such as `none`, `bridge` or the name of an existing network",
            ));
        }
        for (field, size) in [
            ("tmp_size_bytes", self.tmp_size_bytes),
            ("workspace_size_bytes", self.workspace_size_bytes),
        ] {
            if size < MIN_TMPFS_BYTES {
                return Err(ConfigError::new(field, size, "must be at least 1 MiB (1048576)"));
            }
        }
        for capability in &self.cap_add {
            if capability.is_empty()
                || !capability.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(ConfigError::new(
                    "cap_add",
                    capability,
                    "must be a Linux capability name such as `CHOWN` or `CAP_CHOWN`",
                ));
            }
        }
        if let Some(runtime) = &self.runtime {
            if runtime.is_empty() || !plain(runtime, "") {
                return Err(ConfigError::new(
                    "runtime",
                    runtime,
                    "must be the name of an OCI runtime registered with the engine, such as `runsc`",
                ));
            }
        }
        if !(MIN_CALL_TIMEOUT..=MAX_CALL_TIMEOUT).contains(&self.call_timeout) {
            return Err(ConfigError::new(
                "call_timeout",
                format!("{:?}", self.call_timeout),
                "must be between 1 s and 600 s",
            ));
        }
        Ok(())
    }

    /// The engine address this configuration leads to, the way the docker CLI finds it.
    fn resolve_host(&self) -> Result<String, ConfigError> {
        if let Some(host) = &self.docker_host {
            return Ok(host.clone());
        }
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => {
                check_docker_host("DOCKER_HOST", &host)?;
                Ok(host)
            }
            _ => Ok(DEFAULT_DOCKER_HOST.to_owned()),
        }
    }

    /// The engine's address and, for a `tcp://` engine, the TLS files to reach it with, the
    /// way the docker CLI finds them: [`DockerConfig::docker_cert_path`], else
    /// `DOCKER_TLS_VERIFY` (any value but empty) with `DOCKER_CERT_PATH` (else `~/.docker`).
    /// The files must be there and readable, so that a wrong path stops the start.
    pub(crate) fn resolve_docker_host(&self) -> Result<Endpoint, ConfigError> {
        let host = self.resolve_host()?;
        let over_tcp = host.starts_with("tcp://");
        let (field, dir) = match &self.docker_cert_path {
            Some(dir) if !over_tcp => {
                return Err(ConfigError::new(
                    "docker_cert_path",
                    dir.display(),
                    format!("TLS needs a `tcp://host:port` engine, not `{host}`"),
                ));
            }
            Some(dir) => ("docker_cert_path", dir.clone()),
            None if over_tcp && env_set("DOCKER_TLS_VERIFY") => {
                let dir = match std::env::var_os("DOCKER_CERT_PATH") {
                    Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                    _ => match std::env::var_os("HOME") {
                        Some(home) if !home.is_empty() => PathBuf::from(home).join(".docker"),
                        _ => {
                            return Err(ConfigError::new(
                                "DOCKER_CERT_PATH",
                                "",
                                "must name the directory of ca.pem, cert.pem and key.pem \
                                 (DOCKER_TLS_VERIFY is set, and there is no HOME for ~/.docker)",
                            ));
                        }
                    },
                };
                ("DOCKER_CERT_PATH", dir)
            }
            None => return Ok(Endpoint { host, tls: None }),
        };
        let tls = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        for file in [&tls.ca, &tls.cert, &tls.key] {
            if let Err(error) = readable(file) {
                return Err(ConfigError::new(
                    field,
                    dir.display(),
                    format!(
                        "must hold the TLS files ca.pem, cert.pem and key.pem: `{}`: {error}",
                        file.display()
                    ),
                ));
            }
        }
        Ok(Endpoint { host, tls: Some(tls) })
    }
}

/// Where the engine is, and how to talk TLS to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) tls: Option<TlsFiles>,
}

/// The docker CLI's TLS files: the CA that signs the engine's certificate, and the client's own
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|value| !value.is_empty())
}

fn readable(file: &Path) -> std::io::Result<()> {
    if std::fs::metadata(file)?.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    std::fs::File::open(file).map(drop)
}

/// A setting of [`DockerConfig`] (or `DOCKER_HOST`) that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Docker setting `{field}` = `{value}` is invalid: {reason}")]
pub struct ConfigError {
    /// The [`DockerConfig`] field (or `DOCKER_HOST`) at fault.
    pub field: &'static str,
    /// The value it was given.
    pub value: String,
    /// What a valid value looks like.
    pub reason: String,
}

impl ConfigError {
    fn new(field: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self { field, value: value.to_string(), reason: reason.into() }
    }
}

/// Letters, digits, `_`, `.`, `-`, plus the given extra characters.
fn plain(value: &str, extra: &str) -> bool {
    value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c) || extra.contains(c))
}

fn check_image(image: &str) -> Result<(), ConfigError> {
    if image.is_empty() || !plain(image, "/:@") {
        return Err(ConfigError::new(
            "image",
            image,
            "must be an image reference such as `sandkeeper/sandbox:latest`",
        ));
    }
    Ok(())
}

fn check_instance_id(id: &str) -> Result<(), ConfigError> {
    let starts_plain = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !starts_plain || id.len() > MAX_INSTANCE_ID_LEN || !plain(id, "") {
        return Err(ConfigError::new(
            "instance_id",
            id,
            "must be 1 to 63 letters, digits, `_`, `.` or `-`, starting with a letter or digit",
        ));
    }
    Ok(())
}

fn check_docker_host(field: &'static str, host: &str) -> Result<(), ConfigError> {
    let rest = ["unix://", "tcp://", "http://"].iter().find_map(|scheme| host.strip_prefix(scheme));
    if rest.is_none_or(str::is_empty) {
        return Err(ConfigError::new(
            field,
            host,
            "must be `unix:///path/to/docker.sock`, `tcp://host:port` or `http://host:port` \
             (for TLS: `tcp://` with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH; ssh is not \
             supported)",
        ));
    }
    Ok(())
}

/// The owner options of the `/workspace` tmpfs: it belongs to the sandbox's uid and gid.
pub(crate) fn workspace_owner_options(uid: u32) -> String {
    format!("uid={uid},gid={uid},mode=0755")
}

/// An inclusive range of uids, written `FIRST-LAST` (e.g. `1000000-1999999`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    /// How many uids the range holds.
    pub fn len(&self) -> u64 {
        u64::from(self.last).saturating_sub(u64::from(self.first)) + 1
    }

    /// Never empty once checked; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }

    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }

    /// The uid of every sandbox's main process (docker-init and the command that keeps the
    /// container alive): the one just below the range, so never a sandbox's. The sandbox's own
    /// commands run as the sandbox's uid, and a process of another uid can neither signal the
    /// main process nor open its output through `/proc/1/fd`, which the engine reads.
    pub fn keeper(&self) -> u32 {
        self.first - 1
    }

    /// Parses `FIRST-LAST`; the error says what a valid range looks like.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError::new(
                "uid_range",
                value,
                "must be `FIRST-LAST`, two uids such as `1000000-1999999`",
            )
        };
        let (first, last) = value.trim().split_once('-').ok_or_else(bad)?;
        let number = |text: &str| text.trim().parse::<u32>().map_err(|_| bad());
        let range = Self { first: number(first)?, last: number(last)? };
        range.check()?;
        Ok(range)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let reason = if self.first > self.last {
            "must not end before it starts"
        } else if self.first < MIN_SANDBOX_UID {
            "must start at 65536 or above, clear of the uids of host accounts"
        } else if self.last > MAX_SANDBOX_UID {
            "must end at 2097151 or below, the largest uid a plain tar header holds"
        } else {
            return Ok(());
        };
        Err(ConfigError::new("uid_range", self, reason))
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> DockerConfig {
        DockerConfig::new(DEFAULT_IMAGE, "test-1")
    }

    #[test]
    fn the_defaults_are_valid_and_hardened() {
        let config = valid();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.network_mode, "none");
        assert!(config.read_only_root && config.no_new_privileges && config.init);
        assert!(config.cap_add.is_empty());
        assert_eq!(config.uid_range, UidRange { first: 1_000_000, last: 1_999_999 });
        assert_eq!(config.command, Some(vec!["sleep".to_owned(), "infinity".to_owned()]));
    }

    #[test]
    fn every_error_names_the_field_and_the_value() {
        let long_id = "a".repeat(64);
        let cases: Vec<(DockerConfig, &str, &str)> = vec![
            (DockerConfig { image: String::new(), ..valid() }, "image", ""),
            (DockerConfig { image: "a b".into(), ..valid() }, "image", "a b"),
            (DockerConfig { command: Some(vec![]), ..valid() }, "command", "[]"),
            (DockerConfig { instance_id: String::new(), ..valid() }, "instance_id", ""),
            (DockerConfig { instance_id: "prod=1".into(), ..valid() }, "instance_id", "prod=1"),
            (DockerConfig { instance_id: "-x".into(), ..valid() }, "instance_id", "-x"),
            (DockerConfig { instance_id: "a".repeat(64), ..valid() }, "instance_id", &long_id),
            (
                DockerConfig { docker_host: Some("ssh://box".into()), ..valid() },
                "docker_host",
                "ssh://box",
            ),
            (
                DockerConfig { docker_host: Some("unix://".into()), ..valid() },
                "docker_host",
                "unix://",
            ),
            (DockerConfig { memory_bytes: 1024, ..valid() }, "memory_bytes", "1024"),
            (DockerConfig { cpus: 0.0, ..valid() }, "cpus", "0"),
            (DockerConfig { cpus: f64::NAN, ..valid() }, "cpus", "NaN"),
            (DockerConfig { pids_limit: 1, ..valid() }, "pids_limit", "1"),
            (
                DockerConfig { uid_range: UidRange { first: 1000, last: 2000 }, ..valid() },
                "uid_range",
                "1000-2000",
            ),
            (DockerConfig { network_mode: "no ne".into(), ..valid() }, "network_mode", "no ne"),
            (DockerConfig { tmp_size_bytes: 10, ..valid() }, "tmp_size_bytes", "10"),
            (DockerConfig { workspace_size_bytes: 0, ..valid() }, "workspace_size_bytes", "0"),
            (DockerConfig { cap_add: vec!["NET ADMIN".into()], ..valid() }, "cap_add", "NET ADMIN"),
            (DockerConfig { runtime: Some(String::new()), ..valid() }, "runtime", ""),
            (
                DockerConfig { call_timeout: Duration::from_millis(10), ..valid() },
                "call_timeout",
                "10ms",
            ),
        ];
        for (config, field, value) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!((error.field, error.value.as_str()), (field, value), "{error}");
            let message = error.to_string();
            assert!(message.contains(&format!("`{field}` = `{value}`")), "{message}");
        }
    }

    #[test]
    fn loosened_settings_are_accepted() {
        let config = DockerConfig {
            command: None,
            docker_host: Some("tcp://127.0.0.1:2375".into()),
            uid_range: UidRange { first: 65_536, last: 65_536 },
            network_mode: "bridge".into(),
            read_only_root: false,
            cap_add: vec!["CHOWN".into(), "CAP_SETUID".into()],
            runtime: Some("runsc".into()),
            instance_id: "prod.eu-1_a".into(),
            image: "registry.example:5000/team/img@sha256:abc".into(),
            ..valid()
        };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn an_explicit_docker_host_wins_over_the_environment() {
        let config = DockerConfig { docker_host: Some("unix:///run/other.sock".into()), ..valid() };
        let endpoint = config.resolve_docker_host().unwrap();
        assert_eq!(endpoint.host, "unix:///run/other.sock");
        assert_eq!(endpoint.tls, None, "a unix socket is never TLS");
    }

    #[test]
    fn a_cert_path_gives_tls_to_a_tcp_engine_and_must_hold_the_three_files() {
        let dir = std::env::temp_dir().join(format!("sandkeeper-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = |host: &str| DockerConfig {
            docker_host: Some(host.into()),
            docker_cert_path: Some(dir.clone()),
            ..valid()
        };
        for file in ["ca.pem", "cert.pem"] {
            std::fs::write(dir.join(file), "x").unwrap();
        }
        let error = tls("tcp://127.0.0.1:2376").resolve_docker_host().unwrap_err();
        assert_eq!(error.field, "docker_cert_path");
        assert!(error.reason.contains("ca.pem, cert.pem and key.pem"), "{error}");
        assert!(error.reason.contains("key.pem`"), "names the missing file: {error}");

        std::fs::write(dir.join("key.pem"), "x").unwrap();
        let endpoint = tls("tcp://127.0.0.1:2376").resolve_docker_host().unwrap();
        assert_eq!(endpoint.host, "tcp://127.0.0.1:2376");
        let files = endpoint.tls.expect("TLS files");
        assert_eq!((files.ca, files.key), (dir.join("ca.pem"), dir.join("key.pem")));

        let error = tls("unix:///var/run/docker.sock").resolve_docker_host().unwrap_err();
        assert_eq!(error.field, "docker_cert_path");
        assert!(error.reason.contains("needs a `tcp://host:port` engine"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_workspace_belongs_to_the_sandbox_uid() {
        assert_eq!(workspace_owner_options(1_234_567), "uid=1234567,gid=1234567,mode=0755");
    }

    #[test]
    fn uid_ranges_are_parsed_and_checked() {
        assert_eq!(
            UidRange::parse("1000000-1999999"),
            Ok(UidRange { first: 1_000_000, last: 1_999_999 })
        );
        assert_eq!(UidRange::parse(" 70000 - 70000 ").map(|r| r.len()), Ok(1));
        assert_eq!(DEFAULT_UID_RANGE.len(), 1_000_000);
        for (value, reason) in [
            ("", "`FIRST-LAST`"),
            ("1000000", "`FIRST-LAST`"),
            ("a-b", "`FIRST-LAST`"),
            ("-5-10", "`FIRST-LAST`"),
            ("2000000-1000000", "must not end before it starts"),
            ("0-1999999", "65536"),
            ("1000-1999999", "65536"),
            ("1000000-2097152", "2097151"),
            ("1000000-99999999999", "`FIRST-LAST`"),
        ] {
            let error = UidRange::parse(value).unwrap_err();
            assert_eq!(error.field, "uid_range");
            assert!(error.reason.contains(reason), "{value}: {error}");
        }
    }
}
