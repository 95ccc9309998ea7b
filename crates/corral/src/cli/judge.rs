//! `corral judge FILE` and `corral library …`: the judge (executions) and
//! the code library from the command line. The language is the server's
//! own list (`GET /api/v1/languages`), matched by the file's extension, so
//! this file holds no language table of its own.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use corral_client::types::executions::{
    CreateExecutionRequest, ExecutionLimits, ExecutionResponse, RunSnippetRequest,
};
use corral_client::types::library::CreateSnippetRequest;
use corral_client::{Client, LibraryFilter};

use super::output;
use super::{Failure, GlobalArgs, Outcome, connect, print_json};

/// Exit code of a run whose verdict is not `ok` (the verdict is printed).
const NOT_OK: u8 = 3;

/// Limits of one run, as flags.
#[derive(Debug, Clone, Default, clap::Args)]
struct LimitArgs {
    /// CPU time limit, ms [default: the language's].
    #[arg(long, value_name = "MS")]
    time_limit: Option<u64>,
    /// Memory limit, MiB [default: the language's].
    #[arg(long, value_name = "MB")]
    memory: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> ExecutionLimits {
        ExecutionLimits {
            time_ms: self.time_limit,
            memory_mb: self.memory,
            ..ExecutionLimits::default()
        }
    }
}

/// `corral judge`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    corral judge hello.py\n  \
    echo abc | corral judge reverse.py --expected expected.txt\n  \
    corral judge main.c --stdin input.txt --time-limit 1000\n\n\
    Exit code: 0 when the verdict is ok, 3 for any other verdict (printed on stderr), \
    1 for an API or network error, 2 for a usage error.")]
