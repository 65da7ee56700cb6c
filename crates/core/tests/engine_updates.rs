//! Property test: an incident update is applied at most once by the engine's own resends,
//! whatever faults the network and the server throw at it.
//!
//! A small model server holds the incidents. Every request the engine sends meets one
//! fault from the generated script: answered, refused before anything happened (a failed
//! connect, a 429, a 503 that did nothing), or applied and then lost (a reset or timeout
//! after the request was written, a 500 after the write, a 200 whose body is garbage).
//! At the end, for every update with its own comment:
//! - `Completed` ⇒ the comment is on the incident exactly once;
//! - `Failed(OutcomeUnknown)` ⇒ at most once;
//! - any other failure ⇒ not at all (the engine knew it was never applied).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defender_core::alerts::{AlertId, AlertStatus, AlertUpdate};
use defender_core::change::Change;
use defender_core::engine::{Auth, Call, CallId, Config, Engine, Event, Output};
use defender_core::incidents::{IncidentId, IncidentStatus, IncidentUpdate};
use defender_core::policy::{Failure, Policy, Retry};
use defender_core::timefmt::format_rfc3339;
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{Error, Surface, TransportError, TransportErrorKind};
use proptest::prelude::*;

/// A fixed wall clock: the tests need no real one.
const WALL: SystemTime = UNIX_EPOCH;

#[derive(Debug)]
struct Attempts {
    max: u32,
    resend_seen: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
}

impl Policy for Attempts {
    fn max_wait(&self) -> Duration {
        Duration::from_secs(120)
    }
    fn retry(&mut self, f: &Failure) -> Retry {
        self.resend_seen.lock().unwrap().push(f.idempotent);
        if f.attempt >= self.max {
            Retry::Stop
        } else {
            Retry::After(Duration::from_millis(200))
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Answer,
    ConnectFailed,
    Throttled,
    ServerErrorUnapplied,
    AppliedThenReset,
    AppliedThenTimeout,
    AppliedThen500,
    AppliedThenGarbage,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        4 => Just(Fault::Answer),
        1 => Just(Fault::ConnectFailed),
        1 => Just(Fault::Throttled),
        1 => Just(Fault::ServerErrorUnapplied),
        2 => Just(Fault::AppliedThenReset),
        1 => Just(Fault::AppliedThenTimeout),
        1 => Just(Fault::AppliedThen500),
        1 => Just(Fault::AppliedThenGarbage),
    ]
}

#[derive(Default)]
struct Incident {
    status: String,
    comments: Vec<(String, SystemTime)>,
}

struct Server {
    incidents: HashMap<String, Incident>,
    start: Instant,
    /// The records are alerts (Graph and Defender alerts name their id `id`).
    alerts: bool,
}

impl Server {
    fn wall(&self, now: Instant) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_790_000_000) + now.duration_since(self.start)
    }

    fn body(&self, id: &str) -> Vec<u8> {
        let inc = &self.incidents[id];
        let comments: Vec<serde_json::Value> = inc
            .comments
            .iter()
            .map(|(c, at)| serde_json::json!({"comment": c, "createdTime": format_rfc3339(*at)}))
            .collect();
        let record = if self.alerts {
            serde_json::json!({"id": id, "status": inc.status, "comments": comments})
        } else {
            serde_json::json!({
                "incidentId": id.parse::<u64>().unwrap(),
                "status": inc.status,
                "comments": comments,
            })
        };
        serde_json::to_vec(&record).unwrap()
    }

    /// Graph's answer to a comment POST: the incident's comments.
    fn comments(&self, id: &str) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_slice(&self.body(id)).unwrap();
        serde_json::to_vec(&serde_json::json!({"value": v["comments"]})).unwrap()
    }

    /// Applies a PATCH body (or, on Graph, a comment POST's) to the incident.
    fn apply(&mut self, id: &str, body: &[u8], now: Instant) {
        let wall = self.wall(now);
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        let inc = self.incidents.get_mut(id).unwrap();
        if let Some(s) = v.get("status").and_then(|s| s.as_str()) {
            inc.status = s.to_owned();
        }
        if let Some(c) = v.get("comment").and_then(|s| s.as_str()) {
            inc.comments.push((c.to_owned(), wall));
        }
    }
}

