//! State-machine property test of the engine with a shared quota store
//! ([`QuotaMode::Shared`]). The test plays the store with a naive sliding log per group
//! (every admitted, not released call, kept forever and counted by brute force) and plays
//! the server. Random submissions, store answers (admit, deny, unavailable, late),
//! responses, transport errors, ticks and cancellations. Checked:
//! - every call ends exactly once;
//! - at most one admission is outstanding per group;
//! - every request the engine sends was admitted by the store, and each admission is
//!   used at most once: sends ≤ admitted − released, per group, at every step;
//! - each ticket ends exactly once: released (never sent), or sent; a sent hunting
//!   ticket is completed exactly once; a released ticket was never sent;
//! - the store's log therefore never holds more than `max` calls per window, so the
//!   sends never exceed it either;
//! - a 429 with a retry time or a named limit reaches the store as feedback.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, UNIX_EPOCH};

use defender_core::engine::{
    Admission, AdmitId, Auth, Call, CallId, Config, Engine, Event, Output, QuotaMode, QuotaOp,
    SendId, StoreTicket, WaitReason,
};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::{IncidentId, IncidentQuery};
use defender_core::policy::{Failure, Policy, Retry};
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{ApiGroup, Surface, TransportError, TransportErrorKind};
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
        if f.attempt >= 3 {
            Retry::Stop
        } else {
            Retry::After(Duration::from_millis(200))
        }
    }
}

/// Calls per minute the test's store allows, per group.
const MAX: usize = 3;
const PER: Duration = Duration::from_secs(60);
/// The engine's default `Config::store_timeout`.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Op {
    Submit(u8),
    Answer(usize, StoreAnswer),
    Respond(usize, Outcome),
    TransportError(usize),
    Tick(u64),
    Cancel(usize),
}

#[derive(Debug, Clone, Copy)]
enum StoreAnswer {
    Model,
    Unavailable,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Throttled,
    Server,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Submit),
        4 => (any::<usize>(), prop_oneof![9 => Just(StoreAnswer::Model), 1 => Just(StoreAnswer::Unavailable)])
            .prop_map(|(i, a)| Op::Answer(i, a)),
        4 => (any::<usize>(), prop_oneof![
            4 => Just(Outcome::Ok),
            1 => Just(Outcome::Throttled),
            1 => Just(Outcome::Server),
        ]).prop_map(|(i, o)| Op::Respond(i, o)),
        1 => any::<usize>().prop_map(Op::TransportError),
        3 => (0u64..90_000).prop_map(Op::Tick),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TicketEnd {
    Released,
    Completed,
}

struct Harness {
    engine: Engine,
    now: Instant,
    /// Acquires not yet answered, and when each was asked.
    pending: VecDeque<(AdmitId, ApiGroup, Instant)>,
    /// The store's log: when each live (not released) ticket was admitted, per group.
    log: HashMap<ApiGroup, Vec<(Instant, u64)>>,
    next_ticket: u64,
    admitted: HashMap<ApiGroup, usize>,
    released: HashMap<ApiGroup, usize>,
    sends: HashMap<ApiGroup, usize>,
    ticket_end: HashMap<u64, TicketEnd>,
    in_flight: Vec<(SendId, ApiGroup)>,
    ended: HashMap<CallId, u32>,
    submitted: HashSet<CallId>,
    feedback: usize,
    expected_feedback: usize,
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
                        *self.sends.entry(g).or_default() += 1;
                        let live = self.admitted.get(&g).copied().unwrap_or(0)
                            - self.released.get(&g).copied().unwrap_or(0);
                        prop_assert!(
                            self.sends[&g] <= live,
                            "{} sends of {g} but only {live} admissions",
                            self.sends[&g]
                        );
                        self.in_flight.push((t.id, g));
                    }
                },
                Output::Quota(QuotaOp::Acquire {
                    id,
                    group,
                    estimate,
                    ..
                }) => {
                    // One at a time per group, unless the engine gave up on the older one
                    // (its store timeout passed: a late answer is then given back).
                    let now = self.now;
                    prop_assert!(
                        !self
                            .pending
                            .iter()
                            .any(|(_, g, at)| *g == group && now < *at + STORE_TIMEOUT),
                        "two admissions outstanding for {group}"
                    );
                    prop_assert_eq!(estimate.is_zero(), group != ApiGroup::Hunting);
                    self.pending.push_back((id, group, now));
                }
                Output::Quota(QuotaOp::Release { group, ticket }) => {
                    let t: u64 = ticket.into_inner().expect("our ticket type");
                    prop_assert!(self.ticket_end.insert(t, TicketEnd::Released).is_none());
                    *self.released.entry(group).or_default() += 1;
                    self.log
                        .get_mut(&group)
                        .expect("admitted before")
                        .retain(|(_, x)| *x != t);
                }
                Output::Quota(QuotaOp::Complete { group, ticket, .. }) => {
                    prop_assert_eq!(group, ApiGroup::Hunting);
                    let t: u64 = ticket.into_inner().expect("our ticket type");
                    prop_assert!(self.ticket_end.insert(t, TicketEnd::Completed).is_none());
                }
                Output::Quota(QuotaOp::Feedback { .. }) => self.feedback += 1,
                Output::Quota(_) => {}
                Output::Event(Event::Completed { id, .. })
                | Output::Event(Event::Failed { id, .. }) => {
                    *self.ended.entry(id).or_default() += 1;
                    prop_assert_eq!(self.ended[&id], 1, "a call ended twice");
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

    /// The naive store: count the live log inside the window, by brute force.
    fn answer(&mut self, i: usize, kind: StoreAnswer) {
        if self.pending.is_empty() {
            return;
        }
        let (id, group, _) = self
            .pending
            .remove(i % self.pending.len())
            .expect("non-empty");
        let answer = match kind {
            StoreAnswer::Unavailable => Admission::Unavailable("redis is down".into()),
            StoreAnswer::Model => {
                let now = self.now;
                let log = self.log.entry(group).or_default();
                let mut inside: Vec<Instant> = log
                    .iter()
                    .map(|(at, _)| *at)
                    .filter(|at| now < *at + PER)
                    .collect();
                if inside.len() < MAX {
                    self.next_ticket += 1;
                    log.push((now, self.next_ticket));
                    *self.admitted.entry(group).or_default() += 1;
                    Admission::Admitted(StoreTicket::new(self.next_ticket))
                } else {
                    inside.sort();
                    let free_at = inside[inside.len() - MAX] + PER;
                    Admission::Denied {
                        retry_after: Some(free_at - now),
                        reason: WaitReason::Store(format!("{MAX} calls per 1m")),
                    }
                }
            }
        };
        self.engine.handle_admission(id, answer, self.now);
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
            Outcome::Throttled => {
                self.expected_feedback += 1;
                http::Response::builder()
                    .status(429)
                    .header("retry-after", "7")
                    .body(br#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 3 per 00:01:00"}}"#.to_vec())
                    .unwrap()
            }
            Outcome::Server => http::Response::builder()
                .status(503)
                .body(Vec::new())
                .unwrap(),
        };
        self.engine
            .handle_response(send, resp, self.now, UNIX_EPOCH);
    }
}

