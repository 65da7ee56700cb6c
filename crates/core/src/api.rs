//! What a program using one of the clients names every day, re-exported whole by both
//! (`defender_async` and `defender_blocking` each `pub use` this module's items), so
//! that a client crate alone is enough for everyday work and both offer the same names.
//!
//! ```
//! // The same names from either client:
//! use defender_core::api::{IncidentQuery, Limits, Surface};
//! let q = IncidentQuery { top: Some(10), ..Default::default() };
//! assert_eq!(q.top, Some(10));
//! assert!(Limits::parse("2021").is_ok());
//! assert_eq!(Surface::DefenderXdr.name(), "xdr");
//! ```

pub use crate::alerts::{Alert, AlertId, AlertPage, AlertQuery, AlertUpdate};
pub use crate::credential::TokenSource;
pub use crate::engine::{
    Admission, AdmitId, GroupUsage, QuotaMode, QuotaOp, StoreTicket, StreamItem, UsageSource,
    WaitReason,
};
pub use crate::hunting::{HuntResult, HuntSummary};
pub use crate::incidents::{Incident, IncidentId, IncidentPage, IncidentQuery, IncidentUpdate};
pub use crate::range::{RangeError, RangeOptions, RangeProgress, Split, WindowRows};
pub use crate::{ApiGroup, CallLimit, Error, Limits, Surface};

/// Incremental sync: its state, options and batches, and a scheduled hunt's state.
pub mod sync {
    pub use crate::hunt_state::HuntState;
    pub use crate::sync::{StateError, SyncBatch, SyncOptions, SyncState};
}
