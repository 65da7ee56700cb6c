//! The engine's configuration.

use super::*;

/// How the engine gets tokens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Auth {
    /// The engine runs the client-credentials exchange itself.
    ClientCredentials(ClientCredentials),
    /// The caller supplies tokens: on [`Event::NeedToken`], answer with
    /// [`Engine::handle_token`].
    External,
    /// Tokens from a [`TokenSource`](crate::credential::TokenSource) (a certificate, workload or managed identity, the
    /// Azure CLI, the `auto` chain): the engine asks with [`Event::NeedToken`] as for
    /// [`Auth::External`], and the dispatcher runs the source's
    /// [`TokenExchange`](crate::credential::TokenExchange) as work
    /// ([`Work::Token`](crate::dispatch::Work::Token)); `token_timeout` bounds it.
    Source(crate::credential::TokenSource),
}

/// Who decides whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QuotaMode {
    /// The engine's own exact quota and running-time budget (one process).
    #[default]
    Local,
    /// A store shared by several processes (for example `defender-redis`): the engine asks
    /// it through [`Output::Quota`] and [`Engine::handle_admission`], and tells it what the
    /// server said and what each call ran. The store checks every call window and the
    /// running-time budget together; the engine's own windows are then not consulted.
    Shared,
}

/// The margin added to every window by default, to absorb network jitter.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(500);

/// Everything the engine needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The API surface.
    pub surface: Surface,
    /// Where calls go.
    pub endpoints: Endpoints,
    /// How tokens are obtained.
    pub auth: Auth,
    /// The limits to enforce.
    pub limits: Limits,
    /// Added to every window to absorb network jitter (default 500 ms). With
    /// `learn_margin`, the ceiling of the learned margin.
    pub margin: Duration,
    /// Learn the margin from the round trips seen (see [`crate::margin`]): from
    /// `margin` down to the spread of latencies, and wider at once after a 429. Off (the
    /// default for now): `margin` is used as it is. On a loaded host the first round
    /// trips can understate the jitter to come, and a 429 is the first sign; the
    /// default changes once the floor is measured on such hosts.
    pub learn_margin: bool,
    /// The running time reserved for a query before its first result is seen (later
    /// reservations use the longest of the latest 32 observed times).
    pub runtime_estimate: Duration,
    /// A `User-Agent` header value.
    pub user_agent: String,
    /// Who admits calls (default [`QuotaMode::Local`]).
    pub quota: QuotaMode,
    /// The longest wait a server may impose (default one day): a longer `Retry-After`
    /// or "again in" is cut to this, and a learned limit whose period is longer is
    /// ignored with a [`Event::Warning`], so one odd 429 cannot block calls for years.
    pub max_server_wait: Duration,
    /// How long the running-time budget is taken as spent when the server says so
    /// without a retry time (default 15 minutes: Defender XDR frees CPU quota per
    /// 15-minute cycle).
    pub runtime_exhausted_wait: Duration,
    /// How long a shared store may take to answer an admission before it counts as
    /// unavailable (default 10 s).
    pub store_timeout: Duration,
    /// How long a token request (or, with [`Auth::External`], the caller's token
    /// provider) may take before the fetch counts as failed (default 30 s).
    pub token_timeout: Duration,
    /// How far the server's clock may be behind ours when a comment read back after an
    /// ambiguous update is matched by its time (default 60 s).
    pub clock_skew: Duration,
}

/// The default of [`Config::max_server_wait`]: one day.
pub const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(86_400);

impl Config {
    /// The documented endpoints (global cloud) and limits of `surface`.
    pub fn new(surface: Surface, auth: Auth) -> Config {
        Config {
            surface,
            endpoints: Endpoints::new(surface, crate::surface::Cloud::Global),
            auth,
            limits: surface.preset().limits(),
            margin: DEFAULT_MARGIN,
            learn_margin: false,
            runtime_estimate: Duration::from_secs(1),
            user_agent: concat!("defender-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
            quota: QuotaMode::Local,
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            runtime_exhausted_wait: Duration::from_secs(900),
            store_timeout: Duration::from_secs(10),
            token_timeout: DEFAULT_TOKEN_TIMEOUT,
            clock_skew: Duration::from_secs(60),
        }
    }
}
