//! `cargo xtask image [sandbox|bash|python|all] [--force]`: builds sandbox images without any
//! registry. One module per image; this one holds what they share (the Docker calls, the
//! temporary build directory, the label that records what an image was built from).
//!
//! | name | tag | what |
//! |---|---|---|
//! | `sandbox` (default) | `sandkeeper/sandbox:latest` | static busybox on `scratch` |
//! | `bash` | `sandkeeper/bash:latest` | the busybox image with Debian's `bash-static` as `/bin/sh` |
//! | `python` | `sandkeeper/python:bookworm` | Debian bookworm (debootstrap) with Python 3 |
//!
//! Every image has the same conventions: user `sandbox` (1000:1000) whose home is `/workspace`,
//! `/workspace` owned by it, a sticky world-writable `/tmp`, `HOME=/workspace`, and
//! `sleep infinity` as its command.

mod bash;
mod python;
mod sandbox;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// The tag of the default image, which the adapter's default configuration points at.
pub(crate) use sandbox::IMAGE;

/// Builds the default image unless it exists already (`force` rebuilds it) and returns its id.
/// (The adapter's engine tests include this module by path and call this.)
pub(crate) fn build_image(force: bool) -> Result<String, String> {
    sandbox::build_image(force)
}

/// The label that holds a hash of what an image was built from; a build is skipped while the
/// image carries the hash of the current inputs.
pub(crate) const INPUTS_LABEL: &str = "io.sandkeeper.image.inputs";

/// The `PATH` every image sets.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The images `cargo xtask image` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Image {
    Sandbox,
    Bash,
    Python,
}

impl Image {
    pub(crate) const ALL: [Self; 3] = [Self::Sandbox, Self::Bash, Self::Python];

    pub(crate) fn tag(self) -> &'static str {
        match self {
            Self::Sandbox => sandbox::IMAGE,
            Self::Bash => bash::IMAGE,
            Self::Python => python::IMAGE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Bash => "bash",
            Self::Python => "python",
        }
    }

    /// Builds the image unless it is up to date (`force` rebuilds it) and returns its id.
    /// Prints only progress of long steps; every failure is returned with what to do about it.
    pub(crate) fn build(self, force: bool) -> Result<String, String> {
        match self {
            Self::Sandbox => sandbox::build_image(force),
            Self::Bash => bash::build_image(force),
            Self::Python => python::build_image(force),
        }
    }
}

/// `cargo xtask image [NAME...] [--force]`: no name builds the default image; `all` builds
/// every image.
pub(crate) fn task(args: &[String]) -> Result<(), String> {
    let mut force = false;
    let mut images = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--force" => force = true,
            "all" => images.extend(Image::ALL),
            name => images.push(
                Image::ALL.into_iter().find(|image| image.name() == name).ok_or_else(|| {
                    format!(
                        "unknown image `{name}`: expected sandbox, bash, python or all \
                         (and --force to rebuild)"
                    )
                })?,
            ),
        }
    }
    if images.is_empty() {
        images.push(Image::Sandbox);
    }
    images.dedup();
    for image in images {
        let id = image.build(force)?;
        println!("{} {id}", image.tag());
    }
    Ok(())
}

/// The image's id, or `None` when the engine does not have it.
pub(crate) fn image_id(tag: &str) -> Result<Option<String>, String> {
    inspect(tag, "{{.Id}}")
}

/// The image's [`INPUTS_LABEL`], or `None` when the engine does not have the image or the image
/// has no such label.
fn inputs_label(tag: &str) -> Result<Option<String>, String> {
    let format = format!("{{{{index .Config.Labels \"{INPUTS_LABEL}\"}}}}");
    Ok(inspect(tag, &format)?.filter(|value| !value.is_empty() && value != "<no value>"))
}

/// Whether the image exists and was built from `inputs`.
fn up_to_date(tag: &str, inputs: &str) -> Result<bool, String> {
    Ok(inputs_label(tag)?.as_deref() == Some(inputs))
}

