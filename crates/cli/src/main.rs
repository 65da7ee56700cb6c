//! `defender`: advanced hunting, incidents and alerts on the Microsoft Defender APIs, without
//! 429s. See `defender --help`.

#![forbid(unsafe_code)]

mod alerts;
mod auth;
mod limits;
mod log;
mod output;
mod params;
mod records;
mod sync;
mod values;
mod watch;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use defender_async::{Client, Progress, StreamItem};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::{
    max_top, Classification, IncidentFilter, IncidentQuery, IncidentStatus, IncidentUpdate,
};
use defender_core::limits::{format_duration, parse_duration, Limits};
use defender_core::range::Split;
use defender_core::settings::BuildError;
use defender_core::timefmt::{format_rfc3339, parse_rfc3339};
use defender_core::{Cloud, Error, Surface};
use defender_emulator::{EmulatorArgs, EmulatorHandle};
use defender_policy::StandardPolicy;
use defender_redis::{AsyncRedisQuotaStore, OnRedisError, StoreConfig};
use futures_util::StreamExt;

use output::{Format, OutputArgs};
use records::RecordColumns;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  2  usage error
  3  authentication or permission error
  4  throttled beyond --max-wait (the message gives the time to retry)
  5  the API rejected the request (the server's message is shown)
  6  network or server failure after retries
  7  a result was truncated at the row cap and --split none was given
  8  an update (of an incident or an alert) may or may not have been applied (the
     answer was lost and reading it back failed): read it before sending it again
  9  could not write the output (the file cannot be created, the disk is full)
  10 incidents sync: the state file cannot be used (another sync holds its lock; it
     belongs to another tenant, app or API; it is not a state document)

A reader that stops early (`| head`) ends the command quietly, with exit code 0.

Credentials: --tenant (AZURE_TENANT_ID), --client-id (AZURE_CLIENT_ID), and the secret
only from AZURE_CLIENT_SECRET or --client-secret-file. With --emulator none are needed.";

// The help headings of the global options.
const API: &str = "API";
const AUTH: &str = "Authentication";
const QUOTA: &str = "Quota";
const LOGGING: &str = "Logging";

/// Advanced hunting and incidents on the Microsoft Defender APIs, quota-exact.
#[derive(Debug, Parser)]
#[command(name = "defender", version, after_help = AFTER_HELP)]
struct Cli {
    /// Which API: Defender XDR, Defender for Endpoint or Microsoft Graph.
    #[arg(long, global = true, default_value = "xdr", ignore_case = true, value_parser = values::api(), help_heading = API)]
    api: Surface,
    /// The cloud.
    #[arg(long, global = true, default_value = "global", ignore_case = true, value_parser = values::cloud(), help_heading = API)]
    cloud: Cloud,
    /// Send API calls to this base URL instead (a proxy, an emulator).
    #[arg(long, global = true, help_heading = API)]
    base_url: Option<String>,
    /// Start an emulator in-process and run against it: no tenant, secret or network.
    #[arg(long, global = true, help_heading = API)]
    emulator: bool,
    /// The tenant id or domain.
    #[arg(long, global = true, env = "AZURE_TENANT_ID", help_heading = AUTH)]
    tenant: Option<String>,
    /// The app registration's client id.
    #[arg(long, global = true, env = "AZURE_CLIENT_ID", help_heading = AUTH)]
    client_id: Option<String>,
    /// A file holding the client secret (else AZURE_CLIENT_SECRET; never a plain flag).
    #[arg(long, global = true, help_heading = AUTH)]
    client_secret_file: Option<PathBuf>,
    /// Send token requests to this base URL instead.
    #[arg(long, global = true, help_heading = AUTH)]
    login_url: Option<String>,
    /// Where tokens come from: auto tries, as DefaultAzureCredential does, the
    /// environment's secret, its certificate, workload identity, managed identity, then
    /// the Azure CLI.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "secret", "certificate", "workload-identity", "managed-identity", "azure-cli"], help_heading = AUTH)]
    auth: String,
    /// A PEM file holding the app's certificate and private key (RSA).
    #[arg(long, global = true, env = "AZURE_CLIENT_CERTIFICATE_PATH", value_name = "PATH", help_heading = AUTH)]
    client_certificate: Option<PathBuf>,
    /// Trust this root certificate (PEM) too: an emulator's (--tls-cert-out), a proxy's.
    #[arg(long, global = true, env = "SSL_CERT_FILE", value_name = "PATH", help_heading = AUTH)]
    ca_cert: Option<PathBuf>,
    /// The limits: a preset (2021, xdr, mde, graph) and overrides, such as
    /// `xdr,hunting.calls=45/1m`. Default: the API's preset.
    #[arg(long, global = true, value_parser = parse_limits, help_heading = QUOTA)]
    limits: Option<Limits>,
    /// How long to wait for quota before giving up (e.g. 30s, 10m).
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration_arg, help_heading = QUOTA)]
    max_wait: Duration,
    /// Share the quota with every other process of the same app through this Redis
    /// (redis://[user:password@]host:port[/db]; TLS: rediss://, e.g. Azure Cache for Redis
    /// rediss://NAME.redis.cache.windows.net:6380; a cluster:
    /// redis+cluster://host:port,host:port or rediss+cluster://): calls, running time and
    /// the server's retry times are counted once for all of them. The password or access
    /// key may come from DEFENDER_QUOTA_STORE_PASSWORD instead of the URL.
    #[arg(long, global = true, env = "DEFENDER_QUOTA_STORE", hide_env_values = true, value_name = "URL", help_heading = QUOTA)]
    quota_store: Option<String>,
    /// With a rediss:// quota store: a PEM file of CA certificates trusted besides the
    /// system's (a server whose certificate a private CA signed).
    #[arg(long, global = true, env = "DEFENDER_QUOTA_STORE_CA", value_name = "PATH", help_heading = QUOTA)]
    quota_store_ca: Option<std::path::PathBuf>,
    /// When the quota store cannot be reached: fail the call (exit 6), or fall back to this
    /// process's own quota with a warning.
    #[arg(
        long,
        global = true,
        env = "DEFENDER_QUOTA_STORE_FALLBACK",
        default_value = "fail",
        help_heading = QUOTA,
        value_parser = ["fail", "local"]
    )]
    quota_store_fallback: String,
    /// With --quota-store-fallback local: how many processes share the quota while the
    /// store is down; each then admits 1/N of every limit (at least one call per window).
    /// Set it to the number of workers, so together they stay within the quota.
    #[arg(
        long,
        global = true,
        env = "DEFENDER_QUOTA_STORE_FALLBACK_SHARE",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = QUOTA
    )]
    quota_store_fallback_share: Option<u32>,
    /// With --quota-store: this process's name in the store, so `defender quota watch`
    /// shows which process took what (and Redis `CLIENT LIST` which connection is whose).
    /// No spaces.
    #[arg(long, global = true, env = "DEFENDER_CLIENT_NAME", value_name = "NAME", value_parser = parse_client_name, help_heading = QUOTA)]
    client_name: Option<String>,
    /// More detail on standard error: -v logs every HTTP call (429s and token requests
    /// included), -vv debug events, -vvv trace events. RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = LOGGING)]
    verbose: u8,
    /// How log lines on standard error are written.
    #[arg(long, global = true, value_enum, default_value_t = log::LogFormat::Text, help_heading = LOGGING)]
    log_format: log::LogFormat,
    /// Only errors on standard error.
    #[arg(short, long, global = true, help_heading = LOGGING)]
    quiet: bool,
    /// No progress bars or spinners.
    #[arg(long, global = true, help_heading = LOGGING)]
    no_progress: bool,
    #[command(flatten)]
    output: OutputArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an advanced-hunting (KQL) query.
    Hunt(HuntArgs),
    /// List, get and update incidents.
    #[command(subcommand)]
    Incidents(IncidentsCommand),
    /// List, get and update alerts.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Show the effective limits, without credentials (and, with --emulator, this
    /// process's quota usage; with --quota-store, the usage shared by every process of the
    /// app).
    Limits,
    /// Watch the quota being spent.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Fetch a token and show where it came from (the source picked, tenant, app,
    /// audience) and when it expires, never the token itself. Costs no API quota.
    Auth,
    /// Run the emulator as a server until Ctrl-C.
    Emulator(Box<EmulatorArgs>),
    /// Print a completion script for a shell, e.g. `defender completions bash >
    /// /etc/bash_completion.d/defender`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (defender.1 and one per subcommand) to a directory; what
    /// `cargo xtask man` runs.
    #[command(hide = true)]
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// Redraw, once a second, every group's windows (use against limit), running-time
    /// budgets, what calls wait for and until when, 429s in the last hour, and which
    /// named process (--client-name) took what. Reads the shared store (--quota-store,
    /// with --tenant and --client-id naming the app) or an emulator (its URL, or
    /// --emulator for the one on this machine's port, DEFENDER_EMULATOR_PORT or 8400).
    /// Plain lines when the output is not a terminal.
    Watch {
        /// The emulator's base URL (e.g. http://127.0.0.1:8400).
        url: Option<String>,
        /// Write one frame and end.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, clap::Args)]
struct HuntArgs {
    /// The query; `-` reads it from standard input.
    query: Option<String>,
    /// Read the query from a file (`-`: standard input), for long KQL.
    #[arg(
        long,
        visible_alias = "file",
        value_name = "PATH",
        conflicts_with = "query"
    )]
    query_file: Option<PathBuf>,
    /// A value for the query, put before it as `let NAME = "VALUE";` (quoted: `\` and
    /// `"` escaped). Typed: NAME:long=5, NAME:real=0.5, NAME:bool=true,
    /// NAME:datetime=2026-11-01T00:00:00Z, NAME:timespan=1h. Repeat for several.
    #[arg(long = "param", value_name = "NAME[:TYPE]=VALUE", value_parser = params::parse)]
    params: Vec<params::Param>,
    /// Only data of this last span (e.g. 7d). Graph takes it as a Timespan; elsewhere the
    /// query gets `let _start = datetime(..); let _end = datetime(..);` before it and
    /// `| where Timestamp >= _start and Timestamp < _end` after its table (after leading
    /// comments and `let` statements; after a `union`'s operands). A query starting with
    /// `search`, `print`... is refused: filter on _start and _end in it yourself.
    #[arg(long, conflicts_with_all = ["from", "to"], value_parser = parse_duration_arg)]
    timespan: Option<Duration>,
    /// Start of the time range (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long, value_parser = parse_time)]
    from: Option<SystemTime>,
    /// End of the time range (default now).
    #[arg(long, value_parser = parse_time)]
    to: Option<SystemTime>,
    /// With a range: split it to get past the row cap (auto bisects windows at the cap;
    /// a duration such as 1d sets the first windows; none sends one query).
    #[arg(long, default_value = "auto", value_name = "auto|none|DURATION", value_parser = values::SplitParser)]
    split: Split,
    /// A scheduled hunt: run the query over the time since the last run recorded in
    /// FILE (a first run: since --from, else 30 days ago) up to --lag before now, past
    /// the row cap, each row once across runs; the state moves after each window's rows
    /// are written and flushed, and FILE.lock keeps a second run out. Writes ndjson (or
    /// json). For cron: `defender hunt --query-file q.kql --state q.state >> rows.ndjson`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["timespan", "to"])]
    state: Option<PathBuf>,
    /// With --state: the settle lag, how long before now each run stops, so that rows
    /// the service ingests late are there when their window is hunted (default 5s).
    #[arg(long, value_name = "DURATION", requires = "state", value_parser = parse_duration_arg)]
    lag: Option<Duration>,
}

