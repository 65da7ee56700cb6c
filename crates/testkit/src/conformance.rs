//! The conformance scenarios, written once and run by both transports against the
//! emulator started in-process.
//!
//! A transport joins by implementing [`Driver`] (build a client, make one call, read the
//! quota); `tests/conformance.rs` instantiates every scenario for the async and the
//! blocking client. Each scenario starts its own emulator on `127.0.0.1:0`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use defender_core::alerts::{self, AlertFilter, AlertId, AlertQuery, AlertStatus, AlertUpdate};
use defender_core::change::Change;
use defender_core::engine::{Call, GroupUsage, StreamItem, Value};
use defender_core::hunt_state::HuntState;
use defender_core::hunting::{HuntRequest, HuntSummary};
use defender_core::incidents::{IncidentId, IncidentQuery, IncidentStatus, IncidentUpdate};
use defender_core::range::{Lookback, RangeError, RangeOptions, RangeProgress, Split, WindowRows};
use defender_core::sync::{SyncBatch, SyncOptions, SyncState};
use defender_core::timefmt::format_rfc3339;
use defender_core::{Error, Limits, Surface};
use defender_emulator::{
    Clock, Emulator, EmulatorHandle, FaultSpec, Stats, WindowMode, DEFAULT_CLIENT_ID,
    DEFAULT_SECRET, DEFAULT_TENANT,
};
use defender_policy::StandardPolicy;

mod identity;
mod range_drop;
mod shared;
mod streams;

pub use identity::*;
pub use range_drop::*;
pub use shared::*;
pub use streams::*;

/// What a scenario needs to build a client.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// The surface.
    pub surface: Surface,
    /// The emulator's base URL (API and login).
    pub base_url: String,
    /// The limits the client enforces.
    pub limits: Limits,
    /// The policy.
    pub policy: StandardPolicy,
    /// The client secret (used when `tokens` is [`Tokens::Secret`]).
    pub secret: String,
    /// The response body limit, when not the default.
    pub max_body_bytes: Option<usize>,
    /// How the client gets its tokens.
    pub tokens: Tokens,
    /// Where the client's quota is kept.
    pub store: Store,
    /// The store and token timeouts, when not the defaults.
    pub timeout: Option<Duration>,
    /// Names no tenant and no app (for a client whose tokens come from a provider).
    pub anonymous: bool,
}

impl ClientSpec {
    /// This spec with a store or a token provider that misbehaves as `broken` says, and
    /// `timeout` as the store and token timeout.
    pub fn broken(mut self, broken: Broken, timeout: Duration) -> ClientSpec {
        if broken.is_store() {
            self.store = Store::Broken(broken);
        } else {
            self.tokens = Tokens::Broken(broken);
        }
        self.timeout = Some(timeout);
        self
    }
}

/// How a client gets its tokens.
#[derive(Debug, Clone)]
pub enum Tokens {
    /// From the login endpoint, with the spec's client secret.
    Secret,
    /// From a provider that always gives this token.
    Fixed(String),
    /// From a provider that fetches them from the emulator's token endpoint.
    Provider(Arc<EmulatorTokens>),
    /// From a provider that misbehaves.
    Broken(Broken),
    /// From a token source (a certificate, workload or managed identity, the Azure CLI,
    /// the `auto` chain), trusting `ca` (a PEM) beside the usual roots when given.
    Source {
        /// The source.
        source: defender_core::credential::TokenSource,
        /// An extra root certificate.
        ca: Option<String>,
    },
}

/// Where a client keeps its quota.
#[derive(Debug, Clone)]
pub enum Store {
    /// In the client.
    Local,
    /// In a store shared by clients, answered in the caller's thread.
    Shared(Arc<dyn SyncStore>),
    /// On Redis.
    Redis(Box<defender_redis::StoreConfig>),
    /// In a store that misbehaves.
    Broken(Broken),
}

/// A quota store that answers at once, for either client (the async client is handed it
/// behind an adapter that answers inline).
pub trait SyncStore: std::fmt::Debug + Send + Sync {
    /// Performs `op`, as `QuotaStore::perform` does.
    fn perform(
        &self,
        op: defender_core::engine::QuotaOp,
    ) -> Option<(
        defender_core::engine::AdmitId,
        defender_core::engine::Admission,
    )>;
}

#[derive(Debug)]
struct StoreAdapter(Arc<dyn SyncStore>);

#[defender_async::async_trait]
impl defender_async::QuotaStore for StoreAdapter {
    async fn perform(
        &self,
        op: defender_core::engine::QuotaOp,
    ) -> Option<(
        defender_core::engine::AdmitId,
        defender_core::engine::Admission,
    )> {
        self.0.perform(op)
    }
}

impl defender_blocking::QuotaStore for StoreAdapter {
    fn perform(
        &self,
        op: defender_core::engine::QuotaOp,
    ) -> Option<(
        defender_core::engine::AdmitId,
        defender_core::engine::Admission,
    )> {
        self.0.perform(op)
    }
}

/// A streamed hunt taken an item at a time; dropped before its end, it cancels its call.
pub trait ItemStream: Iterator<Item = Result<StreamItem, Error>> + Send {
    /// The summary, once the stream ended after success.
    fn summary(&self) -> Option<HuntSummary>;
}

/// A ranged hunt taken a window at a time; dropped, it stops its windows.
pub trait WindowStream: Iterator<Item = Result<WindowRows, Error>> + Send {
    /// Windows, rows, splits and running time so far.
    fn progress(&self) -> RangeProgress;
    /// The start was clamped into the data window.
    fn clamped(&self) -> bool;
}

/// A transport under test.
pub trait Driver: Clone + Send + Sync + 'static {
    /// Its name, for messages.
    const NAME: &'static str;
    /// Its streamed hunt.
    type Stream: ItemStream;
    /// Its ranged hunt.
    type Range: WindowStream;
    /// Builds a client (inside or beside `rt`, as the transport needs), or says why not.
    fn build(
        spec: &ClientSpec,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Self, defender_core::settings::BuildError>;
    /// Makes one call, blocking until it ends.
    fn call(&self, call: Call) -> Result<Value, Error>;
    /// The client's quota usage.
    fn quota(&self) -> Result<Vec<GroupUsage>, Error>;
    /// The source that gave the latest token, with a token source.
    fn token_source(&self) -> Option<&'static str>;
    /// An incident sync run from `state` through the client's `incidents().sync`, to its
    /// end: every batch, or the error that ended it.
    fn sync(&self, state: &SyncState, options: SyncOptions) -> Result<Vec<SyncBatch>, Error>;
    /// A scheduled hunt's run from `state` through the client's `hunt_since`, to its end:
    /// every window (none when no time passed), or the error that ended it.
    fn hunt_since(&self, state: &HuntState, options: SyncOptions)
        -> Result<Vec<WindowRows>, Error>;
    /// Starts a streamed hunt (nothing is sent before its first item is asked for).
    fn open_stream(&self, query: &str) -> Self::Stream;
    /// Starts a ranged hunt.
    fn open_range(
        &self,
        query: &str,
        from: SystemTime,
        to: SystemTime,
        opts: RangeOptions,
    ) -> Result<Self::Range, RangeError>;

    /// Builds a client.
    fn connect(spec: &ClientSpec, rt: &tokio::runtime::Runtime) -> Self {
        Self::build(spec, rt).unwrap_or_else(|e| panic!("the {} client builds: {e}", Self::NAME))
    }

    /// A client whose token provider always gives `token`.
    fn connect_with_token(spec: &ClientSpec, rt: &tokio::runtime::Runtime, token: String) -> Self {
        let mut spec = spec.clone();
        spec.tokens = Tokens::Fixed(token);
        Self::connect(&spec, rt)
    }

    /// A client whose quota store or token provider misbehaves as `broken` says, with
    /// `timeout` as its store and token timeout.
    fn connect_broken(
        spec: &ClientSpec,
        rt: &tokio::runtime::Runtime,
        broken: Broken,
        timeout: Duration,
    ) -> Self {
        Self::connect(&spec.clone().broken(broken, timeout), rt)
    }

    /// A ranged hunt, run to its end.
    // `Error` carries the server's error details (request ids); a test harness can afford it.
    #[allow(clippy::result_large_err)]
    fn hunt_range(
        &self,
        query: &str,
        from: SystemTime,
        to: SystemTime,
        opts: RangeOptions,
    ) -> Result<RangeOutcome, RangeFailure> {
        let mut hunt = self
            .open_range(query, from, to, opts)
            .map_err(RangeFailure::Plan)?;
        let clamped = hunt.clamped();
        let mut windows = Vec::new();
        for w in hunt.by_ref() {
            match w {
                Ok(w) => windows.push(w),
                Err(e) => return Err(RangeFailure::Hunt(e, windows)),
            }
        }
        Ok(RangeOutcome {
            windows,
            progress: hunt.progress(),
            clamped,
        })
    }

    /// A streamed hunt: `on_item` sees the schema and each row as it arrives; the summary
    /// at the end.
    fn hunt_stream(
        &self,
        query: &str,
        on_item: &mut dyn FnMut(StreamItem),
    ) -> Result<HuntSummary, Error> {
        let mut stream = self.open_stream(query);
        for item in stream.by_ref() {
            on_item(item?);
        }
        Ok(stream.summary().expect("a summary once the stream ended"))
    }
}

