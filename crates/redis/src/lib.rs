//! # defender-redis
//!
//! The Defender API quota shared by many processes, on Redis. Microsoft counts calls per
//! application and tenant, and advanced-hunting running time (CPU) per tenant ("Each
//! tenant is allocated CPU resources"), so several workers of one app share one call
//! budget and every app of a tenant shares one running-time budget: this crate gives
//! them the semantics of
//! [`defender_core::quota::Quota`] (exact sliding windows, a safety margin, the server's
//! retry time, learned limits) and [`defender_core::runtime::RunningTime`] (running-time
//! windows with reservations for queries in flight), checked and committed atomically in
//! Redis, on Redis's clock. [`StoreConfig::runtime_scope`] = [`RuntimeScope::App`] gives
//! each app its own running-time budget instead.
//!
//! ```no_run
//! use defender_core::limits::{ApiGroup, Preset};
//! use defender_core::quota::QuotaKey;
//! use defender_redis::{AcquireRequest, Admission, OnRedisError, RedisQuotaStore, StoreConfig};
//! use std::time::Duration;
//!
//! let mut config = StoreConfig::new("redis://127.0.0.1:6379");
//! config.on_error = OnRedisError::FallBackToLocal;
//! let mut store = RedisQuotaStore::open(config)?;
//!
//! let limits = Preset::DefenderEndpoint.limits();
//! let key = QuotaKey::new("tenant-id", "app-id", ApiGroup::Hunting);
//! let request = AcquireRequest::group(&limits.hunting, Duration::from_millis(500))
//!     .estimate(Duration::from_secs(5));
//! match store.acquire(&key, &request)? {
//!     Admission::Admitted(ticket) => {
//!         // ... send the query; it reports 4.6 s of execution time ...
//!         store.complete(&key, &ticket, Duration::from_millis(4_600))?;
//!     }
//!     Admission::Denied(denied) => {
//!         println!("wait {:?}: {}", denied.retry_after, denied.reason);
//!     }
//! }
//! // A 429 said "maximum allowed 30 per 00:01:00. You can send requests again in 8 seconds":
//! store.feedback(
//!     &key,
//!     Some(Duration::from_secs(8)),
//!     Some(defender_core::CallLimit { max: 30, per: Duration::from_secs(60) }),
//!     false,
//! )?;
//! # Ok::<(), defender_redis::StoreError>(())
//! ```
//!
//! ## Operations
//!
//! Each operation is one Lua script, loaded once per connection with `SCRIPT LOAD` and run
//! with `EVALSHA` (loaded again on `NOSCRIPT`, e.g. after a Redis restart). A script reads
//! the server's `TIME`, so the hosts' clocks do not matter (Redis 7 replicates a script's
//! effects, so a script may read `TIME` before writing):
//!
//! - **acquire**: trims what has left the windows, then checks every call window (the
//!   configured ones and the learned ones), the key's retry time, and, for hunting, every
//!   running-time window (`charged + reserved < budget`) and the running-time block. It
//!   commits (the call into the window set, the estimate into the reservations) only if
//!   all allow, and otherwise returns the exact earliest wait, computed as the in-process
//!   quota does: for each full window, the `(live - max + 1)`-th oldest live call plus
//!   `per + margin`; for each spent running-time window, the first instant at which enough
//!   charges leave the window or reservations lapse; the latest of those and of the
//!   server's retry times.
//! - **release**: a call admitted but never sent gives its slot and reservation back.
//! - **complete**: releases the reservation and charges the actual running time now.
//! - **feedback**: the server's retry time (`blocked until = max(existing, TIME + retry
//!   after)`, for calls or for running time) and a learned limit ("maximum allowed N per
//!   T": kept when it is new for its period or tighter), shared with every process.
//!   Both are capped by [`StoreConfig::max_server_wait`] (default a day): see below.
//! - **usage**: per window, the calls counted and the next free slot; running time
//!   charged and reserved; the widest margin in use.
//!
//! ## Margins: the widest wins
//!
//! Each process widens every window by its own safety margin (fixed, or learned from the
//! round trips it sees: `defender_core::margin`), sent with each acquire. An admitted call
//! publishes it in the app's state hash, under the process's ticket prefix, with the
//! call's time. An acquire then widens each window by the widest margin a process
//! published while its calls may still lie in that window (its latest call less than
//! the window's period plus its margin ago). A call's place in the server's window is
//! off by its one-way latency, so one process on a bad link needs every window its calls
//! count in to be wider, whoever asks; the others come back to their own margin once its
//! calls have left the windows. A process that stops calling is forgotten after its
//! calls left the longest window. One `HSET` per admitted call, no round trip more.
//!
//! Reservations lapse after [`StoreConfig::reservation_lease`]: a process that dies with a
//! query in flight holds its reservation for at most that long. This is also what makes
//! every denial's wait finite (the in-process budget says "when a query completes").
//!
//! ## Key layout and its bound
//!
//! See [`KeyLayout`]: per `(tenant, app, group)` a sorted set of calls and a state hash;
//! per `(tenant, group)` (by default, see [`RuntimeScope`]) the running-time keys: a
//! sorted set of charges, one of reservations and a hash with the running-time block.
//! All keys of a tenant share one hash tag, `{prefix:tenant}`, so they are in one Redis
//! Cluster slot and every script, which touches an app's call keys and the tenant's
//! running-time keys together, stays in one slot. (Tagging the call keys per app and
//! the running-time keys per tenant would put one acquire's keys in two slots, which
//! Cluster refuses.) The cost: one tenant's keys are on one node. The ids are
//! normalised by [`QuotaKey::new`] (lower case,
//! GUIDs hyphenated without braces, no surrounding whitespace; so every spelling of one
//! app's ids names one budget), and every key gets a `PEXPIRE` of the longest window (plus margin)
//! after every write, so an idle key disappears by itself. The sorted set of calls is
//! trimmed to the longest window on every acquire and so never holds more than the
//! longest window's `max` entries (1,500 for 1,500 calls per hour; 36,000 for a day's
//! window at 1,500 per hour); reservations hold at most the calls admitted in one lease;
//! charges at most the hunting calls admitted in the longest running-time window.
//! Nothing secret is stored or logged: keys name the tenant and app ids only, and the
//! Redis URL is shown (in errors, logs and `Debug`) with its credentials replaced by
//! `***` (a password may hold `/`, `?`, `#` or even `@`: the user information runs to
//! the last `@`; `pass=` and `user=` query parameters are replaced too). An error of the
//! redis crate that quotes part of the credentials (its URL errors can quote the query)
//! is replaced by one of the same kind that says nothing more.
//!
//! ## What the server says cannot poison the shared quota
//!
//! One 429 reaches every process of the tenant through the store, so its words are
//! bounded: a wait longer than [`StoreConfig::max_server_wait`] (default one day, the
//! longest window Defender documents) is cut to it, and a learned limit whose period is
//! longer than it is ignored (the same cap, so the one rule is "nothing the server says
//! blocks for longer than `max_server_wait`"). A body such as "maximum allowed 1 per
//! 99999.00:00:00. You can send requests again in 99999.00:00:00." therefore blocks for a
//! day, then calls go at the configured limits again. The cap is applied in Rust before a
//! script runs, passed to every script, and applied by the scripts both to what they
//! write and to what they read: a longer block written by a process with another cap or
//! an older version is rewritten to end at most the cap after the first acquire that
//! sees it, and its longer learned limits are deleted. A script called without the cap
//! uses a day. The local fallback applies the same caps.
//!
//! ## When Redis is unreachable
//!
//! [`OnRedisError::Fail`] returns [`StoreError::Unavailable`];
//! [`OnRedisError::FallBackToLocal`] answers from an in-process `Quota` + `RunningTime`
//! (one `tracing::warn!` per outage; its running time is per (tenant, app) whatever the
//! [`RuntimeScope`], each process answering for itself). Either way the store stops trying for a short,
//! doubling backoff and reconnects by itself on the next call after it. A Redis restart
//! loses at most the current windows.
//!
//! ## TLS, Redis Cluster, failover
//!
//! [`StoreConfig::url`] takes `rediss://` (rustls with ring, the system's roots plus
//! [`StoreConfig::extra_ca`]; the server's name is checked, and the redis crate's
//! `#insecure` is not compiled in, so such a URL is refused) and
//! `redis+cluster://host:port[,host:port…]` (or `rediss+cluster://`) for a Redis
//! Cluster, run by the redis crate's cluster clients, which follow `MOVED` and `ASK`.
//! A password or access key comes from the URL or from [`StoreConfig::password`]
//! ([`StoreConfig::password_from_env`] reads `DEFENDER_QUOTA_STORE_PASSWORD`); it never
//! reaches `Debug`, errors or logs. A certificate that is not trusted is
//! [`StoreError::UntrustedCertificate`], not an outage: no fallback, no backoff, as
//! waiting will not fix it. Entra ID for Azure Cache for Redis is not supported yet (the
//! redis crate's `entra-id` feature would bring the Azure SDK; the project's own token
//! sources have not landed): use an access key.
//!
//! **Failover.** Replication is asynchronous: a promoted replica lacks the writes the
//! old primary acknowledged and had not sent yet, so the admissions of the replication
//! lag (and, with a forced takeover, those the old primary took before it learned of the
//! promotion) are forgotten, and each may let one extra call through in its windows;
//! learned limits and retry times written in that gap are relearned from the next 429.
//! Nothing else is lost. A call during the failover ends:
//! the cluster client follows redirects and retries a command at most 3 times, 20 to
//! 200 ms apart, each try bounded by [`StoreConfig::response_timeout`] (the async one
//! also bounds the whole at four response timeouts plus the waits); then the store
//! reports an outage (fail or fall back, as configured), backs off, and its next
//! connection asks the cluster which primary now serves the slot.
//! Valkey speaks the same protocol and runs the same scripts, but is not tested here.
//!
//! ## Testing hook: the clock override
//!
//! [`RedisQuotaStore::set_now_override`] passes a fixed "now" (microseconds) to every
//! script instead of Redis `TIME`, and to the local fallback. It exists so tests can drive
//! virtual time deterministically; production code never sets it.

