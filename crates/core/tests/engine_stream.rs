//! Streamed hunts ([`Call::HuntStream`]): the transport feeds the body to a
//! [`HuntStreamer`] in chunks and ends with [`Engine::handle_stream_end`]. Checked: the
//! rows come out once each in any chunking, the running time is charged, a network
//! failure before any row is retried and one after rows is not (they would come twice),
//! a body that does not decode fails typed after the rows before it, the row cap is
//! flagged or an error per policy, and a cancelled stream settles its accounting.

use std::time::{Duration, Instant, UNIX_EPOCH};

use defender_core::engine::{
    Auth, Call, Config, Engine, Event, HuntStreamer, Output, StreamEnd, StreamItem, Transmit, Value,
};
use defender_core::hunting::HuntRequest;
use defender_core::policy::{Failure, Policy, Retry, Truncation};
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{Error, Limits, Surface, TransportError, TransportErrorKind};

#[derive(Debug)]
struct TestPolicy {
    truncation: Truncation,
}

impl Policy for TestPolicy {
    fn max_wait(&self) -> Duration {
        Duration::from_secs(600)
    }
    fn retry(&mut self, f: &Failure) -> Retry {
        if f.attempt >= 3 {
            Retry::Stop
        } else {
            Retry::After(Duration::from_millis(10))
        }
    }
    fn truncation(&self) -> Truncation {
        self.truncation
    }
}

fn new_engine(spec: &str, truncation: Truncation) -> (Engine, Instant) {
    #[allow(clippy::disallowed_methods)] // one real instant to count from
    let now = Instant::now();
    let mut config = Config::new(
        Surface::DefenderXdr,
        Auth::ClientCredentials(ClientCredentials::new("t", "a", Secret::new("s"))),
    );
    config.limits = Limits::parse(spec).expect("spec");
    let engine = Engine::new(config, Box::new(TestPolicy { truncation }), now).expect("engine");
    (engine, now)
}

/// Answers the token request and returns the call's transmit.
fn next_transmit(engine: &mut Engine, now: Instant) -> Transmit {
    loop {
        match engine.poll_output() {
            Output::Transmit(t) if t.call().is_none() => {
                let body = br#"{"access_token":"tok","expires_in":3599}"#.to_vec();
                engine.handle_response(t.id, http::Response::new(body), now, UNIX_EPOCH);
            }
            Output::Transmit(t) => return t,
            Output::Wait(w) => panic!("expected a transmit, got Wait({w:?})"),
            _ => {}
        }
    }
}

fn end(engine: &mut Engine) -> Result<Value, Error> {
    loop {
        match engine.poll_output() {
            Output::Event(Event::Completed { value, .. }) => return Ok(value),
            Output::Event(Event::Failed { error, .. }) => return Err(error),
            Output::Wait(w) => panic!("expected the call's end, got Wait({w:?})"),
            _ => {}
        }
    }
}

fn body(rows: usize) -> Vec<u8> {
    let rows: Vec<String> = (0..rows)
        .map(|i| format!(r#"{{"N":{i},"S":"row {i} with \"quotes\" and }}]"}}"#))
        .collect();
    format!(
        r#"{{"Stats":{{"ExecutionTime":2.5}},"Schema":[{{"Name":"N","Type":"Int64"}},{{"Name":"S","Type":"String"}}],"Results":[{}]}}"#,
        rows.join(",")
    )
    .into_bytes()
}

/// Feeds `bytes` in `chunk`-sized pieces; returns the items and how it ended.
fn stream(bytes: &[u8], chunk: usize) -> (Vec<StreamItem>, StreamEnd) {
    let mut s = HuntStreamer::new();
    let mut items = Vec::new();
    for c in bytes.chunks(chunk) {
        s.feed(c);
        loop {
            match s.next_item() {
                Ok(Some(i)) => items.push(i),
                Ok(None) => break,
                Err(e) => return (items, StreamEnd::Decode(e)),
            }
        }
    }
    let (rest, end) = s.finish();
    items.extend(rest);
    (items, end)
}

#[test]
fn rows_stream_once_each_in_any_chunking() {
    for chunk in [1, 7, 64, 100_000] {
        let (mut engine, now) = new_engine("2021", Truncation::Flag);
        engine.submit(Call::HuntStream(HuntRequest::new("T | take 50")), now);
        let t = next_transmit(&mut engine, now);
        assert!(t.stream, "a streamed hunt's transmit says so");
        let (items, end) = stream(&body(50), chunk);
        assert_eq!(
            items.first(),
            Some(&StreamItem::Schema(items_schema(&items)))
        );
        let ns: Vec<i64> = items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Row(r) => r["N"].as_i64(),
                StreamItem::Schema(_) => None,
            })
            .collect();
        assert_eq!(ns, (0..50).collect::<Vec<_>>(), "chunk {chunk}");
        engine.handle_stream_end(t.id, end, now + Duration::from_secs(3));
        match end_value(&mut engine) {
            Value::HuntStreamed(s) => {
                assert_eq!(s.rows, 50);
                assert_eq!(s.schema.len(), 2);
                assert_eq!(s.running_time, Duration::from_millis(2500));
                assert!(!s.truncated);
            }
            other => panic!("expected HuntStreamed, got {other:?}"),
        }
        assert_eq!(engine.running_time_spent(), Duration::from_millis(2500));
        assert_eq!(engine.active_calls(), 0);
    }
}

