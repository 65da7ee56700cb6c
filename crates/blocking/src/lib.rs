//! # defender-blocking
//!
//! A blocking client for the Microsoft Defender APIs (Defender XDR, Defender for
//! Endpoint, Microsoft Graph security), on ureq, with the same behaviour as
//! `defender-async`: every decision (quota, running-time budget, 429s, retries, tokens)
//! is made by the sans-IO engine of `defender-core`; this crate only moves bytes and
//! sleeps.
//!
//! `Client` is a cheap `Clone` handle usable from many threads at once, all sharing one
//! engine and so one quota. There is no driver thread: each calling thread drives the
//! engine (held behind a mutex, never during IO) and sends its own requests.
//!
//! [`Client::hunt_stream`] hands a hunt's rows out while its body arrives, read by the
//! iterating thread only as fast as it takes them.
//!
//! ```no_run
//! use defender_blocking::Client;
//! use defender_core::incidents::IncidentQuery;
//!
//! let client = Client::builder().from_env().limits("xdr")?.build()?;
//! for incident in client.incidents().list(IncidentQuery::default()) {
//!     let incident = incident?;
//!     println!("{:?} {:?}", incident.incident_id, incident.incident_name);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod driver;
mod http;
mod range;
mod store;
mod stream;

pub use range::RangeHunt;
pub use store::QuotaStore;
pub use stream::HuntStream;

/// The everyday names, the same in both clients (see [`defender_core::api`]).
pub use defender_core::api::*;
#[cfg(feature = "redis")]
pub use defender_redis;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_core::engine::{Call, Value};
use defender_core::hunting::HuntRequest;
use defender_core::policy::Policy;
use defender_core::settings::{BuildError, Settings};
use defender_core::sync::{SyncBatch, SyncOptions, SyncRun, SyncState, SyncStep};
use defender_core::token::Secret;
use defender_policy::StandardPolicy;

/// A source of bearer tokens other than the client secret. Return a token and its
/// lifetime.
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    /// Fetches a token for `scope`.
    fn token(&self, scope: &str) -> Result<(Secret, Duration), Error>;
}

pub use defender_core::dispatch::Progress;