#[derive(Debug, Subcommand)]
enum IncidentsCommand {
    /// List incidents.
    List {
        /// A raw OData $filter.
        #[arg(long, conflicts_with_all = ["status", "assigned_to", "updated_since"])]
        filter: Option<String>,
        /// Only incidents with this status.
        #[arg(long, ignore_case = true, value_parser = values::incident_status())]
        status: Option<IncidentStatus>,
        /// Only incidents assigned to this user.
        #[arg(long)]
        assigned_to: Option<String>,
        /// Only incidents updated since this time (RFC 3339) or span ago (e.g. 24h).
        #[arg(long, value_parser = parse_since)]
        updated_since: Option<SystemTime>,
        /// Only incidents of this severity (Graph only: informational, low, medium, high).
        #[arg(long)]
        severity: Option<String>,
        /// Only incidents with this classification (Graph only).
        #[arg(long, ignore_case = true, value_parser = values::classification())]
        classification: Option<Classification>,
        /// Only incidents with this determination (Graph only).
        #[arg(long)]
        determination: Option<String>,
        /// Page size (default and at most: 100 on Defender XDR, 50 on Graph).
        #[arg(long)]
        top: Option<u32>,
        /// Include each incident's alerts (`--expand alerts`; Graph lists none otherwise,
        /// Defender XDR always includes them).
        #[arg(long, value_parser = ["alerts"])]
        expand: Option<String>,
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        how: RecordColumns,
    },
    /// The incidents created or updated since the last run, each as the API sent it
    /// (ndjson, or json: --format), with a checkpoint in --state that moves only after
    /// they are written and flushed. Killed at any instant, the next run loses nothing
    /// (it may repeat the last batch); a run that finishes never repeats what an earlier
    /// finished run wrote. For a loop such as cron:
    /// `defender incidents sync --state xdr.state >> incidents.ndjson`.
    Sync(sync::SyncArgs),
    /// Show one incident, as the API sent it.
    Get {
        /// The incident id.
        id: String,
        #[command(flatten)]
        how: RecordColumns,
    },
    /// Update one incident.
    Update {
        /// The incident id.
        id: String,
        /// New status.
        #[arg(long, ignore_case = true, value_parser = values::incident_status())]
        status: Option<IncidentStatus>,
        /// New assignee.
        #[arg(long)]
        assigned_to: Option<String>,
        /// New classification.
        #[arg(long, ignore_case = true, value_parser = values::classification())]
        classification: Option<Classification>,
        /// New determination.
        #[arg(long)]
        determination: Option<String>,
        /// Tags (repeat for several; replaces the list).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A comment to add.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        how: RecordColumns,
    },
}

