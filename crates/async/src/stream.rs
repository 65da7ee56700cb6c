//! Streamed hunts: rows handed to the caller while the body arrives.
//!
//! The stream's own polls do the work, as a call's future does for every other call:
//! `poll_next` drives the call (`Caller::drive`, see the driver module) until its body
//! arrives, then reads the body a chunk at a time only when the decoder has no item
//! left. Nothing reads ahead of the caller, so memory stays at one chunk and one element
//! of the document however many rows come and however slowly they are taken.
//!
//! ```text
//!  new ──poll──► start ──► drive ──► body ──item──► caller
//!                  ▲         │ done    │ end
//!                  │         ▼         ▼
//!                  │       summary   end_body ──► drive (a break before any row is retried)
//!  drop before the end: the call's `Caller` cancels it and reports the body cut short
//! ```
//!
//! Between items the state is idle in the stream; while an item needs IO it moves into
//! one boxed future that gives it back with the item. Items the decoder already holds go
//! out without that future.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use defender_core::engine::{Call, StreamItem, Value};
use defender_core::hunting::{Column, HuntRequest, HuntSummary};
use defender_core::Error;
use futures_util::stream::{FusedStream, Stream};

use crate::driver::{BodyItem, Caller, Drive};
use crate::Client;

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
    step: Option<Step>,
}

/// The future that reads up to the next item.
type Step = Pin<Box<dyn Future<Output = (Box<Run>, Option<Result<StreamItem, Error>>)> + Send>>;

impl HuntStream {
    pub(crate) fn new(client: Client, request: HuntRequest) -> HuntStream {
        HuntStream {
            run: Some(Box::new(Run {
                client,
                request: Some(request),
                caller: None,
                pending: VecDeque::new(),
                schema: None,
                rows: 0,
                end: None,
                done: false,
                summary: None,
            })),
            step: None,
        }
    }

    /// The summary (row count, statistics, running time charged, truncation), once the
    /// stream returned `None` after success.
    pub fn summary(&self) -> Option<&HuntSummary> {
        self.run.as_ref()?.summary.as_ref()
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
        self.run
            .as_ref()
            .is_some_and(|r| r.done && r.pending.is_empty())
    }
}

impl std::fmt::Debug for HuntStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("HuntStream");
        match &self.run {
            Some(run) => d
                .field("call", &run.caller.as_ref().map(|c| c.id))
                .field("rows", &run.rows)
                .field("done", &run.done),
            None => d.field("reading", &true),
        };
        d.finish_non_exhaustive()
    }
}

/// A streamed hunt's state. Dropped before the end, its [`Caller`] cancels the call.
struct Run {
    client: Client,
    /// The request, until the first poll submits it.
    request: Option<HuntRequest>,
    /// The call, from the first poll until its end was seen.
    caller: Option<Caller>,
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

impl Run {
    /// What can be handed out without IO; `None` when the next item needs some.
    fn ready(&mut self) -> Option<Option<Result<StreamItem, Error>>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                match hand_out(&mut self.schema, &mut self.rows, item) {
                    Some(item) => return Some(Some(Ok(item))),
                    None => continue,
                }
            }
            if let Some(end) = self.end.take() {
                // The items decoded before the end went out first.
                self.done = true;
                return Some(match end {
                    Ok(summary) => {
                        self.summary = Some(summary);
                        None
                    }
                    Err(e) => Some(Err(e)),
                });
            }
            if self.done {
                return Some(None);
            }
            let item = self.caller.as_mut()?.ready_item()?;
            if let Some(item) = self.take(item) {
                return Some(Some(Ok(item)));
            }
        }
    }

    /// The next item, after IO.
    async fn next(&mut self) -> Option<Result<StreamItem, Error>> {
        loop {
            if let Some(out) = self.ready() {
                return out;
            }
            let Some(caller) = &mut self.caller else {
                let Some(request) = self.request.take() else {
                    // Not reached: a call's end sets `done` when it goes out.
                    self.done = true;
                    return None;
                };
                self.caller = Some(self.client.inner.submit(Call::HuntStream(request)));
                continue;
            };
            if let Some(item) = caller.read_item().await {
                if let Some(item) = self.take(item) {
                    return Some(Ok(item));
                }
                continue;
            }
            if let Drive::Done(outcome) = caller.drive().await {
                self.caller = None;
                self.end = Some(match *outcome {
                    Ok(Value::HuntStreamed(summary)) => Ok(summary),
                    Ok(other) => Err(crate::unexpected(other)),
                    Err(e) => Err(e),
                });
            }
        }
    }

    /// An item of the body: the item to hand out, or `None` after its end, which went to
    /// the engine (before the last items go out, so the engine settles the running time
    /// at once: a body read to its end is never retried, so these items are final).
    fn take(&mut self, item: BodyItem) -> Option<StreamItem> {
        match item {
            BodyItem::Item(item) => hand_out(&mut self.schema, &mut self.rows, item),
            BodyItem::End(rest, end) => {
                self.pending.extend(rest);
                if let Some(caller) = &mut self.caller {
                    caller.end_body(end);
                }
                None
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
