//! Typed errors: each says what went wrong and carries what a caller acts on.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::limits::{format_duration, ApiGroup};

/// The error envelope every surface uses: `{"error":{"code","message","target"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ApiError {
    /// The server's code, such as `BadRequest`, `NotFound`, `429` or `TooManyRequests`.
    #[serde(default)]
    pub code: String,
    /// The server's message, shown to the user as is.
    #[serde(default)]
    pub message: String,
    /// The server's target (often a correlation id or the tenant id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: ApiError,
}

impl ApiError {
    /// Reads the envelope from a response body; `None` when the body is not one.
    pub fn from_body(body: &[u8]) -> Option<ApiError> {
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .map(|e| e.error)
    }

    /// The JSON envelope for this error.
    pub fn to_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            error: &'a ApiError,
        }
        serde_json::to_vec(&Out { error: self }).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, "{}: {}", self.code, self.message),
            (true, false) => f.write_str(&self.message),
            (false, true) => f.write_str(&self.code),
            (true, true) => f.write_str("no error details"),
        }
    }
}

/// A failure below HTTP, as a transport reports it to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// The transport's description, without secrets.
    pub message: String,
}

impl TransportError {
    /// A transport error of `kind`.
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: message.into(),
        }
    }
}

/// The kinds of transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The connection could not be made.
    #[error("could not connect")]
    Connect,
    /// The request did not complete within its timeout.
    #[error("timed out")]
    Timeout,
    /// The connection was closed or reset before the response was complete.
    #[error("connection closed")]
    Closed,
    /// The response body was larger than the configured limit (not retried).
    #[error("response body too large")]
    BodyTooLarge,
    /// Anything else.
    #[error("transport failure")]
    Other,
}