fn parse_client_name(s: &str) -> Result<String, String> {
    // Redis' CLIENT SETNAME refuses spaces and control characters.
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a client name is one word: no spaces".to_owned());
    }
    Ok(s.to_owned())
}

fn parse_limits(s: &str) -> Result<Limits, String> {
    Limits::parse(s).map_err(|e| e.to_string())
}
pub(crate) fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}
fn parse_time(s: &str) -> Result<SystemTime, String> {
    parse_rfc3339(s).ok_or_else(|| format!("`{s}` is not a time such as 2026-11-01T00:00:00Z"))
}
pub(crate) fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(d) = parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    parse_time(s)
}

/// A failure, with the exit code it maps to and one or two plain sentences. Code 0 is
/// the reader of standard output having gone away (a closed pipe): the command stops
/// quietly.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn io(what: &str, e: std::io::Error) -> Failure {
        Failure {
            code: 6,
            message: format!("{what}: {e}."),
        }
    }
    /// Writing the output failed: exit 9, or quietly 0 when the reader closed the pipe.
    fn write(what: impl std::fmt::Display, e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Failure {
                code: 0,
                message: String::new(),
            };
        }
        Failure {
            code: 9,
            message: format!("{what}: {e}."),
        }
    }
    /// Writing rows or a record failed.
    fn output(e: std::io::Error) -> Failure {
        Failure::write("could not write the output", e)
    }
    /// A bug: what should not fail did.
    fn internal(e: &dyn std::fmt::Display) -> Failure {
        Failure {
            code: 6,
            message: format!("internal error: {e}."),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match &e {
            Error::Auth(_) | Error::Forbidden(_) | Error::TokenUnavailable { .. } => 3,
            Error::QuotaWait { .. } | Error::Throttled { .. } => 4,
            Error::Rejected { .. }
            | Error::NotFound(_)
            | Error::ResultTooLarge(_)
            | Error::Preempted(_)
            | Error::InvalidRequest(_)
            | Error::Unsupported { .. }
            | Error::InsecureUrl { .. }
            | Error::ForeignLink { .. } => 5,
            Error::Truncated { .. } => 7,
            Error::OutcomeUnknown { .. } => 8,
            _ => 6,
        };
        let mut message = e.to_string();
        if let Error::TokenUnavailable { .. } = &e {
            message.push_str(" (see --auth); or add --emulator to run against a local emulator.");
        }
        if let Error::QuotaWait { wait, .. } = &e {
            let at = SystemTime::now() + *wait;
            message.push_str(&format!(
                " (at {}); or raise --max-wait.",
                format_rfc3339(at)
            ));
        }
        Failure { code, message }
    }
}

