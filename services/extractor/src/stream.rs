//! Sources that are one byte stream from a program: `postgres` (pg_dump),
//! `mariadb` (mariadb-dump) and `command` (any program's stdout). The stream
//! becomes one file entry of the manifest; database sources add the row
//! count of every table at dump time.
//!
//! Credentials come from the catalog sealed, are opened here just before the
//! program starts, and reach it only through its environment or a 0600 file
//! that is deleted when it exits: never its arguments, a message or a log.

use crate::draft::{Batches, Draft, Job, Summary, chunk_into, source_err};
use crate::extraction::{Totals, finish, on_blocking_thread};
use crate::files_cache::{self, CachedFile, Next, Previous, STREAM_ROOT, Stat};
use crate::rows::SqlRowCounter;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use vaultline_format::manifest::{Entry, EntryKind, Record, SourceDigest, TableRows};
use vaultline_runtime::{Cx, ErrorType, Outgoing, StageError};
use vaultline_types::{CommandSource, MariadbSource};

/// What to run and how to read it, once the credential is opened.
pub(crate) struct Program {
    /// The source kind, written in the manifest header.
    pub(crate) kind: &'static str,
    /// Shown in errors: the program's name and target, never a secret.
    pub(crate) shown: String,
    pub(crate) command: Command,
    /// Name of the manifest entry.
    pub(crate) entry: String,
    /// MariaDB: counts rows from the dump text itself.
    pub(crate) count_sql_rows: bool,
    /// PostgreSQL: row counts taken in the dump's own snapshot, and the
    /// transaction that keeps that snapshot alive until pg_dump is done.
    pub(crate) pg_snapshot: Option<crate::postgres::ExportedSnapshot>,
    /// PostgreSQL base backups: asks where the base sits in the WAL.
    pub(crate) base: Option<crate::basebackup::Probe>,
    /// Deleted after the program exits (a MariaDB option file).
    pub(crate) cleanup: Option<vaultline_databases::MariadbOptions>,
}

/// The source program's process group while it runs and is not yet reaped.
/// Whoever gets to it first takes it: the reader before it reaps the
/// program, or the guard of an extraction dropped halfway (a handler past its
/// time limit), which kills the whole group, so a hung `sh -c` and what it
/// started do not outlive their message.
#[derive(Clone, Default)]
struct Running(Arc<Mutex<Option<rustix::process::Pid>>>);

impl Running {
    fn take(&self) -> Option<rustix::process::Pid> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn kill(&self) {
        if let Some(group) = self.take() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

struct KillOnDrop(Running);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill();
    }
}

/// Runs the program on a blocking thread; batches flow back to be emitted here.
pub(crate) async fn extract(job: Job, program: Program, cx: &Cx) -> Result<Summary, StageError> {
    let running = Running::default();
    let _guard = KillOnDrop(running.clone());
    on_blocking_thread(cx, move |runtime, tx| {
        run(&job, program, runtime, tx, running)
    })
    .await
}

