//! A small tar writer and reader for workspace archives made and read in memory: test
//! archives, the fake runtime's workspaces, hand-made bad archives. Real workspaces are
//! archived and extracted by `tar` inside the sandbox.

/// One entry of an archive to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: u8,
    pub link: String,
    pub data: Vec<u8>,
}

impl Entry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self { name: name.to_owned(), kind: b'0', link: String::new(), data: data.to_vec() }
    }
    pub fn dir(name: &str) -> Self {
        Self { name: name.to_owned(), kind: b'5', link: String::new(), data: Vec::new() }
    }
    pub fn symlink(name: &str, target: &str) -> Self {
        Self { name: name.to_owned(), kind: b'2', link: target.to_owned(), data: Vec::new() }
    }
    pub fn hardlink(name: &str, target: &str) -> Self {
        Self { name: name.to_owned(), kind: b'1', link: target.to_owned(), data: Vec::new() }
    }
}

/// A ustar archive of `entries` (names up to 100 bytes), ended by two zero blocks.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = [0u8; 512];
        let name = entry.name.as_bytes();
        header[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        let mode: &[u8] = if entry.kind == b'5' { b"0000755\0" } else { b"0000644\0" };
        header[100..108].copy_from_slice(mode);
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", entry.data.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = entry.kind;
        let link = entry.link.as_bytes();
        header[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&entry.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The regular files of an archive (plain ustar or GNU headers with names up to 100 bytes and
/// `./` prefixes, as `tar` writes them for small workspaces), as `(relative path, contents)`.
/// `None` when it is not a readable tar.
pub fn files(archive: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut at = 0usize;
    while at + 512 <= archive.len() {
        let header = &archive[at..at + 512];
        if header.iter().all(|byte| *byte == 0) {
            return Some(files);
        }
        let end = header[..100].iter().position(|byte| *byte == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..end]).into_owned();
        let size_text = std::str::from_utf8(&header[124..136]).ok()?;
        let size =
            usize::from_str_radix(size_text.trim_matches(|c| c == '\0' || c == ' '), 8).ok()?;
        at += 512;
        let data = archive.get(at..at + size)?.to_vec();
        at += size.div_ceil(512) * 512;
        if matches!(header[156], b'0' | 0) {
            let name = name.trim_start_matches("./").to_owned();
            files.push((name, data));
        }
    }
    None
}