/// How a quota store or token provider misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The store never answers an admission.
    StoreHangs,
    /// The store answers an admission with nothing.
    StoreAnswersNothing,
    /// The store panics.
    StorePanics,
    /// The token provider never answers.
    ProviderHangs,
    /// The token provider panics.
    ProviderPanics,
}

impl Broken {
    /// Every way.
    pub const ALL: [Broken; 5] = [
        Broken::StoreHangs,
        Broken::StoreAnswersNothing,
        Broken::StorePanics,
        Broken::ProviderHangs,
        Broken::ProviderPanics,
    ];

    fn is_store(self) -> bool {
        matches!(
            self,
            Broken::StoreHangs | Broken::StoreAnswersNothing | Broken::StorePanics
        )
    }
}

#[derive(Debug)]
struct BrokenParts(Broken);

/// A token provider that always gives the same token.
#[derive(Debug)]
struct FixedToken(String);

#[defender_async::async_trait]
impl defender_async::TokenProvider for FixedToken {
    async fn token(&self, _: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        Ok((
            defender_core::token::Secret::new(self.0.clone()),
            Duration::from_secs(3_000),
        ))
    }
}

impl defender_blocking::TokenProvider for FixedToken {
    fn token(&self, _: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        Ok((
            defender_core::token::Secret::new(self.0.clone()),
            Duration::from_secs(3_000),
        ))
    }
}

/// A token provider that fetches tokens from the emulator's token endpoint, as a broker
/// would, counting its fetches.
#[derive(Debug)]
pub struct EmulatorTokens {
    url: String,
    fetches: std::sync::atomic::AtomicUsize,
}

impl EmulatorTokens {
    /// A provider for the emulator at `base_url`.
    pub fn new(base_url: &str) -> EmulatorTokens {
        EmulatorTokens {
            url: format!("{base_url}/{DEFAULT_TENANT}/oauth2/v2.0/token"),
            fetches: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many tokens it fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn fetch(&self, scope: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let scope = scope.replace(':', "%3A").replace('/', "%2F");
        let body = format!(
            "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_SECRET}&grant_type=client_credentials&scope={scope}"
        );
        let answer = post_form(&self.url, &body);
        let token = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned));
        match token {
            Some(t) => Ok((
                defender_core::token::Secret::new(t),
                Duration::from_secs(3_599),
            )),
            None => Err(Error::InvalidRequest("the broker got no token".into())),
        }
    }
}

/// An [`EmulatorTokens`] as the clients' token provider.
#[derive(Debug)]
struct Broker(Arc<EmulatorTokens>);

#[defender_async::async_trait]
impl defender_async::TokenProvider for Broker {
    async fn token(&self, scope: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        // Its plain socket IO on a thread of its own, off the runtime's workers.
        let (this, scope) = (self.0.clone(), scope.to_owned());
        tokio::task::spawn_blocking(move || this.fetch(&scope))
            .await
            .unwrap_or_else(|e| Err(Error::InvalidRequest(e.to_string())))
    }
}

impl defender_blocking::TokenProvider for Broker {
    fn token(&self, scope: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        self.0.fetch(scope)
    }
}

#[defender_async::async_trait]
impl defender_async::QuotaStore for BrokenParts {
    async fn perform(
        &self,
        op: defender_core::engine::QuotaOp,
    ) -> Option<(
        defender_core::engine::AdmitId,
        defender_core::engine::Admission,
    )> {
        let _ = op;
        match self.0 {
            Broken::StoreHangs => std::future::pending().await,
            Broken::StorePanics => panic!("a store that panics"),
            _ => None,
        }
    }
}

#[defender_async::async_trait]
impl defender_async::TokenProvider for BrokenParts {
    async fn token(&self, _scope: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        match self.0 {
            Broken::ProviderPanics => panic!("a provider that panics"),
            _ => std::future::pending().await,
        }
    }
}

impl defender_blocking::QuotaStore for BrokenParts {
    fn perform(
        &self,
        op: defender_core::engine::QuotaOp,
    ) -> Option<(
        defender_core::engine::AdmitId,
        defender_core::engine::Admission,
    )> {
        let _ = op;
        match self.0 {
            Broken::StoreHangs => {
                std::thread::sleep(Duration::from_secs(3_600));
                None
            }
            Broken::StorePanics => panic!("a store that panics"),
            _ => None,
        }
    }
}

impl defender_blocking::TokenProvider for BrokenParts {
    fn token(&self, _scope: &str) -> Result<(defender_core::token::Secret, Duration), Error> {
        match self.0 {
            Broken::ProviderPanics => panic!("a provider that panics"),
            _ => {
                std::thread::sleep(Duration::from_secs(3_600));
                Err(Error::Cancelled)
            }
        }
    }
}

/// What a ranged hunt handed out.
#[derive(Debug)]
pub struct RangeOutcome {
    /// The windows, in the order they were handed out.
    pub windows: Vec<WindowRows>,
    /// Its progress at the end.
    pub progress: RangeProgress,
    /// The start was clamped into the data window.
    pub clamped: bool,
}

/// Why a ranged hunt failed.
#[derive(Debug)]
pub enum RangeFailure {
    /// It could not start.
    Plan(RangeError),
    /// A window failed (after these windows were handed out).
    Hunt(Error, Vec<WindowRows>),
}

/// A `$client::Client` (`defender_async` or `defender_blocking`) built as `$spec` says:
/// the surface, the emulator's app, URLs, limits, policy, tokens and quota store.
macro_rules! build_client {
    ($client:ident, $spec:expr) => {{
        let spec: &ClientSpec = $spec;
        let mut b = $client::Client::builder()
            .surface(spec.surface)
            .base_url(&spec.base_url)
            .login_url(&spec.base_url)
            .limits_value(spec.limits.clone())
            .policy(spec.policy.clone())
            .max_body_bytes(
                spec.max_body_bytes
                    .unwrap_or($client::DEFAULT_MAX_BODY_BYTES),
            );
        if !spec.anonymous {
            b = b.tenant(DEFAULT_TENANT).client_id(DEFAULT_CLIENT_ID);
        }
        if let Some(t) = spec.timeout {
            b = b.store_timeout(t).token_timeout(t);
        }
        b = match &spec.tokens {
            Tokens::Secret => b.client_secret(spec.secret.clone()),
            Tokens::Fixed(t) => b.token_provider(Arc::new(FixedToken(t.clone()))),
            Tokens::Provider(p) => b.token_provider(Arc::new(Broker(p.clone()))),
            Tokens::Broken(x) => b.token_provider(Arc::new(BrokenParts(*x))),
            Tokens::Source { source, ca } => {
                let b = b.credential(source.clone());
                match ca {
                    Some(pem) => b.ca_certificate(pem.clone()),
                    None => b,
                }
            }
        };
        b = match &spec.store {
            Store::Local => b,
            Store::Shared(s) => b.quota_store(Arc::new(StoreAdapter(s.clone()))),
            Store::Redis(c) => b.redis_quota((**c).clone()),
            Store::Broken(x) => b.quota_store(Arc::new(BrokenParts(*x))),
        };
        b.build()
    }};
}

/// The async client, driven from plain threads through its runtime's handle.
#[derive(Debug, Clone)]
pub struct AsyncDriver {
    client: defender_async::Client,
    handle: tokio::runtime::Handle,
}

/// The async client's streamed hunt, polled from a plain thread.
#[derive(Debug)]
pub struct AsyncStream {
    stream: Option<defender_async::HuntStream>,
    handle: tokio::runtime::Handle,
}

impl Iterator for AsyncStream {
    type Item = Result<StreamItem, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures_util::StreamExt;
        let stream = self.stream.as_mut()?;
        self.handle.block_on(stream.next())
    }
}

