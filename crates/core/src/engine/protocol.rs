//! The protocol between the engine and a driver: the calls, what they produce, the
//! transmits, quota operations and events, and their ids.

use super::*;

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

/// The typed result of each kind of call: `client.call(c)?.into_incident()`. A value of
/// another kind is [`Error::Internal`] (a bug), never mistaken for a decoding error.
impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Hunt(_) => "a hunting result",
            Value::Incidents { .. } => "a page of incidents",
            Value::Incident(_) => "an incident",
            Value::Alerts { .. } => "a page of alerts",
            Value::Alert(_) => "an alert",
            Value::HuntStreamed(_) => "a streamed hunt's summary",
        }
    }

    fn not(self, wanted: &str) -> Error {
        Error::Internal {
            message: format!("the call wanted {wanted} and ended with {}", self.kind()),
        }
    }

    /// The result of [`Call::Hunt`] or [`Call::HuntWindow`].
    pub fn into_hunt(self) -> Result<HuntResult, Error> {
        match self {
            Value::Hunt(r) => Ok(r),
            other => Err(other.not("a hunting result")),
        }
    }

    /// The summary of [`Call::HuntStream`].
    pub fn into_hunt_summary(self) -> Result<HuntSummary, Error> {
        match self {
            Value::HuntStreamed(s) => Ok(s),
            other => Err(other.not("a streamed hunt's summary")),
        }
    }

    /// The page of [`Call::ListIncidents`] or [`Call::NextIncidents`], and the next
    /// page's call.
    pub fn into_incidents(self) -> Result<(IncidentPage, Option<Call>), Error> {
        match self {
            Value::Incidents { page, next } => Ok((page, next)),
            other => Err(other.not("a page of incidents")),
        }
    }

    /// The incident of [`Call::GetIncident`] or [`Call::UpdateIncident`].
    pub fn into_incident(self) -> Result<Incident, Error> {
        match self {
            Value::Incident(i) => Ok(*i),
            other => Err(other.not("an incident")),
        }
    }

    /// The page of [`Call::ListAlerts`] or [`Call::NextAlerts`], and the next page's call.
    pub fn into_alerts(self) -> Result<(AlertPage, Option<Call>), Error> {
        match self {
            Value::Alerts { page, next } => Ok((page, next)),
            other => Err(other.not("a page of alerts")),
        }
    }

    /// The alert of [`Call::GetAlert`] or [`Call::UpdateAlert`].
    pub fn into_alert(self) -> Result<Alert, Error> {
        match self {
            Value::Alert(a) => Ok(*a),
            other => Err(other.not("an alert")),
        }
    }
}

/// A call's handle. Only the engine makes them ([`Engine::submit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub(crate) u64);

/// A transmission's handle; answer it with `handle_response` or `handle_transport_error`.
/// Only the engine makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub(crate) u64);

impl CallId {
    /// The number (for logs and maps; calls are numbered from 1 in submission order).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl SendId {
    /// The number (for logs and maps).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A request for the transport to perform. Its `Debug` shows the method, the URL, the
/// header names and the body's length: never a header's value or the body (a bearer
/// token, a client secret).
pub struct Transmit {
    /// Answer with this id.
    pub id: SendId,
    /// What it is for: a token, or a call of a group.
    pub purpose: Purpose,
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

/// What a [`Transmit`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A token request: no call owns it (whoever is free performs it).
    Token,
    /// A request of a call, counted against its group's quota.
    Call {
        /// The call.
        id: CallId,
        /// Its API group.
        group: ApiGroup,
    },
}

impl Transmit {
    /// The call it serves; `None` for a token request.
    pub fn call(&self) -> Option<CallId> {
        match self.purpose {
            Purpose::Token => None,
            Purpose::Call { id, .. } => Some(id),
        }
    }

    /// The API group of the call it serves; `None` for a token request.
    pub fn group(&self) -> Option<ApiGroup> {
        match self.purpose {
            Purpose::Token => None,
            Purpose::Call { group, .. } => Some(group),
        }
    }

    /// The span a transport performs it in: `defender.call` with the attributes the
    /// metrics use (see [`crate::telemetry`]): `http.request.method`, `server.address`,
    /// `defender.api_group` (`token` for a token request) and `defender.attempt`, and
    /// empty `http.response.status_code` ([`telemetry::STATUS`](crate::telemetry::STATUS))
    /// and `defender.rows` ([`telemetry::ROWS`](crate::telemetry::ROWS)) for the
    /// transport to record. Never a header (the token is one) or the body (a secret may
    /// be).
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "defender.call",
            http.request.method = self.request.method().as_str(),
            server.address = self.request.uri().host().unwrap_or_default(),
            defender.api_group = self.group().map_or("token", |g| g.as_str()),
            defender.attempt = self.attempt,
            http.response.status_code = tracing::field::Empty,
            defender.rows = tracing::field::Empty,
        )
    }
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
            .field("purpose", &self.purpose)
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

