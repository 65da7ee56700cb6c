//! A streamed hunt's cursor: what to hand out next, and what IO it needs first.
//!
//! The clients' `HuntStream`s (a `Stream`, an `Iterator`) keep only their IO around this:
//! submitting and driving the call, reading the body. The rules live here, once: the
//! schema goes out once even when a retry's body repeats it; a body's end is settled with
//! the engine before its last items go out (a body read to its end is never retried, so
//! they are final); after an error nothing more comes.
//!
//! ```text
//!  step ─► Start (submit the call) ─► Drive (drive it) ─┬─ done(outcome) ─► Finished / Item(Err)
//!                                                      └─ body(send) ─► Item… ─ Read ─► feed / eof / broken
//!                                                                          ▲                 │
//!                                                                          └── Settle(send, end): hand it to
//!                                                                              Dispatcher::handle_stream_end,
//!                                                                              then Drive (a break before any
//!                                                                              row is retried)
//! ```

use std::collections::VecDeque;

use crate::engine::{HuntStreamer, SendId, StreamEnd, StreamItem, Value};
use crate::error::{Error, TransportError};
use crate::hunting::{Column, HuntSummary};

/// What a streamed hunt's consumer gets next, or the IO its owner performs first.
#[derive(Debug)]
#[must_use]
pub enum CursorStep {
    /// Hand this out (after an `Err`, the stream ends).
    Item(Result<StreamItem, Error>),
    /// The stream ended after success: [`HuntCursor::summary`] holds the summary.
    Finished,
    /// Submit the call (`Call::HuntStream`), then step again.
    Start,
    /// Drive the call until it ends ([`HuntCursor::done`]) or a streamed body arrives
    /// ([`HuntCursor::body`]).
    Drive,
    /// Read more of the body, then [`HuntCursor::feed`] it, or say it ended
    /// ([`HuntCursor::eof`]) or broke ([`HuntCursor::broken`]).
    Read,
    /// The body ended: hand this to `Dispatcher::handle_stream_end`, then step again.
    Settle(SendId, StreamEnd),
}

/// The state of one streamed hunt between items. See the module docs.
#[derive(Debug, Default)]
pub struct HuntCursor {
    /// The body being read: the request it answers and its decoder.
    body: Option<(SendId, HuntStreamer)>,
    /// A body's end, for the engine, before anything else goes out.
    settle: Option<(SendId, StreamEnd)>,
    /// Items decoded after the body's last chunk.
    pending: VecDeque<StreamItem>,
    /// The schema handed out (a retry's body repeats it).
    schema: Option<Vec<Column>>,
    /// Rows handed out.
    rows: u64,
    /// How the call ended, to report once `pending` is empty.
    end: Option<Result<HuntSummary, Error>>,
    started: bool,
    /// Nothing more to hand out.
    done: bool,
    summary: Option<HuntSummary>,
}

impl HuntCursor {
    /// A cursor for a hunt not yet submitted.
    pub fn new() -> HuntCursor {
        HuntCursor::default()
    }

    /// What comes next. Without IO: an item, the end, or what to do first.
    pub fn step(&mut self) -> CursorStep {
        loop {
            if let Some((send, end)) = self.settle.take() {
                return CursorStep::Settle(send, end);
            }
            if let Some(item) = self.pending.pop_front() {
                match self.hand_out(item) {
                    Some(item) => return CursorStep::Item(Ok(item)),
                    None => continue,
                }
            }
            if let Some(end) = self.end.take() {
                // The items decoded before the end went out first.
                self.done = true;
                return match end {
                    Ok(summary) => {
                        self.summary = Some(summary);
                        CursorStep::Finished
                    }
                    Err(e) => CursorStep::Item(Err(e)),
                };
            }
            if self.done {
                return CursorStep::Finished;
            }
            if let Some((send, streamer)) = &mut self.body {
                match streamer.next_item() {
                    Ok(Some(item)) => match self.hand_out(item) {
                        Some(item) => return CursorStep::Item(Ok(item)),
                        None => continue,
                    },
                    Ok(None) => return CursorStep::Read,
                    Err(e) => {
                        self.settle = Some((*send, StreamEnd::Decode(e)));
                        self.body = None;
                        continue;
                    }
                }
            }
            if !self.started {
                self.started = true;
                return CursorStep::Start;
            }
            return CursorStep::Drive;
        }
    }

    /// The call's response is a streamed 2xx: its body is read from now on.
    pub fn body(&mut self, send: SendId) {
        self.body = Some((send, HuntStreamer::new()));
    }

