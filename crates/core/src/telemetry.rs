//! What the clients tell an operator: metrics (through the [`metrics`] facade, with the
//! crate feature `metrics`; the application installs the exporter) and the attribute
//! names shared by metrics and tracing spans.
//!
//! Names follow OpenTelemetry's HTTP client conventions where they apply
//! ([`REQUEST_DURATION`] with [`METHOD`], [`STATUS`], [`SERVER`], [`ERROR_TYPE`]) and the
//! `defender.` prefix for the rest. Everything is recorded in one place, the
//! [`Dispatcher`](crate::dispatch::Dispatcher) both clients share, from the engine's own
//! inputs and events: a client adds nothing of its own, so the two cannot drift.
//!
//! | metric | kind | attributes | meaning |
//! |---|---|---|---|
//! | `http.client.request.duration` | histogram, s | method, status or `error.type`, server, group | one HTTP exchange, token requests included (`defender.api_group` = `token`); a streamed hunt's ends at its 2xx head |
//! | `defender.client.calls` | counter | group, outcome | calls ended: `ok`, or the error's kind (`quota_wait`, `throttled`, `abandoned`, …) |
//! | `defender.client.throttled` | counter | group, server | 429s received |
//! | `defender.client.quota.wait` | histogram, s | group, reason | each wait a call was told to make (for quota, or a server's retry time) |
//! | `defender.client.quota.used` / `.limit` | gauges | group, window | calls in each window and its limit (in-process quota; see [`record_usage`]) |
//! | `defender.client.runtime.used` / `.limit` | gauges, s | window | hunting running time charged in each window, and the budget |
//! | `defender.client.runtime.charged` | counter, ms | | running time charged to this client's hunts |
//! | `defender.client.calls.active` | gauge | group | calls waiting or in flight in this client |
//! | `defender.client.tokens` | counter | `defender.token.refresh` | access tokens fetched (`false`: the first, `true`: a refresh) |
//! | `defender.client.quota_store.fallbacks` | counter | group | admissions made by a Redis store's local fallback (`defender-redis`) |
//!
//! ```
//! use defender_core::telemetry;
//! // A dashboard query names the metric and the attributes exactly like this:
//! assert_eq!(telemetry::REQUEST_DURATION, "http.client.request.duration");
//! assert_eq!(telemetry::STATUS, "http.response.status_code");
//! assert_eq!(telemetry::outcome(&defender_core::Error::Cancelled), "cancelled");
//! ```

use crate::error::Error;

/// Histogram (seconds) of HTTP exchanges (OpenTelemetry's name).
pub const REQUEST_DURATION: &str = "http.client.request.duration";
/// Counter of calls ended, by [`GROUP`] and [`OUTCOME`].
pub const CALLS: &str = "defender.client.calls";
/// Counter of 429 answers received, by [`GROUP`] and [`SERVER`].
pub const THROTTLED: &str = "defender.client.throttled";
/// Histogram (seconds) of waits announced to calls, by [`GROUP`] and [`REASON`].
pub const QUOTA_WAIT: &str = "defender.client.quota.wait";
/// Gauge of calls admitted in a window, by [`GROUP`] and [`WINDOW`].
pub const QUOTA_USED: &str = "defender.client.quota.used";
/// Gauge of a window's limit, by [`GROUP`] and [`WINDOW`].
pub const QUOTA_LIMIT: &str = "defender.client.quota.limit";
/// Gauge (seconds) of hunting running time charged in a window, by [`WINDOW`].
pub const RUNTIME_USED: &str = "defender.client.runtime.used";
/// Gauge (seconds) of a running-time window's budget, by [`WINDOW`].
pub const RUNTIME_LIMIT: &str = "defender.client.runtime.limit";
/// Counter (milliseconds) of running time charged to this client's hunts.
pub const RUNTIME_CHARGED: &str = "defender.client.runtime.charged";
/// Gauge of this client's calls waiting or in flight, by [`GROUP`].
pub const ACTIVE_CALLS: &str = "defender.client.calls.active";
/// Counter of access tokens fetched, by [`TOKEN_REFRESH`].
pub const TOKENS: &str = "defender.client.tokens";
/// Counter of admissions a shared store's local fallback made (Redis unreachable).
pub const STORE_FALLBACKS: &str = "defender.client.quota_store.fallbacks";

