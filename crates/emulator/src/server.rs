//! The HTTP server: routing, authentication, quotas, handlers and faults.
//!
//! Routing is done by hand in one fallback handler so every error (404, 405, 413, 415,
//! 400) gets the `{"error":{...}}` envelope instead of a framework's plain-text rejection.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

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

use crate::faults::{Fault, FaultKind};
use crate::hunting::{self, HuntShape};
use crate::incidents::{self, Dialect, Filter, Incident};
use crate::quota::{CallWindows, RuntimeScope, RuntimeWindows, WindowMode};
use crate::rng::mix;
use crate::time::{ceil_secs, format_http_date, format_rfc3339, format_timespan};
use crate::{App, Clock, Config, EmulatorError, GRAPH_MAX_PAGE_SIZE, MAX_PAGE_SIZE};

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
}

#[derive(Debug, Default)]
struct MutState {
    tokens: HashMap<String, TokenInfo>,
    calls: HashMap<(Key, ApiGroup), CallWindows>,
    /// Keyed by [`Shared::runtime_key`]: (tenant, "") per tenant, or (tenant, app).
    runtime: HashMap<Key, RuntimeWindows>,
    counters: BTreeMap<(Key, ApiGroup), Counters>,
    totals: Counters,
    faults_by_kind: BTreeMap<String, u64>,
    incidents: BTreeMap<i64, Incident>,
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
}

/// The counters of one (tenant, app, API group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyStats {
    /// The tenant id.
    pub tenant: String,
    /// The client id.
    pub client_id: String,
    /// `hunting` or `incidents`.
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
    pub(crate) fn new(cfg: Config, addr: SocketAddr) -> Result<Arc<Shared>, EmulatorError> {
        let clock = cfg.clock.clone().unwrap_or_else(Clock::real);
        let mut apps = Vec::new();
        if cfg.builtin_app {
            apps.push(App::builtin());
        }
        apps.extend(cfg.apps.iter().cloned());
        if apps.is_empty() {
            return Err(EmulatorError::Config("no app is registered".into()));
        }
        let anchor = clock.start_unix_ms();
        let dataset = Dataset::generate(&DatasetConfig {
            seed: cfg.seed,
            rows_per_table: cfg.rows_per_table,
            anchor_unix_ms: anchor,
            span_days: cfg.span_days,
            table_rows: cfg.table_rows.clone(),
        });
        let generated = incidents::generate(cfg.seed, cfg.incidents, anchor);
        let state = MutState {
            incidents: generated.iter().map(|i| (i.id, i.clone())).collect(),
            ..MutState::default()
        };
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(Arc::new(Shared {
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
        if incidents {
            st.incidents = self.generated.iter().map(|i| (i.id, i.clone())).collect();
        }
        self.fault_seq.store(0, Ordering::SeqCst);
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = lock(&self.state);
        let now = self.clock.elapsed();
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
            });
        }
        Stats {
            requests: st.totals.requests,
            throttled: st.totals.throttled,
            faults: st.totals.faults,
            faults_by_kind: st.faults_by_kind.clone(),
            tokens_issued: st.totals.tokens_issued,
            keys,
        }
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
    Token(String),
    Hunt(HuntShape),
    XdrList,
    XdrOne(String),
    GraphList,
    GraphOne(String),
    GraphComments(String),
}

impl Route {
    fn group(&self) -> Option<ApiGroup> {
        match self {
            Route::Token(_) => None,
            Route::Hunt(_) => Some(ApiGroup::Hunting),
            _ => Some(ApiGroup::Incidents),
        }
    }

    fn is_graph(&self) -> bool {
        matches!(
            self,
            Route::Hunt(HuntShape::Graph)
                | Route::GraphList
                | Route::GraphOne(_)
                | Route::GraphComments(_)
        )
    }

    /// The token audience the route's service accepts.
    fn audience(&self) -> Option<Audience> {
        match self {
            Route::Token(_) => None,
            Route::Hunt(HuntShape::Mde) => Some(Audience::Mde),
            Route::Hunt(HuntShape::Xdr) | Route::XdrList | Route::XdrOne(_) => Some(Audience::Xdr),
            Route::Hunt(HuntShape::Graph)
            | Route::GraphList
            | Route::GraphOne(_)
            | Route::GraphComments(_) => Some(Audience::Graph),
        }
    }

    fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Token(_) | Route::Hunt(_) | Route::GraphComments(_) => &[Method::POST],
            Route::XdrList | Route::GraphList => &[Method::GET],
            Route::XdrOne(_) | Route::GraphOne(_) => &[Method::GET, Method::PATCH],
        }
    }
}

fn route(path: &str) -> Option<Route> {
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        [_, "oauth2", "v2.0", "token"] => Some(Route::Token(segs[0].to_owned())),
        ["api", "advancedhunting", "run"] => Some(Route::Hunt(HuntShape::Xdr)),
        ["api", "advancedqueries", "run"] => Some(Route::Hunt(HuntShape::Mde)),
        ["v1.0", "security", "runhuntingquery"] => Some(Route::Hunt(HuntShape::Graph)),
        ["api", "incidents"] => Some(Route::XdrList),
        ["api", "incidents", _] => Some(Route::XdrOne(segs[2].to_owned())),
        ["v1.0", "security", "incidents"] => Some(Route::GraphList),
        ["v1.0", "security", "incidents", _] => Some(Route::GraphOne(segs[3].to_owned())),
        ["v1.0", "security", "incidents", _, "comments"] => {
            Some(Route::GraphComments(segs[3].to_owned()))
        }
        _ => None,
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/_emulator" || path.starts_with("/_emulator/") {
        return control(&shared, req).await.into_response();
    }
    let rid = shared.request_id();
    {
        let mut st = lock(&shared.state);
        st.totals.requests += 1;
    }
    // Graph answers every request with its ids, and its errors in its own envelope.
    let graph = path
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("/v1.0/"))
        .then(|| GraphIds::new(&shared, req.headers()));
    let finish = |reply: Reply| match &graph {
        Some(ids) => ids.apply(&shared, reply),
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
    let eligible = !matches!(route, Route::Token(_)) || shared.cfg.faults.include_token;
    let fault = if eligible && !shared.cfg.faults.is_empty() {
        let n = shared.fault_seq.fetch_add(1, Ordering::SeqCst);
        shared.cfg.faults.decide(shared.fault_seed, n)
    } else {
        None
    };
    if let Some(f) = fault {
        tracing::debug!(path = %path, fault = %f.kind.name(), "injecting a fault");
        record_fault(&shared, &route, req.headers(), f);
        match f.kind {
            FaultKind::Status(code) => {
                return finish(status_fault(&shared, code, rid)).into_response()
            }
            FaultKind::Reset => return broken_response(StatusCode::OK, None, 1024),
            FaultKind::Odd429 => return odd_429(&shared, &route, req.headers(), f.variant),
            FaultKind::Slow(d) => tokio::time::sleep(d).await,
            FaultKind::Truncate | FaultKind::Malformed => {}
        }
    }

    let method = req.method().clone();
    let reply = finish(dispatch(&shared, route, req, rid).await);
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
                        "date": format_rfc3339(shared.clock.unix_ms()).replace(".000Z", "Z"),
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
            .header("retry-after", format_http_date(shared.clock.unix_ms() + 3000)),
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
            format!("http://{h}")
        }
        _ => format!("http://{}", shared.addr),
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

