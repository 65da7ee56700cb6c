//! Typed errors: each says what went wrong and carries what a caller acts on.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{format_duration, ApiGroup};

/// The error envelope every surface uses.
///
/// Defender XDR and Defender for Endpoint send `{"error":{"code","message","target"}}`;
/// Graph sends `{"error":{"code","message","innerError":{"date","request-id",
/// "client-request-id"}}}`. Everything a support ticket needs is kept: the inner error
/// (with any field nobody documented), the target, and the request id of the response
/// headers ([`ApiError::from_response`]).
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
    /// What else the error carried: Graph's `innerError`, the response's request id
    /// header, fields nobody documented. Boxed, so that [`Error`] stays small.
    #[serde(flatten)]
    pub details: Box<ErrorDetails>,
}

/// The parts of an [`ApiError`] a support ticket needs besides its code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ErrorDetails {
    /// Graph's `innerError` (also read as `innererror`).
    #[serde(
        rename = "innerError",
        alias = "innererror",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inner_error: Option<InnerError>,
    /// The `request-id` (or `x-ms-request-id`) header of the response that carried the
    /// error; not part of the body.
    #[serde(skip)]
    pub header_request_id: Option<String>,
    /// Fields of the envelope nobody documented (`details`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Graph's `innerError`: what Microsoft support asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InnerError {
    /// `request-id`.
    #[serde(
        rename = "request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
    /// `client-request-id`.
    #[serde(
        rename = "client-request-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_request_id: Option<String>,
    /// `date`, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Every other field (`code`, `innerError`, ...), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct Envelope {
    error: ApiError,
}

/// The response headers that carry a request id, in the order they are preferred.
const REQUEST_ID_HEADERS: [&str; 2] = ["request-id", "x-ms-request-id"];

