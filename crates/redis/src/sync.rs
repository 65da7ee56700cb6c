//! The blocking front-end.

use std::time::{Duration, Instant};

use defender_core::limits::CallLimit;
use defender_core::quota::QuotaKey;
use redis::{ScriptInvocation, Value};

use crate::connection::{SyncConn, Target};

use crate::health::{is_outage, Common};
use crate::{
    scripts, AcquireRequest, Admission, StoreConfig, StoreError, Ticket, TicketInner, Usage,
};

/// The shared quota over a blocking Redis connection.
///
/// One connection, opened on first use and reopened after a failure (after the
/// backoff). Methods take `&mut self`: give each thread its own store, or wrap one in a
/// `Mutex`.
pub struct RedisQuotaStore {
    common: Common,
    target: Target,
    conn: Option<SyncConn>,
}

impl std::fmt::Debug for RedisQuotaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuotaStore")
            .field("common", &self.common)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

enum Failure {
    /// Redis unreachable: fall back or fail per the configuration.
    Outage(StoreError),
    /// Any other error: returned as is.
    Other(StoreError),
}

impl RedisQuotaStore {
    /// A store for `config`; connects on first use, so it opens even while Redis is down.
    pub fn open(config: StoreConfig) -> Result<RedisQuotaStore, StoreError> {
        let target = Target::open(&config)?;
        Ok(RedisQuotaStore {
            common: Common::new(config),
            target,
            conn: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.common.config
    }

    /// The keys of `key`.
    pub fn keys(&self, key: &QuotaKey) -> crate::KeyLayout {
        self.common.keys(key)
    }

    /// **For tests only**: every script uses `now` (since the Unix epoch, microsecond
    /// resolution) instead of Redis `TIME`, and the local fallback counts from it too.
    /// `None` returns to Redis `TIME`.
    pub fn set_now_override(&self, now: Option<Duration>) {
        self.common.set_now_override(now);
    }

    fn connect(&mut self) -> Result<&mut dyn redis::ConnectionLike, redis::RedisError> {
        if self.conn.is_none() {
            let cfg = &self.common.config;
            let mut conn = self.target.connect(cfg)?;
            if let Some(name) = &cfg.client_name {
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(name)
                    .query::<()>(conn.as_dyn())?;
            }
            for script in scripts::all() {
                script.load(conn.as_dyn())?;
            }
            self.conn = Some(conn);
        }
        // Just set if it was empty.
        self.conn.as_mut().map(SyncConn::as_dyn).ok_or_else(|| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected))
        })
    }

    fn run(&mut self, inv: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        self.common.gate().map_err(Failure::Outage)?;
        let had_connection = self.conn.is_some();
        let mut result = self.connect().and_then(|c| inv.invoke::<Value>(c));
        if let Err(e) = &result {
            if is_outage(e) {
                self.conn = None;
                // A connection dropped under us (a Redis restart, an idle timeout): one
                // fresh attempt. Every script is safe to repeat (an acquire may then hold
                // one extra slot until its window passes, never admit one too many).
                if had_connection && e.is_connection_dropped() {
                    result = self.connect().and_then(|c| inv.invoke::<Value>(c));
                }
            }
        }
        match result {
            Ok(v) => {
                self.common.succeeded();
                Ok(v)
            }
            Err(e) if is_outage(&e) => {
                self.conn = None;
                Err(Failure::Outage(self.common.failed(e)))
            }
            Err(e) => Err(Failure::Other(self.common.redis_error(e))),
        }
    }

    /// Checks every window of `request` for `key` and admits the call only if all allow.
    pub fn acquire(
        &mut self,
        key: &QuotaKey,
        request: &AcquireRequest<'_>,
    ) -> Result<Admission, StoreError> {
        let keys = self.common.keys(key);
        let lease = self.common.config.reservation_lease;
        let ticket = self.common.next_ticket();
        let cap = self.common.config.wait_cap();
        let inv = scripts::acquire(
            &keys,
            &ticket,
            request,
            lease,
            cap,
            self.common.now_override(),
        );
        match self.run(&inv) {
            Ok(v) => scripts::parse_acquire(v, ticket),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self
                .common
                .fallback(e, |local, now| local.acquire(key, request, now)),
        }
    }

    /// Gives back the slot (and reservation) of a call admitted but never sent.
    pub fn release(&mut self, key: &QuotaKey, ticket: &Ticket) -> Result<(), StoreError> {
        let TicketInner::Redis {
            id, reserved_us, ..
        } = &ticket.inner
        else {
            self.common
                .with_local(|local, _| local.release(key, ticket));
            return Ok(());
        };
        let inv = scripts::release(&self.common.keys(key), id, *reserved_us);
        match self.run(&inv) {
            Ok(_) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            // The slot stays taken until its window passes: safe.
            Err(Failure::Outage(e)) => self.common.fallback(e, |_, _| ()),
        }
    }

    /// The call finished: releases its reservation and charges `actual` running time now.
    pub fn complete(
        &mut self,
        key: &QuotaKey,
        ticket: &Ticket,
        actual: Duration,
    ) -> Result<(), StoreError> {
        let TicketInner::Redis {
            id,
            reserved_us,
            ttl_ms,
            ..
        } = &ticket.inner
        else {
            self.common
                .with_local(|local, now| local.complete(key, ticket, actual, now));
            return Ok(());
        };
        let now = self.common.now_override();
        let inv = scripts::complete(
            &self.common.keys(key),
            id,
            *reserved_us,
            *ttl_ms,
            actual,
            now,
        );
        match self.run(&inv) {
            Ok(_) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self
                .common
                .fallback(e, |local, now| local.complete(key, ticket, actual, now)),
        }
    }

    /// Server feedback, shared with every process: `retry_after` blocks the key's calls
    /// (or, with `runtime_exhausted`, its hunting) until `TIME + retry_after` unless a
    /// later block exists; `runtime_exhausted` without a retry time blocks for
    /// [`StoreConfig::runtime_exhausted_default`]; `learned` ("maximum allowed N per T")
    /// lowers the window of that period, or adds one.
    pub fn feedback(
        &mut self,
        key: &QuotaKey,
        retry_after: Option<Duration>,
        learned: Option<CallLimit>,
        runtime_exhausted: bool,
    ) -> Result<(), StoreError> {
        self.common.with_local(|local, now| {
            local.feedback(key, retry_after, learned, runtime_exhausted, now)
        });
        let (retry_after, learned) =
            self.common
                .config
                .cap_feedback(retry_after, learned, runtime_exhausted);
        if retry_after.is_none() && learned.is_none() {
            return Ok(());
        }
        let now = self.common.now_override();
        let inv = scripts::feedback(
            &self.common.keys(key),
            retry_after,
            learned,
            runtime_exhausted,
            self.common.config.wait_cap(),
            now,
        );
        match self.run(&inv) {
            Ok(_) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self.common.fallback(e, |_, _| ()),
        }
    }

    /// The usage of `key` under the windows of `request` (learned windows included).
    pub fn usage(
        &mut self,
        key: &QuotaKey,
        request: &AcquireRequest<'_>,
    ) -> Result<Usage, StoreError> {
        let keys = self.common.keys(key);
        let lease = self.common.config.reservation_lease;
        let cap = self.common.config.wait_cap();
        let inv = scripts::usage(&keys, request, lease, cap, self.common.now_override());
        match self.run(&inv) {
            Ok(v) => scripts::parse_usage(v),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self
                .common
                .fallback(e, |local, now| local.usage(key, request, now)),
        }
    }

    /// One `PING` on the store's connection: how long it took (for health checks and
    /// benchmarks). Never falls back.
    pub fn ping(&mut self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.common.gate()?;
        let result = self
            .connect()
            .and_then(|c| redis::cmd("PING").query::<String>(c));
        match result {
            Ok(_) => {
                self.common.succeeded();
                Ok(start.elapsed())
            }
            Err(e) if is_outage(&e) => {
                self.conn = None;
                Err(self.common.failed(e))
            }
            Err(e) => Err(self.common.redis_error(e)),
        }
    }
}
