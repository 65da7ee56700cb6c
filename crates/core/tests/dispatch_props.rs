//! Property test of the dispatcher against a model scheduler: owners submit calls, step
//! them, take and send their transmits, get answers in any order (whole, streamed, cut
//! short, transport errors), are cancelled from elsewhere, and drop their calls (or
//! unwind out of them) at every point: before taking a transmit, holding one unsent, with
//! a request in flight, while reading a body. Timers fire as a parked owner's sleep would.
//!
//! Checked after every step, and at the end once everything left is driven to its end:
//! - every call ends once: its owner sees one `Done`, or gave it up and sees nothing;
//! - no wake-up is lost: a parked owner whose call has news, or whose timer moved
//!   earlier, was woken since it parked;
//! - nothing is sent for a call after its owner dropped it, and the shared work never
//!   holds a call's request;
//! - every reservation is released or charged once: at the end no running time is
//!   reserved, no call is active, and each group's call windows hold exactly the
//!   requests that were taken to be sent (the drivers send what they take at once; one
//!   left in its slot when its owner dropped the call gave its place back).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use defender_core::dispatch::{Dispatcher, Next, Wake, Work};
use defender_core::engine::{Auth, Call, CallId, Config, Engine, SendId, StreamEnd, Transmit};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::{IncidentId, IncidentQuery};
use defender_core::policy::{Failure, Policy, Retry};
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{ApiGroup, Limits, Surface, TransportError, TransportErrorKind};
use proptest::prelude::*;

#[derive(Debug)]
struct TestPolicy;

impl Policy for TestPolicy {
    fn max_wait(&self) -> Duration {
        Duration::from_secs(30)
    }
    fn retry(&mut self, f: &Failure) -> Retry {
        if f.attempt >= 3 {
            Retry::Stop
        } else {
            Retry::After(Duration::from_millis(200))
        }
    }
}

/// Counts the wakes of one owner.
#[derive(Clone, Default)]
struct Counter(Rc<Cell<u32>>);

impl Wake for Counter {
    fn wake(&self) {
        self.0.set(self.0.get() + 1);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit(u8),
    Step(usize),
    Send(usize),
    Answer(usize, Answer),
    Body(usize, BodyEnd),
    Work,
    Tick(u64),
    Cancel(usize),
    Drop(usize),
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Unavailable,
    Connect,
    Reset,
}

#[derive(Debug, Clone, Copy)]
enum BodyEnd {
    Complete,
    BrokenBeforeRows,
    BrokenAfterRows,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Submit),
        6 => any::<usize>().prop_map(Op::Step),
        4 => any::<usize>().prop_map(Op::Send),
        4 => (any::<usize>(), prop_oneof![
            5 => Just(Answer::Ok),
            1 => Just(Answer::Unavailable),
            1 => Just(Answer::Connect),
            1 => Just(Answer::Reset),
        ]).prop_map(|(i, a)| Op::Answer(i, a)),
        2 => (any::<usize>(), prop_oneof![
            3 => Just(BodyEnd::Complete),
            1 => Just(BodyEnd::BrokenBeforeRows),
            1 => Just(BodyEnd::BrokenAfterRows),
        ]).prop_map(|(i, e)| Op::Body(i, e)),
        2 => Just(Op::Work),
        2 => (0u64..3_000).prop_map(Op::Tick),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => any::<usize>().prop_map(Op::Drop),
    ]
}

/// Where the model has an owner.
#[derive(Debug)]
enum Owner {
    /// Will call `next`.
    Active,
    /// Parked after `Wait`, with its wake count and the timer then.
    Parked(u32, Option<Instant>),
    /// Took this transmit, not sent yet.
    Holding(Box<Transmit>),
    /// Sent this request of this group; no answer yet.
    InFlight(SendId, ApiGroup, bool),
    /// Reading a streamed body.
    Reading(SendId),
    Ended,
    Dropped,
}

struct Model {
    d: Dispatcher<Counter>,
    now: Instant,
    owners: Vec<(CallId, Counter, Owner)>,
    ends: HashMap<CallId, u32>,
    /// Requests taken to be sent, per group.
    sent: HashMap<ApiGroup, u32>,
}

fn call(kind: u8) -> Call {
    match kind % 5 {
        0 => Call::Hunt(HuntRequest::new("T | take 1")),
        1 => Call::ListIncidents(IncidentQuery::default()),
        2 => Call::GetIncident(IncidentId::from(u64::from(kind))),
        3 => Call::HuntStream(HuntRequest::new("T | take 2")),
        _ => Call::HuntStream(HuntRequest::new("U | take 2")),
    }
}

fn ok_body(group: ApiGroup) -> Vec<u8> {
    match group {
        ApiGroup::Hunting => {
            br#"{"Stats":{"ExecutionTime":0.5},"Schema":[],"Results":[]}"#.to_vec()
        }
        _ => br#"{"value":[],"incidentId":1}"#.to_vec(),
    }
}