/// Attribute: the request's method (OpenTelemetry).
pub const METHOD: &str = "http.request.method";
/// Attribute: the response's status code (OpenTelemetry).
pub const STATUS: &str = "http.response.status_code";
/// Attribute: the host the request went to (OpenTelemetry).
pub const SERVER: &str = "server.address";
/// Attribute: why an exchange has no response, a transport error's kind (OpenTelemetry).
pub const ERROR_TYPE: &str = "error.type";
/// Attribute: the API group (`hunting`, `incidents`, `alerts`; `token` for a token request).
pub const GROUP: &str = "defender.api_group";
/// Attribute: how a call ended (see [`outcome`]).
pub const OUTCOME: &str = "defender.outcome";
/// Attribute: why a call waits (see [`reason`]).
pub const REASON: &str = "defender.wait.reason";
/// Attribute: a window's length (`1m`, `1h`).
pub const WINDOW: &str = "defender.window";
/// Attribute: whether a token replaced an earlier one.
pub const TOKEN_REFRESH: &str = "defender.token.refresh";
/// Span attribute: the attempt of the call (1 for the first).
pub const ATTEMPT: &str = "defender.attempt";
/// Span attribute: rows handed out by a streamed hunt.
pub const ROWS: &str = "defender.rows";

/// The [`OUTCOME`] of a call that ended with `error`: its variant in snake case.
pub fn outcome(error: &Error) -> &'static str {
    match error {
        Error::QuotaWait { .. } => "quota_wait",
        Error::Throttled { .. } => "throttled",
        Error::Auth(_) => "auth",
        Error::Forbidden(_) => "forbidden",
        Error::NotFound(_) => "not_found",
        Error::Rejected { .. } => "rejected",
        Error::ResultTooLarge(_) => "result_too_large",
        Error::Preempted(_) => "preempted",
        Error::Truncated { .. } => "truncated",
        Error::Server { .. } => "server",
        Error::Transport { .. } => "transport",
        Error::Decode { .. } => "decode",
        Error::DeadlineExceeded { .. } => "deadline_exceeded",
        Error::Unsupported { .. } => "unsupported",
        Error::InsecureUrl { .. } => "insecure_url",
        Error::ForeignLink { .. } => "foreign_link",
        Error::Cancelled => "cancelled",
        Error::InvalidRequest(_) => "invalid_request",
        Error::Shutdown => "shutdown",
        Error::OutcomeUnknown { .. } => "outcome_unknown",
        Error::TokenUnavailable { .. } => "token_unavailable",
        Error::Panicked { .. } => "panicked",
        Error::SyncState(_) => "sync_state",
        Error::Internal { .. } => "internal",
        Error::QuotaStore { .. } => "quota_store",
    }
}

/// The [`REASON`] of a wait: `calls`, `runtime`, `runtime_held`, `runtime_exhausted`,
/// `server_retry_time`, `server_asked` or `store`.
pub fn reason(reason: &crate::engine::WaitReason) -> &'static str {
    use crate::engine::WaitReason as W;
    match reason {
        W::Calls(_) => "calls",
        W::Runtime(_) => "runtime",
        W::RuntimeHeld => "runtime_held",
        W::RuntimeExhausted => "runtime_exhausted",
        W::ServerRetryTime => "server_retry_time",
        W::ServerAsked(_) => "server_asked",
        W::Store(_) => "store",
    }
}

