//! The HTTP server: routing, authentication, quotas, handlers and faults.
//!
//! Routing is done by hand in one fallback handler so every error (404, 405, 413, 415,
//! 400) gets the `{"error":{...}}` envelope instead of a framework's plain-text rejection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use defender_core::limits::{ApiGroup, CallLimit, Limits};
use defender_core::ApiError;
use defender_emulator_kql::{Dataset, DatasetConfig, RunOptions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::alerts::Alert;
use crate::churn::ChurnState;
use crate::faults::{Fault, FaultKind};
use crate::filter::{Collection, Field, FieldValue, Filter};
use crate::hunting::{self, HuntShape};
use crate::incidents::{self, Dialect, Incident};
use crate::quota::{CallWindows, RuntimeScope, RuntimeWindows, WindowMode};
use crate::rng::mix;
use defender_core::timefmt::{format_http_date_ms, format_rfc3339_ms, format_timespan};
mod identity;

use crate::{
    App, Clock, Config, EmulatorError, ALERTS_MAX_PAGE_SIZE, GRAPH_ALERTS_PAGE_SIZE,
    GRAPH_MAX_PAGE_SIZE, MAX_PAGE_SIZE,
};

type Key = (String, String);

#[derive(Debug, Clone)]
struct TokenInfo {
    tenant: String,
    client_id: String,
    expires_at: Duration,
    /// The API the token was issued for (its `aud`), from the scope it was requested with.
    audience: Audience,
}

/// The API a token is for, as the services check the token's `aud`: each accepts only
/// its own (a Graph token on Defender XDR is a 401, and the other way round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// `https://api.security.microsoft.com` (and its GCC / GCC High hosts).
    Xdr,
    /// `https://api.securitycenter.microsoft.com` (and its GCC / GCC High hosts).
    Mde,
    /// `https://graph.microsoft.com` (and the US government hosts).
    Graph,
}

impl Audience {
    /// The audience of a `/.default` scope, by the resource's host; `None` for a resource
    /// the emulator does not serve.
    fn of_scope(scope: &str) -> Option<Audience> {
        let resource = scope.trim().trim_end_matches("/.default");
        let rest = resource
            .split_once("://")
            .map_or(resource, |(_, r)| r)
            .to_ascii_lowercase();
        let host = rest.split(['/', ':']).next().unwrap_or("");
        if host.contains("graph.microsoft.") {
            Some(Audience::Graph)
        } else if host.contains("securitycenter.") {
            Some(Audience::Mde)
        } else if host.contains("security.microsoft.") {
            Some(Audience::Xdr)
        } else {
            None
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Audience::Xdr => "https://api.security.microsoft.com/.default",
            Audience::Mde => "https://api.securitycenter.microsoft.com/.default",
            Audience::Graph => "https://graph.microsoft.com/.default",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Counters {
    requests: u64,
    throttled: u64,
    faults: u64,
    tokens_issued: u64,
    /// The last [`ADMITTED_KEPT`] admitted calls (emulator clock), for the dashboard's
    /// timeline; only the per-key counters fill it.
    admitted: VecDeque<Duration>,
}

/// How many answered requests the stats keep ([`Stats::recent`]): enough for the
/// dashboard's table, small enough to serialise on every poll.
pub(crate) const RECENT_KEPT: usize = 200;
/// How many admitted calls per (tenant, app, group) the stats keep for the timeline
/// ([`KeyStats::admitted_unix_ms`]): a quarter hour of a 45-per-minute quota.
pub(crate) const ADMITTED_KEPT: usize = 1000;
/// How many 429 marks the stats keep at most ([`Stats::throttles`]), besides dropping
/// those older than [`THROTTLE_HORIZON`].
pub(crate) const THROTTLES_KEPT: usize = 5000;
/// How far back the 429 marks go.
pub(crate) const THROTTLE_HORIZON: Duration = Duration::from_secs(3600);
/// The longest path a [`RequestRecord`] keeps (bytes; cut at a character boundary).
const RECORDED_PATH_MAX: usize = 256;

#[derive(Debug, Default)]
struct MutState {
    tokens: HashMap<String, TokenInfo>,
    calls: HashMap<(Key, ApiGroup), CallWindows>,
    /// Keyed by [`Shared::runtime_key`]: (tenant, "") per tenant, or (tenant, app).
    runtime: HashMap<Key, RuntimeWindows>,
    counters: BTreeMap<(Key, ApiGroup), Counters>,
    totals: Counters,
    faults_by_kind: BTreeMap<String, u64>,
    /// The last [`RECENT_KEPT`] answered requests, oldest first.
    recent: VecDeque<RequestRecord>,
    /// The quota and budget 429s of the last [`THROTTLE_HORIZON`], oldest first.
    throttles: VecDeque<ThrottleMark>,
    incidents: BTreeMap<i64, Incident>,
    /// Where the churn got to, when incidents churn.
    churn: Option<ChurnState>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    cfg: Config,
    apps: Vec<App>,
    pub(crate) clock: Clock,
    dataset: Arc<Dataset>,
    generated: Vec<Incident>,
    fault_seed: u64,
    fault_seq: AtomicU64,
    ids: AtomicU64,
    random: u64,
    state: Mutex<MutState>,
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    identity: identity::Identity,
}

/// Counters and window usage, as `GET /_emulator/stats` returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Stats {
    /// Every request the emulator answered (API, token and unrouted; not `/_emulator/*`).
    pub requests: u64,
    /// 429s answered because of quotas or running-time budgets (not `odd429` faults).
    pub throttled: u64,
    /// Faults injected.
    pub faults: u64,
    /// Faults injected, by kind (`500`, `reset`, `odd429`...).
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// Per (tenant, app, group).
    pub keys: Vec<KeyStats>,
    /// Churn events applied so far ([`crate::EmulatorBuilder::churn`]): incidents
    /// changed or created.
    #[serde(default)]
    pub churn_events: u64,
    /// The emulator clock when these stats were taken (Unix milliseconds).
    #[serde(default)]
    pub now_unix_ms: i64,
    /// The emulator clock's start (Unix milliseconds): fixed windows are aligned to it.
    #[serde(default)]
    pub start_unix_ms: i64,
    /// How quota windows are aligned: `sliding` or `fixed`.
    #[serde(default)]
    pub window_mode: String,
    /// The last 200 answered requests (the same requests as [`Stats::requests`]
    /// counts), oldest first.
    #[serde(default)]
    pub recent: Vec<RequestRecord>,
    /// The 429s of quotas and budgets (those [`Stats::throttled`] counts) of the last
    /// hour on the emulator clock, oldest first, at most 5,000.
    #[serde(default)]
    pub throttles: Vec<ThrottleMark>,
}

/// One answered request, as the dashboard's table shows it.
///
/// The stats of an emulator from before the dashboard still parse: the fields it added
/// to [`Stats`] and [`KeyStats`] default to empty.
///
/// ```
/// use defender_emulator::Stats;
///
/// let old = r#"{"requests": 3, "throttled": 1, "faults": 0, "faults_by_kind": {},
///              "tokens_issued": 1, "keys": []}"#;
/// let stats: Stats = serde_json::from_str(old).unwrap();
/// assert!(stats.recent.is_empty() && stats.throttles.is_empty());
///
/// let new = r#"{"requests": 1, "throttled": 0, "faults": 0, "faults_by_kind": {},
///              "tokens_issued": 0, "keys": [], "recent": [{"at_unix_ms": 1767225600000,
///              "method": "GET", "path": "/api/incidents", "group": "incidents",
///              "status": 200, "latency_ms": 1.5, "fault": null}]}"#;
/// let stats: Stats = serde_json::from_str(new).unwrap();
/// assert_eq!(stats.recent[0].status, 200);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RequestRecord {
    /// When it arrived, on the emulator clock (Unix milliseconds).
    pub at_unix_ms: i64,
    /// The HTTP method.
    pub method: String,
    /// The path, without the query (cut at 256 bytes).
    pub path: String,
    /// The quota group of the route (`hunting`, `incidents`, `alerts`); `None` for
    /// tokens, identity and unknown paths.
    pub group: Option<String>,
    /// The status answered; 0 when the client went away before the answer.
    pub status: u16,
    /// Wall time from the request's arrival to its answer, in milliseconds (real time,
    /// even on a manual clock).
    pub latency_ms: f64,
    /// The fault injected into it, by kind (`500`, `reset`, `odd429`...).
    pub fault: Option<String>,
}

/// One 429 of a quota or a running-time budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ThrottleMark {
    /// When, on the emulator clock (Unix milliseconds).
    pub at_unix_ms: i64,
    /// The tenant id.
    pub tenant: String,
    /// The client id.
    pub client_id: String,
    /// `hunting`, `incidents` or `alerts`.
    pub group: String,
    /// What refused it: `calls` (a call window) or `runtime` (a running-time budget).
    pub kind: String,
}

