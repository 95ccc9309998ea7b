//! File operations, performed by the agent inside the sandbox (so paths mean
//! what they mean to the sandbox's programs; the host never resolves them).

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use corral_types::agent::{AgentResponse, FileInfo};

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
        io::ErrorKind::IsADirectory
        | io::ErrorKind::DirectoryNotEmpty
        | io::ErrorKind::InvalidInput => "invalid",
        _ => "failed",
    };
    error(kind, format!("{path}: {failure}"))
}

fn absolute(path: &str) -> Result<&Path, AgentResponse> {
    if path.starts_with('/') && !path.contains('\0') {
        Ok(Path::new(path))
    } else {
        Err(error(
            "invalid",
            format!("`{path}` is not an absolute path"),
        ))
    }
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
    let result = (|| -> io::Result<()> {
        let mut file = fs::File::create(p)?;
        let copied = io::copy(&mut input.take(size), &mut file)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upload ended early",
            ));
        }
        file.set_permissions(fs::Permissions::from_mode(mode.unwrap_or(0o644) & 0o7777))?;
        file.sync_all()
    })();
    match result {
        Ok(()) => AgentResponse::Done,
        Err(e) => io_error(path, &e),
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

fn done(path: &str, result: Result<io::Result<()>, AgentResponse>) -> AgentResponse {
    match result {
        Ok(Ok(())) => AgentResponse::Done,
        Ok(Err(e)) => io_error(path, &e),
        Err(answer) => answer,
    }
}