/// Authenticates the bearer, checks its audience (when `audience` is given: the route's
/// service refuses a token issued for another API) and the permission (any of `any_of`;
/// none when it is empty); 401/403 otherwise.
fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    audience: Option<Audience>,
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
    if let Some(want) = audience.filter(|a| *a != info.audience) {
        return Err(match want {
            // Graph's text for a token of another resource.
            Audience::Graph => {
                unauthorized("Access token validation failure. Invalid audience.")
            }
            _ => unauthorized(&format!(
                "The access token's audience is not valid for this API: it was issued for '{}'; request a token for '{}'.",
                info.audience.scope(),
                want.scope()
            )),
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
            Ok(())
        }
        Some((wait, message)) => {
            Shared::counters(&mut st, &caller.key, group).throttled += 1;
            st.totals.throttled += 1;
            drop(st);
            let secs = ceil_secs(wait);
            let reply = if graph {
                Reply::value(
                    StatusCode::TOO_MANY_REQUESTS,
                    &json!({"error": {
                        "code": "TooManyRequests",
                        "message": if message.starts_with("API calls") { "Please retry again later.".to_owned() } else { message },
                        "innerError": {
                            "date": format_rfc3339(shared.clock.unix_ms()).replace(".000Z", "Z"),
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

async fn dispatch(shared: &Arc<Shared>, route: Route, req: Request, rid: String) -> Reply {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    if let Route::Token(tenant) = &route {
        let bytes = match read_body(shared, body, &rid).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        return token(shared, tenant, &bytes);
    }
    let graph = route.is_graph();
    let perms: &[&str] = match (&route, &method) {
        (Route::Hunt(HuntShape::Xdr), _) => &["AdvancedHunting.Read.All"],
        (Route::Hunt(HuntShape::Mde), _) => &["AdvancedQuery.Read.All"],
        (Route::Hunt(HuntShape::Graph), _) => &["ThreatHunting.Read.All"],
        (Route::XdrOne(_), &Method::PATCH) => &["Incident.ReadWrite.All"],
        (Route::XdrList | Route::XdrOne(_), _) => &["Incident.Read.All", "Incident.ReadWrite.All"],
        (Route::GraphOne(_), &Method::PATCH) | (Route::GraphComments(_), _) => {
            &["SecurityIncident.ReadWrite.All"]
        }
        _ => &[
            "SecurityIncident.Read.All",
            "SecurityIncident.ReadWrite.All",
        ],
    };
    let caller = match authenticate(shared, &parts.headers, route.audience(), perms, &rid) {
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
    match route {
        Route::Hunt(shape) => hunt(shared, &caller, shape, &parts.headers, &bytes, rid).await,
        Route::XdrList => {
            list_incidents(shared, &caller, Dialect::Xdr, &parts.headers, &query, rid)
        }
        Route::GraphList => {
            list_incidents(shared, &caller, Dialect::Graph, &parts.headers, &query, rid)
        }
        Route::XdrOne(id) | Route::GraphOne(id) => {
            let dialect = if graph { Dialect::Graph } else { Dialect::Xdr };
            if method == Method::PATCH {
                patch_incident(shared, &caller, dialect, &id, &parts.headers, &bytes, rid)
            } else {
                get_incident(shared, &caller, dialect, &id, &parts.headers, &query, rid)
            }
        }
        Route::GraphComments(id) => post_comment(shared, &caller, &id, &parts.headers, &bytes, rid),
        Route::Token(_) => unreachable_reply(rid),
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
    let ts = format_rfc3339(shared.clock.unix_ms())
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

fn token(shared: &Shared, tenant: &str, body: &[u8]) -> Reply {
    let form: HashMap<String, String> = crate::form::parse(&String::from_utf8_lossy(body))
        .into_iter()
        .collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if !shared
        .apps
        .iter()
        .any(|a| a.tenant.eq_ignore_ascii_case(tenant))
    {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            shared,
        );
    }
    match get("grant_type") {
        "client_credentials" => {}
        "" => return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'."
                .into(),
            shared,
        ),
        g => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("AADSTS70003: The app requested an unsupported grant type '{g}'."),
                shared,
            )
        }
    }
    let client_id = get("client_id");
    if client_id.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "AADSTS900144: The request body must contain the following parameter: 'client_id'."
                .into(),
            shared,
        );
    }
    let scope = get("scope");
    if scope.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "AADSTS90014: The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.".into(),
            shared,
        );
    }
    if !scope.split_whitespace().all(|s| s.ends_with("/.default")) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
            shared,
        );
    }
    let Some(app) = shared
        .apps
        .iter()
        .find(|a| a.tenant.eq_ignore_ascii_case(tenant) && a.client_id == client_id)
    else {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700016,
            format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."),
            shared,
        );
    };
    if get("client_secret") != app.secret {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
            shared,
        );
    }
    // The token's audience is the scope's resource; a client-credentials token is for
    // one resource only.
    let audiences: Vec<Option<Audience>> =
        scope.split_whitespace().map(Audience::of_scope).collect();
    let audience = match audiences.as_slice() {
        [Some(a), rest @ ..] if rest.iter().all(|r| *r == Some(*a)) => *a,
        [Some(_), ..] => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                28000,
                "AADSTS28000: Provided value for the input parameter scope is not valid because it contains more than one resource. Scope ".to_owned() + scope + " is not valid.",
                shared,
            )
        }
        _ => {
            let resource = scope
                .split_whitespace()
                .find(|s| Audience::of_scope(s).is_none())
                .unwrap_or(scope)
                .trim_end_matches("/.default");
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_resource",
                500011,
                format!("AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
                shared,
            );
        }
    };
    let token = format!(
        "emu.{:016x}{:016x}{:016x}",
        shared.next_random(),
        shared.next_random(),
        shared.next_random()
    );
    let lifetime = shared.cfg.token_lifetime;
    {
        let mut st = lock(&shared.state);
        let now = shared.clock.elapsed();
        // Forget expired tokens so the map does not grow without bound.
        st.tokens.retain(|_, t| t.expires_at > now);
        st.totals.tokens_issued += 1;
        st.tokens.insert(
            token.clone(),
            TokenInfo {
                tenant: app.tenant.clone(),
                client_id: app.client_id.clone(),
                expires_at: now + lifetime,
                audience,
            },
        );
    }
    Reply::value(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(),
            "access_token": token,
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Hunting

fn bad_request(message: impl Into<String>, rid: String) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "BadRequest", message, rid)
}