/// The counters of one (tenant, app, API group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyStats {
    /// The tenant id.
    pub tenant: String,
    /// The client id.
    pub client_id: String,
    /// `hunting`, `incidents` or `alerts`.
    pub group: String,
    /// Authenticated requests (admitted or not).
    pub requests: u64,
    /// Requests refused with 429 by quotas or budgets.
    pub throttled: u64,
    /// Requests that got a fault.
    pub faults: u64,
    /// Running time charged so far, in seconds (hunting): the tenant's shared budget,
    /// or this app's own with [`crate::RuntimeScope::App`].
    pub runtime_charged_seconds: f64,
    /// Every configured window and its current usage.
    pub windows: Vec<WindowStats>,
    /// The last 1,000 admitted calls, on the emulator clock (Unix milliseconds), oldest
    /// first: the dashboard draws the shortest window's usage over time from them (exact
    /// back to the oldest kept call plus one window).
    #[serde(default)]
    pub admitted_unix_ms: Vec<i64>,
}

/// One window's current usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WindowStats {
    /// `calls` or `runtime`.
    pub kind: String,
    /// The period as a .NET TimeSpan (`00:01:00`).
    pub period: String,
    /// The limit: calls, or seconds of running time.
    pub limit: f64,
    /// Used in the current window: calls, or seconds.
    pub used: f64,
}

fn lock(m: &Mutex<MutState>) -> MutexGuard<'_, MutState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(
        cfg: Config,
        addr: SocketAddr,
        tls: bool,
    ) -> Result<Arc<Shared>, EmulatorError> {
        let clock = cfg.clock.clone().unwrap_or_else(Clock::real);
        let mut apps = Vec::new();
        if cfg.builtin_app {
            let mut app = App::builtin();
            if let Some(t) = &cfg.tenant {
                app.tenant = t.clone();
            }
            if let Some(c) = &cfg.client_id {
                app.client_id = c.clone();
            }
            if let Some(s) = &cfg.secret {
                app.secret = s.read("client secret file")?;
            }
            if app.tenant.is_empty() || app.client_id.is_empty() || app.secret.is_empty() {
                return Err(EmulatorError::Config(
                    "the tenant, client id and secret must not be empty".into(),
                ));
            }
            apps.push(app);
        }
        apps.extend(cfg.apps.iter().cloned());
        if apps.is_empty() {
            return Err(EmulatorError::Config("no app is registered".into()));
        }
        let anchor = clock.start_unix_ms();
        let dataset = Dataset::generate(&DatasetConfig {
            seed: cfg.seed,
            rows_per_table: cfg.rows_per_table,
            anchor_unix_ms: anchor + cfg.data_ahead.as_millis() as i64,
            span_days: cfg.span_days,
            table_rows: cfg.table_rows.clone(),
        });
        let generated = incidents::generate(cfg.seed, cfg.incidents, anchor);
        let state = MutState {
            incidents: generated.iter().map(|i| (i.id, i.clone())).collect(),
            churn: cfg.churn.map(|_| ChurnState::new(cfg.seed)),
            ..MutState::default()
        };
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let identity = identity::Identity::new(&cfg, random, &apps[0])?;
        Ok(Arc::new(Shared {
            identity,
            scheme: if tls { "https" } else { "http" },
            fault_seed: cfg.faults.seed.unwrap_or(cfg.seed),
            cfg,
            apps,
            clock,
            dataset: Arc::new(dataset),
            generated,
            fault_seq: AtomicU64::new(0),
            ids: AtomicU64::new(1),
            random,
            state: Mutex::new(state),
            addr,
        }))
    }

    /// The built-in app (or, without it, the first registered): the one the certificate,
    /// the federated token and the managed identity belong to.
    pub(crate) fn primary(&self) -> &App {
        &self.apps[0]
    }

    pub(crate) fn identity_header(&self) -> &str {
        &self.identity.identity_header
    }

    fn next_random(&self) -> u64 {
        mix(self.random ^ mix(self.ids.fetch_add(1, Ordering::Relaxed)))
    }

    /// A correlation id in the service's style: `|1d25001e-48e8e09dbddde4f4.`.
    fn request_id(&self) -> String {
        let r = self.next_random();
        format!("|{:08x}-{:016x}.", r >> 32, mix(r))
    }

    fn uuid(&self) -> String {
        let a = self.next_random();
        let b = mix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    /// The state with the churn due by now applied: every route that reads or changes
    /// incidents (and their alerts) takes the lock through this.
    fn incidents_state(&self) -> MutexGuard<'_, MutState> {
        let mut st = lock(&self.state);
        if let Some(churn) = &self.cfg.churn {
            let elapsed = self.clock.elapsed();
            let MutState {
                churn: state,
                incidents,
                ..
            } = &mut *st;
            if let Some(state) = state {
                state.catch_up(churn, self.clock.start_unix_ms(), elapsed, incidents);
            }
        }
        st
    }

    /// The key of the running-time budget `key` (tenant, app) draws on: the tenant's
    /// (the app left empty) or, with [`RuntimeScope::App`], the app's own.
    pub(crate) fn runtime_key(&self, key: &Key) -> Key {
        match self.cfg.runtime_scope {
            RuntimeScope::Tenant => (key.0.clone(), String::new()),
            RuntimeScope::App => key.clone(),
        }
    }

    pub(crate) fn reset(&self, incidents: bool) {
        let mut st = lock(&self.state);
        st.calls.clear();
        st.runtime.clear();
        st.counters.clear();
        st.totals = Counters::default();
        st.faults_by_kind.clear();
        st.recent.clear();
        st.throttles.clear();
        if incidents {
            st.incidents = self.generated.iter().map(|i| (i.id, i.clone())).collect();
            // The history replays from the start: one seed and clock, one history.
            st.churn = self.cfg.churn.map(|_| ChurnState::new(self.cfg.seed));
        }
        self.fault_seq.store(0, Ordering::SeqCst);
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = lock(&self.state);
        let now = self.clock.elapsed();
        let start = self.clock.start_unix_ms();
        let unix = |t: Duration| start.saturating_add(t.as_millis() as i64);
        let now_unix_ms = unix(now);
        let mode = self.cfg.window_mode;
        let mut keys = Vec::new();
        for ((key, group), c) in &st.counters {
            let limits = self.cfg.limits.group(*group);
            let calls = st.calls.get(&(key.clone(), *group));
            let mut windows: Vec<WindowStats> = limits
                .calls
                .iter()
                .map(|l| WindowStats {
                    kind: "calls".into(),
                    period: format_timespan(l.per),
                    limit: f64::from(l.max),
                    used: calls.map_or(0, |w| w.used(l, mode, now)) as f64,
                })
                .collect();
            let mut charged = 0.0;
            if *group == ApiGroup::Hunting {
                let rt = st.runtime.get(&self.runtime_key(key));
                charged = rt.map_or(0.0, |r| r.total().as_secs_f64());
                windows.extend(limits.runtime.iter().map(|l| WindowStats {
                    kind: "runtime".into(),
                    period: format_timespan(l.per),
                    limit: l.budget.as_secs_f64(),
                    used: rt.map_or(0.0, |r| r.used(l, mode, now).as_secs_f64()),
                }));
            }
            keys.push(KeyStats {
                tenant: key.0.clone(),
                client_id: key.1.clone(),
                group: group.as_str().into(),
                requests: c.requests,
                throttled: c.throttled,
                faults: c.faults,
                runtime_charged_seconds: charged,
                windows,
                admitted_unix_ms: c.admitted.iter().map(|t| unix(*t)).collect(),
            });
        }
        Stats {
            requests: st.totals.requests,
            throttled: st.totals.throttled,
            faults: st.totals.faults,
            faults_by_kind: st.faults_by_kind.clone(),
            tokens_issued: st.totals.tokens_issued,
            keys,
            churn_events: st.churn.as_ref().map_or(0, |c| c.applied),
            now_unix_ms,
            start_unix_ms: start,
            window_mode: match mode {
                WindowMode::Sliding => "sliding",
                WindowMode::Fixed => "fixed",
            }
            .into(),
            recent: st.recent.iter().cloned().collect(),
            // The marks are pruned when one is added; the clock may have moved since.
            throttles: st
                .throttles
                .iter()
                .filter(|m| m.at_unix_ms > now_unix_ms - THROTTLE_HORIZON.as_millis() as i64)
                .cloned()
                .collect(),
        }
    }

    /// Counts an answered request and keeps it in the ring of recent ones: the one lock
    /// a request takes for the stats besides its admission.
    fn record_request(&self, mut record: RequestRecord) {
        if record.path.len() > RECORDED_PATH_MAX {
            let mut cut = RECORDED_PATH_MAX;
            while !record.path.is_char_boundary(cut) {
                cut -= 1;
            }
            record.path.truncate(cut);
        }
        let mut st = lock(&self.state);
        st.totals.requests += 1;
        if st.recent.len() >= RECENT_KEPT {
            st.recent.pop_front();
        }
        st.recent.push_back(record);
    }

    fn counters<'a>(st: &'a mut MutState, key: &Key, group: ApiGroup) -> &'a mut Counters {
        st.counters.entry((key.clone(), group)).or_default()
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

