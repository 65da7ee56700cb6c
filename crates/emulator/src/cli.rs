//! The command line of the `defender-emulator` binary, reusable by other CLIs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use defender_core::limits::{parse_duration, Limits};

use crate::{
    Clock, Emulator, EmulatorBuilder, EmulatorError, FaultSpec, RuntimeScope, WindowMode,
    CONTROL_HEADER, CONTROL_HEADER_VALUE, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};

/// The emulator's options; `#[command(flatten)]` them into another CLI to reuse.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8400, env = "DEFENDER_EMULATOR_PORT")]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The limits: a preset (2021, xdr, mde, graph) and overrides, such as
    /// `2021,hunting.calls=45/1m,hunting.runtime=10m/1h`.
    #[arg(long, default_value = "2021", value_parser = parse_limits)]
    pub limits: Limits,
    /// Faults to inject, such as `500=0.05,503=0.05,reset=0.02,slow=0.02:2s,odd429=0.02`.
    #[arg(long, value_parser = parse_faults)]
    pub faults: Option<FaultSpec>,
    /// The seed of the data, the incidents and the faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rows per synthetic table.
    #[arg(long, default_value_t = crate::DEFAULT_ROWS_PER_TABLE)]
    pub rows: usize,
    /// How many incidents to generate.
    #[arg(long, default_value_t = crate::DEFAULT_INCIDENTS)]
    pub incidents: usize,
    /// Quota windows: sliding (exact) or fixed (aligned to the emulator's start).
    #[arg(long, default_value = "sliding")]
    pub window: WindowMode,
    /// Give each (tenant, app) its own hunting running-time budget instead of one per
    /// tenant shared by all its apps (Microsoft allocates running time per tenant).
    #[arg(long)]
    pub runtime_per_app: bool,
    /// The lifetime of issued tokens, such as 1h or 59m59s.
    #[arg(long, default_value = "3599s", value_parser = parse_duration_arg)]
    pub token_lifetime: Duration,
    /// Leave out the `Retry-After` header on 429s.
    #[arg(long)]
    pub no_retry_after: bool,
    /// Leave out "You can send requests again in S seconds." from 429 messages.
    #[arg(long)]
    pub no_again_in: bool,
    /// Run on a manual clock that only `POST /_emulator/clock/advance` moves.
    #[arg(long)]
    pub manual_clock: bool,
    /// Serve `POST /_emulator/reset` and `/_emulator/clock/advance` even when `--host`
    /// is not a loopback address (they always need the `X-Emulator-Control: 1` header
    /// and a bearer token from the emulator).
    #[arg(long)]
    pub allow_remote_control: bool,
}

fn parse_limits(s: &str) -> Result<Limits, String> {
    Limits::parse(s).map_err(|e| e.to_string())
}

fn parse_faults(s: &str) -> Result<FaultSpec, String> {
    FaultSpec::parse(s).map_err(|e| e.to_string())
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

impl EmulatorArgs {
    /// The builder these options describe.
    pub fn into_builder(self) -> EmulatorBuilder {
        let mut b = Emulator::builder()
            .addr(SocketAddr::new(self.host, self.port))
            .limits(self.limits)
            .seed(self.seed)
            .rows_per_table(self.rows)
            .incidents(self.incidents)
            .window_mode(self.window)
            .runtime_scope(if self.runtime_per_app {
                RuntimeScope::App
            } else {
                RuntimeScope::Tenant
            })
            .token_lifetime(self.token_lifetime)
            .retry_after_header(!self.no_retry_after)
            .again_in_sentence(!self.no_again_in)
            .allow_remote_control(self.allow_remote_control);
        if let Some(f) = self.faults {
            b = b.faults(f);
        }
        if self.manual_clock {
            b = b.clock(Clock::manual_now());
        }
        b
    }
}

/// Starts the emulator, prints where to point a client, and serves until Ctrl-C.
pub async fn serve_until_ctrl_c(builder: EmulatorBuilder) -> Result<(), EmulatorError> {
    let limits = builder.config.limits.to_spec();
    let faults = builder.config.faults.to_string();
    let handle = builder.spawn().await?;
    let base = handle.base_url();
    println!("Defender API emulator listening on {base}");
    println!();
    println!("  token endpoint     POST {base}/{DEFAULT_TENANT}/oauth2/v2.0/token");
    println!("  Defender XDR       POST {base}/api/advancedhunting/run");
    println!(
        "                     GET  {base}/api/incidents   GET/PATCH {base}/api/incidents/{{id}}"
    );
    println!("  Defender Endpoint  POST {base}/api/advancedqueries/run");
    println!("  (and Defender XDR) GET  {base}/api/alerts   GET/PATCH {base}/api/alerts/{{id}}");
    println!("  Microsoft Graph    POST {base}/v1.0/security/runHuntingQuery");
    println!(
        "                     GET  {base}/v1.0/security/incidents   GET/PATCH .../incidents/{{id}}   POST .../incidents/{{id}}/comments"
    );
    println!(
        "                     GET  {base}/v1.0/security/alerts_v2   GET/PATCH .../alerts_v2/{{id}}   POST .../alerts_v2/{{id}}/comments"
    );
    println!("  control            GET  {base}/_emulator/stats   POST {base}/_emulator/reset");
    println!(
        "                     (POST needs the header '{CONTROL_HEADER}: {CONTROL_HEADER_VALUE}' and a bearer token)"
    );
    println!();
    println!("  API base and login base: {base}");
    println!("  AZURE_TENANT_ID={DEFAULT_TENANT}");
    println!("  AZURE_CLIENT_ID={DEFAULT_CLIENT_ID}");
    println!("  AZURE_CLIENT_SECRET={DEFAULT_SECRET}");
    println!();
    println!("  limits: {limits}");
    if !faults.is_empty() {
        println!("  faults: {faults}");
    }
    println!("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    println!("Stopping.");
    handle.shutdown().await;
    Ok(())
}