impl ItemStream for AsyncStream {
    fn summary(&self) -> Option<HuntSummary> {
        self.stream.as_ref()?.summary().cloned()
    }
}

impl Drop for AsyncStream {
    fn drop(&mut self) {
        let _guard = self.handle.enter();
        self.stream = None;
    }
}

/// The async client's ranged hunt, polled from a plain thread.
#[derive(Debug)]
pub struct AsyncRange {
    hunt: Option<defender_async::RangeHunt>,
    handle: tokio::runtime::Handle,
}

impl Iterator for AsyncRange {
    type Item = Result<WindowRows, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let hunt = self.hunt.as_mut()?;
        self.handle.block_on(hunt.next_window())
    }
}

impl WindowStream for AsyncRange {
    fn progress(&self) -> RangeProgress {
        self.hunt.as_ref().expect("until dropped").progress()
    }

    fn clamped(&self) -> bool {
        self.hunt.as_ref().is_some_and(|h| h.warning().is_some())
    }
}

impl Drop for AsyncRange {
    fn drop(&mut self) {
        let _guard = self.handle.enter();
        self.hunt = None;
    }
}

impl Driver for AsyncDriver {
    const NAME: &'static str = "async";
    type Stream = AsyncStream;
    type Range = AsyncRange;

    fn build(
        spec: &ClientSpec,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Self, defender_core::settings::BuildError> {
        let _guard = rt.enter();
        Ok(AsyncDriver {
            client: build_client!(defender_async, spec)?,
            handle: rt.handle().clone(),
        })
    }

    fn call(&self, call: Call) -> Result<Value, Error> {
        self.handle.block_on(self.client.call(call))
    }

    fn token_source(&self) -> Option<&'static str> {
        self.client.token_source()
    }

    fn sync(&self, state: &SyncState, options: SyncOptions) -> Result<Vec<SyncBatch>, Error> {
        self.handle.block_on(async {
            let incidents = self.client.incidents();
            let mut run = incidents.sync(state, options)?;
            let mut batches = Vec::new();
            while let Some(batch) = run.next_batch().await {
                batches.push(batch?);
            }
            Ok(batches)
        })
    }

    fn hunt_since(
        &self,
        state: &HuntState,
        options: SyncOptions,
    ) -> Result<Vec<WindowRows>, Error> {
        self.handle.block_on(async {
            let Some(mut hunt) = self.client.hunt_since(state, options)? else {
                return Ok(Vec::new());
            };
            let mut windows = Vec::new();
            while let Some(w) = hunt.next_window().await {
                windows.push(w?);
            }
            Ok(windows)
        })
    }

    fn quota(&self) -> Result<Vec<GroupUsage>, Error> {
        self.handle.block_on(self.client.quota())
    }

    fn open_stream(&self, query: &str) -> AsyncStream {
        let _guard = self.handle.enter();
        AsyncStream {
            stream: Some(self.client.hunt_stream(query)),
            handle: self.handle.clone(),
        }
    }

    fn open_range(
        &self,
        query: &str,
        from: SystemTime,
        to: SystemTime,
        opts: RangeOptions,
    ) -> Result<AsyncRange, RangeError> {
        let _guard = self.handle.enter();
        Ok(AsyncRange {
            hunt: Some(self.client.hunt_range(query, from, to, Some(opts))?),
            handle: self.handle.clone(),
        })
    }
}

/// The blocking client.
#[derive(Debug, Clone)]
pub struct BlockingDriver {
    client: defender_blocking::Client,
}

impl ItemStream for defender_blocking::HuntStream {
    fn summary(&self) -> Option<HuntSummary> {
        defender_blocking::HuntStream::summary(self).cloned()
    }
}

impl WindowStream for defender_blocking::RangeHunt {
    fn progress(&self) -> RangeProgress {
        defender_blocking::RangeHunt::progress(self)
    }

    fn clamped(&self) -> bool {
        self.warning().is_some()
    }
}

impl Driver for BlockingDriver {
    const NAME: &'static str = "blocking";
    type Stream = defender_blocking::HuntStream;
    type Range = defender_blocking::RangeHunt;

    fn build(
        spec: &ClientSpec,
        _rt: &tokio::runtime::Runtime,
    ) -> Result<Self, defender_core::settings::BuildError> {
        Ok(BlockingDriver {
            client: build_client!(defender_blocking, spec)?,
        })
    }

    fn call(&self, call: Call) -> Result<Value, Error> {
        self.client.call(call)
    }

    fn token_source(&self) -> Option<&'static str> {
        self.client.token_source()
    }

    fn sync(&self, state: &SyncState, options: SyncOptions) -> Result<Vec<SyncBatch>, Error> {
        self.client.incidents().sync(state, options)?.collect()
    }

    fn hunt_since(
        &self,
        state: &HuntState,
        options: SyncOptions,
    ) -> Result<Vec<WindowRows>, Error> {
        match self.client.hunt_since(state, options)? {
            Some(hunt) => hunt.collect(),
            None => Ok(Vec::new()),
        }
    }

    fn quota(&self) -> Result<Vec<GroupUsage>, Error> {
        self.client.quota()
    }

    fn open_stream(&self, query: &str) -> defender_blocking::HuntStream {
        self.client.hunt_stream(query)
    }

    fn open_range(
        &self,
        query: &str,
        from: SystemTime,
        to: SystemTime,
        opts: RangeOptions,
    ) -> Result<defender_blocking::RangeHunt, RangeError> {
        self.client.hunt_range(query, from, to, Some(opts))
    }
}

/// An emulator on its own runtime, for one scenario.
#[derive(Debug)]
pub struct Env {
    /// The runtime the emulator (and the async client) run on.
    pub rt: tokio::runtime::Runtime,
    /// The emulator.
    pub emulator: EmulatorHandle,
}

impl Env {
    /// Starts an emulator configured by `f`.
    pub fn start(
        f: impl FnOnce(defender_emulator::EmulatorBuilder) -> defender_emulator::EmulatorBuilder,
    ) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let emulator = rt
            .block_on(
                f(Emulator::builder()
                    .rows_per_table(300)
                    .incidents(120)
                    .seed(7))
                .spawn(),
            )
            .expect("the emulator starts");
        Env { rt, emulator }
    }

    /// A client spec for `surface` against this emulator.
    pub fn spec(&self, surface: Surface, limits: Limits) -> ClientSpec {
        ClientSpec {
            surface,
            base_url: self.emulator.base_url(),
            limits,
            policy: StandardPolicy::standard()
                .with_max_wait(Duration::from_secs(30))
                .seed(3),
            secret: DEFAULT_SECRET.to_owned(),
            max_body_bytes: None,
            tokens: Tokens::Secret,
            store: Store::Local,
            timeout: None,
            anonymous: false,
        }
    }

    /// The emulator's counters.
    pub fn stats(&self) -> Stats {
        self.emulator.stats()
    }
}

fn hunt(q: &str) -> Call {
    Call::Hunt(HuntRequest::new(q))
}

fn generous() -> Limits {
    Limits::parse(
        "2021,hunting.calls=1000/1m,incidents.calls=1000/1m,alerts.calls=1000/1m,hunting.runtime=none",
    )
        .expect("a valid spec")
}