#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use defender_core::limits::{CallLimit, GroupLimits, RuntimeLimit};

pub use defender_core::quota::QuotaKey;
pub use redis;

mod connection;
mod health;
mod keys;
mod local;
mod scripts;
mod shared;
mod sync;

#[cfg(feature = "async")]
mod asynchronous;

#[cfg(feature = "async")]
pub use asynchronous::AsyncRedisQuotaStore;
pub use connection::StorePassword;
pub use keys::{KeyLayout, RuntimeScope};
#[cfg(feature = "async")]
pub use shared::AsyncSharedQuota;
pub use shared::{Binding, SharedQuota};
pub use sync::RedisQuotaStore;

/// What an acquire checks: the call windows, the margin, and for advanced hunting the
/// running-time windows and the estimate to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireRequest<'a> {
    /// Every call window of the group; all are enforced at once.
    pub calls: &'a [CallLimit],
    /// Added to every window's length (call and running time), for network jitter.
    pub margin: Duration,
    /// Every running-time window (hunting); empty for other groups.
    pub runtime: &'a [RuntimeLimit],
    /// The running time reserved for the call while it is in flight (hunting).
    pub estimate: Duration,
}

impl<'a> AcquireRequest<'a> {
    /// A request checking only call windows.
    pub fn calls(calls: &'a [CallLimit], margin: Duration) -> Self {
        AcquireRequest {
            calls,
            margin,
            runtime: &[],
            estimate: Duration::ZERO,
        }
    }

