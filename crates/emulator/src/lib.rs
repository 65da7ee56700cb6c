//! # defender-emulator
//!
//! An offline emulator of the Microsoft Defender APIs: a real HTTP server (axum on tokio)
//! that serves the identity platform's token endpoint and the three API surfaces from one
//! base URL, enforces the documented limits with the real 429 bodies, evaluates a subset of
//! KQL over deterministic synthetic tables, keeps incidents and their alerts in memory, and
//! injects seeded faults on request.
//!
//! | path | what |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token`, `POST /{tenant}/oauth2/token` | client-credentials tokens, v2 (`scope=`) and v1 (`resource=`): a secret, a client assertion signed by the registered certificate ([`EmulatorBuilder::client_certificate_pem`]) or the federated token ([`EmulatorBuilder::federated_token_out`]) |
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration`, `GET /{tenant}/.well-known/openid-configuration` | OpenID configuration pointing at the emulator |
//! | `GET /msi/token` | App Service managed identity (`X-IDENTITY-HEADER`, [`EmulatorHandle::identity_header`]) |
//! | `GET /metadata/identity/oauth2/token` | IMDS managed identity (`Metadata: true`) |
//! | `POST /api/advancedhunting/run` | Defender XDR hunting (`Stats`, `Schema`, `Results`) |
//! | `POST /api/advancedqueries/run` | Defender for Endpoint hunting (`Schema`, `Results`) |
//! | `POST /v1.0/security/runHuntingQuery` | Graph hunting (`schema`, `results`; `Timespan`) |
//! | `GET /api/incidents`, `GET/PATCH /api/incidents/{id}` | Defender XDR incidents |
//! | `GET /v1.0/security/incidents`, `GET/PATCH /v1.0/security/incidents/{id}` | Graph incidents (`$expand=alerts`) |
//! | `POST /v1.0/security/incidents/{id}/comments` | Graph incident comments |
//! | `GET /api/alerts`, `GET/PATCH /api/alerts/{id}` | Defender for Endpoint's alerts, also served by the Defender XDR host (`$filter`, `$top` up to 10,000, `$skip`, `$expand=evidence`; PATCH `status`, `assignedTo`, `classification`, `determination`, `comment`) |
//! | `GET /v1.0/security/alerts_v2`, `GET/PATCH /v1.0/security/alerts_v2/{id}` | Graph alerts (PATCH `status`, `assignedTo`, `classification`, `determination`, `customDetails`) |
//! | `POST /v1.0/security/alerts_v2/{id}/comments` | Graph alert comments |
//! | `GET /`, `GET /_emulator/`, `GET /_emulator/dashboard` | the dashboard: one HTML page with its script, style and SVG charts inline (no network), polling `/_emulator/stats` (open; see [Dashboard](#dashboard)) |
//! | `GET /_emulator/stats`, `GET /_emulator/clock` | control, read only (open) |
//! | `POST /_emulator/reset`, `POST /_emulator/clock/advance` | control that changes state (see below) |
//!
//! A hunting answer whose query did something the real service would have done
//! differently offline (`externaldata`, never fetched, returns its declared columns with
//! no rows) carries the header [`WARNING_HEADER`] (`x-emulator-warning`) with the reasons:
//! none of the three surfaces documents a warnings field, so the body keeps the
//! service's shape.
//!
//! ## What the services refuse
//!
//! The emulator is only worth what it refuses, each refusal in the service's own status
//! and body:
//!
//! - **Token audiences.** A token is issued for the API of its scope (by host:
//!   `graph.microsoft.*` is Graph, `*securitycenter.*` Defender for Endpoint,
//!   `*security.microsoft.*` Defender XDR; another resource is AADSTS500011, two at once
//!   AADSTS28000) and refused on another API's routes with that service's 401.
//!   `/api/alerts`, which both Defender hosts serve, takes either Defender token.
//! - **Graph's envelope.** Errors on `/v1.0/` paths are
//!   `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`
//!   (401 as `InvalidAuthenticationToken`), with `request-id` and `client-request-id`
//!   headers on every answer (the latter echoes the caller's). Defender errors keep
//!   `{"error":{"code","message","target"}}`.
//! - **Page sizes.** `$top` at most 100 on Defender XDR's incidents, at most 50 on Graph's
//!   (ODataLib's 400 with an empty code), at most 10,000 on `/api/alerts` (400
//!   `ODataError`); the default page is the maximum. Graph's `alerts_v2` documents no
//!   maximum: any `$top` is taken and served in pages of at most
//!   [`GRAPH_ALERTS_PAGE_SIZE`] with `@odata.nextLink`.
//! - **Unknown ids.** 404 `NotFound` for an incident; `ResourceNotFound` ("Alert {id} was
//!   not found") for a Defender alert; Graph's envelope on Graph's routes.
//! - **PATCH properties.** Graph takes only the incident or alert type's properties (an
//!   unknown one such as `comment` is OData's 400 "The property 'comment' does not exist
//!   on type 'microsoft.graph.security.incident'. ..." or `...security.alert'`); comments
//!   go through the comments routes. Defender XDR takes `comment` in its incident PATCH,
//!   Defender for Endpoint in its alert PATCH, whose body is case-sensitive: an unknown
//!   property or a value outside the documented ones (`status` `New`, `InProgress`,
//!   `Resolved`; `classification` `TruePositive`, `InformationalExpectedActivity`,
//!   `FalsePositive`, `Unknown`) is 400 `InvalidRequestBody`. Determinations are not
//!   checked: the documented lists disagree.
//! - **Hunting bodies.** Defender for Endpoint's body is case-sensitive (`Query`; anything
//!   else is 400 `InvalidRequestBody`); Graph's `Timespan` takes a duration, an interval,
//!   a duration and an end, or a single start time.
//! - **Filters.** Defender XDR filters incidents on `lastUpdateTime`, `createdTime`,
//!   `status`, `assignedTo`; Graph also on `severity`, `classification` and
//!   `determination`. `/api/alerts` filters on `alertCreationTime`, `lastUpdateTime`,
//!   `incidentId`, `id`, `investigationId`, `assignedTo`, `detectionSource`,
//!   `lastEventTime`, `status`, `severity`, `category` (numbers unquoted); `alerts_v2` on
//!   `assignedTo`, `classification`, `determination`, `createdDateTime`,
//!   `lastUpdateDateTime`, `severity`, `serviceSource`, `status`. Any other property is a
//!   400.
//! - **Alerts are the incidents' alerts.** An alert update (either surface) is what the
//!   incident's Defender XDR view and Graph's `$expand=alerts` show; the incident's own
//!   `lastUpdateTime` stays.
//!
//! ## Hostile input and control
//!
//! The emulator is a server people run next to their automation, so no request can take
//! it down: an incidents or alerts `$filter` over the [`FilterLimits`] (100 levels of nesting, 1,000
//! nodes) gets 400 "The query specified in the URI is not valid. The recursion limit has
//! been exceeded." (or the node count message); a hunting query over the
//! [`QueryLimits`] (nesting 100, 200 operators, 1,000 columns, strings of 1 MiB, 512 MiB
//! of materialised values, 5 s of evaluation) gets the service's 400
//! "Query execution has exceeded the allowed limits. The query execution was
//! preempted..." ([`PREEMPTED`]). Both are set on the builder
//! ([`EmulatorBuilder::filter_limits`], [`EmulatorBuilder::query_limits`]).
//!
//! The control requests that change state need the header [`CONTROL_HEADER`]`: 1` and
//! `Authorization: Bearer <a token from the emulator's token endpoint>` (403 without the
//! header, 401 without a valid token), so a web page cannot reset the emulator
//! cross-site. When the emulator listens on an address that is not loopback they are
//! refused with 403 unless [`EmulatorBuilder::allow_remote_control`]
//! (`--allow-remote-control`). The reads stay open: a cross-site page cannot read their
//! answers, and monitoring needs no token.
//!
//! ## Quotas
//!
//! Calls are counted per (tenant, app, API group) — `hunting` for the three hunting paths,
//! `incidents` for incident list, get, update and comments, `alerts` for alert list, get,
//! update and comments on both surfaces — against every call window of the [`Limits`], in
//! [`WindowMode::Sliding`] (exact) or [`WindowMode::Fixed`] windows. A call over any window
//! gets 429 with the real Defender body
//! (`API calls quota exceeded! maximum allowed 45 per 00:01:00 You can send requests again
//! in 8 seconds.`, target the tenant id) and `Retry-After`; Graph paths get Graph's
//! `TooManyRequests` body. Throttled calls are not counted. Hunting queries are also
//! charged a simulated running time ([`CostModel`]) against every `hunting.runtime`
//! window per tenant: Microsoft allocates hunting CPU to the tenant ("Each tenant is
//! allocated CPU resources"), so all apps of a tenant share one running-time budget,
//! while their calls are counted per app. [`EmulatorBuilder::runtime_scope`] with
//! [`RuntimeScope::App`] (`--runtime-per-app`) gives each (tenant, app) its own budget
//! instead; `/_emulator/stats` then shows each app's own charge, and otherwise the
//! tenant's. Once a budget is spent, hunting calls get 429 with
//! "You have exceeded processing resources allocated to this tenant. You can run queries
//! again in hh:mm:ss." until the window frees up.
//!
//! The order of checks on an API call: route (404/405), fault injection, authentication
//! (401/403), body size (413), call quota and running-time budget (429), then content type
//! (415), JSON and request validation (400). So a malformed request that passed the quota
//! still counts as a call, as at a real gateway.
//!
//! ## Dashboard
//!
//! A browser pointed at the emulator's base URL gets a page that shows, live, what
//! [`Stats`] holds: a chart per (tenant, app, group) of the calls in the shortest call
//! window over the last ten minutes against the limit's line, with a mark for each 429 of
//! a quota or budget; a bar per window (calls and running time) against its limit; the
//! faults injected by kind; and the last 200 requests with their status, latency and
//! fault. It is one file written for the emulator, served with a content security policy
//! that lets it load nothing and call only the emulator, so it works offline. Opening it
//! changes nothing and counts as no request. To feed it, [`Stats`] keeps the last 200
//! answered requests ([`Stats::recent`]), the last hour's 429s ([`Stats::throttles`], at
//! most 5,000) and each key's last 1,000 admitted calls
//! ([`KeyStats::admitted_unix_ms`]), recorded under the locks a request already takes.
//!
//! ## Incidents that change
//!
//! Incidents are listed newest-created first (by id, which grows with creation time), in
//! pages of `$top` followed by `@odata.nextLink` with `$skip`. With
//! [`EmulatorBuilder::churn`] (`--churn RATE`) they also change while clients read them:
//! RATE events per second, each moving an incident's `lastUpdateTime` with a change of
//! its status, assignee, severity or comments, or (one in four) creating an incident,
//! which then lists first and shifts every later page by one. The history is drawn from
//! the seed and stamped on the emulator's clock ([`Churn`]); [`EmulatorBuilder::churn_for`]
//! (`--churn-for`) stops it, and `/_emulator/stats` counts its events.
//!
//! ## Example
//!
//! ```
//! use defender_emulator::{Clock, Emulator, WindowMode, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
//! use defender_core::Limits;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let clock = Clock::manual(1_767_225_600_000); // 2026-01-01T00:00:00Z
//! let emulator = Emulator::builder()
//!     .limits(Limits::parse("2021,hunting.calls=2/1m").unwrap())
//!     .window_mode(WindowMode::Sliding)
//!     .rows_per_table(500)
//!     .clock(clock.clone())
//!     .spawn()
//!     .await
//!     .unwrap();
//! // Point a client's API base *and* login base at this one URL, with the built-in
//! // credentials (tenant `emulator`, client `emulator-client`, secret `emulator-secret`).
//! let base = emulator.base_url();
//! assert!(base.starts_with("http://127.0.0.1:"));
//! let _ = (DEFAULT_TENANT, DEFAULT_CLIENT_ID, DEFAULT_SECRET);
//! clock.advance(std::time::Duration::from_secs(60)); // frees every one-minute window
//! assert_eq!(emulator.stats().requests, 0);
//! emulator.shutdown().await;
//! # });
//! ```