/// What a caller held of a call it gave up (its future dropped, its thread unwound, its
/// stream dropped), for [`Engine::abandon`]: how the request's accounting settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A transmit handed out and never sent: nothing ran, nothing is charged, its place
    /// in the call windows is given back.
    Unsent,
    /// A request sent whose answer was not seen: it counts, and the time since it was
    /// sent is charged as running time (it may have run).
    InFlight,
    /// A streamed hunt's body, cut short by its reader: the query ran; the time since it
    /// was sent is charged.
    Body,
}

/// An admission's handle: answer it with [`Engine::handle_admission`]. Only the engine
/// makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdmitId(pub(crate) u64);

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
        /// The safety margin this engine widens every window by now (fixed, or learned:
        /// see [`crate::margin`]). A shared store widens by the widest margin of the
        /// processes whose calls count in a window.
        margin: Duration,
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
    /// Not yet: the earliest wait after which it would be admitted, and why. Every
    /// queued call of the group waits that long.
    Denied {
        /// The wait, from now. `None` only when nothing but the end of one of this
        /// engine's own calls in flight can free it (the in-process answer knows that;
        /// a store shared by processes should give a time to ask again).
        retry_after: Option<Duration>,
        /// What binds.
        reason: WaitReason,
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
    /// The server said the running-time budget is spent (a 429), until a time it gave.
    RuntimeExhausted,
    /// The group is blocked until a retry time the server gave (a 429 seen earlier).
    ServerRetryTime,
    /// This call's answer asked to wait this long (a 429's or a 5xx's `Retry-After`).
    ServerAsked(Duration),
    /// A quota store of the caller's said no, in its own words (the stores of this
    /// workspace give one of the typed reasons above).
    Store(String),
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Calls(l) => write!(f, "{l}"),
            WaitReason::Runtime(l) => write!(f, "{l}"),
            WaitReason::RuntimeHeld => f.write_str("the running-time budget"),
            WaitReason::RuntimeExhausted => {
                f.write_str("the running-time budget the server said is spent")
            }
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
    /// A new access token is in use: the first one (`replaced` false), or one that
    /// replaced an older or expired token (a refresh). For logs: no secret in it.
    TokenRefreshed {
        /// How long the new token is good for.
        valid_for: Duration,
        /// Whether it replaced an earlier token.
        replaced: bool,
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

/// Who counted a [`GroupUsage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageSource {
    /// This engine's in-process admission: exact for one process.
    Engine,
    /// The shared quota store: every process of the app.
    Store,
    /// The store was unreachable: its fallback's count, in this process only.
    StoreFallback,
}

/// Usage of one group's quota, from the engine or from a shared store (the clients'
/// `quota()` asks whichever admits their calls).
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
    /// Until when the server said the running-time budget is spent, if that lies ahead.
    pub runtime_blocked_until: Option<Instant>,
    /// Queries in flight holding a running-time reservation (in every process, when a
    /// store counted).
    pub in_flight: u32,
    /// The safety margin added to every call window (learned, unless turned off).
    pub margin: Duration,
    /// This client's calls waiting or in flight.
    pub active_calls: usize,
    /// Calls in the group's longest window by the name of the process that made them,
    /// when a shared store counted and its processes set a name (`defender-redis`'s
    /// `StoreConfig::client_name`); empty otherwise.
    pub clients: Vec<(String, u32)>,
    /// Who counted.
    pub source: UsageSource,
}

impl GroupUsage {
    /// A store's usage with this engine's own calls counted in (`own` is
    /// [`Engine::usage`]): what a client's `quota()` shows with a shared store. The
    /// quota gauges are set from it ([`crate::telemetry::record_usage`]): with a store,
    /// they move when someone asks. The
    /// margin is the wider of the store's (the widest another process published) and
    /// this engine's own: the one its next call is admitted with.
    pub fn with_own_calls(mut store: Vec<GroupUsage>, own: &[GroupUsage]) -> Vec<GroupUsage> {
        for u in &mut store {
            let mine = own.iter().filter(|o| o.group == u.group);
            u.active_calls = mine.clone().map(|o| o.active_calls).sum();
            u.margin = mine.map(|o| o.margin).fold(u.margin, Duration::max);
        }
        crate::telemetry::record_usage(&store);
        store
    }
}
