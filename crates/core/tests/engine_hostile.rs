//! The engine against what a hostile or broken server, store or token provider does:
//! absurd waits, far HTTP-dates, budgets spent without a time, stores and providers that
//! never answer. And no secret in any `Debug` on the way.

use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{
    Admission, Auth, Call, CallId, Config, Engine, Event, Output, QuotaMode, QuotaOp, StoreTicket,
};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::IncidentId;
use defender_core::policy::{Failure, Policy, Retry};
use defender_core::token::{AccessToken, ClientCredentials, Secret};
use defender_core::{ApiGroup, Error, Surface};

/// A fixed wall clock: the tests need no real one.
const WALL: SystemTime = std::time::UNIX_EPOCH;

const SECRET: &str = "s3cr3t-client-secret-value";
const TOKEN: &str = "eyJ0eXAiOiJKV1Qi.bearer-token-value";

#[derive(Debug)]
struct Patient {
    max_wait: Duration,
}

impl Policy for Patient {
    fn max_wait(&self) -> Duration {
        self.max_wait
    }
    fn retry(&mut self, f: &Failure) -> Retry {
        if f.attempt >= 5 {
            Retry::Stop
        } else {
            Retry::After(Duration::from_millis(100))
        }
    }
}

struct Run {
    engine: Engine,
    now: Instant,
    /// Every output, as `{:?}`.
    debug: Vec<String>,
    warnings: Vec<String>,
    waiting: Vec<Instant>,
    ended: Vec<(CallId, Result<(), Error>)>,
    sent: usize,
    ops: Vec<QuotaOp>,
    /// Every `TokenRefreshed`: how long the token is good for, whether it replaced one.
    tokens: Vec<(Duration, bool)>,
}