/// Every call on every surface: hunting on all three; incidents list (every page), get
/// and update on Defender XDR and Graph; a typed `Unsupported` for incidents on
/// Defender for Endpoint; a typed `NotFound` for an absent incident; a typed `Rejected`
/// carrying the server's message for a KQL error.
pub fn every_call_on_every_surface<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    for surface in Surface::ALL {
        let d = D::connect(&env.spec(surface, generous()), &env.rt);
        let Value::Hunt(r) = d.call(hunt("DeviceProcessEvents | take 5")).expect("hunt") else {
            panic!()
        };
        assert_eq!(r.rows.len(), 5, "{} {surface}", D::NAME);
        assert!(r.schema.iter().any(|c| c.name == "Timestamp"));
        match d.call(hunt("DeviceProcessEvents | wher x")) {
            Err(Error::Rejected { status: 400, error }) => {
                assert!(error.message.contains("wher"), "{error}")
            }
            other => panic!("{} {surface}: expected a rejection, got {other:?}", D::NAME),
        }
        if surface == Surface::DefenderEndpoint {
            assert!(matches!(
                d.call(Call::ListIncidents(IncidentQuery::default())),
                Err(Error::Unsupported { .. })
            ));
            continue;
        }
        // Every page of the listing.
        let mut next = Some(Call::ListIncidents(IncidentQuery {
            top: Some(50),
            ..Default::default()
        }));
        let mut ids = Vec::new();
        while let Some(call) = next.take() {
            let Value::Incidents { page, next: n } = d.call(call).expect("list") else {
                panic!()
            };
            ids.extend(page.value.into_iter().filter_map(|i| i.incident_id));
            next = n;
        }
        assert_eq!(ids.len(), 120, "{} {surface}: every incident once", D::NAME);
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        let id = ids[3].clone();
        let Value::Incident(i) = d.call(Call::GetIncident(id.clone())).expect("get") else {
            panic!()
        };
        assert_eq!(i.incident_id.as_ref(), Some(&id));
        let update = IncidentUpdate {
            status: Some(IncidentStatus::InProgress),
            assigned_to: Some("analyst@contoso.com".into()),
            comment: Some("looked at it".into()),
            ..Default::default()
        };
        let Value::Incident(u) = d
            .call(Call::UpdateIncident(id.clone(), update))
            .expect("update")
        else {
            panic!()
        };
        assert_eq!(u.assigned_to.as_deref(), Some("analyst@contoso.com"));
        assert!(u
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("inprogress")));
        // The comment is there (on Graph, its own POST after the PATCH), and a
        // comment-only update works too.
        let has = |i: &defender_core::incidents::Incident, text: &str| {
            i.comments
                .iter()
                .any(|c| c.comment.as_deref() == Some(text))
        };
        assert!(
            has(&u, "looked at it"),
            "{} {surface}: {:?}",
            D::NAME,
            u.comments
        );
        let only_comment = IncidentUpdate {
            comment: Some("second look".into()),
            ..Default::default()
        };
        let Value::Incident(c) = d
            .call(Call::UpdateIncident(id.clone(), only_comment))
            .expect("comment")
        else {
            panic!()
        };
        assert!(
            has(&c, "second look"),
            "{} {surface}: {:?}",
            D::NAME,
            c.comments
        );
        let Value::Incident(again) = d.call(Call::GetIncident(id.clone())).expect("get") else {
            panic!()
        };
        assert!(has(&again, "looked at it") && has(&again, "second look"));
        if surface == Surface::Graph {
            // Graph lists alerts only when asked to expand them.
            let list = |expand_alerts| {
                let call = Call::ListIncidents(IncidentQuery {
                    top: Some(10),
                    expand_alerts,
                    ..Default::default()
                });
                match d.call(call).expect("list") {
                    Value::Incidents { page, .. } => page.value,
                    _ => panic!(),
                }
            };
            assert!(list(false).iter().all(|i| i.alerts.is_empty()));
            assert!(list(true).iter().any(|i| !i.alerts.is_empty()));
        }
        assert!(matches!(
            d.call(Call::GetIncident(IncidentId::from(987_654_321u64))),
            Err(Error::NotFound(_))
        ));
    }
    assert_eq!(env.stats().throttled, 0);
}

/// Every alert call on every surface (Graph `alerts_v2`, Defender's `/api/alerts` on the
/// Defender for Endpoint and Defender XDR hosts): the list, every page, each alert once;
/// a status filter; get; an update with a comment (on Graph the comment is its own POST)
/// and a comment-only update, both seen when the alert is read again; a typed `NotFound`
/// for an absent alert; and the calls counted in the alerts group, not the incidents
/// group.
pub fn every_alert_call_on_every_surface<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    for (n, surface) in Surface::ALL.into_iter().enumerate() {
        let d = D::connect(&env.spec(surface, generous()), &env.rt);
        let mut next = Some(Call::ListAlerts(AlertQuery {
            top: Some(40),
            ..Default::default()
        }));
        let mut alerts = Vec::new();
        let mut pages = 0u32;
        while let Some(call) = next.take() {
            let Value::Alerts { page, next: n } = d.call(call).expect("list alerts") else {
                panic!()
            };
            pages += 1;
            alerts.extend(page.value);
            next = n;
        }
        assert!(pages >= 3, "{} {surface}: {pages} pages", D::NAME);
        let mut ids: Vec<String> = alerts.iter().filter_map(|a| a.alert_id.clone()).collect();
        assert_eq!(
            ids.len(),
            alerts.len(),
            "{} {surface}: every alert has an id",
            D::NAME
        );
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            alerts.len(),
            "{} {surface}: each alert once",
            D::NAME
        );
        let new = alerts
            .iter()
            .filter(|a| {
                a.status
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("new"))
            })
            .count();
        let Value::Alerts { page, .. } = d
            .call(Call::ListAlerts(AlertQuery {
                filter: AlertFilter::new().status(AlertStatus::New),
                ..Default::default()
            }))
            .expect("filtered list")
        else {
            panic!()
        };
        assert!(
            page.value.iter().all(|a| a
                .status
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("new"))),
            "{} {surface}: the filter holds",
            D::NAME
        );
        assert_eq!(page.value.len(), new.min(alerts::max_top(surface) as usize));

        // Defender for Endpoint and Defender XDR serve the same alerts: one each.
        let id = AlertId::from(ids[7 + 5 * n].as_str());
        let Value::Alert(a) = d.call(Call::GetAlert(id.clone())).expect("get alert") else {
            panic!()
        };
        assert_eq!(a.alert_id.as_deref(), Some(id.0.as_str()));
        let update = AlertUpdate {
            status: Some(AlertStatus::InProgress),
            assigned_to: Some("analyst@contoso.com".into()),
            comment: Some("triaged".into()),
            ..Default::default()
        };
        let Value::Alert(u) = d
            .call(Call::UpdateAlert(id.clone(), update))
            .expect("update alert")
        else {
            panic!()
        };
        assert_eq!(u.assigned_to.as_deref(), Some("analyst@contoso.com"));
        assert!(u
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("inprogress")));
        let count = |a: &defender_core::alerts::Alert, text: &str| {
            a.comments
                .iter()
                .filter(|c| c.comment.as_deref() == Some(text))
                .count()
        };
        assert_eq!(
            count(&u, "triaged"),
            1,
            "{} {surface}: {:?}",
            D::NAME,
            u.comments
        );
        let only_comment = AlertUpdate {
            comment: Some("escalated".into()),
            ..Default::default()
        };
        let Value::Alert(c) = d
            .call(Call::UpdateAlert(id.clone(), only_comment))
            .expect("comment")
        else {
            panic!()
        };
        assert_eq!(count(&c, "escalated"), 1, "{} {surface}", D::NAME);
        let Value::Alert(again) = d.call(Call::GetAlert(id.clone())).expect("get") else {
            panic!()
        };
        assert_eq!(
            (count(&again, "triaged"), count(&again, "escalated")),
            (1, 1),
            "{} {surface}: each comment once",
            D::NAME
        );
        assert!(matches!(
            d.call(Call::GetAlert(AlertId::from("da000000000000000000_404"))),
            Err(Error::NotFound(_))
        ));
        let usage = d.quota().expect("quota");
        let used = |group| {
            usage
                .iter()
                .find(|g| g.group == group)
                .map(|g| g.windows.iter().map(|w| w.used).max().unwrap_or(0))
                .unwrap_or(0)
        };
        assert!(
            used(defender_core::ApiGroup::Alerts) >= pages + 6,
            "{} {surface}",
            D::NAME
        );
        assert_eq!(
            used(defender_core::ApiGroup::Incidents),
            0,
            "{} {surface}",
            D::NAME
        );
    }
    assert_eq!(env.stats().throttled, 0);
}

/// Tokens that expire on the server mid-run are refreshed once, and no call fails.
pub fn token_expiry_mid_run<D: Driver>() {
    let clock = Clock::manual_now();
    let env = Env::start(|b| {
        b.limits(generous())
            .clock(clock.clone())
            .token_lifetime(Duration::from_secs(3599))
    });
    let d = D::connect(&env.spec(Surface::DefenderXdr, generous()), &env.rt);
    for round in 0..3 {
        d.call(hunt("AlertInfo | take 1"))
            .unwrap_or_else(|e| panic!("{} round {round}: {e}", D::NAME));
        // The server's clock jumps past the token's lifetime; the client's does not, so
        // the client learns of the expiry from a 401.
        clock.advance(Duration::from_secs(3600));
    }
    d.call(hunt("AlertInfo | take 1"))
        .expect("after the last expiry");
    assert_eq!(
        env.stats().tokens_issued,
        4,
        "one token, then one refresh per expiry"
    );
}

