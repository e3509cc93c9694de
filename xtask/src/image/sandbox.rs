//! `cargo xtask image` (or `image sandbox`): builds the default sandbox image `sandkeeper/sandbox:latest` without any
//! registry: `FROM scratch` plus the host's static busybox (Debian's `busybox-static`) with its
//! applets linked where a shell user expects them, a non-root `sandbox` user (1000:1000) that owns
//! `/workspace`, and a sticky world-writable `/tmp`.
//!
//! The build context is a temporary directory laid out as the image's root, so no build step runs
//! a container (nothing needs a network or a base image). Ownership comes from a second `COPY
//! --chown` of a tree that holds only `/workspace`: `COPY --chown` of an empty directory leaves
//! the destination owned by root, so `/workspace` must be part of what is copied.

use std::path::Path;
use std::process::Command;

use super::{TempDir, conventions, docker_build, image_id, io_error, set_mode, static_executable};

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
"#;

/// Builds the sandbox image unless it exists already (`force` rebuilds it) and returns its id.
pub(super) fn build_image(force: bool) -> Result<String, String> {
    if !force {
        if let Some(id) = image_id(IMAGE)? {
            return Ok(id);
        }
    }
    let busybox = static_executable(BUSYBOX_PATHS, "busybox-static")?;
    let context = TempDir::create()?;
    write_context(context.path(), &busybox)?;
    docker_build(context.path(), IMAGE)
}

/// Lays out the build context: `Dockerfile`, `rootfs/` (root-owned) and `owned/` (the user's).
fn write_context(context: &Path, busybox: &Path) -> Result<(), String> {
    let rootfs = context.join("rootfs");
    for dir in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(dir)).map_err(io_error("create the build context"))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox"))
        .map_err(|e| format!("cannot copy {}: {e}", busybox.display()))?;
    set_mode(&rootfs.join("bin/busybox"), 0o755)?;
    set_mode(&rootfs.join("tmp"), 0o1777)?;
    set_mode(&rootfs.join("root"), 0o700)?;
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).map_err(io_error("write etc/passwd"))?;
    std::fs::write(rootfs.join("etc/group"), GROUP).map_err(io_error("write etc/group"))?;
    for applet in applets(busybox)? {
        let link = rootfs.join(&applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io_error("create an applet directory"))?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .map_err(|e| format!("cannot link applet {applet}: {e}"))?;
    }
    std::fs::create_dir_all(context.join("owned/workspace"))
        .map_err(io_error("create the build context"))?;
    set_mode(&context.join("owned/workspace"), 0o755)?;
    let dockerfile = format!("{DOCKERFILE}{}\n", conventions().join("\n"));
    std::fs::write(context.join("Dockerfile"), dockerfile).map_err(io_error("write Dockerfile"))
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
