//! The engine: every call's life, from submission to one final event.
//!
//! ```text
//!  submit ──► Queued ──(token fresh, quota + budget admit)──► Transmit ──► InFlight
//!               ▲  │                                                        │
//!               │  └─(wait > max_wait)──► Failed(QuotaWait)                  │
//!               │                                                           ▼
//!               └──(429 / 5xx / transport / 401 once: retry per policy)── response
//!                                                     2xx ──► Completed    other ──► Failed
//! ```
//!
//! Methods come in two kinds, as in quinn-proto: inputs are `handle_*` (and `submit`,
//! `cancel`), outputs come from [`Engine::poll_output`]. **After every input, drain
//! `poll_output` until it returns [`Output::Wait`].** `Wait(Some(t))` is always later than
//! the latest `now` the engine was given; a spurious or early `handle_timeout` is a
//! harmless no-op. Every submitted call ends in exactly one `Completed` or `Failed` event.
//!
//! ```
//! use defender_core::engine::{Auth, Call, Config, Engine, Event, Output};
//! use defender_core::policy::{Failure, Policy, Retry};
//! use defender_core::hunting::HuntRequest;
//! use defender_core::token::{ClientCredentials, Secret};
//! use defender_core::{Endpoints, Limits, Surface};
//! use std::time::{Duration, Instant};
//!
//! #[derive(Debug)]
//! struct NoRetry;
//! impl Policy for NoRetry {
//!     fn max_wait(&self) -> Duration { Duration::from_secs(60) }
//!     fn retry(&mut self, _: &Failure) -> Retry { Retry::Stop }
//! }
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let config = Config::new(
//!     Surface::DefenderXdr,
//!     Auth::ClientCredentials(ClientCredentials::new("tenant", "app", Secret::new("secret"))),
//! );
//! let mut engine = Engine::new(config, Box::new(NoRetry), now).unwrap();
//! let id = engine.submit(Call::Hunt(HuntRequest::new("DeviceProcessEvents | take 1")), now);
//! // The first thing it asks for is a token.
//! let Output::Transmit(t) = engine.poll_output() else { panic!() };
//! assert!(t.request.uri().path().ends_with("/oauth2/v2.0/token"));
//! let token = http::Response::new(br#"{"access_token":"x","expires_in":3599}"#.to_vec());
//! engine.handle_response(t.id, token, now, std::time::UNIX_EPOCH);
//! // Then the hunt itself.
//! let Output::Transmit(t) = engine.poll_output() else { panic!() };
//! assert_eq!(t.request.uri().path(), "/api/advancedhunting/run");
//! let body = br#"{"Schema":[{"Name":"a","Type":"String"}],"Results":[{"a":"b"}]}"#.to_vec();
//! engine.handle_response(t.id, http::Response::new(body), now, std::time::UNIX_EPOCH);
//! let Output::Event(Event::Completed { id: done, .. }) = engine.poll_output() else { panic!() };
//! assert_eq!(done, id);
//! assert!(matches!(engine.poll_output(), Output::Wait(None)));
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::alerts::{self, Alert, AlertId, AlertPage, AlertQuery, AlertUpdate};
use crate::change::{Change, Record};
use crate::error::{ApiError, Error, TransportError, TransportErrorKind};
use crate::hunting::{Column, HuntRequest, HuntResponse, HuntResult, HuntSummary, Stats};
use crate::incidents::{
    max_top, CommentCollection, Incident, IncidentId, IncidentPage, IncidentQuery, IncidentUpdate,
};
use crate::limits::{format_duration, ApiGroup, CallLimit, Limits};
use crate::policy::{Failure, FailureKind, Policy, Retry, Truncation};
use crate::quota::{Quota, Ticket, WindowUsage};
use crate::runtime::{Reservation, RunningTime};
use crate::stream::{DecodeError, DecodeEvent, RowDecoder};
use crate::surface::{Endpoints, Surface};
use crate::throttle::Throttle;
use crate::token::{AccessToken, ClientCredentials};

/// How the engine gets tokens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Auth {
    /// The engine runs the client-credentials exchange itself.
    ClientCredentials(ClientCredentials),
    /// The caller supplies tokens: on [`Event::NeedToken`], answer with
    /// [`Engine::handle_token`].
    External,
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
    /// Added to every window to absorb network jitter (default 500 ms).
    pub margin: Duration,
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
            runtime_estimate: Duration::from_secs(1),
            user_agent: concat!("defender-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
            quota: QuotaMode::Local,
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            runtime_exhausted_wait: Duration::from_secs(900),
            store_timeout: Duration::from_secs(10),
            token_timeout: Duration::from_secs(30),
            clock_skew: Duration::from_secs(60),
        }
    }
}

/// A call to make.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Call {
    /// Run a hunting query.
    Hunt(HuntRequest),
    /// Run one window of a ranged hunt: a result at the row cap is flagged, never an
    /// error, whatever the policy says (the range planner bisects it).
    HuntWindow(HuntRequest),
    /// Run a hunting query whose rows the transport hands to the caller while the body
    /// arrives: its transmit has [`Transmit::stream`] set; a 2xx body goes through a
    /// [`HuntStreamer`] and ends with [`Engine::handle_stream_end`]. Ends with
    /// [`Value::HuntStreamed`].
    HuntStream(HuntRequest),
    /// List one page of incidents.
    ListIncidents(IncidentQuery),
    /// Follow an `@odata.nextLink` (checked to point at the API's own host).
    NextIncidents(String),
    /// Get one incident.
    GetIncident(IncidentId),
    /// Update one incident.
    UpdateIncident(IncidentId, IncidentUpdate),
    /// List one page of alerts.
    ListAlerts(AlertQuery),
    /// Follow an alerts `@odata.nextLink` (checked to point at the API's own host).
    NextAlerts(String),
    /// Get one alert.
    GetAlert(AlertId),
    /// Update one alert.
    UpdateAlert(AlertId, AlertUpdate),
}

impl Call {
    /// The API group the call counts against.
    pub fn group(&self) -> ApiGroup {
        match self {
            Call::Hunt(_) | Call::HuntWindow(_) | Call::HuntStream(_) => ApiGroup::Hunting,
            Call::ListIncidents(_)
            | Call::NextIncidents(_)
            | Call::GetIncident(_)
            | Call::UpdateIncident(..) => ApiGroup::Incidents,
            Call::ListAlerts(_)
            | Call::NextAlerts(_)
            | Call::GetAlert(_)
            | Call::UpdateAlert(..) => ApiGroup::Alerts,
        }
    }

    /// Whether the call changes something (an update): such a call is never resent
    /// blindly.
    pub fn is_update(&self) -> bool {
        matches!(self, Call::UpdateIncident(..) | Call::UpdateAlert(..))
    }
}

/// What a call produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A hunting result.
    Hunt(HuntResult),
    /// A page of incidents, and the call that fetches the next page, if there is one.
    Incidents {
        /// The page.
        page: IncidentPage,
        /// The next page's call.
        next: Option<Call>,
    },
    /// One incident.
    Incident(Box<Incident>),
    /// A page of alerts, and the call that fetches the next page, if there is one.
    Alerts {
        /// The page.
        page: AlertPage,
        /// The next page's call.
        next: Option<Call>,
    },
    /// One alert.
    Alert(Box<Alert>),
    /// The end of a streamed hunt: its rows went to the caller as they arrived.
    HuntStreamed(HuntSummary),
}

/// A call's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// A transmission's handle; answer it with `handle_response` or `handle_transport_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub u64);

/// A request for the transport to perform. Its `Debug` shows the method, the URL, the
/// header names and the body's length: never a header's value or the body (a bearer
/// token, a client secret).
pub struct Transmit {
    /// Answer with this id.
    pub id: SendId,
    /// The call it serves; `None` for a token request.
    pub call: Option<CallId>,
    /// The API group, `None` for a token request.
    pub group: Option<ApiGroup>,
    /// Which attempt of the call this is (1 for the first).
    pub attempt: u32,
    /// The request. Its `Authorization` header holds a secret: never log it.
    pub request: http::Request<Vec<u8>>,
    /// Give up on the request after this long and report a timeout.
    pub timeout: Duration,
    /// A streamed hunt: when the status is 2xx, feed the body to a [`HuntStreamer`] as it
    /// arrives, hand its rows to the caller, and end with [`Engine::handle_stream_end`]
    /// (other statuses: read the body and call `handle_response` as usual).
    pub stream: bool,
}

impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self
            .request
            .headers()
            .keys()
            .map(http::HeaderName::as_str)
            .collect();
        f.debug_struct("Transmit")
            .field("id", &self.id)
            .field("call", &self.call)
            .field("group", &self.group)
            .field("attempt", &self.attempt)
            .field("method", self.request.method())
            .field("uri", self.request.uri())
            .field("headers", &headers)
            .field("body_len", &self.request.body().len())
            .field("timeout", &self.timeout)
            .field("stream", &self.stream)
            .finish()
    }
}

