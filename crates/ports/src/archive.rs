//! Workspace archives: the tar files a workspace is saved as, and the rule that decides whether
//! one may be extracted into a sandbox's `/workspace`.
//!
//! The rule reads the archive's headers only (the file contents are skipped), on the host,
//! before anything is extracted; the extraction itself always happens inside the sandbox, as
//! its user. An archive is refused when it is not a tar (bad header checksum, cut short, no
//! end-of-archive marker), or when an entry would land outside the workspace:
//!
//! - an absolute name, or a name with a `..` segment;
//! - a name that goes through a symbolic link of the archive (`link/file` after `link -> /etc`),
//!   or that replaces one;
//! - a hard link whose target is absolute, has a `..` segment or goes through a symbolic link.
//!
//! A symbolic link itself may point anywhere (a virtual environment's `bin/python ->
//! /usr/bin/python3` is legitimate): it is only a name, and nothing of the archive is written
//! through it. Device nodes are refused (the sandbox's user could not make them anyway).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::workspace::printable;

const BLOCK: u64 = 512;
/// The longest name (or link target) read from a GNU long-name entry or a pax header.
const MAX_NAME: u64 = 64 * 1024;

/// Why an archive may not be extracted into a workspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArchive(pub String);

impl InvalidArchive {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What [`check_archive`] found in an acceptable archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveSummary {
    /// Entries (files, directories, links), the root directory not counted.
    pub entries: u64,
    /// The sum of the regular files' sizes.
    pub content_bytes: u64,
}

/// Reads the headers of the tar archive in `archive` and says whether it may be extracted into
/// a workspace (see the module documentation).
pub fn check_archive<R: Read + Seek>(archive: &mut R) -> Result<ArchiveSummary, InvalidArchive> {
    let mut summary = ArchiveSummary::default();
    let mut links: HashSet<String> = HashSet::new();
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut index = 0u64;
    loop {
        let mut header = [0u8; BLOCK as usize];
        match read_block(archive, &mut header) {
            Ok(true) => {}
            Ok(false) if index == 0 => {
                return Err(InvalidArchive::new(
                    "the archive is empty; a tar archive was expected",
                ));
            }
            Ok(false) => {
                return Err(InvalidArchive::new(
                    "the archive ends without its end-of-archive marker: it was cut short",
                ));
            }
            Err(_) if index == 0 => {
                return Err(InvalidArchive::new(
                    "the body is not a tar archive (it is shorter than one 512-byte header)",
                ));
            }
            Err(_) => {
                return Err(InvalidArchive::new(format!(
                    "the archive is cut short after entry {index}"
                )));
            }
        }
        if header.iter().all(|byte| *byte == 0) {
            if index == 0 {
                return Err(InvalidArchive::new(
                    "the archive holds no entry; a tar archive was expected",
                ));
            }
            return Ok(summary);
        }
        index += 1;
        if !checksum_matches(&header) {
            return Err(InvalidArchive::new(if index == 1 {
                "the body is not a tar archive (its first header's checksum does not match)"
                    .to_owned()
            } else {
                format!("header {index} of the archive is damaged (its checksum does not match)")
            }));
        }
        let size = parse_number(&header[124..136])
            .ok_or_else(|| InvalidArchive::new(format!("header {index} has an unreadable size")))?;
        let kind = header[156];
        match kind {
            b'L' | b'K' | b'x' => {
                let data = read_data(archive, size, index)?;
                match kind {
                    b'L' => long_name = Some(c_string(&data)),
                    b'K' => long_link = Some(c_string(&data)),
                    _ => {
                        let (path, link) = pax_paths(&data, index)?;
                        long_name = path.or(long_name);
                        long_link = link.or(long_link);
                    }
                }
                continue;
            }
            b'g' => {
                skip(archive, size, index)?;
                continue;
            }
            _ => {}
        }
        let name = long_name.take().unwrap_or_else(|| header_name(&header));
        let link = long_link.take().unwrap_or_else(|| c_string(&header[157..257]));
        let Some(path) = confined(&name) else {
            return Err(InvalidArchive::new(format!(
                "entry `{}` would land outside /workspace (absolute, or with a `..` segment)",
                printable(&name)
            )));
        };
        if path.is_empty() {
            if kind != b'5' {
                return Err(InvalidArchive::new(
                    "the archive's root entry is not a directory".to_owned(),
                ));
            }
            skip(archive, size, index)?;
            continue;
        }
        if through_link(&path, &links, true) {
            return Err(InvalidArchive::new(format!(
                "entry `{}` goes through (or replaces) a symbolic link of the archive, which \
                 could lead outside /workspace",
                printable(&name)
            )));
        }
        match kind {
            b'0' | 0 | b'7' => summary.content_bytes = summary.content_bytes.saturating_add(size),
            b'5' | b'6' => {}
            b'2' => {
                links.insert(path.clone());
            }
            b'1' => {
                let target = confined(&link).filter(|target| !target.is_empty());
                if target.as_ref().is_none_or(|target| through_link(target, &links, true)) {
                    return Err(InvalidArchive::new(format!(
                        "hard link `{}` points to `{}`, outside /workspace or through a \
                         symbolic link",
                        printable(&name),
                        printable(&link)
                    )));
                }
            }
            b'3' | b'4' => {
                return Err(InvalidArchive::new(format!(
                    "entry `{}` is a device node; a workspace holds files, directories and links",
                    printable(&name)
                )));
            }
            other => {
                return Err(InvalidArchive::new(format!(
                    "entry `{}` has the type `{}`, which a workspace archive may not hold",
                    printable(&name),
                    char::from(other).escape_default()
                )));
            }
        }
        summary.entries += 1;
        skip(archive, size, index)?;
    }
}

/// [`check_archive`] of the file at `path`, off the async threads.
pub async fn check_archive_file(path: &Path) -> Result<ArchiveSummary, InvalidArchive> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .map_err(|error| InvalidArchive::new(format!("the archive cannot be read: {error}")))?;
        check_archive(&mut io::BufReader::new(&mut file))
    })
    .await
    .unwrap_or_else(|error| Err(InvalidArchive::new(format!("checking it failed: {error}"))))
}