impl From<BuildError> for Failure {
    fn from(e: BuildError) -> Failure {
        let missing = match e {
            BuildError::MissingTenant => "no tenant: give --tenant or set AZURE_TENANT_ID",
            BuildError::MissingClientId => "no client id: give --client-id or set AZURE_CLIENT_ID",
            BuildError::MissingSecret => {
                "no client secret: set AZURE_CLIENT_SECRET or give --client-secret-file"
            }
            other => return Failure::usage(format!("{other}.")),
        };
        Failure {
            code: 3,
            message: format!("{missing}; or add --emulator to run against a local emulator."),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.verbose, cli.quiet, cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("defender: could not start: {e}");
            return ExitCode::from(6);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code: 0, .. }) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("defender: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Progress display: only on a terminal, never on standard output.
struct Ui {
    enabled: bool,
}

impl Ui {
    fn spinner(&self, msg: &str) -> indicatif::ProgressBar {
        if !self.enabled {
            return indicatif::ProgressBar::hidden();
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        pb.set_message(msg.to_owned());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    fn warn(&self, msg: &str) {
        // -q filters warnings out of the log.
        tracing::warn!("{msg}");
    }
}

impl Cli {
    /// The limits: --limits, else the API's preset.
    fn limits(&self) -> Limits {
        self.limits
            .clone()
            .unwrap_or_else(|| self.api.preset().limits())
    }

    /// The tenant and the app's client id, from the flags or the environment (an empty
    /// variable names none).
    fn app_ids(&self) -> (Option<String>, Option<String>) {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        (
            self.tenant.clone().or_else(|| env("AZURE_TENANT_ID")),
            self.client_id.clone().or_else(|| env("AZURE_CLIENT_ID")),
        )
    }
}

/// The quota store the options name, if any.
fn store_config(cli: &Cli) -> Option<StoreConfig> {
    cli.quota_store.as_ref().map(|url| {
        let mut c = StoreConfig::new(url.clone()).password_from_env();
        c.extra_ca = cli.quota_store_ca.clone();
        c.client_name = cli.client_name.clone();
        if cli.quota_store_fallback == "local" {
            c.on_error = OnRedisError::FallBackToLocal;
            c.fallback_share = cli.quota_store_fallback_share.unwrap_or(1);
        }
        c
    })
}

/// `defender quota watch`: what it reads, from the options.
fn watch_source(cli: &Cli, url: Option<&str>) -> Result<watch::Source, Failure> {
    if url.is_some() || cli.emulator {
        let url = url.map(str::to_owned).unwrap_or_else(|| {
            let port = std::env::var("DEFENDER_EMULATOR_PORT")
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(8400);
            format!("http://127.0.0.1:{port}")
        });
        // One crypto provider for the process, as the client installs it (an https://
        // emulator started with --tls; plain HTTP needs none). Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Failure::internal(&e))?;
        return Ok(watch::Source::Emulator { http, url });
    }
    let Some(config) = store_config(cli) else {
        return Err(Failure::usage(
            "defender quota watch reads --quota-store URL, or an emulator: give its URL or --emulator",
        ));
    };
    let (Some(tenant), Some(app)) = cli.app_ids() else {
        return Err(Failure::usage(
            "the shared quota is counted per app: give --tenant and --client-id (or AZURE_TENANT_ID and AZURE_CLIENT_ID)",
        ));
    };
    let limits = cli.limits();
    let title = format!("{} (tenant {tenant}, app {app})", config.redacted_url());
    let quota = limits::shared_quota(config, &limits, &tenant, &app)?;
    Ok(watch::Source::Store {
        quota: Box::new(quota),
        title,
    })
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let ui = Ui {
        enabled: !cli.no_progress && !cli.quiet && std::io::stderr().is_terminal(),
    };
    if let Command::Completions { shell } = cli.command {
        return completions(shell);
    }
    if let Command::Man { dir } = &cli.command {
        return man(dir);
    }
    if let Command::Emulator(args) = &cli.command {
        // The global credential flags name the app the emulator accepts (its built-in
        // one otherwise); the secret also comes from AZURE_CLIENT_SECRET.
        let mut builder = (**args).clone().into_builder();
        if let Some(t) = &cli.tenant {
            builder = builder.tenant(t.clone());
        }
        if let Some(c) = &cli.client_id {
            builder = builder.client_id(c.clone());
        }
        if let Some(f) = &cli.client_secret_file {
            builder = builder.client_secret_file(f.clone());
        } else if let Some(s) = std::env::var("AZURE_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
        {
            builder = builder.client_secret(s);
        }
        return defender_emulator::serve_until_ctrl_c(builder)
            .await
            .map_err(|e| Failure {
                code: 6,
                message: format!("the emulator stopped: {e}."),
            });
    }
    if let Command::Quota(QuotaCommand::Watch { url, once }) = &cli.command {
        // Before an in-process emulator starts: --emulator names the one on this machine.
        return watch::run(watch_source(&cli, url.as_deref())?, *once).await;
    }
    if cli.client_name.is_some() && cli.quota_store.is_none() {
        return Err(Failure::usage(
            "--client-name names this process in a --quota-store: give both",
        ));
    }
    if cli.quota_store_ca.is_some() && cli.quota_store.is_none() {
        return Err(Failure::usage(
            "--quota-store-ca applies to a rediss:// --quota-store: give both",
        ));
    }
    if cli.quota_store_fallback_share.is_some() && cli.quota_store_fallback != "local" {
        return Err(Failure::usage(
            "--quota-store-fallback-share applies to --quota-store-fallback local: give both",
        ));
    }
    let limits = cli.limits();
    let mut emulator: Option<EmulatorHandle> = None;
    // The tenant and app that name a shared quota.
    let scope: Option<(String, String)>;
    let mut builder = Client::builder()
        .surface(cli.api)
        .cloud(cli.cloud)
        .limits_value(limits.clone())
        .policy(StandardPolicy::standard().with_max_wait(cli.max_wait));
    if cli.emulator {
        let emu = defender_emulator::Emulator::builder()
            .limits(limits.clone())
            .spawn()
            .await
            .map_err(|e| Failure {
                code: 6,
                message: format!("could not start the emulator: {e}."),
            })?;
        builder = builder
            .tenant(defender_emulator::DEFAULT_TENANT)
            .client_id(defender_emulator::DEFAULT_CLIENT_ID)
            .client_secret(defender_emulator::DEFAULT_SECRET)
            .base_url(emu.base_url())
            .login_url(emu.base_url());
        tracing::debug!(url = %emu.base_url(), "an emulator runs in this process");
        scope = Some((
            defender_emulator::DEFAULT_TENANT.to_owned(),
            defender_emulator::DEFAULT_CLIENT_ID.to_owned(),
        ));
        emulator = Some(emu);
    } else {
        if let Some(t) = &cli.tenant {
            builder = builder.tenant(t);
        }
        if let Some(c) = &cli.client_id {
            builder = builder.client_id(c);
        }
        if let Some(path) = &cli.client_secret_file {
            let secret = std::fs::read_to_string(path).map_err(|e| {
                Failure::usage(format!(
                    "could not read the secret file {}: {e}",
                    path.display()
                ))
            })?;
            builder = builder.client_secret(secret.trim());
        }
        builder = builder.from_env();
        builder = auth::credential(builder, &cli)?;
        let (tenant, client_id) = cli.app_ids();
        scope = tenant.zip(client_id);
        if let Some(u) = &cli.base_url {
            builder = builder.base_url(u);
        }
        if let Some(u) = &cli.login_url {
            builder = builder.login_url(u);
        }
    }
    let share = cli.quota_store_fallback_share.unwrap_or(1);
    let store = store_config(&cli);
    if let Some(c) = &store {
        // Say at once when the store is not there: fail before anything is sent, or warn
        // that this process counts on its own.
        let probe = AsyncRedisQuotaStore::open(c.clone()).map_err(|e| Failure {
            code: 2,
            message: format!("{e}."),
        })?;
        if let Err(e) = probe.ping().await {
            if c.on_error == OnRedisError::FallBackToLocal {
                let part = if share > 1 {
                    format!(", at 1/{share} of each limit")
                } else {
                    String::new()
                };
                ui.warn(&format!(
                    "{e}; counting this process's calls on its own{part} (--quota-store-fallback local)."
                ));
            } else {
                return Err(Failure {
                    code: 6,
                    message: format!(
                        "{e}. With --quota-store-fallback local, this process counts on its own meanwhile."
                    ),
                });
            }
        }
        builder = builder.redis_quota(c.clone());
    }
    if let (Command::Limits, None) = (&cli.command, &emulator) {
        // The limits are known without credentials, and so is the shared usage.
        return limits::show(&cli.output, cli.api, &limits, None, store.zip(scope)).await;
    }
    // Whose incidents a sync state holds.
    let owner = match &scope {
        Some((tenant, client_id)) => sync::Owner {
            tenant: Some(tenant.clone()),
            client_id: Some(client_id.clone()),
        },
        None => {
            let (tenant, client_id) = cli.app_ids();
            sync::Owner { tenant, client_id }
        }
    };
    let client = builder.build()?;
    let waits = spawn_wait_reporter(&client);
    let result = match cli.command {
        Command::Incidents(IncidentsCommand::Sync(args)) => {
            sync::run(&client, &cli.output, args, owner).await
        }
        Command::Hunt(args) => match args.state.clone() {
            Some(state) => match read_query(&args) {
                Ok(query) => {
                    let how = sync::HuntStateArgs {
                        state,
                        since: args.from,
                        lag: args.lag,
                    };
                    sync::hunt(&client, &cli.output, &query, how, owner).await
                }
                Err(f) => Err(f),
            },
            None => hunt(&client, &ui, &cli.output, args).await,
        },
        Command::Incidents(cmd) => incidents(&client, &ui, &cli.output, cmd).await,
        Command::Alerts(cmd) => alerts::alerts(&client, &ui, &cli.output, cmd).await,
        Command::Auth => auth::show(&client, &cli.output).await,
        Command::Limits => {
            let shared = store.zip(scope);
            limits::show(&cli.output, cli.api, &limits, Some(&client), shared).await
        }
        Command::Emulator(_)
        | Command::Quota(_)
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("handled above")
        }
    };
    waits.abort();
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    result
}

/// Writes the completion script for `shell` (built in memory first: clap_complete panics
/// on a write error, and a closed pipe must end quietly).
fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "defender", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(Failure::output)
}

/// Writes the man pages to `dir`: `defender.1`, and `defender-hunt.1`,
/// `defender-incidents-list.1`... for the subcommands (hidden ones left out).
fn man(dir: &std::path::Path) -> Result<(), Failure> {
    use clap::CommandFactory;
    let failed = |e| {
        Failure::write(
            format!("could not write the man pages to {}", dir.display()),
            e,
        )
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(failed)
}

/// Logs the client's waits of a second or more, with their reason and until when, on a
/// terminal or not: a job that waits for quota says so instead of looking hung.
fn spawn_wait_reporter(client: &Client) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = client.progress();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Progress::Waiting {
                    group,
                    wait,
                    reason,
                }) if wait >= Duration::from_secs(1) => {
                    let until = format_rfc3339(SystemTime::now() + wait);
                    let span = format_duration(Duration::from_secs(wait.as_secs()));
                    tracing::info!(
                        %group,
                        wait_secs = wait.as_secs(),
                        %until,
                        %reason,
                        "waiting {span} for the {group} quota"
                    );
                }
                // Shorter waits, and progress this version does not know, are not logged.
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    })
}