/// How a streamed hunting body ended (see [`Call::HuntStream`]).
#[derive(Debug)]
pub enum StreamEnd {
    /// The body was read to its end and decoded.
    Complete {
        /// The columns.
        schema: Vec<Column>,
        /// The statistics, when the surface sent them.
        stats: Option<Stats>,
        /// Rows handed to the caller.
        rows: u64,
    },
    /// The network failed after `rows` rows were handed to the caller.
    Transport {
        /// The failure.
        error: TransportError,
        /// Rows already handed out (with none, the call is retried like any other).
        rows: u64,
    },
    /// The body did not decode (the error says after how many rows).
    Decode(DecodeError),
}

/// What a streamed body yields, in order: the columns, then rows.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The columns.
    Schema(Vec<Column>),
    /// One row.
    Row(crate::hunting::Row),
}

/// The transports' side of a streamed hunt: feed it the body's chunks, take its items,
/// and hand its [`StreamEnd`] to [`Engine::handle_stream_end`]. It holds at most one
/// element of the document (see [`RowDecoder`]).
#[derive(Debug, Default)]
pub struct HuntStreamer {
    decoder: RowDecoder,
    schema: Vec<Column>,
    stats: Option<Stats>,
}

impl HuntStreamer {
    /// A streamer.
    pub fn new() -> HuntStreamer {
        HuntStreamer::default()
    }

    /// Adds a chunk of the body; then take items with [`HuntStreamer::next_item`].
    pub fn feed(&mut self, chunk: &[u8]) {
        self.decoder.feed(chunk);
    }

    /// The next item, `Ok(None)` when more bytes are needed. On an error, end the stream
    /// with [`StreamEnd::Decode`].
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, DecodeError> {
        loop {
            match self.decoder.poll()? {
                None => return Ok(None),
                Some(DecodeEvent::Stats(s)) => self.stats = Some(s),
                Some(DecodeEvent::Schema(s)) => {
                    self.schema = s.clone();
                    return Ok(Some(StreamItem::Schema(s)));
                }
                Some(DecodeEvent::Row(r)) => return Ok(Some(StreamItem::Row(r))),
            }
        }
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.decoder.rows()
    }

    /// The body ended: the last items (after `Stats`, or a schema that came late) and
    /// how it ended.
    pub fn finish(mut self) -> (Vec<StreamItem>, StreamEnd) {
        let mut items = Vec::new();
        loop {
            match self.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, StreamEnd::Decode(e)),
            }
        }
        let end = match self.decoder.finish() {
            Ok(()) => StreamEnd::Complete {
                schema: self.schema,
                stats: self.stats,
                rows: self.decoder.rows(),
            },
            Err(e) => StreamEnd::Decode(e),
        };
        (items, end)
    }

    /// The network failed: how the stream ended.
    pub fn broken(self, error: TransportError) -> StreamEnd {
        StreamEnd::Transport {
            error,
            rows: self.decoder.rows(),
        }
    }
}

/// An admission's handle: answer it with [`Engine::handle_admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdmitId(pub u64);

/// What a shared store gave for an admitted call (its ticket), kept by the engine and
/// handed back in [`QuotaOp::Release`] or [`QuotaOp::Complete`]. Opaque to the engine.
pub struct StoreTicket(Box<dyn std::any::Any + Send + Sync>);

impl StoreTicket {
    /// Wraps the store's ticket.
    pub fn new<T: std::any::Any + Send + Sync>(ticket: T) -> StoreTicket {
        StoreTicket(Box::new(ticket))
    }

    /// The store's ticket, if it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// The store's ticket, if it is a `T`.
    pub fn into_inner<T: std::any::Any>(self) -> Option<T> {
        self.0.downcast().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for StoreTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreTicket")
    }
}

/// With [`QuotaMode::Shared`]: an operation for the shared quota store.
#[derive(Debug)]
#[non_exhaustive]
pub enum QuotaOp {
    /// May a call of `group` go now? Check every call window and, for hunting, the
    /// running-time budget with `estimate` reserved; answer with
    /// [`Engine::handle_admission`]. At most one is outstanding per group.
    Acquire {
        /// Answer with this id.
        id: AdmitId,
        /// The API group.
        group: ApiGroup,
        /// The running time to reserve while the call is in flight (zero outside hunting).
        estimate: Duration,
    },
    /// An admitted call was not sent (cancelled): give its slot and reservation back.
    Release {
        /// The group.
        group: ApiGroup,
        /// The store's ticket.
        ticket: StoreTicket,
    },
    /// A hunting call's answer came: drop its reservation and charge what it ran (zero
    /// when it did not run). Calls without a reservation need no completion.
    Complete {
        /// The group.
        group: ApiGroup,
        /// The store's ticket.
        ticket: StoreTicket,
        /// The running time to charge.
        running: Duration,
    },
    /// What the server said about the quota (a 429): share it with every process.
    Feedback {
        /// The group.
        group: ApiGroup,
        /// The server's retry time, from now.
        retry_after: Option<Duration>,
        /// A limit the server named ("maximum allowed N per T").
        limit: Option<CallLimit>,
        /// Whether the retry time is for the running-time budget.
        runtime_exhausted: bool,
    },
}

/// The shared store's answer to [`QuotaOp::Acquire`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Admission {
    /// The call may go; the store's ticket comes back in `Release` or `Complete`.
    Admitted(StoreTicket),
    /// Not yet: the earliest wait after which it would be admitted, and why.
    Denied {
        /// The wait, from now.
        retry_after: Duration,
        /// What binds, in words.
        reason: String,
    },
    /// The store could not decide: the call fails with [`Error::QuotaStore`].
    Unavailable(String),
}

/// Why a call waits (or, past the policy's `max_wait`, fails with
/// [`Error::QuotaWait`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// A call window is full.
    Calls(CallLimit),
    /// A running-time window is spent.
    Runtime(crate::limits::RuntimeLimit),
    /// Queries in flight hold the running-time budget.
    RuntimeHeld,
    /// The group is blocked until a retry time the server gave (a 429 seen earlier).
    ServerRetryTime,
    /// This call's answer asked to wait this long (a 429's or a 5xx's `Retry-After`).
    ServerAsked(Duration),
    /// The shared quota store said no; its words.
    Store(String),
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Calls(l) => write!(f, "{l}"),
            WaitReason::Runtime(l) => write!(f, "{l}"),
            WaitReason::RuntimeHeld => f.write_str("the running-time budget"),
            WaitReason::ServerRetryTime => f.write_str("the server's retry time"),
            WaitReason::ServerAsked(d) => {
                write!(f, "the server asked to wait {}", format_duration(*d))
            }
            WaitReason::Store(s) => f.write_str(s),
        }
    }
}

/// Something the caller should know.
///
/// Deliberately exhaustive: a driver must route every event, so a new one is a
/// breaking change that every driver (ours included) sees at compile time, never an
/// event dropped by a wildcard arm.
#[derive(Debug)]
pub enum Event {
    /// The call succeeded.
    Completed {
        /// The call.
        id: CallId,
        /// Its value.
        value: Value,
    },
    /// The call failed for good.
    Failed {
        /// The call.
        id: CallId,
        /// Why.
        error: Error,
    },
    /// The call waits for quota or a server-given retry time (for progress displays).
    Waiting {
        /// The call.
        id: CallId,
        /// The group.
        group: ApiGroup,
        /// Until when.
        until: Instant,
        /// Which limit binds, or what the server asked.
        reason: WaitReason,
    },
    /// With [`Auth::External`]: fetch a token and give it to [`Engine::handle_token`]
    /// (within [`Config::token_timeout`]; a later answer is still taken).
    NeedToken,
    /// Something the engine chose to ignore or cut, which a person should know about
    /// (log it): a server wait beyond [`Config::max_server_wait`], a learned limit with
    /// an absurd period.
    Warning {
        /// What happened, in one sentence.
        message: String,
    },
}

/// What the driver must do next.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Perform this request.
    Transmit(Transmit),
    /// With [`QuotaMode::Shared`]: perform this operation on the shared store.
    Quota(QuotaOp),
    /// Hand this event to the caller.
    Event(Event),
    /// Nothing to do until this instant (then call `handle_timeout`), or until the next
    /// input when `None`.
    Wait(Option<Instant>),
}

/// Usage of one group's quota.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupUsage {
    /// The group.
    pub group: ApiGroup,
    /// Every call window.
    pub windows: Vec<WindowUsage>,
    /// The server's retry time, if one lies ahead.
    pub blocked_until: Option<Instant>,
    /// Running time charged per runtime window (hunting), with the window.
    pub runtime: Vec<(crate::limits::RuntimeLimit, Duration)>,
    /// Running time reserved by queries in flight.
    pub runtime_reserved: Duration,
    /// Calls waiting or in flight.
    pub active_calls: usize,
}

#[derive(Debug)]
enum Phase {
    Queued,
    /// Asking the shared store.
    Admitting(AdmitId),
    /// Admitted; the transmit sits in the outbox, not yet handed to the transport.
    Outbox(SendId),
    InFlight(SendId),
}