    /// A request checking every call and running-time window of `limits`.
    pub fn group(limits: &'a GroupLimits, margin: Duration) -> Self {
        AcquireRequest {
            calls: &limits.calls,
            margin,
            runtime: &limits.runtime,
            estimate: Duration::ZERO,
        }
    }

    /// Widens every window by `margin` instead (a margin learned by the engine: see
    /// `defender_core::margin`).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Also checks these running-time windows.
    pub fn runtime(mut self, runtime: &'a [RuntimeLimit]) -> Self {
        self.runtime = runtime;
        self
    }

    /// Reserves `estimate` of running time while the call is in flight (only when the
    /// request has running-time windows).
    pub fn estimate(mut self, estimate: Duration) -> Self {
        self.estimate = estimate;
        self
    }
}

/// The answer to an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The call may go; hand the ticket back with `release` or `complete`.
    Admitted(Ticket),
    /// The call may not go yet.
    Denied(Denied),
}

impl Admission {
    /// Whether the call was admitted.
    pub fn is_admitted(&self) -> bool {
        matches!(self, Admission::Admitted(_))
    }

    /// The ticket, if admitted.
    pub fn ticket(self) -> Option<Ticket> {
        match self {
            Admission::Admitted(t) => Some(t),
            Admission::Denied(_) => None,
        }
    }

