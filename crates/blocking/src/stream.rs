//! Streamed hunts: rows handed to the caller while the body arrives.
//!
//! The iterator's own thread does the work, as for every other call. The rules (the
//! schema once, a body's end settled before its last items, nothing after an error) are
//! `defender_core::dispatch::HuntCursor`'s; this module does its IO: start and drive the
//! call, read the body a chunk at a time only when the cursor has no item left. Nothing
//! reads ahead of the caller, so memory stays at one chunk and one element of the
//! document however many rows come and however slowly they are taken. Dropped before the
//! end, the call is abandoned: the dispatcher settles the body cut short.

use defender_core::dispatch::{CursorStep, HuntCursor};
use defender_core::engine::{Call, StreamEnd, StreamItem};
use defender_core::hunting::{HuntRequest, HuntSummary};
use defender_core::Error;

use crate::driver::{Caller, Shared, Step};
use crate::http::Body;
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
    run: Run,
}

impl HuntStream {
    pub(crate) fn new(client: Client, request: HuntRequest) -> HuntStream {
        HuntStream {
            client,
            run: Run::new(request),
        }
    }

    /// The summary (row count, statistics, running time charged, truncation), once the
    /// iterator returned `None` after success.
    pub fn summary(&self) -> Option<&HuntSummary> {
        self.run.cursor.summary()
    }
}

impl Iterator for HuntStream {
    type Item = Result<StreamItem, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.run.next(&self.client.inner.shared)
    }
}

impl Drop for HuntStream {
    fn drop(&mut self) {
        self.run.abandon(&self.client.inner.shared);
    }
}

/// A [`Run`] abandoned when dropped before its end (`Shared::call` of a streamed hunt).
pub(crate) struct Guarded<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) run: Run,
}

impl Drop for Guarded<'_> {
    fn drop(&mut self) {
        self.run.abandon(self.shared);
    }
}

impl std::fmt::Debug for HuntStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HuntStream")
            .field("call", &self.run.caller.as_ref().map(|c| c.id))
            .field("reading", &self.run.body.is_some())
            .field("rows", &self.run.cursor.rows())
            .field("done", &self.run.cursor.is_finished())
            .finish_non_exhaustive()
    }
}

/// A streamed hunt's IO around its cursor. Whoever holds it abandons the call if it is
/// dropped before the end (a `Caller` is only an id here).
pub(crate) struct Run {
    /// The request, until the cursor says to start it.
    request: Option<HuntRequest>,
    /// The call, from its start until its end was seen.
    caller: Option<Caller>,
    /// The body being read.
    body: Option<Box<Body>>,
    cursor: HuntCursor,
}

impl Run {
    pub(crate) fn new(request: HuntRequest) -> Run {
        Run {
            request: Some(request),
            caller: None,
            body: None,
            cursor: HuntCursor::new(),
        }
    }

    /// Gives the call up if it has not ended.
    fn abandon(&mut self, shared: &Shared) {
        if let Some(caller) = self.caller.take() {
            shared.abandon(caller.id);
        }
    }

    pub(crate) fn take_summary(&mut self) -> Option<HuntSummary> {
        self.cursor.take_summary()
    }

    /// The next item, doing the IO it needs on this thread.
    pub(crate) fn next(&mut self, shared: &Shared) -> Option<Result<StreamItem, Error>> {
        loop {
            match self.cursor.step() {
                CursorStep::Item(item) => return Some(item),
                CursorStep::Finished => return None,
                CursorStep::Start => match self
                    .request
                    .take()
                    .map(|r| shared.start(Call::HuntStream(r)))
                {
                    Some(Ok(caller)) => self.caller = Some(caller),
                    Some(Err(e)) => self.cursor.fail(e),
                    None => self.cursor.fail(Error::Cancelled),
                },
                CursorStep::Settle(send, end) => {
                    if let (Some(body), StreamEnd::Complete { rows, .. }) = (&self.body, &end) {
                        body.span.record(defender_core::telemetry::ROWS, rows);
                    }
                    self.body = None;
                    if let Err(e) = shared.end_body(send, end) {
                        self.cursor.fail(e);
                    }
                }
                CursorStep::Read => match &mut self.body {
                    Some(body) => body.read_into(&mut self.cursor),
                    None => self.cursor.fail(Error::Cancelled),
                },
                CursorStep::Drive => match self.caller.as_ref().map(|c| shared.drive(c)) {
                    Some(Ok(Step::Body(body))) => {
                        self.cursor.body(body.send);
                        self.body = Some(body);
                    }
                    Some(Ok(Step::Done(outcome))) => {
                        self.caller = None;
                        self.cursor.done(*outcome);
                    }
                    // The client is unusable (poisoned): abandoning wakes the other callers.
                    Some(Err(e)) => {
                        self.abandon(shared);
                        self.cursor.fail(e);
                    }
                    None => self.cursor.fail(Error::Cancelled),
                },
            }
        }
    }
}