#[derive(Debug)]
struct CallState {
    call: Call,
    group: ApiGroup,
    submitted: Instant,
    /// When the call (re)entered the queue: `max_wait` counts from here.
    queued_since: Instant,
    attempts: u32,
    not_before: Option<Instant>,
    phase: Phase,
    ticket: Option<Ticket>,
    reservation: Option<Reservation>,
    /// With a shared store: its ticket, and whether it holds a running-time reservation.
    store: Option<(StoreTicket, bool)>,
    token_retried: bool,
    sent_at: Option<Instant>,
    announced_until: Option<Instant>,
    /// An update whose outcome is unknown: the next attempt reads the incident back
    /// instead of sending the change again.
    verify: bool,
    /// When the first request of an update that may have reached the server was sent:
    /// a comment read back must be newer than this to be ours.
    maybe_applied_since: Option<Instant>,
    /// Which request of an update is next (Graph sends a comment as a second call).
    step: UpdateStep,
    /// Graph: what the PATCH step answered, merged with the comments at the end.
    patched: Option<Record>,
}

/// The requests of an update (of an incident or an alert). Defender takes everything,
/// comment included, in one PATCH; Graph takes the fields in a PATCH and the comment in a
/// POST to the record's comments, each admitted and retried (or read back) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdateStep {
    Patch,
    Comment,
}

impl UpdateStep {
    fn first(call: &Call, surface: Surface) -> UpdateStep {
        match Change::of(call) {
            Some(c) if surface == Surface::Graph && c.without_comment().is_empty() => {
                UpdateStep::Comment
            }
            _ => UpdateStep::Patch,
        }
    }
}

impl CallState {
    /// The part of an update the current step sends (and a read-back checks).
    fn step_update(&self, surface: Surface) -> Option<Change> {
        let change = Change::of(&self.call)?;
        Some(match (surface, self.step) {
            (Surface::Graph, UpdateStep::Patch) => change.without_comment(),
            (Surface::Graph, UpdateStep::Comment) => change.only_comment(),
            _ => change,
        })
    }

    /// Graph: after the PATCH step, whether a comment is still to be posted.
    fn comment_pending(&self, surface: Surface) -> bool {
        surface == Surface::Graph
            && self.step == UpdateStep::Patch
            && Change::of(&self.call).is_some_and(|c| c.has_comment())
    }

    /// Whether the request this call sends next (or has in flight) can be resent
    /// without doing a thing twice: everything but an update (a read-back is a GET).
    fn idempotent(&self) -> bool {
        !self.call.is_update() || self.verify
    }
}

#[derive(Debug)]
enum SendTarget {
    Token,
    Call(CallId),
    /// A call cancelled while in flight: settle its accounting when the answer comes.
    Orphan {
        group: ApiGroup,
        reservation: Option<Reservation>,
        store: Option<(StoreTicket, bool)>,
        sent_at: Instant,
    },
}

#[derive(Debug, Default)]
struct TokenState {
    current: Option<AccessToken>,
    fetching: bool,
    /// With [`Auth::External`]: when the provider's answer counts as missing.
    fetch_deadline: Option<Instant>,
    fetch_send: Option<SendId>,
    not_before: Option<Instant>,
    attempts: u32,
}

/// How many recent running times the reservation estimate looks at.
const RECENT_RUNTIMES: usize = 32;

/// Tokens are not used in their last seconds (30 s, or a twentieth of a shorter
/// lifetime): a call must reach the server while its token is still valid.
const TOKEN_USE_MARGIN: Duration = Duration::from_secs(30);

/// The sans-IO engine. See the module docs for the loop it expects.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    policy: Box<dyn Policy>,
    quotas: BTreeMap<ApiGroup, Quota>,
    runtime: RunningTime,
    /// The running times of the latest queries: a reservation is their maximum, so that
    /// queries in flight rarely overrun what they hold (the server charges on completion).
    recent_runtimes: VecDeque<Duration>,
    token: TokenState,
    calls: BTreeMap<CallId, CallState>,
    sends: HashMap<SendId, SendTarget>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    quota_ops: VecDeque<QuotaOp>,
    /// Shared store: the outstanding admission of each group, the call it is for, and
    /// when the store's answer counts as missing.
    admitting: BTreeMap<ApiGroup, (AdmitId, CallId, Instant)>,
    /// Admissions given up on (the store did not answer in time): a late `Admitted`
    /// gives its ticket back.
    abandoned: HashMap<AdmitId, ApiGroup>,
    /// Updates that may have been applied, until the call ends or a read-back settles it.
    unsure: HashMap<CallId, Change>,
    next_admit: u64,
    next_call: u64,
    next_send: u64,
    now: Instant,
    dirty: bool,
}