    /// A chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some((_, streamer)) = &mut self.body {
            streamer.feed(chunk);
        }
    }

    /// The body ended.
    pub fn eof(&mut self) {
        if let Some((send, streamer)) = self.body.take() {
            let (rest, end) = streamer.finish();
            self.pending.extend(rest);
            self.settle = Some((send, end));
        }
    }

    /// Reading the body failed.
    pub fn broken(&mut self, error: TransportError) {
        if let Some((send, streamer)) = self.body.take() {
            self.settle = Some((send, streamer.broken(error)));
        }
    }

    /// The call ended (what the dispatcher's `Next::Done` gave).
    pub fn done(&mut self, outcome: Result<Value, Error>) {
        self.end = Some(outcome.and_then(Value::into_hunt_summary));
    }

    /// The call could not go on (a poisoned client): the stream ends with `error`.
    pub fn fail(&mut self, error: Error) {
        self.body = None;
        self.end = Some(Err(error));
    }

    /// The summary, once the stream finished after success.
    pub fn summary(&self) -> Option<&HuntSummary> {
        self.summary.as_ref()
    }

    /// Takes the summary.
    pub fn take_summary(&mut self) -> Option<HuntSummary> {
        self.summary.take()
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether a body is being read.
    pub fn reading(&self) -> bool {
        self.body.is_some()
    }

    /// Whether nothing more will come.
    pub fn is_finished(&self) -> bool {
        self.done && self.pending.is_empty() && self.settle.is_none()
    }

    /// `item`, unless it repeats the schema handed out (a retry's body starts with it).
    fn hand_out(&mut self, item: StreamItem) -> Option<StreamItem> {
        match item {
            StreamItem::Schema(cols) if self.schema.as_ref() == Some(&cols) => None,
            StreamItem::Schema(cols) => {
                self.schema = Some(cols.clone());
                Some(StreamItem::Schema(cols))
            }
            StreamItem::Row(row) => {
                self.rows += 1;
                Some(StreamItem::Row(row))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportErrorKind;

    fn body(rows: &[&str]) -> Vec<u8> {
        let results: Vec<String> = rows.iter().map(|r| format!("{{\"a\":\"{r}\"}}")).collect();
        format!(
            "{{\"Schema\":[{{\"Name\":\"a\",\"Type\":\"String\"}}],\"Results\":[{}]}}",
            results.join(",")
        )
        .into_bytes()
    }

    /// Steps until IO is needed, collecting what went out.
    fn run(c: &mut HuntCursor, out: &mut Vec<String>) -> CursorStep {
        loop {
            match c.step() {
                CursorStep::Item(Ok(StreamItem::Schema(s))) => {
                    out.push(format!("schema{}", s.len()))
                }
                CursorStep::Item(Ok(StreamItem::Row(r))) => out.push(format!("{:?}", r.get("a"))),
                CursorStep::Item(Err(e)) => out.push(format!("err {e}")),
                other => return other,
            }
        }
    }

    #[test]
    fn a_retried_body_does_not_repeat_the_schema_and_the_end_settles_first() {
        let mut c = HuntCursor::new();
        let mut out = Vec::new();
        assert!(matches!(run(&mut c, &mut out), CursorStep::Start));
        assert!(matches!(run(&mut c, &mut out), CursorStep::Drive));
        c.body(SendId(1));
        // The first body breaks after its schema: the engine retries (no rows went out).
        let b = body(&["x"]);
        c.feed(&b[..40]);
        assert!(matches!(run(&mut c, &mut out), CursorStep::Read));
        c.broken(TransportError::new(TransportErrorKind::Closed, "cut"));
        match run(&mut c, &mut out) {
            CursorStep::Settle(SendId(1), StreamEnd::Transport { rows: 0, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(run(&mut c, &mut out), CursorStep::Drive));
        c.body(SendId(2));
        c.feed(&body(&["x", "y"]));
        assert!(matches!(run(&mut c, &mut out), CursorStep::Read));
        c.eof();
        // The end goes to the engine before the last item.
        assert!(matches!(
            c.step(),
            CursorStep::Settle(SendId(2), StreamEnd::Complete { rows: 2, .. })
        ));
        assert!(matches!(run(&mut c, &mut out), CursorStep::Drive));
        assert_eq!(
            out,
            ["schema1", "Some(String(\"x\"))", "Some(String(\"y\"))"]
        );
        assert_eq!(c.rows(), 2);
        c.done(Err(Error::Cancelled));
        assert!(matches!(run(&mut c, &mut out), CursorStep::Finished));
        assert_eq!(out.last().unwrap(), "err the call was cancelled");
        assert!(c.is_finished());
    }

    #[test]
    fn a_body_that_does_not_decode_settles_as_a_decode_error() {
        let mut c = HuntCursor::new();
        let _ = c.step();
        let _ = c.step();
        c.body(SendId(7));
        c.feed(b"{\"Schema\": 12}");
        let mut out = Vec::new();
        assert!(matches!(
            run(&mut c, &mut out),
            CursorStep::Settle(SendId(7), StreamEnd::Decode(_))
        ));
        assert!(!c.reading());
    }
}
