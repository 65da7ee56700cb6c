//! The decisions the engine asks for, as a trait: implement it to write your own policy.
//!
//! Ready-made policies (patient, fail-fast, full-jitter backoff with a retry budget) are
//! in the `defender-policy` crate. A policy is consulted, never trusted to keep time: it
//! receives what happened and returns a decision.

use std::fmt;
use std::time::Duration;

use crate::error::TransportErrorKind;
use crate::limits::ApiGroup;

/// What failed, for [`Policy::retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The API group of the call.
    pub group: ApiGroup,
    /// Attempts made so far, including the one that failed (1 for the first).
    pub attempt: u32,
    /// What went wrong.
    pub kind: FailureKind,
    /// The wait the server asked for, if it asked.
    pub server_wait: Option<Duration>,
    /// Time since the call was submitted.
    pub elapsed: Duration,
    /// Whether resending the failed request could not do a thing twice. False for an
    /// incident update (PATCH) whose request may have reached the server: the engine
    /// then never resends it as it is, but reads the incident back when the policy says
    /// to retry, and fails with `OutcomeUnknown` when it says stop.
    pub idempotent: bool,
}

/// The kinds of retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// HTTP 5xx or 408.
    Server(u16),
    /// HTTP 429.
    Throttled,
    /// The network failed.
    Transport(TransportErrorKind),
    /// The token endpoint failed (5xx or network).
    Token,
}

/// A retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retry after at least this long (the engine also honours the server's wait).
    After(Duration),
    /// Give up: the call fails with the error at hand.
    Stop,
}

/// What to do with a result that came back at the row cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Hand it out flagged `truncated` (and warn).
    #[default]
    Flag,
    /// Fail the call with [`crate::Error::Truncated`].
    Error,
}

/// The decisions the engine delegates.
pub trait Policy: Send + fmt::Debug {
    /// How long a call may wait for quota (or for a server-given retry time) before it
    /// fails at once with the retry time instead.
    fn max_wait(&self) -> Duration;

    /// Whether and when to retry a failed attempt.
    fn retry(&mut self, failure: &Failure) -> Retry;

    /// An attempt succeeded (refills a retry budget).
    fn on_success(&mut self) {}

    /// A call's deadline, measured from its submission; `None` for no deadline.
    fn deadline(&self, _group: ApiGroup) -> Option<Duration> {
        None
    }

    /// The timeout of one HTTP attempt ([`default_request_timeout`] unless overridden).
    fn request_timeout(&self, group: ApiGroup) -> Duration {
        default_request_timeout(group)
    }

    /// What to do with a result at the row cap.
    fn truncation(&self) -> Truncation {
        Truncation::Flag
    }

    /// With a shared quota store, every process that asked is told the same free instant;
    /// a small random delay added to a denial's `wait` spreads them, so that over many
    /// rounds each process gets its turn instead of the fastest one always winning
    /// (default: none).
    fn admission_jitter(&mut self, _wait: Duration) -> Duration {
        Duration::ZERO
    }
}

/// The default timeout of one HTTP attempt: 240 s for hunting (Defender for Endpoint
/// documents 200 s for one query, XDR "more than three minutes"), 60 s for the rest. The
/// one place this rule lives: every policy that does not override it uses this.
pub fn default_request_timeout(group: ApiGroup) -> Duration {
    match group {
        ApiGroup::Hunting => Duration::from_secs(240),
        ApiGroup::Incidents | ApiGroup::Alerts => Duration::from_secs(60),
    }
}