pub struct JudgeArgs {
    #[command(flatten)]
    global: GlobalArgs,
    /// The program file.
    file: PathBuf,
    /// Language [default: the one whose source file has this file's extension].
    #[arg(long, short = 'l', value_name = "LANG")]
    language: Option<String>,
    /// Standard input from this file (`-`: this command's stdin) [default: stdin when piped].
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,
    /// Expected output: a different output is `wrong_answer`.
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// `corral library`.
#[derive(Debug, clap::Args)]
pub struct LibraryArgs {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: LibraryCommand,
}

#[derive(Debug, Subcommand)]
enum LibraryCommand {
    /// Save a program file as a snippet; prints its id.
    #[command(after_help = "Example:\n  corral library add fib.py --title 'Fibonacci' --tag math")]
    Add {
        /// The program file.
        file: PathBuf,
        /// Title [default: the file name].
        #[arg(long)]
        title: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Language [default: by the file's extension].
        #[arg(long, short = 'l', value_name = "LANG")]
        language: Option<String>,
        /// A tag (repeatable).
        #[arg(long)]
        tag: Vec<String>,
        /// Readable by every signed-in user.
        #[arg(long)]
        public: bool,
    },
    /// List snippets you can read (all pages).
    #[command(visible_alias = "list")]
    Ls {
        /// Text in the title, description or code.
        #[arg(long, short = 'q')]
        query: Option<String>,
        /// Only snippets with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only snippets in this language.
        #[arg(long)]
        language: Option<String>,
        /// Only your own.
        #[arg(long)]
        mine: bool,
    },
    /// Print a snippet's code (`--json`: the whole snippet).
    Get {
        /// Snippet id.
        id: String,
    },
    /// Run a snippet in the judge; exits as `corral judge` does.
    Run {
        /// Snippet id.
        id: String,
        /// Standard input from this file (`-`: stdin) [default: stdin when piped].
        #[arg(long, value_name = "FILE")]
        stdin: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Delete snippets.
    #[command(visible_alias = "delete")]
    Rm {
        /// Snippet ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `corral judge FILE`.
pub async fn judge(args: JudgeArgs) -> Outcome {
    let client = connect(&args.global)?;
    let code = read_text(&args.file)?;
    let language = language_for(&client, &args.file, args.language).await?;
    let request = CreateExecutionRequest {
        language,
        code,
        stdin: stdin_text(args.stdin.as_deref())?,
        expected_output: args.expected.as_deref().map(read_text).transpose()?,
        limits: args.limits.limits(),
        wait: true,
        ..CreateExecutionRequest::default()
    };
    let run = client.create_execution(&request).await?;
    verdict(&args.global, &run)
}

/// `corral library …`.
pub async fn library(args: LibraryArgs) -> Outcome {
    let client = connect(&args.global)?;
    let global = &args.global;
    match args.command {
        LibraryCommand::Add {
            file,
            title,
            description,
            language,
            tag,
            public,
        } => {
            let code = read_text(&file)?;
            let language = language_for(&client, &file, language).await?;
            let title = title.unwrap_or_else(|| {
                file.file_name().map_or_else(
                    || "snippet".to_owned(),
                    |n| n.to_string_lossy().into_owned(),
                )
            });
            let snippet = client
                .create_snippet(&CreateSnippetRequest {
                    title,
                    description,
                    language,
                    code,
                    tags: tag,
                    is_public: public,
                })
                .await?;
            if global.json {
                print_json(&snippet)?;
            } else {
                println!("{}", snippet.id);
            }
        }
        LibraryCommand::Ls {
            query,
            tag,
            language,
            mine,
        } => {
            let filter = LibraryFilter {
                q: query,
                tag,
                language,
                mine,
            };
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client.list_snippets(&filter, cursor.as_deref()).await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if global.json {
                print_json(&items)?;
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.title.clone(),
                            s.language.clone(),
                            s.tags.join(","),
                            if s.is_public { "public" } else { "private" }.to_owned(),
                            s.updated_at.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(
                        ["ID", "TITLE", "LANGUAGE", "TAGS", "VISIBILITY", "UPDATED"],
                        &rows
                    )
                );
            }
        }
        LibraryCommand::Get { id } => {
            let snippet = client.snippet(&id).await?;
            if global.json {
                print_json(&snippet)?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(snippet.code.as_bytes())?;
                if !snippet.code.ends_with('\n') {
                    out.write_all(b"\n")?;
                }
            }
        }
        LibraryCommand::Run { id, stdin, limits } => {
            let request = RunSnippetRequest {
                stdin: stdin_text(stdin.as_deref())?,
                wait: true,
                limits: limits.limits(),
            };
            let run = client.run_snippet(&id, &request).await?;
            return verdict(global, &run);
        }
        LibraryCommand::Rm { ids } => {
            for id in ids {
                client.delete_snippet(&id).await?;
                if !global.json {
                    println!("{id}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The language `explicit` names, else the server's language whose source
/// file has `file`'s extension.
async fn language_for(
    client: &Client,
    file: &Path,
    explicit: Option<String>,
) -> Result<String, Failure> {
    if let Some(language) = explicit {
        return Ok(language);
    }
    let extension = file
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "{} has no extension: name its language with --language",
                file.display()
            ))
        })?;
    let languages = client.languages().await?;
    languages
        .iter()
        .find(|l| {
            Path::new(&l.source_file)
                .extension()
                .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(&extension))
        })
        .map(|l| l.name.clone())
        .ok_or_else(|| {
            let names: Vec<&str> = languages.iter().map(|l| l.name.as_str()).collect();
            Failure::Usage(format!(
                "no language of this server takes `.{extension}` files: pass --language, one of {}",
                names.join(", ")
            ))
        })
}

/// A program file's text.
fn read_text(path: &Path) -> Result<String, Failure> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::Usage(format!("{} is not UTF-8 text", path.display())))
}

/// Standard input for the run: the named file, `-` or a piped stdin (read
/// whole: the judge takes the input with the program, at most 1 MiB), none
/// from a terminal.
fn stdin_text(from: Option<&Path>) -> Result<Option<String>, Failure> {
    match from {
        Some(path) if path != Path::new("-") => read_text(path).map(Some),
        explicit => {
            let mut stdin = std::io::stdin();
            if explicit.is_none() && stdin.is_terminal() {
                return Ok(None);
            }
            let mut bytes = Vec::new();
            stdin
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Failure::Usage("standard input is not UTF-8 text".into()))
        }
    }
}

/// Prints a finished run (its output on stdout and stderr, the verdict on
/// stderr) and gives the exit code: 0 for `ok`, [`NOT_OK`] otherwise.
fn verdict(global: &GlobalArgs, run: &ExecutionResponse) -> Outcome {
    if global.json {
        print_json(run)?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(run.stdout.as_bytes())?;
        out.flush()?;
        let mut err = std::io::stderr().lock();
        err.write_all(run.compile_output.as_bytes())?;
        err.write_all(run.stderr.as_bytes())?;
        let mut line = format!("corral: {}", run.status);
        if let Some(ms) = run.time_ms {
            line.push_str(&format!(" · {ms} ms CPU"));
        }
        if let Some(kb) = run.memory_kb {
            line.push_str(&format!(" · {} KiB", kb));
        }
        if let Some(error) = &run.error {
            line.push_str(&format!(" · {error}"));
        }
        writeln!(err, "{line}")?;
    }
    Ok(if run.status == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NOT_OK)
    })
}
