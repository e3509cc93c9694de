//! Files made immutable with `chattr +i`, which refuses writes even to root: how the black-box
//! tests make a server's SQLite store refuse writes while it runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files that refuse writes until this is dropped (also when a test fails, so that the data
/// dir can still be removed).
#[derive(Debug)]
pub struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// The SQLite database in `data_dir` and its write-ahead log (where every write of WAL mode
    /// lands first), made immutable; `None` where `chattr +i` does not refuse writes (it needs
    /// root and an ext4-like filesystem).
    pub fn database_in(data_dir: &Path) -> Option<Self> {
        let database = data_dir.join("sandkeeper.db");
        let guard = Self(vec![database.clone(), database.with_extension("db-wal")]);
        let refused = chattr("+i", &guard.0)
            && std::fs::OpenOptions::new().append(true).open(&database).is_err();
        refused.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, files: &[PathBuf]) -> bool {
    Command::new("chattr")
        .arg(flag)
        .args(files)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