    /// The denial, if denied.
    pub fn denied(&self) -> Option<&Denied> {
        match self {
            Admission::Denied(d) => Some(d),
            Admission::Admitted(_) => None,
        }
    }
}

/// Proof of admission: identifies the call's entries so they can be released or
/// completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub(crate) inner: TicketInner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TicketInner {
    Redis {
        id: String,
        at_us: u64,
        reserved_us: u64,
        ttl_ms: u64,
    },
    Local {
        ticket: defender_core::quota::Ticket,
        reservation: Option<defender_core::runtime::Reservation>,
    },
}

impl Ticket {
    /// The call's member in the shared sets (`None` for a ticket of the local fallback).
    pub fn id(&self) -> Option<&str> {
        match &self.inner {
            TicketInner::Redis { id, .. } => Some(id),
            TicketInner::Local { .. } => None,
        }
    }

    /// When Redis admitted the call, since the Unix epoch (microseconds of Redis `TIME`);
    /// `None` for a ticket of the local fallback.
    pub fn admitted_at(&self) -> Option<Duration> {
        match &self.inner {
            TicketInner::Redis { at_us, .. } => Some(Duration::from_micros(*at_us)),
            TicketInner::Local { .. } => None,
        }
    }

    /// The running time reserved for the call.
    pub fn reserved(&self) -> Duration {
        match &self.inner {
            TicketInner::Redis { reserved_us, .. } => Duration::from_micros(*reserved_us),
            TicketInner::Local { reservation, .. } => {
                reservation.map_or(Duration::ZERO, |r| r.amount)
            }
        }
    }

    /// Whether the local fallback admitted the call (Redis was unreachable).
    pub fn is_local(&self) -> bool {
        matches!(self.inner, TicketInner::Local { .. })
    }
}

/// A denial: how long to wait, and what binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The exact earliest wait after which the call would be admitted, absent other
    /// calls (microsecond resolution).
    pub retry_after: Duration,
    /// What binds at that instant.
    pub reason: DenyReason,
}

/// What denied a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// A call window is full (a learned window included).
    CallWindow(CallLimit),
    /// The server said to retry later (a 429's retry time).
    RetryAfter,
    /// Running time charged (plus reservations) fills the budget of this window.
    RuntimeWindow(RuntimeLimit),
    /// Reservations of queries in flight hold this window's budget: `retry_after` is when
    /// they lapse; a completion may free it sooner.
    RuntimeInFlight(RuntimeLimit),
    /// The server said the running-time budget is spent.
    RuntimeExhausted,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::CallWindow(l) => write!(f, "the window of {l} is full"),
            DenyReason::RetryAfter => f.write_str("the server asked to retry later"),
            DenyReason::RuntimeWindow(l) => write!(f, "the budget of {l} is spent"),
            DenyReason::RuntimeInFlight(l) => {
                write!(f, "queries in flight hold the budget of {l}")
            }
            DenyReason::RuntimeExhausted => {
                f.write_str("the server said the running-time budget is spent")
            }
        }
    }
}

/// The usage of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Every call window enforced (learned ones included).
    pub calls: Vec<CallWindowUsage>,
    /// Every running-time window asked about.
    pub runtime: Vec<RuntimeWindowUsage>,
    /// Running time reserved by queries in flight.
    pub reserved: Duration,
    /// Queries in flight holding a reservation.
    pub in_flight: u32,
    /// How long the server's retry time still blocks calls.
    pub blocked_for: Duration,
    /// How long the server's "budget spent" still blocks hunting.
    pub runtime_blocked_for: Duration,
    /// Whether the answer came from the local fallback.
    pub local: bool,
    /// Calls in the longest call window by the [`StoreConfig::client_name`] of the
    /// process that made them, most calls first (processes without a name are
    /// not listed; empty from the local fallback).
    pub clients: Vec<(String, u32)>,
    /// The widest margin a window is widened by now: the one asked with, or a wider one
    /// another process of the app published while its calls still count (see the
    /// crate docs, "margins").
    pub margin: Duration,
}