fn call(kind: u8) -> Call {
    match kind % 3 {
        0 => Call::Hunt(HuntRequest::new("T | take 1")),
        1 => Call::ListIncidents(IncidentQuery::default()),
        _ => Call::GetIncident(IncidentId::from(u64::from(kind))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn shared_store_invariants(ops in prop::collection::vec(op(), 1..150), max_wait_s in prop_oneof![Just(0u64), Just(30), Just(100_000)]) {
        #[allow(clippy::disallowed_methods)] // one real instant to count from
        let start = Instant::now();
        let mut config = Config::new(
            Surface::DefenderXdr,
            Auth::ClientCredentials(ClientCredentials::new("t", "a", Secret::new("s"))),
        );
        config.quota = QuotaMode::Shared;
        let policy = TestPolicy { max_wait: Duration::from_secs(max_wait_s) };
        let mut h = Harness {
            engine: Engine::new(config, Box::new(policy), start).unwrap(),
            now: start,
            pending: VecDeque::new(),
            log: HashMap::new(),
            next_ticket: 0,
            admitted: HashMap::new(),
            released: HashMap::new(),
            sends: HashMap::new(),
            ticket_end: HashMap::new(),
            in_flight: Vec::new(),
            ended: HashMap::new(),
            submitted: HashSet::new(),
            feedback: 0,
            expected_feedback: 0,
        };
        let mut ids: Vec<CallId> = Vec::new();
        for op in ops {
            match op {
                Op::Submit(k) => {
                    let id = h.engine.submit(call(k), h.now);
                    h.submitted.insert(id);
                    ids.push(id);
                }
                Op::Answer(i, a) => h.answer(i, a),
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
        // Run to the end: the store answers from the model, the server with 200.
        for _ in 0..100_000 {
            loop {
                if !h.pending.is_empty() {
                    h.answer(0, StoreAnswer::Model);
                } else if !h.in_flight.is_empty() {
                    h.respond(0, Outcome::Ok);
                } else {
                    break;
                }
                h.drain()?;
            }
            let timer = h.drain()?;
            if !h.pending.is_empty() || !h.in_flight.is_empty() {
                continue;
            }
            match timer {
                Some(t) => {
                    h.now = t;
                    h.engine.handle_timeout(t);
                }
                None => break,
            }
        }
        prop_assert!(h.pending.is_empty());
        for id in &h.submitted {
            prop_assert_eq!(h.ended.get(id).copied(), Some(1), "call {:?} did not end exactly once", id);
        }
        prop_assert_eq!(h.engine.active_calls(), 0);
        // Every ticket ended once: released, or sent (and completed when it reserved
        // running time). Sends are exactly the admissions not released.
        for g in ApiGroup::ALL {
            let admitted = h.admitted.get(&g).copied().unwrap_or(0);
            let released = h.released.get(&g).copied().unwrap_or(0);
            let sends = h.sends.get(&g).copied().unwrap_or(0);
            prop_assert_eq!(sends, admitted - released, "{}: every admission not released was sent once", g);
        }
        let completed = h.ticket_end.values().filter(|e| **e == TicketEnd::Completed).count();
        prop_assert_eq!(completed, h.sends.get(&ApiGroup::Hunting).copied().unwrap_or(0), "every sent hunting ticket completed once");
        prop_assert_eq!(h.feedback, h.expected_feedback);
    }
}