/// Everything that can end a call without a value.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The quota for this group is spent and waiting would exceed the policy's `max_wait`.
    /// Nothing was sent.
    #[error("the {group} quota is spent ({limit}); retry in {} (the policy allows waiting {})", format_duration(*wait), format_duration(*max_wait))]
    QuotaWait {
        /// The API group.
        group: ApiGroup,
        /// The earliest instant the call would be admitted.
        retry_at: Instant,
        /// How long that is from when the decision was made.
        wait: Duration,
        /// The policy's maximum wait.
        max_wait: Duration,
        /// The limit that binds, in words.
        limit: String,
    },
    /// The server answered 429 and the policy would not wait for its retry time.
    #[error("the server throttled the {group} call: {message}; retry in {}", retry_after.map(format_duration).unwrap_or_else(|| "a while".into()))]
    Throttled {
        /// The API group.
        group: ApiGroup,
        /// The server's wait, when it gave one.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// The credentials were refused (401, or the token endpoint's refusal).
    #[error("authentication failed: {0}; check the tenant, client id and secret")]
    Auth(ApiError),
    /// The app lacks a permission for this call (403).
    #[error("permission denied: {0}; grant the app the API permission this call needs")]
    Forbidden(ApiError),
    /// The incident (or other resource) does not exist (404).
    #[error("not found: {0}")]
    NotFound(ApiError),
    /// The API rejected the request (400 and other 4xx): a KQL syntax error, a bad value.
    #[error("the API rejected the request ({status}): {error}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The server's error.
        error: ApiError,
    },
    /// The hunting result exceeded the service's result size (HTTP 400).
    #[error("the result is too large: {0}; narrow the query or split its time range")]
    ResultTooLarge(ApiError),
    /// The service stopped the query for using too much CPU or memory (HTTP 400, "Query
    /// execution has exceeded the allowed limits. The query execution was preempted…").
    /// Ranged hunts split the window, as for a result over the size cap.
    #[error("the query was preempted: {0}; narrow the query or split its time range")]
    Preempted(ApiError),
    /// The result hit the row cap and the policy treats truncation as an error.
    #[error("the result was truncated at the row cap of {cap} rows; split the time range")]
    Truncated {
        /// The cap.
        cap: u64,
    },
    /// The server failed (5xx or 408) and retries were spent, or it asked for a wait
    /// (`Retry-After`) longer than the policy's `max_wait`.
    #[error("the server failed with {status} after {attempts} attempts: {error}{}", retry_after.map(|d| format!("; it asked to retry in {}", format_duration(d))).unwrap_or_default())]
    Server {
        /// The last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The server's error, when the body had one.
        error: ApiError,
        /// The wait the server asked for (`Retry-After`, cut to the engine's
        /// `max_server_wait`), when it asked.
        retry_after: Option<Duration>,
    },
    /// The network failed and retries were spent.
    #[error("the network failed after {attempts} attempts: {error}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        error: TransportError,
    },
    /// A response did not decode.
    #[error("could not read the {what} response ({len} bytes): {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The body's length.
        len: usize,
        /// The decoder's message.
        message: String,
    },
    /// The call's deadline passed.
    #[error("the call's deadline of {} passed", format_duration(*deadline))]
    DeadlineExceeded {
        /// The deadline, measured from submission.
        deadline: Duration,
    },
    /// The surface has no such operation.
    #[error("{surface} has no {operation} API")]
    Unsupported {
        /// The surface.
        surface: crate::surface::Surface,
        /// The operation.
        operation: &'static str,
    },
    /// A URL that would send a token over plain HTTP to a non-loopback host.
    #[error("refusing to send credentials to `{url}`: use https (plain http only for loopback)")]
    InsecureUrl {
        /// The URL.
        url: String,
    },
    /// A next-page link pointed at another host than the API's.
    #[error("the next-page link points at another host ({url}); not following it")]
    ForeignLink {
        /// The link.
        url: String,
    },
    /// The call was cancelled by its caller.
    #[error("the call was cancelled")]
    Cancelled,
    /// The request could not be built (a bad id or value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The client's driver has stopped (the runtime shut down or the client was dropped).
    #[error("the client has shut down")]
    Shutdown,
    /// An incident update was sent, the answer was lost (a timeout, a reset, a 5xx, an
    /// unreadable body) and reading the incident back did not settle whether the change
    /// was applied. The engine did not send it again: read the incident, and send what is
    /// missing yourself.
    #[error("the update of incident {incident} may or may not have been applied ({cause}); it was not sent again: read the incident to check before resending ({update})")]
    OutcomeUnknown {
        /// The incident.
        incident: crate::incidents::IncidentId,
        /// What was sent.
        update: Box<crate::incidents::IncidentUpdate>,
        /// What ended the call: the failure of the update or of the read-back.
        cause: Box<Error>,
    },
    /// No token could be had from the token provider (it failed, panicked or did not
    /// answer in time).
    #[error("no access token: {message}; check the token provider")]
    TokenUnavailable {
        /// What went wrong.
        message: String,
    },
    /// Work a client ran on a thread or task of its own (a window of a ranged hunt)
    /// panicked: a bug in this library or in code it called. What that work held is lost;
    /// the hunt it belonged to is over.
    #[error("the {what} panicked ({message}); this is a bug, please report it")]
    Panicked {
        /// What panicked, e.g. "window of a ranged hunt".
        what: &'static str,
        /// The panic's message, when it was a string.
        message: String,
    },
    /// The shared quota store could not decide whether the call may go (Redis
    /// unreachable, or it refused the script). Nothing was sent.
    #[error("the shared quota store could not admit the call: {message}")]
    QuotaStore {
        /// The store's error, without credentials.
        message: String,
    },
}

impl Error {
    /// [`Error::Panicked`] from what a caught panic carried.
    pub fn panicked(what: &'static str, payload: &(dyn std::any::Any + Send)) -> Error {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Error::Panicked { what, message }
    }

    /// The HTTP status behind this error, where there is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Throttled { .. } => Some(429),
            Error::Auth(_) => Some(401),
            Error::Forbidden(_) => Some(403),
            Error::NotFound(_) => Some(404),
            Error::Rejected { status, .. } | Error::Server { status, .. } => Some(*status),
            Error::ResultTooLarge(_) | Error::Preempted(_) => Some(400),
            _ => None,
        }
    }
}
