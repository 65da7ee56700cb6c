//! # defender-async
//!
//! An async client for the Microsoft Defender APIs (Defender XDR, Defender for Endpoint,
//! Microsoft Graph security), on reqwest and tokio, that never sends a call the server
//! would refuse: every decision (quota, running-time budget, 429s, retries, tokens) is
//! made by the sans-IO engine of `defender-core`; this crate only moves bytes and sleeps.
//!
//! `Client` is a cheap `Clone` handle over one engine: many tasks share one client and
//! one quota. The engine sits behind a mutex held only for short sections; a call's own
//! future submits it, sends its request and reads its answer, so a call that needs no
//! waiting costs one HTTP exchange and two brief locks, with no hand-off between tasks
//! (and the engine's rule holds: after every input, its outputs are drained until it
//! says to wait). A call's future dropped before its request went out gives its quota
//! back.
//!
//! [`Client::hunt_stream`] hands a hunt's rows out while its body arrives, read by the
//! polling task only as fast as it takes them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use defender_async::Client;
//! use defender_core::Surface;
//!
//! let client = Client::builder()
//!     .surface(Surface::DefenderXdr)
//!     .from_env()                     // AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET
//!     .limits("xdr")?
//!     .build()?;
//! let result = client.hunt("DeviceProcessEvents | take 10").await?;
//! println!("{} rows, truncated: {}", result.rows.len(), result.truncated);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod driver;
mod http;
mod range;
mod shared;
mod stream;

#[cfg(feature = "azure-identity")]
mod azure;

#[cfg(feature = "azure-identity")]
pub use azure::AzureCredential;
pub use range::RangeHunt;
pub use shared::QuotaStore;
pub use stream::HuntStream;

/// The attribute that implements [`TokenProvider`] and [`QuotaStore`].
pub use async_trait::async_trait;
/// The everyday names, the same in both clients (see [`defender_core::api`]).
pub use defender_core::api::*;
/// The Redis store crate, with the `redis` feature.
#[cfg(feature = "redis")]
pub use defender_redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::Stream;

use defender_core::engine::{Call, Value};
use defender_core::hunting::HuntRequest;
use defender_core::policy::Policy;
use defender_core::settings::{BuildError, Settings};
use defender_core::sync::{SyncBatch, SyncOptions, SyncRun, SyncState, SyncStep};
use defender_core::token::{AccessToken, Secret};
use defender_policy::StandardPolicy;

/// A source of bearer tokens other than the client secret (a managed identity, a
/// certificate flow, a token broker). Return a token and its lifetime.
#[async_trait]
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    /// Fetches a token for `scope`.
    async fn token(&self, scope: &str) -> Result<(Secret, Duration), Error>;
}

pub use defender_core::dispatch::Progress;

