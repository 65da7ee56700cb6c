//! A quota shared by several processes: the engine asks a [`QuotaStore`] whether a call
//! may go (see `defender_core::engine::QuotaMode::Shared`); this crate only carries the
//! question and the answer.

use std::sync::Arc;

use async_trait::async_trait;
use defender_core::engine::{Admission, AdmitId, GroupUsage, QuotaOp};

/// A quota shared by several processes (see `defender-redis`): every process of one app
/// registration asks the same store before it sends a call, so together they never
/// exceed what Microsoft allows the app.
///
/// With a store set ([`ClientBuilder::quota_store`](crate::ClientBuilder::quota_store),
/// or `ClientBuilder::redis_quota` with the `redis`
/// feature), the engine stops consulting its own windows and hands the store one
/// [`QuotaOp`] at a time:
///
/// - [`QuotaOp::Acquire`]: may a call of this group go now? Answer
///   [`Admission::Admitted`] with a ticket of your own, [`Admission::Denied`] with the
///   wait, or [`Admission::Unavailable`] when the store cannot decide (the call then fails
///   with [`Error::QuotaStore`](crate::Error::QuotaStore) and nothing is sent).
/// - [`QuotaOp::Release`], [`QuotaOp::Complete`], [`QuotaOp::Feedback`]: an admitted call
///   was not sent, a hunting call ran for so long, the server answered 429. Perform them
///   and return `None`.
///
/// Operations run in tasks of their own, never inside the client's bookkeeping: a slow
/// store delays the calls waiting for it, not the others.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Instant;
/// use defender_async::{async_trait, Admission, AdmitId, QuotaOp, QuotaStore, StoreTicket};
/// use defender_core::engine::WaitReason;
/// use defender_core::quota::{Quota, Ticket};
///
/// /// One process's store over the engine's own quota, for illustration: 20 calls a
/// /// second for every group.
/// #[derive(Debug)]
/// struct InMemory(Mutex<Quota>);
///
/// #[async_trait]
/// impl QuotaStore for InMemory {
///     async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
///         let mut quota = self.0.lock().unwrap();
///         let now = Instant::now();
///         match op {
///             QuotaOp::Acquire { id, .. } => Some((
///                 id,
///                 match quota.try_acquire(now) {
///                     Ok(ticket) => Admission::Admitted(StoreTicket::new(ticket)),
///                     Err(denied) => Admission::Denied {
///                         retry_after: Some(denied.retry_at.saturating_duration_since(now)),
///                         reason: denied.limit.map_or(WaitReason::ServerRetryTime, WaitReason::Calls),
///                     },
///                 },
///             )),
///             QuotaOp::Release { ticket, .. } => {
///                 if let Some(t) = ticket.into_inner::<Ticket>() {
///                     quota.release(t);
///                 }
///                 None
///             }
///             _ => None,
///         }
///     }
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = defender_core::CallLimit { max: 20, per: std::time::Duration::from_secs(1) };
/// let store = Arc::new(InMemory(Mutex::new(Quota::new(&[limit], Default::default()))));
/// let client = defender_async::Client::builder()
///     .from_env()
///     .quota_store(store)
///     .build()?;
/// # let _ = client; Ok(()) }
/// ```
#[async_trait]
pub trait QuotaStore: Send + Sync + std::fmt::Debug {
    /// Performs one operation; an Acquire returns the answer for the engine, the others None.
    async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)>;

    /// Usage of every group as the store counts it, for [`Client::quota`](crate::Client::quota);
    /// `Err` says why the store could not tell. `None` (the default): this store does
    /// not report usage, and `quota()` shows only the client's own calls.
    async fn usage(&self) -> Option<Result<Vec<GroupUsage>, String>> {
        None
    }
}

#[async_trait]
impl<T: QuotaStore + ?Sized> QuotaStore for Arc<T> {
    async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        (**self).perform(op).await
    }

    async fn usage(&self) -> Option<Result<Vec<GroupUsage>, String>> {
        (**self).usage().await
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl QuotaStore for defender_redis::AsyncSharedQuota {
    async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        defender_redis::AsyncSharedQuota::perform(self, op).await
    }

    async fn usage(&self) -> Option<Result<Vec<GroupUsage>, String>> {
        Some(
            defender_redis::AsyncSharedQuota::usage(self)
                .await
                .map_err(|e| e.to_string()),
        )
    }
}

/// The store a builder was given.
#[derive(Debug)]
pub(crate) enum StoreChoice {
    /// A store of the caller's.
    Store(Arc<dyn QuotaStore>),
    /// Redis, opened and bound at `build()`.
    #[cfg(feature = "redis")]
    Redis(Box<defender_redis::StoreConfig>),
}

impl StoreChoice {
    /// The store (Redis: opened and bound to the app `scope` names, with the final limits
    /// and margin of `config`).
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) fn open(
        self,
        scope: Result<(String, String), defender_core::settings::BuildError>,
        config: &defender_core::engine::Config,
    ) -> Result<Arc<dyn QuotaStore>, defender_core::settings::BuildError> {
        match self {
            StoreChoice::Store(s) => Ok(s),
            #[cfg(feature = "redis")]
            StoreChoice::Redis(store_config) => {
                let (tenant, app) = scope?;
                let store =
                    defender_redis::AsyncRedisQuotaStore::open(*store_config).map_err(|e| {
                        defender_core::settings::BuildError::QuotaStore {
                            message: e.to_string(),
                        }
                    })?;
                let binding =
                    defender_redis::Binding::new(tenant, app, config.limits.clone(), config.margin);
                Ok(Arc::new(defender_redis::AsyncSharedQuota::new(
                    store, binding,
                )))
            }
        }
    }
}