/// Reads one block; `false` at the end of the input (a partial block is an error).
fn read_block<R: Read>(archive: &mut R, block: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match archive.read(&mut block[filled..])? {
            0 if filled == 0 => return Ok(false),
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a partial block")),
            read => filled += read,
        }
    }
    Ok(true)
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

fn skip<R: Read + Seek>(archive: &mut R, size: u64, index: u64) -> Result<(), InvalidArchive> {
    let cut = || InvalidArchive::new(format!("the archive is cut short in entry {index}"));
    let skip = padded(size);
    let here = archive.stream_position().map_err(|_| cut())?;
    let end = archive.seek(SeekFrom::End(0)).map_err(|_| cut())?;
    if end.saturating_sub(here) < skip {
        return Err(cut());
    }
    archive.seek(SeekFrom::Start(here + skip)).map_err(|_| cut())?;
    Ok(())
}

fn read_data<R: Read + Seek>(
    archive: &mut R,
    size: u64,
    index: u64,
) -> Result<Vec<u8>, InvalidArchive> {
    if size > MAX_NAME {
        return Err(InvalidArchive::new(format!(
            "header {index} carries {size} bytes of names, more than {MAX_NAME}"
        )));
    }
    let mut data = vec![0u8; padded(size) as usize];
    archive
        .read_exact(&mut data)
        .map_err(|_| InvalidArchive::new(format!("the archive is cut short in entry {index}")))?;
    data.truncate(size as usize);
    Ok(data)
}

fn checksum_matches(header: &[u8]) -> bool {
    let Some(stored) = parse_number(&header[148..156]) else { return false };
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(at, byte)| if (148..156).contains(&at) { 32 } else { u64::from(*byte) })
        .sum();
    stored == sum
}

/// An octal field (NUL or space terminated), or GNU's base-256 for large values.
fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|byte| byte & 0x80 != 0) {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The name of a ustar header, with its prefix when the header is POSIX ustar.
fn header_name(header: &[u8]) -> String {
    let name = c_string(&header[0..100]);
    if &header[257..263] == b"ustar\0" {
        let prefix = c_string(&header[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// The `path` and `linkpath` records of a pax extended header.
fn pax_paths(data: &[u8], index: u64) -> Result<(Option<String>, Option<String>), InvalidArchive> {
    let bad = || InvalidArchive::new(format!("the pax header {index} is malformed"));
    let (mut path, mut link) = (None, None);
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let space = rest.iter().position(|byte| *byte == b' ').ok_or_else(bad)?;
        let length: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        if length <= space || length > rest.len() {
            return Err(bad());
        }
        let record = &rest[space + 1..length];
        let record = record.strip_suffix(b"\n").ok_or_else(bad)?;
        let equals = record.iter().position(|byte| *byte == b'=').ok_or_else(bad)?;
        let value = String::from_utf8_lossy(&record[equals + 1..]).into_owned();
        match &record[..equals] {
            b"path" => path = Some(value),
            b"linkpath" => link = Some(value),
            _ => {}
        }
        rest = &rest[length..];
    }
    Ok((path, link))
}

/// The name as a path relative to the workspace (`a/b`, `""` for the root), or `None` when it
/// is absolute or has a `..` segment.
fn confined(name: &str) -> Option<String> {
    if name.starts_with('/') || name.contains('\0') {
        return None;
    }
    let mut segments = Vec::new();
    for segment in name.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            other => segments.push(other),
        }
    }
    Some(segments.join("/"))
}

/// Whether `path`, or one of the directories above it, is a symbolic link of the archive.
fn through_link(path: &str, links: &HashSet<String>, including_itself: bool) -> bool {
    let mut at = 0;
    while let Some(slash) = path[at..].find('/') {
        if links.contains(&path[..at + slash]) {
            return true;
        }
        at += slash + 1;
    }
    including_itself && links.contains(path)
}

/// A workspace archive on local disk: a temporary file removed when this is dropped (unless it
/// was [`ArchiveFile::keep`]), so that no archive, whole or partial, is ever left behind by a
/// failed transfer.
pub struct ArchiveFile {
    path: PathBuf,
    size: u64,
    remove: bool,
}

impl fmt::Debug for ArchiveFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveFile").field("path", &self.path).field("size", &self.size).finish()
    }
}