/// Sets the quota gauges ([`QUOTA_USED`], [`QUOTA_LIMIT`], [`RUNTIME_USED`],
/// [`RUNTIME_LIMIT`], [`ACTIVE_CALLS`]) from a usage report. The dispatcher does it after
/// every answer with the in-process quota; with a shared store the windows live in the
/// store, and a client's `quota()` (which asks the store) sets them. Without the feature
/// `metrics` it does nothing.
pub fn record_usage(usage: &[crate::engine::GroupUsage]) {
    #[cfg(feature = "metrics")]
    for u in usage {
        let group = u.group.as_str();
        for w in &u.windows {
            let window = crate::limits::format_duration(w.limit.per);
            metrics::gauge!(QUOTA_USED, GROUP => group, WINDOW => window.clone())
                .set(f64::from(w.used));
            metrics::gauge!(QUOTA_LIMIT, GROUP => group, WINDOW => window)
                .set(f64::from(w.limit.max));
        }
        for (limit, charged) in &u.runtime {
            let window = crate::limits::format_duration(limit.per);
            metrics::gauge!(RUNTIME_USED, WINDOW => window.clone()).set(charged.as_secs_f64());
            metrics::gauge!(RUNTIME_LIMIT, WINDOW => window).set(limit.budget.as_secs_f64());
        }
        metrics::gauge!(ACTIVE_CALLS, GROUP => group).set(u.active_calls as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = usage;
}

/// Counts one admission made by a shared store's local fallback ([`STORE_FALLBACKS`]).
/// Without the feature `metrics` it does nothing.
pub fn record_store_fallback(group: crate::limits::ApiGroup) {
    #[cfg(feature = "metrics")]
    metrics::counter!(STORE_FALLBACKS, GROUP => group.as_str()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = group;
}

/// What a metric is: its name, kind, unit and meaning, for exporters that publish
/// descriptions ([`describe`]) and for documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// `s`, `ms`, or empty for a count.
    pub unit: &'static str,
    /// What it measures, in one sentence.
    pub meaning: &'static str,
}

/// Every metric the clients record.
pub const METRICS: [Metric; 12] = [
    Metric {
        name: REQUEST_DURATION,
        kind: "histogram",
        unit: "s",
        meaning: "Duration of HTTP client requests.",
    },
    Metric {
        name: CALLS,
        kind: "counter",
        unit: "",
        meaning: "Calls ended, by group and outcome.",
    },
    Metric {
        name: THROTTLED,
        kind: "counter",
        unit: "",
        meaning: "HTTP 429 answers received.",
    },
    Metric {
        name: QUOTA_WAIT,
        kind: "histogram",
        unit: "s",
        meaning: "Waits announced to calls, for quota or a server's retry time.",
    },
    Metric {
        name: QUOTA_USED,
        kind: "gauge",
        unit: "",
        meaning: "Calls admitted in a quota window.",
    },
    Metric {
        name: QUOTA_LIMIT,
        kind: "gauge",
        unit: "",
        meaning: "A quota window's limit.",
    },
    Metric {
        name: RUNTIME_USED,
        kind: "gauge",
        unit: "s",
        meaning: "Hunting running time charged in a window.",
    },
    Metric {
        name: RUNTIME_LIMIT,
        kind: "gauge",
        unit: "s",
        meaning: "A running-time window's budget.",
    },
    Metric {
        name: RUNTIME_CHARGED,
        kind: "counter",
        unit: "ms",
        meaning: "Running time charged to this client's hunts.",
    },
    Metric {
        name: ACTIVE_CALLS,
        kind: "gauge",
        unit: "",
        meaning: "Calls waiting or in flight.",
    },
    Metric {
        name: TOKENS,
        kind: "counter",
        unit: "",
        meaning: "Access tokens fetched.",
    },
    Metric {
        name: STORE_FALLBACKS,
        kind: "counter",
        unit: "",
        meaning: "Admissions made by the shared store's local fallback.",
    },
];

/// Describes every metric of [`METRICS`] (unit and meaning) to the installed recorder,
/// for exporters that publish descriptions. Call it once after installing the recorder.
/// Without the feature `metrics` it does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    for m in METRICS {
        let unit = match m.unit {
            "s" => Some(metrics::Unit::Seconds),
            "ms" => Some(metrics::Unit::Milliseconds),
            _ => None,
        };
        metrics::with_recorder(|r| {
            let key = metrics::KeyName::from_const_str(m.name);
            let text = metrics::SharedString::const_str(m.meaning);
            match m.kind {
                "counter" => r.describe_counter(key, unit, text),
                "gauge" => r.describe_gauge(key, unit, text),
                _ => r.describe_histogram(key, unit, text),
            }
        });
    }
}

pub(crate) use recorder::{Probe, Recorder};

#[cfg(feature = "metrics")]
mod recorder {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::{CallId, Engine, Event, SendId, Transmit};
    use crate::error::TransportErrorKind;
    use crate::limits::ApiGroup;

    /// One HTTP exchange being timed.
    #[derive(Debug)]
    pub(crate) struct Probe {
        at: Instant,
        method: String,
        server: String,
        group: &'static str,
    }

    impl Probe {
        pub(crate) fn new(
            request: &http::Request<Vec<u8>>,
            group: &'static str,
            at: Instant,
        ) -> Probe {
            Probe {
                at,
                method: request.method().as_str().to_owned(),
                server: request.uri().host().unwrap_or_default().to_owned(),
                group,
            }
        }

        /// The exchange ended with a status, or without one (a transport error's kind).
        pub(crate) fn done(
            self,
            answer: Result<http::StatusCode, TransportErrorKind>,
            now: Instant,
        ) {
            let secs = now.saturating_duration_since(self.at).as_secs_f64();
            match answer {
                Ok(status) => {
                    if status == http::StatusCode::TOO_MANY_REQUESTS {
                        metrics::counter!(THROTTLED, GROUP => self.group, SERVER => self.server.clone())
                            .increment(1);
                    }
                    metrics::histogram!(REQUEST_DURATION,
                        METHOD => self.method, STATUS => status.as_str().to_owned(),
                        SERVER => self.server, GROUP => self.group)
                    .record(secs);
                }
                Err(kind) => metrics::histogram!(REQUEST_DURATION,
                    METHOD => self.method, ERROR_TYPE => error_type(kind),
                    SERVER => self.server, GROUP => self.group)
                .record(secs),
            }
        }
    }

