//! The quota shared by several processes: with a [`QuotaStore`] the engine runs in
//! `QuotaMode::Shared` and asks the store, through `Output::Quota`, whether each call may
//! go; this client only performs those operations and hands the answers back.

use defender_core::engine::{Admission, AdmitId, GroupUsage, QuotaOp};

/// A quota shared by several processes (see `defender-redis`, and
/// `ClientBuilder::redis_quota` with the `redis`
/// feature).
///
/// Microsoft counts calls and hunting running time per app and tenant, so every worker of
/// one app shares one budget. Give each client the same store (or stores over the same
/// backend) with [`ClientBuilder::quota_store`](crate::ClientBuilder::quota_store): the
/// client's engine then admits no call on its own but asks the store, which must check
/// every call window (and, for hunting, the running-time budget with the estimate
/// reserved) and commit the call atomically.
///
/// Operations are blocking IO: the client performs them on the threads that make calls,
/// never while holding the engine, and a thread with its own request to send hands them
/// to a waiting thread first. A panic in `perform` fails the call it admitted with
/// [`Error::QuotaStore`](defender_core::Error::QuotaStore).
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::{Arc, Mutex};
/// use std::time::Instant;
/// use defender_blocking::{AdmitId, Admission, Client, QuotaOp, QuotaStore, StoreTicket};
/// use defender_core::engine::WaitReason;
/// use defender_core::quota::{Quota, Ticket};
/// use defender_core::{ApiGroup, Limits};
///
/// /// One quota per group, shared by every client of this process.
/// #[derive(Debug)]
/// struct InProcess(Mutex<BTreeMap<ApiGroup, Quota>>);
///
/// impl QuotaStore for InProcess {
///     fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
///         let mut quotas = self.0.lock().unwrap();
///         let now = Instant::now();
///         match op {
///             QuotaOp::Acquire { id, group, .. } => {
///                 let answer = match quotas.get_mut(&group)?.try_acquire(now) {
///                     Ok(ticket) => Admission::Admitted(StoreTicket::new(ticket)),
///                     Err(denied) => Admission::Denied {
///                         retry_after: Some(denied.retry_at.saturating_duration_since(now)),
///                         reason: denied.limit.map_or(WaitReason::ServerRetryTime, WaitReason::Calls),
///                     },
///                 };
///                 Some((id, answer))
///             }
///             QuotaOp::Release { group, ticket } => {
///                 let ticket = ticket.into_inner::<Ticket>()?;
///                 quotas.get_mut(&group)?.release(ticket);
///                 None
///             }
///             // Completions, and the server's feedback, are not kept by this store.
///             _ => None,
///         }
///     }
/// }
///
/// let limits = Limits::parse("xdr")?;
/// let margin = std::time::Duration::from_millis(500);
/// let store = Arc::new(InProcess(Mutex::new(
///     ApiGroup::ALL
///         .into_iter()
///         .map(|g| (g, Quota::new(&limits.group(g).calls, margin)))
///         .collect(),
/// )));
/// // Two clients, one budget.
/// let clients = (0..2)
///     .map(|_| {
///         Client::builder()
///             .tenant("contoso")
///             .client_id("app")
///             .client_secret("secret")
///             .limits_value(limits.clone())
///             .quota_store(store.clone())
///             .build()
///     })
///     .collect::<Result<Vec<_>, _>>()?;
/// # drop(clients);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait QuotaStore: Send + Sync + std::fmt::Debug {
    /// Performs one operation; an Acquire returns the answer for the engine, the others
    /// None.
    fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)>;

    /// Usage of every group as the store counts it, for [`Client::quota`](crate::Client::quota);
    /// `Err` says why the store could not tell. `None` (the default): this store does
    /// not report usage, and `quota()` shows only the client's own calls.
    fn usage(&self) -> Option<Result<Vec<GroupUsage>, String>> {
        None
    }
}

#[cfg(feature = "redis")]
impl QuotaStore for defender_redis::SharedQuota {
    fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        defender_redis::SharedQuota::perform(self, op)
    }

    fn usage(&self) -> Option<Result<Vec<GroupUsage>, String>> {
        Some(defender_redis::SharedQuota::usage(self).map_err(|e| e.to_string()))
    }
}