// ---------------------------------------------------------------------------------------
// Replies

/// A response before it becomes an axum response (so faults can rewrite it).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    json: bool,
}

impl Reply {
    fn json(status: StatusCode, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            json: true,
        }
    }

    fn value(status: StatusCode, v: &Value) -> Reply {
        Reply::json(status, serde_json::to_vec(v).unwrap_or_default())
    }

    fn error(status: StatusCode, code: &str, message: impl Into<String>, target: String) -> Reply {
        let e = ApiError {
            code: code.into(),
            message: message.into(),
            target: Some(target),
            ..ApiError::default()
        };
        Reply::json(status, e.to_body())
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> Response {
        let mut b = Response::builder().status(self.status);
        if self.json {
            b = b.header(header::CONTENT_TYPE, "application/json; charset=utf-8");
        }
        for (k, v) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                b = b.header(*k, v);
            }
        }
        b.body(Body::from(self.body))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

/// A body that sends `data` (if any), waits a moment so hyper flushes it, and then fails,
/// so hyper aborts the connection before the declared length is complete. Without data it
/// fails at once and nothing (not even the status line) is sent.
struct BrokenBody {
    data: Option<Bytes>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    declared: u64,
}

impl http_body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(d) = self.data.take() {
            self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        if let Some(p) = self.pause.as_mut() {
            if p.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulator fault: connection dropped",
        ))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.declared)
    }
}

fn broken_response(status: StatusCode, data: Option<Vec<u8>>, declared: u64) -> Response {
    let body = BrokenBody {
        data: data.filter(|d| !d.is_empty()).map(Bytes::from),
        pause: None,
        declared,
    };
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    r
}

// ---------------------------------------------------------------------------------------
// Routing

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// A token endpoint: the tenant and the version.
    Token(String, identity::Version),
    /// Identity's GET routes: metadata documents and managed identity.
    Identity(identity::IdRoute),
    Hunt(HuntShape),
    /// `GET` a collection.
    List(Collection),
    /// `GET` or `PATCH` one item of a collection.
    One(Collection, String),
    /// `POST` a comment to one item of a Graph collection.
    Comments(Collection, String),
}

impl Route {
    fn group(&self) -> Option<ApiGroup> {
        match self {
            Route::Token(..) | Route::Identity(_) => None,
            Route::Hunt(_) => Some(ApiGroup::Hunting),
            Route::List(c) | Route::One(c, _) | Route::Comments(c, _) => Some(served(*c).group),
        }
    }

    fn is_graph(&self) -> bool {
        match self {
            Route::Token(..) | Route::Identity(_) => false,
            Route::Hunt(shape) => *shape == HuntShape::Graph,
            Route::List(c) | Route::One(c, _) | Route::Comments(c, _) => {
                c.dialect() == Dialect::Graph
            }
        }
    }

    /// The token audiences the route's service accepts (none: any token).
    fn audiences(&self) -> &'static [Audience] {
        match self {
            Route::Token(..) | Route::Identity(_) => &[],
            Route::Hunt(HuntShape::Mde) => &[Audience::Mde],
            Route::Hunt(HuntShape::Xdr) => &[Audience::Xdr],
            Route::Hunt(HuntShape::Graph) => &[Audience::Graph],
            Route::List(c) | Route::One(c, _) | Route::Comments(c, _) => served(*c).audiences,
        }
    }

    /// The application permissions of which the route needs one.
    fn permissions(&self, method: &Method) -> &'static [&'static str] {
        match self {
            Route::Token(..) | Route::Identity(_) => &[],
            Route::Hunt(HuntShape::Xdr) => &["AdvancedHunting.Read.All"],
            Route::Hunt(HuntShape::Mde) => &["AdvancedQuery.Read.All"],
            Route::Hunt(HuntShape::Graph) => &["ThreatHunting.Read.All"],
            Route::One(c, _) if method == Method::PATCH => served(*c).write,
            Route::Comments(c, _) => served(*c).write,
            Route::List(c) | Route::One(c, _) => served(*c).read,
        }
    }

    fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Token(..) | Route::Hunt(_) | Route::Comments(..) => &[Method::POST],
            Route::Identity(_) => &[Method::GET],
            Route::List(_) => &[Method::GET],
            Route::One(..) => &[Method::GET, Method::PATCH],
        }
    }
}

fn route(path: &str) -> Option<Route> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let id = |i: usize| crate::form::decode(segs[i]);
    match l.as_slice() {
        [_, "oauth2", "v2.0", "token"] => {
            Some(Route::Token(segs[0].to_owned(), identity::Version::V2))
        }
        [_, "oauth2", "token"] => Some(Route::Token(segs[0].to_owned(), identity::Version::V1)),
        [_, "v2.0", ".well-known", "openid-configuration"] => Some(Route::Identity(
            identity::IdRoute::OpenId(segs[0].to_owned(), identity::Version::V2),
        )),
        [_, ".well-known", "openid-configuration"] => Some(Route::Identity(
            identity::IdRoute::OpenId(segs[0].to_owned(), identity::Version::V1),
        )),
        [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"] => {
            Some(Route::Identity(identity::IdRoute::Keys(segs[0].to_owned())))
        }
        ["msi", "token"] => Some(Route::Identity(identity::IdRoute::AppService)),
        ["metadata", "identity", "oauth2", "token"] => {
            Some(Route::Identity(identity::IdRoute::Imds))
        }
        ["api", "advancedhunting", "run"] => Some(Route::Hunt(HuntShape::Xdr)),
        ["api", "advancedqueries", "run"] => Some(Route::Hunt(HuntShape::Mde)),
        ["v1.0", "security", "runhuntingquery"] => Some(Route::Hunt(HuntShape::Graph)),
        ["api", "incidents"] => Some(Route::List(Collection::XdrIncidents)),
        ["api", "incidents", _] => Some(Route::One(Collection::XdrIncidents, id(2))),
        // Defender for Endpoint's alerts, which the Defender XDR host serves too: the
        // emulator serves both hosts from one base URL, so one route (and both tokens).
        ["api", "alerts"] => Some(Route::List(Collection::MdeAlerts)),
        ["api", "alerts", _] => Some(Route::One(Collection::MdeAlerts, id(2))),
        ["v1.0", "security", "incidents"] => Some(Route::List(Collection::GraphIncidents)),
        ["v1.0", "security", "incidents", _] => Some(Route::One(Collection::GraphIncidents, id(3))),
        ["v1.0", "security", "incidents", _, "comments"] => {
            Some(Route::Comments(Collection::GraphIncidents, id(3)))
        }
        ["v1.0", "security", "alerts_v2"] => Some(Route::List(Collection::GraphAlerts)),
        ["v1.0", "security", "alerts_v2", _] => Some(Route::One(Collection::GraphAlerts, id(3))),
        ["v1.0", "security", "alerts_v2", _, "comments"] => {
            Some(Route::Comments(Collection::GraphAlerts, id(3)))
        }
        _ => None,
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/_emulator" || path.starts_with("/_emulator/") {
        return control(&shared, req).await.into_response();
    }
    // No API route lives at the root, so the dashboard can: what a browser opens first.
    if path == "/" && req.method() == Method::GET {
        return dashboard().into_response();
    }
    let mut log = RequestLog {
        shared: &shared,
        started: Instant::now(),
        record: RequestRecord {
            at_unix_ms: shared.clock.unix_ms(),
            method: req.method().as_str().to_owned(),
            path: path.clone(),
            ..RequestRecord::default()
        },
    };
    let response = serve(&shared, req, path, &mut log.record).await;
    log.record.status = response.status().as_u16();
    response
}

/// Counts a request and keeps it among the recent ones when dropped: after its answer,
/// or with status 0 when the client went away first and the server dropped the handler.
struct RequestLog<'a> {
    shared: &'a Shared,
    started: Instant,
    record: RequestRecord,
}

impl Drop for RequestLog<'_> {
    fn drop(&mut self) {
        let mut record = std::mem::take(&mut self.record);
        record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.shared.record_request(record);
    }
}

