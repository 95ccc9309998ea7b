//! File operations, performed by the agent inside the sandbox (so paths mean
//! what they mean to the sandbox's programs; the host never resolves them).

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use corral_types::agent::{AgentResponse, FileInfo, SearchMatch};

/// An error answer of a given kind.
pub fn error(kind: &str, message: impl Into<String>) -> AgentResponse {
    AgentResponse::Error {
        message: message.into(),
        kind: kind.to_owned(),
    }
}

fn io_error(path: &str, failure: &io::Error) -> AgentResponse {
    let kind = match failure.kind() {
        io::ErrorKind::NotFound => "not_found",
        io::ErrorKind::AlreadyExists => "exists",
        io::ErrorKind::NotADirectory => "not_a_directory",
        // ENOSPC (bytes or inodes), EDQUOT, EFBIG: the sandbox's disk or
        // its file size limit is full.
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
            "no_space"
        }
        io::ErrorKind::IsADirectory
        | io::ErrorKind::DirectoryNotEmpty
        | io::ErrorKind::InvalidInput => "invalid",
        _ => "failed",
    };
    error(kind, format!("{path}: {failure}"))
}

fn absolute(path: &str) -> Result<&Path, AgentResponse> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(error(
            "invalid",
            format!("`{path}` is not an absolute path"),
        ));
    }
    let p = Path::new(path);
    if reaches_the_agent(p) {
        return Err(error(
            "invalid",
            format!("`{path}` is the agent's own process, which the file API does not reach"),
        ));
    }
    Ok(p)
}

/// Whether `path` names the agent's own `/proc` entries, in any spelling:
/// `/proc/self`, `/proc/thread-self`, `/proc/<the agent's pid or a thread's
/// id>`, through `..` or a symlink, or a magic link (`/proc/<pid>/fd/N`,
/// `/proc/<pid>/cwd`...) whose target cannot be named inside the sandbox.
///
/// The agent runs the file API as itself: through those entries it would
/// open its own descriptors (the host's end of its stdio, the control
/// socket), memory and environment for the caller.
fn reaches_the_agent(path: &Path) -> bool {
    // Directories resolve with `canonicalize`; the last component is
    // followed link by link, since `/proc/self/fd/1` resolves to wherever
    // the descriptor points but passes through the agent's entries.
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        let Some(name) = current.file_name().map(ToOwned::to_owned) else {
            return is_agent_proc(&current);
        };
        let directory = current.parent().unwrap_or(Path::new("/"));
        let directory = match fs::canonicalize(directory) {
            Ok(directory) => directory,
            // It exists (following links) but has no name here: a magic
            // link whose target is outside the sandbox's view.
            Err(_) if fs::metadata(directory).is_ok() => return true,
            // Not there: nothing to reach.
            Err(_) => return false,
        };
        let candidate = directory.join(name);
        if is_agent_proc(&directory) || is_agent_proc(&candidate) {
            return true;
        }
        match fs::read_link(&candidate) {
            Ok(target) => current = directory.join(target),
            Err(_) => return false,
        }
    }
    // A loop of links: nothing to open, but nothing to allow either.
    true
}

/// Whether the canonical `path` is in `/proc/self`, `/proc/thread-self` or
/// the agent's `/proc/<id>`.
fn is_agent_proc(path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix("/proc") else {
        return false;
    };
    let Some(first) = rest.components().next() else {
        return false;
    };
    let first = first.as_os_str().to_string_lossy();
    if first == "self" || first == "thread-self" {
        return true;
    }
    let Ok(id) = first.parse::<u32>() else {
        return false;
    };
    id == std::process::id() || own_thread_ids().contains(&id)
}

/// The ids of the agent's threads (each is also a `/proc/<id>`).
fn own_thread_ids() -> Vec<u32> {
    fs::read_dir("/proc/self/task")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn info(name: String, meta: &fs::Metadata) -> FileInfo {
    let kind = if meta.file_type().is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "dir"
    } else if meta.is_file() {
        "file"
    } else {
        "other"
    };
    FileInfo {
        name,
        kind: kind.to_owned(),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified: meta.mtime(),
    }
}

/// Entries of a directory, by name.
pub fn list(path: &str) -> AgentResponse {
    let dir = match absolute(path) {
        Ok(dir) => dir,
        Err(answer) => return answer,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return io_error(path, &e),
    };
    let mut out: Vec<FileInfo> = entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.path().symlink_metadata().ok()?;
            Some(info(
                entry.file_name().to_string_lossy().into_owned(),
                &meta,
            ))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    AgentResponse::Entries { entries: out }
}