fn engine(
    surface: Surface,
    now: Instant,
    max: u32,
    seen: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
) -> Engine {
    let config = Config::new(
        surface,
        Auth::ClientCredentials(ClientCredentials::new("t", "a", Secret::new("s"))),
    );
    Engine::new(
        config,
        Box::new(Attempts {
            max,
            resend_seen: seen,
        }),
        now,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn an_update_is_applied_at_most_once(
        faults in prop::collection::vec(fault(), 1..40),
        updates in 1usize..4,
        max_attempts in 1u32..7,
        with_status in any::<bool>(),
        graph in any::<bool>(),
        alerts in any::<bool>(),
    ) {
        let surface = if graph { Surface::Graph } else { Surface::DefenderXdr };
        #[allow(clippy::disallowed_methods)] // one real instant to count from
        let start = Instant::now();
        let mut now = start;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut engine = engine(surface, now, max_attempts, seen.clone());
        let mut server = Server { incidents: HashMap::new(), start, alerts };
        let mut calls: HashMap<CallId, String> = HashMap::new();
        for k in 0..updates {
            let id = format!("{}", 1000 + k % 2);
            server.incidents.entry(id.clone()).or_insert_with(|| Incident {
                status: "Active".into(),
                ..Incident::default()
            });
            let comment = format!("note {k}");
            let call = if alerts {
                let update = AlertUpdate {
                    status: with_status.then_some(AlertStatus::Resolved),
                    comment: Some(comment.clone()),
                    ..AlertUpdate::default()
                };
                Call::UpdateAlert(AlertId::from(id.as_str()), update)
            } else {
                let update = IncidentUpdate {
                    status: with_status.then_some(IncidentStatus::Resolved),
                    comment: Some(comment.clone()),
                    ..IncidentUpdate::default()
                };
                Call::UpdateIncident(IncidentId::from(id.as_str()), update)
            };
            let call = engine.submit(call, now);
            calls.insert(call, comment);
        }
        let mut ended: HashMap<CallId, Result<(), Error>> = HashMap::new();
        let mut faults = faults.into_iter().cycle();
        let mut step = 0;
        loop {
            step += 1;
            prop_assert!(step < 5_000, "the run did not end");
            match engine.poll_output() {
                Output::Transmit(t) => {
                    if t.group().is_none() {
                        let body = br#"{"access_token":"tok","expires_in":3599}"#.to_vec();
                        engine.handle_response(t.id, http::Response::new(body), now, server.wall(now));
                        continue;
                    }
                    let path = t.request.uri().path().to_owned();
                    let collection = match (alerts, graph) {
                        (true, true) => "/v1.0/security/alerts_v2/",
                        (true, false) => "/api/alerts/",
                        (false, true) => "/v1.0/security/incidents/",
                        (false, false) => "/api/incidents/",
                    };
                    prop_assert!(path.starts_with(collection), "{} for {}", path, collection);
                    let comments = path.ends_with("/comments");
                    let id = path
                        .trim_end_matches("/comments")
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_owned();
                    // A change: the PATCH, or Graph's comment POST.
                    let patch = t.request.method() != http::Method::GET;
                    if graph && patch {
                        // Graph's PATCH has no comment; its comment is a POST of its own.
                        let body: serde_json::Value = serde_json::from_slice(t.request.body()).unwrap();
                        prop_assert_eq!(body.get("comment").is_some(), comments, "{}", path);
                    }
                    // Answers take a little while.
                    now += Duration::from_millis(30);
                    let fault = faults.next().unwrap();
                    let applies = patch && matches!(
                        fault,
                        Fault::Answer | Fault::AppliedThenReset | Fault::AppliedThenTimeout
                            | Fault::AppliedThen500 | Fault::AppliedThenGarbage
                    );
                    if applies {
                        server.apply(&id, t.request.body(), now);
                    }
                    let wall = server.wall(now);
                    let respond = |status: u16, body: Vec<u8>| {
                        http::Response::builder().status(status).body(body).unwrap()
                    };
                    match fault {
                        Fault::Answer => {
                            let body = if comments { server.comments(&id) } else { server.body(&id) };
                            engine.handle_response(t.id, respond(200, body), now, wall)
                        }
                        Fault::ConnectFailed => engine.handle_transport_error(
                            t.id,
                            TransportError::new(TransportErrorKind::Connect, "refused"),
                            now,
                        ),
                        Fault::Throttled => {
                            let r = http::Response::builder()
                                .status(429)
                                .header("retry-after", "1")
                                .body(br#"{"error":{"code":"429","message":"API calls quota exceeded!"}}"#.to_vec())
                                .unwrap();
                            engine.handle_response(t.id, r, now, wall)
                        }
                        Fault::ServerErrorUnapplied => engine.handle_response(t.id, respond(503, Vec::new()), now, wall),
                        Fault::AppliedThenReset => engine.handle_transport_error(
                            t.id,
                            TransportError::new(TransportErrorKind::Closed, "reset"),
                            now,
                        ),
                        Fault::AppliedThenTimeout => engine.handle_transport_error(
                            t.id,
                            TransportError::new(TransportErrorKind::Timeout, "timed out"),
                            now,
                        ),
                        Fault::AppliedThen500 => engine.handle_response(t.id, respond(500, Vec::new()), now, wall),
                        Fault::AppliedThenGarbage => {
                            engine.handle_response(t.id, respond(200, b"{\"incidentId\": 10".to_vec()), now, wall)
                        }
                    }
                }
                Output::Event(Event::Completed { id, .. }) => {
                    prop_assert!(ended.insert(id, Ok(())).is_none(), "a call ended twice");
                }
                Output::Event(Event::Failed { id, error }) => {
                    prop_assert!(ended.insert(id, Err(error)).is_none(), "a call ended twice");
                }
                Output::Event(_) => {}
                Output::Quota(op) => prop_assert!(false, "a local quota asked a store: {op:?}"),
                Output::Wait(Some(t)) => {
                    prop_assert!(t > now);
                    now = t;
                    engine.handle_timeout(now);
                }
                Output::Wait(None) => break,
            }
        }
        prop_assert_eq!(ended.len(), calls.len(), "every call ends");
        for (call, comment) in &calls {
            let count = server
                .incidents
                .values()
                .flat_map(|i| &i.comments)
                .filter(|(c, _)| c == comment)
                .count();
            match &ended[call] {
                Ok(()) => prop_assert_eq!(count, 1, "a completed update is there once"),
                Err(Error::OutcomeUnknown { change, .. }) => {
                    prop_assert!(count <= 1, "applied {} times", count);
                    let sent = match change.as_ref() {
                        Change::Incident(_, u) => u.comment.as_deref(),
                        Change::Alert(_, u) => u.comment.as_deref(),
                        other => panic!("an unknown change {other:?}"),
                    };
                    prop_assert_eq!(sent, Some(comment.as_str()));
                    prop_assert_eq!(change.kind(), if alerts { "alert" } else { "incident" });
                }
                Err(e) => prop_assert_eq!(count, 0, "failed with {} after applying", e),
            }
        }
    }
}

/// The policy sees an update's ambiguous failure as not idempotent, and a read's as
/// idempotent.
#[test]
fn the_policy_sees_whether_a_resend_is_safe() {
    #[allow(clippy::disallowed_methods)] // one real instant to count from
    let start = Instant::now();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut engine = engine(Surface::DefenderXdr, start, 5, seen.clone());
    let update = IncidentUpdate {
        comment: Some("isolated host".into()),
        ..IncidentUpdate::default()
    };
    engine.submit(Call::UpdateIncident(IncidentId::from(1004), update), start);
    let mut now = start;
    let mut methods = Vec::new();
    for _ in 0..100 {
        match engine.poll_output() {
            Output::Transmit(t) if t.group().is_none() => {
                let body = br#"{"access_token":"tok","expires_in":3599}"#.to_vec();
                engine.handle_response(t.id, http::Response::new(body), now, WALL);
            }
            Output::Transmit(t) => {
                methods.push(t.request.method().clone());
                // Every request is lost after it was written.
                engine.handle_transport_error(
                    t.id,
                    TransportError::new(TransportErrorKind::Closed, "reset"),
                    now,
                );
            }
            Output::Wait(Some(t)) => {
                now = t;
                engine.handle_timeout(now);
            }
            Output::Wait(None) => break,
            Output::Event(Event::Failed { error, .. }) => {
                assert!(
                    matches!(&error, Error::OutcomeUnknown { cause, .. } if matches!(**cause, Error::Transport { .. })),
                    "{error}"
                );
                let text = error.to_string();
                assert!(
                    text.contains("1004") && text.contains("isolated host"),
                    "{text}"
                );
            }
            Output::Event(_) => {}
            Output::Quota(_) => unreachable!(),
        }
    }
    // One PATCH, then only read-backs.
    assert_eq!(methods[0], http::Method::PATCH);
    assert!(
        methods[1..].iter().all(|m| m == http::Method::GET),
        "{methods:?}"
    );
    assert_eq!(methods.len(), 5);
    let seen = seen.lock().unwrap();
    assert!(!seen[0], "the PATCH's failure is not idempotent");
    assert!(seen[1..].iter().all(|i| *i), "the reads' failures are");
}