/// The 429 variants: with and without `Retry-After`, with and without "again in N
/// seconds"; the limit the body names is learned, so only the first call is throttled.
pub fn throttle_variants<D: Driver>() {
    for (header, sentence) in [(true, true), (true, false), (false, true), (false, false)] {
        let server = Limits::parse("2021,hunting.calls=2/3s,hunting.runtime=none").expect("spec");
        let env = Env::start(|b| {
            b.limits(server)
                .retry_after_header(header)
                .again_in_sentence(sentence)
        });
        // The client believes in much more than the server allows.
        let d = D::connect(&env.spec(Surface::DefenderXdr, generous()), &env.rt);
        for i in 0..6 {
            d.call(hunt("AlertInfo | take 1")).unwrap_or_else(|e| {
                panic!(
                    "{} header={header} sentence={sentence} call {i}: {e}",
                    D::NAME
                )
            });
        }
        let stats = env.stats();
        assert_eq!(
            stats.throttled, 1,
            "{} header={header} sentence={sentence}: only the call that taught the limit is throttled",
            D::NAME
        );
        let learned = d.quota().expect("quota");
        let hunting = learned
            .iter()
            .find(|g| g.group == defender_core::ApiGroup::Hunting)
            .expect("hunting");
        assert!(hunting
            .windows
            .iter()
            .any(|w| w.limit.max == 2 && w.limit.per == Duration::from_secs(3)));
    }
}

/// 5xx responses and dropped connections are retried within the policy; every call
/// succeeds and none is sent again after it succeeded.
pub fn server_errors_and_resets_are_retried<D: Driver>() {
    let faults = FaultSpec::parse("500=0.2,503=0.1,reset=0.1").expect("spec");
    let env = Env::start(|b| b.limits(generous()).faults(faults));
    let mut spec = env.spec(Surface::DefenderXdr, generous());
    spec.policy = StandardPolicy::standard()
        .max_attempts(12)
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .seed(11);
    let d = D::connect(&spec, &env.rt);
    for i in 0..30 {
        d.call(hunt("AlertInfo | take 1"))
            .unwrap_or_else(|e| panic!("{} call {i}: {e}", D::NAME));
    }
    let stats = env.stats();
    assert!(stats.faults > 0, "faults were injected");
    // Faulted requests are counted apart; the rest reached the API once per call: nothing
    // was sent again after it succeeded.
    let api: u64 = stats.keys.iter().map(|k| k.requests).sum();
    assert_eq!(api, 30, "{stats:?}");
}

/// When the quota is spent and the wait exceeds `max_wait`, the call fails at once with a
/// typed error carrying the retry time, and nothing is sent.
pub fn max_wait_exceeded_sends_nothing<D: Driver>() {
    let limits = Limits::parse("2021,hunting.calls=1/1h,hunting.runtime=none").expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()));
    let mut spec = env.spec(Surface::DefenderXdr, limits);
    spec.policy = StandardPolicy::standard().with_max_wait(Duration::from_secs(1));
    let d = D::connect(&spec, &env.rt);
    d.call(hunt("AlertInfo | take 1"))
        .expect("the first call fits");
    let before = env.stats().requests;
    let started = Instant::now();
    match d.call(hunt("AlertInfo | take 1")) {
        Err(Error::QuotaWait { retry_at, wait, .. }) => {
            assert!(wait > Duration::from_secs(3000), "{wait:?}");
            assert!(retry_at > started + Duration::from_secs(3000));
        }
        other => panic!("{}: expected QuotaWait, got {other:?}", D::NAME),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "failed at once");
    assert_eq!(env.stats().requests, before, "nothing was sent");
}

/// 16 concurrent callers against a server whose limits equal the client's, in both
/// window modes: zero 429s and no call lost.
pub fn sixteen_callers_exact_limits<D: Driver>() {
    for mode in [WindowMode::Sliding, WindowMode::Fixed] {
        let limits = Limits::parse("2021,incidents.calls=20/1s").expect("spec");
        let env = Env::start(|b| b.limits(limits.clone()).window_mode(mode));
        let d = D::connect(&env.spec(Surface::DefenderXdr, limits), &env.rt);
        let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let d = d.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    for i in 0..4 {
                        let call = Call::ListIncidents(IncidentQuery {
                            top: Some(1),
                            ..Default::default()
                        });
                        d.call(call)
                            .unwrap_or_else(|e| panic!("caller {t} call {i}: {e}"));
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no caller panicked");
        }
        assert_eq!(
            done.load(std::sync::atomic::Ordering::Relaxed),
            64,
            "no call lost"
        );
        assert_eq!(env.stats().throttled, 0, "{} {mode:?}: zero 429s", D::NAME);
    }
}

/// Malformed and truncated bodies give typed errors, never a panic or a hang.
pub fn malformed_and_truncated_bodies<D: Driver>() {
    for (spec, name) in [
        ("malformed=1.0", "malformed"),
        ("truncate=1.0", "truncated"),
    ] {
        let env = Env::start(|b| {
            b.limits(generous())
                .faults(FaultSpec::parse(spec).expect("spec"))
        });
        let mut s = env.spec(Surface::DefenderXdr, generous());
        s.policy = StandardPolicy::standard()
            .max_attempts(2)
            .backoff(Duration::from_millis(1), Duration::from_millis(5));
        let d = D::connect(&s, &env.rt);
        match d.call(hunt("AlertInfo | take 3")) {
            Err(Error::Decode { .. }) | Err(Error::Transport { .. }) => {}
            other => panic!("{} {name}: expected a typed error, got {other:?}", D::NAME),
        }
    }
}

/// A wrong secret is a typed authentication error.
pub fn wrong_secret_is_an_auth_error<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    let mut s = env.spec(Surface::DefenderXdr, generous());
    s.secret = "not-the-secret".into();
    let d = D::connect(&s, &env.rt);
    match d.call(hunt("AlertInfo | take 1")) {
        Err(e @ Error::Auth(_)) => assert!(!e.to_string().contains("not-the-secret")),
        other => panic!("{}: expected Auth, got {other:?}", D::NAME),
    }
}

/// A ranged hunt over 20 days holding about 350,000 matching rows, past a row cap of
/// 100,000: every row comes back exactly once (checked against a `count` per window),
/// in time order, the bisections show in the progress, and the server throttled nothing.
/// Then a range starting 45 days ago is clamped, or refused, as configured.
pub fn ranged_hunt_past_the_row_cap<D: Driver>() {
    let limits = Limits::parse("2021,hunting.calls=100/1m,hunting.runtime=none").expect("spec");
    let env = Env::start(|b| {
        b.limits(limits.clone())
            .table_rows("DeviceProcessEvents", 700_000)
            .span_days(40)
    });
    let d = D::connect(&env.spec(Surface::DefenderXdr, limits), &env.rt);
    let now = SystemTime::now();
    let from = now - Duration::from_secs(20 * 86_400);
    let query = "DeviceProcessEvents | project Timestamp, ReportId";
    let out = d
        .hunt_range(query, from, now, RangeOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e:?}", D::NAME));
    assert!(
        out.progress.splits >= 2,
        "{}: bisection happened: {:?}",
        D::NAME,
        out.progress
    );
    assert!(!out.clamped);
    let mut seen = HashSet::new();
    let mut total = 0usize;
    let mut last_end = from;
    for w in &out.windows {
        assert_eq!(w.start, last_end, "windows tile the range in order");
        last_end = w.end;
        assert!(!w.truncated);
        let count_query = format!(
            "DeviceProcessEvents | where Timestamp >= datetime({}) and Timestamp < datetime({}) | count",
            format_rfc3339(w.start),
            format_rfc3339(w.end)
        );
        let Value::Hunt(c) = d.call(hunt(&count_query)).expect("count") else {
            panic!()
        };
        let expected = c.rows[0]
            .get("Count")
            .and_then(|v| v.as_u64())
            .expect("a count");
        assert_eq!(
            w.rows.len() as u64,
            expected,
            "{}: window {:?}..{:?}",
            D::NAME,
            w.start,
            w.end
        );
        let mut previous: Option<SystemTime> = None;
        for r in &w.rows {
            let id = r
                .get("ReportId")
                .and_then(|v| v.as_i64())
                .expect("ReportId");
            assert!(seen.insert(id), "row {id} came back twice");
            let t = r
                .get("Timestamp")
                .and_then(|v| v.as_str())
                .and_then(defender_core::timefmt::parse_rfc3339)
                .expect("a time");
            assert!(previous.is_none_or(|p| p <= t), "rows in time order");
            previous = Some(t);
        }
        total += w.rows.len();
    }
    assert_eq!(last_end, now);
    assert!(
        total > 300_000,
        "{}: about 350,000 rows expected, got {total}",
        D::NAME
    );
    assert_eq!(out.progress.rows as usize, total);
    assert_eq!(env.stats().throttled, 0, "quotas never exceeded");

    // 45 days ago: clamped with a warning by default, refused when configured.
    let old = now - Duration::from_secs(45 * 86_400);
    let small = "DeviceProcessEvents | where ReportId < 0";
    let opts = RangeOptions {
        split: Split::Every(Duration::from_secs(10 * 86_400)),
        ..RangeOptions::default()
    };
    let clamped = d.hunt_range(small, old, now, opts).expect("clamped");
    assert!(clamped.clamped);
    assert!(clamped.windows[0].start > old + Duration::from_secs(14 * 86_400));
    let refuse = RangeOptions {
        on_lookback: Lookback::Refuse,
        ..opts
    };
    assert!(matches!(
        d.hunt_range(small, old, now, refuse),
        Err(RangeFailure::Plan(RangeError::BeforeLookback { .. }))
    ));
}