/// A shared handle to one client: one engine, one quota, one token.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: driver::Shared,
    surface: Surface,
    limits: Limits,
}

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The surface this client talks to.
    pub fn surface(&self) -> Surface {
        self.inner.surface
    }

    /// The limits this client enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Runs a hunting query.
    pub fn hunt(&self, query: impl Into<String>) -> Result<HuntResult, Error> {
        self.hunt_request(HuntRequest::new(query))
    }

    /// Runs a hunting query over a Graph `Timespan` (`P7D`, `start/end`). Only Graph takes
    /// one: elsewhere the call fails with `Error::Unsupported` and sends nothing (build the
    /// request with `HuntRequest::scoped` to put a time range into the query instead).
    pub fn hunt_with_timespan(
        &self,
        query: impl Into<String>,
        timespan: &str,
    ) -> Result<HuntResult, Error> {
        self.hunt_request(HuntRequest::new(query).with_timespan(timespan))
    }

    /// Runs a hunting request.
    pub fn hunt_request(&self, request: HuntRequest) -> Result<HuntResult, Error> {
        self.call(Call::Hunt(request))?.into_hunt()
    }

    /// Runs a hunting query and hands its rows out while the body arrives: the schema
    /// first, then every row, each as soon as it is decoded, and the summary at the end
    /// ([`HuntStream::summary`]). The calling thread performs the request at the first
    /// `next` and reads the body only as fast as it takes the rows, so a result of any
    /// size takes one chunk and one row of memory. The body size limit
    /// ([`ClientBuilder::max_body_bytes`]) does not apply to it: the decoder bounds each
    /// element of the document instead. Dropping the iterator early cancels the call.
    ///
    /// ```no_run
    /// use defender_blocking::{Client, StreamItem};
    ///
    /// let client = Client::builder().from_env().limits("xdr")?.build()?;
    /// let mut rows = client.hunt_stream("DeviceProcessEvents | where Timestamp > ago(1h)");
    /// for item in rows.by_ref() {
    ///     match item? {
    ///         StreamItem::Schema(columns) => println!("{} columns", columns.len()),
    ///         StreamItem::Row(row) => println!("{:?}", row.get("FileName")),
    ///     }
    /// }
    /// if let Some(summary) = rows.summary() {
    ///     println!("{} rows in {:?}", summary.rows, summary.running_time);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hunt_stream(&self, query: impl Into<String>) -> HuntStream {
        self.hunt_stream_request(HuntRequest::new(query))
    }

    /// [`Client::hunt_stream`] for a full request (with a Graph `Timespan`).
    pub fn hunt_stream_request(&self, request: HuntRequest) -> HuntStream {
        HuntStream::new(self.clone(), request)
    }

    /// Runs `query` over `[from, to)` in windows, past the row cap: every row once, in
    /// time order, a window at a time (see [`defender_core::range`]). Iterate over the
    /// returned [`RangeHunt`] for the windows.
    pub fn hunt_range(
        &self,
        query: &str,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
        options: Option<RangeOptions>,
    ) -> Result<RangeHunt, RangeError> {
        let opts = options.unwrap_or_else(|| range_options(&self.inner.limits));
        RangeHunt::new(self.clone(), query, from, to, opts)
    }

    /// One run of a scheduled hunt ([`defender_core::hunt_state`]): `state`'s query over
    /// the time since its checkpoint (a first run: since `options.since`, default 30 days
    /// ago) up to now less `options.lag`, in windows past the row cap, in time order;
    /// `Ok(None)` when no time has passed since. After writing and flushing a window's
    /// rows, save `state.advance(window.end)`: a crash then repeats at most one window.
    /// [`Error::SyncState`] for a bad checkpoint, [`Error::InvalidRequest`] for a query
    /// the range planner cannot bind to a time range.
    pub fn hunt_since(
        &self,
        state: &defender_core::hunt_state::HuntState,
        options: SyncOptions,
    ) -> Result<Option<RangeHunt>, Error> {
        let now = std::time::SystemTime::now();
        let Some((from, to)) = state.run_range(&options, now)? else {
            return Ok(None);
        };
        self.hunt_range(&state.query, from, to, None)
            .map(Some)
            .map_err(|e| Error::InvalidRequest(e.to_string()))
    }

    /// The alerts API (Graph's `alerts_v2`, Defender's `/api/alerts`).
    pub fn alerts(&self) -> Alerts<'_> {
        Alerts { client: self }
    }

    /// The incidents API.
    pub fn incidents(&self) -> Incidents<'_> {
        Incidents { client: self }
    }

    /// Usage of every group's quota now, and its next free slot. With a [`QuotaStore`]
    /// the store is asked (every process's calls; [`GroupUsage::source`] says who
    /// counted), with this client's own calls in `active_calls`; from a store that does
    /// not report usage, only the client's own calls (and [`Error::QuotaStore`] when the
    /// store could not tell).
    pub fn quota(&self) -> Result<Vec<GroupUsage>, Error> {
        self.inner.shared.usage()
    }

    /// The source that gave the latest token ("certificate", "Azure CLI", …), when the
    /// client was built with a [`credential`](ClientBuilder::credential); `None` before
    /// the first token.
    pub fn token_source(&self) -> Option<&'static str> {
        self.inner.shared.token_source()
    }

    /// Makes one call through the engine, blocking until it ends. The calling thread
    /// sends the call's requests itself. A [`Call::HuntStream`] gives only its summary
    /// ([`Value::HuntStreamed`]; its rows are decoded and dropped): use
    /// [`Client::hunt_stream`] for the rows.
    pub fn call(&self, call: Call) -> Result<Value, Error> {
        self.inner.shared.call(call)
    }
}

/// A sync run ([`Incidents::sync`]): an iterator of batches. An error ends it; the
/// batches before it stand.
#[derive(Debug)]
pub struct IncidentSync<'a> {
    client: &'a Client,
    run: SyncRun,
    failed: bool,
}

