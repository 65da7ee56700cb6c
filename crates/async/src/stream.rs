//! Streamed hunts: rows handed to the caller while the body arrives.
//!
//! The stream's own polls do the work, as a call's future does for every other call. The
//! rules (the schema once, a body's end settled before its last items, nothing after an
//! error) are `defender_core::dispatch::HuntCursor`'s; this module does its IO: submit and
//! drive the call, read the body a chunk at a time only when the cursor has no item left.
//! Nothing reads ahead of the caller, so memory stays at one chunk and one element of the
//! document however many rows come and however slowly they are taken.
//!
//! Between items the state is idle in the stream; while an item needs IO it moves into
//! one boxed future that gives it back with the item. Items the cursor already holds go
//! out without that future. Dropped before the end, the call's `Caller` abandons it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use defender_core::dispatch::{CursorStep, HuntCursor};
use defender_core::engine::{Call, StreamEnd, StreamItem};
use defender_core::hunting::{HuntRequest, HuntSummary};
use defender_core::Error;
use futures_util::stream::{FusedStream, Stream};

use crate::driver::{Caller, Drive, Shared};
use crate::http::Body;

/// A streamed hunt: a [`Stream`] of the schema, then every row, as the response body
/// arrives. After an `Err` it ends; after it returned `None` on success,
/// [`HuntStream::summary`] holds the summary.
///
/// The call starts at the first poll and is performed by the task that polls: each item
/// reads the body only as far as the next row, so a slow consumer slows the read instead
/// of piling rows up in memory. Streamed bodies are not subject to
/// [`ClientBuilder::max_body_bytes`](crate::ClientBuilder::max_body_bytes): the
/// decoder holds one element of the document at a time (at most
/// [`DEFAULT_MAX_ELEMENT`](defender_core::stream::DEFAULT_MAX_ELEMENT), 16 MiB), and
/// unknown top-level fields within
/// [`DecodeLimits`](defender_core::stream::DecodeLimits) (64 fields, 1 MiB by default).
///
/// The request timeout bounds the exchange up to the response head, then each read of
/// the body, never the whole body: a slow consumer is not cut off. (A timeout set on a
/// reqwest client given to [`ClientBuilder::http_client`](crate::ClientBuilder::http_client)
/// still bounds the whole exchange.)
///
/// A network failure before the first row is retried like any other call (the schema is
/// not handed out twice); one after rows were handed out ends the stream with the error
/// (retrying would hand those rows out again).
///
/// Dropping it before the end cancels the call; the request's running time is still
/// charged as for any query the server ran.
pub struct HuntStream {
    /// The state between items; `None` while `step` holds it.
    run: Option<Box<Run>>,
    /// The IO for the next item, which gives the state back with it.
    step: Option<StepFuture>,
}

/// The future that reads up to the next item.
type StepFuture =
    Pin<Box<dyn Future<Output = (Box<Run>, Option<Result<StreamItem, Error>>)> + Send>>;

impl HuntStream {
    pub(crate) fn new(shared: Arc<Shared>, request: HuntRequest) -> HuntStream {
        HuntStream {
            run: Some(Box::new(Run {
                shared,
                request: Some(request),
                caller: None,
                body: None,
                cursor: HuntCursor::new(),
            })),
            step: None,
        }
    }

    /// The summary (row count, statistics, running time charged, truncation), once the
    /// stream returned `None` after success.
    pub fn summary(&self) -> Option<&HuntSummary> {
        self.run.as_ref()?.cursor.summary()
    }

    pub(crate) fn take_summary(&mut self) -> Option<HuntSummary> {
        self.run.as_mut()?.cursor.take_summary()
    }
}

impl Stream for HuntStream {
    type Item = Result<StreamItem, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.step.is_none() {
            let Some(mut run) = this.run.take() else {
                // Not reached: `run` is given back whenever `step` ends.
                return Poll::Ready(None);
            };
            if let Some(out) = run.ready() {
                this.run = Some(run);
                return Poll::Ready(out);
            }
            this.step = Some(Box::pin(async move {
                let out = run.next().await;
                (run, out)
            }));
        }
        let step = this.step.as_mut().expect("set above"); // set when it was `None`
        match step.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready((run, out)) => {
                this.step = None;
                this.run = Some(run);
                Poll::Ready(out)
            }
        }
    }
}

impl FusedStream for HuntStream {
    fn is_terminated(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.cursor.is_finished())
    }
}

impl std::fmt::Debug for HuntStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("HuntStream");
        match &self.run {
            Some(run) => d
                .field("call", &run.caller.as_ref().map(|c| c.id))
                .field("rows", &run.cursor.rows())
                .field("done", &run.cursor.is_finished()),
            None => d.field("reading", &true),
        };
        d.finish_non_exhaustive()
    }
}

/// A streamed hunt's state. Dropped before the end, its [`Caller`] abandons the call.
struct Run {
    shared: Arc<Shared>,
    /// The request, until the cursor says to submit it.
    request: Option<HuntRequest>,
    /// The call, from its submission until its end was seen.
    caller: Option<Caller>,
    /// The body being read.
    body: Option<Box<Body>>,
    cursor: HuntCursor,
}

impl Run {
    /// What can be handed out without IO; `None` when the next item needs some.
    fn ready(&mut self) -> Option<Option<Result<StreamItem, Error>>> {
        loop {
            match self.cursor.step() {
                CursorStep::Item(item) => return Some(Some(item)),
                CursorStep::Finished => return Some(None),
                CursorStep::Start => {
                    let request = self.request.take()?; // only the first step says Start
                    self.caller = Some(self.shared.submit(Call::HuntStream(request)));
                }
                CursorStep::Settle(send, end) => {
                    if let (Some(body), StreamEnd::Complete { rows, .. }) = (&self.body, &end) {
                        body.span.record(defender_core::telemetry::ROWS, rows);
                    }
                    self.body = None;
                    if let Some(caller) = &self.caller {
                        caller.end_body(send, end);
                    }
                }
                CursorStep::Drive | CursorStep::Read => return None,
            }
        }
    }

    /// The next item, after IO.
    async fn next(&mut self) -> Option<Result<StreamItem, Error>> {
        loop {
            if let Some(out) = self.ready() {
                return out;
            }
            if let Some(body) = &mut self.body {
                body.read_into(&mut self.cursor).await;
            } else if let Some(caller) = &mut self.caller {
                match caller.drive().await {
                    Drive::Done(outcome) => {
                        self.caller = None;
                        self.cursor.done(*outcome);
                    }
                    Drive::Body(body) => {
                        self.cursor.body(body.send);
                        self.body = Some(body);
                    }
                }
            } else {
                // Not reached: the cursor asks for IO only while the call runs.
                self.cursor.fail(Error::Cancelled);
            }
        }
    }
}