/// The usage of one call window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallWindowUsage {
    /// The window.
    pub limit: CallLimit,
    /// Calls counted in it now.
    pub used: u32,
    /// How long until the window has a free slot (zero when it has one now).
    pub next_free_in: Duration,
}

/// The usage of one running-time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeWindowUsage {
    /// The window.
    pub limit: RuntimeLimit,
    /// Running time charged in it now.
    pub charged: Duration,
}

/// What to do when Redis is unreachable or too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisError {
    /// Return [`StoreError::Unavailable`].
    #[default]
    Fail,
    /// Answer from an in-process quota until Redis is back (each process then admits on
    /// its own share: see [`StoreConfig::fallback_share`]).
    FallBackToLocal,
}

/// How a store connects and behaves.
#[derive(Clone)]
pub struct StoreConfig {
    /// Where the store is:
    /// - one Redis: `redis://[user:password@]host:port[/db]`, or with TLS
    ///   `rediss://[user:password@]host:port[/db]` (Azure Cache for Redis:
    ///   `rediss://NAME.redis.cache.windows.net:6380`);
    /// - a Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port…]` (any
    ///   of its primaries; the client learns the rest), with TLS `rediss+cluster://…`.
    ///
    /// TLS checks the server's certificate against the system's roots and
    /// [`StoreConfig::extra_ca`], and its name against the URL's host.
    pub url: String,
    /// The password or access key, instead of the URL's (which then needs none): see
    /// [`StoreConfig::password_from_env`]. Never printed.
    pub password: Option<StorePassword>,
    /// A PEM file of one or more CA certificates trusted besides the system's roots, for
    /// a `rediss://` server whose certificate a private CA signed.
    pub extra_ca: Option<std::path::PathBuf>,
    /// The first part of every key (default `defender-quota`).
    pub prefix: String,
    /// What to do when Redis is unreachable (default [`OnRedisError::Fail`]).
    pub on_error: OnRedisError,
    /// How long a connection attempt may take (default 200 ms).
    pub connect_timeout: Duration,
    /// How long a reply may take (default 200 ms).
    pub response_timeout: Duration,
    /// How long to stop trying after a failure; doubles per failure in one outage up to
    /// 16 times this (default 250 ms).
    pub reconnect_backoff: Duration,
    /// How long a reservation of a query in flight lasts if never completed or released
    /// (default 10 minutes, the longest a hunting query runs).
    pub reservation_lease: Duration,
    /// How long "running-time budget spent" blocks hunting when the server gave no retry
    /// time (default 15 minutes, Defender XDR's quota cycle).
    pub runtime_exhausted_default: Duration,
    /// The local fallback admits `max / fallback_share` calls per window and
    /// `budget / fallback_share` running time (at least one call): set it to the number
    /// of processes sharing the quota (default 1).
    pub fallback_share: u32,
    /// The longest the server may block calls or hunting (default one day; zero is read
    /// as the default). A 429 that says to wait longer ("again in 99999.00:00:00") blocks
    /// for this long, and a learned limit whose period is longer ("maximum allowed 1 per
    /// 99999.00:00:00") is ignored, so nothing the server says can block the processes
    /// of a tenant for longer. The scripts apply it too, to what they write and to what
    /// they read: a block written by a process with another cap (or an older version)
    /// ends at most this long after this process first sees it, and a learned limit of
    /// a longer period is dropped. Processes sharing a quota should use one cap; where
    /// they differ, the smallest wins.
    pub max_server_wait: Duration,
    /// A name for the store's connections (`CLIENT SETNAME`; no spaces), so `CLIENT
    /// LIST` shows which worker holds which connection (default none).
    pub client_name: Option<String>,
    /// Who shares a running-time budget (default [`RuntimeScope::Tenant`]: every app of
    /// the tenant, as Microsoft allocates hunting CPU per tenant; [`RuntimeScope::App`]:
    /// each (tenant, app) alone). Call windows are always per (tenant, app). Processes
    /// sharing a quota must use one scope. See [`KeyLayout`].
    pub runtime_scope: RuntimeScope,
}