/// The query (from the argument, --query-file or standard input), with the --param
/// statements before it.
fn read_query(args: &HuntArgs) -> Result<String, Failure> {
    let stdin = || {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map(|_| s)
            .map_err(|e| Failure::io("could not read the query from standard input", e))
    };
    let q = match (&args.query, &args.query_file) {
        (Some(q), _) if q == "-" => stdin()?,
        (Some(q), _) => q.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => stdin()?,
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            Failure::usage(format!(
                "could not read the query file {}: {e}",
                f.display()
            ))
        })?,
        (None, None) => {
            return Err(Failure::usage(
                "give a query, --query-file PATH, or - to read it from standard input",
            ))
        }
    };
    if q.trim().is_empty() {
        return Err(Failure::usage("the query is empty"));
    }
    Ok(params::prepend(&args.params, &q))
}

async fn hunt(client: &Client, ui: &Ui, out: &OutputArgs, args: HuntArgs) -> Result<(), Failure> {
    let query = read_query(&args)?;
    let split = args.split;
    if let (Some((from, to)), false) = (time_range(&args)?, split == Split::None) {
        return hunt_range(client, ui, out, &query, from, to, split).await;
    }
    let (query, timespan) = scope_query(client.surface(), &query, &args)?;
    let spinner = ui.spinner("running the query");
    // Rows are written as they arrive (a table waits for all of them to size its columns).
    let mut stream = client.hunt_stream_request(HuntRequest { query, timespan });
    let mut sink = out.sink(Format::Table)?;
    let write = Failure::output;
    let mut columns: Option<Vec<String>> = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(StreamItem::Schema(schema)) => {
                spinner.finish_and_clear();
                if columns.is_none() {
                    let c: Vec<String> = schema.iter().map(|c| c.name.clone()).collect();
                    sink.header(&c).map_err(write)?;
                    columns = Some(c);
                }
            }
            Ok(StreamItem::Row(row)) => {
                let cols = columns.get_or_insert_with(Vec::new);
                sink.row(cols, &row).map_err(write)?;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    spinner.finish_and_clear();
    if columns.is_none() {
        sink.header(&[]).map_err(write)?;
    }
    // What was fetched is written before any error is reported.
    sink.finish().map_err(write)?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let Some(result) = stream.summary() else {
        return Ok(());
    };
    if result.truncated {
        let cap = result.row_cap.unwrap_or_default();
        let hint = if split == Split::None {
            "drop --split none and give --timespan or --from to split the range"
        } else {
            "give --timespan or --from (with --split auto) to split the range"
        };
        return Err(Failure {
            code: 7,
            message: format!(
                "the result has {cap} rows, the row cap, so it was probably cut; {hint}."
            ),
        });
    }
    Ok(())
}

/// A hunt over `[from, to)` in windows, bisected past the row cap; rows are written as
/// each window finishes, in time order.
async fn hunt_range(
    client: &Client,
    ui: &Ui,
    out: &OutputArgs,
    query: &str,
    from: SystemTime,
    to: SystemTime,
    split: Split,
) -> Result<(), Failure> {
    let mut opts = defender_async::range_options(client.limits());
    opts.split = split;
    let mut hunt = client
        .hunt_range(query, from, to, Some(opts))
        .map_err(|e| Failure {
            code: 2,
            message: format!("{e}."),
        })?;
    if let Some(w) = hunt.warning() {
        ui.warn(&format!(
            "the range starts before the data window; starting at {} instead of {}",
            format_rfc3339(w.used),
            format_rfc3339(w.asked)
        ));
    }
    let bar = if ui.enabled {
        indicatif::ProgressBar::new(1)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_draw_target(if ui.enabled {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let mut sink = out.sink(Format::Table)?;
    let write = Failure::output;
    let mut columns: Option<Vec<String>> = None;
    let mut failure = None;
    while let Some(window) = hunt.next_window().await {
        let window = match window {
            Ok(w) => w,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let cols = match &columns {
            Some(c) => c.clone(),
            None => {
                let c: Vec<String> = window.schema.iter().map(|c| c.name.clone()).collect();
                sink.header(&c).map_err(write)?;
                columns = Some(c.clone());
                c
            }
        };
        for row in &window.rows {
            sink.row(&cols, row).map_err(write)?;
        }
        let p = hunt.progress();
        bar.set_length(p.windows_total as u64);
        bar.set_position(p.windows_done as u64);
        bar.set_message(format!("{} rows, {} splits", p.rows, p.splits));
    }
    bar.finish_and_clear();
    if columns.is_none() {
        sink.header(&[]).map_err(write)?;
    }
    // What was fetched is written before any error is reported.
    sink.finish().map_err(write)?;
    let p = hunt.progress();
    if let Some(e) = failure {
        return Err(e.into());
    }
    if p.truncated_windows > 0 {
        return Err(Failure {
            code: 7,
            message: format!(
                "{} window(s) still reached the row cap at the smallest span; narrow the query.",
                p.truncated_windows
            ),
        });
    }
    Ok(())
}

/// The time range --timespan / --from / --to give, if any.
fn time_range(args: &HuntArgs) -> Result<Option<(SystemTime, SystemTime)>, Failure> {
    let now = SystemTime::now();
    let range = match (args.timespan, args.from, args.to) {
        (Some(span), _, _) => Some((now - span, now)),
        (None, Some(from), to) => Some((from, to.unwrap_or(now))),
        (None, None, Some(_)) => return Err(Failure::usage("--to needs --from")),
        (None, None, None) => None,
    };
    if let Some((from, to)) = range {
        if from >= to {
            return Err(Failure::usage("--from must be before --to"));
        }
    }
    Ok(range)
}

/// Applies --timespan / --from / --to: Graph takes a Timespan; elsewhere the query is
/// prefixed with a time filter on `Timestamp`.
fn scope_query(
    surface: Surface,
    query: &str,
    args: &HuntArgs,
) -> Result<(String, Option<String>), Failure> {
    let Some((from, to)) = time_range(args)? else {
        return Ok((query.to_owned(), None));
    };
    let scoped = HuntRequest::scoped(surface, query, from, to)
        .map_err(|e| Failure::usage(format!("--timespan/--from: {e}")))?;
    Ok((scoped.query, scoped.timespan))
}

async fn incidents(
    client: &Client,
    ui: &Ui,
    out: &OutputArgs,
    cmd: IncidentsCommand,
) -> Result<(), Failure> {
    match cmd {
        IncidentsCommand::List {
            filter,
            status,
            assigned_to,
            updated_since,
            severity,
            classification,
            determination,
            top,
            expand,
            all,
            how,
        } => {
            let mut f = match filter {
                Some(raw) => IncidentFilter::raw(raw),
                None => IncidentFilter::new(),
            };
            if let Some(s) = status {
                f = f.status(s);
            }
            if let Some(a) = &assigned_to {
                f = f.assigned_to(a);
            }
            if let Some(t) = updated_since {
                f = f.updated_since(t);
            }
            if let Some(s) = &severity {
                f = f.severity(s);
            }
            if let Some(c) = classification {
                f = f.classification(c);
            }
            if let Some(d) = &determination {
                f = f.determination(d);
            }
            if let Some(field) = f.unsupported_on(client.surface()) {
                return Err(Failure::usage(format!(
                    "{} does not filter incidents on {}; use --api graph",
                    client.surface(),
                    field.name(client.surface())
                )));
            }
            let max = max_top(client.surface());
            let top = top.unwrap_or(max);
            if top == 0 || top > max {
                return Err(Failure::usage(format!(
                    "--top takes 1 to {max} on {} (the API's page size limit)",
                    client.surface()
                )));
            }
            let query = IncidentQuery {
                filter: f,
                top: Some(top),
                skip: None,
                expand_alerts: expand.is_some(),
            };
            let limit = (!all).then_some(top as usize);
            let stream = client.incidents().list(query);
            records::write_all(ui, stream, limit, out, &how).await
        }
        IncidentsCommand::Sync(_) => unreachable!("handled in run"),
        IncidentsCommand::Get { id, how } => {
            let incident = client.incidents().get(id.as_str()).await?;
            records::write_one(&incident, out, &how)
        }
        IncidentsCommand::Update {
            id,
            status,
            assigned_to,
            classification,
            determination,
            tags,
            comment,
            how,
        } => {
            let update = IncidentUpdate {
                status,
                assigned_to,
                classification,
                determination,
                tags: (!tags.is_empty()).then_some(tags),
                comment,
            };
            if update.is_empty() {
                return Err(Failure::usage("nothing to update: give --status, --assigned-to, --classification, --determination, --tag or --comment"));
            }
            let incident = client.incidents().update(id.as_str(), update).await?;
            records::write_one(&incident, out, &how)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn failures_quote_the_request_id_for_support() {
        let body = br#"{"error":{"code":"Forbidden","message":"Missing application roles.","innerError":{"request-id":"7f3c0000-0000-4000-8000-000000000001","date":"2026-10-01T12:00:00"}}}"#;
        let error = defender_core::ApiError::from_body(body).unwrap();
        let failure = Failure::from(Error::Forbidden(error));
        assert_eq!(failure.code, 3);
        assert!(
            failure
                .message
                .contains("Forbidden: Missing application roles. (request id 7f3c0000-0000-4000-8000-000000000001)"),
            "{}",
            failure.message
        );
    }
}