fn inspect(tag: &str, format: &str) -> Result<Option<String>, String> {
    let output =
        docker(Command::new("docker").args(["image", "inspect", "--format", format, tag]))?;
    if output.status.success() {
        return Ok(Some(String::from_utf8_lossy(&output.stdout).trim().to_owned()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.to_ascii_lowercase().contains("no such image") {
        Ok(None)
    } else {
        Err(format!(
            "`docker image inspect {tag}` failed ({}): {}; is the Docker engine running and \
             DOCKER_HOST right?",
            output.status,
            stderr.trim()
        ))
    }
}

/// Copies image `tag` from the engine of `DOCKER_HOST` into the engine at `host` (another
/// engine on the same machine, such as the gVisor engine of `.ci/gvisor.sh`), unless that
/// engine has the same image already.
pub(crate) fn copy_to_engine(tag: &str, host: &str) -> Result<(), String> {
    let id = image_id(tag)?.ok_or_else(|| format!("image {tag} is not built"))?;
    let theirs = docker(
        Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(["image", "inspect", "--format", "{{.Id}}", tag]),
    )?;
    if theirs.status.success() && String::from_utf8_lossy(&theirs.stdout).trim() == id {
        return Ok(());
    }
    let mut save = Command::new("docker")
        .args(["save", tag])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run `docker save {tag}`: {error}"))?;
    let saved = save.stdout.take().expect("docker save's piped stdout");
    let loaded = docker(
        Command::new("docker").env("DOCKER_HOST", host).args(["load", "--quiet"]).stdin(saved),
    )?;
    let save_status =
        save.wait().map_err(|error| format!("`docker save {tag}` did not end: {error}"))?;
    if !save_status.success() || !loaded.status.success() {
        return Err(format!(
            "copying image {tag} into the engine at {host} failed ({save_status}, {}): {}",
            loaded.status,
            String::from_utf8_lossy(&loaded.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs a `docker` command and collects its output.
fn docker(command: &mut Command) -> Result<Output, String> {
    command.output().map_err(|error| {
        format!("cannot run `docker`: {error}; install the Docker CLI (Debian: `apt-get install docker.io`)")
    })
}

/// `docker build` of a context directory that holds a `Dockerfile`, without a network.
fn docker_build(context: &Path, tag: &str) -> Result<String, String> {
    let output = docker(
        Command::new("docker")
            .args(["build", "--quiet", "--network", "none", "--tag", tag, "."])
            .current_dir(context),
    )?;
    if !output.status.success() {
        return Err(format!(
            "`docker build --tag {tag}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    image_id(tag)?.ok_or_else(|| format!("`docker build` succeeded but image {tag} is not there"))
}

/// The `Dockerfile` lines (and `docker import --change` values) of the conventions every image
/// shares.
fn conventions() -> [String; 4] {
    [
        format!("ENV PATH={PATH} HOME=/workspace"),
        "USER 1000:1000".to_owned(),
        "WORKDIR /workspace".to_owned(),
        r#"CMD ["sleep", "infinity"]"#.to_owned(),
    ]
}

/// A 64-bit FNV-1a hash, as 16 hex digits: stable across builds and platforms, which is all the
/// inputs label needs (it detects change, it does not authenticate).
#[derive(Debug)]
pub(crate) struct InputsHash(u64);

impl InputsHash {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Adds one input; each is followed by a separator so that `["ab", "c"]` and `["a", "bc"]`
    /// differ.
    pub(crate) fn add(&mut self, bytes: &[u8]) -> &mut Self {
        for byte in bytes.iter().chain([&0xff]) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub(crate) fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Whether an ELF executable asks for a program interpreter (the dynamic loader), read from its
/// program headers (64-bit little-endian, which covers x86-64 and arm64).
fn is_dynamically_linked(path: &Path) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let not_elf = || format!("{} is not a 64-bit little-endian ELF executable", path.display());
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let program_headers = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes"));
    let (entry_size, count) = (u16_at(0x36), u16_at(0x38));
    let start = usize::try_from(program_headers).map_err(|_| not_elf())?;
    for index in 0..count {
        let at = start + index * entry_size;
        let kind = bytes.get(at..at + 4).ok_or_else(not_elf)?;
        if u32::from_le_bytes(kind.try_into().expect("4 bytes")) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The first of `paths` that is a statically linked executable (the images have no libc to
/// load), or an error that says which Debian package brings it.
fn static_executable(paths: &[&str], package: &str) -> Result<PathBuf, String> {
    let path = paths.iter().map(PathBuf::from).find(|path| path.is_file()).ok_or_else(|| {
        format!(
            "no {} at {}; install Debian's `{package}`: `apt-get install {package}`",
            Path::new(paths[0]).file_name().map(|name| name.to_string_lossy()).unwrap_or_default(),
            paths.join(" or ")
        )
    })?;
    if is_dynamically_linked(&path)? {
        return Err(format!(
            "{} is dynamically linked and cannot run in an image without libc; install the \
             static one: `apt-get install {package}`",
            path.display()
        ));
    }
    Ok(path)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|error| format!("cannot set the mode of {}: {error}", path.display()))
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |error| format!("cannot {what}: {error}")
}

/// A build directory that is removed when the build is done, whatever happened. Anything still
/// mounted under it (debootstrap mounts `/proc` and `/sys` in its target while it works) is
/// unmounted first, so that the removal never reaches into a mounted filesystem.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn create() -> Result<Self, String> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("sandkeeper-image-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)
            .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let mounted = mounts_under(&self.0);
        for mount in &mounted {
            let _ = Command::new("umount").arg("--lazy").arg(mount).output();
        }
        if mounts_under(&self.0).is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            eprintln!(
                "xtask image: {} still has filesystems mounted under it; left in place",
                self.0.display()
            );
        }
    }
}

/// Mount points at or below `dir`, deepest first (from `/proc/self/mounts`, whose paths escape
/// spaces as `\040`; the build directories never contain one).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else { return Vec::new() };
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(dir))
        .collect();
    found.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_recognised() {
        // The test runner itself is dynamically linked on every platform this workspace targets.
        let me = std::env::current_exe().unwrap();
        assert!(is_dynamically_linked(&me).unwrap());
    }

    #[test]
    fn a_non_elf_file_is_refused_with_its_name() {
        let dir = TempDir::create().unwrap();
        let file = dir.path().join("script");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let error = is_dynamically_linked(&file).unwrap_err();
        assert!(error.contains("script") && error.contains("not a 64-bit"), "{error}");
    }

    #[test]
    fn the_inputs_hash_tells_apart_inputs_split_differently() {
        let mut first = InputsHash::new();
        first.add(b"ab").add(b"c");
        let mut second = InputsHash::new();
        second.add(b"a").add(b"bc");
        assert_ne!(first.hex(), second.hex());
        assert_eq!(first.hex().len(), 16);
        let mut again = InputsHash::new();
        again.add(b"ab").add(b"c");
        assert_eq!(first.hex(), again.hex(), "the same inputs give the same label");
    }

    #[test]
    fn an_unknown_image_name_is_refused_with_the_names_that_exist() {
        let error = task(&["ruby".to_owned()]).unwrap_err();
        assert!(error.contains("`ruby`") && error.contains("python"), "{error}");
    }
}
