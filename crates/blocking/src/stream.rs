//! Streamed hunts: rows handed to the caller while the body arrives.
//!
//! The iterator's own thread does the work, as for every other call: `next` drives the
//! call (`Shared::drive`, see the driver module) until its body arrives, then reads the
//! body a chunk at a time only when the decoder has no item left. Nothing reads ahead of
//! the caller, so memory stays at one chunk and one element of the document however many
//! rows come and however slowly they are taken.
//!
//! ```text
//!  new ──next──► start ──► drive ──► body ──item──► caller
//!                  ▲         │ done    │ end
//!                  │         ▼         ▼
//!                  │       summary   end_body ──► drive (a break before any row is retried)
//!  drop before the end: abandon (cancel the call, report the body cut short)
//! ```

use std::collections::VecDeque;

use defender_core::engine::{Call, StreamItem, Value};
use defender_core::hunting::{Column, HuntRequest, HuntSummary};
use defender_core::Error;

use crate::driver::{Body, BodyItem, Caller, Step};
use crate::Client;

/// A streamed hunt: an iterator over the schema, then every row, as the response body
/// arrives. After an `Err` it ends; after it returned `None` on success,
/// [`HuntStream::summary`] holds the summary.
///
/// The call starts at the first `next` and is performed by the thread that iterates:
/// each `next` reads the body only as far as the next row, so a slow consumer slows
/// the read instead of piling rows up in memory. Streamed bodies are not subject to
/// [`ClientBuilder::max_body_bytes`](crate::ClientBuilder::max_body_bytes): the
/// decoder holds one element of the document at a time (at most
/// [`DEFAULT_MAX_ELEMENT`](defender_core::stream::DEFAULT_MAX_ELEMENT), 16 MiB), and
/// unknown top-level fields within
/// [`DecodeLimits`](defender_core::stream::DecodeLimits) (64 fields, 1 MiB by default).
///
/// A network failure before the first row is retried like any other call (the schema is
/// not handed out twice); one after rows were handed out ends the iterator with the error
/// (retrying would hand those rows out again).
///
/// Dropping it before the end cancels the call; the request's running time is still
/// charged as for any query the server ran.
pub struct HuntStream {
    client: Client,
    /// The request, until the first `next` submits it.
    request: Option<HuntRequest>,
    /// The call, from the first `next` until its end was seen.
    caller: Option<Caller>,
    /// The body being read.
    body: Option<Box<Body>>,
    /// Items decoded after the body's last chunk.
    pending: VecDeque<StreamItem>,
    /// The schema handed out (a retry's body repeats it).
    schema: Option<Vec<Column>>,
    /// Rows handed out.
    rows: u64,
    /// How the call ended, to report once `pending` is empty.
    end: Option<Result<HuntSummary, Error>>,
    /// Nothing more to hand out.
    done: bool,
    summary: Option<HuntSummary>,
}

impl HuntStream {
    pub(crate) fn new(client: Client, request: HuntRequest) -> HuntStream {
        HuntStream {
            client,
            request: Some(request),
            caller: None,
            body: None,
            pending: VecDeque::new(),
            schema: None,
            rows: 0,
            end: None,
            done: false,
            summary: None,
        }
    }

    /// The summary (row count, statistics, running time charged, truncation), once the
    /// iterator returned `None` after success.
    pub fn summary(&self) -> Option<&HuntSummary> {
        self.summary.as_ref()
    }
}

impl Iterator for HuntStream {
    type Item = Result<StreamItem, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let shared = &self.client.inner.shared;
        loop {
            if let Some(item) = self.pending.pop_front() {
                match hand_out(&mut self.schema, &mut self.rows, item) {
                    Some(item) => return Some(Ok(item)),
                    None => continue,
                }
            }
            if let Some(end) = self.end.take() {
                // The items decoded before the end went out first.
                self.done = true;
                return match end {
                    Ok(summary) => {
                        self.summary = Some(summary);
                        None
                    }
                    Err(e) => Some(Err(e)),
                };
            }
            if self.done {
                return None;
            }
            if let Some(body) = &mut self.body {
                match body.next_item() {
                    BodyItem::Item(item) => {
                        match hand_out(&mut self.schema, &mut self.rows, item) {
                            Some(item) => return Some(Ok(item)),
                            None => continue,
                        }
                    }
                    BodyItem::End(rest, end) => {
                        let send = body.send();
                        self.body = None;
                        self.pending.extend(rest);
                        // Reported before the last items go out, so the engine settles the
                        // running time at once (a body that was read to its end is never
                        // retried, so these items are final).
                        if let Err(e) = shared.end_body(send, end) {
                            self.end = Some(Err(e));
                        }
                        continue;
                    }
                }
            }
            let Some(caller) = &self.caller else {
                let Some(request) = self.request.take() else {
                    // Not reached: a call's end sets `done` when it goes out.
                    self.done = true;
                    return None;
                };
                match shared.start(Call::HuntStream(request)) {
                    Ok(caller) => self.caller = Some(caller),
                    Err(e) => self.end = Some(Err(e)),
                }
                continue;
            };
            match shared.drive(caller) {
                Ok(Step::Body(body)) => self.body = Some(body),
                Ok(Step::Done(outcome)) => {
                    self.caller = None;
                    self.end = Some(match outcome {
                        Ok(Value::HuntStreamed(summary)) => Ok(summary),
                        Ok(other) => Err(crate::unexpected(other)),
                        Err(e) => Err(e),
                    });
                }
                // The engine is unusable (poisoned): `Drop` wakes the other callers.
                Err(e) => self.end = Some(Err(e)),
            }
        }
    }
}

/// `item`, unless it repeats the schema handed out (a retry's body starts with it again).
fn hand_out(
    schema: &mut Option<Vec<Column>>,
    rows: &mut u64,
    item: StreamItem,
) -> Option<StreamItem> {
    match item {
        StreamItem::Schema(cols) if schema.as_ref() == Some(&cols) => None,
        StreamItem::Schema(cols) => {
            *schema = Some(cols.clone());
            Some(StreamItem::Schema(cols))
        }
        StreamItem::Row(row) => {
            *rows += 1;
            Some(StreamItem::Row(row))
        }
    }
}

impl Drop for HuntStream {
    fn drop(&mut self) {
        if let Some(caller) = self.caller.take() {
            self.client
                .inner
                .shared
                .abandon(caller.id, self.body.take());
        }
    }
}

impl std::fmt::Debug for HuntStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuntStream")
            .field("call", &self.caller.as_ref().map(|c| c.id))
            .field("reading", &self.body.is_some())
            .field("rows", &self.rows)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