impl Iterator for IncidentSync<'_> {
    type Item = Result<SyncBatch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            match self.run.poll() {
                SyncStep::Batch(batch) => return Some(Ok(batch)),
                SyncStep::Done => return None,
                SyncStep::Call(call) => {
                    let handled = self
                        .client
                        .call(call)
                        .and_then(|value| self.run.handle(value));
                    if let Err(e) = handled {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// The incidents API of a [`Client`].
#[derive(Debug, Clone, Copy)]
pub struct Incidents<'a> {
    client: &'a Client,
}

impl<'a> Incidents<'a> {
    /// Every incident matching `query`, fetched a page at a time as the iterator is
    /// consumed. An error ends the iteration after the incidents already fetched.
    pub fn list(&self, query: IncidentQuery) -> IncidentIter<'a> {
        Pages::new(self.client, Call::ListIncidents(query), |v| {
            v.into_incidents().map(|(page, next)| (page.value, next))
        })
    }

    /// One page, and the call for the next one (for callers that page themselves).
    pub fn page(&self, call: Call) -> Result<(IncidentPage, Option<Call>), Error> {
        self.client.call(call)?.into_incidents()
    }

    /// A sync run from `state`'s checkpoint: an iterator of batches of the incidents
    /// created or updated since, that paging cannot skip (see [`defender_core::sync`]).
    /// Write each batch's incidents, flush them, then save its checkpoint: a crash
    /// repeats at most that batch, never loses one.
    ///
    /// ```no_run
    /// # fn run(client: defender_blocking::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use defender_blocking::sync::{SyncOptions, SyncState};
    /// let mut state = SyncState::new(client.surface(), None, None);
    /// for batch in client.incidents().sync(&state, SyncOptions::default())? {
    ///     let batch = batch?;
    ///     for incident in &batch.incidents {
    ///         println!("{}", serde_json::to_string(incident)?);
    ///     }
    ///     state.advance(batch.checkpoint); // then write `state.to_json()` atomically
    /// }
    /// # Ok(()) }
    /// ```
    pub fn sync(&self, state: &SyncState, options: SyncOptions) -> Result<IncidentSync<'a>, Error> {
        let now = std::time::SystemTime::now();
        let run = SyncRun::start(state, &options, self.client.surface(), now)?;
        Ok(IncidentSync {
            client: self.client,
            run,
            failed: false,
        })
    }

    /// One incident; [`Error::NotFound`] when it does not exist.
    pub fn get(&self, id: impl Into<IncidentId>) -> Result<Incident, Error> {
        self.client
            .call(Call::GetIncident(id.into()))?
            .into_incident()
    }

    /// Updates one incident and returns it as the server now has it.
    pub fn update(
        &self,
        id: impl Into<IncidentId>,
        update: IncidentUpdate,
    ) -> Result<Incident, Error> {
        self.client
            .call(Call::UpdateIncident(id.into(), update))?
            .into_incident()
    }
}

/// Iterates over every incident of a listing, page by page.
pub type IncidentIter<'a> = Pages<'a, Incident>;

/// Iterates over every alert of a listing, page by page.
pub type AlertIter<'a> = Pages<'a, Alert>;

/// Takes a page's value apart into its items and the next page's call.
type SplitPage<T> = fn(Value) -> Result<(Vec<T>, Option<Call>), Error>;

/// Iterates over every item of a listing, fetching a page at a time as it is consumed.
/// An error ends the iteration after the items already fetched.
pub struct Pages<'a, T> {
    client: &'a Client,
    next: Option<Call>,
    buffer: std::vec::IntoIter<T>,
    split: SplitPage<T>,
}

impl<T> std::fmt::Debug for Pages<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("next", &self.next)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