/// A shared handle to one client: one engine, one quota, one token.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<driver::Shared>,
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

    /// Progress events (waits for quota) from now on.
    pub fn progress(&self) -> tokio::sync::broadcast::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// Runs a hunting query.
    pub async fn hunt(&self, query: impl Into<String>) -> Result<HuntResult, Error> {
        self.hunt_request(HuntRequest::new(query)).await
    }

    /// Runs a hunting query over a Graph `Timespan` (`P7D`, `start/end`). Only Graph takes
    /// one: elsewhere the call fails with `Error::Unsupported` and sends nothing (build the
    /// request with `HuntRequest::scoped` to put a time range into the query instead).
    pub async fn hunt_with_timespan(
        &self,
        query: impl Into<String>,
        timespan: &str,
    ) -> Result<HuntResult, Error> {
        self.hunt_request(HuntRequest::new(query).with_timespan(timespan))
            .await
    }

    /// Runs a hunting request.
    pub async fn hunt_request(&self, request: HuntRequest) -> Result<HuntResult, Error> {
        self.call(Call::Hunt(request)).await?.into_hunt()
    }

    /// Runs a hunting query and hands its rows out while the body arrives: a [`Stream`]
    /// of the schema first, then every row, each as soon as it is decoded, and the
    /// summary at the end ([`HuntStream::summary`]). The task that polls the stream
    /// performs the request at the first poll and reads the body only as fast as it takes
    /// the rows, so a result of any size takes one chunk and one row of memory. The body
    /// size limit ([`ClientBuilder::max_body_bytes`]) does not apply to it: the decoder
    /// bounds each element of the document instead. The request timeout bounds each read,
    /// not the whole body, so a slow consumer is not cut off. Dropping the stream early
    /// cancels the call.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use defender_async::{Client, StreamItem};
    /// use futures_util::StreamExt;
    ///
    /// let client = Client::builder().from_env().limits("xdr")?.build()?;
    /// let mut rows = client.hunt_stream("DeviceProcessEvents | where Timestamp > ago(1h)");
    /// while let Some(item) = rows.next().await {
    ///     match item? {
    ///         StreamItem::Schema(columns) => println!("{} columns", columns.len()),
    ///         StreamItem::Row(row) => println!("{:?}", row.get("FileName")),
    ///     }
    /// }
    /// if let Some(summary) = rows.summary() {
    ///     println!("{} rows in {:?}", summary.rows, summary.running_time);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn hunt_stream(&self, query: impl Into<String>) -> HuntStream {
        self.hunt_stream_request(HuntRequest::new(query))
    }

    /// [`Client::hunt_stream`] for a full request (with a Graph `Timespan`).
    pub fn hunt_stream_request(&self, request: HuntRequest) -> HuntStream {
        HuntStream::new(self.inner.clone(), request)
    }

    /// Runs `query` over `[from, to)` in windows, past the row cap: every row once, in
    /// time order, a window at a time (see [`defender_core::range`]). The row cap and the
    /// data window come from the client's limits; `options` can override the rest.
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

    /// Fetches a token now with the client's credential (a client secret or a
    /// [`credential`](ClientBuilder::credential)), outside the token cache: the source
    /// that gave it (in the `auto` chain, the entry picked), the token with its expiry,
    /// and the endpoints it was asked for. Costs no API quota; for `defender auth`.
    pub async fn check_credential(
        &self,
    ) -> Result<
        (
            defender_core::credential::TokenSource,
            defender_core::credential::Fetched,
            defender_core::surface::Endpoints,
        ),
        Error,
    > {
        self.inner.check_token().await
    }

    /// The source that gave the latest token ("certificate", "Azure CLI", …), when the
    /// client was built with a [`credential`](ClientBuilder::credential); `None` before
    /// the first token.
    pub fn token_source(&self) -> Option<&'static str> {
        self.inner.token_source()
    }

    /// Usage of every group's quota now, and its next free slot. With a [`QuotaStore`]
    /// the store is asked (every process's calls; [`GroupUsage::source`] says who
    /// counted), with this client's own calls in `active_calls`; from a store that does
    /// not report usage, only the client's own calls (and [`Error::QuotaStore`] when the
    /// store could not tell).
    pub async fn quota(&self) -> Result<Vec<GroupUsage>, Error> {
        self.inner.usage().await
    }

    /// Makes one call through the engine. This future sends the call's request itself
    /// once the engine admits it, so keep polling it (awaiting it does; to let a call run
    /// while the task does something else, spawn it). Dropping the future before it ends
    /// cancels the call: one not yet sent gives its quota back. A [`Call::HuntStream`]
    /// gives only its summary ([`Value::HuntStreamed`]; its rows are decoded and
    /// dropped): use [`Client::hunt_stream`] for the rows.
    pub async fn call(&self, call: Call) -> Result<Value, Error> {
        self.inner.call(call).await
    }

    /// Runs `future` on the client's runtime.
    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.spawn(future)
    }
}

/// A sync run ([`Incidents::sync`]).
#[derive(Debug)]
pub struct IncidentSync<'a> {
    client: &'a Client,
    run: SyncRun,
}