    fn error_type(kind: TransportErrorKind) -> &'static str {
        match kind {
            TransportErrorKind::Connect => "connect",
            TransportErrorKind::Timeout => "timeout",
            TransportErrorKind::Closed => "closed",
            TransportErrorKind::BodyTooLarge => "body_too_large",
            _ => "_OTHER",
        }
    }

    /// What the dispatcher records, from its inputs and the engine's events.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        exchanges: HashMap<SendId, Probe>,
        groups: HashMap<CallId, ApiGroup>,
        spent: Duration,
        answered: bool,
    }

    impl Recorder {
        pub(crate) fn submitted(&mut self, id: CallId, group: ApiGroup) {
            self.groups.insert(id, group);
        }

        pub(crate) fn sent(&mut self, t: &Transmit, now: Instant) {
            let group = t.group().map_or("token", ApiGroup::as_str);
            self.exchanges
                .insert(t.id, Probe::new(&t.request, group, now));
        }

        pub(crate) fn answered(
            &mut self,
            send: SendId,
            answer: Result<http::StatusCode, TransportErrorKind>,
            now: Instant,
        ) {
            if let Some(p) = self.exchanges.remove(&send) {
                p.done(answer, now);
            }
            self.answered = true;
        }

        /// An exchange whose answer will never come (its owner gave it up).
        pub(crate) fn forget(&mut self, send: SendId) {
            self.exchanges.remove(&send);
        }

        /// A call ended: `None` when its owner gave it up.
        pub(crate) fn ended(&mut self, id: CallId, outcome: Option<Result<(), &Error>>) {
            let Some(group) = self.groups.remove(&id) else {
                return;
            };
            let outcome = match outcome {
                Some(Ok(())) => "ok",
                Some(Err(e)) => super::outcome(e),
                None => "abandoned",
            };
            metrics::counter!(CALLS, GROUP => group.as_str(), OUTCOME => outcome).increment(1);
        }

        pub(crate) fn event(&mut self, event: &Event, now: Instant) {
            match event {
                Event::Waiting {
                    group,
                    until,
                    reason,
                    ..
                } => metrics::histogram!(QUOTA_WAIT, GROUP => group.as_str(), REASON => super::reason(reason))
                    .record(until.saturating_duration_since(now).as_secs_f64()),
                Event::TokenRefreshed { replaced, .. } => {
                    let refresh = if *replaced { "true" } else { "false" };
                    metrics::counter!(TOKENS, TOKEN_REFRESH => refresh).increment(1);
                }
                Event::Completed { .. }
                | Event::Failed { .. }
                | Event::NeedToken
                | Event::Warning { .. } => {}
            }
        }

        /// After a drain: running time newly charged, and after an answer the gauges.
        pub(crate) fn drained(&mut self, engine: &Engine, now: Instant) {
            let spent = engine.running_time_spent();
            if spent > self.spent {
                let ms = (spent - self.spent).as_millis();
                metrics::counter!(RUNTIME_CHARGED).increment(u64::try_from(ms).unwrap_or(u64::MAX));
                self.spent = spent;
            }
            if std::mem::take(&mut self.answered) {
                record_usage(&engine.usage(now));
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod recorder {
    //! Without the feature: nothing is kept, nothing recorded.
    use std::time::Instant;

    use crate::engine::{CallId, Engine, Event, SendId, Transmit};
    use crate::error::{Error, TransportErrorKind};
    use crate::limits::ApiGroup;

    #[derive(Debug)]
    pub(crate) struct Probe;

    impl Probe {
        pub(crate) fn new(_: &http::Request<Vec<u8>>, _: &'static str, _: Instant) -> Probe {
            Probe
        }
        pub(crate) fn done(self, _: Result<http::StatusCode, TransportErrorKind>, _: Instant) {}
    }

    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        /// Nothing is kept (a field, so both builds construct it alike).
        _off: (),
    }

    impl Recorder {
        pub(crate) fn submitted(&mut self, _: CallId, _: ApiGroup) {}
        pub(crate) fn sent(&mut self, _: &Transmit, _: Instant) {}
        pub(crate) fn answered(
            &mut self,
            _: SendId,
            _: Result<http::StatusCode, TransportErrorKind>,
            _: Instant,
        ) {
        }
        pub(crate) fn forget(&mut self, _: SendId) {}
        pub(crate) fn ended(&mut self, _: CallId, _: Option<Result<(), &Error>>) {}
        pub(crate) fn event(&mut self, _: &Event, _: Instant) {}
        pub(crate) fn drained(&mut self, _: &Engine, _: Instant) {}
    }
}