/// The fault soak: 16 callers make `SOAK_CALLS` calls (default 640) against an emulator
/// injecting 20% faults (500, 503, resets, truncated bodies, malformed bodies, odd 429s)
/// with limits equal to the client's. Every call ends, in a value or one typed error;
/// nothing hangs or panics; the server's windows are never exceeded.
pub fn fault_soak<D: Driver>() {
    let calls: usize = std::env::var("SOAK_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(640);
    let faults =
        FaultSpec::parse("500=0.05,503=0.05,reset=0.04,truncate=0.03,malformed=0.02,odd429=0.01")
            .expect("spec");
    let limits =
        Limits::parse("2021,incidents.calls=200/1s,hunting.calls=200/1s,hunting.runtime=none")
            .expect("spec");
    let env = Env::start(|b| b.limits(limits.clone()).faults(faults));
    let mut spec = env.spec(Surface::DefenderXdr, limits);
    spec.policy = StandardPolicy::standard()
        .max_attempts(8)
        .backoff(Duration::from_millis(2), Duration::from_millis(50))
        .with_max_wait(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(10))
        .seed(5);
    let d = D::connect(&spec, &env.rt);
    let (tx, rx) = std::sync::mpsc::channel();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..16 {
        let (d, tx, next) = (d.clone(), tx.clone(), next.clone());
        std::thread::spawn(move || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= calls {
                return;
            }
            let call = match i % 3 {
                0 => hunt("AlertInfo | take 2"),
                1 => Call::ListIncidents(IncidentQuery {
                    top: Some(5),
                    ..Default::default()
                }),
                _ => hunt("DeviceLogonEvents | where ActionType == 'LogonFailed' | take 3"),
            };
            let _ = tx.send(d.call(call));
        });
    }
    drop(tx);
    let (mut ok, mut errors) = (
        0usize,
        std::collections::BTreeMap::<&'static str, usize>::new(),
    );
    for _ in 0..calls {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                let kind = match e {
                    Error::Decode { .. } => "decode",
                    Error::Transport { .. } => "transport",
                    Error::Server { .. } => "server",
                    Error::Throttled { .. } => "throttled",
                    Error::QuotaWait { .. } => "quota-wait",
                    other => panic!("{}: an unexpected error in the soak: {other}", D::NAME),
                };
                *errors.entry(kind).or_default() += 1;
            }
            Err(_) => panic!(
                "{}: a call did not end within two minutes ({ok} ended well)",
                D::NAME
            ),
        }
    }
    let stats = env.stats();
    println!(
        "{} soak: {calls} calls, {ok} ok, errors {errors:?}, faults {:?}",
        D::NAME,
        stats.faults_by_kind
    );
    assert!(
        stats.faults as f64 > calls as f64 * 0.1,
        "faults were injected: {stats:?}"
    );
    assert!(
        ok as f64 > calls as f64 * 0.8,
        "{}: most calls succeed despite faults: {ok}/{calls}",
        D::NAME
    );
    assert_eq!(stats.throttled, 0, "{}: no window exceeded", D::NAME);
}

/// A response body over the client's limit is a typed `BodyTooLarge` transport error,
/// not retried, and a body under it is read whole.
pub fn response_bodies_are_size_limited<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    let mut spec = env.spec(Surface::DefenderXdr, generous());
    spec.max_body_bytes = Some(4_096);
    let d = D::connect(&spec, &env.rt);
    let api = |s: Stats| s.keys.iter().map(|k| k.requests).sum::<u64>();
    let before = api(env.stats());
    match d.call(hunt("DeviceProcessEvents | take 200")) {
        Err(Error::Transport { error, attempts }) => {
            assert_eq!(
                error.kind,
                defender_core::TransportErrorKind::BodyTooLarge,
                "{error}"
            );
            assert_eq!(attempts, 1, "not retried");
        }
        other => panic!("{}: expected BodyTooLarge, got {other:?}", D::NAME),
    }
    assert_eq!(api(env.stats()) - before, 1, "sent once");
    let Value::Hunt(small) = d
        .call(hunt("AlertInfo | take 1"))
        .expect("a small body fits")
    else {
        panic!()
    };
    assert_eq!(small.rows.len(), 1);
}

/// A client spec for a [`crate::paced::PacedServer`].
fn paced_spec(server: &crate::paced::PacedServer) -> ClientSpec {
    ClientSpec {
        surface: Surface::DefenderXdr,
        base_url: server.base_url(),
        limits: generous(),
        policy: StandardPolicy::standard()
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
            .seed(3),
        secret: "paced-secret".to_owned(),
        max_body_bytes: None,
        tokens: Tokens::Secret,
        store: Store::Local,
        timeout: None,
        anonymous: false,
    }
}

fn row_numbers(items: &[StreamItem]) -> Vec<i64> {
    items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Row(r) => r.get("N").and_then(|n| n.as_i64()),
            StreamItem::Schema(_) => None,
        })
        .collect()
}

/// A streamed hunt hands rows to the caller while the body is still arriving: the
/// server writes the first 40 rows and holds the rest until the caller has seen a row
/// (a client that buffered the body would make it wait out its 10 s gate).
pub fn rows_arrive_while_the_body_does<D: Driver>() {
    use crate::paced::{PacedServer, Plan};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let server = PacedServer::start(Plan::Gate {
        first: 40,
        rest: 60,
    });
    let d = D::connect(&paced_spec(&server), &rt);
    let mut items = Vec::new();
    let summary = d
        .hunt_stream("T | take 100", &mut |item| {
            if matches!(item, StreamItem::Row(_)) {
                server.release();
            }
            items.push(item);
        })
        .unwrap_or_else(|e| panic!("{}: {e}", D::NAME));
    assert_eq!(
        server.released_in_time(),
        Some(true),
        "{}: the first rows reached the caller before the body ended",
        D::NAME
    );
    assert!(
        matches!(&items[0], StreamItem::Schema(cols) if cols.len() == 2),
        "{}: the schema comes first",
        D::NAME
    );
    assert_eq!(
        row_numbers(&items),
        (0..100).collect::<Vec<_>>(),
        "{}",
        D::NAME
    );
    assert_eq!(summary.rows, 100);
    assert_eq!(summary.running_time, Duration::from_millis(250));
    assert!(!summary.truncated);
}

/// A body broken after rows were handed out is a typed error and is not sent again (the
/// rows would come twice); one broken before any row is retried and then complete.
pub fn a_broken_stream_is_retried_only_before_rows<D: Driver>() {
    use crate::paced::{PacedServer, Plan};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");

    let server = PacedServer::start(Plan::BreakAfter {
        first: 25,
        total: 50,
    });
    let d = D::connect(&paced_spec(&server), &rt);
    let mut items = Vec::new();
    match d.hunt_stream("T | take 50", &mut |item| items.push(item)) {
        Err(Error::Transport { .. }) | Err(Error::Decode { .. }) => {}
        other => panic!("{}: expected a typed error, got {other:?}", D::NAME),
    }
    assert_eq!(
        row_numbers(&items),
        (0..25).collect::<Vec<_>>(),
        "{}: the rows before the break were handed out, once",
        D::NAME
    );
    assert_eq!(server.hunts(), 1, "{}: not sent again", D::NAME);

    let server = PacedServer::start(Plan::BreakAfter {
        first: 0,
        total: 30,
    });
    let d = D::connect(&paced_spec(&server), &rt);
    let mut items = Vec::new();
    let summary = d
        .hunt_stream("T | take 30", &mut |item| items.push(item))
        .unwrap_or_else(|e| panic!("{}: retried and complete: {e}", D::NAME));
    assert_eq!(server.hunts(), 2, "{}: retried once", D::NAME);
    assert_eq!(row_numbers(&items), (0..30).collect::<Vec<_>>());
    assert_eq!(summary.rows, 30);
}

