//! `defender incidents sync`: the incidents created or updated since the last run, each
//! as the API sent it, with a checkpoint that survives a crash.
//!
//! The order of every batch, and why it loses nothing when killed at any instant:
//!
//! ```text
//!   lock FILE.lock (flock; a second sync fails at once)
//!   read FILE (or start a new state), refuse it if corrupt or another tenant's/app's/surface's
//!   for each batch of the run (defender_core::sync: windows of lastUpdateTime):
//!       write its incidents -> flush -> fsync (a file, or standard output when it is one)
//!       write FILE.tmp -> fsync -> rename over FILE -> fsync the directory
//! ```
//!
//! A kill before the rename leaves the old checkpoint, so the batch comes again next run
//! (at-least-once, the duplicate window one batch); a kill after it loses nothing, since
//! the batch was already on disk. `--format json` to a file writes one document: a new
//! file, renamed into place whole at the end, and the state moves only then.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use defender_async::sync::{HuntState, StateError, SyncOptions, SyncState};
use defender_async::Client;
use defender_core::sync::DEFAULT_LAG;
use defender_core::Error;

use crate::output::{Format, OutputArgs};
use crate::Failure;

/// The exit code of a state file that cannot be used: locked by another sync, written
/// for another tenant, app or surface, or not a state document.
pub(crate) const STATE_UNUSABLE: u8 = 10;

/// `defender incidents sync`'s own options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SyncArgs {
    /// The state file: where the last run got to, and whose it is (tenant, app, API).
    /// Created on the first run; `FILE.lock` beside it keeps a second sync out.
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    /// Where a first run starts: a span ago (e.g. 7d) or a time (RFC 3339). Default: the
    /// 30 days the service keeps. Ignored once the state has a checkpoint.
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_since)]
    pub since: Option<SystemTime>,
    /// The settle lag: each run stops this long before its start (the server's clock),
    /// so that a change the service stamped just before is visible when listed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::parse_duration_arg)]
    pub lag: Duration,
}

/// Who runs the sync: what the state file records and is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub tenant: Option<String>,
    pub client_id: Option<String>,
}

/// Runs one sync: every batch written, flushed and fsynced before the state moves.
pub(crate) async fn run(
    client: &Client,
    out: &OutputArgs,
    args: SyncArgs,
    owner: Owner,
) -> Result<(), Failure> {
    let format = out.format(Format::Ndjson);
    if !matches!(format, Format::Ndjson | Format::Json) {
        return Err(Failure::usage(
            "incidents sync writes ndjson or json (each incident as the API sent it)",
        ));
    }
    let _lock = lock(&args.state)?;
    let mut state = load(&args.state, client, &owner)?;
    let options = SyncOptions {
        since: args.since,
        lag: args.lag,
    };
    let mut sync = client
        .incidents()
        .sync(&state, options)
        .map_err(|e| unusable(&args.state, e))?;
    let mut sink = Output::open(out, format)?;
    let (mut incidents, mut batches) = (0usize, 0usize);
    let mut pending: Option<SystemTime> = None;
    let mut failure = None;
    while let Some(batch) = sync.next_batch().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        for incident in &batch.incidents {
            let record = crate::records::as_sent(incident)?;
            let line = serde_json::to_string(&record).map_err(|e| Failure::internal(&e))?;
            sink.record(&line)?;
        }
        incidents += batch.incidents.len();
        batches += 1;
        if sink.durable_per_batch() {
            sink.flush_and_sync()?;
            state.advance(batch.checkpoint);
            save(&args.state, &state.to_json())?;
        } else {
            pending = Some(batch.checkpoint);
        }
    }
    // What was fetched is kept before any error is reported.
    sink.finish()?;
    if let Some(checkpoint) = pending {
        state.advance(checkpoint);
        save(&args.state, &state.to_json())?;
    }
    let checkpoint = state.checkpoint.as_deref().unwrap_or("none");
    tracing::info!(
        incidents,
        batches,
        checkpoint,
        "synced {incidents} incident(s) in {batches} batch(es); checkpoint {checkpoint}"
    );
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The lock file of a state file: `FILE.lock`.
fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the state file's lock (an advisory `flock` on `FILE.lock`, released when the
/// process ends however it ends), or fails at once naming it.
fn lock(state: &Path) -> Result<File, Failure> {
    let path = lock_path(state);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure {
            code: STATE_UNUSABLE,
            message: format!("could not open the lock file {}: {e}.", path.display()),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure {
            code: STATE_UNUSABLE,
            message: format!(
                "another sync is running on {} (it holds the lock {}); wait for it to finish, or give each sync its own --state.",
                state.display(),
                path.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Failure {
            code: STATE_UNUSABLE,
            message: format!("could not lock {}: {e}.", path.display()),
        }),
    }
}

/// The state in `path`, checked against this sync; a new one when there is no file.
fn load(path: &Path, client: &Client, owner: &Owner) -> Result<SyncState, Failure> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(SyncState::new(
                client.surface(),
                owner.tenant.as_deref(),
                owner.client_id.as_deref(),
            ));
        }
        Err(e) => {
            return Err(Failure {
                code: STATE_UNUSABLE,
                message: format!("could not read the state file {}: {e}.", path.display()),
            })
        }
    };
    let state = SyncState::from_json(&bytes).map_err(|e| unusable(path, Error::SyncState(e)))?;
    state
        .check(
            client.surface(),
            owner.tenant.as_deref(),
            owner.client_id.as_deref(),
        )
        .map_err(|e| unusable(path, Error::SyncState(e)))?;
    Ok(state)
}

