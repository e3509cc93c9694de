//! `cargo xtask image bash`: builds `sandkeeper/bash:latest`, the default busybox image with
//! Debian's `bash-static` as `/bin/sh` and `/bin/bash`. It shows that sandkeeper does not rely on
//! busybox's shell: every script it runs in a sandbox runs under bash here, the busybox applets
//! still provide the tools.
//!
//! Like the default image it is built without any registry: `FROM sandkeeper/sandbox:latest`
//! (built first when missing) plus a context laid out as the root that holds only the shell.
//! The image is rebuilt when the default image, the host's `bash-static` or this recipe changed
//! (see [`super::INPUTS_LABEL`]).

use std::path::Path;

use super::{
    INPUTS_LABEL, InputsHash, TempDir, conventions, docker_build, io_error, sandbox, set_mode,
    static_executable, up_to_date,
};

/// The tag of the bash image.
pub(crate) const IMAGE: &str = "sandkeeper/bash:latest";

/// Where Debian's `bash-static` installs the shell.
const BASH_PATHS: &[&str] = &["/bin/bash-static", "/usr/bin/bash-static"];

/// Changed whenever what this module writes into the image changes, so that the next build
/// replaces an image made by an older recipe.
const RECIPE_VERSION: &str = "bash-1";

/// Builds the image unless it is up to date (`force` rebuilds it) and returns its id.
pub(super) fn build_image(force: bool) -> Result<String, String> {
    let base = sandbox::build_image(false)?;
    let bash = static_executable(BASH_PATHS, "bash-static")?;
    let bash_bytes =
        std::fs::read(&bash).map_err(|error| format!("cannot read {}: {error}", bash.display()))?;
    let inputs = InputsHash::new()
        .add(RECIPE_VERSION.as_bytes())
        .add(base.as_bytes())
        .add(&bash_bytes)
        .hex();
    if !force && up_to_date(IMAGE, &inputs)? {
        return super::image_id(IMAGE)?.ok_or_else(|| format!("image {IMAGE} vanished"));
    }
    let context = TempDir::create()?;
    write_context(context.path(), &bash_bytes, &inputs)?;
    docker_build(context.path(), IMAGE)
}

/// `Dockerfile` and `rootfs/bin/{bash,sh}`.
fn write_context(context: &Path, bash: &[u8], inputs: &str) -> Result<(), String> {
    let bin = context.join("rootfs/bin");
    std::fs::create_dir_all(&bin).map_err(io_error("create the build context"))?;
    std::fs::write(bin.join("bash"), bash).map_err(io_error("copy bash-static"))?;
    set_mode(&bin.join("bash"), 0o755)?;
    std::os::unix::fs::symlink("bash", bin.join("sh")).map_err(io_error("link bin/sh to bash"))?;
    let dockerfile = format!(
        "FROM {base}\n\
         COPY rootfs/ /\n\
         LABEL org.opencontainers.image.title=\"sandkeeper bash sandbox\" \\\n      \
         org.opencontainers.image.description=\"the busybox sandbox with bash-static as /bin/sh\" \\\n      \
         {INPUTS_LABEL}=\"{inputs}\"\n\
         {conventions}\n",
        base = sandbox::IMAGE,
        conventions = conventions().join("\n"),
    );
    std::fs::write(context.join("Dockerfile"), dockerfile).map_err(io_error("write Dockerfile"))
}