#![forbid(unsafe_code)]

mod alerts;
mod churn;
mod cli;
mod clock;
mod faults;
mod filter;
mod form;
mod hunting;
mod incidents;
mod quota;
mod rng;
mod server;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use churn::Churn;
pub use cli::{serve_until_ctrl_c, CredentialArgs, EmulatorArgs};
pub use clock::Clock;
pub use defender_core::limits::{ApiGroup, Limits};
pub use defender_emulator_kql::{Limit, QueryLimits, PREEMPTED};
pub use faults::{FaultKind, FaultSpec, FaultSpecError, ODD_429_VARIANTS};
pub use filter::FilterLimits;
pub use hunting::{CostModel, WARNING_HEADER};
pub use quota::{RuntimeScope, WindowMode};
pub use server::{KeyStats, RequestRecord, Stats, ThrottleMark, WindowStats};

/// The built-in app's tenant id.
pub const DEFAULT_TENANT: &str = "emulator";
/// The built-in app's client id.
pub const DEFAULT_CLIENT_ID: &str = "emulator-client";
/// The built-in app's client secret.
pub const DEFAULT_SECRET: &str = "emulator-secret";
/// The default token lifetime (`expires_in`), as the identity platform issues.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// The default size cap of a hunting result body (Defender for Endpoint documents 124 MB).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 124 * 1024 * 1024;
/// The default size cap of a request body.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The default number of rows per synthetic table.
pub const DEFAULT_ROWS_PER_TABLE: usize = 10_000;
/// The default number of generated incidents.
pub const DEFAULT_INCIDENTS: usize = 300;
/// The header a control request that changes state (`POST /_emulator/reset`,
/// `POST /_emulator/clock/advance`) must carry, with the value [`CONTROL_HEADER_VALUE`],
/// besides `Authorization: Bearer <a token from the emulator's token endpoint>`.
///
/// A web page cannot make a browser send a custom header cross-site without a CORS
/// preflight (which the emulator never approves), so a page the user visits cannot
/// reset the emulator or move its clock.
pub const CONTROL_HEADER: &str = "X-Emulator-Control";
/// The value of [`CONTROL_HEADER`].
pub const CONTROL_HEADER_VALUE: &str = "1";
/// The default and largest page of an incidents list (`$top` at most 100).
pub const MAX_PAGE_SIZE: usize = 100;
/// The default and largest page of a Graph incidents list (`$top` at most 50,
/// API-FACTS section 6).
pub const GRAPH_MAX_PAGE_SIZE: usize = 50;
/// The largest `$top` of Defender's alert list, and its default page ("`$top` with max
/// value of 10,000", "Maximum page size is 10,000": DD defender-endpoint/api/get-alerts.md).
pub const ALERTS_MAX_PAGE_SIZE: usize = 10_000;
/// The largest page of Graph's `alerts_v2` list. Graph documents no maximum `$top` for
/// it, only `@odata.nextLink` paging (GD security-list-alerts_v2.md), so a larger `$top`
/// is not refused: it is served in pages of this size with a next link. The number is
/// ours.
pub const GRAPH_ALERTS_PAGE_SIZE: usize = 200;

