//! The rules of the routes that work inside a sandbox, as docs/api.md and docs/exec.md state
//! them: what makes an exec body acceptable, the path rule of files, what a few well-known
//! commands print, and a model of a sandbox's `/workspace` that predicts what an upload or a
//! download finds there (files, directories, and symbolic links planted before the run).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::generate::{EXEC_BODY_LIMIT, MAX_EXEC_TIMEOUT_MS, STDIN_LIMIT};

/// A refusal the API documents: status and error code.
pub(crate) type Refusal = (u16, &'static str);

/// Bounds of an exec request (docs/exec.md, "Running a command").
const MAX_ARGS: usize = 4096;
const MAX_ARGS_BYTES: usize = 256 * 1024;
const MAX_ENV_VARS: usize = 256;
const MAX_ENV_BYTES: usize = 64 * 1024;
const MAX_WORKDIR_LEN: usize = 4096;
/// Bounds of the path rule.
const MAX_PATH_LEN: usize = 1024;
const MAX_NAME_LEN: usize = 255;

const EXEC_FIELDS: [&str; 5] = ["command", "stdin", "env", "workdir", "timeout_ms"];

/// An acceptable exec body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecBody {
    pub(crate) command: Vec<String>,
    pub(crate) stdin: Option<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) timeout_ms: Option<u64>,
}

/// Judges an exec body: the request it makes, or every refusal it has earned. The API does not
/// document the order in which it checks the fields, so a body with several bad fields may be
/// answered with any of them; the size of the body and its JSON come first.
pub(crate) fn judge_exec_body(body: Option<&[u8]>) -> Result<ExecBody, Vec<Refusal>> {
    let body = body.unwrap_or_default();
    if body.len() > EXEC_BODY_LIMIT {
        return Err(vec![(413, "body_too_large")]);
    }
    let invalid_body = || vec![(400, "invalid_body")];
    if body.trim_ascii().is_empty() {
        return Err(invalid_body());
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid_body());
    };
    if fields.keys().any(|key| !EXEC_FIELDS.contains(&key.as_str())) {
        return Err(invalid_body());
    }
    let mut refusals = Vec::new();

    let command = match fields.get("command") {
        Some(Value::Array(items)) => {
            items.iter().map(|item| item.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
        }
        _ => None,
    };
    if !command.as_deref().is_some_and(command_fine) {
        refusals.push((400, "invalid_command"));
    }
    let stdin = match fields.get("stdin") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => {
            if text.len() > STDIN_LIMIT {
                refusals.push((413, "stdin_too_large"));
            }
            Some(Some(text.clone()))
        }
        Some(_) => {
            refusals.push((400, "invalid_stdin"));
            None
        }
    };
    let env = match fields.get("env") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(variables)) => variables
            .iter()
            .map(|(name, value)| value.as_str().map(|value| (name.clone(), value.to_owned())))
            .collect::<Option<Vec<_>>>(),
        Some(_) => None,
    };
    if !env.as_deref().is_some_and(env_fine) {
        refusals.push((400, "invalid_env"));
    }
    let workdir = match fields.get("workdir") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(text.clone())),
        Some(_) => None,
    };
    if !workdir.as_ref().is_some_and(|workdir| workdir.as_deref().is_none_or(workdir_fine)) {
        refusals.push((400, "invalid_workdir"));
    }
    let timeout_ms = match fields.get("timeout_ms") {
        None | Some(Value::Null) => Some(None),
        Some(value) => super::rules::whole_number(value)
            .filter(|ms| (1..=MAX_EXEC_TIMEOUT_MS).contains(ms))
            .map(Some),
    };
    if timeout_ms.is_none() {
        refusals.push((400, "invalid_timeout"));
    }

    match (command, stdin, env, workdir, timeout_ms) {
        (Some(command), Some(stdin), Some(env), Some(workdir), Some(timeout_ms))
            if refusals.is_empty() =>
        {
            Ok(ExecBody { command, stdin, env, workdir, timeout_ms })
        }
        _ => Err(refusals),
    }
}

