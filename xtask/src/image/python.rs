//! `cargo xtask image python`: builds `sandkeeper/python:bookworm`, a Debian bookworm root
//! filesystem made by `debootstrap --variant=minbase` with Python 3 (`python3`, `python3-venv`,
//! `python3-pip`) and `procps`, imported with `docker import`. No registry is involved: the
//! packages come from the Debian mirror this machine's apt already uses (read from
//! `/etc/apt/sources.list.d/*.sources` or `/etc/apt/sources.list`), or from the one in
//! `SANDKEEPER_DEBIAN_MIRROR`.
//!
//! debootstrap needs root. The image is rebuilt when the suite, the package list or this recipe
//! changed (see [`super::INPUTS_LABEL`]); `--force` rebuilds it anyway.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{INPUTS_LABEL, InputsHash, TempDir, conventions, image_id, io_error, up_to_date};

/// The tag of the Python image.
pub(crate) const IMAGE: &str = "sandkeeper/python:bookworm";

/// The Debian release the image is made of.
const SUITE: &str = "bookworm";

/// What debootstrap installs on top of the minimal base (which has coreutils, dash, findutils,
/// grep, sed, tar; busybox-less).
const PACKAGES: &[&str] = &["python3", "python3-venv", "python3-pip", "procps"];

/// Changed whenever what this module does to the root filesystem changes.
const RECIPE_VERSION: &str = "python-1";

/// The variable that names the Debian mirror to use instead of the one apt is configured with.
pub(crate) const MIRROR_VARIABLE: &str = "SANDKEEPER_DEBIAN_MIRROR";

/// Builds the image unless it is up to date (`force` rebuilds it) and returns its id.
pub(super) fn build_image(force: bool) -> Result<String, String> {
    let inputs = inputs();
    if !force && up_to_date(IMAGE, &inputs)? {
        return image_id(IMAGE)?.ok_or_else(|| format!("image {IMAGE} vanished"));
    }
    check_root()?;
    check_debootstrap()?;
    let mirror = mirror()?;
    let work = TempDir::create()?;
    let rootfs = work.path().join("rootfs");
    let started = Instant::now();
    eprintln!(
        "xtask image: debootstrap {SUITE} ({}) from {mirror}; this takes a minute or several",
        PACKAGES.join(", ")
    );
    debootstrap(&rootfs, &mirror)?;
    eprintln!("xtask image: debootstrap done in {:.0?}", started.elapsed());
    configure(&rootfs)?;
    import(&rootfs, &inputs)?;
    image_id(IMAGE)?
        .ok_or_else(|| format!("`docker import` succeeded but image {IMAGE} is not there"))
}

/// The hash the image's [`INPUTS_LABEL`] carries.
fn inputs() -> String {
    let mut hash = InputsHash::new();
    hash.add(RECIPE_VERSION.as_bytes()).add(SUITE.as_bytes()).add(b"minbase");
    for package in PACKAGES {
        hash.add(package.as_bytes());
    }
    hash.hex()
}

fn check_root() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    match euid {
        Some("0") | None => Ok(()),
        Some(uid) => Err(format!(
            "building {IMAGE} runs debootstrap, which needs root (this is uid {uid}); run \
             `cargo xtask image python` as root"
        )),
    }
}

fn check_debootstrap() -> Result<(), String> {
    let found = Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        Ok(())
    } else {
        Err(format!("building {IMAGE} needs debootstrap: `apt-get install debootstrap`"))
    }
}

/// The Debian mirror: `SANDKEEPER_DEBIAN_MIRROR`, else the one apt is configured with.
fn mirror() -> Result<String, String> {
    if let Ok(mirror) = std::env::var(MIRROR_VARIABLE) {
        let mirror = mirror.trim().to_owned();
        if !(mirror.starts_with("http://") || mirror.starts_with("https://")) {
            return Err(format!(
                "{MIRROR_VARIABLE}=`{mirror}` is not an http:// or https:// URL of a Debian mirror"
            ));
        }
        return Ok(mirror);
    }
    let mut sources = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sources"))
            .collect();
        files.sort();
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                sources.extend(deb822_sources(&text));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        sources.extend(one_line_sources(&text));
    }
    choose_mirror(&sources).ok_or_else(|| {
        format!(
            "found no Debian mirror in /etc/apt/sources.list.d/*.sources or \
             /etc/apt/sources.list; set {MIRROR_VARIABLE} to one (the URL apt would use for \
             `{SUITE}`)"
        )
    })
}

/// One enabled `deb` source: its URI and suites.
#[derive(Debug, PartialEq)]
struct Source {
    uri: String,
    suites: Vec<String>,
}

/// The `deb` stanzas of a deb822 `.sources` file (`Types:`, `URIs:`, `Suites:`, `Enabled:`).
fn deb822_sources(text: &str) -> Vec<Source> {
    let mut found = Vec::new();
    let text = text.replace("\r\n", "\n");
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|line| !line.starts_with('#'))
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
                })
                .unwrap_or_default()
        };
        let debs = field("Types").split_whitespace().any(|kind| kind == "deb");
        let enabled = !field("Enabled").eq_ignore_ascii_case("no");
        let suites: Vec<String> = field("Suites").split_whitespace().map(str::to_owned).collect();
        if debs && enabled {
            for uri in field("URIs").split_whitespace() {
                found.push(Source { uri: uri.to_owned(), suites: suites.clone() });
            }
        }
    }
    found
}

/// The `deb` lines of a one-line-style `sources.list`: `deb [options] URI suite components`.
fn one_line_sources(text: &str) -> Vec<Source> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_owned();
            let suite = words.next()?.to_owned();
            Some(Source { uri, suites: vec![suite] })
        })
        .collect()
}