fn run(
    job: &Job,
    mut program: Program,
    runtime: &tokio::runtime::Handle,
    tx: mpsc::Sender<Outgoing>,
    running: Running,
) -> Result<Summary, StageError> {
    let mut child = program
        .command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| source_err(format!("cannot start {}: {e}", program.shown)))?;
    *running
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(rustix::process::Pid::from_child(&child));
    let stderr = child.stderr.take().expect("piped");
    let stderr_reader = std::thread::spawn(move || vaultline_databases::stderr_tail(stderr));
    let result = read_stream(job, &mut program, &mut child, runtime, tx);
    // Whatever happened to the stream, reap the program; a failure of ours
    // (staging, bus) kills it rather than leaving it dumping into a closed pipe.
    if result.is_err() {
        running.kill();
    }
    // Taken before the wait, so nothing signals a pid reaped and reused.
    running.take();
    let status = child.wait();
    let tail = stderr_reader.join().unwrap_or_default();
    drop(program.cleanup.take());
    let (mut draft, summary_parts) = result?;
    let status = status.map_err(|e| source_err(format!("waiting for {}: {e}", program.shown)))?;
    if !status.success() {
        // A source that dies mid-dump: maybe a restart or a network blip, so
        // the delivery is retried; after the last attempt the snapshot fails
        // with this message.
        let tail = tail.trim();
        return Err(StageError::transient(
            ErrorType::Source,
            if tail.is_empty() {
                format!("{} exited with {status}", program.shown)
            } else {
                format!("{} exited with {status}: {tail}", program.shown)
            },
        ));
    }
    let tables = match program.pg_snapshot.take() {
        Some(snapshot) => runtime.block_on(snapshot.finish())?,
        None => summary_parts.sql_tables,
    };
    let base = match program.base.take() {
        Some(probe) => Some(runtime.block_on(probe.finish(&tail))?),
        None => None,
    };
    let (entry, content, batches) = (
        summary_parts.entry,
        summary_parts.content,
        summary_parts.batches,
    );
    let mut cache = Next::create(
        stream_cache(job),
        &job.key_id,
        STREAM_ROOT,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    cache.add(&CachedFile {
        path: entry.path.clone(),
        stat: Stat::default(),
        content,
        chunks: entry.chunks.iter().map(|c| (c.id, c.raw_length)).collect(),
    });
    let mut digest = SourceDigest::default();
    digest.entry(&entry, content);
    let bytes_read = entry.size;
    draft.write(&Record::Entry(entry))?;
    let totals = Totals {
        entries: 1,
        files: 1,
        bytes_read,
        digest,
        tables,
    };
    let summary = finish(job, draft, batches, totals)?;
    cache.commit();
    Ok(Summary { base, ..summary })
}

struct StreamParts<'a> {
    entry: Entry,
    content: [u8; 32],
    batches: Batches<'a>,
    sql_tables: Vec<TableRows>,
}

fn read_stream<'a>(
    job: &'a Job,
    program: &mut Program,
    child: &mut Child,
    runtime: &'a tokio::runtime::Handle,
    tx: mpsc::Sender<Outgoing>,
) -> Result<(Draft, StreamParts<'a>), StageError> {
    let stdout = child.stdout.take().expect("piped");
    let draft = Draft::create(job, program.kind)?;
    let batches = Batches::new(job, runtime, tx);
    let mut entry = Entry {
        path: program.entry.as_bytes().to_vec(),
        kind: EntryKind::File,
        mode: 0o600,
        mtime: job.created,
        ..Entry::default()
    };
    confirm_last_stream(job, &batches, &entry.path)?;
    let shown = program.shown.clone();
    let what = || format!("the output of {shown}");
    let mut counted = Counted {
        inner: stdout,
        counter: program.count_sql_rows.then(SqlRowCounter::default),
    };
    let content = chunk_into(
        &mut counted,
        &mut entry,
        &batches,
        &mut vaultline_format::chunker::Chunker::default(),
        &job.chunk_key,
        None,
        &what,
    )?;
    let sql_tables = counted
        .counter
        .map(SqlRowCounter::finish)
        .unwrap_or_default();
    Ok((
        draft,
        StreamParts {
            entry,
            content,
            batches,
            sql_tables,
        },
    ))
}

fn stream_cache(job: &Job) -> std::path::PathBuf {
    files_cache::stream_cache_path(
        &job.deps.staging.cache_dir(),
        job.tenant.as_str(),
        job.source.as_str(),
    )
}

/// Chunk ids confirmed per catalog query.
const CONFIRM_CHUNKS: usize = 4096;