fn command_fine(command: &[String]) -> bool {
    command.first().is_some_and(|program| !program.is_empty() && !program.starts_with('-'))
        && command.len() <= MAX_ARGS
        && command.iter().map(String::len).sum::<usize>() <= MAX_ARGS_BYTES
        && !command.iter().any(|arg| arg.contains('\0'))
}

fn env_fine(env: &[(String, String)]) -> bool {
    let name_fine = |name: &str| {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    env.len() <= MAX_ENV_VARS
        && env.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>() <= MAX_ENV_BYTES
        && env.iter().all(|(name, value)| name_fine(name) && !value.contains('\0'))
}

fn workdir_fine(workdir: &str) -> bool {
    workdir.len() <= MAX_WORKDIR_LEN
        && !workdir.chars().any(char::is_control)
        && (workdir.starts_with('/') || path_allowed(workdir))
}

/// The path rule of files (and of a relative workdir): one or more `/`-separated names, none
/// empty, `.` or `..`; no backslash, no control character; at most 1024 bytes, names at most
/// 255.
pub(crate) fn path_allowed(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && !path.chars().any(char::is_control)
        && !path.contains('\\')
        && !path.starts_with('/')
        && path.split('/').all(|name| {
            !name.is_empty() && name != "." && name != ".." && name.len() <= MAX_NAME_LEN
        })
}

/// How a command is expected to end. `stderr: None` when its text is not predicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) exit_code: Option<i64>,
    pub(crate) stdout: String,
    pub(crate) stderr: Option<String>,
    pub(crate) timed_out: bool,
}

/// The program that exists nowhere, for an exit code 127.
pub(crate) const NO_SUCH_PROGRAM: &str = "no-such-program-zz";
/// A script that prints on both streams.
pub(crate) const BOTH_STREAMS: &str = "echo out; echo err >&2; exit 3";
/// A script that prints the variable the generator sets.
pub(crate) const PRINT_VARIABLE: &str = "echo \"$FUZZ_V\"";
/// Environment variables whose effect the prediction knows (none on these commands).
pub(crate) const ENV_PREFIX: &str = "FUZZ_";

/// What `exec` does in a sandbox whose workspace is `workspace`, for the commands whose answer
/// is certain; `None` for any other (the answer is then only checked for its shape).
pub(crate) fn predict(exec: &ExecBody, workspace: &Workspace) -> Option<Run> {
    if exec.env.iter().any(|(name, _)| !name.starts_with(ENV_PREFIX)) {
        return None;
    }
    let finished = |exit_code: i64, stdout: String, stderr: &str| Run {
        exit_code: Some(exit_code),
        stdout,
        stderr: Some(stderr.to_owned()),
        timed_out: false,
    };
    // `Err`: the directory does not exist, so the command does not start (exit code 126).
    let directory = match exec.workdir.as_deref() {
        None => Ok("/workspace".to_owned()),
        Some(absolute @ ("/" | "/tmp" | "/workspace" | "/etc")) => Ok(absolute.to_owned()),
        Some("/nonexistent-zz" | "/etc/passwd") => Err(()),
        Some(absolute) if absolute.starts_with('/') => return None,
        Some(relative) => match workspace.is_directory(relative)? {
            true => Ok(format!("/workspace/{relative}")),
            false => Err(()),
        },
    };
    let command: Vec<&str> = exec.command.iter().map(String::as_str).collect();
    if exec.timeout_ms.is_some_and(|ms| ms < 5000) {
        // A short timeout may cut any command short on a loaded machine, but not `sleep 5`
        // short of its end.
        let sleeps = command == ["sleep", "5"] && directory.is_ok();
        return (sleeps && exec.timeout_ms.is_some_and(|ms| ms <= 3000)).then(|| Run {
            exit_code: None,
            stdout: String::new(),
            stderr: None,
            timed_out: true,
        });
    }
    let Ok(directory) = directory else {
        return Some(Run {
            exit_code: Some(126),
            stdout: String::new(),
            stderr: None,
            timed_out: false,
        });
    };
    let plain = |text: &str| !text.starts_with('-') && !text.contains('\\');
    let run = match command.as_slice() {
        ["true", ..] => finished(0, String::new(), ""),
        ["false", ..] => finished(1, String::new(), ""),
        ["echo", words @ ..] if words.iter().all(|word| plain(word)) => {
            finished(0, format!("{}\n", words.join(" ")), "")
        }
        ["sh", "-c", script] if *script == BOTH_STREAMS => finished(3, "out\n".into(), "err\n"),
        ["sh", "-c", script] if *script == PRINT_VARIABLE => {
            let value = exec.env.iter().rev().find(|(name, _)| name == "FUZZ_V");
            let value = value.map(|(_, value)| value.as_str()).unwrap_or_default();
            if !plain(value) {
                return None;
            }
            finished(0, format!("{value}\n"), "")
        }
        ["sh", "-c", script] => {
            let code: u8 = script.strip_prefix("exit ")?.parse().ok()?;
            finished(i64::from(code), String::new(), "")
        }
        ["cat"] => finished(0, exec.stdin.clone().unwrap_or_default(), ""),
        ["pwd"] => finished(0, format!("{directory}\n"), ""),
        [program, ..] if *program == NO_SUCH_PROGRAM => {
            Run { exit_code: Some(127), stdout: String::new(), stderr: None, timed_out: false }
        }
        _ => return None,
    };
    Some(run)
}

