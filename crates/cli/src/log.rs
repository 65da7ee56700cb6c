//! Logs on standard error, on a terminal or not (the progress bar alone is
//! terminal-only), as text or JSON lines.
//!
//! | flag      | what is logged                                                        |
//! |-----------|-----------------------------------------------------------------------|
//! | `-q`      | errors only                                                           |
//! | (none)    | warnings (a quota store fallen back to the local quota), waits of a second or more with their reason and until when (a 429's included), and token refreshes |
//! | `-v`      | and every HTTP call as it ends: its group (`token` for a token request), attempt and status (a 429 too); the CLI's own debug events |
//! | `-vv`     | and the client's debug events (every wait, transport errors)        |
//! | `-vvv`    | and trace events of the defender crates                               |
//!
//! `RUST_LOG` replaces the table. Other crates log only their warnings unless
//! `RUST_LOG` says otherwise. Nothing here logs a header, a token or a secret.

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Installs the subscriber for the process.
pub(crate) fn init(verbose: u8, quiet: bool, format: LogFormat) {
    let libraries = ["defender_async", "defender_core", "defender_redis"];
    let directives = match (quiet, verbose) {
        (true, _) => "error".to_owned(),
        (false, 0) => "warn,defender=info".to_owned(),
        (false, v) => {
            let (cli, libs) = match v {
                1 => ("debug", "info"),
                2 => ("debug", "debug"),
                _ => ("trace", "trace"),
            };
            let mut d = vec!["warn".to_owned(), format!("defender={cli}")];
            d.extend(libraries.iter().map(|c| format!("{c}={libs}")));
            d.join(",")
        }
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(directives),
    };
    // The call spans carry group, attempt and status; their end is the call's log line.
    let spans = if verbose > 0 && !quiet {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(spans);
    // Only fails when a subscriber is already installed, which nothing else does.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