/// Every application permission the emulator knows (API-FACTS section 5; the alert
/// permissions from DD defender-endpoint/api/get-alerts.md and GD
/// security-list-alerts_v2.md).
pub const ALL_PERMISSIONS: [&str; 11] = [
    "AdvancedHunting.Read.All",
    "Incident.Read.All",
    "Incident.ReadWrite.All",
    "AdvancedQuery.Read.All",
    "ThreatHunting.Read.All",
    "SecurityIncident.Read.All",
    "SecurityIncident.ReadWrite.All",
    "Alert.Read.All",
    "Alert.ReadWrite.All",
    "SecurityAlert.Read.All",
    "SecurityAlert.ReadWrite.All",
];

/// An app registration the token endpoint accepts (its `Debug` leaves the secret out).
#[derive(Clone, PartialEq, Eq)]
pub struct App {
    /// The tenant id (the `{tenant}` of the token path; quotas are per tenant and app).
    pub tenant: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub secret: String,
    /// The application permissions granted (see [`ALL_PERMISSIONS`]).
    pub permissions: Vec<String>,
}

impl App {
    /// An app with the given permissions.
    pub fn new(tenant: &str, client_id: &str, secret: &str, permissions: &[&str]) -> App {
        App {
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// The built-in app: tenant [`DEFAULT_TENANT`], client [`DEFAULT_CLIENT_ID`], secret
    /// [`DEFAULT_SECRET`], every permission.
    pub fn builtin() -> App {
        App::new(
            DEFAULT_TENANT,
            DEFAULT_CLIENT_ID,
            DEFAULT_SECRET,
            &ALL_PERMISSIONS,
        )
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Where a secret or a PEM document comes from: given, or a file read at spawn.
#[derive(Clone)]
pub(crate) enum Source {
    Given(String),
    File(PathBuf),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Given(_) => f.write_str("Given(<redacted>)"),
            Source::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl Source {
    /// The text (a file's trimmed of surrounding white space), or why it cannot be read.
    pub(crate) fn read(&self, what: &str) -> Result<String, EmulatorError> {
        match self {
            Source::Given(s) => Ok(s.clone()),
            Source::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| {
                    EmulatorError::Config(format!("could not read the {what} {}: {e}", p.display()))
                }),
        }
    }
}

/// How the emulator serves HTTPS ([`EmulatorBuilder::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// A certificate for `localhost` and `127.0.0.1` made at start (its PEM is
    /// [`EmulatorHandle::tls_certificate_pem`]), written to `cert_out` when given.
    Generated {
        /// Where to write the certificate (PEM) for clients to trust.
        cert_out: Option<PathBuf>,
    },
    /// A certificate chain and its private key from PEM files.
    Files {
        /// The certificate chain (PEM).
        cert: PathBuf,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The listening socket could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// Serving failed.
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// The emulator's settings (what [`EmulatorBuilder`] collects).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub limits: Limits,
    pub window_mode: WindowMode,
    pub runtime_scope: RuntimeScope,
    pub retry_after_header: bool,
    pub again_in_sentence: bool,
    pub token_lifetime: Duration,
    pub apps: Vec<App>,
    pub builtin_app: bool,
    pub seed: u64,
    pub rows_per_table: usize,
    pub table_rows: Vec<(String, usize)>,
    pub span_days: u32,
    pub data_ahead: Duration,
    pub incidents: usize,
    pub churn: Option<Churn>,
    pub faults: FaultSpec,
    pub clock: Option<Clock>,
    pub cost: CostModel,
    pub max_result_bytes: usize,
    pub max_request_bytes: usize,
    pub filter_limits: FilterLimits,
    pub query_limits: QueryLimits,
    pub allow_remote_control: bool,
    pub addr: SocketAddr,
    /// The built-in app's tenant, client id and secret, when not the defaults.
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub secret: Option<Source>,
    /// The certificate (PEM) whose key signs the built-in app's client assertions.
    pub client_certificate: Option<Source>,
    /// Where to write the federated token the built-in app accepts as an assertion.
    pub federated_token_out: Option<PathBuf>,
    /// The `X-IDENTITY-HEADER` of the App Service managed identity endpoint.
    pub identity_header: Option<Source>,
    pub tls: Option<Tls>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            window_mode: WindowMode::Sliding,
            runtime_scope: RuntimeScope::Tenant,
            retry_after_header: true,
            again_in_sentence: true,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            apps: Vec::new(),
            builtin_app: true,
            seed: 1,
            rows_per_table: DEFAULT_ROWS_PER_TABLE,
            table_rows: Vec::new(),
            span_days: 40,
            data_ahead: Duration::ZERO,
            incidents: DEFAULT_INCIDENTS,
            churn: None,
            faults: FaultSpec::none(),
            clock: None,
            cost: CostModel::default(),
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            filter_limits: FilterLimits::default(),
            query_limits: QueryLimits::default(),
            allow_remote_control: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tenant: None,
            client_id: None,
            secret: None,
            client_certificate: None,
            federated_token_out: None,
            identity_header: None,
            tls: None,
        }
    }
}

/// The emulator. Start one with [`Emulator::builder`] (see the crate docs for an example).
///
/// ```
/// use defender_emulator::{Emulator, FaultSpec, WindowMode};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let emu = Emulator::builder()
///     .window_mode(WindowMode::Fixed)
///     .faults(FaultSpec::parse("503=0.1").unwrap())
///     .rows_per_table(100)
///     .spawn()
///     .await
///     .unwrap();
/// println!("token endpoint: {}/emulator/oauth2/v2.0/token", emu.base_url());
/// emu.shutdown().await;
/// # });
/// ```
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// A builder with the defaults: the 2021 limits, sliding windows, `Retry-After` and the
    /// "again in" sentence on, the built-in app, seed 1, 10,000 rows per table, 300
    /// incidents, no faults, the real clock, `127.0.0.1:0`.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder {
            config: Config::default(),
        }
    }
}