impl<'a, T> Pages<'a, T> {
    fn new(client: &'a Client, first: Call, split: SplitPage<T>) -> Pages<'a, T> {
        Pages {
            client,
            next: Some(first),
            buffer: Vec::new().into_iter(),
            split,
        }
    }
}

impl<T> Iterator for Pages<'_, T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(i) = self.buffer.next() {
                return Some(Ok(i));
            }
            let call = self.next.take()?;
            match self.client.call(call).and_then(self.split) {
                Ok((items, next)) => {
                    self.next = next;
                    self.buffer = items.into_iter();
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The alerts API of a [`Client`]: Graph's `alerts_v2`, Defender's `/api/alerts`.
#[derive(Debug, Clone, Copy)]
pub struct Alerts<'a> {
    client: &'a Client,
}

impl<'a> Alerts<'a> {
    /// Every alert matching `query`, fetched a page at a time as the iterator is
    /// consumed. An error ends the iteration after the alerts already fetched.
    pub fn list(&self, query: AlertQuery) -> AlertIter<'a> {
        Pages::new(self.client, Call::ListAlerts(query), |v| {
            v.into_alerts().map(|(page, next)| (page.value, next))
        })
    }

    /// One page, and the call for the next one (for callers that page themselves).
    pub fn page(&self, call: Call) -> Result<(AlertPage, Option<Call>), Error> {
        self.client.call(call)?.into_alerts()
    }

    /// One alert; [`Error::NotFound`] when it does not exist.
    pub fn get(&self, id: impl Into<AlertId>) -> Result<Alert, Error> {
        self.client.call(Call::GetAlert(id.into()))?.into_alert()
    }

    /// Updates one alert and returns it as the server now has it. Like an incident
    /// update, it is never resent blindly: see [`Error::OutcomeUnknown`].
    pub fn update(&self, id: impl Into<AlertId>, update: AlertUpdate) -> Result<Alert, Error> {
        self.client
            .call(Call::UpdateAlert(id.into(), update))?
            .into_alert()
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    settings: Settings,
    policy: Option<Box<dyn Policy>>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    agent: Option<ureq::Agent>,
    max_body_bytes: usize,
    progress: Option<mpsc::Sender<Progress>>,
    quota_store: Option<Arc<dyn QuotaStore>>,
    #[cfg(feature = "redis")]
    redis: Option<defender_redis::StoreConfig>,
}

pub use defender_core::settings::DEFAULT_MAX_BODY_BYTES;

impl ClientBuilder {
    fn new() -> ClientBuilder {
        ClientBuilder {
            settings: Settings::new(Surface::DefenderXdr),
            policy: None,
            token_provider: None,
            agent: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            progress: None,
            quota_store: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    defender_core::settings_setters!();

    /// Tokens from `provider` instead of the client secret.
    pub fn token_provider(mut self, provider: Arc<dyn TokenProvider>) -> Self {
        self.settings.external_tokens = true;
        self.token_provider = Some(provider);
        self
    }

    /// Uses this ureq agent. It must not turn HTTP statuses into errors
    /// (`http_status_as_error(false)`): the engine reads 429s and 5xx itself.
    pub fn agent(mut self, agent: ureq::Agent) -> Self {
        self.agent = Some(agent);
        self
    }

    /// The largest response body accepted (default 128 MiB). Streamed hunts
    /// ([`Client::hunt_stream`]) are exempt: they never hold their body, and the decoder
    /// bounds each element of it.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Sends progress events (waits for quota) to this channel.
    pub fn progress(mut self, tx: mpsc::Sender<Progress>) -> Self {
        self.progress = Some(tx);
        self
    }

    /// Admits calls through `store`, a quota shared with other processes (or other
    /// clients), instead of this client's own quota: the engine runs in
    /// [`QuotaMode::Shared`]. See [`QuotaStore`].
    pub fn quota_store(mut self, store: Arc<dyn QuotaStore>) -> Self {
        self.quota_store = Some(store);
        #[cfg(feature = "redis")]
        {
            self.redis = None;
        }
        self
    }

    /// Admits calls through the quota on Redis that every process of this app shares
    /// (`defender-redis`), named by the tenant and client id and enforcing this client's
    /// final limits and margin. The store connects on first use; `build` fails with
    /// [`BuildError::SharedQuotaScope`] when the tenant or client id is unknown, and with
    /// [`BuildError::QuotaStore`] when the URL is invalid.
    ///
    /// ```no_run
    /// use defender_blocking::defender_redis::StoreConfig;
    /// use defender_blocking::Client;
    ///
    /// let client = Client::builder()
    ///     .from_env()
    ///     .limits("xdr")?
    ///     .redis_quota(StoreConfig::new("redis://127.0.0.1:6379"))
    ///     .build()?;
    /// # drop(client);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_quota(mut self, config: defender_redis::StoreConfig) -> Self {
        self.redis = Some(config);
        self.quota_store = None;
        self
    }

    /// Builds the client. It starts no thread: calling threads do the client's work.
    pub fn build(self) -> Result<Client, BuildError> {
        let surface = self.settings.surface;
        #[cfg(feature = "redis")]
        let redis = match self.redis {
            Some(config) => Some((config, self.settings.quota_scope()?)),
            None => None,
        };
        let roots = self.settings.ca_certificates.clone();
        let mut config = self.settings.into_config()?;
        #[cfg(feature = "redis")]
        let quota_store = match redis {
            Some((store, (tenant, app))) => {
                let store = defender_redis::RedisQuotaStore::open(store).map_err(|e| {
                    BuildError::QuotaStore {
                        message: e.to_string(),
                    }
                })?;
                let binding =
                    defender_redis::Binding::new(tenant, app, config.limits.clone(), config.margin);
                Some(Arc::new(defender_redis::SharedQuota::new(store, binding))
                    as Arc<dyn QuotaStore>)
            }
            None => self.quota_store,
        };
        #[cfg(not(feature = "redis"))]
        let quota_store = self.quota_store;
        if quota_store.is_some() {
            config.quota = QuotaMode::Shared;
        }
        let limits = config.limits.clone();
        let scope = config.endpoints.scope.clone();
        let policy = self
            .policy
            .unwrap_or_else(|| Box::new(StandardPolicy::standard()));
        let engine = defender_core::Engine::new(config, policy, Instant::now())?;
        let shared = driver::Shared::new(driver::Parts {
            engine,
            agent: match self.agent {
                Some(agent) => agent,
                None if roots.is_empty() => default_agent(),
                None => agent_trusting(&roots)?,
            },
            provider: self.token_provider,
            scope,
            max_body: self.max_body_bytes,
            progress: self.progress,
            store: quota_store,
        });
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                surface,
                limits,
            }),
        })
    }
}