fn json_object(headers: &HeaderMap, body: &[u8], rid: &str) -> Result<Map<String, Value>, Reply> {
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
        Ok(_) => Err(bad_request(
            "The request body must be a JSON object.",
            rid.to_owned(),
        )),
        Err(e) => Err(bad_request(
            format!("The request body is not valid JSON: {e}"),
            rid.to_owned(),
        )),
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
    let m = match json_object(headers, body, &rid) {
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
    Reply::json(StatusCode::OK, body)
}

// ---------------------------------------------------------------------------------------
// Incidents

fn list_incidents(
    shared: &Shared,
    caller: &Caller,
    dialect: Dialect,
    headers: &HeaderMap,
    query: &str,
    rid: String,
) -> Reply {
    let params = crate::form::parse(query);
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let filter = match param("$filter") {
        Some(f) if !f.trim().is_empty() => {
            match Filter::parse_within(&f, dialect, shared.cfg.filter_limits) {
                Ok(f) => Some(f),
                Err(e) => return bad_request(e, rid),
            }
        }
        _ => None,
    };
    let parse_n = |name: &str| -> Result<Option<usize>, Reply> {
        match param(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                bad_request(
                    format!("The value '{v}' of {name} is not a non-negative integer."),
                    rid.clone(),
                )
            }),
        }
    };
    let top = match parse_n("$top") {
        Ok(t) => t,
        Err(r) => return r,
    };
    let skip = match parse_n("$skip") {
        Ok(s) => s.unwrap_or(0),
        Err(r) => return r,
    };
    // Defender XDR: at most 100 (DD api-list-incidents.md); Graph: at most 50, refused in
    // ODataLib's words with an empty code (API-FACTS section 6).
    let max_page = match dialect {
        Dialect::Xdr => MAX_PAGE_SIZE,
        Dialect::Graph => GRAPH_MAX_PAGE_SIZE,
    };
    if let Some(t) = top.filter(|t| *t > max_page) {
        return match dialect {
            Dialect::Xdr => bad_request(
                format!(
                    "The limit of '{max_page}' for Top query has been exceeded. The value from the incoming request is '{t}'."
                ),
                rid,
            ),
            Dialect::Graph => Reply::error(
                StatusCode::BAD_REQUEST,
                "",
                format!(
                    "The query specified in the URI is not valid. The limit of '{max_page}' for Top query has been exceeded. The value from the incoming request is '{t}'."
                ),
                rid,
            ),
        };
    }
    let page = top.unwrap_or(max_page);
    let expand_alerts = param("$expand").is_some_and(|e| e.to_ascii_lowercase().contains("alerts"));
    let st = lock(&shared.state);
    // Newest first, by id: stable under updates, so paging neither repeats nor skips.
    let matching: Vec<&Incident> = st
        .incidents
        .values()
        .rev()
        .filter(|i| filter.as_ref().is_none_or(|f| f.matches(i)))
        .collect();
    let total = matching.len();
    let base = host_base(shared, headers);
    let value: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(page)
        .map(|i| match dialect {
            Dialect::Xdr => i.to_xdr(),
            Dialect::Graph => i.to_graph(&caller.key.0, expand_alerts),
        })
        .collect();
    let (path, context) = match dialect {
        Dialect::Xdr => ("/api/incidents", format!("{base}/api/$metadata#Incidents")),
        Dialect::Graph => (
            "/v1.0/security/incidents",
            format!("{base}/v1.0/$metadata#security/incidents"),
        ),
    };
    let mut out = Map::new();
    out.insert("@odata.context".into(), Value::String(context));
    out.insert("value".into(), Value::Array(value));
    let next = skip.saturating_add(page);
    if page > 0 && next < total {
        let mut q = Vec::new();
        if let Some(f) = param("$filter").filter(|f| !f.trim().is_empty()) {
            q.push(format!("$filter={}", crate::form::encode(&f)));
        }
        if let Some(e) = param("$expand") {
            q.push(format!("$expand={}", crate::form::encode(&e)));
        }
        q.push(format!("$top={page}"));
        q.push(format!("$skip={next}"));
        out.insert(
            "@odata.nextLink".into(),
            Value::String(format!("{base}{path}?{}", q.join("&"))),
        );
    }
    Reply::value(StatusCode::OK, &Value::Object(out))
}