impl Engine {
    /// A new engine. Fails when an endpoint would send credentials over plain HTTP to a
    /// host other than loopback.
    pub fn new(config: Config, policy: Box<dyn Policy>, now: Instant) -> Result<Engine, Error> {
        config.endpoints.check_secure()?;
        let quotas = ApiGroup::ALL
            .into_iter()
            .map(|g| (g, Quota::new(&config.limits.group(g).calls, config.margin)))
            .collect();
        let runtime = RunningTime::new(&config.limits.hunting.runtime, config.margin);
        Ok(Engine {
            config,
            policy,
            quotas,
            runtime,
            recent_runtimes: VecDeque::new(),
            token: TokenState::default(),
            calls: BTreeMap::new(),
            sends: HashMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            quota_ops: VecDeque::new(),
            admitting: BTreeMap::new(),
            abandoned: HashMap::new(),
            unsure: HashMap::new(),
            next_admit: 0,
            next_call: 0,
            next_send: 0,
            now,
            dirty: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Submits a call; its end comes as one `Completed` or `Failed` event.
    pub fn submit(&mut self, call: Call, now: Instant) -> CallId {
        let now = self.advance(now);
        self.next_call += 1;
        let id = CallId(self.next_call);
        let group = call.group();
        let step = UpdateStep::first(&call, self.config.surface);
        self.calls.insert(
            id,
            CallState {
                call,
                group,
                submitted: now,
                queued_since: now,
                attempts: 0,
                not_before: None,
                phase: Phase::Queued,
                ticket: None,
                reservation: None,
                store: None,
                token_retried: false,
                sent_at: None,
                announced_until: None,
                verify: false,
                maybe_applied_since: None,
                step,
                patched: None,
            },
        );
        self.dirty = true;
        id
    }

    /// Cancels a call. A call not yet handed to the transport gives back its quota; one in
    /// flight has been sent and still counts. Ends with `Failed { error: Cancelled }`
    /// unless the call had already ended.
    pub fn cancel(&mut self, id: CallId, now: Instant) {
        self.advance(now);
        let Some(state) = self.calls.remove(&id) else {
            return;
        };
        match state.phase {
            // The store's answer finds no call and gives back what it admitted.
            Phase::Queued | Phase::Admitting(_) => {}
            Phase::Outbox(send) => {
                self.outbox.retain(|t| t.id != send);
                self.sends.remove(&send);
                self.give_back(state);
            }
            Phase::InFlight(send) => {
                self.sends.insert(
                    send,
                    SendTarget::Orphan {
                        group: state.group,
                        reservation: state.reservation,
                        store: state.store,
                        sent_at: state.sent_at.unwrap_or(self.now),
                    },
                );
            }
        }
        self.fail(id, Error::Cancelled);
        self.dirty = true;
    }

    /// A timer fired. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.dirty = true;
    }

    /// With [`Auth::External`]: the token the caller fetched, or why it could not.
    pub fn handle_token(&mut self, token: Result<AccessToken, Error>, now: Instant) {
        self.advance(now);
        self.token.fetching = false;
        self.token.fetch_deadline = None;
        match token {
            Ok(t) => {
                self.token.current = Some(t);
                self.token.attempts = 0;
            }
            Err(e) => self.token_failed(e, None),
        }
        self.dirty = true;
    }

    /// The transport's answer to a transmit. `wall_now` reads HTTP-date retry times.
    pub fn handle_response(
        &mut self,
        id: SendId,
        response: http::Response<Vec<u8>>,
        now: Instant,
        wall_now: SystemTime,
    ) {
        self.advance(now);
        self.dirty = true;
        let Some(target) = self.sends.remove(&id) else {
            return;
        };
        let status = response.status().as_u16();
        match target {
            SendTarget::Token => self.token_response(status, response.body()),
            SendTarget::Orphan {
                group,
                reservation,
                store,
                sent_at,
            } => {
                // Nobody waits for the answer, but what it says about the quota counts.
                if status == 429 {
                    let throttle = Throttle::parse(response.headers(), response.body(), wall_now);
                    self.apply_throttle(group, &throttle);
                }
                let held = reservation.is_some() || store.as_ref().is_some_and(|s| s.1);
                if held {
                    let actual = if response.status().is_success() {
                        let stats = HuntResponse::from_slice(response.body())
                            .ok()
                            .and_then(|h| h.stats);
                        running_time(stats.as_ref(), self.now.saturating_duration_since(sent_at))
                    } else {
                        Duration::ZERO
                    };
                    self.settle(group, reservation, store, actual);
                }
            }
            SendTarget::Call(call_id) => self.call_response(call_id, response, wall_now),
        }
    }

    /// The transport could not complete a transmit.
    pub fn handle_transport_error(&mut self, id: SendId, error: TransportError, now: Instant) {
        self.advance(now);
        self.dirty = true;
        let Some(target) = self.sends.remove(&id) else {
            return;
        };
        match target {
            SendTarget::Token => {
                self.token.fetching = false;
                self.token.fetch_send = None;
                self.token_failed(
                    Error::Transport {
                        attempts: self.token.attempts,
                        error,
                    },
                    Some(FailureKind::Token),
                );
            }
            SendTarget::Orphan {
                group,
                reservation,
                store,
                sent_at,
            } => {
                let ran = self.ran_for(error.kind, sent_at);
                self.settle(group, reservation, store, ran);
            }
            SendTarget::Call(call_id) => {
                let Some(mut state) = self.calls.remove(&call_id) else {
                    return;
                };
                let ran = self.ran_for(error.kind, state.sent_at.unwrap_or(self.now));
                self.settle(
                    state.group,
                    state.reservation.take(),
                    state.store.take(),
                    ran,
                );
                state.ticket = None;
                let attempts = state.attempts;
                if !state.idempotent() && error.kind != TransportErrorKind::Connect {
                    // The update was written: the server may have applied it.
                    let kind = FailureKind::Transport(error.kind);
                    let error = Error::Transport { attempts, error };
                    return self.ambiguous_update(call_id, state, kind, None, error);
                }
                if error.kind == TransportErrorKind::BodyTooLarge {
                    self.fail(
                        call_id,
                        Error::Transport {
                            attempts: state.attempts,
                            error,
                        },
                    );
                    return;
                }
                let failure = Failure {
                    group: state.group,
                    attempt: state.attempts,
                    kind: FailureKind::Transport(error.kind),
                    server_wait: None,
                    elapsed: self.now.saturating_duration_since(state.submitted),
                    idempotent: state.idempotent(),
                };
                self.retry_or_fail(call_id, state, failure, None, || Error::Transport {
                    attempts,
                    error,
                });
            }
        }
    }

    /// A streamed hunt's body ended (see [`Call::HuntStream`]; only for a transmit with
    /// [`Transmit::stream`] whose status was 2xx). With no row handed out, a network
    /// failure is retried like any other; after rows were handed out nothing is retried
    /// (they would come twice) and the call fails with what broke.
    pub fn handle_stream_end(&mut self, id: SendId, end: StreamEnd, now: Instant) {
        if let StreamEnd::Transport { error, rows: 0 } = end {
            return self.handle_transport_error(id, error, now);
        }
        self.advance(now);
        self.dirty = true;
        let Some(target) = self.sends.remove(&id) else {
            return;
        };
        match target {
            SendTarget::Token => {}
            SendTarget::Orphan {
                group,
                reservation,
                store,
                sent_at,
            } => {
                let elapsed = self.now.saturating_duration_since(sent_at);
                let running = match &end {
                    StreamEnd::Complete { stats, .. } => running_time(stats.as_ref(), elapsed),
                    _ => elapsed,
                };
                self.settle(group, reservation, store, running);
            }
            SendTarget::Call(call_id) => {
                let Some(mut state) = self.calls.remove(&call_id) else {
                    return;
                };
                state.ticket = None;
                let elapsed = self
                    .now
                    .saturating_duration_since(state.sent_at.unwrap_or(self.now));
                let (reservation, store) = (state.reservation.take(), state.store.take());
                match end {
                    StreamEnd::Complete {
                        schema,
                        stats,
                        rows,
                    } => {
                        self.policy.on_success();
                        let running = running_time(stats.as_ref(), elapsed);
                        self.settle(state.group, reservation, store, running);
                        self.record_runtime(running);
                        let row_cap = self.config.limits.hunting.rows;
                        let truncated = row_cap.is_some_and(|cap| rows >= cap);
                        if let Some(e) = self.refuse_truncated(&state.call, truncated) {
                            return self.fail(call_id, e);
                        }
                        self.events.push_back(Event::Completed {
                            id: call_id,
                            value: Value::HuntStreamed(HuntSummary {
                                schema,
                                rows,
                                stats,
                                running_time: running,
                                truncated,
                                row_cap,
                            }),
                        });
                    }
                    StreamEnd::Transport { error, .. } => {
                        self.settle(state.group, reservation, store, elapsed);
                        self.fail(
                            call_id,
                            Error::Transport {
                                attempts: state.attempts,
                                error,
                            },
                        );
                    }
                    StreamEnd::Decode(e) => {
                        self.settle(state.group, reservation, store, elapsed);
                        self.fail(
                            call_id,
                            Error::Decode {
                                what: "hunting",
                                len: e.offset() as usize,
                                message: e.to_string(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// A result at the row cap fails its call only where the policy says so, and never a
    /// window of a ranged hunt (the planner bisects it).
    fn refuse_truncated(&self, call: &Call, truncated: bool) -> Option<Error> {
        let refused = truncated
            && !matches!(call, Call::HuntWindow(_))
            && self.policy.truncation() == Truncation::Error;
        refused.then(|| Error::Truncated {
            cap: self.config.limits.hunting.rows.unwrap_or_default(),
        })
    }

    fn record_runtime(&mut self, running: Duration) {
        if self.recent_runtimes.len() == RECENT_RUNTIMES {
            self.recent_runtimes.pop_front();
        }
        self.recent_runtimes.push_back(running);
    }

    /// What the driver must do next. Drain until `Wait`.
    pub fn poll_output(&mut self) -> Output {
        if self.dirty {
            self.dirty = false;
            self.drive();
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if let Some(op) = self.quota_ops.pop_front() {
            return Output::Quota(op);
        }
        if let Some(t) = self.outbox.pop_front() {
            if let Some(call) = t.call.and_then(|c| self.calls.get_mut(&c)) {
                call.phase = Phase::InFlight(t.id);
            }
            return Output::Transmit(t);
        }
        Output::Wait(
            self.next_timer()
                .map(|t| t.max(self.now + Duration::from_millis(1))),
        )
    }

    /// Usage of every group's quota at `now`.
    pub fn usage(&self, now: Instant) -> Vec<GroupUsage> {
        let now = now.max(self.now);
        self.quotas
            .iter()
            .map(|(group, q)| GroupUsage {
                group: *group,
                windows: q.usage(now),
                blocked_until: q.blocked_until().filter(|b| *b > now),
                runtime: if *group == ApiGroup::Hunting {
                    self.runtime
                        .limits()
                        .iter()
                        .map(|l| (*l, self.runtime.charged(l, now)))
                        .collect()
                } else {
                    Vec::new()
                },
                runtime_reserved: if *group == ApiGroup::Hunting {
                    self.runtime.reserved()
                } else {
                    Duration::ZERO
                },
                active_calls: self.calls.values().filter(|c| c.group == *group).count(),
            })
            .collect()
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Running time charged since the engine started.
    pub fn running_time_spent(&self) -> Duration {
        self.runtime.spent_total()
    }

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    fn ran_for(&self, kind: TransportErrorKind, sent_at: Instant) -> Duration {
        match kind {
            // Never reached the server: nothing ran.
            TransportErrorKind::Connect => Duration::ZERO,
            _ => self.now.saturating_duration_since(sent_at),
        }
    }

    /// An admitted call that was not sent gives back its slot and reservation.
    fn give_back(&mut self, state: CallState) {
        if let Some(t) = state.ticket {
            if let Some(q) = self.quotas.get_mut(&state.group) {
                q.release(t);
            }
        }
        if let Some(r) = state.reservation {
            self.runtime.cancel(r);
        }
        if let Some((ticket, _)) = state.store {
            self.quota_ops.push_back(QuotaOp::Release {
                group: state.group,
                ticket,
            });
        }
    }

    /// A sent call's answer (or its failure) came: its reservation turns into a charge of
    /// what it ran, locally or in the shared store. A store ticket without a reservation
    /// needs nothing more: the call stays counted in its windows.
    fn settle(
        &mut self,
        group: ApiGroup,
        reservation: Option<Reservation>,
        store: Option<(StoreTicket, bool)>,
        running: Duration,
    ) {
        if let Some(r) = reservation {
            self.runtime.complete(r, running, self.now);
        }
        if let Some((ticket, true)) = store {
            self.quota_ops.push_back(QuotaOp::Complete {
                group,
                ticket,
                running,
            });
        }
    }

    /// The reservation for the next hunting call: the longest recent running time.
    fn runtime_estimate(&self) -> Duration {
        self.recent_runtimes
            .iter()
            .max()
            .copied()
            .unwrap_or(self.config.runtime_estimate)
    }

    /// With a shared store: the store's answer to an [`QuotaOp::Acquire`].
    pub fn handle_admission(&mut self, id: AdmitId, answer: Admission, now: Instant) {
        self.advance(now);
        self.dirty = true;
        let call = self
            .admitting
            .iter()
            .find(|(_, (a, _, _))| *a == id)
            .map(|(g, (_, c, _))| (*g, *c));
        let Some((group, call_id)) = call else {
            // Given up on (too late): a slot it admitted goes back. Otherwise unknown or
            // already answered (a transport bug): nothing to match it with.
            if let Some(group) = self.abandoned.remove(&id) {
                if let Admission::Admitted(ticket) = answer {
                    self.quota_ops.push_back(QuotaOp::Release { group, ticket });
                }
            }
            return;
        };
        self.admitting.remove(&group);
        let waiting = self
            .calls
            .get(&call_id)
            .is_some_and(|c| matches!(c.phase, Phase::Admitting(a) if a == id));
        if !waiting {
            // The call was cancelled or failed meanwhile.
            if let Admission::Admitted(ticket) = answer {
                self.quota_ops.push_back(QuotaOp::Release { group, ticket });
            }
            return;
        }
        match answer {
            Admission::Admitted(ticket) => {
                let reserved = group == ApiGroup::Hunting;
                let token = self.usable_token().map(|t| t.token.clone());
                let state = self.calls.get_mut(&call_id).expect("checked above");
                state.phase = Phase::Queued;
                match token {
                    Some(token) => self.dispatch(
                        call_id,
                        token.expose(),
                        None,
                        None,
                        Some((ticket, reserved)),
                    ),
                    None => {
                        // The token lapsed while the store decided: give the slot back and
                        // ask again once a token is there.
                        self.quota_ops.push_back(QuotaOp::Release { group, ticket });
                    }
                }
            }
            Admission::Denied {
                retry_after,
                reason,
            } => {
                let jitter = self.policy.admission_jitter(retry_after);
                let retry_at = self.now + retry_after.max(Duration::from_millis(1)) + jitter;
                // Every queued call of the group waits for the same instant.
                let queued: Vec<CallId> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.group == group)
                    .filter(|(_, c)| matches!(c.phase, Phase::Queued | Phase::Admitting(_)))
                    .map(|(id, _)| *id)
                    .collect();
                for id in queued {
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.phase = Phase::Queued;
                        if c.not_before.is_some_and(|t| t >= retry_at) {
                            continue;
                        }
                    }
                    self.wait_or_fail(id, retry_at, WaitReason::Store(reason.clone()));
                }
            }
            Admission::Unavailable(message) => {
                self.calls.remove(&call_id);
                self.fail(call_id, Error::QuotaStore { message });
            }
        }
    }

    /// Ends a call with `error`; for an update that may have been applied, the error
    /// becomes [`Error::OutcomeUnknown`] carrying it.
    fn fail(&mut self, id: CallId, error: Error) {
        let error = match self.unsure.remove(&id) {
            Some(change) => Error::OutcomeUnknown {
                change: Box::new(change),
                cause: Box::new(error),
            },
            None => error,
        };
        self.events.push_back(Event::Failed { id, error });
    }

    fn complete(&mut self, id: CallId, value: Value) {
        self.unsure.remove(&id);
        self.events.push_back(Event::Completed { id, value });
    }

    fn warn(&mut self, message: String) {
        self.events.push_back(Event::Warning { message });
    }

    /// A server-given wait, cut to [`Config::max_server_wait`] (with a warning).
    fn cap_server_wait(&mut self, wait: Option<Duration>) -> Option<Duration> {
        let cap = self.config.max_server_wait;
        match wait {
            Some(w) if w > cap => {
                self.warn(format!(
                    "the server asked to wait {}; waiting at most {} (max_server_wait)",
                    format_duration(w),
                    format_duration(cap)
                ));
                Some(cap)
            }
            w => w,
        }
    }

    /// The request of an incident update may have reached the server and its answer is
    /// lost (`error` says how): never resend it as it is. When the policy retries, the
    /// next attempt reads the incident back; when it stops, the call fails with
    /// [`Error::OutcomeUnknown`].
    fn ambiguous_update(
        &mut self,
        id: CallId,
        mut state: CallState,
        kind: FailureKind,
        server_wait: Option<Duration>,
        error: Error,
    ) {
        self.maybe_applied(id, &mut state);
        let failure = Failure {
            group: state.group,
            attempt: state.attempts,
            kind,
            server_wait,
            elapsed: self.now.saturating_duration_since(state.submitted),
            idempotent: false,
        };
        self.retry_or_fail(id, state, failure, server_wait, || error);
    }

    /// The read-back of an update whose outcome was unknown: complete with what was
    /// read when the change is there, else send the change again.
    fn verified(&mut self, id: CallId, mut state: CallState, body: &[u8], wall_now: SystemTime) {
        // Only updates are read back.
        let Some(update) = state.step_update(self.config.surface) else {
            return self.fail(id, Error::InvalidRequest("not an update".into()));
        };
        let record = match update.decode(body) {
            Ok(r) => r,
            Err(e) => return self.fail(id, e),
        };
        // Our clock's reading of when the first maybe-applied request left, less the
        // server's allowed lag behind us.
        let ago = self
            .now
            .saturating_duration_since(state.maybe_applied_since.unwrap_or(self.now));
        let since = wall_now
            .checked_sub(ago + self.config.clock_skew)
            .unwrap_or(std::time::UNIX_EPOCH);
        if update.is_applied(&record, self.config.surface, since) {
            self.unsure.remove(&id);
            return self.step_done(id, state, record);
        }
        // Not there: the server did not apply it, so sending it again does it once.
        self.unsure.remove(&id);
        state.verify = false;
        self.requeue_now(id, state);
    }

    /// The update's request may have been applied: remember it (a failure becomes
    /// `OutcomeUnknown`) and make the next attempt a read-back.
    fn maybe_applied(&mut self, id: CallId, state: &mut CallState) {
        if let Some(change) = Change::of(&state.call) {
            self.unsure.insert(id, change);
        }
        state.verify = true;
        state.maybe_applied_since = state.maybe_applied_since.or(state.sent_at);
    }

    /// Puts a call back in the queue to go at once (its next request, or a read-back).
    fn requeue_now(&mut self, id: CallId, mut state: CallState) {
        state.phase = Phase::Queued;
        state.queued_since = self.now;
        state.not_before = None;
        self.calls.insert(id, state);
    }

    fn next_send_id(&mut self) -> SendId {
        self.next_send += 1;
        SendId(self.next_send)
    }

    fn usable_token(&self) -> Option<&AccessToken> {
        self.token.current.as_ref().filter(|t| {
            let life = t.expires_at.saturating_duration_since(t.obtained_at);
            self.now + TOKEN_USE_MARGIN.min(life / 20) < t.expires_at
        })
    }

    fn drive(&mut self) {
        let now = self.now;
        // A store that has not answered in time counts as unavailable for the call that
        // asked; its late answer is given back.
        let late: Vec<(ApiGroup, AdmitId, CallId)> = self
            .admitting
            .iter()
            .filter(|(_, (_, _, by))| *by <= now)
            .map(|(g, (a, c, _))| (*g, *a, *c))
            .collect();
        for (group, admit, call) in late {
            self.admitting.remove(&group);
            self.abandoned.insert(admit, group);
            let waiting = self
                .calls
                .get(&call)
                .is_some_and(|c| matches!(c.phase, Phase::Admitting(a) if a == admit));
            if waiting {
                self.calls.remove(&call);
                let message = format!(
                    "the store did not answer within {} (store_timeout)",
                    format_duration(self.config.store_timeout)
                );
                self.fail(call, Error::QuotaStore { message });
            }
        }
        // A token provider that has not answered in time failed.
        if self.token.fetch_deadline.is_some_and(|by| by <= now) {
            self.token.fetching = false;
            self.token.fetch_deadline = None;
            let message = format!(
                "the token provider did not answer within {} (token_timeout)",
                format_duration(self.config.token_timeout)
            );
            self.token_failed(Error::TokenUnavailable { message }, None);
        }
        // Deadlines of calls not yet sent.
        let expired: Vec<(CallId, Duration)> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Queued | Phase::Admitting(_)))
            .filter_map(|(id, c)| {
                let d = self.policy.deadline(c.group)?;
                (now >= c.submitted + d).then_some((*id, d))
            })
            .collect();
        for (id, deadline) in expired {
            self.calls.remove(&id);
            self.fail(id, Error::DeadlineExceeded { deadline });
        }

        let any_queued = self
            .calls
            .values()
            .any(|c| matches!(c.phase, Phase::Queued));
        if !any_queued {
            return;
        }
        // Tokens: fetch when none is usable, or ahead of expiry while calls are active.
        let needs_fetch = match &self.token.current {
            None => true,
            Some(t) => !t.is_fresh(now),
        };
        if needs_fetch && !self.token.fetching && self.token.not_before.is_none_or(|t| t <= now) {
            self.start_token_fetch();
        }
        let Some(token) = self.usable_token().map(|t| t.token.clone()) else {
            return;
        };

        let mut blocked: Vec<ApiGroup> = Vec::new();
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(state) = self.calls.get(&id) else {
                continue;
            };
            if !matches!(state.phase, Phase::Queued) || blocked.contains(&state.group) {
                continue;
            }
            if state.not_before.is_some_and(|t| t > now) {
                // Backing off after a failure; a server-given time also blocks its group.
                continue;
            }
            let group = state.group;
            if self.config.quota == QuotaMode::Shared {
                // One admission at a time per group: the store's answer for one call tells
                // whether the others may try.
                if !self.admitting.contains_key(&group) {
                    self.next_admit += 1;
                    let admit = AdmitId(self.next_admit);
                    let timeout = now + self.config.store_timeout;
                    self.admitting.insert(group, (admit, id, timeout));
                    self.calls.get_mut(&id).expect("present").phase = Phase::Admitting(admit); // looked up above
                    let estimate = if group == ApiGroup::Hunting {
                        self.runtime_estimate()
                    } else {
                        Duration::ZERO
                    };
                    self.quota_ops.push_back(QuotaOp::Acquire {
                        id: admit,
                        group,
                        estimate,
                    });
                }
                blocked.push(group);
                continue;
            }
            let quota = self
                .quotas
                .get_mut(&group)
                .expect("a quota exists for every group"); // built from ApiGroup::ALL
            let ticket = match quota.try_acquire(now) {
                Ok(t) => t,
                Err(denied) => {
                    let reason = match denied.limit {
                        Some(l) => WaitReason::Calls(l),
                        None => WaitReason::ServerRetryTime,
                    };
                    if !self.wait_or_fail(id, denied.retry_at, reason) {
                        blocked.push(group);
                    }
                    continue;
                }
            };
            let mut reservation = None;
            if group == ApiGroup::Hunting {
                let estimate = self.runtime_estimate();
                match self.runtime.try_reserve(now, estimate) {
                    Ok(r) => reservation = Some(r),
                    Err(denied) => {
                        self.quotas.get_mut(&group).expect("exists").release(ticket); // as above
                        let reason = match denied.limit {
                            Some(l) => WaitReason::Runtime(l),
                            None => WaitReason::RuntimeHeld,
                        };
                        match denied.retry_at {
                            Some(t) => {
                                if !self.wait_or_fail(id, t, reason) {
                                    blocked.push(group);
                                }
                            }
                            // Held by queries in flight: their answers wake us.
                            None => blocked.push(group),
                        }
                        continue;
                    }
                }
            }
            self.dispatch(id, token.expose(), Some(ticket), reservation, None);
        }
    }

    /// An admitted call: build its request and put it in the outbox (or fail it when the
    /// request cannot be built, giving back what it was admitted with).
    fn dispatch(
        &mut self,
        id: CallId,
        token: &str,
        ticket: Option<Ticket>,
        reservation: Option<Reservation>,
        store: Option<(StoreTicket, bool)>,
    ) {
        let now = self.now;
        let Some(state) = self.calls.get(&id) else {
            return;
        };
        let group = state.group;
        let stream = matches!(state.call, Call::HuntStream(_));
        let request = match self.build_request(&state.call, state.verify, state.step, token) {
            Ok(r) => r,
            Err(e) => {
                if let Some(mut state) = self.calls.remove(&id) {
                    state.ticket = ticket;
                    state.reservation = reservation;
                    state.store = store;
                    self.give_back(state);
                }
                self.fail(id, e);
                return;
            }
        };
        let send = self.next_send_id();
        let timeout = self.policy.request_timeout(group);
        let state = self.calls.get_mut(&id).expect("present"); // looked up above, not removed since
        state.attempts += 1;
        state.phase = Phase::Outbox(send);
        state.ticket = ticket;
        state.reservation = reservation;
        state.store = store;
        state.sent_at = Some(now);
        state.not_before = None;
        state.announced_until = None;
        let attempt = state.attempts;
        self.sends.insert(send, SendTarget::Call(id));
        self.outbox.push_back(Transmit {
            id: send,
            call: Some(id),
            group: Some(group),
            attempt,
            request,
            timeout,
            stream,
        });
    }

    /// The call must wait until `retry_at`: within `max_wait` it waits (true is returned
    /// when it failed instead, so the group is not blocked by it).
    fn wait_or_fail(&mut self, id: CallId, retry_at: Instant, reason: WaitReason) -> bool {
        let now = self.now;
        let max_wait = self.policy.max_wait();
        let state = self.calls.get_mut(&id).expect("caller holds a live id"); // only called for queued calls
        let total = retry_at.saturating_duration_since(state.queued_since);
        if total > max_wait {
            let group = state.group;
            self.calls.remove(&id);
            self.fail(
                id,
                Error::QuotaWait {
                    group,
                    retry_at,
                    wait: retry_at.saturating_duration_since(now),
                    max_wait,
                    reason,
                },
            );
            return true;
        }
        state.not_before = Some(retry_at);
        if state.announced_until != Some(retry_at) {
            state.announced_until = Some(retry_at);
            let group = state.group;
            self.events.push_back(Event::Waiting {
                id,
                group,
                until: retry_at,
                reason,
            });
        }
        false
    }

    fn start_token_fetch(&mut self) {
        match &self.config.auth {
            Auth::External => {
                self.token.fetching = true;
                self.token.fetch_deadline = Some(self.now + self.config.token_timeout);
                self.events.push_back(Event::NeedToken);
            }
            Auth::ClientCredentials(creds) => {
                let request = creds.token_request(
                    &self.config.endpoints.login_base,
                    &self.config.endpoints.scope,
                );
                let send = self.next_send_id();
                self.token.fetching = true;
                self.token.fetch_send = Some(send);
                self.token.attempts += 1;
                self.sends.insert(send, SendTarget::Token);
                self.outbox.push_back(Transmit {
                    id: send,
                    call: None,
                    group: None,
                    attempt: self.token.attempts,
                    request,
                    timeout: self.config.token_timeout,
                    stream: false,
                });
            }
        }
    }

    fn token_response(&mut self, status: u16, body: &[u8]) {
        self.token.fetching = false;
        self.token.fetch_send = None;
        match crate::token::parse_token_response(status, body, self.now) {
            Ok(t) => {
                self.token.current = Some(t);
                self.token.attempts = 0;
                self.token.not_before = None;
            }
            Err(e @ Error::Server { .. }) => self.token_failed(e, Some(FailureKind::Token)),
            Err(e) => self.token_failed(e, None),
        }
    }

    /// A token fetch failed: retry per policy when `retry` says it may, else fail every
    /// queued call with the error (a later call starts a new fetch).
    fn token_failed(&mut self, error: Error, retry: Option<FailureKind>) {
        // A stale token still inside its lifetime remains usable meanwhile.
        if let Some(kind) = retry {
            let failure = Failure {
                group: ApiGroup::Incidents,
                attempt: self.token.attempts.max(1),
                kind,
                server_wait: None,
                elapsed: Duration::ZERO,
                idempotent: true,
            };
            if let Retry::After(d) = self.policy.retry(&failure) {
                self.token.not_before = Some(self.now + d.max(Duration::from_millis(1)));
                return;
            }
        }
        self.token.attempts = 0;
        self.token.not_before = None;
        if self.usable_token().is_some() {
            // Keep using the token we have; try for a new one a minute later, not at once.
            self.token.not_before = Some(self.now + Duration::from_secs(60));
            return;
        }
        let queued: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Queued))
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            self.calls.remove(&id);
            self.fail(id, error.clone());
        }
    }

    /// The request for `call`; with `read_back`, an update's read-back (a GET of the
    /// incident) instead of the update itself.
    fn build_request(
        &self,
        call: &Call,
        read_back: bool,
        step: UpdateStep,
        token: &str,
    ) -> Result<http::Request<Vec<u8>>, Error> {
        let surface = self.config.surface;
        let base = &self.config.endpoints.api_base;
        let unsupported = |operation| Error::Unsupported { surface, operation };
        // An update's read-back is a get of what it changes.
        let read_call;
        let call = match Change::of(call) {
            Some(change) if read_back => {
                read_call = change.read_call();
                &read_call
            }
            _ => call,
        };
        let (method, uri, body) = match call {
            Call::Hunt(req) | Call::HuntWindow(req) | Call::HuntStream(req) => {
                if surface != Surface::Graph && req.timespan.is_some() {
                    // Dropping it would widen the query to 30 days without a word.
                    return Err(Error::Unsupported {
                        surface,
                        operation: "Timespan parameter (scope the query: HuntRequest::scoped)",
                    });
                }
                let req = req.clone();
                let body =
                    serde_json::to_vec(&req).map_err(|e| Error::InvalidRequest(e.to_string()))?;
                (
                    http::Method::POST,
                    format!("{base}{}", surface.hunting_path()),
                    Some(body),
                )
            }
            Call::ListIncidents(q) => {
                let path = surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                if let Some(field) = q.filter.unsupported_on(surface) {
                    return Err(Error::InvalidRequest(format!(
                        "{surface} does not filter incidents on {}; filter the list yourself",
                        field.name(surface)
                    )));
                }
                let mut q = q.clone();
                let max = max_top(surface);
                q.top = Some(q.top.unwrap_or(max).min(max));
                (
                    http::Method::GET,
                    format!("{base}{}", q.path_and_query(path, surface)),
                    None,
                )
            }
            Call::NextIncidents(link) => {
                surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                if !same_origin(link, base) {
                    return Err(Error::ForeignLink { url: link.clone() });
                }
                (http::Method::GET, link.clone(), None)
            }
            Call::GetIncident(id) => {
                let path = surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                (
                    http::Method::GET,
                    format!("{base}{path}/{}", id.check()?),
                    None,
                )
            }
            Call::ListAlerts(q) => {
                if let Some(field) = q.filter.unsupported_on(surface) {
                    return Err(Error::InvalidRequest(format!(
                        "{surface} does not filter alerts on {}; filter the list yourself",
                        field.name(surface)
                    )));
                }
                let mut q = q.clone();
                let max = alerts::max_top(surface);
                q.top = Some(q.top.unwrap_or(max).min(max));
                (
                    http::Method::GET,
                    format!("{base}{}", q.path_and_query(surface.alerts_path(), surface)),
                    None,
                )
            }
            Call::NextAlerts(link) => {
                if !same_origin(link, base) {
                    return Err(Error::ForeignLink { url: link.clone() });
                }
                (http::Method::GET, link.clone(), None)
            }
            Call::GetAlert(id) => (
                http::Method::GET,
                format!("{base}{}/{}", surface.alerts_path(), id.check()?),
                None,
            ),
            Call::UpdateIncident(..) | Call::UpdateAlert(..) => {
                let change = Change::of(call).expect("an update"); // matched an update
                let path = change.path(surface)?;
                if step == UpdateStep::Comment {
                    let body = change
                        .comment_body()
                        .ok_or_else(|| Error::InvalidRequest("no comment to post".into()))?;
                    let body = serde_json::to_vec(&body)
                        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                    (
                        http::Method::POST,
                        format!("{base}{path}/comments"),
                        Some(body),
                    )
                } else {
                    if change.is_empty() {
                        return Err(Error::InvalidRequest("the update changes nothing".into()));
                    }
                    let body = serde_json::to_vec(&change.patch_body(surface))
                        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                    (http::Method::PATCH, format!("{base}{path}"), Some(body))
                }
            }
        };
        let mut bearer = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::InvalidRequest("the access token is not a valid header".into()))?;
        // Marked sensitive: `http` then prints it as `Sensitive` in any `Debug`.
        bearer.set_sensitive(true);
        let mut b = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::AUTHORIZATION, bearer)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, &self.config.user_agent);
        if body.is_some() {
            b = b.header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            );
        }
        b.body(body.unwrap_or_default())
            .map_err(|_| Error::InvalidRequest(format!("`{uri}` is not a valid URL")))
    }