impl StoreConfig {
    /// The defaults, for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            password: None,
            extra_ca: None,
            prefix: "defender-quota".to_owned(),
            on_error: OnRedisError::Fail,
            connect_timeout: Duration::from_millis(200),
            response_timeout: Duration::from_millis(200),
            reconnect_backoff: Duration::from_millis(250),
            reservation_lease: Duration::from_secs(600),
            runtime_exhausted_default: Duration::from_secs(900),
            fallback_share: 1,
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            client_name: None,
            runtime_scope: RuntimeScope::Tenant,
        }
    }

    /// [`StoreConfig::password`] from the environment variable [`PASSWORD_ENV`]
    /// (`DEFENDER_QUOTA_STORE_PASSWORD`) when it is set and not empty; unchanged
    /// otherwise. Keeps an access key (which may hold `/`, `+` and `=`) out of the URL,
    /// and so out of process listings.
    pub fn password_from_env(mut self) -> StoreConfig {
        if let Some(pw) = std::env::var_os(PASSWORD_ENV) {
            if let Some(pw) = pw.to_str().filter(|p| !p.is_empty()) {
                self.password = Some(StorePassword::new(pw));
            }
        }
        self
    }

    /// The extra roots as the redis crate takes them: every root of the system and those
    /// of [`StoreConfig::extra_ca`] (the redis crate would use only the given ones).
    pub(crate) fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, StoreError> {
        let Some(path) = &self.extra_ca else {
            return Ok(None);
        };
        let fail = |reason: String| StoreError::Tls {
            url: self.redacted_url(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| {
            fail(format!(
                "the CA file {} could not be read ({e}); give a PEM file holding the \
                 certificate of the CA that signed the server's",
                path.display()
            ))
        })?;
        let text = String::from_utf8_lossy(&pem);
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(fail(format!(
                "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )));
        }
        let mut bundle = connection::system_roots_pem();
        bundle.push('\n');
        bundle.push_str(&text);
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(bundle.into_bytes()),
        }))
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// [`StoreConfig::max_server_wait`], zero read as the default.
    pub(crate) fn wait_cap(&self) -> Duration {
        if self.max_server_wait.is_zero() {
            DEFAULT_MAX_SERVER_WAIT
        } else {
            self.max_server_wait
        }
    }

    /// Server feedback as the store keeps it: see [`cap_feedback`].
    pub(crate) fn cap_feedback(
        &self,
        retry_after: Option<Duration>,
        learned: Option<CallLimit>,
        runtime_exhausted: bool,
    ) -> (Option<Duration>, Option<CallLimit>) {
        cap_feedback(
            self.wait_cap(),
            self.runtime_exhausted_default,
            retry_after,
            learned,
            runtime_exhausted,
        )
    }
}

/// Server feedback as the store keeps it (on Redis and in the local fallback alike): the
/// wait (`exhausted_default` when the running-time budget is spent without one) at most
/// `cap`, and a learned limit only when its period is at most `cap`.
pub(crate) fn cap_feedback(
    cap: Duration,
    exhausted_default: Duration,
    retry_after: Option<Duration>,
    learned: Option<CallLimit>,
    runtime_exhausted: bool,
) -> (Option<Duration>, Option<CallLimit>) {
    let retry_after = retry_after
        .or(runtime_exhausted.then_some(exhausted_default))
        .map(|d| d.min(cap));
    let learned = learned.filter(|l| l.max > 0 && !l.per.is_zero() && l.per <= cap);
    (retry_after, learned)
}

/// The environment variable [`StoreConfig::password_from_env`] reads: the password or
/// access key of the quota store.
pub const PASSWORD_ENV: &str = "DEFENDER_QUOTA_STORE_PASSWORD";

/// The default of [`StoreConfig::max_server_wait`]: one day. Defender's longest documented
/// windows are a day (running time per day); a wait longer than that is not a limit but a
/// malformed or hostile answer. The same as the engine's own cap.
pub const DEFAULT_MAX_SERVER_WAIT: Duration = defender_core::engine::DEFAULT_MAX_SERVER_WAIT;

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.redacted_url())
            .field("password", &self.password)
            .field("extra_ca", &self.extra_ca)
            .field("prefix", &self.prefix)
            .field("on_error", &self.on_error)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("reservation_lease", &self.reservation_lease)
            .field("runtime_exhausted_default", &self.runtime_exhausted_default)
            .field("fallback_share", &self.fallback_share)
            .field("max_server_wait", &self.max_server_wait)
            .field("client_name", &self.client_name)
            .field("runtime_scope", &self.runtime_scope)
            .finish()
    }
}