/// Answers one request that is not the emulator's own (`/_emulator/*`, the dashboard),
/// noting its group and fault in `record`.
async fn serve(
    shared: &Arc<Shared>,
    req: Request,
    path: String,
    record: &mut RequestRecord,
) -> Response {
    let rid = shared.request_id();
    // Graph answers every request with its ids, and its errors in its own envelope.
    let graph = path
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("/v1.0/"))
        .then(|| GraphIds::new(shared, req.headers()));
    let finish = |reply: Reply| match &graph {
        Some(ids) => ids.apply(shared, reply),
        None => reply,
    };
    let Some(route) = route(&path) else {
        return finish(Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No resource was found at '{path}'."),
            rid,
        ))
        .into_response();
    };
    record.group = route.group().map(|g| g.as_str().to_owned());
    if !route.allowed().contains(req.method()) {
        let allow: Vec<&str> = route.allowed().iter().map(Method::as_str).collect();
        return finish(
            Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!(
                    "The requested resource does not support http method '{}'.",
                    req.method()
                ),
                rid,
            )
            .header("allow", allow.join(", ")),
        )
        .into_response();
    }

    // Faults: decided before anything else, from the request's sequence number.
    let eligible =
        !matches!(route, Route::Token(..) | Route::Identity(_)) || shared.cfg.faults.include_token;
    let fault = if eligible && !shared.cfg.faults.is_empty() {
        let n = shared.fault_seq.fetch_add(1, Ordering::SeqCst);
        shared.cfg.faults.decide(shared.fault_seed, n)
    } else {
        None
    };
    if let Some(f) = fault {
        tracing::debug!(path = %path, fault = %f.kind.name(), "injecting a fault");
        record.fault = Some(f.kind.name());
        record_fault(shared, &route, req.headers(), f);
        match f.kind {
            FaultKind::Status(code) => {
                return finish(status_fault(shared, code, rid)).into_response()
            }
            FaultKind::Reset => return broken_response(StatusCode::OK, None, 1024),
            FaultKind::Odd429 => return odd_429(shared, &route, req.headers(), f.variant),
            FaultKind::Slow(d) => tokio::time::sleep(d).await,
            FaultKind::Truncate | FaultKind::Malformed => {}
        }
    }

    let method = req.method().clone();
    let reply = finish(dispatch(shared, route, req, rid).await);
    tracing::debug!(%method, path = %path, status = reply.status.as_u16(), "answered");

    match fault.map(|f| f.kind) {
        Some(FaultKind::Truncate) => {
            let full = reply.body.len().max(2);
            let mut half = reply.body;
            half.truncate(full / 2);
            broken_response(reply.status, Some(half), full as u64)
        }
        Some(FaultKind::Malformed) => {
            let mut body = b"{\"value\": [{\"incidentId\": 1, \"status\": ".to_vec();
            body.extend_from_slice(b"<html>Service Unavailable</html>");
            Reply::json(StatusCode::OK, body).into_response()
        }
        _ => reply.into_response(),
    }
}

/// The ids Graph puts on every response (`request-id`, `client-request-id`, the echo of
/// the caller's header when it sent one) and in its errors' `innerError`.
struct GraphIds {
    request_id: String,
    client_request_id: String,
}

impl GraphIds {
    fn new(shared: &Shared, headers: &HeaderMap) -> GraphIds {
        let echo = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128);
        GraphIds {
            request_id: shared.uuid(),
            client_request_id: echo.map_or_else(|| shared.uuid(), str::to_owned),
        }
    }

    /// Adds the id headers, and turns an error body into Graph's envelope
    /// (GD errors.md): `{"error":{"code","message","innerError":{"date","request-id",
    /// "client-request-id"}}}`, a 401 with the code `InvalidAuthenticationToken`.
    fn apply(&self, shared: &Shared, mut reply: Reply) -> Reply {
        if reply.status.is_client_error() || reply.status.is_server_error() {
            let parsed = serde_json::from_slice::<Value>(&reply.body).ok();
            if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
                let code = if reply.status == StatusCode::UNAUTHORIZED {
                    Value::String("InvalidAuthenticationToken".into())
                } else {
                    error.get("code").cloned().unwrap_or(Value::Null)
                };
                let body = json!({"error": {
                    "code": code,
                    "message": error.get("message").cloned().unwrap_or(Value::Null),
                    "innerError": {
                        "date": format_rfc3339_ms(shared.clock.unix_ms()).replace(".000Z", "Z"),
                        "request-id": self.request_id,
                        "client-request-id": self.client_request_id,
                    }
                }});
                reply.body = serde_json::to_vec(&body).unwrap_or_default();
            }
        }
        reply
            .header("request-id", self.request_id.clone())
            .header("client-request-id", self.client_request_id.clone())
    }
}

fn record_fault(shared: &Shared, route: &Route, headers: &HeaderMap, f: Fault) {
    let key = bearer(headers).and_then(|t| {
        let st = lock(&shared.state);
        st.tokens
            .get(&t)
            .map(|i| (i.tenant.clone(), i.client_id.clone()))
    });
    let mut st = lock(&shared.state);
    st.totals.faults += 1;
    *st.faults_by_kind.entry(f.kind.name()).or_default() += 1;
    if let (Some(key), Some(group)) = (key, route.group()) {
        Shared::counters(&mut st, &key, group).faults += 1;
    }
}

fn status_fault(shared: &Shared, code: u16, rid: String) -> Reply {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (c, m) = match code {
        500 => (
            "InternalServerError",
            "An unexpected error occurred. Please try again later.",
        ),
        502 => ("BadGateway", "The server received an invalid response."),
        503 => (
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please try again later.",
        ),
        504 => ("GatewayTimeout", "The request timed out."),
        408 => ("RequestTimeout", "The request timed out."),
        429 => ("429", "Too many requests."),
        _ => ("Error", "Injected fault."),
    };
    let _ = shared;
    Reply::error(status, c, m, rid)
}

/// The odd 429 variants (see the fault docs).
fn odd_429(shared: &Shared, route: &Route, headers: &HeaderMap, variant: u32) -> Response {
    let tenant = bearer(headers)
        .and_then(|t| lock(&shared.state).tokens.get(&t).map(|i| i.tenant.clone()))
        .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into());
    let limit = route
        .group()
        .and_then(|g| shared.cfg.limits.group(g).calls.first().copied())
        .unwrap_or(CallLimit {
            max: 45,
            per: Duration::from_secs(60),
        });
    let span = format_timespan(limit.per);
    let envelope = |message: String| {
        ApiError {
            code: "429".into(),
            message,
            target: Some(tenant.clone()),
            ..ApiError::default()
        }
        .to_body()
    };
    let std_msg = format!(
        "API calls quota exceeded! maximum allowed {} per {span}",
        limit.max
    );
    let reply = match variant {
        // No body at all.
        0 => Reply {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers: vec![("retry-after", "2".into())],
            body: Vec::new(),
            json: false,
        },
        // A body that is not JSON.
        1 => Reply {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers: vec![
                ("content-type", "text/plain".into()),
                ("retry-after", "1".into()),
            ],
            body: b"Too Many Requests".to_vec(),
            json: false,
        },
        // Retry-After as an HTTP-date, 3 seconds ahead on the emulator's wall clock.
        2 => Reply::json(StatusCode::TOO_MANY_REQUESTS, envelope(std_msg))
            .header("retry-after", format_http_date_ms(shared.clock.unix_ms() + 3000)),
        // Retry-After with decimals.
        3 => Reply::json(StatusCode::TOO_MANY_REQUESTS, envelope(std_msg))
            .header("retry-after", "1.5"),
        // Only retry-after-ms.
        4 => Reply::json(StatusCode::TOO_MANY_REQUESTS, envelope(std_msg))
            .header("retry-after-ms", "1500"),
        // Only x-ms-retry-after-ms.
        5 => Reply::json(StatusCode::TOO_MANY_REQUESTS, envelope(std_msg))
            .header("x-ms-retry-after-ms", "2500"),
        // The capitalised variant that names the key, with the wait only in the body.
        6 => Reply::json(
            StatusCode::TOO_MANY_REQUESTS,
            envelope(format!(
                "API calls quota exceeded! Maximum allowed {} per {span} for the key Destination+TenantID+AppID. You can send requests again in 2 seconds.",
                limit.max
            )),
        ),
        // A day-long TimeSpan.
        _ => Reply::json(
            StatusCode::TOO_MANY_REQUESTS,
            envelope(format!(
                "API calls quota exceeded! maximum allowed {} per 1.00:00:00",
                limit.max.saturating_mul(24 * 60)
            )),
        )
        .header("retry-after", "1"),
    };
    reply.into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = token.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

fn host_base(shared: &Shared, headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("{}://{h}", shared.scheme)
        }
        _ => format!("{}://{}", shared.scheme, shared.addr),
    }
}

async fn read_body(shared: &Shared, body: Body, rid: &str) -> Result<Bytes, Reply> {
    axum::body::to_bytes(body, shared.cfg.max_request_bytes)
        .await
        .map_err(|_| {
            Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "The request body is larger than the limit of {} bytes.",
                    shared.cfg.max_request_bytes
                ),
                rid.to_owned(),
            )
        })
}

struct Caller {
    key: Key,
    app_author: String,
}