/// A state file this sync cannot use, named, with what to do.
fn unusable(path: &Path, e: Error) -> Failure {
    let Error::SyncState(e) = e else {
        return e.into();
    };
    let remedy = match &e {
        StateError::Foreign { .. } => {
            "give each tenant, app, API (and scheduled query) its own --state file".to_owned()
        }
        _ => "move it away to start over from --since (incidents since then come again)".to_owned(),
    };
    Failure {
        code: STATE_UNUSABLE,
        message: format!(
            "the state file {} cannot be used: {e}; {remedy}.",
            path.display()
        ),
    }
}

/// Writes the state atomically: a temporary file beside it, written and fsynced, renamed
/// over it, and the directory fsynced so the rename itself survives a power cut.
fn save(path: &Path, document: &[u8]) -> Result<(), Failure> {
    let failed = |e: io::Error| Failure {
        code: 9,
        message: format!("could not save the state file {}: {e}.", path.display()),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(failed)?;
    f.write_all(document).map_err(failed)?;
    f.sync_all().map_err(failed)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(failed)?;
    sync_dir(&dir).map_err(failed)
}

/// fsyncs a directory (its entries: a rename, a new file).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where the incidents go.
enum Output {
    /// One JSON object per line, to standard output or appended to a file.
    Ndjson {
        out: io::BufWriter<File>,
        what: String,
    },
    /// One JSON array for the run. To a file: a new one, written beside it and renamed
    /// into place when the run ends.
    Json {
        out: io::BufWriter<File>,
        first: bool,
        /// The temporary file and the file it becomes; none for standard output.
        rename: Option<(PathBuf, PathBuf)>,
        what: String,
    },
}

impl Output {
    fn open(out: &OutputArgs, format: Format) -> Result<Output, Failure> {
        let create = |p: &Path, e| Failure::write(format!("could not create {}", p.display()), e);
        match (format, &out.out_file) {
            (Format::Json, Some(path)) => {
                if path.exists() {
                    return Err(Failure::usage(format!(
                        "{} exists: a json sync writes one new document per run (give a new --out-file each run, or --format ndjson, which appends)",
                        path.display()
                    )));
                }
                let mut tmp = path.as_os_str().to_owned();
                tmp.push(".partial");
                let tmp = PathBuf::from(tmp);
                let file = File::create(&tmp).map_err(|e| create(&tmp, e))?;
                let mut o = Output::Json {
                    out: io::BufWriter::new(file),
                    first: true,
                    rename: Some((tmp, path.clone())),
                    what: path.display().to_string(),
                };
                o.start()?;
                Ok(o)
            }
            (Format::Json, None) => {
                let mut o = Output::Json {
                    out: io::BufWriter::new(stdout_file().map_err(Failure::output)?),
                    first: true,
                    rename: None,
                    what: "standard output".into(),
                };
                o.start()?;
                Ok(o)
            }
            (_, Some(path)) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| create(path, e))?;
                Ok(Output::Ndjson {
                    out: io::BufWriter::new(file),
                    what: path.display().to_string(),
                })
            }
            (_, None) => Ok(Output::Ndjson {
                out: io::BufWriter::new(stdout_file().map_err(Failure::output)?),
                what: "standard output".into(),
            }),
        }
    }

    fn start(&mut self) -> Result<(), Failure> {
        if let Output::Json { out, .. } = self {
            out.write_all(b"[").map_err(Failure::output)?;
        }
        Ok(())
    }

    /// One record: a JSON object on one line.
    fn record(&mut self, line: &str) -> Result<(), Failure> {
        let r = match self {
            Output::Ndjson { out, .. } => writeln!(out, "{line}"),
            Output::Json { out, first, .. } => {
                let sep = if *first { "" } else { "," };
                *first = false;
                write!(out, "{sep}\n  {line}")
            }
        };
        r.map_err(Failure::output)
    }

    /// Whether the state may move after each batch: not for a JSON file, which exists
    /// only once the run ends.
    fn durable_per_batch(&self) -> bool {
        !matches!(
            self,
            Output::Json {
                rename: Some(_),
                ..
            }
        )
    }

    /// Flushes, then fsyncs where the output is a file (standard output too when a shell
    /// redirected it to one; a pipe or a terminal cannot be fsynced, and the reader has
    /// the data once it is flushed).
    fn flush_and_sync(&mut self) -> Result<(), Failure> {
        let (out, what) = match self {
            Output::Ndjson { out, what } | Output::Json { out, what, .. } => (out, what),
        };
        out.flush().map_err(Failure::output)?;
        match out.get_ref().sync_data() {
            Ok(()) => Ok(()),
            // EINVAL (22) / ENOTSUP: a pipe, a terminal, /dev/null.
            Err(e) if matches!(e.raw_os_error(), Some(22) | Some(95)) => Ok(()),
            Err(e) => Err(Failure::write(format!("could not fsync {what}"), e)),
        }
    }

    /// Ends the output: JSON's closing bracket, a JSON file renamed into place.
    fn finish(mut self) -> Result<(), Failure> {
        if let Output::Json { out, first, .. } = &mut self {
            let end = if *first { "]\n" } else { "\n]\n" };
            out.write_all(end.as_bytes()).map_err(Failure::output)?;
        }
        self.flush_and_sync()?;
        if let Output::Json {
            rename: Some((tmp, path)),
            ..
        } = &self
        {
            let failed = |e| Failure::write(format!("could not write {}", path.display()), e);
            std::fs::rename(tmp, path).map_err(failed)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            sync_dir(&dir).map_err(failed)?;
        }
        Ok(())
    }
}

