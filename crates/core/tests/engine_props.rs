//! State-machine property test of the engine: random sequences of submissions,
//! responses (200, 429 with and without a retry time, 5xx, 401), transport errors, ticks
//! and cancellations. Checked after every step and at the end:
//! - every call ends exactly once (after the run is drained);
//! - nothing of a group is sent before a retry time the server gave for that group;
//! - `Wait(Some(t))` is always later than `now`;
//! - draining `poll_output` terminates.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, UNIX_EPOCH};

use defender_core::engine::{Auth, Call, CallId, Config, Engine, Event, Output, SendId};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::{IncidentId, IncidentQuery};
use defender_core::policy::{Failure, Policy, Retry};
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{ApiGroup, Limits, Surface, TransportError, TransportErrorKind};
use proptest::prelude::*;

#[derive(Debug)]
struct TestPolicy {
    max_wait: Duration,
}

impl Policy for TestPolicy {
    fn max_wait(&self) -> Duration {
        self.max_wait
    }
    fn retry(&mut self, f: &Failure) -> Retry {
        if f.attempt >= 4 {
            Retry::Stop
        } else {
            Retry::After(Duration::from_millis(100 * u64::from(f.attempt)))
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit(u8),
    Respond(usize, Outcome),
    TransportError(usize),
    Tick(u64),
    Cancel(usize),
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Throttled(Option<u64>),
    Server,
    Unauthorized,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Submit),
        4 => (any::<usize>(), prop_oneof![
            4 => Just(Outcome::Ok),
            2 => proptest::option::of(0u64..90).prop_map(Outcome::Throttled),
            1 => Just(Outcome::Server),
            1 => Just(Outcome::Unauthorized),
        ]).prop_map(|(i, o)| Op::Respond(i, o)),
        1 => any::<usize>().prop_map(Op::TransportError),
        3 => (0u64..120_000).prop_map(Op::Tick),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

struct Harness {
    engine: Engine,
    now: Instant,
    in_flight: Vec<(SendId, ApiGroup)>,
    submitted: HashSet<CallId>,
    ended: HashMap<CallId, u32>,
    blocked_until: HashMap<ApiGroup, Instant>,
}

impl Harness {
    fn drain(&mut self) -> Result<Option<Instant>, TestCaseError> {
        for _ in 0..10_000 {
            match self.engine.poll_output() {
                Output::Transmit(t) => match t.group() {
                    None => {
                        let body = br#"{"access_token":"tok","expires_in":3599}"#.to_vec();
                        self.engine.handle_response(
                            t.id,
                            http::Response::new(body),
                            self.now,
                            UNIX_EPOCH,
                        );
                    }
                    Some(g) => {
                        if let Some(until) = self.blocked_until.get(&g) {
                            prop_assert!(
                                self.now >= *until,
                                "sent {g} before the server's retry time"
                            );
                        }
                        self.in_flight.push((t.id, g));
                    }
                },
                Output::Event(Event::Completed { id, .. })
                | Output::Event(Event::Failed { id, .. }) => {
                    *self.ended.entry(id).or_default() += 1;
                    prop_assert_eq!(self.ended[&id], 1, "a call ended twice");
                }
                Output::Quota(op) => {
                    return Err(TestCaseError::fail(format!(
                        "a local quota asked a store: {op:?}"
                    )));
                }
                Output::Event(_) => {}
                Output::Wait(t) => {
                    if let Some(t) = t {
                        prop_assert!(t > self.now, "Wait must be later than now");
                    }
                    return Ok(t);
                }
            }
        }
        Err(TestCaseError::fail("poll_output did not settle"))
    }

    fn respond(&mut self, i: usize, outcome: Outcome) {
        if self.in_flight.is_empty() {
            return;
        }
        let (send, group) = self.in_flight.remove(i % self.in_flight.len());
        let resp = match outcome {
            Outcome::Ok => {
                let body: &[u8] = match group {
                    ApiGroup::Hunting => {
                        br#"{"Stats":{"ExecutionTime":0.5},"Schema":[],"Results":[]}"#
                    }
                    _ => br#"{"value":[],"incidentId":1}"#,
                };
                http::Response::new(body.to_vec())
            }
            Outcome::Throttled(secs) => {
                let mut b = http::Response::builder().status(429);
                if let Some(s) = secs {
                    b = b.header("retry-after", s.to_string());
                    let until = self.now + Duration::from_secs(s);
                    let e = self.blocked_until.entry(group).or_insert(until);
                    *e = (*e).max(until);
                }
                b.body(br#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 15 per 00:01:00"}}"#.to_vec()).unwrap()
            }
            Outcome::Server => http::Response::builder()
                .status(503)
                .body(Vec::new())
                .unwrap(),
            Outcome::Unauthorized => http::Response::builder()
                .status(401)
                .body(br#"{"error":{"code":"Unauthorized","message":"expired"}}"#.to_vec())
                .unwrap(),
        };
        self.engine
            .handle_response(send, resp, self.now, UNIX_EPOCH);
    }
}

fn call(kind: u8) -> Call {
    match kind % 4 {
        0 => Call::Hunt(HuntRequest::new("T | take 1")),
        1 => Call::ListIncidents(IncidentQuery::default()),
        2 => Call::GetIncident(IncidentId::from(u64::from(kind))),
        _ => Call::Hunt(HuntRequest::new("U | count")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn engine_invariants(ops in prop::collection::vec(op(), 1..120), max_wait_s in prop_oneof![Just(0u64), Just(30), Just(100_000)]) {
        #[allow(clippy::disallowed_methods)] // one real instant to count from
        let start = Instant::now();
        let mut config = Config::new(
            Surface::DefenderXdr,
            Auth::ClientCredentials(ClientCredentials::new("t", "a", Secret::new("s"))),
        );
        config.limits = Limits::parse("2021,hunting.calls=3/1m,incidents.calls=4/1m,hunting.runtime=5s/10m").unwrap();
        let policy = TestPolicy { max_wait: Duration::from_secs(max_wait_s) };
        let mut h = Harness {
            engine: Engine::new(config, Box::new(policy), start).unwrap(),
            now: start,
            in_flight: Vec::new(),
            submitted: HashSet::new(),
            ended: HashMap::new(),
            blocked_until: HashMap::new(),
        };
        let mut ids: Vec<CallId> = Vec::new();
        for op in ops {
            match op {
                Op::Submit(k) => {
                    let id = h.engine.submit(call(k), h.now);
                    h.submitted.insert(id);
                    ids.push(id);
                }
                Op::Respond(i, o) => h.respond(i, o),
                Op::TransportError(i) => {
                    if !h.in_flight.is_empty() {
                        let (send, _) = h.in_flight.remove(i % h.in_flight.len());
                        h.engine.handle_transport_error(send, TransportError::new(TransportErrorKind::Closed, "reset"), h.now);
                    }
                }
                Op::Tick(ms) => {
                    h.now += Duration::from_millis(ms);
                    h.engine.handle_timeout(h.now);
                }
                Op::Cancel(i) => {
                    if !ids.is_empty() {
                        let id = ids[i % ids.len()];
                        h.engine.cancel(id, h.now);
                    }
                }
            }
            h.drain()?;
        }
        // Run to the end: answer everything with 200 and follow the timers.
        for _ in 0..100_000 {
            while !h.in_flight.is_empty() {
                h.respond(0, Outcome::Ok);
                h.drain()?;
            }
            match h.drain()? {
                Some(t) => {
                    h.now = t;
                    h.engine.handle_timeout(t);
                }
                None if h.in_flight.is_empty() => break,
                None => {}
            }
        }
        for id in &h.submitted {
            prop_assert_eq!(h.ended.get(id).copied(), Some(1), "call {:?} did not end exactly once", id);
        }
        prop_assert_eq!(h.engine.active_calls(), 0);
    }
}