/// Authenticates the bearer, checks its audience (one of `audiences` when there are any:
/// the route's service refuses a token issued for another API) and the permission (any
/// of `any_of`; none when it is empty); 401/403 otherwise.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    audiences: &[Audience],
    any_of: &[&str],
    rid: &str,
) -> Result<Caller, Reply> {
    let unauthorized = |m: &str| {
        Reply::error(StatusCode::UNAUTHORIZED, "Unauthorized", m, rid.to_owned())
            .header("www-authenticate", "Bearer")
    };
    let Some(token) = bearer(headers) else {
        return Err(unauthorized(
            "Authorization header is missing or is not a Bearer token.",
        ));
    };
    let info = lock(&shared.state).tokens.get(&token).cloned();
    let Some(info) = info else {
        return Err(unauthorized("The access token is invalid."));
    };
    if shared.clock.elapsed() >= info.expires_at {
        return Err(unauthorized("The access token has expired."));
    }
    if !audiences.is_empty() && !audiences.contains(&info.audience) {
        let wanted: Vec<&str> = audiences.iter().map(|a| a.scope()).collect();
        return Err(if audiences.contains(&Audience::Graph) {
            // Graph's text for a token of another resource.
            unauthorized("Access token validation failure. Invalid audience.")
        } else {
            unauthorized(&format!(
                "The access token's audience is not valid for this API: it was issued for '{}'; request a token for '{}'.",
                info.audience.scope(),
                wanted.join("' or '")
            ))
        });
    }
    let app = shared
        .apps
        .iter()
        .find(|a| a.tenant.eq_ignore_ascii_case(&info.tenant) && a.client_id == info.client_id);
    let Some(app) = app else {
        return Err(unauthorized("The access token is invalid."));
    };
    if !any_of.is_empty()
        && !any_of
            .iter()
            .any(|p| app.permissions.iter().any(|q| q == p))
    {
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The application does not have any of the required application permissions ({}) to access the resource.",
                any_of.join(", ")
            ),
            rid.to_owned(),
        ));
    }
    Ok(Caller {
        key: (info.tenant.clone(), info.client_id.clone()),
        app_author: format!("API-App:{}", info.client_id),
    })
}

/// Counts the call and checks quotas and (for hunting) the running-time budget.
fn admit(shared: &Shared, caller: &Caller, group: ApiGroup, graph: bool) -> Result<(), Reply> {
    let now = shared.clock.elapsed();
    let mode: WindowMode = shared.cfg.window_mode;
    let limits: &Limits = &shared.cfg.limits;
    let gl = limits.group(group);
    let mut st = lock(&shared.state);
    Shared::counters(&mut st, &caller.key, group).requests += 1;
    let calls_entry = st.calls.entry((caller.key.clone(), group)).or_default();
    let call_denied = calls_entry.check(&gl.calls, mode, now).err();
    let mut denial: Option<(Duration, String)> = call_denied.map(|d| {
        let mut m = format!(
            "API calls quota exceeded! maximum allowed {} per {}",
            d.limit.max,
            format_timespan(d.limit.per)
        );
        if shared.cfg.again_in_sentence {
            m.push_str(&format!(
                " You can send requests again in {} seconds.",
                ceil_secs(d.wait)
            ));
        }
        (d.wait, m)
    });
    if denial.is_none() && group == ApiGroup::Hunting {
        let rt = st
            .runtime
            .entry(shared.runtime_key(&caller.key))
            .or_default();
        if let Err(d) = rt.check(&gl.runtime, mode, now) {
            // Round the wait up to whole seconds for the TimeSpan.
            let secs = ceil_secs(d.wait);
            denial = Some((
                d.wait,
                format!(
                    "You have exceeded processing resources allocated to this tenant. You can run queries again in {}.",
                    format_timespan(Duration::from_secs(secs))
                ),
            ));
        }
    }
    match denial {
        None => {
            st.calls
                .entry((caller.key.clone(), group))
                .or_default()
                .record(&gl.calls, now);
            let admitted = &mut Shared::counters(&mut st, &caller.key, group).admitted;
            if admitted.len() >= ADMITTED_KEPT {
                admitted.pop_front();
            }
            admitted.push_back(now);
            Ok(())
        }
        Some((wait, message)) => {
            Shared::counters(&mut st, &caller.key, group).throttled += 1;
            st.totals.throttled += 1;
            let at_unix_ms = shared
                .clock
                .start_unix_ms()
                .saturating_add(now.as_millis() as i64);
            let horizon = at_unix_ms - THROTTLE_HORIZON.as_millis() as i64;
            while st
                .throttles
                .front()
                .is_some_and(|m| m.at_unix_ms <= horizon || st.throttles.len() >= THROTTLES_KEPT)
            {
                st.throttles.pop_front();
            }
            st.throttles.push_back(ThrottleMark {
                at_unix_ms,
                tenant: caller.key.0.clone(),
                client_id: caller.key.1.clone(),
                group: group.as_str().into(),
                kind: if call_denied.is_some() {
                    "calls"
                } else {
                    "runtime"
                }
                .into(),
            });
            drop(st);
            let secs = ceil_secs(wait);
            let reply = if graph {
                Reply::value(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({"error": {
                        "code": "TooManyRequests",
                        "message": if message.starts_with("API calls") { "Please retry again later.".to_owned() } else { message },
                        "innerError": {
                            "date": format_rfc3339_ms(shared.clock.unix_ms()).replace(".000Z", "Z"),
                            "request-id": shared.uuid(),
                            "client-request-id": shared.uuid(),
                        }
                    }}),
                )
            } else {
                Reply::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "429",
                    message,
                    caller.key.0.clone(),
                )
            };
            // Graph always sends Retry-After with its throttling body.
            if shared.cfg.retry_after_header || graph {
                Err(reply.header("retry-after", secs.to_string()))
            } else {
                Err(reply)
            }
        }
    }
}

/// Whole seconds, rounded up; at least 1 for any positive duration (a throttled caller
/// told "0 seconds" would come straight back).
fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

async fn dispatch(shared: &Arc<Shared>, route: Route, req: Request, rid: String) -> Reply {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    if let Route::Token(tenant, version) = &route {
        let bytes = match read_body(shared, body, &rid).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let base = host_base(shared, &parts.headers);
        return identity::token(shared, tenant, *version, &base, &bytes);
    }
    if let Route::Identity(r) = &route {
        let base = host_base(shared, &parts.headers);
        let query = parts.uri.query().unwrap_or("");
        return identity::get(shared, r, &base, &parts.headers, query);
    }
    let graph = route.is_graph();
    let perms = route.permissions(&method);
    let caller = match authenticate(shared, &parts.headers, route.audiences(), perms, &rid) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let bytes = match read_body(shared, body, &rid).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let group = route.group().unwrap_or(ApiGroup::Incidents);
    if let Err(r) = admit(shared, &caller, group, graph) {
        return r;
    }
    let query = parts.uri.query().unwrap_or("").to_owned();
    let headers = &parts.headers;
    match route {
        Route::Hunt(shape) => hunt(shared, &caller, shape, headers, &bytes, rid).await,
        Route::List(c) => list(shared, &caller, c, headers, &query, rid),
        Route::One(c, id) if method == Method::PATCH => {
            patch(shared, &caller, c, &id, headers, &bytes, rid)
        }
        Route::One(c, id) => get_one(shared, &caller, c, &id, headers, &query, rid),
        Route::Comments(c, id) => post_comment(shared, &caller, c, &id, headers, &bytes, rid),
        Route::Token(..) | Route::Identity(_) => unreachable_reply(rid),
    }
}

fn unreachable_reply(rid: String) -> Reply {
    Reply::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "unexpected route",
        rid,
    )
}

// ---------------------------------------------------------------------------------------
// Tokens