/// A streamed hunt gives exactly the rows, in the order, of the same hunt buffered.
pub fn streamed_and_buffered_hunts_agree<D: Driver>() {
    let env = Env::start(|b| {
        b.limits(generous())
            .table_rows("DeviceProcessEvents", 20_000)
    });
    let d = D::connect(&env.spec(Surface::DefenderXdr, generous()), &env.rt);
    let query = "DeviceProcessEvents | take 15000";
    let Ok(Value::Hunt(buffered)) = d.call(hunt(query)) else {
        panic!("{}: the buffered hunt", D::NAME)
    };
    let mut schema = Vec::new();
    let mut rows = Vec::new();
    let summary = d
        .hunt_stream(query, &mut |item| match item {
            StreamItem::Schema(s) => schema = s,
            StreamItem::Row(r) => rows.push(r),
        })
        .unwrap_or_else(|e| panic!("{}: {e}", D::NAME));
    assert_eq!(schema, buffered.schema, "{}", D::NAME);
    assert_eq!(rows.len(), 15_000);
    assert!(
        rows == buffered.rows,
        "{}: the same rows in the same order",
        D::NAME
    );
    assert_eq!(summary.rows, 15_000);
    assert_eq!(summary.schema, buffered.schema);
}

/// Incident updates are never doubled by the client's own resends: 200 updates, each
/// with a comment of its own, under 30% faults (5xx that change nothing; resets, and
/// truncated or malformed answers after the change was applied). Afterwards every
/// comment of a completed update is on its incident exactly once; an update that failed
/// with `OutcomeUnknown` left it at most once; any other failure left it not at all.
pub fn updates_are_never_doubled<D: Driver>() {
    const UPDATES: usize = 200;
    let faults = FaultSpec::parse("500=0.07,503=0.05,reset=0.06,truncate=0.08,malformed=0.04")
        .expect("spec");
    let limits = generous();
    let env = Env::start(|b| b.limits(limits.clone()).faults(faults));
    let mut spec = env.spec(Surface::DefenderXdr, limits);
    spec.policy = StandardPolicy::standard()
        .max_attempts(8)
        .backoff(Duration::from_millis(2), Duration::from_millis(20))
        .with_max_wait(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(10))
        .seed(11);
    let d = D::connect(&spec, &env.rt);
    let incidents: Vec<u64> = {
        let Value::Incidents { page, .. } = read(&d, Call::ListIncidents(IncidentQuery::default()))
        else {
            panic!("a page")
        };
        page.value
            .iter()
            .filter_map(|i| i.incident_id.as_ref()?.0.parse().ok())
            .take(20)
            .collect()
    };
    assert!(incidents.len() >= 10, "{incidents:?}");
    let run = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..8 {
        let (d, tx, next, incidents, run) = (
            d.clone(),
            tx.clone(),
            next.clone(),
            incidents.clone(),
            run.clone(),
        );
        std::thread::spawn(move || loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= UPDATES {
                return;
            }
            let id = incidents[i % incidents.len()];
            let comment = format!("note {i} of run {run}");
            let update = IncidentUpdate {
                status: Some(if i % 2 == 0 {
                    IncidentStatus::InProgress
                } else {
                    IncidentStatus::Active
                }),
                comment: Some(comment.clone()),
                ..IncidentUpdate::default()
            };
            let result = d.call(Call::UpdateIncident(IncidentId::from(id), update));
            let _ = tx.send((id, comment, result));
        });
    }
    drop(tx);
    let mut outcomes = Vec::new();
    for _ in 0..UPDATES {
        outcomes.push(
            rx.recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("{}: an update did not end in two minutes", D::NAME)),
        );
    }
    // Read every incident back (reads are retried; faults go on).
    let mut comments: std::collections::HashMap<String, usize> = Default::default();
    for id in &incidents {
        let Value::Incident(inc) = read(&d, Call::GetIncident(IncidentId::from(*id))) else {
            panic!("an incident")
        };
        for c in &inc.comments {
            if let Some(text) = &c.comment {
                *comments.entry(text.clone()).or_default() += 1;
            }
        }
    }
    let (mut ok, mut unknown, mut other) = (0, 0, 0);
    for (id, comment, result) in &outcomes {
        let n = comments.get(comment).copied().unwrap_or(0);
        match result {
            Ok(Value::Incident(inc)) => {
                ok += 1;
                assert_eq!(
                    n,
                    1,
                    "{}: a completed update's comment on {id} {n} times",
                    D::NAME
                );
                assert!(
                    inc.comments
                        .iter()
                        .any(|c| c.comment.as_deref() == Some(comment)),
                    "{}: the incident handed back shows the comment",
                    D::NAME
                );
            }
            Ok(v) => panic!("{}: an update gave {v:?}", D::NAME),
            Err(Error::OutcomeUnknown { change, .. }) => {
                unknown += 1;
                assert!(n <= 1, "{}: an unknown update's comment {n} times", D::NAME);
                let Change::Incident(_, update) = change.as_ref() else {
                    panic!("{}: an incident update became {change:?}", D::NAME);
                };
                assert_eq!(update.comment.as_deref(), Some(comment.as_str()));
            }
            Err(e) => {
                other += 1;
                assert_eq!(
                    n,
                    0,
                    "{}: failed with '{e}' but the comment is there",
                    D::NAME
                );
            }
        }
    }
    let stats = env.stats();
    println!(
        "{} updates under faults: {ok} ok, {unknown} outcome unknown, {other} other errors; faults {:?}",
        D::NAME,
        stats.faults_by_kind
    );
    assert!(
        stats.faults as f64 > UPDATES as f64 * 0.2,
        "faults were injected: {stats:?}"
    );
    assert!(
        ok as f64 > UPDATES as f64 * 0.8,
        "{}: most updates succeed: {ok}",
        D::NAME
    );
}

/// A read through faults: retried until it succeeds (reads are idempotent).
fn read<D: Driver>(d: &D, call: Call) -> Value {
    for _ in 0..20 {
        if let Ok(v) = d.call(call.clone()) {
            return v;
        }
    }
    panic!("{}: a read failed 20 times", D::NAME)
}

/// A quota store or token provider that hangs, answers nothing or panics holds no call:
/// four callers each end within the store or token timeout (plus slack) with a typed
/// error, nothing is sent to the API, and the client keeps answering.
pub fn a_broken_store_or_provider_holds_no_call<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    let timeout = Duration::from_millis(600);
    for broken in Broken::ALL {
        let d = D::connect_broken(
            &env.spec(Surface::DefenderXdr, generous()),
            &env.rt,
            broken,
            timeout,
        );
        let before = env.stats();
        let started = Instant::now();
        let callers: Vec<_> = (0..4)
            .map(|i| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let r = d.call(Call::GetIncident(IncidentId::from(1000 + i)));
                    (r, Instant::now())
                })
            })
            .collect();
        for c in callers {
            let (r, ended) = c.join().expect("a caller thread");
            let took = ended - started;
            assert!(
                took < timeout * 4 + Duration::from_secs(2),
                "{} {broken:?}: a call took {took:?}",
                D::NAME
            );
            match (broken.is_store(), &r) {
                (true, Err(Error::QuotaStore { .. })) => {}
                (false, Err(Error::TokenUnavailable { .. } | Error::Auth(_))) => {}
                _ => panic!("{} {broken:?}: {r:?}", D::NAME),
            }
            if matches!(broken, Broken::StorePanics | Broken::ProviderPanics) {
                // Caught and said, at once: not waited out as a store that never answers.
                let said = matches!(
                    &r,
                    Err(Error::QuotaStore { message } | Error::TokenUnavailable { message })
                        if message.contains("panicked")
                );
                assert!(said, "{} {broken:?}: {r:?}", D::NAME);
            }
        }
        let after = env.stats();
        let api = |s: &Stats| s.keys.iter().map(|k| k.requests).sum::<u64>();
        assert_eq!(
            api(&after),
            api(&before),
            "{} {broken:?}: nothing sent",
            D::NAME
        );
        // The client still answers (with the same typed error) afterwards.
        let again = Instant::now();
        assert!(d.call(Call::GetIncident(IncidentId::from(1))).is_err());
        assert!(again.elapsed() < timeout * 4 + Duration::from_secs(2));
        assert!(
            d.quota().is_ok(),
            "{} {broken:?}: usage still readable",
            D::NAME
        );
    }
}