/// What is in a sandbox's `/workspace`: regular files with their bytes, directories, and
/// symbolic links at the top (to a directory inside, or out of the workspace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Workspace {
    files: BTreeMap<String, Vec<u8>>,
    directories: BTreeSet<String>,
    /// Name -> the directory it leads to, or `None` when it leads out of `/workspace`.
    links: BTreeMap<String, Option<String>>,
}

/// Plants what [`Workspace::planted`] describes, run in `/workspace` before the requests.
pub(crate) const PLANT_SCRIPT: &str = "ln -s /etc/passwd escape && ln -s /tmp tmplink && \
     mkdir seed && printf 'hello\\n' > seed/hello.txt && ln -s seed inside";

impl Workspace {
    /// The workspace after [`PLANT_SCRIPT`]: links out (`escape`, `tmplink`), a link inside
    /// (`inside` -> `seed`), and one file.
    pub(crate) fn planted() -> Self {
        let mut workspace = Self::default();
        workspace.links.insert("escape".into(), None);
        workspace.links.insert("tmplink".into(), None);
        workspace.links.insert("inside".into(), Some("seed".into()));
        workspace.write("seed/hello.txt".into(), b"hello\n".to_vec());
        workspace
    }

    /// The path with a link at its start followed; `None` when that leads out.
    fn resolve(&self, path: &str) -> Option<String> {
        let (first, rest) = match path.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (path, None),
        };
        match (self.links.get(first), rest) {
            (None, _) => Some(path.to_owned()),
            (Some(None), _) => None,
            (Some(Some(target)), Some(rest)) => Some(format!("{target}/{rest}")),
            (Some(Some(target)), None) => Some(target.clone()),
        }
    }

    /// The directories a path needs: every proper prefix.
    fn parents(path: &str) -> impl Iterator<Item = &str> {
        path.match_indices('/').map(move |(at, _)| &path[..at])
    }

    /// Where an upload of `path` (which passed the path rule) writes, or why it is refused.
    pub(crate) fn upload(&self, path: &str) -> Result<String, Refusal> {
        let resolved = self.resolve(path).ok_or((400, "outside_workspace"))?;
        if Self::parents(&resolved).any(|parent| self.files.contains_key(parent)) {
            return Err((409, "parent_not_a_directory"));
        }
        if self.directories.contains(&resolved) {
            return Err((409, "not_a_regular_file"));
        }
        Ok(resolved)
    }

    /// Records a successful upload to `resolved`.
    pub(crate) fn write(&mut self, resolved: String, bytes: Vec<u8>) {
        for parent in Self::parents(&resolved) {
            self.directories.insert(parent.to_owned());
        }
        self.files.insert(resolved, bytes);
    }

    /// What a download of `path` (which passed the path rule) answers.
    pub(crate) fn download(&self, path: &str) -> Result<&[u8], Refusal> {
        let resolved = self.resolve(path).ok_or((400, "outside_workspace"))?;
        if let Some(bytes) = self.files.get(&resolved) {
            return Ok(bytes);
        }
        if self.directories.contains(&resolved) {
            return Err((409, "not_a_regular_file"));
        }
        Err((404, "file_not_found"))
    }

    /// Whether a relative directory exists; `None` through a link (what `pwd` prints is then
    /// not predicted).
    fn is_directory(&self, path: &str) -> Option<bool> {
        let first = path.split('/').next().unwrap_or_default();
        if self.links.contains_key(first) {
            return None;
        }
        Some(self.directories.contains(path))
    }

    /// Every entry as `find /workspace -mindepth 1` lists it (links are not followed), sorted.
    pub(crate) fn listing(&self) -> Vec<String> {
        let mut entries: Vec<String> = self
            .files
            .keys()
            .chain(&self.directories)
            .chain(self.links.keys())
            .map(|entry| format!("/workspace/{entry}"))
            .collect();
        entries.sort();
        entries
    }

    pub(crate) fn files(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.files.iter()
    }
}