impl ApiError {
    /// An error with a code and a message and nothing else.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.into(),
            message: message.into(),
            ..ApiError::default()
        }
    }

    /// Reads the envelope from a response body; `None` when the body is not one.
    pub fn from_body(body: &[u8]) -> Option<ApiError> {
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .map(|e| e.error)
    }

    /// Reads the error of a response: the envelope when the body is one, else `status`
    /// as the code and the body's first 512 bytes as the message; and the request id of
    /// the `request-id` or `x-ms-request-id` header.
    pub fn from_response(status: u16, headers: &http::HeaderMap, body: &[u8]) -> ApiError {
        let mut error = ApiError::from_body(body).unwrap_or_else(|| {
            ApiError::new(
                status.to_string(),
                String::from_utf8_lossy(body.get(..512).unwrap_or(body)).trim(),
            )
        });
        error.details.header_request_id = REQUEST_ID_HEADERS
            .iter()
            .filter_map(|name| headers.get(*name)?.to_str().ok())
            .map(str::trim)
            .find(|v| !v.is_empty())
            .map(str::to_owned);
        error
    }

    /// The request id to quote to Microsoft support: the response header's, else the
    /// inner error's.
    pub fn request_id(&self) -> Option<&str> {
        let details = &self.details;
        details
            .header_request_id
            .as_deref()
            .or_else(|| details.inner_error.as_ref()?.request_id.as_deref())
            .filter(|id| !id.is_empty())
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
            (false, false) => write!(f, "{}: {}", self.code, self.message)?,
            (true, false) => f.write_str(&self.message)?,
            (false, true) => f.write_str(&self.code)?,
            (true, true) => f.write_str("no error details")?,
        }
        if let Some(id) = self.request_id() {
            write!(f, " (request id {id})")?;
        }
        Ok(())
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
    #[error("the {group} quota is spent ({reason}); retry in {} (the policy allows waiting {})", format_duration(*wait), format_duration(*max_wait))]
    QuotaWait {
        /// The API group.
        group: ApiGroup,
        /// The earliest instant the call would be admitted.
        retry_at: Instant,
        /// How long that is from when the decision was made.
        wait: Duration,
        /// The policy's maximum wait.
        max_wait: Duration,
        /// The limit that binds.
        reason: crate::engine::WaitReason,
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
    /// An update (of an incident or an alert) was sent, the answer was lost (a timeout, a
    /// reset, a 5xx, an unreadable body) and reading the record back did not settle
    /// whether the change was applied. The engine did not send it again: read the record,
    /// and send what is missing yourself.
    #[error("the update of {change} may or may not have been applied ({cause}); it was not sent again: read the {} to check before resending", change.kind())]
    OutcomeUnknown {
        /// What was sent: the incident or alert, and the update.
        change: Box<crate::change::Change>,
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
    /// A sync's state document cannot be used (see `sync::StateError`): another
    /// surface, tenant or app, another version, or not a state document.
    #[error(transparent)]
    SyncState(#[from] crate::sync::StateError),
    /// The engine ended a call with a value of another kind of call: a bug in this
    /// library, never the server's doing (a body that does not decode is
    /// [`Error::Decode`]).
    #[error("a bug in defender-rs, please report it: {message}")]
    Internal {
        /// What was expected and what came.
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
    /// How long to wait before trying again, for every "come back later" error: a
    /// quota wait past `max_wait` ([`Error::QuotaWait`]), a 429 the policy would not
    /// wait for ([`Error::Throttled`]) and a 5xx that asked for a wait
    /// ([`Error::Server`]); `None` for the rest (and for a 429 that named no time). The
    /// wait counts from when the error was made.
    ///
    /// ```
    /// use defender_core::{ApiGroup, Error};
    /// use std::time::Duration;
    /// let e = Error::Throttled {
    ///     group: ApiGroup::Hunting,
    ///     retry_after: Some(Duration::from_secs(42)),
    ///     message: "Rate limit is exceeded".into(),
    /// };
    /// assert_eq!(e.retry_after(), Some(Duration::from_secs(42)));
    /// assert_eq!(Error::Cancelled.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::QuotaWait { wait, .. } => Some(*wait),
            Error::Throttled { retry_after, .. } | Error::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// [`Error::retry_after`] as a wall-clock time, counted from `now` (when the error
    /// was made, or near it): what to print or store for a later run.
    pub fn retry_at(&self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        self.retry_after().map(|wait| now + wait)
    }

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

#[cfg(test)]
mod tests {

    /// Every "come back later" error says when, the rest say nothing, and the
    /// wall-clock time is the wait from the given instant.
    #[test]
    fn retry_after_covers_every_come_back_later_error() {
        let secs = std::time::Duration::from_secs;
        #[allow(clippy::disallowed_methods)] // one real instant to build the error with
        let at = std::time::Instant::now();
        let quota = Error::QuotaWait {
            group: ApiGroup::Hunting,
            retry_at: at + secs(90),
            wait: secs(90),
            max_wait: secs(60),
            reason: crate::engine::WaitReason::RuntimeHeld,
        };
        let server = |retry_after| Error::Server {
            status: 503,
            attempts: 3,
            error: ApiError::default(),
            retry_after,
        };
        let throttled = |retry_after| Error::Throttled {
            group: ApiGroup::Incidents,
            retry_after,
            message: "Rate limit is exceeded".into(),
        };
        assert_eq!(quota.retry_after(), Some(secs(90)));
        assert_eq!(throttled(Some(secs(7))).retry_after(), Some(secs(7)));
        assert_eq!(throttled(None).retry_after(), None);
        assert_eq!(server(Some(secs(30))).retry_after(), Some(secs(30)));
        assert_eq!(server(None).retry_after(), None);
        for other in [Error::Cancelled, Error::InvalidRequest("x".into())] {
            assert_eq!(other.retry_after(), None, "{other:?}");
        }
        let now = std::time::UNIX_EPOCH + secs(1_000);
        assert_eq!(quota.retry_at(now), Some(now + secs(90)));
        assert_eq!(Error::Cancelled.retry_at(now), None);
    }
    use super::*;

    #[test]
    fn graph_inner_error_is_kept_and_its_request_id_shown() {
        let body = br#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid.","innerError":{"date":"2026-11-30T08:00:00","request-id":"5c1a2f0e-0000-4000-8000-000000000001","client-request-id":"5c1a2f0e-0000-4000-8000-000000000002","code":"tokenExpired"}}}"#;
        let e = ApiError::from_body(body).unwrap();
        let inner = e.details.inner_error.as_ref().unwrap();
        assert_eq!(inner.date.as_deref(), Some("2026-11-30T08:00:00"));
        assert_eq!(
            inner.client_request_id.as_deref(),
            Some("5c1a2f0e-0000-4000-8000-000000000002")
        );
        assert_eq!(inner.extra["code"], "tokenExpired");
        assert_eq!(e.request_id(), Some("5c1a2f0e-0000-4000-8000-000000000001"));
        assert_eq!(
            e.to_string(),
            "InvalidAuthenticationToken: Access token has expired or is not yet valid. \
             (request id 5c1a2f0e-0000-4000-8000-000000000001)"
        );
        // Nothing lost: the envelope written back is the one read.
        let back: Value = serde_json::from_slice(&e.to_body()).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(body).unwrap());
    }

    #[test]
    fn defender_target_is_kept() {
        let body = br#"{"error":{"code":"BadRequest","message":"A recognition error occurred.. Fix syntax errors in your query.","target":"|1d25001e-48e8e09dbddde4f4."}}"#;
        let e = ApiError::from_body(body).unwrap();
        assert_eq!(e.target.as_deref(), Some("|1d25001e-48e8e09dbddde4f4."));
        assert_eq!(e.request_id(), None);
        assert!(!e.to_string().contains("request id"));
        let back: Value = serde_json::from_slice(&e.to_body()).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(body).unwrap());
    }

    #[test]
    fn the_header_request_id_is_taken_and_preferred() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-ms-request-id", "ms-1".parse().unwrap());
        let e = ApiError::from_response(502, &headers, b"<html>Bad Gateway</html>");
        assert_eq!(e.code, "502");
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        assert_eq!(e.request_id(), Some("ms-1"));
        assert_eq!(
            e.to_string(),
            "502: <html>Bad Gateway</html> (request id ms-1)"
        );
        // The header id stays out of the body.
        assert!(!String::from_utf8(e.to_body()).unwrap().contains("ms-1"));

        headers.insert("request-id", "graph-2".parse().unwrap());
        let body = br#"{"error":{"code":"NotFound","message":"gone","innerError":{"request-id":"inner-3"}}}"#;
        let e = ApiError::from_response(404, &headers, body);
        assert_eq!(e.request_id(), Some("graph-2"));
        assert_eq!(
            e.details.inner_error.unwrap().request_id.as_deref(),
            Some("inner-3")
        );
    }

    #[test]
    fn errors_print_the_request_id() {
        let mut e = ApiError::new("NotFound", "no incident 7");
        e.details.header_request_id = Some("abc".into());
        assert_eq!(
            Error::NotFound(e).to_string(),
            "not found: NotFound: no incident 7 (request id abc)"
        );
    }
}