/// Configures and starts an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    pub(crate) config: Config,
}

impl EmulatorBuilder {
    /// The limits to enforce (default: the 2021 terms).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Fixed or sliding windows (default sliding).
    pub fn window_mode(mut self, mode: WindowMode) -> Self {
        self.config.window_mode = mode;
        self
    }

    /// Who shares a running-time budget (default [`RuntimeScope::Tenant`]: all apps of a
    /// tenant, as Microsoft documents; [`RuntimeScope::App`]: each (tenant, app) alone).
    pub fn runtime_scope(mut self, scope: RuntimeScope) -> Self {
        self.config.runtime_scope = scope;
        self
    }

    /// Whether 429s carry `Retry-After: S` (default true).
    pub fn retry_after_header(mut self, on: bool) -> Self {
        self.config.retry_after_header = on;
        self
    }

    /// Whether Defender 429 messages end with " You can send requests again in S
    /// seconds." (default true).
    pub fn again_in_sentence(mut self, on: bool) -> Self {
        self.config.again_in_sentence = on;
        self
    }

    /// The lifetime of issued tokens (default 3599 s).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.token_lifetime = lifetime;
        self
    }

    /// Registers an app (in addition to the built-in one unless
    /// [`EmulatorBuilder::without_builtin_app`]).
    pub fn app(mut self, app: App) -> Self {
        self.config.apps.push(app);
        self
    }

    /// Does not register the built-in app.
    pub fn without_builtin_app(mut self) -> Self {
        self.config.builtin_app = false;
        self
    }

    /// The seed of the synthetic data, the incidents and (unless the fault spec names its
    /// own) the faults (default 1).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Rows in each synthetic table (default 10,000).
    pub fn rows_per_table(mut self, rows: usize) -> Self {
        self.config.rows_per_table = rows;
        self
    }

    /// Rows in one table, overriding [`EmulatorBuilder::rows_per_table`].
    pub fn table_rows(mut self, table: &str, rows: usize) -> Self {
        self.config.table_rows.retain(|(t, _)| t != table);
        self.config.table_rows.push((table.to_owned(), rows));
        self
    }

    /// Ends the synthetic tables this long after the clock's start instead of at it
    /// (default: zero), so that a table grows as the clock moves: a query over the time
    /// since its last run finds the rows stamped meanwhile, as a scheduled hunt does.
    pub fn data_ahead(mut self, ahead: Duration) -> Self {
        self.config.data_ahead = ahead;
        self
    }

    /// Days of synthetic history before the clock's start (default 40, so some rows are
    /// older than the 30-day lookback).
    pub fn span_days(mut self, days: u32) -> Self {
        self.config.span_days = days;
        self
    }

    /// How many incidents to generate (default 300), each with one to three alerts.
    pub fn incidents(mut self, count: usize) -> Self {
        self.config.incidents = count;
        self
    }

    /// Makes incidents churn: `rate` events per second, each changing an incident
    /// (status, assignee, severity or a comment; its `lastUpdateTime` moves) or, one in
    /// four, creating one, drawn from the seed (default: none). See [`Churn`].
    pub fn churn(mut self, rate: f64) -> Self {
        let duration = self.config.churn.and_then(|c| c.duration);
        self.config.churn = Some(Churn { rate, duration });
        self
    }

    /// Stops the churn this long after the clock started (default: never).
    pub fn churn_for(mut self, duration: Duration) -> Self {
        let rate = self.config.churn.map_or(0.0, |c| c.rate);
        self.config.churn = Some(Churn {
            rate,
            duration: Some(duration),
        });
        self
    }

    /// Faults to inject (default none).
    pub fn faults(mut self, faults: FaultSpec) -> Self {
        self.config.faults = faults;
        self
    }

    /// The clock (default: a real clock started at spawn).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = Some(clock);
        self
    }

    /// The running-time cost model of hunting queries.
    pub fn cost_model(mut self, cost: CostModel) -> Self {
        self.config.cost = cost;
        self
    }

    /// The size cap of a hunting result body; larger results get 400 (default 124 MiB).
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.config.max_result_bytes = bytes;
        self
    }

    /// The size cap of a request body; larger requests get 413 (default 1 MiB).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config.max_request_bytes = bytes;
        self
    }

    /// How deep and how large an incidents or alerts `$filter` may be before it gets 400
    /// (default [`FilterLimits::default`]: 100 levels, 1,000 nodes).
    pub fn filter_limits(mut self, limits: FilterLimits) -> Self {
        self.config.filter_limits = limits;
        self
    }

    /// What one hunting query may cost before it gets the service's 400 "Query execution
    /// has exceeded the allowed limits. The query execution was preempted..." (default
    /// [`QueryLimits::default`]: nesting 100, 200 operators, 1,000 columns, strings of
    /// 1 MiB, 512 MiB of materialised values, 5 s of evaluation).
    pub fn query_limits(mut self, limits: QueryLimits) -> Self {
        self.config.query_limits = limits;
        self
    }

    /// Serves the control requests that change state (`POST /_emulator/reset`,
    /// `POST /_emulator/clock/advance`) even when the emulator listens on an address that
    /// is not loopback (default false: there they get 403). They still need
    /// [`CONTROL_HEADER`] and a bearer token.
    pub fn allow_remote_control(mut self, allow: bool) -> Self {
        self.config.allow_remote_control = allow;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.config.addr = addr;
        self
    }

    /// The built-in app's tenant id (default [`DEFAULT_TENANT`]).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.config.tenant = Some(tenant.into());
        self
    }

    /// The built-in app's client id (default [`DEFAULT_CLIENT_ID`]); also the client id
    /// of the managed identity.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.config.client_id = Some(client_id.into());
        self
    }

    /// The built-in app's client secret (default [`DEFAULT_SECRET`]).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.config.secret = Some(Source::Given(secret.into()));
        self
    }

    /// Reads the built-in app's client secret from this file at spawn (trimmed).
    pub fn client_secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.secret = Some(Source::File(path.into()));
        self
    }

    /// Registers a certificate (PEM) for the built-in app: client assertions (JWTs signed
    /// RS256 or PS256) verified with its public key are accepted instead of the secret.
    pub fn client_certificate_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.client_certificate = Some(Source::Given(pem.into()));
        self
    }

    /// [`EmulatorBuilder::client_certificate_pem`] from a PEM file read at spawn.
    pub fn client_certificate_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.client_certificate = Some(Source::File(path.into()));
        self
    }

    /// Writes a federated token to this file at spawn (workload identity's
    /// `AZURE_FEDERATED_TOKEN_FILE`); the built-in app accepts exactly that token as its
    /// client assertion.
    pub fn federated_token_out(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.federated_token_out = Some(path.into());
        self
    }

    /// The value the App Service managed identity endpoint (`/msi/token`) requires in
    /// `X-IDENTITY-HEADER` (default: a random one, [`EmulatorHandle::identity_header`]).
    pub fn identity_header(mut self, value: impl Into<String>) -> Self {
        self.config.identity_header = Some(Source::Given(value.into()));
        self
    }

    /// Serves HTTPS instead of HTTP (default HTTP).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Generates the data, binds the socket and starts serving on the current tokio
    /// runtime.
    pub async fn spawn(self) -> Result<EmulatorHandle, EmulatorError> {
        let config = self.config;
        let addr = config.addr;
        let tls = match &config.tls {
            Some(t) => Some(tls::server_config(t)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let shared = server::Shared::new(config, local, tls.is_some())?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = server::router(shared.clone());
        let mut rx2 = rx.clone();
        let tls_pem = tls.as_ref().map(|(_, pem)| pem.clone());
        let task = match tls {
            Some((server_config, _)) => tokio::spawn(tls::serve(listener, server_config, app, rx2)),
            None => tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx2.wait_for(|v| *v).await;
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }),
        };
        Ok(EmulatorHandle {
            tls_pem,
            addr: local,
            shared,
            shutdown: tx,
            task: Some(task),
        })
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct EmulatorHandle {
    tls_pem: Option<String>,
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl EmulatorHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of every surface and of the token endpoint, such as
    /// `http://127.0.0.1:8400` (no trailing slash; `https://` with TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The v2 token endpoint of the built-in app's tenant.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url(), self.tenant())
    }

    /// The built-in app's tenant id (the one given, else [`DEFAULT_TENANT`]).
    pub fn tenant(&self) -> &str {
        &self.shared.primary().tenant
    }

    /// The built-in app's client id (the one given, else [`DEFAULT_CLIENT_ID`]).
    pub fn client_id(&self) -> &str {
        &self.shared.primary().client_id
    }

    /// Whether the built-in app's secret is the default one ([`DEFAULT_SECRET`]).
    pub fn default_secret(&self) -> bool {
        self.shared.primary().secret == DEFAULT_SECRET
    }

    /// The value `/msi/token` requires in `X-IDENTITY-HEADER`.
    pub fn identity_header(&self) -> &str {
        self.shared.identity_header()
    }

    /// The certificate (PEM) served over HTTPS, when TLS is on.
    pub fn tls_certificate_pem(&self) -> Option<&str> {
        self.tls_pem.as_deref()
    }

    /// Requests, 429s, faults and window usage so far (also `GET /_emulator/stats`).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The emulator's clock (advance it when it is manual).
    pub fn clock(&self) -> Clock {
        self.shared.clock.clone()
    }

    /// Clears quotas, running-time budgets, stats and the fault sequence (also
    /// `POST /_emulator/reset` with [`CONTROL_HEADER`] and a token). Incidents and tokens
    /// are kept.
    pub fn reset(&self) {
        self.shared.reset(false);
    }

    /// [`EmulatorHandle::reset`], and restores the generated incidents and their alerts.
    pub fn reset_all(&self) {
        self.shared.reset(true);
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            // Open keep-alive connections may hold graceful shutdown; do not wait long.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Waits until the server stops (after [`EmulatorHandle::shutdown`] from elsewhere,
    /// or a failure).
    pub async fn wait(mut self) -> Result<(), EmulatorError> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r.map_err(EmulatorError::Serve),
                Err(e) => Err(EmulatorError::Serve(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