fn aad_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: String,
    shared: &Shared,
) -> Reply {
    let trace = shared.uuid();
    let corr = shared.uuid();
    let ts = format_rfc3339_ms(shared.clock.unix_ms())
        .replace('T', " ")
        .replace(".000Z", "Z");
    Reply::value(
        status,
        &json!({
            "error": error,
            "error_description": format!("{description}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {ts}"),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": corr,
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Hunting

fn bad_request(message: impl Into<String>, rid: String) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "BadRequest", message, rid)
}

/// The request's JSON object; 415 without a JSON content type, 400 (with `code`) for a
/// body that is not a JSON object.
fn json_object(
    headers: &HeaderMap,
    body: &[u8],
    rid: &str,
    code: &str,
) -> Result<Map<String, Value>, Reply> {
    let bad = |m: String| Reply::error(StatusCode::BAD_REQUEST, code, m, rid.to_owned());
    if !is_json(headers) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "The request content type is not supported; send 'application/json'.",
            rid.to_owned(),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("The request body must be a JSON object.".into())),
        Err(e) => Err(bad(format!("The request body is not valid JSON: {e}"))),
    }
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

async fn hunt(
    shared: &Arc<Shared>,
    caller: &Caller,
    shape: HuntShape,
    headers: &HeaderMap,
    body: &[u8],
    rid: String,
) -> Reply {
    let m = match json_object(headers, body, &rid, "BadRequest") {
        Ok(m) => m,
        Err(r) => return r,
    };
    // "The submitted body parameters are currently case-sensitive" (DD defender-endpoint
    // run-advanced-query-api.md): MDE takes `Query` only.
    if shape == HuntShape::Mde && !m.contains_key("Query") {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestBody",
            "Request body is invalid. The body parameters are case-sensitive: send 'Query'.",
            rid,
        );
    }
    let query = match field(&m, "Query") {
        Some(Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(Value::String(_)) => return bad_request("The query is empty.", rid),
        Some(_) => return bad_request("'Query' must be a string.", rid),
        None => return bad_request("The request body must contain 'Query'.", rid),
    };
    let now_ms = shared.clock.unix_ms();
    let lookback = shared
        .cfg
        .limits
        .hunting
        .lookback
        .map(|d| d.as_millis() as i64);
    let mut opts = RunOptions {
        now_unix_ms: now_ms,
        lookback_ms: lookback,
        row_cap: shared
            .cfg
            .limits
            .hunting
            .rows
            .map_or(usize::MAX, |r| usize::try_from(r).unwrap_or(usize::MAX)),
        limits: shared.cfg.query_limits,
    };
    let mut end_ms = None;
    if shape == HuntShape::Graph {
        let span = match field(&m, "Timespan") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match hunting::parse_timespan(s, now_ms) {
                Ok(t) => Some(t),
                Err(e) => return bad_request(e, rid),
            },
            Some(_) => return bad_request("'Timespan' must be a string.", rid),
        };
        // Default 30 days; the lookback limit still bounds it.
        let start = span.map_or(now_ms - 30 * 86_400_000, |t| t.start_ms);
        let window = (now_ms - start).max(0);
        opts.lookback_ms = Some(lookback.map_or(window, |l| l.min(window)));
        end_ms = span.map(|t| t.end_ms).filter(|e| *e < now_ms);
    }
    let data = shared.dataset.clone();
    let q = query.clone();
    let run =
        tokio::task::spawn_blocking(move || defender_emulator_kql::run(&q, &data, &opts)).await;
    let mut out = match run {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            if let defender_emulator_kql::KqlError::LimitExceeded(limit) = &e {
                // The service's message does not say which limit; the log does.
                tracing::info!(limit = limit.as_str(), "a hunting query was preempted");
            }
            return bad_request(e.to_string(), rid);
        }
        Err(_) => {
            return Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The query failed unexpectedly.",
                rid,
            )
        }
    };
    if let Some(end) = end_ms {
        // Rows after the Timespan's end, where the result still has the Timestamp.
        if let Some(ix) = out.schema.iter().position(|c| c.name == "Timestamp") {
            let end_ticks = end.saturating_mul(defender_emulator_kql::TICKS_PER_MS);
            out.rows.retain(|r| match r.get(ix) {
                Some(defender_emulator_kql::Value::DateTime(t)) => *t <= end_ticks,
                _ => true,
            });
        }
    }
    let exec = shared.cfg.cost.cost(out.rows_scanned, out.operators);
    {
        let mut st = lock(&shared.state);
        let now = shared.clock.elapsed();
        let rkey = shared.runtime_key(&caller.key);
        st.runtime
            .entry(rkey)
            .or_default()
            .charge(&shared.cfg.limits.hunting.runtime, now, exec);
    }
    const TOO_LARGE: &str = "Query execution has exceeded the allowed result size. Optimize your query by limiting the number of results and try again";
    let Some(mut body) = hunting::body(shape, &out, exec, shared.cfg.max_result_bytes) else {
        return bad_request(TOO_LARGE, rid);
    };
    if shape == HuntShape::Graph && body.first() == Some(&b'{') {
        // Graph names the type of its answer (GD security-security-runhuntingquery.md,
        // Example 1), first, as OData writes it.
        let context = format!(
            "{{\"@odata.context\":{},",
            Value::String(format!(
                "{}/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
                host_base(shared, headers)
            ))
        );
        body.splice(0..1, context.into_bytes());
        if body.len() > shared.cfg.max_result_bytes {
            return bad_request(TOO_LARGE, rid);
        }
    }
    let reply = Reply::json(StatusCode::OK, body);
    match hunting::warning_header(&out.warnings) {
        Some(w) => reply.header(hunting::WARNING_HEADER, w),
        None => reply,
    }
}

// ---------------------------------------------------------------------------------------
// Incidents and alerts

/// What the server knows of each collection it lists: where it is, which quota and token
/// it takes, which permissions, and how it pages.
struct Served {
    /// The collection's path.
    path: &'static str,
    /// Its `@odata.context` after the base URL (an entity adds `/$entity`).
    metadata: &'static str,
    group: ApiGroup,
    /// The tokens it accepts, by audience.
    audiences: &'static [Audience],
    /// Reading takes one of these.
    read: &'static [&'static str],
    /// Updating (PATCH, comments) takes one of these.
    write: &'static [&'static str],
    /// The largest `$top`; a larger one is refused. `None`: any is taken.
    max_top: Option<usize>,
    /// The default and largest page.
    page: usize,
}

fn served(c: Collection) -> Served {
    match c {
        Collection::XdrIncidents => Served {
            path: "/api/incidents",
            metadata: "/api/$metadata#Incidents",
            group: ApiGroup::Incidents,
            audiences: &[Audience::Xdr],
            read: &["Incident.Read.All", "Incident.ReadWrite.All"],
            write: &["Incident.ReadWrite.All"],
            // At most 100 (DD api-list-incidents.md).
            max_top: Some(MAX_PAGE_SIZE),
            page: MAX_PAGE_SIZE,
        },
        Collection::GraphIncidents => Served {
            path: "/v1.0/security/incidents",
            metadata: "/v1.0/$metadata#security/incidents",
            group: ApiGroup::Incidents,
            audiences: &[Audience::Graph],
            read: &[
                "SecurityIncident.Read.All",
                "SecurityIncident.ReadWrite.All",
            ],
            write: &["SecurityIncident.ReadWrite.All"],
            // At most 50 (API-FACTS section 6).
            max_top: Some(GRAPH_MAX_PAGE_SIZE),
            page: GRAPH_MAX_PAGE_SIZE,
        },
        Collection::MdeAlerts => Served {
            path: "/api/alerts",
            metadata: "/api/$metadata#Alerts",
            group: ApiGroup::Alerts,
            // api.securitycenter.microsoft.com and api.security.microsoft.com both serve
            // /api/alerts, each with its own token.
            audiences: &[Audience::Mde, Audience::Xdr],
            read: &["Alert.Read.All", "Alert.ReadWrite.All"],
            write: &["Alert.ReadWrite.All"],
            max_top: Some(ALERTS_MAX_PAGE_SIZE),
            page: ALERTS_MAX_PAGE_SIZE,
        },
        Collection::GraphAlerts => Served {
            path: "/v1.0/security/alerts_v2",
            metadata: "/v1.0/$metadata#security/alerts_v2",
            group: ApiGroup::Alerts,
            audiences: &[Audience::Graph],
            read: &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"],
            write: &["SecurityAlert.ReadWrite.All"],
            // Graph documents no maximum `$top` here: none is refused, pages are capped.
            max_top: None,
            page: GRAPH_ALERTS_PAGE_SIZE,
        },
    }
}

/// A 400 for a query option of the collection: Defender for Endpoint's `ODataError`
/// ("Invalid OData URI query (the specific error is specified)", DD common-errors.md),
/// `BadRequest` elsewhere.
fn query_error(c: Collection, message: impl Into<String>, rid: String) -> Reply {
    let code = match c {
        Collection::MdeAlerts => "ODataError",
        _ => "BadRequest",
    };
    Reply::error(StatusCode::BAD_REQUEST, code, message, rid)
}

/// The 400 for a `$top` over the collection's maximum `max`; `top` as the request wrote it.
fn top_refused(c: Collection, max: usize, top: &str, rid: String) -> Reply {
    let exceeded = format!(
        "The limit of '{max}' for Top query has been exceeded. The value from the incoming request is '{top}'."
    );
    match c {
        // ODataLib's words with an empty code (API-FACTS section 6).
        Collection::GraphIncidents | Collection::GraphAlerts => Reply::error(
            StatusCode::BAD_REQUEST,
            "",
            format!("The query specified in the URI is not valid. {exceeded}"),
            rid,
        ),
        // Ours: Defender for Endpoint documents the maximum (10,000), not this text.
        Collection::MdeAlerts => {
            query_error(c, format!("Invalid OData URI query: {exceeded}"), rid)
        }
        Collection::XdrIncidents => query_error(c, exceeded, rid),
    }
}