/// A dump mostly repeats the last one: the last stream's chunks that are
/// still stored are confirmed in a few queries before this one is read, so
/// its unchanged chunks need neither a copy nor a lookup batch each (those
/// batches block the thread that hashes the stream).
fn confirm_last_stream(job: &Job, batches: &Batches<'_>, entry: &[u8]) -> Result<(), StageError> {
    let Some(last) = Previous::open(&stream_cache(job), &job.key_id, STREAM_ROOT).find(entry)
    else {
        return Ok(());
    };
    for part in last.chunks.chunks(CONFIRM_CHUNKS) {
        batches.confirm_stored(part.iter().map(|&(id, _)| id))?;
    }
    Ok(())
}

/// A reader that shows every byte it reads to a row counter, when there is one.
struct Counted<R> {
    inner: R,
    counter: Option<SqlRowCounter>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(counter) = &mut self.counter {
            counter.feed(&buf[..n]);
        }
        Ok(n)
    }
}

/// Builds the program of a `command` source.
pub(crate) fn command_program(
    config: &CommandSource,
    credential: Option<Vec<u8>>,
) -> Result<Program, StageError> {
    let mut command = vaultline_databases::child_env::command("/bin/sh", &[]);
    command.arg("-c").arg(&config.command);
    match (&config.secret_env, credential) {
        (Some(var), Some(secret)) => {
            let secret = String::from_utf8(secret)
                .map_err(|_| source_err("the stored credential is not UTF-8 text"))?;
            command.env(var, secret);
        }
        (Some(var), None) => {
            return Err(source_err(format!(
                "the source passes a credential in ${var} but none is stored (vaultline source add --secret-file)"
            )));
        }
        (None, _) => {}
    }
    let first_word = config
        .command
        .split_whitespace()
        .next()
        .unwrap_or("command");
    Ok(Program {
        kind: "command",
        shown: format!("command {first_word:?}"),
        command,
        entry: config.name.clone().unwrap_or_else(|| "stdout".into()),
        count_sql_rows: false,
        pg_snapshot: None,
        base: None,
        cleanup: None,
    })
}

/// Builds the program of a `mariadb` source: mariadb-dump in one consistent
/// transaction, binary columns as hex so the row counter can read the text.
pub(crate) fn mariadb_program(
    config: &MariadbSource,
    credential: Option<Vec<u8>>,
) -> Result<Program, StageError> {
    let url = url::Url::parse(&config.url).map_err(|e| source_err(format!("source url: {e}")))?;
    if !matches!(url.scheme(), "mariadb" | "mysql") {
        return Err(source_err(
            "a mariadb source url starts with mariadb:// or mysql://",
        ));
    }
    if url.password().is_some() {
        return Err(source_err(
            "the source url holds a password; store it with --password-file instead",
        ));
    }
    let database = url.path().trim_start_matches('/').to_owned();
    if database.is_empty() {
        return Err(source_err("the source url names no database"));
    }
    let dump = config.dump.clone().unwrap_or_else(|| {
        if vaultline_databases::on_path("mariadb-dump") {
            "mariadb-dump".into()
        } else {
            "mysqldump".into()
        }
    });
    let password = credential
        .map(String::from_utf8)
        .transpose()
        .map_err(|_| source_err("the stored credential is not UTF-8 text"))?;
    let options = vaultline_databases::MariadbOptions::new(password.as_deref())
        .map_err(|e| StageError::transient(ErrorType::Source, format!("{e:#}")))?;
    let (connection, _) = vaultline_databases::mariadb_args(&config.url)
        .map_err(|e| source_err(format!("source url: {e:#}")))?;
    let mut command = vaultline_databases::child_env::command(&dump, &[]);
    command.arg(options.arg()).args(connection).args([
        "--single-transaction",
        "--quick",
        "--hex-blob",
        "--skip-dump-date",
        "--routines",
        "--triggers",
    ]);
    command.arg("--").arg(&database);
    Ok(Program {
        kind: "mariadb",
        shown: format!("{dump} of {database}"),
        command,
        entry: format!("{database}.sql"),
        count_sql_rows: true,
        pg_snapshot: None,
        base: None,
        cleanup: Some(options),
    })
}