#[test]
fn the_oracle_judges_exec_bodies_paths_and_workspaces_as_the_api_documents() {
    let judge = |body: &str| judge_exec_body(Some(body.as_bytes()));
    let exec = judge(
        r#"{"command": ["cat"], "stdin": "in", "env": {"FUZZ_V": "1"}, "workdir": "seed",
            "timeout_ms": 5000, "env": {"FUZZ_V": "2"}}"#,
    )
    .unwrap();
    assert_eq!(exec.command, ["cat"]);
    assert_eq!(exec.stdin.as_deref(), Some("in"));
    assert_eq!(exec.env, [("FUZZ_V".to_owned(), "2".to_owned())]);
    assert_eq!((exec.workdir.as_deref(), exec.timeout_ms), (Some("seed"), Some(5000)));
    let body = (400, "invalid_body");
    let command = (400, "invalid_command");
    for (text, refusals) in [
        ("", vec![body]),
        ("[]", vec![body]),
        (r#"{"cmd": ["true"]}"#, vec![body]),
        (r#"{"command": ["\ud800"]}"#, vec![body]),
        ("{}", vec![command]),
        (r#"{"command": []}"#, vec![command]),
        (r#"{"command": ["", "x"]}"#, vec![command]),
        (r#"{"command": ["echo", "a\u0000"]}"#, vec![command]),
        (r#"{"command": ["true"], "stdin": 5}"#, vec![(400, "invalid_stdin")]),
        (r#"{"command": ["true"], "env": {"1A": "x"}}"#, vec![(400, "invalid_env")]),
        (r#"{"command": ["true"], "env": {"A": 1}}"#, vec![(400, "invalid_env")]),
        (r#"{"command": ["true"], "workdir": "../x"}"#, vec![(400, "invalid_workdir")]),
        (r#"{"command": ["true"], "workdir": ""}"#, vec![(400, "invalid_workdir")]),
        (r#"{"command": ["true"], "timeout_ms": 60001}"#, vec![(400, "invalid_timeout")]),
        (r#"{"command": ["true"], "timeout_ms": 1.5}"#, vec![(400, "invalid_timeout")]),
        (r#"{"command": ["true"], "timeout_ms": 6.0001e4}"#, vec![(400, "invalid_timeout")]),
        (r#"{"command": "ls", "timeout_ms": 0}"#, vec![command, (400, "invalid_timeout")]),
    ] {
        assert_eq!(judge(text).unwrap_err(), refusals, "{text}");
    }
    let stdin = format!(r#"{{"command": ["cat"], "stdin": "{}"}}"#, "x".repeat(STDIN_LIMIT + 1));
    assert_eq!(judge(&stdin).unwrap_err(), [(413, "stdin_too_large")]);
    let huge = format!(r#"{{"command": ["true"]}}{}"#, " ".repeat(EXEC_BODY_LIMIT));
    assert_eq!(judge(&huge).unwrap_err(), [(413, "body_too_large")]);
    assert!(judge(&huge[..EXEC_BODY_LIMIT]).is_ok());
    assert!(judge(r#"{"command": ["true"], "workdir": "/../tmp", "timeout_ms": 60000}"#).is_ok());
    let args = |count: usize| serde_json::json!({"command": vec!["x"; count]}).to_string();
    assert!(judge(&args(4096)).is_ok());
    assert_eq!(judge(&args(4097)).unwrap_err(), [command]);

    let long_name = "n".repeat(255);
    let name = "m".repeat(204);
    let long_path = [name.as_str(); 5].join("/");
    assert_eq!(long_path.len(), 1024);
    for fine in ["a", "a/b.txt", ".hidden", "a..b", "...", "%", "\u{202e}x", &long_name] {
        assert!(path_allowed(fine), "{fine}");
    }
    assert!(path_allowed(&long_path));
    for bad in ["", "/a", "a/", "a//b", "..", "a/./b", "a\\b", "a\u{0}", "a\u{85}", "a\tb"] {
        assert!(!path_allowed(bad), "{bad:?}");
    }
    assert!(!path_allowed(&format!("{long_name}n")));
    assert!(!path_allowed(&format!("m{long_path}")));
    for bytes in [1022, 1024, 1025, 4000] {
        let path = super::generate::long_path(bytes);
        assert_eq!(path.len(), bytes);
        assert!(path.split('/').all(|name| (1..=255).contains(&name.len())), "{path}");
        assert_eq!(path_allowed(&path), bytes <= 1024);
    }

    let mut workspace = Workspace::planted();
    for path in ["escape", "escape/x", "tmplink/x/y"] {
        assert_eq!(workspace.upload(path), Err((400, "outside_workspace")), "{path}");
        assert_eq!(workspace.download(path), Err((400, "outside_workspace")), "{path}");
    }
    assert_eq!(workspace.upload("inside"), Err((409, "not_a_regular_file")));
    assert_eq!(workspace.download("seed"), Err((409, "not_a_regular_file")));
    assert_eq!(workspace.download("inside/hello.txt"), Ok(&b"hello\n"[..]));
    assert_eq!(workspace.upload("seed/hello.txt/x"), Err((409, "parent_not_a_directory")));
    assert_eq!(workspace.download("seed/hello.txt/x"), Err((404, "file_not_found")));
    assert_eq!(workspace.upload("inside/new/file"), Ok("seed/new/file".to_owned()));
    workspace.write("seed/new/file".into(), b"1".to_vec());
    assert_eq!(workspace.download("inside/new"), Err((409, "not_a_regular_file")));
    assert_eq!(
        workspace.listing(),
        [
            "/workspace/escape",
            "/workspace/inside",
            "/workspace/seed",
            "/workspace/seed/hello.txt",
            "/workspace/seed/new",
            "/workspace/seed/new/file",
            "/workspace/tmplink",
        ]
    );

    let predict = |text: &str| predict(&judge(text).unwrap(), &workspace);
    let printed = |stdout: &str| Run {
        exit_code: Some(0),
        stdout: stdout.into(),
        stderr: Some(String::new()),
        timed_out: false,
    };
    assert_eq!(predict(r#"{"command": ["echo", "a", "", "b"]}"#), Some(printed("a  b\n")));
    assert_eq!(
        predict(r#"{"command": ["pwd"], "workdir": "seed/new"}"#),
        Some(printed("/workspace/seed/new\n"))
    );
    assert_eq!(predict(r#"{"command": ["pwd"], "workdir": "inside"}"#), None);
    assert_eq!(predict(r#"{"command": ["true"], "env": {"PATH": "/x"}}"#), None);
    assert_eq!(predict(r#"{"command": ["true"], "timeout_ms": 10}"#), None);
    let missing = predict(r#"{"command": ["true"], "workdir": "seed/hello.txt"}"#).unwrap();
    assert_eq!((missing.exit_code, missing.timed_out), (Some(126), false));
    let slept = predict(r#"{"command": ["sleep", "5"], "timeout_ms": 200}"#).unwrap();
    assert_eq!((slept.exit_code, slept.timed_out), (None, true));
}