    fn call_response(
        &mut self,
        call_id: CallId,
        response: http::Response<Vec<u8>>,
        wall_now: SystemTime,
    ) {
        let Some(mut state) = self.calls.remove(&call_id) else {
            return;
        };
        let status = response.status().as_u16();
        let body = response.body();
        let elapsed_call = self
            .now
            .saturating_duration_since(state.sent_at.unwrap_or(self.now));
        state.ticket = None;

        if response.status().is_success() {
            self.policy.on_success();
            if state.verify {
                return self.verified(call_id, state, body, wall_now);
            }
            let result = if state.call.is_update() {
                match self.update_answered(call_id, state, body) {
                    Ok(()) => return,
                    Err(back) => {
                        let (s, e) = *back;
                        state = s;
                        Err(e)
                    }
                }
            } else {
                self.decode_success(&mut state, body, elapsed_call)
            };
            match result {
                Ok(value) => self.complete(call_id, value),
                Err(_) if !state.idempotent() => {
                    // Applied (2xx) but unreadable: read the incident back for the caller.
                    self.maybe_applied(call_id, &mut state);
                    self.requeue_now(call_id, state);
                }
                Err(e) => self.fail(call_id, e),
            }
            return;
        }
        // Not a success: the query did not run to a result; give back its reservation.
        if let Some(r) = state.reservation.take() {
            self.runtime.cancel(r);
        }
        let store = state.store.take();
        self.settle(state.group, None, store, Duration::ZERO);
        let api_error = || ApiError::from_response(status, response.headers(), body);
        match status {
            429 => {
                let throttle = Throttle::parse(response.headers(), body, wall_now);
                let group = state.group;
                let server_wait = self.apply_throttle(group, &throttle);
                let failure = Failure {
                    group,
                    attempt: state.attempts,
                    kind: FailureKind::Throttled,
                    server_wait,
                    elapsed: self.now.saturating_duration_since(state.submitted),
                    // A 429 was refused before anything was applied.
                    idempotent: true,
                };
                let message = throttle.message();
                self.retry_or_fail(call_id, state, failure, server_wait, || Error::Throttled {
                    group,
                    retry_after: server_wait,
                    message,
                });
            }
            401 if !state.token_retried => {
                // The token may have been revoked or expired early: fetch a new one, once.
                self.token.current = None;
                state.token_retried = true;
                state.phase = Phase::Queued;
                state.queued_since = self.now;
                self.calls.insert(call_id, state);
            }
            401 => self.fail(call_id, Error::Auth(api_error())),
            403 => self.fail(call_id, Error::Forbidden(api_error())),
            404 => self.fail(call_id, Error::NotFound(api_error())),
            408 | 500..=599 => {
                let wait = crate::throttle::retry_after_from_headers(response.headers(), wall_now);
                let wait = self.cap_server_wait(wait);
                let attempts = state.attempts;
                let error = Error::Server {
                    status,
                    attempts,
                    error: api_error(),
                    retry_after: wait,
                };
                if !state.idempotent() {
                    // A server error says nothing of whether the update was applied.
                    let kind = FailureKind::Server(status);
                    return self.ambiguous_update(call_id, state, kind, wait, error);
                }
                let failure = Failure {
                    group: state.group,
                    attempt: state.attempts,
                    kind: FailureKind::Server(status),
                    server_wait: wait,
                    elapsed: self.now.saturating_duration_since(state.submitted),
                    idempotent: true,
                };
                self.retry_or_fail(call_id, state, failure, wait, || error);
            }
            _ => {
                let error = api_error();
                let lower = error.message.to_ascii_lowercase();
                if status == 400 && lower.contains("allowed result size") {
                    self.fail(call_id, Error::ResultTooLarge(error));
                } else if status == 400 && lower.contains("preempted") {
                    // Graph: "Query execution has exceeded the allowed limits. The query
                    // execution was preempted…": too much work at once, not a bad query.
                    self.fail(call_id, Error::Preempted(error));
                } else {
                    self.fail(call_id, Error::Rejected { status, error });
                }
            }
        }
    }