fn not_found_incident(id: &str, rid: String) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Incident {id} was not found."),
        rid,
    )
}

fn render(caller: &Caller, i: &Incident, dialect: Dialect, expand: bool) -> Value {
    match dialect {
        Dialect::Xdr => i.to_xdr(),
        Dialect::Graph => i.to_graph(&caller.key.0, expand),
    }
}

fn get_incident(
    shared: &Shared,
    caller: &Caller,
    dialect: Dialect,
    id: &str,
    headers: &HeaderMap,
    query: &str,
    rid: String,
) -> Reply {
    let expand = crate::form::parse(query).iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("$expand") && v.to_ascii_lowercase().contains("alerts")
    });
    let Ok(n) = id.trim().parse::<i64>() else {
        return not_found_incident(id, rid);
    };
    let st = lock(&shared.state);
    match st.incidents.get(&n) {
        Some(i) => {
            let mut v = render(caller, i, dialect, expand);
            let base = host_base(shared, headers);
            with_context(
                &mut v,
                match dialect {
                    Dialect::Graph => format!("{base}/v1.0/$metadata#security/incidents/$entity"),
                    Dialect::Xdr => format!("{base}/api/$metadata#Incidents/$entity"),
                },
            );
            Reply::value(StatusCode::OK, &v)
        }
        None => not_found_incident(id, rid),
    }
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

/// `POST /v1.0/security/incidents/{id}/comments` (GD security-incident-post-comments.md):
/// appends one comment and answers 200 with the incident's whole comment collection.
fn post_comment(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    rid: String,
) -> Reply {
    let m = match json_object(headers, body, &rid) {
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
                format!("The property '{key}' does not exist on type 'microsoft.graph.security.alertComment'. Make sure to only use property names that are defined by the type or mark the type as open type."),
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
    let Ok(n) = id.trim().parse::<i64>() else {
        return not_found_incident(id, rid);
    };
    let now_ms = shared.clock.unix_ms();
    let mut st = lock(&shared.state);
    let Some(inc) = st.incidents.get_mut(&n) else {
        return not_found_incident(id, rid);
    };
    incidents::add_comment(inc, comment, &caller.app_author, now_ms);
    let value = inc.graph_comments();
    Reply::value(
        StatusCode::OK,
        &json!({
            "@odata.context": format!(
                "{}/v1.0/$metadata#Collection(microsoft.graph.security.alertComment)",
                host_base(shared, headers)
            ),
            "value": value,
        }),
    )
}

fn patch_incident(
    shared: &Shared,
    caller: &Caller,
    dialect: Dialect,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    rid: String,
) -> Reply {
    let m = match json_object(headers, body, &rid) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Ok(n) = id.trim().parse::<i64>() else {
        return not_found_incident(id, rid);
    };
    let now_ms = shared.clock.unix_ms();
    let mut st = lock(&shared.state);
    let Some(inc) = st.incidents.get_mut(&n) else {
        return not_found_incident(id, rid);
    };
    match incidents::apply_patch(inc, &m, dialect, &caller.app_author, now_ms) {
        Ok(()) => {
            let v = render(caller, inc, dialect, false);
            Reply::value(StatusCode::OK, &v)
        }
        Err(e) => bad_request(e, rid),
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
    authenticate(shared, headers, None, &[], rid).map(|_| ())
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
                "now": format_rfc3339(shared.clock.unix_ms()),
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
            "/_emulator/stats"
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