impl ArchiveFile {
    /// A new, empty temporary file in `dir` (created if missing), open for writing.
    pub async fn create_in(dir: &Path) -> io::Result<(ArchiveFile, tokio::fs::File)> {
        tokio::fs::create_dir_all(dir).await?;
        loop {
            let path = dir.join(format!(".archive-{}.tmp", random_token()));
            match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await {
                Ok(file) => return Ok((ArchiveFile { path, size: 0, remove: true }, file)),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Takes over the temporary file at `path` (it is removed on drop).
    pub fn adopt(path: PathBuf, size: u64) -> Self {
        Self { path, size, remove: true }
    }

    /// Records how many bytes were written into the file.
    pub fn set_size(&mut self, size: u64) {
        self.size = size;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The archive's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Keeps the file on disk from now on (it was moved into place by a store).
    pub fn keep(mut self) -> PathBuf {
        self.remove = false;
        std::mem::take(&mut self.path)
    }

    /// Opens the archive for reading.
    pub async fn open(&self) -> io::Result<tokio::fs::File> {
        tokio::fs::File::open(&self.path).await
    }

    /// The whole archive in memory: for tests and small archives only.
    pub async fn read_all(&self) -> io::Result<Vec<u8>> {
        tokio::fs::read(&self.path).await
    }

    /// A temporary file in `dir` holding `bytes`.
    pub async fn from_bytes(dir: &Path, bytes: &[u8]) -> io::Result<ArchiveFile> {
        use tokio::io::AsyncWriteExt;
        let (mut archive, mut file) = Self::create_in(dir).await?;
        file.write_all(bytes).await?;
        file.flush().await?;
        archive.set_size(bytes.len() as u64);
        Ok(archive)
    }
}

impl Drop for ArchiveFile {
    fn drop(&mut self) {
        if self.remove && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes the temporary files (`.archive-*.tmp`, `.put-*`) in `dir` last modified more than
/// `age` ago: what a crashed process left behind. Younger ones may be in use by another process
/// sharing the directory.
pub fn remove_stale_temporaries(dir: &Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary =
            (name.starts_with(".archive-") && name.ends_with(".tmp")) || name.starts_with(".put-");
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|elapsed| elapsed > age);
        if temporary && stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// 64 random bits in hex, from the process's random hash keys.
pub(crate) fn random_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let now = std::time::SystemTime::now();
    format!("{:016x}", RandomState::new().hash_one(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{Entry, tar};

    fn check(bytes: &[u8]) -> Result<ArchiveSummary, InvalidArchive> {
        check_archive(&mut io::Cursor::new(bytes))
    }

    #[test]
    fn an_ordinary_archive_is_accepted() {
        let bytes = tar(&[
            Entry::dir("./"),
            Entry::dir("./src/"),
            Entry::file("./src/main.py", b"print(1)\n"),
            Entry::symlink("./venv/python", "/usr/bin/python3"),
            Entry::hardlink("./copy.py", "./src/main.py"),
        ]);
        assert_eq!(check(&bytes), Ok(ArchiveSummary { entries: 4, content_bytes: 9 }));
    }

    #[test]
    fn entries_that_would_land_outside_are_refused() {
        let cases: Vec<Vec<Entry>> = vec![
            vec![Entry::file("/etc/passwd", b"x")],
            vec![Entry::file("../x", b"x")],
            vec![Entry::file("a/../../x", b"x")],
            vec![Entry::symlink("l", "/etc"), Entry::file("l/passwd", b"x")],
            vec![Entry::symlink("l", "."), Entry::symlink("l/up", "..")],
            vec![Entry::symlink("l", "/etc/passwd"), Entry::file("l", b"x")],
            vec![Entry::hardlink("h", "/etc/passwd")],
            vec![Entry::hardlink("h", "../x")],
        ];
        for entries in cases {
            let error = check(&tar(&entries)).unwrap_err();
            assert!(error.0.contains("outside") || error.0.contains("symbolic"), "{error}");
        }
    }

    #[test]
    fn what_is_not_a_whole_tar_is_refused() {
        assert!(check(b"").unwrap_err().0.contains("empty"));
        assert!(check(&[7u8; 2048]).unwrap_err().0.contains("not a tar"));
        let whole = tar(&[Entry::file("a", &[1u8; 2000])]);
        assert!(check(&whole[..1024]).unwrap_err().0.contains("cut short"));
        let no_end = &whole[..whole.len() - 1024];
        assert!(check(no_end).unwrap_err().0.contains("end-of-archive"));
    }
}