    /// What a 429 says about the limits: a learned window, a retry time for the group's
    /// quota or for the running-time budget.
    ///
    /// Nothing the server says can block for longer than [`Config::max_server_wait`]: a
    /// longer wait is cut to it and a limit over a longer period is ignored (each with a
    /// warning). A spent running-time budget without a retry time blocks for
    /// [`Config::runtime_exhausted_wait`]. Returns the wait the call itself honours.
    fn apply_throttle(&mut self, group: ApiGroup, throttle: &Throttle) -> Option<Duration> {
        let mut retry_after = self.cap_server_wait(throttle.retry_after);
        let mut limit = throttle.limit;
        if let Some(l) = limit.filter(|l| l.per > self.config.max_server_wait) {
            self.warn(format!(
                "ignoring the limit the server named ({l}): its period is longer than {} (max_server_wait)",
                format_duration(self.config.max_server_wait)
            ));
            limit = None;
        }
        if throttle.runtime_exhausted && retry_after.is_none() {
            retry_after = Some(self.config.runtime_exhausted_wait);
        }
        if self.config.quota == QuotaMode::Shared && (limit.is_some() || retry_after.is_some()) {
            self.quota_ops.push_back(QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                runtime_exhausted: throttle.runtime_exhausted,
            });
        }
        let quota = self
            .quotas
            .get_mut(&group)
            .expect("a quota exists for every group"); // built from ApiGroup::ALL
        if let Some(limit) = limit {
            quota.handle_learned_limit(limit);
        }
        if let Some(w) = retry_after {
            if throttle.runtime_exhausted {
                self.runtime.handle_exhausted(self.now + w);
            } else {
                quota.handle_retry_at(self.now + w);
            }
        }
        retry_after
    }

    /// An update's step succeeded with `record` (its answer, or what a read-back saw):
    /// on Graph with a comment still to post, go on to that step; else the call is done.
    fn step_done(&mut self, id: CallId, mut state: CallState, record: Record) {
        if state.comment_pending(self.config.surface) {
            state.patched = Some(record);
            state.step = UpdateStep::Comment;
            state.verify = false;
            state.maybe_applied_since = None;
            return self.requeue_now(id, state);
        }
        self.complete(id, record.into_value());
    }

    /// An update's 2xx answer: the record (a PATCH) or Graph's comment collection (a
    /// comment POST, merged into what the PATCH step answered). An answer that does not
    /// decode gives the state back with the error.
    fn update_answered(
        &mut self,
        id: CallId,
        mut state: CallState,
        body: &[u8],
    ) -> Result<(), Box<(CallState, Error)>> {
        let Some(change) = Change::of(&state.call) else {
            return Err(Box::new((
                state,
                Error::InvalidRequest("not an update".into()),
            )));
        };
        if state.step == UpdateStep::Comment {
            let comments: CommentCollection = match serde_json::from_slice(body) {
                Ok(c) => c,
                Err(e) => {
                    let error = Error::Decode {
                        what: "comments",
                        len: body.len(),
                        message: e.to_string(),
                    };
                    return Err(Box::new((state, error)));
                }
            };
            let mut record = state.patched.take().unwrap_or_else(|| change.bare_record());
            record.set_comments(comments.value);
            self.complete(id, record.into_value());
            return Ok(());
        }
        match change.decode(body) {
            Ok(record) => {
                self.step_done(id, state, record);
                Ok(())
            }
            Err(e) => Err(Box::new((state, e))),
        }
    }

    fn decode_success(
        &mut self,
        state: &mut CallState,
        body: &[u8],
        elapsed: Duration,
    ) -> Result<Value, Error> {
        let decode_err = |what: &'static str, e: serde_json::Error| Error::Decode {
            what,
            len: body.len(),
            message: e.to_string(),
        };
        match &state.call {
            Call::Hunt(_) | Call::HuntWindow(_) | Call::HuntStream(_) => {
                // The streaming decoder reads row by row: no tree of the whole document.
                let mut rows = Vec::new();
                let parsed = crate::stream::decode_streaming(body, |row| rows.push(row)).map(
                    |(schema, stats, _)| HuntResponse {
                        stats,
                        schema,
                        results: rows,
                        ..HuntResponse::default()
                    },
                );
                let stats = parsed.as_ref().ok().and_then(|h| h.stats.as_ref());
                let running = running_time(stats, elapsed);
                self.settle(
                    state.group,
                    state.reservation.take(),
                    state.store.take(),
                    running,
                );
                self.record_runtime(running);
                let resp = parsed.map_err(|e| Error::Decode {
                    what: "hunting",
                    len: body.len(),
                    message: e.to_string(),
                })?;
                let result =
                    HuntResult::from_response(resp, self.config.limits.hunting.rows, running);
                if let Some(e) = self.refuse_truncated(&state.call, result.truncated) {
                    return Err(e);
                }
                Ok(Value::Hunt(result))
            }
            Call::ListIncidents(_) | Call::NextIncidents(_) => {
                let page: IncidentPage =
                    serde_json::from_slice(body).map_err(|e| decode_err("incidents", e))?;
                let next = self.next_page(&state.call, &page);
                Ok(Value::Incidents { page, next })
            }
            Call::GetIncident(_) | Call::UpdateIncident(..) => {
                let inc: Incident =
                    serde_json::from_slice(body).map_err(|e| decode_err("incident", e))?;
                Ok(Value::Incident(Box::new(inc)))
            }
            Call::ListAlerts(_) | Call::NextAlerts(_) => {
                let page: AlertPage =
                    serde_json::from_slice(body).map_err(|e| decode_err("alerts", e))?;
                let next = self.next_alerts(&state.call, &page);
                Ok(Value::Alerts { page, next })
            }
            Call::GetAlert(_) | Call::UpdateAlert(..) => {
                let alert: Alert =
                    serde_json::from_slice(body).map_err(|e| decode_err("alert", e))?;
                Ok(Value::Alert(Box::new(alert)))
            }
        }
    }

    fn next_alerts(&self, call: &Call, page: &AlertPage) -> Option<Call> {
        if let Some(link) = &page.next_link {
            return Some(Call::NextAlerts(link.clone()));
        }
        // Defender documents no nextLink for alerts: a full page means there may be more.
        match call {
            Call::ListAlerts(q) if self.config.surface != Surface::Graph => {
                let max = alerts::max_top(self.config.surface);
                let top = q.top.unwrap_or(max).clamp(1, max);
                (page.value.len() as u32 >= top).then(|| {
                    let mut next = q.clone();
                    next.top = Some(top);
                    next.skip = Some(q.skip.unwrap_or(0) + top);
                    Call::ListAlerts(next)
                })
            }
            _ => None,
        }
    }

    fn next_page(&self, call: &Call, page: &IncidentPage) -> Option<Call> {
        if let Some(link) = &page.next_link {
            return Some(Call::NextIncidents(link.clone()));
        }
        // Defender XDR documents no nextLink: a full page means there may be more.
        match call {
            Call::ListIncidents(q) if self.config.surface != Surface::Graph => {
                let max = max_top(self.config.surface);
                let top = q.top.unwrap_or(max).clamp(1, max);
                (page.value.len() as u32 >= top).then(|| {
                    let mut next = q.clone();
                    next.top = Some(top);
                    next.skip = Some(q.skip.unwrap_or(0) + top);
                    Call::ListIncidents(next)
                })
            }
            _ => None,
        }
    }

    fn retry_or_fail(
        &mut self,
        id: CallId,
        mut state: CallState,
        failure: Failure,
        server_wait: Option<Duration>,
        error: impl FnOnce() -> Error,
    ) {
        match self.policy.retry(&failure) {
            Retry::After(backoff) => {
                let wait = backoff.max(server_wait.unwrap_or_default());
                let retry_at = self.now + wait;
                state.phase = Phase::Queued;
                state.queued_since = self.now;
                state.not_before = Some(retry_at);
                let max_wait = self.policy.max_wait();
                // Every wait the server asks for is held to `max_wait` (a 429's, and a
                // 5xx's `Retry-After`); the policy's own backoff is not.
                let server_asked = failure.kind == FailureKind::Throttled || server_wait.is_some();
                if server_asked && wait > max_wait {
                    self.fail(id, error());
                    return;
                }
                if let Some(deadline) = self.policy.deadline(state.group) {
                    if retry_at >= state.submitted + deadline {
                        self.fail(id, error());
                        return;
                    }
                }
                if server_asked {
                    let group = state.group;
                    state.announced_until = Some(retry_at);
                    self.events.push_back(Event::Waiting {
                        id,
                        group,
                        until: retry_at,
                        reason: WaitReason::ServerAsked(wait),
                    });
                }
                self.calls.insert(id, state);
            }
            Retry::Stop => self.fail(id, error()),
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        // Anything due at or before `now` was acted on by the last `drive`; offering it
        // again would spin.
        let now = self.now;
        let mut t: Option<Instant> = None;
        let mut offer = |x: Instant| {
            if x > now {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for (_, _, by) in self.admitting.values() {
            offer(*by);
        }
        if let Some(by) = self.token.fetch_deadline {
            offer(by);
        }
        let mut any_queued = false;
        for c in self.calls.values() {
            if matches!(c.phase, Phase::Admitting(_)) {
                if let Some(d) = self.policy.deadline(c.group) {
                    offer(c.submitted + d);
                }
            }
            if matches!(c.phase, Phase::Queued) {
                any_queued = true;
                if let Some(nb) = c.not_before {
                    offer(nb);
                }
                if let Some(d) = self.policy.deadline(c.group) {
                    offer(c.submitted + d);
                }
            }
        }
        if any_queued {
            if let Some(nb) = self.token.not_before {
                offer(nb);
            }
            if let Some(tok) = &self.token.current {
                if !self.token.fetching {
                    offer(tok.refresh_at());
                }
            }
            for q in self.quotas.values() {
                if let Some(b) = q.blocked_until() {
                    offer(b);
                }
            }
        }
        t
    }
}

/// The running time a hunting answer charges: its `ExecutionTime`, else how long the call
/// took (Defender for Endpoint reports none).
fn running_time(stats: Option<&Stats>, elapsed: Duration) -> Duration {
    stats
        .and_then(|s| s.execution_duration())
        .unwrap_or(elapsed)
}

fn same_origin(link: &str, base: &str) -> bool {
    match (link.parse::<http::Uri>(), base.parse::<http::Uri>()) {
        (Ok(l), Ok(b)) => {
            l.scheme() == b.scheme() && l.authority() == b.authority() && l.authority().is_some()
        }
        _ => false,
    }
}