/// The mirror of the release itself: a source that lists the suite the image is made of, else
/// one that lists any release suite (a Debian mirror serves every release); security and
/// update suites live elsewhere or hold only part of a release, so they are never chosen.
fn choose_mirror(sources: &[Source]) -> Option<String> {
    let http =
        |source: &&Source| source.uri.starts_with("http://") || source.uri.starts_with("https://");
    let release = |suite: &String| !suite.contains('-') && !suite.contains('/');
    sources
        .iter()
        .filter(http)
        .find(|source| source.suites.iter().any(|suite| suite == SUITE))
        .or_else(|| sources.iter().filter(http).find(|source| source.suites.iter().any(release)))
        .map(|source| source.uri.trim_end_matches('/').to_owned())
}

/// Runs debootstrap into `rootfs`; on failure the error holds the end of its log.
fn debootstrap(rootfs: &Path, mirror: &str) -> Result<(), String> {
    let output = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(rootfs)
        .arg(mirror)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run debootstrap: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let log =
        std::fs::read_to_string(rootfs.join("debootstrap/debootstrap.log")).unwrap_or_default();
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    Err(format!(
        "debootstrap of {SUITE} from {mirror} failed ({}):\n{}\n{}\n{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stdout)),
        tail(&String::from_utf8_lossy(&output.stderr)),
        tail(&log),
    ))
}

/// The sandbox conventions, and the apt caches and package lists taken out.
fn configure(rootfs: &Path) -> Result<(), String> {
    append(&rootfs.join("etc/passwd"), "sandbox:x:1000:1000:sandbox:/workspace:/bin/sh\n")?;
    append(&rootfs.join("etc/group"), "sandbox:x:1000:\n")?;
    append(&rootfs.join("etc/shadow"), "sandbox:*:19000:0:99999:7:::\n")?;
    append(&rootfs.join("etc/gshadow"), "sandbox:!::\n")?;
    let workspace = rootfs.join("workspace");
    std::fs::create_dir_all(&workspace).map_err(io_error("create /workspace"))?;
    super::set_mode(&workspace, 0o755)?;
    std::os::unix::fs::chown(&workspace, Some(1000), Some(1000))
        .map_err(io_error("give /workspace to 1000:1000"))?;
    super::set_mode(&rootfs.join("tmp"), 0o1777)?;
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "var/log",
        "usr/share/man",
        "usr/share/info",
    ] {
        empty_dir(&rootfs.join(dir))?;
    }
    for file in ["var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"] {
        let _ = std::fs::remove_file(rootfs.join(file));
    }
    Ok(())
}

fn append(path: &Path, line: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    file.write_all(line.as_bytes())
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// Removes what is inside `dir` but keeps `dir` itself (and its subdirectories' absence is
/// fine: apt recreates `partial/` when it needs it).
fn empty_dir(dir: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|error| format!("cannot remove {}: {error}", path.display()))?;
    }
    Ok(())
}

/// `tar` of the root filesystem (device nodes, `/proc` and `/sys` left out: the engine provides
/// them) piped into `docker import` with the image's configuration.
fn import(rootfs: &Path, inputs: &str) -> Result<(), String> {
    let mut tar = Command::new("tar")
        .args(["--create", "--numeric-owner", "--file=-", "--directory"])
        .arg(rootfs)
        .args(["--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run tar: {error}"))?;
    let archive = tar.stdout.take().expect("tar's stdout is piped");
    let mut changes = conventions().to_vec();
    changes.push("ENV LANG=C.UTF-8".to_owned());
    changes.push(format!(
        "LABEL org.opencontainers.image.title=\"sandkeeper python sandbox\" \
         org.opencontainers.image.description=\"Debian {SUITE} minbase with {}\" \
         {INPUTS_LABEL}=\"{inputs}\"",
        PACKAGES.join(" ")
    ));
    let mut import = Command::new("docker");
    import.arg("import");
    for change in &changes {
        import.args(["--change", change]);
    }
    let output = import
        .args(["-", IMAGE])
        .stdin(Stdio::from(archive))
        .output()
        .map_err(|error| format!("cannot run `docker import`: {error}"))?;
    let tar_status = tar.wait().map_err(|error| format!("cannot wait for tar: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`docker import - {IMAGE}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    if !tar_status.success() {
        return Err(format!("tar of the root filesystem failed ({tar_status})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_mirror_is_chosen_over_security_and_disabled_sources() {
        let text = "\
Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb deb-src
# a comment: with a colon
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
";
        let sources = deb822_sources(text);
        assert_eq!(sources.len(), 2, "{sources:?}");
        assert_eq!(choose_mirror(&sources).as_deref(), Some("http://mirror.example/debian"));
    }

    #[test]
    fn a_one_line_sources_list_is_read_with_or_without_options() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
";
        let sources = one_line_sources(text);
        assert_eq!(sources.len(), 2, "{sources:?}");
        assert_eq!(choose_mirror(&sources).as_deref(), Some("http://mirror.example/debian"));
    }

    #[test]
    fn another_release_mirror_serves_when_none_lists_the_suite() {
        let sources = one_line_sources("deb https://mirror.example/debian trixie main\n");
        assert_eq!(choose_mirror(&sources).as_deref(), Some("https://mirror.example/debian"));
        let security =
            one_line_sources("deb http://x.example/debian-security trixie-security main\n");
        assert_eq!(choose_mirror(&security), None);
    }

    #[test]
    fn the_inputs_change_with_the_recipe() {
        assert_eq!(inputs(), inputs());
        assert_eq!(inputs().len(), 16);
    }
}