impl IncidentSync<'_> {
    /// The next batch; `None` when everything up to the run's start (less the lag) was
    /// handed out. An error ends the run; the batches before it stand.
    pub async fn next_batch(&mut self) -> Option<Result<SyncBatch, Error>> {
        loop {
            match self.run.poll() {
                SyncStep::Batch(batch) => return Some(Ok(batch)),
                SyncStep::Done => return None,
                SyncStep::Call(call) => {
                    let handled = match self.client.call(call).await {
                        Ok(value) => self.run.handle(value),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = handled {
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
    /// Every incident matching `query`, page after page, as a stream. An error ends the
    /// stream after the incidents already fetched were yielded.
    pub fn list(&self, query: IncidentQuery) -> impl Stream<Item = Result<Incident, Error>> + 'a {
        paged(self.client, Call::ListIncidents(query), |v| {
            v.into_incidents().map(|(page, next)| (page.value, next))
        })
    }

    /// One page, and the call for the next one (for callers that page themselves).
    pub async fn page(&self, call: Call) -> Result<(IncidentPage, Option<Call>), Error> {
        self.client.call(call).await?.into_incidents()
    }

    /// A sync run from `state`'s checkpoint: batches of the incidents created or updated
    /// since, that paging cannot skip (see [`defender_core::sync`]). Write each batch's
    /// incidents, flush them, then save its checkpoint: a crash repeats at most that
    /// batch, never loses one.
    ///
    /// ```no_run
    /// # async fn run(client: defender_async::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use defender_async::sync::{SyncOptions, SyncState};
    /// let mut state = SyncState::new(client.surface(), None, None);
    /// let mut run = client.incidents().sync(&state, SyncOptions::default())?;
    /// while let Some(batch) = run.next_batch().await {
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
        })
    }

    /// One incident; [`Error::NotFound`] when it does not exist.
    pub async fn get(&self, id: impl Into<IncidentId>) -> Result<Incident, Error> {
        self.client
            .call(Call::GetIncident(id.into()))
            .await?
            .into_incident()
    }

    /// Updates one incident and returns it as the server now has it.
    pub async fn update(
        &self,
        id: impl Into<IncidentId>,
        update: IncidentUpdate,
    ) -> Result<Incident, Error> {
        self.client
            .call(Call::UpdateIncident(id.into(), update))
            .await?
            .into_incident()
    }
}

/// Takes a page's value apart into its items and the next page's call.
type SplitPage<T> = fn(Value) -> Result<(Vec<T>, Option<Call>), Error>;

/// Every item of a listing, page after page, as a stream: `split` takes a page's value
/// apart into its items and the next page's call. An error ends the stream after the
/// items already fetched were yielded.
fn paged<'a, T: 'a>(
    client: &Client,
    first: Call,
    split: SplitPage<T>,
) -> impl Stream<Item = Result<T, Error>> + 'a {
    let client = client.clone();
    let pages = futures_util::stream::unfold(Some(first), move |next| {
        let client = client.clone();
        async move {
            let call = next?;
            match client.call(call).await.and_then(split) {
                Ok((items, next)) => Some((Ok(items), next)),
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    futures_util::StreamExt::flat_map(pages, |page: Result<Vec<T>, Error>| match page {
        Ok(items) => futures_util::stream::iter(items.into_iter().map(Ok).collect::<Vec<_>>()),
        Err(e) => futures_util::stream::iter(vec![Err(e)]),
    })
}

/// The alerts API of a [`Client`]: Graph's `alerts_v2`, Defender's `/api/alerts`.
#[derive(Debug, Clone, Copy)]
pub struct Alerts<'a> {
    client: &'a Client,
}

impl<'a> Alerts<'a> {
    /// Every alert matching `query`, page after page, as a stream. An error ends the
    /// stream after the alerts already fetched were yielded.
    pub fn list(&self, query: AlertQuery) -> impl Stream<Item = Result<Alert, Error>> + 'a {
        paged(self.client, Call::ListAlerts(query), |v| {
            v.into_alerts().map(|(page, next)| (page.value, next))
        })
    }

    /// One page, and the call for the next one (for callers that page themselves).
    pub async fn page(&self, call: Call) -> Result<(AlertPage, Option<Call>), Error> {
        self.client.call(call).await?.into_alerts()
    }

    /// One alert; [`Error::NotFound`] when it does not exist.
    pub async fn get(&self, id: impl Into<AlertId>) -> Result<Alert, Error> {
        self.client
            .call(Call::GetAlert(id.into()))
            .await?
            .into_alert()
    }

    /// Updates one alert and returns it as the server now has it. Like an incident
    /// update, it is never resent blindly: see [`Error::OutcomeUnknown`].
    pub async fn update(
        &self,
        id: impl Into<AlertId>,
        update: AlertUpdate,
    ) -> Result<Alert, Error> {
        self.client
            .call(Call::UpdateAlert(id.into(), update))
            .await?
            .into_alert()
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    settings: Settings,
    policy: Option<Box<dyn Policy>>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    http: Option<reqwest::Client>,
    max_body_bytes: usize,
    store: Option<shared::StoreChoice>,
}

pub use defender_core::settings::DEFAULT_MAX_BODY_BYTES;

impl ClientBuilder {
    fn new() -> ClientBuilder {
        ClientBuilder {
            settings: Settings::new(Surface::DefenderXdr),
            policy: None,
            token_provider: None,
            http: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            store: None,
        }
    }

    defender_core::settings_setters!();

    /// Tokens from `provider` instead of the client secret.
    pub fn token_provider(mut self, provider: Arc<dyn TokenProvider>) -> Self {
        self.settings.external_tokens = true;
        self.token_provider = Some(provider);
        self
    }

    /// Uses this reqwest client (its proxy, TLS and pool settings).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The largest response body accepted (default 128 MiB); a larger one fails the call
    /// with a transport error of kind `BodyTooLarge`. Streamed hunts
    /// ([`Client::hunt_stream`]) are exempt: they never hold their body, and the decoder
    /// bounds each element of it.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Admits calls through `store`, a quota shared with other processes of the same app,
    /// instead of this client's own quota (see [`QuotaStore`]).
    pub fn quota_store(mut self, store: Arc<dyn QuotaStore>) -> Self {
        self.store = Some(shared::StoreChoice::Store(store));
        self
    }

    /// Admits calls through the quota shared on Redis by every process of this app
    /// (`defender-redis`): at [`build`](Self::build) the store is opened (it connects on
    /// first use) and bound to the tenant and client id with the final limits and margin.
    /// `build` fails with [`BuildError::SharedQuotaScope`] when the tenant or client id is
    /// unknown, and with [`BuildError::QuotaStore`] when the URL does not parse.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use defender_async::defender_redis::StoreConfig;
    ///
    /// let client = defender_async::Client::builder()
    ///     .from_env()
    ///     .limits("xdr")?
    ///     .redis_quota(StoreConfig::new("redis://127.0.0.1:6379"))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis_quota(mut self, config: defender_redis::StoreConfig) -> Self {
        self.store = Some(shared::StoreChoice::Redis(Box::new(config)));
        self
    }

    /// Builds the client and starts its timer task. Must be called inside a tokio
    /// runtime.
    pub fn build(self) -> Result<Client, BuildError> {
        let surface = self.settings.surface;
        // What names a shared quota, read before the settings turn into a config.
        let quota_scope = self.settings.quota_scope();
        let roots = self.settings.ca_certificates.clone();
        let mut config = self.settings.into_config()?;
        let store = match self.store {
            Some(choice) => {
                let store = choice.open(quota_scope, &config)?;
                config.quota = QuotaMode::Shared;
                Some(store)
            }
            None => None,
        };
        let limits = config.limits.clone();
        let http = match self.http {
            Some(h) => h,
            None => default_http(&roots)?,
        };
        let policy = self
            .policy
            .unwrap_or_else(|| Box::new(StandardPolicy::standard()));
        let scope = config.endpoints.scope.clone();
        let engine = defender_core::Engine::new(config, policy, Instant::now())?;
        let inner = driver::Shared::start(driver::Parts {
            engine,
            http,
            provider: self.token_provider,
            store,
            scope,
            max_body: self.max_body_bytes,
            surface,
            limits,
        });
        Ok(Client { inner })
    }
}

fn default_http(roots: &[Vec<u8>]) -> Result<reqwest::Client, BuildError> {
    // One crypto provider for the process: ring, as ureq uses, so both clients build
    // the same small dependency tree. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    for pem in roots {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| BuildError::HttpClient {
                message: format!("the extra root certificate does not parse: {e}"),
            })?;
        if certs.is_empty() {
            return Err(BuildError::HttpClient {
                message: "the extra root certificate PEM holds no certificate".into(),
            });
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .user_agent(concat!("defender-rs/", env!("CARGO_PKG_VERSION")))
        .https_only(false) // the engine refuses plain HTTP except to loopback
        .redirect(reqwest::redirect::Policy::none()) // a redirect must not carry the token elsewhere
        .build()
        .map_err(|e| BuildError::HttpClient {
            message: e.to_string(),
        })
}

/// Builds an [`AccessToken`] from a provider's answer (for tests of providers).
pub fn access_token(token: Secret, lifetime: Duration) -> AccessToken {
    let now = Instant::now();
    AccessToken::new(token, now, now + lifetime)
}

/// The range options a client's limits imply: their row cap and data window.
pub fn range_options(limits: &Limits) -> RangeOptions {
    RangeOptions::for_limits(limits)
}