/// `url` with every credential replaced by `***`.
///
/// Lenient, because it also prints URLs that do not parse: a password may hold `/`, `?`,
/// `#`, `:` and even an unencoded `@`, so the user information runs from the scheme to
/// the *last* `@` (an `@` later in the path or query only hides more than needed); without
/// an `@`, an authority `user:rest` whose `rest` is no port is read as a password given
/// without a host; query parameters that carry credentials (`pass=`, `password=`,
/// `user=`, `username=`, as `redis+unix://` URLs use) are replaced too.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => redact_bare_password(rest),
    };
    format!("{scheme}{}", redact_query(&rest))
}

/// `user:secret` with no `@` and no host: the part after the colon, unless it is a port.
fn redact_bare_password(rest: &str) -> String {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // An IPv6 literal's colons are no password's.
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        0
    };
    match authority[host_end..].find(':') {
        Some(i) => {
            let colon = host_end + i;
            let port = &authority[colon + 1..];
            if port.bytes().all(|b| b.is_ascii_digit()) {
                rest.to_owned()
            } else {
                // The rest may hold more of the password ("user:pa/ss" with no host).
                format!("{}:***", &rest[..colon])
            }
        }
        None => rest.to_owned(),
    }
}

/// Credentials in query parameters (`?pass=…`), each value up to the next `&`.
fn redact_query(rest: &str) -> String {
    let Some(q) = rest.find('?') else {
        return rest.to_owned();
    };
    let mut out = rest[..=q].to_owned();
    for (i, pair) in rest[q + 1..].split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _))
                if ["pass", "password", "user", "username"]
                    .iter()
                    .any(|c| k.trim().eq_ignore_ascii_case(c)) =>
            {
                out.push_str(k);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

/// The credentials of `url` as [`redact`] finds them, for [`scrub`].
fn credentials(url: &str) -> Vec<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let mut found = Vec::new();
    let after = match rest.rfind('@') {
        Some(at) => {
            // The password: after the user name's colon (a user name alone may be one).
            let info = &rest[..at];
            found.push(info.split_once(':').map_or(info, |(_, pw)| pw));
            &rest[at + 1..]
        }
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            if let Some((_, secret)) = rest[..end].rsplit_once(':') {
                if !secret.bytes().all(|b| b.is_ascii_digit()) && !secret.ends_with(']') {
                    found.push(secret);
                }
            }
            rest
        }
    };
    if let Some((_, query)) = after.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if ["pass", "password", "user", "username"]
                    .iter()
                    .any(|c| k.trim().eq_ignore_ascii_case(c))
                {
                    found.push(v);
                }
            }
        }
    }
    found.retain(|s| !s.is_empty());
    found
}

/// `e`, or when its text quotes any part of `url`'s credentials (any three characters in
/// a row; the redis crate's URL errors may quote the URL), an error of the same kind
/// that says nothing more.
pub(crate) fn scrub(url: &str, e: redis::RedisError) -> redis::RedisError {
    credentials(url)
        .into_iter()
        .fold(e, |e, secret| scrub_secret(secret, e))
}