/// One path, not following a final symlink.
pub fn stat(path: &str) -> AgentResponse {
    let p = match absolute(path) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    match p.symlink_metadata() {
        Ok(meta) => AgentResponse::Info(info(
            p.file_name()
                .map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned()),
            &meta,
        )),
        Err(e) => io_error(path, &e),
    }
}

/// Writes the answer line and the file's bytes to `out`.
pub fn read(path: &str, max_bytes: u64, out: &mut impl Write) -> io::Result<()> {
    let answer = match absolute(path).map(fs::File::open) {
        Err(answer) => answer,
        Ok(Err(e)) => io_error(path, &e),
        Ok(Ok(file)) => match file.metadata() {
            Err(e) => io_error(path, &e),
            Ok(meta) if !meta.is_file() => {
                error("invalid", format!("{path} is not a regular file"))
            }
            Ok(meta) if meta.len() > max_bytes => error(
                "too_large",
                format!("{path} is {} bytes; the limit is {max_bytes}", meta.len()),
            ),
            Ok(meta) => {
                super::send(out, &AgentResponse::Content { size: meta.len() })?;
                // Exactly the announced size, even if the file grows meanwhile.
                let sent = io::copy(&mut file.take(meta.len()), out)?;
                // A file that shrank meanwhile: pad, so the framing holds.
                io::copy(&mut io::repeat(0).take(meta.len() - sent), out)?;
                return Ok(());
            }
        },
    };
    super::send(out, &answer)
}

/// Replaces `path` with the next `size` bytes of `input`.
pub fn write(path: &str, size: u64, mode: Option<u32>, input: &mut impl BufRead) -> AgentResponse {
    let p = match absolute(path) {
        Ok(p) => p,
        Err(answer) => {
            // Consume the bytes anyway: the connection ends after this answer.
            let _ = io::copy(&mut input.take(size), &mut io::sink());
            return answer;
        }
    };
    // Written beside the target and renamed over it: an upload that breaks
    // off leaves the old file (or none), never half of the new one.
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = p.with_file_name(format!(".{name}.corral-upload"));
    let result = (|| -> io::Result<()> {
        let _ = fs::remove_file(&temp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        let copied = io::copy(&mut input.take(size), &mut file)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upload ended early",
            ));
        }
        file.set_permissions(fs::Permissions::from_mode(mode.unwrap_or(0o644) & 0o7777))?;
        file.sync_all()?;
        fs::rename(&temp, p)
    })();
    match result {
        Ok(()) => AgentResponse::Done,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            io_error(path, &e)
        }
    }
}

/// Creates a directory.
pub fn mkdir(path: &str, parents: bool) -> AgentResponse {
    done(
        path,
        absolute(path).map(|p| {
            if parents {
                fs::create_dir_all(p)
            } else {
                fs::create_dir(p)
            }
        }),
    )
}

/// Renames `from` to `to`.
pub fn rename(from: &str, to: &str) -> AgentResponse {
    match absolute(to) {
        Ok(target) => done(
            from,
            absolute(from).map(|source| fs::rename(source, target)),
        ),
        Err(answer) => answer,
    }
}

/// Removes a path (directories only when `recursive`).
pub fn delete(path: &str, recursive: bool) -> AgentResponse {
    done(
        path,
        absolute(path).map(|p| match p.symlink_metadata() {
            Ok(meta) if meta.is_dir() && recursive => fs::remove_dir_all(p),
            Ok(meta) if meta.is_dir() => fs::remove_dir(p),
            Ok(_) => fs::remove_file(p),
            Err(e) => Err(e),
        }),
    )
}

/// Sets permission bits.
pub fn chmod(path: &str, mode: u32) -> AgentResponse {
    done(
        path,
        absolute(path).map(|p| fs::set_permissions(p, fs::Permissions::from_mode(mode & 0o7777))),
    )
}