/// The query options of a list request, checked: `$filter`, `$top`, `$skip`, `$expand`.
struct ListQuery {
    filter: Option<Filter>,
    /// The `$filter` and `$expand` as sent, for the next link.
    raw_filter: Option<String>,
    expand: Option<String>,
    skip: usize,
    /// This page's size: `$top`, or the default, at most the collection's page.
    page: usize,
}

impl ListQuery {
    fn parse(shared: &Shared, c: Collection, query: &str, rid: &str) -> Result<ListQuery, Reply> {
        let params = crate::form::parse(query);
        let param = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let raw_filter = param("$filter").filter(|f| !f.trim().is_empty());
        let filter = match &raw_filter {
            Some(f) => Some(
                Filter::parse_within(f, c, shared.cfg.filter_limits)
                    .map_err(|e| query_error(c, e, rid.to_owned()))?,
            ),
            None => None,
        };
        // A count; one too large for this machine is as good as the largest.
        let count = |name: &str| -> Result<Option<(usize, String)>, Reply> {
            let Some(v) = param(name) else {
                return Ok(None);
            };
            let t = v.trim();
            let n = match t.parse::<usize>() {
                Ok(n) => n,
                Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => usize::MAX,
                Err(_) => {
                    return Err(query_error(
                        c,
                        format!("The value '{v}' of {name} is not a non-negative integer."),
                        rid.to_owned(),
                    ))
                }
            };
            Ok(Some((n, t.to_owned())))
        };
        let top = count("$top")?;
        let skip = count("$skip")?.map_or(0, |(n, _)| n);
        let rules = served(c);
        if let (Some(max), Some((t, written))) = (rules.max_top, &top) {
            if *t > max {
                return Err(top_refused(c, max, written, rid.to_owned()));
            }
        }
        Ok(ListQuery {
            filter,
            raw_filter,
            expand: param("$expand"),
            skip,
            page: top.map_or(rules.page, |(t, _)| t.min(rules.page)),
        })
    }

    /// Whether `$expand` names `what`.
    fn expands(&self, what: &str) -> bool {
        self.expand
            .as_ref()
            .is_some_and(|e| e.to_ascii_lowercase().contains(what))
    }

    /// The number of `items` the filter keeps, and this page of them rendered.
    fn page_of<'a, T: 'a>(
        &self,
        items: impl Iterator<Item = &'a T>,
        value: impl Fn(&T, Field) -> FieldValue,
        render: impl Fn(&T) -> Value,
    ) -> (usize, Vec<Value>) {
        let mut total = 0;
        let mut out = Vec::new();
        for item in items {
            if self
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&|field| value(item, field)))
            {
                if total >= self.skip && out.len() < self.page {
                    out.push(render(item));
                }
                total += 1;
            }
        }
        (total, out)
    }

    /// The link to the page after this one, when items remain.
    fn next_link(&self, url: &str, total: usize) -> Option<String> {
        let next = self.skip.saturating_add(self.page);
        if self.page == 0 || next >= total {
            return None;
        }
        let mut q = Vec::new();
        if let Some(f) = &self.raw_filter {
            q.push(format!("$filter={}", crate::form::encode(f)));
        }
        if let Some(e) = &self.expand {
            q.push(format!("$expand={}", crate::form::encode(e)));
        }
        q.push(format!("$top={}", self.page));
        q.push(format!("$skip={next}"));
        Some(format!("{url}?{}", q.join("&")))
    }
}

fn render_incident(i: &Incident, c: Collection, tenant: &str, expand_alerts: bool) -> Value {
    match c.dialect() {
        Dialect::Xdr => i.to_xdr(),
        Dialect::Graph => i.to_graph(tenant, expand_alerts),
    }
}

fn render_alert(a: &Alert, c: Collection, tenant: &str, expand_evidence: bool) -> Value {
    match c.dialect() {
        Dialect::Xdr => a.to_mde(tenant, expand_evidence),
        Dialect::Graph => a.to_graph(tenant),
    }
}

/// What `$expand` adds to an item of the collection.
fn expandable(c: Collection) -> &'static str {
    match c {
        Collection::MdeAlerts => "evidence",
        _ => "alerts",
    }
}

impl MutState {
    fn incident_mut(&mut self, id: &str) -> Option<&mut Incident> {
        let n = id.trim().parse::<i64>().ok()?;
        self.incidents.get_mut(&n)
    }

    /// The alert `id`, in whichever incident holds it.
    fn alert_mut(&mut self, id: &str) -> Option<&mut Alert> {
        self.incidents
            .values_mut()
            .flat_map(|i| i.alerts.iter_mut())
            .find(|a| a.id() == id)
    }
}

/// `GET` a collection: newest-created first (incidents by id, alerts by their incident's
/// id, then in the incident's order), stable under updates; an incident created between
/// two pages (churn) shifts the later pages, as `$skip` paging over the service does;
/// `@odata.nextLink` while items remain.
fn list(
    shared: &Shared,
    caller: &Caller,
    c: Collection,
    headers: &HeaderMap,
    query: &str,
    rid: String,
) -> Reply {
    let q = match ListQuery::parse(shared, c, query, &rid) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let tenant = caller.key.0.as_str();
    let dialect = c.dialect();
    let expand = q.expands(expandable(c));
    let st = shared.incidents_state();
    let incidents = st.incidents.values().rev();
    let (total, value) = match c {
        Collection::XdrIncidents | Collection::GraphIncidents => q.page_of(
            incidents,
            |i, f| i.filter_value(f, dialect),
            |i| render_incident(i, c, tenant, expand),
        ),
        Collection::MdeAlerts | Collection::GraphAlerts => q.page_of(
            incidents.flat_map(|i| &i.alerts),
            |a, f| a.filter_value(f, dialect),
            |a| render_alert(a, c, tenant, expand),
        ),
    };
    drop(st);
    let base = host_base(shared, headers);
    let rules = served(c);
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        Value::String(format!("{base}{}", rules.metadata)),
    );
    out.insert("value".into(), Value::Array(value));
    if let Some(next) = q.next_link(&format!("{base}{}", rules.path), total) {
        out.insert("@odata.nextLink".into(), Value::String(next));
    }
    Reply::value(StatusCode::OK, &Value::Object(out))
}

fn not_found(c: Collection, id: &str, rid: String) -> Reply {
    match c {
        Collection::XdrIncidents | Collection::GraphIncidents => Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Incident {id} was not found."),
            rid,
        ),
        // Ours, of the documented form ("Machine 123123123 was not found", DD
        // defender-endpoint/api/common-errors.md).
        Collection::MdeAlerts => Reply::error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("Alert {id} was not found"),
            rid,
        ),
        Collection::GraphAlerts => Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Alert {id} was not found."),
            rid,
        ),
    }
}

fn get_one(
    shared: &Shared,
    caller: &Caller,
    c: Collection,
    id: &str,
    headers: &HeaderMap,
    query: &str,
    rid: String,
) -> Reply {
    let expand = crate::form::parse(query).iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("$expand") && v.to_ascii_lowercase().contains(expandable(c))
    });
    let tenant = caller.key.0.as_str();
    let mut st = shared.incidents_state();
    let found = match c {
        Collection::XdrIncidents | Collection::GraphIncidents => st
            .incident_mut(id)
            .map(|i| render_incident(i, c, tenant, expand)),
        Collection::MdeAlerts | Collection::GraphAlerts => {
            st.alert_mut(id).map(|a| render_alert(a, c, tenant, expand))
        }
    };
    drop(st);
    let Some(mut v) = found else {
        return not_found(c, id, rid);
    };
    let base = host_base(shared, headers);
    with_context(&mut v, format!("{base}{}/$entity", served(c).metadata));
    Reply::value(StatusCode::OK, &v)
}

/// Puts `@odata.context` first in an entity, as OData writes it.
fn with_context(v: &mut Value, context: String) {
    if let Value::Object(m) = v {
        let mut out = Map::new();
        out.insert("@odata.context".into(), Value::String(context));
        out.extend(std::mem::take(m));
        *m = out;
    }
}