fn items_schema(items: &[StreamItem]) -> Vec<defender_core::hunting::Column> {
    match items.first() {
        Some(StreamItem::Schema(s)) => s.clone(),
        _ => Vec::new(),
    }
}

fn end_value(engine: &mut Engine) -> Value {
    end(engine).expect("the call completes")
}

#[test]
fn a_break_before_any_row_is_retried_after_rows_it_is_not() {
    let reset = || TransportError::new(TransportErrorKind::Closed, "connection reset");
    // Before any row: the call is sent again and can complete.
    let (mut engine, now) = new_engine("2021", Truncation::Flag);
    engine.submit(Call::HuntStream(HuntRequest::new("T")), now);
    let t = next_transmit(&mut engine, now);
    let (_, _) = stream(&body(3)[..10], 10);
    engine.handle_stream_end(
        t.id,
        StreamEnd::Transport {
            error: reset(),
            rows: 0,
        },
        now,
    );
    let later = now + Duration::from_secs(1);
    engine.handle_timeout(later);
    let again = next_transmit(&mut engine, later);
    assert_eq!(again.attempt, 2, "retried");
    let (_, fine) = stream(&body(3), 16);
    engine.handle_stream_end(again.id, fine, later);
    assert!(matches!(end_value(&mut engine), Value::HuntStreamed(s) if s.rows == 3));

    // After rows were handed out: a typed error, nothing sent again.
    let (mut engine, now) = new_engine("2021", Truncation::Flag);
    engine.submit(Call::HuntStream(HuntRequest::new("T")), now);
    let t = next_transmit(&mut engine, now);
    let whole = body(5);
    let mut s = HuntStreamer::new();
    s.feed(&whole[..whole.len() / 2]);
    let mut rows = 0;
    while let Ok(Some(item)) = s.next_item() {
        rows += u64::from(matches!(item, StreamItem::Row(_)));
    }
    assert!(rows > 0);
    engine.handle_stream_end(t.id, s.broken(reset()), now);
    match end(&mut engine) {
        Err(Error::Transport { error, .. }) => assert_eq!(error.kind, TransportErrorKind::Closed),
        other => panic!("expected a transport error, got {other:?}"),
    }
    engine.handle_timeout(now + Duration::from_secs(60));
    assert!(
        matches!(engine.poll_output(), Output::Wait(None)),
        "nothing is sent again"
    );
}

#[test]
fn a_body_that_does_not_decode_fails_after_the_rows_before_it() {
    let (mut engine, now) = new_engine("2021", Truncation::Flag);
    engine.submit(Call::HuntStream(HuntRequest::new("T")), now);
    let t = next_transmit(&mut engine, now);
    let mut bad = body(4);
    let at = bad.len() - 10;
    bad.truncate(at);
    bad.extend_from_slice(b"!!not json");
    let (items, end) = stream(&bad, 32);
    assert!(matches!(end, StreamEnd::Decode(_)));
    assert_eq!(
        items.len(),
        1 + 3,
        "the schema and the three good rows came out"
    );
    engine.handle_stream_end(t.id, end, now);
    match self::end(&mut engine) {
        Err(Error::Decode { what, message, .. }) => {
            assert_eq!(what, "hunting");
            assert!(message.contains("after 3 "), "{message}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn the_row_cap_is_flagged_or_an_error() {
    for (truncation, expect_error) in [(Truncation::Flag, false), (Truncation::Error, true)] {
        let (mut engine, now) = new_engine("2021,hunting.rows=20", truncation);
        engine.submit(Call::HuntStream(HuntRequest::new("T")), now);
        let t = next_transmit(&mut engine, now);
        let (_, end) = stream(&body(20), 100);
        engine.handle_stream_end(t.id, end, now);
        match (self::end(&mut engine), expect_error) {
            (Ok(Value::HuntStreamed(s)), false) => assert!(s.truncated && s.row_cap == Some(20)),
            (Err(Error::Truncated { cap: 20 }), true) => {}
            (other, _) => panic!("{truncation:?}: got {other:?}"),
        }
    }
}

#[test]
fn a_cancelled_stream_settles_its_running_time() {
    let (mut engine, now) = new_engine("2021", Truncation::Flag);
    let id = engine.submit(Call::HuntStream(HuntRequest::new("T")), now);
    let t = next_transmit(&mut engine, now);
    engine.cancel(id, now);
    assert!(matches!(end(&mut engine), Err(Error::Cancelled)));
    let (_, done) = stream(&body(2), 8);
    engine.handle_stream_end(t.id, done, now + Duration::from_secs(3));
    assert!(matches!(engine.poll_output(), Output::Wait(None)));
    assert_eq!(engine.running_time_spent(), Duration::from_millis(2500));
    assert_eq!(engine.active_calls(), 0);
}
