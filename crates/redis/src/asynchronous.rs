//! The tokio front-end.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use defender_core::limits::CallLimit;
use defender_core::quota::QuotaKey;
use redis::{RedisError, ScriptInvocation, Value};

use crate::connection::{AsyncConn, Target};

use crate::health::{is_outage, Common};
use crate::{
    scripts, AcquireRequest, Admission, StoreConfig, StoreError, Ticket, TicketInner, Usage,
};

/// The shared quota over one multiplexed async Redis connection.
///
/// Methods take `&self`: share one store (in an `Arc`) between tasks; their scripts are
/// pipelined on the one connection. The connection is opened on first use and reopened
/// after a failure (after the backoff).
#[derive(Debug)]
pub struct AsyncRedisQuotaStore {
    common: Common,
    target: Target,
    conn: Mutex<Option<AsyncConn>>,
    connecting: tokio::sync::Mutex<()>,
}

enum Failure {
    Outage(StoreError),
    Other(StoreError),
}

impl AsyncRedisQuotaStore {
    /// A store for `config`; connects on first use, so it opens even while Redis is down.
    pub fn open(config: StoreConfig) -> Result<AsyncRedisQuotaStore, StoreError> {
        let target = Target::open(&config)?;
        Ok(AsyncRedisQuotaStore {
            common: Common::new(config),
            target,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
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

    /// **For tests only**: see [`crate::RedisQuotaStore::set_now_override`].
    pub fn set_now_override(&self, now: Option<Duration>) {
        self.common.set_now_override(now);
    }

    fn current(&self) -> Option<AsyncConn> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn forget(&self) {
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    async fn connect(&self) -> Result<AsyncConn, RedisError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let cfg = &self.common.config;
        let mut conn = self.target.connect_async(cfg).await?;
        if let Some(name) = &cfg.client_name {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .query_async::<()>(&mut conn)
                .await?;
        }
        for script in scripts::all() {
            script.load_async(&mut conn).await?;
        }
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    async fn invoke(&self, inv: &ScriptInvocation<'_>) -> Result<Value, RedisError> {
        let mut conn = self.connect().await?;
        inv.invoke_async::<Value>(&mut conn).await
    }

    async fn run(&self, inv: &ScriptInvocation<'_>) -> Result<Value, Failure> {
        self.common.gate().map_err(Failure::Outage)?;
        let had_connection = self.current().is_some();
        let mut result = self.invoke(inv).await;
        if let Err(e) = &result {
            if is_outage(e) {
                self.forget();
                // See the blocking store: one fresh attempt after a dropped connection.
                if had_connection && e.is_connection_dropped() {
                    result = self.invoke(inv).await;
                }
            }
        }
        match result {
            Ok(v) => {
                self.common.succeeded();
                Ok(v)
            }
            Err(e) if is_outage(&e) => {
                self.forget();
                Err(Failure::Outage(self.common.failed(e)))
            }
            Err(e) => Err(Failure::Other(self.common.redis_error(e))),
        }
    }

    /// Checks every window of `request` for `key` and admits the call only if all allow.
    pub async fn acquire(
        &self,
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
        match self.run(&inv).await {
            Ok(v) => scripts::parse_acquire(v, ticket),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self
                .common
                .fallback(e, |local, now| local.acquire(key, request, now)),
        }
    }

    /// Gives back the slot (and reservation) of a call admitted but never sent.
    pub async fn release(&self, key: &QuotaKey, ticket: &Ticket) -> Result<(), StoreError> {
        let TicketInner::Redis {
            id, reserved_us, ..
        } = &ticket.inner
        else {
            self.common
                .with_local(|local, _| local.release(key, ticket));
            return Ok(());
        };
        let inv = scripts::release(&self.common.keys(key), id, *reserved_us);
        match self.run(&inv).await {
            Ok(_) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self.common.fallback(e, |_, _| ()),
        }
    }

    /// The call finished: releases its reservation and charges `actual` running time now.
    pub async fn complete(
        &self,
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
        match self.run(&inv).await {
            Ok(_) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self
                .common
                .fallback(e, |local, now| local.complete(key, ticket, actual, now)),
        }
    }

    /// Server feedback, shared with every process: see
    /// [`crate::RedisQuotaStore::feedback`].
    pub async fn feedback(
        &self,
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
        match self.run(&inv).await {
            Ok(_) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self.common.fallback(e, |_, _| ()),
        }
    }

    /// The usage of `key` under the windows of `request` (learned windows included).
    pub async fn usage(
        &self,
        key: &QuotaKey,
        request: &AcquireRequest<'_>,
    ) -> Result<Usage, StoreError> {
        let keys = self.common.keys(key);
        let lease = self.common.config.reservation_lease;
        let cap = self.common.config.wait_cap();
        let inv = scripts::usage(&keys, request, lease, cap, self.common.now_override());
        match self.run(&inv).await {
            Ok(v) => scripts::parse_usage(v),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::Outage(e)) => self
                .common
                .fallback(e, |local, now| local.usage(key, request, now)),
        }
    }

    /// One `PING` on the store's connection: how long it took. Never falls back.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.common.gate()?;
        let result = match self.connect().await {
            Ok(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                self.common.succeeded();
                Ok(start.elapsed())
            }
            Err(e) if is_outage(&e) => {
                self.forget();
                Err(self.common.failed(e))
            }
            Err(e) => Err(self.common.redis_error(e)),
        }
    }
}
