//! `cargo xtask image`: builds the default sandbox image `sandkeeper/sandbox:latest` without any
//! registry: `FROM scratch` plus the host's static busybox (Debian's `busybox-static`) with its
//! applets linked where a shell user expects them, a non-root `sandbox` user (1000:1000) that owns
//! `/workspace`, and a sticky world-writable `/tmp`.
//!
//! The build context is a temporary directory laid out as the image's root, so no build step runs
//! a container (nothing needs a network or a base image). Ownership comes from a second `COPY
//! --chown` of a tree that holds only `/workspace`: `COPY --chown` of an empty directory leaves
//! the destination owned by root, so `/workspace` must be part of what is copied.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// The tag the adapter's default configuration points at.
pub(crate) const IMAGE: &str = "sandkeeper/sandbox:latest";

/// Where Debian's `busybox-static` installs the binary (`/bin` is a link to `/usr/bin` on merged-usr
/// systems, so both are tried).
const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/workspace:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";

const GROUP: &str = "\
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
";

const DOCKERFILE: &str = r#"FROM scratch
COPY rootfs/ /
COPY --chown=1000:1000 owned/ /
LABEL org.opencontainers.image.title="sandkeeper sandbox" \
      org.opencontainers.image.description="static busybox on scratch, user sandbox (1000:1000), /workspace"
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/workspace
USER 1000:1000
WORKDIR /workspace
CMD ["sleep", "infinity"]
"#;

/// Builds the sandbox image unless it exists already (`force` rebuilds it) and returns its id.
/// Prints nothing; every failure is returned with what to do about it.
pub(crate) fn build_image(force: bool) -> Result<String, String> {
    if !force {
        if let Some(id) = image_id()? {
            return Ok(id);
        }
    }
    let busybox = static_busybox()?;
    let context = TempDir::create()?;
    write_context(context.path(), &busybox)?;
    let output = run(Command::new("docker")
        .args(["build", "--quiet", "--network", "none", "--tag", IMAGE, "."])
        .current_dir(context.path()))?;
    if !output.status.success() {
        return Err(format!(
            "`docker build --tag {IMAGE}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    image_id()?.ok_or_else(|| format!("`docker build` succeeded but image {IMAGE} is not there"))
}

/// The id of the sandbox image, or `None` when the engine does not have it.
fn image_id() -> Result<Option<String>, String> {
    let output =
        run(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", IMAGE]))?;
    if output.status.success() {
        return Ok(Some(String::from_utf8_lossy(&output.stdout).trim().to_owned()));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.to_ascii_lowercase().contains("no such image") {
        Ok(None)
    } else {
        Err(format!(
            "`docker image inspect {IMAGE}` failed ({}): {}; is the Docker engine running and \
             DOCKER_HOST right?",
            output.status,
            stderr.trim()
        ))
    }
}

fn run(command: &mut Command) -> Result<Output, String> {
    command.output().map_err(|error| {
        format!("cannot run `docker`: {error}; install the Docker CLI (Debian: `apt-get install docker.io`)")
    })
}

/// The host's busybox, which must be statically linked: the image has no libc to load.
fn static_busybox() -> Result<PathBuf, String> {
    let path =
        BUSYBOX_PATHS.iter().map(PathBuf::from).find(|path| path.is_file()).ok_or_else(|| {
            format!(
                "no busybox at {}; the sandbox image needs Debian's static busybox: \
                 `apt-get install busybox-static`",
                BUSYBOX_PATHS.join(" or ")
            )
        })?;
    if is_dynamically_linked(&path)? {
        return Err(format!(
            "{} is dynamically linked (Debian's `busybox` package) and cannot run in an image \
             without libc; install the static one: `apt-get install busybox-static`",
            path.display()
        ));
    }
    Ok(path)
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

/// Lays out the build context: `Dockerfile`, `rootfs/` (root-owned) and `owned/` (the user's).
fn write_context(context: &Path, busybox: &Path) -> Result<(), String> {
    let io = |what: &str, error: std::io::Error| format!("cannot {what}: {error}");
    let rootfs = context.join("rootfs");
    for dir in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(|e| io("create the build context", e))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox"))
        .map_err(|e| io(&format!("copy {}", busybox.display()), e))?;
    set_mode(&rootfs.join("bin/busybox"), 0o755)?;
    set_mode(&rootfs.join("tmp"), 0o1777)?;
    set_mode(&rootfs.join("root"), 0o700)?;
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).map_err(|e| io("write etc/passwd", e))?;
    std::fs::write(rootfs.join("etc/group"), GROUP).map_err(|e| io("write etc/group", e))?;
    for applet in applets(busybox)? {
        let link = rootfs.join(&applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create an applet directory", e))?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .map_err(|e| io(&format!("link applet {applet}"), e))?;
    }
    std::fs::create_dir_all(context.join("owned/workspace"))
        .map_err(|e| io("create the build context", e))?;
    set_mode(&context.join("owned/workspace"), 0o755)?;
    std::fs::write(context.join("Dockerfile"), DOCKERFILE).map_err(|e| io("write Dockerfile", e))
}

/// Every applet with its usual location (`bin/sh`, `usr/bin/env`, ...), from busybox itself.
fn applets(busybox: &Path) -> Result<Vec<String>, String> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|error| format!("cannot run {} --list-full: {error}", busybox.display()))?;
    if !output.status.success() {
        return Err(format!("`{} --list-full` failed ({})", busybox.display(), output.status));
    }
    let applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_owned())
        // A listed name must stay inside the context and must not replace busybox itself.
        .filter(|applet| {
            !applet.is_empty() && applet != "bin/busybox" && !applet.split('/').any(|p| p == "..")
        })
        .collect();
    if !applets.iter().any(|applet| applet.ends_with("/sh")) {
        return Err(format!(
            "{} lists no `sh` applet; it cannot serve as the sandbox's shell",
            busybox.display()
        ));
    }
    Ok(applets)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|error| format!("cannot set the mode of {}: {error}", path.display()))
}

/// A build context directory that is removed when the build is done, whatever happened.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self, String> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("sandkeeper-image-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)
            .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
}