/// How deep a search walks.
const SEARCH_DEPTH: usize = 64;
/// How many entries a search looks at before it gives up.
const SEARCH_ENTRIES: usize = 200_000;
/// Files larger than this are not searched inside.
const SEARCH_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Longest line text a match carries.
const MATCH_TEXT: usize = 1000;
/// Largest file a replace rewrites.
const REPLACE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether `name` matches the glob `pattern` (`*` any run, `?` one character).
pub fn glob(pattern: &[char], name: &[char]) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Walks `path` without following symlinks (nor into /proc, /sys, /dev),
/// collecting names matching `pattern` and, with `contains`, the lines of
/// regular files holding it.
pub fn search(
    path: &str,
    pattern: Option<&str>,
    contains: Option<&str>,
    max_results: usize,
) -> AgentResponse {
    let root = match absolute(path) {
        Ok(root) => root,
        Err(answer) => return answer,
    };
    if let Err(e) = root.symlink_metadata() {
        return io_error(path, &e);
    }
    let pattern: Vec<char> = pattern.unwrap_or("*").chars().collect();
    let needle = contains.filter(|c| !c.is_empty()).map(str::as_bytes);
    let mut matches = Vec::new();
    let mut truncated = false;
    let mut seen = 0usize;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    'walk: while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries.iter().rev() {
            seen += 1;
            if seen > SEARCH_ENTRIES || matches.len() >= max_results {
                truncated = true;
                break 'walk;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let full = entry.path();
            let name: Vec<char> = entry.file_name().to_string_lossy().chars().collect();
            let kind = info(String::new(), &meta).kind;
            if meta.is_dir() {
                let special = ["/proc", "/sys", "/dev"]
                    .iter()
                    .any(|s| full == Path::new(s));
                if depth + 1 < SEARCH_DEPTH && !special {
                    stack.push((full.clone(), depth + 1));
                } else if !special {
                    truncated = true;
                }
            }
            if !glob(&pattern, &name) {
                continue;
            }
            let shown = full.to_string_lossy().into_owned();
            match needle {
                None => matches.push(SearchMatch {
                    path: shown,
                    kind,
                    line: None,
                    text: None,
                }),
                Some(needle) if meta.is_file() && meta.len() <= SEARCH_FILE_BYTES => {
                    let Ok(file) = fs::File::open(&full) else {
                        continue;
                    };
                    let mut reader = io::BufReader::new(file);
                    let mut line = Vec::new();
                    let mut number = 0u64;
                    while let Ok(n) = reader.read_until(b'\n', &mut line) {
                        if n == 0 {
                            break;
                        }
                        number += 1;
                        if line.windows(needle.len()).any(|w| w == needle) {
                            if matches.len() >= max_results {
                                truncated = true;
                                break 'walk;
                            }
                            let end = line.len().min(MATCH_TEXT);
                            let text = String::from_utf8_lossy(&line[..end]);
                            matches.push(SearchMatch {
                                path: shown.clone(),
                                kind: kind.clone(),
                                line: Some(number),
                                text: Some(text.trim_end_matches(['\n', '\r']).to_owned()),
                            });
                        }
                        line.clear();
                    }
                }
                Some(_) => {}
            }
        }
    }
    AgentResponse::Matches { matches, truncated }
}

/// Replaces every `find` in the regular file `path` by `replace`, keeping
/// its permission bits; written to a new file renamed over the old one, so
/// a reader never sees half of it.
pub fn replace(path: &str, find: &str, replace: &str) -> AgentResponse {
    let p = match absolute(path) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    if find.is_empty() {
        return error("invalid", "`find` is empty");
    }
    let result = (|| -> io::Result<Result<u64, AgentResponse>> {
        let meta = p.symlink_metadata()?;
        if !meta.is_file() {
            return Ok(Err(error(
                "invalid",
                format!("{path} is not a regular file"),
            )));
        }
        if meta.len() > REPLACE_FILE_BYTES {
            return Ok(Err(error(
                "too_large",
                format!(
                    "{path} is {} bytes; the limit is {REPLACE_FILE_BYTES}",
                    meta.len()
                ),
            )));
        }
        let bytes = fs::read(p)?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Ok(Err(error("invalid", format!("{path} is not UTF-8 text"))));
        };
        let count = text.matches(find).count() as u64;
        if count == 0 {
            return Ok(Ok(0));
        }
        let changed = text.replace(find, replace);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = p.with_file_name(format!(".{name}.corral-replace"));
        {
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            out.write_all(changed.as_bytes())?;
            out.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            out.sync_all()?;
        }
        if let Err(e) = fs::rename(&temp, p) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(Ok(count))
    })();
    match result {
        Ok(Ok(count)) => AgentResponse::Replaced { count },
        Ok(Err(answer)) => answer,
        Err(e) => io_error(path, &e),
    }
}

fn done(path: &str, result: Result<io::Result<()>, AgentResponse>) -> AgentResponse {
    match result {
        Ok(Ok(())) => AgentResponse::Done,
        Ok(Err(e)) => io_error(path, &e),
        Err(answer) => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    fn check(pattern: &str, name: &str, expected: bool) {
        let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
        assert_eq!(glob(&p, &n), expected, "{pattern} vs {name}");
    }

    #[test]
    fn globs_match_like_a_shell() {
        check("*", "anything", true);
        check("*.py", "main.py", true);
        check("*.py", "main.pyc", false);
        check("m?in.*", "main.rs", true);
        check("a*b*c", "aXXbYYc", true);
        check("a*b*c", "aXXbYY", false);
        check("", "", true);
        check("", "x", false);
        check("**", "", true);
        check("é*", "éte", true);
    }
}