impl Model {
    fn new() -> Model {
        #[allow(clippy::disallowed_methods)] // one real instant to count from
        let now = Instant::now();
        let creds = ClientCredentials::new("tenant", "app", Secret::new("secret"));
        let mut config = Config::new(Surface::DefenderXdr, Auth::ClientCredentials(creds));
        // Windows far longer than a run (a few minutes at most), so their counts are exact.
        config.limits = Limits::parse(
            "2021,incidents.calls=1000/1d,hunting.calls=1000/1d,alerts.calls=1000/1d",
        )
        .unwrap();
        let engine = Engine::new(config, Box::new(TestPolicy), now).unwrap();
        Model {
            d: Dispatcher::new(engine),
            now,
            owners: Vec::new(),
            ends: HashMap::new(),
            sent: HashMap::new(),
        }
    }

    /// The index of a live owner chosen by `i`.
    fn pick(&self, i: usize, want: impl Fn(&Owner) -> bool) -> Option<usize> {
        let live: Vec<usize> = (0..self.owners.len())
            .filter(|&k| want(&self.owners[k].2))
            .collect();
        (!live.is_empty()).then(|| live[i % live.len()])
    }

    fn step(&mut self, k: usize) -> Result<(), TestCaseError> {
        let (id, _, state) = &self.owners[k];
        let id = *id;
        let steppable = matches!(state, Owner::Parked(..) | Owner::Active);
        prop_assert!(steppable);
        match self.d.next(id, self.now) {
            Next::Send(t) => {
                prop_assert_eq!(t.call(), Some(id), "a transmit went to another owner");
                let group = t.group().expect("a call's transmit has a group");
                *self.sent.entry(group).or_default() += 1;
                self.owners[k].2 = Owner::Holding(Box::new(t));
            }
            Next::Done(_) => {
                let n = self.ends.entry(id).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "a call ended twice");
                self.owners[k].2 = Owner::Ended;
            }
            Next::Wait => {
                self.d.park(id);
                let wakes = self.owners[k].1 .0.get();
                self.owners[k].2 = Owner::Parked(wakes, self.d.timer());
            }
        }
        Ok(())
    }

    fn answer(&mut self, k: usize, answer: Answer) {
        let Owner::InFlight(send, group, stream) = self.owners[k].2 else {
            return;
        };
        let result = match answer {
            Answer::Ok if stream => {
                self.d.handle_body(send, http::StatusCode::OK, self.now);
                self.owners[k].2 = Owner::Reading(send);
                return;
            }
            Answer::Ok => Ok(http::Response::new(ok_body(group))),
            Answer::Unavailable => Ok(http::Response::builder()
                .status(503)
                .body(Vec::new())
                .unwrap()),
            Answer::Connect => Err(TransportError::new(TransportErrorKind::Connect, "refused")),
            Answer::Reset => Err(TransportError::new(TransportErrorKind::Closed, "reset")),
        };
        self.d.handle_response(send, result, self.now, UNIX_EPOCH);
        self.owners[k].2 = Owner::Active;
    }

    fn end_body(&mut self, k: usize, end: BodyEnd) {
        let Owner::Reading(send) = self.owners[k].2 else {
            return;
        };
        let closed = || TransportError::new(TransportErrorKind::Closed, "cut");
        let end = match end {
            BodyEnd::Complete => StreamEnd::Complete {
                schema: Vec::new(),
                stats: None,
                rows: 2,
            },
            BodyEnd::BrokenBeforeRows => StreamEnd::Transport {
                error: closed(),
                rows: 0,
            },
            BodyEnd::BrokenAfterRows => StreamEnd::Transport {
                error: closed(),
                rows: 1,
            },
        };
        self.d.handle_stream_end(send, end, self.now);
        self.owners[k].2 = Owner::Active;
    }

    fn work(&mut self) -> Result<bool, TestCaseError> {
        let Some(work) = self.d.take_work() else {
            return Ok(false);
        };
        match work {
            Work::Send(t) => {
                prop_assert!(
                    t.call().is_none(),
                    "a call's request went to the shared work"
                );
                let body = br#"{"access_token":"tok","expires_in":3599}"#.to_vec();
                self.d
                    .handle_response(t.id, Ok(http::Response::new(body)), self.now, UNIX_EPOCH);
            }
            other => prop_assert!(false, "a local quota with a secret asked for {other:?}"),
        }
        Ok(true)
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Submit(kind) => {
                let waker = Counter::default();
                let id = self.d.submit(call(kind), waker.clone(), self.now);
                self.owners.push((id, waker, Owner::Active));
            }
            Op::Step(i) => {
                // A parked owner may be stepped unwoken: a spurious wake-up is harmless.
                if let Some(k) = self.pick(i, |o| matches!(o, Owner::Active | Owner::Parked(..))) {
                    self.step(k)?;
                }
            }
            Op::Send(i) => {
                if let Some(k) = self.pick(i, |o| matches!(o, Owner::Holding(_))) {
                    let Owner::Holding(t) = std::mem::replace(&mut self.owners[k].2, Owner::Active)
                    else {
                        unreachable!()
                    };
                    let group = t.group().expect("a call's transmit has a group");
                    self.owners[k].2 = Owner::InFlight(t.id, group, t.stream);
                }
            }
            Op::Answer(i, a) => {
                if let Some(k) = self.pick(i, |o| matches!(o, Owner::InFlight(..))) {
                    self.answer(k, a);
                }
            }
            Op::Body(i, e) => {
                if let Some(k) = self.pick(i, |o| matches!(o, Owner::Reading(_))) {
                    self.end_body(k, e);
                }
            }
            Op::Work => {
                self.work()?;
            }
            Op::Tick(ms) => self.now += Duration::from_millis(ms),
            Op::Cancel(i) => {
                if let Some(k) = self.pick(i, |o| !matches!(o, Owner::Ended | Owner::Dropped)) {
                    self.d.cancel(self.owners[k].0);
                }
            }
            Op::Drop(i) => {
                if let Some(k) = self.pick(i, |o| !matches!(o, Owner::Ended | Owner::Dropped)) {
                    self.d.abandon(self.owners[k].0, self.now);
                    self.owners[k].2 = Owner::Dropped;
                }
            }
        }
        self.check()
    }

    /// No wake-up lost.
    fn check(&self) -> Result<(), TestCaseError> {
        for (id, waker, state) in &self.owners {
            if let Owner::Parked(wakes, timer) = state {
                let woken = waker.0.get() > *wakes;
                prop_assert!(
                    woken || !self.d.has_news(*id),
                    "call {id:?} has news and its parked owner was not woken"
                );
                let earlier = match (self.d.timer(), timer) {
                    (Some(new), Some(old)) => new < *old,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                prop_assert!(
                    woken || !earlier,
                    "the timer moved earlier and parked call {id:?} was not woken"
                );
            }
        }
        Ok(())
    }

    /// Drives everything left to its end, as the owners and a timer would.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.work()? {
                continue;
            }
            if let Some(k) = self.pick(0, |o| matches!(o, Owner::Holding(_))) {
                self.apply(Op::Send(k))?;
                continue;
            }
            if let Some(k) = self.pick(0, |o| matches!(o, Owner::InFlight(..))) {
                self.answer(k, Answer::Ok);
                self.check()?;
                continue;
            }
            if let Some(k) = self.pick(0, |o| matches!(o, Owner::Reading(_))) {
                self.end_body(k, BodyEnd::Complete);
                self.check()?;
                continue;
            }
            // Owners woken (or never parked) look at their calls.
            let woken = (0..self.owners.len()).find(|&k| match &self.owners[k].2 {
                Owner::Active => true,
                Owner::Parked(wakes, _) => self.owners[k].1 .0.get() > *wakes,
                _ => false,
            });
            if let Some(k) = woken {
                self.step(k)?;
                self.check()?;
                continue;
            }
            if self.pick(0, |o| matches!(o, Owner::Parked(..))).is_none() {
                return Ok(());
            }
            // Only parked owners are left: their sleep ends at the timer.
            let Some(t) = self.d.timer() else {
                return Err(TestCaseError::fail(
                    "parked owners, no news and no timer: a hang",
                ));
            };
            self.now = self.now.max(t);
            let k = self
                .pick(0, |o| matches!(o, Owner::Parked(..)))
                .expect("checked");
            self.step(k)?;
            self.check()?;
        }
        Err(TestCaseError::fail("the run did not settle"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_dispatcher_settles_every_call_once(ops in prop::collection::vec(op(), 1..150)) {
        let mut m = Model::new();
        for op in ops {
            m.apply(op)?;
        }
        m.finish()?;
        for (id, _, state) in &m.owners {
            match state {
                Owner::Ended => prop_assert_eq!(m.ends.get(id), Some(&1)),
                Owner::Dropped => prop_assert_eq!(m.ends.get(id), None),
                other => prop_assert!(false, "call {id:?} left {other:?}"),
            }
        }
        prop_assert_eq!(m.d.calls(), 0);
        prop_assert_eq!(m.d.engine().active_calls(), 0);
        prop_assert!(!m.d.has_work());
        for usage in m.d.usage(m.now) {
            prop_assert_eq!(usage.runtime_reserved, Duration::ZERO, "{} holds a reservation", usage.group);
            let sent = m.sent.get(&usage.group).copied().unwrap_or(0);
            for w in &usage.windows {
                prop_assert_eq!(w.used, sent, "{} window {} against {} requests sent", usage.group, w.limit, sent);
            }
        }
    }
}