/// `e`, or when its text quotes any three characters in a row of `secret`, an error of
/// the same kind that says nothing more.
pub(crate) fn scrub_secret(secret: &str, e: redis::RedisError) -> redis::RedisError {
    let text = e.to_string();
    let starts: Vec<usize> = secret.char_indices().map(|(i, _)| i).collect();
    let leaks = if secret.is_empty() {
        false
    } else if starts.len() < 3 {
        text.contains(secret)
    } else {
        // Every run of three characters.
        (0..starts.len() - 2).any(|k| {
            let end = starts.get(k + 3).copied().unwrap_or(secret.len());
            text.contains(&secret[starts[k]..end])
        })
    };
    if leaks {
        redis::RedisError::from((
            e.kind(),
            "(the error's text is withheld: it quoted part of the credentials)",
        ))
    } else {
        e
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis could not be reached in time.
    #[error(
        "the shared quota store at {url} is unreachable ({source}); next attempt in {retry_in:?}. \
         Check that Redis is running and the URL is right, or set \
         OnRedisError::FallBackToLocal to admit from a per-process quota meanwhile"
    )]
    Unavailable {
        /// The Redis URL, without its password.
        url: String,
        /// When the store will try Redis again.
        retry_in: Duration,
        /// The last error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered with an error that is not an outage (a script error, a key of the
    /// wrong type under the prefix, a permission error).
    #[error(
        "Redis at {url} refused the quota script ({source}); check that the key prefix is \
         used only by this store and that the user may run EVALSHA and SCRIPT LOAD"
    )]
    Redis {
        /// The Redis URL, without its password.
        url: String,
        /// The error.
        #[source]
        source: redis::RedisError,
    },
    /// The TLS configuration is unusable (the CA file, or a CA for a URL without TLS).
    #[error("the TLS settings of the shared quota store at {url} are unusable: {reason}")]
    Tls {
        /// The Redis URL, without its password.
        url: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The server's TLS certificate was refused: not signed by a trusted root, or not
    /// for the URL's host name. Not an outage: retrying will not help.
    #[error(
        "the shared quota store at {url} presented a TLS certificate that is not trusted \
         ({source}); give the CA that signed it (--quota-store-ca PATH, or \
         StoreConfig::extra_ca) and check that the URL's host is a name the certificate holds"
    )]
    UntrustedCertificate {
        /// The Redis URL, without its password.
        url: String,
        /// The TLS error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis refused the password or access key (or needs one and got none).
    #[error(
        "Redis at {url} refused the credentials ({source}); give the password or access key \
         in the URL (redis[s]://:PASSWORD@host:port) or in DEFENDER_QUOTA_STORE_PASSWORD"
    )]
    Unauthorized {
        /// The Redis URL, without its password.
        url: String,
        /// The error (it never quotes the password).
        #[source]
        source: redis::RedisError,
    },
    /// A script returned something this version does not understand.
    #[error("unexpected reply from the quota script: {0}")]
    Reply(String),
    /// The URL did not parse.
    #[error("invalid Redis URL {url}: {source}")]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: redis::RedisError,
    },
}

/// Microseconds of `d`, capped at 2^52 (Lua numbers are doubles).
pub(crate) fn micros(d: Duration) -> u64 {
    d.as_micros().min(1u128 << 52) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            ("redis://user:secret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://host:6379", "redis://host:6379"),
            (
                "redis://host:6379/0?protocol=resp3",
                "redis://host:6379/0?protocol=resp3",
            ),
            ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
            ("redis://[::1]", "redis://[::1]"),
            ("redis://user:pa/ss@host:6379/0", "redis://***@host:6379/0"),
            ("redis://:a/b/c@host", "redis://***@host"),
            ("redis://u:p@s?s#w/d@host:1/2", "redis://***@host:1/2"),
            ("redis://u:p@ss@host/0?x=a@b", "redis://***@b"),
            ("redis://user:secret", "redis://user:***"),
            ("redis://user:se/cret", "redis://user:***"),
            ("user:secret@host", "***@host"),
            (
                "redis+unix:///tmp/r.sock?db=1&pass=secret&user=me",
                "redis+unix:///tmp/r.sock?db=1&pass=***&user=***",
            ),
            (
                "redis://host/0?PASSWORD=secret",
                "redis://host/0?PASSWORD=***",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
        }
        let c = StoreConfig::new("redis://:pw@h/1");
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn errors_quoting_credentials_are_scrubbed() {
        let url = "redis://user:6379?protocol=Kx7Wv@127.0.0.1:1";
        let e = redis::Client::open(url).unwrap_err();
        assert!(
            e.to_string().contains("Kx7Wv"),
            "the redis crate quotes it: {e}"
        );
        let e = scrub(url, e);
        assert!(!e.to_string().contains("Kx7"), "{e}");
        assert_eq!(e.kind(), redis::ErrorKind::InvalidClientConfig);
        let plain = redis::RedisError::from((redis::ErrorKind::Io, "connection refused"));
        assert_eq!(scrub(url, plain).to_string(), "connection refused - Io");
    }
}
