//! Paths inside a sandbox's workspace: the confinement rule of every file operation.
//!
//! The rule is lexical and pure, so it is checked before anything reaches a container. It
//! cannot know about symbolic links inside the sandbox; the runtime resolves those and MUST
//! refuse a path whose resolution leaves the workspace (see [`crate::FileError::OutsideWorkspace`]).

use std::fmt;

/// The directory, inside every sandbox, that holds the chat's files. Paths of file operations
/// are relative to it.
pub const WORKSPACE_DIR: &str = "/workspace";

/// A relative path inside the workspace that is lexically confined to it.
///
/// Accepted: one or more `/`-separated segments, each a plain name (`a/b.txt`, `dir/sub/file`).
/// Refused: the empty path; absolute paths (`/etc/passwd`); `.` and `..` segments (`../x`,
/// `a/../../b`, `./a`); empty segments (`a//b`, a trailing `/`); backslashes; NUL and other
/// control characters; a path over [`WorkspacePath::MAX_LEN`] bytes or a segment over
/// [`WorkspacePath::MAX_SEGMENT_LEN`] bytes (the Linux limit for a file name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspacePath(String);

impl WorkspacePath {
    /// The longest path accepted, in bytes.
    pub const MAX_LEN: usize = 1024;
    /// The longest segment (file or directory name) accepted, in bytes.
    pub const MAX_SEGMENT_LEN: usize = 255;

    /// Checks `path` against the confinement rule; the error names the path and what is wrong.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let refuse = |reason| Err(PathError { path: printable(path), reason });
        if path.is_empty() {
            return refuse(PathRule::Empty);
        }
        if path.len() > Self::MAX_LEN {
            return refuse(PathRule::TooLong);
        }
        if path.contains('\0') {
            return refuse(PathRule::Nul);
        }
        if path.chars().any(char::is_control) {
            return refuse(PathRule::ControlCharacter);
        }
        if path.contains('\\') {
            return refuse(PathRule::Backslash);
        }
        if path.starts_with('/') {
            return refuse(PathRule::Absolute);
        }
        for segment in path.split('/') {
            match segment {
                "" => return refuse(PathRule::EmptySegment),
                "." | ".." => return refuse(PathRule::DotSegment),
                _ if segment.len() > Self::MAX_SEGMENT_LEN => {
                    return refuse(PathRule::SegmentTooLong);
                }
                _ => {}
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// The path relative to the workspace, as given (`dir/file.txt`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path inside the sandbox (`/workspace/dir/file.txt`).
    pub fn absolute(&self) -> String {
        format!("{WORKSPACE_DIR}/{}", self.0)
    }
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path that [`WorkspacePath::parse`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "path `{path}` is not allowed: {reason}; give a path relative to /workspace such as `dir/file.txt`"
)]
pub struct PathError {
    /// The refused path, with control characters escaped so that it prints on one line.
    pub path: String,
    pub reason: PathRule,
}

/// Which part of the confinement rule a path broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRule {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {} bytes", WorkspacePath::MAX_LEN)]
    TooLong,
    #[error("a file or directory name is longer than {} bytes", WorkspacePath::MAX_SEGMENT_LEN)]
    SegmentTooLong,
    #[error("it contains a NUL byte")]
    Nul,
    #[error("it contains a control character")]
    ControlCharacter,
    #[error("it contains a backslash; separate directories with `/`")]
    Backslash,
    #[error("it is absolute; paths are relative to /workspace")]
    Absolute,
    #[error("it has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("`.` and `..` segments are not allowed")]
    DotSegment,
}

/// A path (in the workspace, or in an archive) as it can be shown in a message: control
/// characters escaped, length bounded.
pub(crate) fn printable(path: &str) -> String {
    const SHOWN: usize = 200;
    let mut shown: String = path.chars().take(SHOWN).flat_map(char::escape_debug).collect();
    if path.chars().count() > SHOWN {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_are_accepted() {
        for path in ["a/b.txt", "dir/sub/file", "file", ".hidden", "a..b", "with space/ü.txt"] {
            let parsed = WorkspacePath::parse(path).unwrap();
            assert_eq!(parsed.as_str(), path);
            assert_eq!(parsed.absolute(), format!("/workspace/{path}"));
        }
    }

    #[test]
    fn paths_that_could_leave_the_workspace_are_refused_with_the_rule_they_broke() {
        let long = "a".repeat(WorkspacePath::MAX_LEN + 1);
        let long_name = "a".repeat(WorkspacePath::MAX_SEGMENT_LEN + 1);
        let cases: &[(&str, PathRule)] = &[
            ("", PathRule::Empty),
            ("../x", PathRule::DotSegment),
            ("a/../../b", PathRule::DotSegment),
            ("a/..", PathRule::DotSegment),
            ("./a", PathRule::DotSegment),
            ("/etc/passwd", PathRule::Absolute),
            ("/", PathRule::Absolute),
            ("a//b", PathRule::EmptySegment),
            ("a/", PathRule::EmptySegment),
            ("a\\b", PathRule::Backslash),
            ("..\\x", PathRule::Backslash),
            ("a\0b", PathRule::Nul),
            ("a\nb", PathRule::ControlCharacter),
            (&long, PathRule::TooLong),
            (&long_name, PathRule::SegmentTooLong),
        ];
        for (path, rule) in cases {
            let error = WorkspacePath::parse(path).unwrap_err();
            assert_eq!(error.reason, *rule, "{path:?}");
        }
    }

    #[test]
    fn the_error_names_the_path_printably_and_says_what_to_do() {
        let error = WorkspacePath::parse("a\0b").unwrap_err();
        assert_eq!(
            error.to_string(),
            "path `a\\0b` is not allowed: it contains a NUL byte; give a path relative to \
             /workspace such as `dir/file.txt`"
        );
        let error = WorkspacePath::parse("../x").unwrap_err();
        assert!(error.to_string().contains("`../x`"), "{error}");
    }
}