/// A token issued for one API is refused by another, in that service's words: an
/// `Error::Auth` carrying Graph's `InvalidAuthenticationToken`, and Defender's 401, each
/// after one refresh (the provider gives the same token again).
pub fn a_token_for_another_api_is_refused<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    let token_for = |scope: &str| -> String {
        let body = format!(
            "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_SECRET}&grant_type=client_credentials&scope={scope}"
        );
        let url = format!(
            "{}/{DEFAULT_TENANT}/oauth2/v2.0/token",
            env.emulator.base_url()
        );
        let answer = post_form(&url, &body);
        let v: serde_json::Value = serde_json::from_str(&answer).expect("a token answer");
        v["access_token"].as_str().expect("a token").to_owned()
    };
    let xdr_token = token_for("https%3A%2F%2Fapi.security.microsoft.com%2F.default");
    let graph_token = token_for("https%3A%2F%2Fgraph.microsoft.com%2F.default");
    let list = Call::ListIncidents(IncidentQuery::default());
    // The right token works...
    let d = D::connect_with_token(
        &env.spec(Surface::Graph, generous()),
        &env.rt,
        graph_token.clone(),
    );
    assert!(
        d.call(list.clone()).is_ok(),
        "{}: a Graph token on Graph",
        D::NAME
    );
    // ...the wrong one is refused by each service in its words.
    let d = D::connect_with_token(&env.spec(Surface::Graph, generous()), &env.rt, xdr_token);
    match d.call(list.clone()) {
        Err(Error::Auth(e)) => assert_eq!(e.code, "InvalidAuthenticationToken", "{}: {e}", D::NAME),
        other => panic!("{}: {other:?}", D::NAME),
    }
    let d = D::connect_with_token(
        &env.spec(Surface::DefenderXdr, generous()),
        &env.rt,
        graph_token,
    );
    match d.call(list) {
        Err(Error::Auth(e)) => assert!(e.message.contains("audience"), "{}: {e}", D::NAME),
        other => panic!("{}: {other:?}", D::NAME),
    }
}

/// A form POST over a plain TCP connection (the testkit has no HTTP client of its own).
pub(crate) fn post_form(url: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = std::net::TcpStream::connect(host).expect("connects");
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("reads");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a body");
    body.to_owned()
}

/// A scheduled hunt (both clients' `hunt_since`) over a table that grows (its rows run a
/// minute past the emulator's start, about 3.5 a second), on every surface: a first run
/// past a row cap of 200, a second a moment later: together every row of the time they
/// covered, each once (a ranged hunt over that time is the reference); a state of
/// another query, or with a checkpoint that is not a time, is refused.
pub fn hunt_since_hands_out_each_row_once<D: Driver>() {
    let env = Env::start(|b| {
        b.limits(generous())
            .rows_per_table(300)
            .table_rows("DeviceEvents", 300_000)
            .span_days(1)
            .data_ahead(Duration::from_secs(60))
    });
    let query = "DeviceEvents | project Timestamp, ReportId, DeviceName";
    let limits = Limits::parse("2021,hunting.calls=1000/1m,hunting.runtime=none,hunting.rows=200")
        .expect("a valid spec");
    for surface in [
        Surface::DefenderXdr,
        Surface::DefenderEndpoint,
        Surface::Graph,
    ] {
        let d = D::connect(&env.spec(surface, limits.clone()), &env.rt);
        let options = SyncOptions {
            since: Some(SystemTime::now() - Duration::from_secs(120)),
            lag: Duration::ZERO,
        };
        let mut state = HuntState::new(surface, None, None, query);
        let mut bad = state.clone();
        bad.checkpoint = Some("yesterday".into());
        assert!(
            matches!(d.hunt_since(&bad, options), Err(Error::SyncState(_))),
            "{} {surface}",
            D::NAME
        );
        let mut rows: Vec<String> = Vec::new();
        let mut windows = 0;
        for _ in 0..2 {
            for w in d.hunt_since(&state, options).expect("the hunt runs") {
                let before = state.checkpoint_time().expect("a time");
                // At the API's resolution (100 ns), which the query prints too.
                assert!(
                    before.is_none_or(|t| format_rfc3339(w.start) == format_rfc3339(t)),
                    "windows follow on"
                );
                assert!(!w.truncated, "{} {surface}: bisected past the cap", D::NAME);
                rows.extend(
                    w.rows
                        .iter()
                        .map(|r| serde_json::Value::Object(r.clone()).to_string()),
                );
                windows += 1;
                state.advance(w.end);
            }
            std::thread::sleep(Duration::from_millis(1_500));
        }
        let from = options.since.expect("a start");
        let to = state
            .checkpoint_time()
            .expect("a time")
            .expect("a checkpoint");
        let mut want: Vec<String> = d
            .hunt_range(query, from, to, RangeOptions::for_limits(&limits))
            .expect("the reference hunt")
            .windows
            .iter()
            .flat_map(|w| w.rows.iter())
            .map(|r| serde_json::Value::Object(r.clone()).to_string())
            .collect();
        assert!(
            want.len() > 400,
            "{} {surface}: {} rows",
            D::NAME,
            want.len()
        );
        assert!(windows > 2, "{} {surface}: {windows} windows", D::NAME);
        rows.sort();
        want.sort();
        assert_eq!(rows, want, "{} {surface}: every row once", D::NAME);
    }
}

/// An incident sync (both clients' `incidents().sync`) on Defender XDR and Graph: a first
/// run hands out every incident exactly once (the emulator's 120 do not fit one page, so
/// windows split), a second finds nothing, and after one incident changes the next run
/// hands out exactly that one, in its new version. Checkpoints only move forward.
pub fn sync_hands_out_each_change_once<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    for surface in [Surface::DefenderXdr, Surface::Graph] {
        let d = D::connect(&env.spec(surface, generous()), &env.rt);
        let mut state = SyncState::new(surface, None, None);
        let options = SyncOptions {
            since: Some(std::time::UNIX_EPOCH),
            lag: Duration::ZERO,
        };
        let run = |state: &mut SyncState| -> Vec<String> {
            let batches = d.sync(state, options).expect("the sync runs");
            let mut ids = Vec::new();
            for b in batches {
                let before = state.checkpoint_time().expect("a time");
                assert!(
                    before.is_none_or(|t| b.checkpoint >= t),
                    "{} {surface}",
                    D::NAME
                );
                ids.extend(
                    b.incidents
                        .iter()
                        .map(|i| i.incident_id.as_ref().expect("an id").to_string()),
                );
                state.advance(b.checkpoint);
            }
            ids
        };
        // A state of another surface, or with a checkpoint that is not a time, is refused.
        let other = if surface == Surface::Graph {
            Surface::DefenderXdr
        } else {
            Surface::Graph
        };
        match d.sync(&SyncState::new(other, None, None), options) {
            Err(Error::SyncState(e)) => assert!(e.to_string().contains("surface"), "{e}"),
            r => panic!("{} {surface}: {r:?}", D::NAME),
        }
        let mut bad = state.clone();
        bad.checkpoint = Some("yesterday".into());
        assert!(matches!(d.sync(&bad, options), Err(Error::SyncState(_))));
        let first = run(&mut state);
        let distinct: HashSet<&String> = first.iter().collect();
        assert_eq!(
            first.len(),
            120,
            "{} {surface}: every incident once",
            D::NAME
        );
        assert_eq!(
            distinct.len(),
            120,
            "{} {surface}: no incident twice",
            D::NAME
        );
        // The server's Date has whole seconds: let the second turn.
        std::thread::sleep(Duration::from_millis(1_100));
        assert_eq!(
            run(&mut state),
            Vec::<String>::new(),
            "{} {surface}: nothing new",
            D::NAME
        );
        let changed = first[0].clone();
        let update = IncidentUpdate {
            tags: Some(vec![format!("synced-{}", D::NAME)]),
            ..IncidentUpdate::default()
        };
        d.call(Call::UpdateIncident(
            IncidentId::from(changed.as_str()),
            update,
        ))
        .expect("the update");
        std::thread::sleep(Duration::from_millis(1_100));
        assert_eq!(
            run(&mut state),
            vec![changed],
            "{} {surface}: the change, once",
            D::NAME
        );
    }
}
