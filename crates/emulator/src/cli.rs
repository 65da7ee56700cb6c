//! The command line of the `defender-emulator` binary, reusable by other CLIs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use defender_core::limits::{parse_duration, Limits};

use crate::{
    Clock, Emulator, EmulatorBuilder, EmulatorError, FaultSpec, RuntimeScope, Tls, WindowMode,
    CONTROL_HEADER, CONTROL_HEADER_VALUE, DEFAULT_SECRET,
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
    /// End the synthetic tables this long after the start (e.g. 1h), so that they grow
    /// as the clock passes their rows (scheduled hunts find new rows each run).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub data_ahead: Option<Duration>,
    /// How many incidents to generate.
    #[arg(long, default_value_t = crate::DEFAULT_INCIDENTS)]
    pub incidents: usize,
    /// Make incidents change and appear over time: RATE events per second, each
    /// changing an incident (its lastUpdateTime moves) or, one in four, creating one;
    /// drawn from --seed, so one seed and clock give one history.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub churn: Option<f64>,
    /// Stop the churn this long after the start (e.g. 30s).
    #[arg(long, value_name = "DURATION", requires = "churn", value_parser = parse_duration_arg)]
    pub churn_for: Option<Duration>,
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
    /// The value the App Service managed identity endpoint (`/msi/token`) requires in
    /// `X-IDENTITY-HEADER` (default: a random one, printed at start).
    #[arg(long, value_name = "VALUE")]
    pub identity_header: Option<String>,
    /// Write a federated token to this file (`AZURE_FEDERATED_TOKEN_FILE`); the built-in
    /// app accepts exactly that token as its client assertion (workload identity).
    #[arg(long, value_name = "PATH")]
    pub federated_token_out: Option<PathBuf>,
    /// Serve HTTPS with a certificate made at start for `localhost` and `127.0.0.1`.
    #[arg(long)]
    pub tls: bool,
    /// With `--tls`: write the certificate (PEM) here for clients to trust.
    #[arg(
        long,
        value_name = "PATH",
        requires = "tls",
        conflicts_with = "tls_cert"
    )]
    pub tls_cert_out: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM) instead of a made one.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The built-in app's credentials, for the `defender-emulator` program. A CLI that has
/// its own `--tenant`, `--client-id` and `--client-secret-file` (as `defender` does)
/// passes them to [`EmulatorBuilder::tenant`] and its siblings instead.
#[derive(Debug, Clone, clap::Args)]
pub struct CredentialArgs {
    /// The built-in app's tenant id (default `emulator`).
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub tenant: Option<String>,
    /// The built-in app's client id (default `emulator-client`).
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub client_id: Option<String>,
    /// A file holding the built-in app's client secret (else `AZURE_CLIENT_SECRET`, else
    /// `emulator-secret`; never a plain flag).
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<PathBuf>,
    /// A certificate (PEM) whose key signs the built-in app's client assertions.
    #[arg(long, value_name = "PATH", env = "AZURE_CLIENT_CERTIFICATE_PATH")]
    pub client_certificate: Option<PathBuf>,
}

impl CredentialArgs {
    /// Sets these credentials (and `AZURE_CLIENT_SECRET` when no secret file is given) on
    /// `builder`.
    pub fn apply(self, mut builder: EmulatorBuilder) -> EmulatorBuilder {
        if let Some(t) = self.tenant.filter(|t| !t.is_empty()) {
            builder = builder.tenant(t);
        }
        if let Some(c) = self.client_id.filter(|c| !c.is_empty()) {
            builder = builder.client_id(c);
        }
        if let Some(p) = self.client_secret_file {
            builder = builder.client_secret_file(p);
        } else if let Some(s) = std::env::var("AZURE_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
        {
            builder = builder.client_secret(s);
        }
        if let Some(p) = self.client_certificate {
            builder = builder.client_certificate_file(p);
        }
        builder
    }
}

fn parse_limits(s: &str) -> Result<Limits, String> {
    Limits::parse(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate of events per second above 0, such as 5 or 0.5"
        )),
    }
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
        if let Some(d) = self.data_ahead {
            b = b.data_ahead(d);
        }
        if let Some(rate) = self.churn {
            b = b.churn(rate);
        }
        if let Some(d) = self.churn_for {
            b = b.churn_for(d);
        }
        if let Some(f) = self.faults {
            b = b.faults(f);
        }
        if self.manual_clock {
            b = b.clock(Clock::manual_now());
        }
        if let Some(h) = self.identity_header {
            b = b.identity_header(h);
        }
        if let Some(p) = self.federated_token_out {
            b = b.federated_token_out(p);
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            b = b.tls(Tls::Files { cert, key });
        } else if self.tls {
            b = b.tls(Tls::Generated {
                cert_out: self.tls_cert_out,
            });
        }
        b
    }
}

/// Starts the emulator, prints where to point a client, and serves until Ctrl-C.
pub async fn serve_until_ctrl_c(builder: EmulatorBuilder) -> Result<(), EmulatorError> {
    let limits = builder.config.limits.to_spec();
    let faults = builder.config.faults.to_string();
    let federated = builder.config.federated_token_out.clone();
    let cert_out = match &builder.config.tls {
        Some(Tls::Generated { cert_out }) => cert_out.clone(),
        Some(Tls::Files { cert, .. }) => Some(cert.clone()),
        None => None,
    };
    let handle = builder.spawn().await?;
    let base = handle.base_url();
    let tenant = handle.tenant();
    println!("Defender API emulator listening on {base}");
    println!();
    println!("  token endpoints    POST {base}/{tenant}/oauth2/v2.0/token (scope=)");
    println!("                     POST {base}/{tenant}/oauth2/token (resource=)");
    println!("  OpenID metadata    GET  {base}/{tenant}/v2.0/.well-known/openid-configuration");
    println!("  managed identity   GET  {base}/msi/token (App Service)   GET  {base}/metadata/identity/oauth2/token (IMDS)");
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
    println!("  export AZURE_AUTHORITY_HOST={base}");
    println!("  export AZURE_TENANT_ID={tenant}");
    println!("  export AZURE_CLIENT_ID={}", handle.client_id());
    if handle.default_secret() {
        println!("  export AZURE_CLIENT_SECRET={DEFAULT_SECRET}");
    } else {
        println!("  (AZURE_CLIENT_SECRET: the secret you gave)");
    }
    if let Some(p) = &federated {
        println!("  export AZURE_FEDERATED_TOKEN_FILE={}", p.display());
    }
    println!("  export IDENTITY_ENDPOINT={base}/msi/token");
    println!("  export IDENTITY_HEADER={}", handle.identity_header());
    match (&cert_out, handle.tls_certificate_pem()) {
        (Some(p), _) => {
            println!("  export SSL_CERT_FILE={}", p.display());
            println!("  export REQUESTS_CA_BUNDLE={}", p.display());
        }
        (None, Some(_)) => {
            println!(
                "  (TLS: give --tls-cert-out PATH to write the certificate for clients to trust)"
            );
        }
        (None, None) => {}
    }
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