/// `POST /v1.0/security/incidents/{id}/comments` (GD security-incident-post-comments.md)
/// and `POST /v1.0/security/alerts_v2/{id}/comments` (GD security-alert-post-comments.md):
/// appends one comment and answers 200 with the item's whole comment collection.
fn post_comment(
    shared: &Shared,
    caller: &Caller,
    c: Collection,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    rid: String,
) -> Reply {
    let m = match json_object(headers, body, &rid, "BadRequest") {
        Ok(m) => m,
        Err(r) => return r,
    };
    for key in m.keys() {
        // The properties of microsoft.graph.security.alertComment.
        if !matches!(
            key.as_str(),
            "@odata.type" | "comment" | "createdByDisplayName" | "createdDateTime"
        ) {
            return bad_request(
                incidents::unknown_property(key, "microsoft.graph.security.alertComment"),
                rid,
            );
        }
    }
    let comment = match m.get("comment") {
        Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return bad_request("The comment is empty: send {\"comment\": \"...\"}.", rid)
        }
        Some(_) => return bad_request("'comment' must be a string.", rid),
    };
    let now_ms = shared.clock.unix_ms();
    let author = caller.app_author.as_str();
    let mut st = shared.incidents_state();
    let comments = match c {
        Collection::GraphIncidents => st.incident_mut(id).map(|inc| {
            incidents::add_comment(inc, comment, author, now_ms);
            &inc.comments
        }),
        Collection::GraphAlerts => st.alert_mut(id).map(|a| {
            a.add_comment(comment, author, now_ms);
            &a.comments
        }),
        // No route posts comments to Defender's collections.
        Collection::XdrIncidents | Collection::MdeAlerts => return unreachable_reply(rid),
    };
    let Some(comments) = comments else {
        return not_found(c, id, rid);
    };
    let value: Vec<Value> = comments.iter().map(|c| c.to_graph(true)).collect();
    drop(st);
    let base = host_base(shared, headers);
    let context = match c {
        // As the alert page's example names it.
        Collection::GraphAlerts => format!(
            "{base}/v1.0/$metadata#security/alerts_v2('{}')/comments",
            crate::form::encode(id)
        ),
        _ => format!("{base}/v1.0/$metadata#Collection(microsoft.graph.security.alertComment)"),
    };
    Reply::value(
        StatusCode::OK,
        &json!({"@odata.context": context, "value": value}),
    )
}

/// `PATCH` one incident or alert; 200 with the updated item. Defender for Endpoint refuses
/// a bad body with `InvalidRequestBody` (DD common-errors.md), the others with
/// `BadRequest`.
fn patch(
    shared: &Shared,
    caller: &Caller,
    c: Collection,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    rid: String,
) -> Reply {
    let code = match c {
        Collection::MdeAlerts => "InvalidRequestBody",
        _ => "BadRequest",
    };
    let m = match json_object(headers, body, &rid, code) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let dialect = c.dialect();
    let now_ms = shared.clock.unix_ms();
    let author = caller.app_author.as_str();
    let tenant = caller.key.0.as_str();
    let mut st = shared.incidents_state();
    let result = match c {
        Collection::XdrIncidents | Collection::GraphIncidents => st.incident_mut(id).map(|inc| {
            incidents::apply_patch(inc, &m, dialect, author, now_ms)
                .map(|()| render_incident(inc, c, tenant, false))
        }),
        Collection::MdeAlerts | Collection::GraphAlerts => st.alert_mut(id).map(|a| {
            a.apply_patch(&m, dialect, author, now_ms)
                .map(|()| render_alert(a, c, tenant, false))
        }),
    };
    drop(st);
    match result {
        None => not_found(c, id, rid),
        Some(Ok(v)) => Reply::value(StatusCode::OK, &v),
        // Defender for Endpoint's documented text, then what is wrong (ours).
        Some(Err(e)) if c == Collection::MdeAlerts => Reply::error(
            StatusCode::BAD_REQUEST,
            code,
            format!("Request body is incorrect: {e}"),
            rid,
        ),
        Some(Err(e)) => bad_request(e, rid),
    }
}

// ---------------------------------------------------------------------------------------
// Control

/// Whether control requests that change state are served at all: always on a loopback
/// address, elsewhere only when the operator asked for it (`--allow-remote-control`).
pub(crate) fn remote_control_allowed(bound: SocketAddr, allow_remote: bool) -> bool {
    bound.ip().is_loopback() || allow_remote
}

/// The gate of the control requests that change state (`POST /_emulator/reset`,
/// `POST /_emulator/clock/advance`): the listening address must allow them, the request
/// must carry [`CONTROL_HEADER`](crate::CONTROL_HEADER)`: 1` (which a cross-site form or
/// a simple cross-origin request cannot set) and a bearer token the emulator issued.
fn check_control(shared: &Shared, headers: &HeaderMap, rid: &str) -> Result<(), Reply> {
    if !remote_control_allowed(shared.addr, shared.cfg.allow_remote_control) {
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The control endpoints are disabled because the emulator listens on {}, which is not a loopback address; start it with --allow-remote-control (EmulatorBuilder::allow_remote_control) to enable them.",
                shared.addr.ip()
            ),
            rid.to_owned(),
        ));
    }
    let marked = headers
        .get(crate::CONTROL_HEADER)
        .is_some_and(|v| v.as_bytes() == crate::CONTROL_HEADER_VALUE.as_bytes());
    if !marked {
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "A control request must carry the header '{}: {}' and a bearer token from the emulator's token endpoint.",
                crate::CONTROL_HEADER,
                crate::CONTROL_HEADER_VALUE
            ),
            rid.to_owned(),
        ));
    }
    authenticate(shared, headers, &[], &[], rid).map(|_| ())
}

/// The dashboard: one page of our own with its script, style and charts inline, so it
/// works offline; it reads `/_emulator/stats` every second.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// `GET /`, `GET /_emulator/` and `GET /_emulator/dashboard`. The page may load nothing
/// from elsewhere (its policy says so to the browser), and may only call the emulator.
fn dashboard() -> Reply {
    Reply {
        status: StatusCode::OK,
        headers: vec![
            ("content-type", "text/html; charset=utf-8".into()),
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 img-src data:; connect-src 'self'"
                    .into(),
            ),
            ("x-content-type-options", "nosniff".into()),
            ("cache-control", "no-store".into()),
        ],
        body: DASHBOARD_HTML.as_bytes().to_vec(),
        json: false,
    }
}

async fn control(shared: &Shared, req: Request) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let rid = shared.request_id();
    let changes_state = matches!(
        (path.as_str(), &method),
        (
            "/_emulator/reset" | "/_emulator/clock/advance",
            &Method::POST
        )
    );
    if changes_state {
        if let Err(r) = check_control(shared, req.headers(), &rid) {
            return r;
        }
    }
    match (path.as_str(), &method) {
        ("/_emulator" | "/_emulator/dashboard", &Method::GET) => dashboard(),
        ("/_emulator/stats", &Method::GET) => Reply::value(
            StatusCode::OK,
            &serde_json::to_value(shared.stats()).unwrap_or_default(),
        ),
        ("/_emulator/reset", &Method::POST) => {
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let from_query = crate::form::parse(&query)
                .iter()
                .any(|(k, v)| k == "incidents" && matches!(v.as_str(), "true" | "1" | ""));
            let from_body = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("incidents").and_then(Value::as_bool))
                .unwrap_or(false);
            let incidents = from_query || from_body;
            shared.reset(incidents);
            Reply::value(
                StatusCode::OK,
                &json!({"reset": true, "incidents": incidents}),
            )
        }
        ("/_emulator/clock", &Method::GET) => Reply::value(
            StatusCode::OK,
            &json!({
                "manual": shared.clock.is_manual(),
                "elapsed_seconds": shared.clock.elapsed().as_secs_f64(),
                "unix_ms": shared.clock.unix_ms(),
                "now": format_rfc3339_ms(shared.clock.unix_ms()),
            }),
        ),
        ("/_emulator/clock/advance", &Method::POST) => {
            if !shared.clock.is_manual() {
                return Reply::error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "The emulator runs on the real clock; start it with a manual clock to advance time.",
                    rid,
                );
            }
            let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let secs = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("seconds").and_then(Value::as_f64))
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e10);
            match secs {
                Some(s) => {
                    shared.clock.advance(Duration::from_secs_f64(s));
                    Reply::value(
                        StatusCode::OK,
                        &json!({"elapsed_seconds": shared.clock.elapsed().as_secs_f64(), "unix_ms": shared.clock.unix_ms()}),
                    )
                }
                None => bad_request("Send {\"seconds\": N} with N >= 0.", rid),
            }
        }
        (
            "/_emulator"
            | "/_emulator/dashboard"
            | "/_emulator/stats"
            | "/_emulator/reset"
            | "/_emulator/clock"
            | "/_emulator/clock/advance",
            _,
        ) => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The requested resource does not support http method '{method}'."),
            rid,
        ),
        _ => Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No resource was found at '{path}'."),
            rid,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(8)), 8);
    }

    #[test]
    fn remote_control_is_refused_off_loopback_unless_allowed() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        for loopback in ["127.0.0.1:8400", "127.0.0.2:0", "[::1]:8400"] {
            assert!(remote_control_allowed(at(loopback), false), "{loopback}");
            assert!(remote_control_allowed(at(loopback), true), "{loopback}");
        }
        for remote in [
            "0.0.0.0:8400",
            "[::]:8400",
            "192.168.1.10:8400",
            "10.0.0.1:1",
        ] {
            assert!(!remote_control_allowed(at(remote), false), "{remote}");
            assert!(remote_control_allowed(at(remote), true), "{remote}");
        }
    }
}