/// Standard output as a file (a duplicate of descriptor 1), so it can be fsynced when
/// it is one.
fn stdout_file() -> io::Result<File> {
    use std::os::fd::AsFd;
    Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?))
}

/// `defender hunt QUERY --state FILE`: the query over the time since the last run, in
/// windows past the row cap, in time order; after each window its rows are written,
/// flushed and fsynced, then the state moves to the window's end. Rows come once each
/// across finished runs; a killed run repeats at most its last window.
pub(crate) async fn hunt(
    client: &Client,
    out: &OutputArgs,
    query: &str,
    args: HuntStateArgs,
    owner: Owner,
) -> Result<(), Failure> {
    let format = out.format(Format::Ndjson);
    if !matches!(format, Format::Ndjson | Format::Json) {
        return Err(Failure::usage(
            "hunt --state writes ndjson or json (each row a JSON object)",
        ));
    }
    let path = &args.state;
    let _lock = lock(path)?;
    let mut state = load_hunt(path, client, &owner, query)?;
    let options = SyncOptions {
        since: args.since,
        lag: args.lag.unwrap_or(DEFAULT_LAG),
    };
    let hunt = client.hunt_since(&state, options).map_err(|e| match e {
        Error::SyncState(_) => unusable(path, e),
        other => Failure::usage(format!("{other}.")),
    })?;
    let mut sink = Output::open(out, format)?;
    let Some(mut hunt) = hunt else {
        sink.finish()?;
        tracing::info!("no time has passed since the checkpoint; nothing to hunt yet");
        return Ok(());
    };
    if let Some(w) = hunt.warning() {
        tracing::warn!(
            "the range starts before the data window; starting at {} instead of {}",
            defender_core::timefmt::format_rfc3339(w.used),
            defender_core::timefmt::format_rfc3339(w.asked)
        );
    }
    let (mut rows, mut windows, mut truncated) = (0usize, 0usize, 0usize);
    let mut pending: Option<SystemTime> = None;
    let mut failure = None;
    while let Some(window) = hunt.next_window().await {
        let window = match window {
            Ok(w) => w,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let columns: Vec<String> = window.schema.iter().map(|c| c.name.clone()).collect();
        for row in &window.rows {
            sink.record(&crate::output::ordered(&columns, row))?;
        }
        rows += window.rows.len();
        windows += 1;
        truncated += usize::from(window.truncated);
        if sink.durable_per_batch() {
            sink.flush_and_sync()?;
            state.advance(window.end);
            save(path, &state.to_json())?;
        } else {
            pending = Some(window.end);
        }
    }
    sink.finish()?;
    if let Some(end) = pending {
        state.advance(end);
        save(path, &state.to_json())?;
    }
    let checkpoint = state.checkpoint.as_deref().unwrap_or("none");
    tracing::info!(
        rows,
        windows,
        checkpoint,
        "hunted {rows} row(s) in {windows} window(s); checkpoint {checkpoint}"
    );
    if let Some(e) = failure {
        return Err(e.into());
    }
    if truncated > 0 {
        return Err(Failure {
            code: 7,
            message: format!(
                "{truncated} window(s) still reached the row cap at the smallest span (their rows past the cap are missing); narrow the query."
            ),
        });
    }
    Ok(())
}

/// `defender hunt`'s options for a scheduled hunt.
#[derive(Debug, Clone)]
pub(crate) struct HuntStateArgs {
    pub state: PathBuf,
    pub since: Option<SystemTime>,
    pub lag: Option<Duration>,
}

/// The hunt state in `path`, checked against this hunt; a new one when there is none.
fn load_hunt(
    path: &Path,
    client: &Client,
    owner: &Owner,
    query: &str,
) -> Result<HuntState, Failure> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(HuntState::new(
                client.surface(),
                owner.tenant.as_deref(),
                owner.client_id.as_deref(),
                query,
            ));
        }
        Err(e) => {
            return Err(Failure {
                code: STATE_UNUSABLE,
                message: format!("could not read the state file {}: {e}.", path.display()),
            })
        }
    };
    let state = HuntState::from_json(&bytes).map_err(|e| unusable(path, Error::SyncState(e)))?;
    state
        .check(
            client.surface(),
            owner.tenant.as_deref(),
            owner.client_id.as_deref(),
            query,
        )
        .map_err(|e| unusable(path, Error::SyncState(e)))?;
    Ok(state)
}