impl Run {
    fn new(max_wait: Duration, tweak: impl FnOnce(&mut Config)) -> Run {
        let mut config = Config::new(
            Surface::DefenderXdr,
            Auth::ClientCredentials(ClientCredentials::new("t", "a", Secret::new(SECRET))),
        );
        tweak(&mut config);
        #[allow(clippy::disallowed_methods)] // one real instant to count from
        let now = Instant::now();
        Run {
            engine: Engine::new(config, Box::new(Patient { max_wait }), now).unwrap(),
            now,
            debug: Vec::new(),
            warnings: Vec::new(),
            waiting: Vec::new(),
            ended: Vec::new(),
            sent: 0,
            ops: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Drains outputs; answers tokens itself and every call with `answer` (or leaves it
    /// in flight when `answer` gives `None`). Returns at the first `Wait`.
    fn drain(
        &mut self,
        mut answer: impl FnMut(&http::Request<Vec<u8>>) -> Option<http::Response<Vec<u8>>>,
    ) -> Option<Instant> {
        for _ in 0..1_000 {
            let out = self.engine.poll_output();
            self.debug.push(format!("{out:?}"));
            match out {
                Output::Transmit(t) if t.group().is_none() => {
                    let body = format!(r#"{{"access_token":"{TOKEN}","expires_in":3599}}"#);
                    let r = http::Response::new(body.into_bytes());
                    self.engine.handle_response(t.id, r, self.now, WALL);
                }
                Output::Transmit(t) => {
                    self.sent += 1;
                    if let Some(r) = answer(&t.request) {
                        self.engine.handle_response(t.id, r, self.now, WALL);
                    }
                }
                Output::Event(Event::Warning { message }) => self.warnings.push(message),
                Output::Event(Event::Waiting { until, .. }) => self.waiting.push(until),
                Output::Event(Event::Completed { id, .. }) => self.ended.push((id, Ok(()))),
                Output::Event(Event::Failed { id, error }) => self.ended.push((id, Err(error))),
                Output::Event(Event::TokenRefreshed {
                    valid_for,
                    replaced,
                }) => self.tokens.push((valid_for, replaced)),
                Output::Event(Event::NeedToken) => {}
                Output::Quota(op) => self.ops.push(op),
                Output::Wait(t) => return t,
            }
        }
        panic!("poll_output did not settle");
    }

    fn advance_to(&mut self, t: Instant) {
        self.now = t;
        self.engine.handle_timeout(t);
    }
}

fn status(code: u16, headers: &[(&str, &str)], body: &str) -> http::Response<Vec<u8>> {
    let mut b = http::Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.as_bytes().to_vec()).unwrap()
}

const POISON: &str = r#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 1 per 99999.00:00:00. You can send requests again in 99999.00:00:00.","target":"t"}}"#;

#[test]
fn a_poisoned_429_blocks_for_a_day_at_most_and_teaches_no_limit() {
    let day = Duration::from_secs(86_400);
    let mut run = Run::new(2 * day, |_| {});
    let start = run.now;
    run.engine
        .submit(Call::GetIncident(IncidentId::from(1)), start);
    let mut first = true;
    let timer = run.drain(|_| {
        let r = if first {
            status(429, &[], POISON)
        } else {
            status(200, &[], r#"{"incidentId":1}"#)
        };
        first = false;
        Some(r)
    });
    // The call waits for the capped time, not for 274 years.
    let until = *run.waiting.last().expect("a Waiting event");
    assert!(
        until <= start + day + Duration::from_secs(1),
        "waits {:?}",
        until - start
    );
    assert!(until >= start + day - Duration::from_secs(1));
    assert_eq!(run.warnings.len(), 2, "{:?}", run.warnings);
    assert!(run
        .warnings
        .iter()
        .any(|w| w.contains("ignoring the limit")));
    // No window of 1 call per 99999 days was learned.
    let usage = run.engine.usage(run.now);
    let incidents = usage
        .iter()
        .find(|u| u.group == ApiGroup::Incidents)
        .unwrap();
    assert!(
        incidents.windows.iter().all(|w| w.limit.per <= day),
        "{:?}",
        incidents.windows
    );
    // After the day it goes, and succeeds.
    run.advance_to(timer.unwrap());
    let mut ok = |_: &http::Request<Vec<u8>>| Some(status(200, &[], r#"{"incidentId":1}"#));
    loop {
        let t = run.drain(&mut ok);
        if !run.ended.is_empty() {
            break;
        }
        run.advance_to(t.expect("a timer"));
    }
    assert!(run.ended[0].1.is_ok());
    assert!(run.now <= start + day + Duration::from_secs(2));
}

#[test]
fn a_far_retry_after_on_a_503_fails_fast_under_max_wait() {
    let mut run = Run::new(Duration::from_secs(300), |_| {});
    run.engine
        .submit(Call::GetIncident(IncidentId::from(7)), run.now);
    run.drain(|_| {
        Some(status(
            503,
            &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
            "",
        ))
    });
    assert_eq!(run.sent, 1, "not retried");
    match &run.ended[..] {
        [(
            _,
            Err(Error::Server {
                status: 503,
                retry_after: Some(wait),
                ..
            }),
        )] => assert_eq!(*wait, Duration::from_secs(86_400)),
        other => panic!("{other:?}"),
    }
    let text = run.ended[0].1.as_ref().unwrap_err().to_string();
    assert!(text.contains("retry in"), "{text}");
}

#[test]
fn a_503_retry_after_within_max_wait_is_announced_and_honoured() {
    let mut run = Run::new(Duration::from_secs(300), |_| {});
    let start = run.now;
    run.engine
        .submit(Call::GetIncident(IncidentId::from(7)), start);
    let mut n = 0;
    let mut answer = |_: &http::Request<Vec<u8>>| {
        n += 1;
        Some(if n == 1 {
            status(503, &[("retry-after", "30")], "")
        } else {
            status(200, &[], r#"{"incidentId":7}"#)
        })
    };
    let t = run.drain(&mut answer).unwrap();
    assert_eq!(run.waiting, vec![start + Duration::from_secs(30)]);
    assert!(t >= start + Duration::from_secs(30));
    run.advance_to(t);
    run.drain(&mut answer);
    assert!(run.ended[0].1.is_ok());
}

#[test]
fn a_spent_running_time_budget_without_a_time_blocks_locally() {
    let mut run = Run::new(Duration::from_secs(60), |_| {});
    run.engine
        .submit(Call::Hunt(HuntRequest::new("T | take 1")), run.now);
    let body = r#"{"error":{"code":"429","message":"You have exceeded processing resources allocated to this tenant."}}"#;
    run.drain(|_| Some(status(429, &[], body)));
    // The 15-minute default is beyond max_wait: the call fails, and a new hunt is held.
    assert!(
        matches!(run.ended[0].1, Err(Error::Throttled { retry_after: Some(w), .. }) if w == Duration::from_secs(900))
    );
    run.engine
        .submit(Call::Hunt(HuntRequest::new("T | take 2")), run.now);
    let sent = run.sent;
    run.drain(|_| Some(status(200, &[], r#"{"Schema":[],"Results":[]}"#)));
    assert_eq!(run.sent, sent, "nothing sent while the budget is spent");
    assert!(
        matches!(run.ended[1].1, Err(Error::QuotaWait { .. })),
        "{:?}",
        run.ended[1]
    );
}

#[test]
fn a_spent_running_time_budget_without_a_time_reaches_the_shared_store() {
    let mut run = Run::new(Duration::from_secs(60), |c| c.quota = QuotaMode::Shared);
    run.engine
        .submit(Call::Hunt(HuntRequest::new("T | take 1")), run.now);
    run.drain(|_| None);
    let Some(QuotaOp::Acquire { id, .. }) = run.ops.pop() else {
        panic!("{:?}", run.ops)
    };
    run.engine
        .handle_admission(id, Admission::Admitted(StoreTicket::new(1u64)), run.now);
    let body = r#"{"error":{"code":"429","message":"You have exceeded processing resources allocated to this tenant."}}"#;
    run.drain(|_| Some(status(429, &[], body)));
    let feedback = run.ops.iter().find_map(|op| match op {
        QuotaOp::Feedback {
            retry_after,
            runtime_exhausted,
            ..
        } => Some((*retry_after, *runtime_exhausted)),
        _ => None,
    });
    assert_eq!(feedback, Some((Some(Duration::from_secs(900)), true)));
}

#[test]
fn a_store_that_never_answers_fails_the_call_and_a_late_ticket_goes_back() {
    let mut run = Run::new(Duration::from_secs(300), |c| c.quota = QuotaMode::Shared);
    let start = run.now;
    run.engine
        .submit(Call::GetIncident(IncidentId::from(1)), start);
    let t = run.drain(|_| None).expect("a timer for the store's answer");
    let Some(QuotaOp::Acquire { id, .. }) = run.ops.pop() else {
        panic!()
    };
    assert_eq!(t, start + Duration::from_secs(10));
    run.advance_to(t);
    run.drain(|_| None);
    assert!(
        matches!(&run.ended[0].1, Err(Error::QuotaStore { message }) if message.contains("did not answer"))
    );
    assert_eq!(run.sent, 0);
    // The store wakes up: its late ticket is given back.
    run.engine
        .handle_admission(id, Admission::Admitted(StoreTicket::new(9u64)), run.now);
    run.drain(|_| None);
    assert!(
        matches!(run.ops.last(), Some(QuotaOp::Release { ticket, .. }) if ticket.get::<u64>() == Some(&9)),
        "{:?}",
        run.ops
    );
    // A new call asks again.
    run.engine
        .submit(Call::GetIncident(IncidentId::from(2)), run.now);
    run.drain(|_| None);
    assert!(matches!(run.ops.last(), Some(QuotaOp::Acquire { .. })));
}

#[test]
fn a_cancelled_call_gives_back_its_pending_admission() {
    let mut run = Run::new(Duration::from_secs(300), |c| c.quota = QuotaMode::Shared);
    let id = run
        .engine
        .submit(Call::GetIncident(IncidentId::from(1)), run.now);
    run.drain(|_| None);
    let Some(QuotaOp::Acquire { id: admit, .. }) = run.ops.pop() else {
        panic!()
    };
    run.engine.cancel(id, run.now);
    run.engine
        .handle_admission(admit, Admission::Admitted(StoreTicket::new(3u64)), run.now);
    run.drain(|_| None);
    assert!(matches!(run.ops.last(), Some(QuotaOp::Release { .. })));
    assert_eq!(run.sent, 0);
}

#[test]
fn a_token_provider_that_never_answers_fails_the_calls_in_time() {
    let mut config = Config::new(Surface::Graph, Auth::External);
    config.token_timeout = Duration::from_secs(20);
    #[allow(clippy::disallowed_methods)] // one real instant to count from
    let start = Instant::now();
    let policy = Box::new(Patient {
        max_wait: Duration::from_secs(300),
    });
    let mut engine = Engine::new(config, policy, start).unwrap();
    let a = engine.submit(Call::GetIncident(IncidentId::from(1)), start);
    let b = engine.submit(Call::Hunt(HuntRequest::new("T")), start);
    let mut asked = 0;
    let mut failed = Vec::new();
    let mut now = start;
    for _ in 0..100 {
        match engine.poll_output() {
            Output::Event(Event::NeedToken) => asked += 1,
            Output::Event(Event::Failed { id, error }) => failed.push((id, error)),
            Output::Wait(Some(t)) => {
                now = t;
                engine.handle_timeout(t);
            }
            Output::Wait(None) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(asked, 1);
    assert_eq!(now, start + Duration::from_secs(20));
    let ids: Vec<CallId> = failed.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![a, b]);
    assert!(failed
        .iter()
        .all(|(_, e)| matches!(e, Error::TokenUnavailable { .. })));
    // A late token is still taken, and the next call uses it.
    engine.handle_token(
        Ok(AccessToken::new(
            Secret::new(TOKEN),
            now,
            now + Duration::from_secs(3600),
        )),
        now,
    );
    engine.submit(Call::GetIncident(IncidentId::from(2)), now);
    assert!(matches!(
        engine.poll_output(),
        Output::Event(Event::TokenRefreshed {
            replaced: false,
            ..
        })
    ));
    assert!(matches!(engine.poll_output(), Output::Transmit(_)));
}

#[test]
fn no_output_and_no_engine_debug_shows_a_secret() {
    let mut run = Run::new(Duration::from_secs(300), |_| {});
    run.engine
        .submit(Call::GetIncident(IncidentId::from(1)), run.now);
    run.engine
        .submit(Call::Hunt(HuntRequest::new("T | take 1")), run.now);
    // Leave the calls in flight so the engine holds their transmits' state.
    run.drain(|_| None);
    run.debug.push(format!("{:?}", run.engine));
    let all = run.debug.join("\n");
    assert!(all.contains("Transmit"), "{all}");
    assert!(
        all.contains("authorization"),
        "header names are shown: {all}"
    );
    for secret in [SECRET, TOKEN, "bearer-token", "client_secret="] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    // Nor as the bytes `Debug` of a Vec<u8> would print.
    let bytes: Vec<String> = SECRET.bytes().take(6).map(|b| b.to_string()).collect();
    assert!(
        !all.contains(&bytes.join(", ")),
        "the secret's bytes in {all}"
    );
}

#[test]
fn a_preempted_query_is_a_typed_error() {
    let mut run = Run::new(Duration::from_secs(60), |_| {});
    run.engine
        .submit(Call::Hunt(HuntRequest::new("T | take 1")), run.now);
    let body = r#"{"error":{"code":"BadRequest","message":"Query execution has exceeded the allowed limits. The query execution was preempted. This could possibly be due to high CPU and/or memory resource consumption. Optimize your query by following best practices and try again."}}"#;
    run.drain(|_| Some(status(400, &[], body)));
    assert!(
        matches!(&run.ended[0].1, Err(Error::Preempted(e)) if e.message.contains("preempted")),
        "{:?}",
        run.ended
    );
    assert_eq!(run.sent, 1, "not retried as it is");
}

#[test]
fn a_timespan_is_refused_where_the_surface_takes_none() {
    let mut run = Run::new(Duration::from_secs(60), |_| {});
    let req = HuntRequest::new("AlertInfo | take 1").with_timespan("P1D");
    run.engine.submit(Call::Hunt(req), run.now);
    run.drain(|_| Some(status(200, &[], r#"{"Schema":[],"Results":[]}"#)));
    assert_eq!(run.sent, 0, "not sent without its time range");
    assert!(
        matches!(&run.ended[0].1, Err(Error::Unsupported { operation, .. }) if operation.contains("Timespan")),
        "{:?}",
        run.ended
    );
}

#[test]
fn a_filter_the_surface_does_not_take_is_refused_before_sending() {
    use defender_core::incidents::{IncidentFilter, IncidentQuery};
    let mut run = Run::new(Duration::from_secs(60), |_| {});
    let query = IncidentQuery {
        filter: IncidentFilter::new().severity("High"),
        ..IncidentQuery::default()
    };
    run.engine.submit(Call::ListIncidents(query), run.now);
    run.drain(|_| Some(status(200, &[], r#"{"value":[]}"#)));
    assert_eq!(run.sent, 0);
    assert!(
        matches!(&run.ended[0].1, Err(Error::InvalidRequest(m)) if m.contains("severity")),
        "{:?}",
        run.ended
    );
}

/// The first token is announced as fetched, a later one as a refresh (for logs), and
/// neither announcement carries the token.
#[test]
fn new_tokens_are_announced_without_the_secret() {
    let mut run = Run::new(Duration::from_secs(60), |_| {});
    let ok = |_: &http::Request<Vec<u8>>| Some(status(200, &[], r#"{"incidentId":1}"#));
    run.engine
        .submit(Call::GetIncident(IncidentId::from(1)), run.now);
    run.drain(ok);
    assert_eq!(run.tokens, vec![(Duration::from_secs(3599), false)]);
    // Past the token's lifetime, the next call fetches a new one.
    let later = run.now + Duration::from_secs(3600);
    run.advance_to(later);
    run.engine
        .submit(Call::GetIncident(IncidentId::from(1)), run.now);
    run.drain(ok);
    assert_eq!(run.tokens.len(), 2, "{:?}", run.tokens);
    assert!(run.tokens[1].1, "the second token replaced the first");
    assert_eq!(run.ended.len(), 2);
    assert!(run.ended.iter().all(|(_, r)| r.is_ok()));
    assert!(run
        .debug
        .iter()
        .filter(|d| d.contains("TokenRefreshed"))
        .all(|d| !d.contains(TOKEN)));
}