/// The agent the client uses unless given one: statuses are not errors, no redirects
/// (a redirect must not carry the token elsewhere), timeouts set per request, IP
/// addresses used without a lookup.
pub fn default_agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("defender-rs/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        http::LiteralResolver::default(),
    )
}

/// [`default_agent`] trusting exactly the root certificates in `roots` (PEM): ureq takes
/// either its own roots or given ones, so with `ca_certificate` the blocking client trusts
/// only what it was given (an emulator's certificate, a TLS-inspecting proxy's root).
fn agent_trusting(roots: &[Vec<u8>]) -> Result<ureq::Agent, BuildError> {
    let mut certs = Vec::new();
    for pem in roots {
        for cert in ureq::tls::parse_pem(pem) {
            if let ureq::tls::PemItem::Certificate(c) =
                cert.map_err(|e| BuildError::HttpClient {
                    message: format!("the extra root certificate does not parse: {e}"),
                })?
            {
                certs.push(c);
            }
        }
    }
    if certs.is_empty() {
        return Err(BuildError::HttpClient {
            message: "the extra root certificate PEM holds no certificate".into(),
        });
    }
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("defender-rs/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls)
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        http::LiteralResolver::default(),
    ))
}

/// The range options a client's limits imply: their row cap and data window.
pub fn range_options(limits: &Limits) -> RangeOptions {
    RangeOptions::for_limits(limits)
}
