//! The engine shared by every clone of a `Client`, and the loop that drives it. No
//! decision is made here.
//!
//! The engine sits behind a `std::sync::Mutex`, held only for short sections that never
//! `.await`. A call's own future does its own work, so the common case hands nothing
//! between tasks:
//!
//! ```text
//!  call future:  lock ─ submit ─ drain ─ unlock ── perform its Transmit (HTTP) ──
//!                lock ─ handle_response ─ drain ─ unlock ── its Completed/Failed: return
//!
//!  drain (whoever holds the lock), until Wait:
//!    Transmit of a call      ──► that call's slot, and wake it (the caller sends it)
//!    Transmit of a token     ──► a spawned task: performs it, then handle_response + drain
//!    Completed / Failed      ──► that call's slot, and wake it
//!    Waiting                 ──► the progress broadcast
//!    NeedToken               ──► a spawned task: the TokenProvider, then handle_token + drain
//!    Quota(op)               ──► a spawned task: the QuotaStore, then handle_admission + drain
//!    Wait(t)                 ──► the timer task sleeps until t, then handle_timeout + drain
//! ```
//!
//! A call's future dropped before its end cancels the call (`Engine::cancel`) and answers
//! a transmit it held: never sent (`Connect`: nothing ran, nothing is charged) or in
//! flight (`Other`: what it may have run is charged), so the engine's accounting settles.
//! Its [`Caller`] does this on drop.
//!
//! Streamed hunts (`Call::HuntStream`, see `crate::HuntStream`): when the response to a
//! call's own transmit is a 2xx, [`Caller::drive`] keeps the unread body
//! ([`Drive::Body`]); the stream's polls read it a chunk at a time, unlocked, as its
//! consumer takes the rows, then hand its end to the engine ([`Caller::end_body`]) and
//! drive again (a break before any row is retried). Meanwhile the call's slot holds
//! neither a transmit nor a result: the call is in flight. A stream dropped early drops
//! its caller, which cancels the call and tells the engine the body was cut short
//! (`Closed`), so its running time is settled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{Call, CallId, Engine, Event, GroupUsage, Output, QuotaOp, SendId};
use defender_core::engine::{HuntStreamer, StreamEnd, StreamItem, Transmit, Value};
use defender_core::token::AccessToken;
use defender_core::{Error, Limits, Surface, TransportError, TransportErrorKind};
use tokio::runtime::Handle;
use tokio::sync::{broadcast, Notify};
use tracing::Instrument;

use crate::{Progress, QuotaStore, TokenProvider};

/// What every clone of one `Client` shares.
pub(crate) struct Shared {
    state: Mutex<State>,
    http: reqwest::Client,
    provider: Option<Arc<dyn TokenProvider>>,
    store: Option<Arc<dyn QuotaStore>>,
    scope: String,
    max_body: usize,
    pub(crate) surface: Surface,
    pub(crate) limits: Limits,
    pub(crate) progress: broadcast::Sender<Progress>,
    /// Where token fetches, store operations and the timer run (also from `Drop`, which
    /// may run outside the runtime's context).
    runtime: Handle,
    /// Tells the timer task that the engine's timer changed, or that the client is gone.
    timer_changed: Arc<Notify>,
}

/// Behind the mutex.
struct State {
    engine: Engine,
    /// The calls whose futures wait, by id.
    slots: HashMap<CallId, Slot>,
    /// The engine's latest `Wait`.
    timer: Option<Instant>,
}

/// What the engine gave one call, for its future to pick up.
struct Slot {
    transmit: Option<Transmit>,
    result: Option<Result<Value, Error>>,
    wake: Arc<Notify>,
}

/// Everything `Shared::start` needs.
pub(crate) struct Parts {
    pub(crate) engine: Engine,
    pub(crate) http: reqwest::Client,
    pub(crate) provider: Option<Arc<dyn TokenProvider>>,
    pub(crate) store: Option<Arc<dyn QuotaStore>>,
    pub(crate) scope: String,
    pub(crate) max_body: usize,
    pub(crate) surface: Surface,
    pub(crate) limits: Limits,
}

impl Shared {
    /// The shared state, and its timer task on the current runtime.
    pub(crate) fn start(parts: Parts) -> Arc<Shared> {
        let (progress, _) = broadcast::channel(64);
        let timer_changed = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                engine: parts.engine,
                slots: HashMap::new(),
                timer: None,
            }),
            http: parts.http,
            provider: parts.provider,
            store: parts.store,
            scope: parts.scope,
            max_body: parts.max_body,
            surface: parts.surface,
            limits: parts.limits,
            progress,
            runtime: Handle::current(),
            timer_changed: timer_changed.clone(),
        });
        shared
            .runtime
            .spawn(timers(Arc::downgrade(&shared), timer_changed));
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held is a bug already reported; the engine's state
        // is still the best there is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes one call: submits it, performs its transmits in this future, returns its end.
    /// A streamed hunt's rows are decoded and dropped: its value is the summary
    /// (`HuntStream` hands the rows out).
    pub(crate) async fn call(self: &Arc<Self>, call: Call) -> Result<Value, Error> {
        // From the first `.await` on, a dropped future cancels the call through the caller.
        let mut caller = self.submit(call);
        loop {
            match caller.drive().await {
                Drive::Done(result) => return *result,
                Drive::Body => {
                    while let Some(item) = caller.read_item().await {
                        if let BodyItem::End(_, end) = item {
                            caller.end_body(end);
                        }
                    }
                }
            }
        }
    }

    /// Submits a call for a future to drive with [`Caller::drive`]. Dropping the caller
    /// before `drive` returned [`Drive::Done`] cancels the call.
    pub(crate) fn submit(self: &Arc<Self>, call: Call) -> Caller {
        let wake = Arc::new(Notify::new());
        let mut st = self.lock();
        let id = st.engine.submit(call, Instant::now());
        st.slots.insert(
            id,
            Slot {
                transmit: None,
                result: None,
                wake: wake.clone(),
            },
        );
        self.drain(&mut st, Some(id));
        let next = Some(next_step(&mut st, id));
        drop(st);
        Caller {
            shared: self.clone(),
            id,
            wake,
            next,
            sending: None,
            body: None,
            ended: false,
        }
    }

    /// Runs `future` on the client's runtime.
    pub(crate) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(future)
    }

    /// Usage of every group's quota now.
    pub(crate) fn usage(&self) -> Vec<GroupUsage> {
        self.lock().engine.usage(Instant::now())
    }

    /// Drains the engine's outputs until `Wait` (the engine's rule after every input),
    /// routing each to whom it concerns. `me` is the call whose future drains (not woken).
    fn drain(self: &Arc<Self>, st: &mut State, me: Option<CallId>) {
        loop {
            match st.engine.poll_output() {
                Output::Transmit(t) => match t.call.and_then(|c| st.slots.get_mut(&c)) {
                    Some(slot) => {
                        let wake = t.call != me;
                        slot.transmit = Some(t);
                        if wake {
                            slot.wake.notify_one();
                        }
                    }
                    // A token request (no call's future waits for it).
                    None => self.spawn_transmit(t),
                },
                Output::Event(Event::Completed { id, value }) => finish(st, id, Ok(value), me),
                Output::Event(Event::Failed { id, error }) => finish(st, id, Err(error), me),
                Output::Event(Event::Waiting {
                    group,
                    until,
                    reason,
                    ..
                }) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    tracing::debug!(%group, wait_ms = wait.as_millis() as u64, %reason, "waiting for quota");
                    let _ = self.progress.send(Progress::Waiting {
                        group,
                        wait,
                        reason,
                    });
                }
                Output::Event(Event::NeedToken) => self.fetch_token(),
                Output::Event(Event::TokenRefreshed {
                    valid_for,
                    replaced,
                }) => log_token(valid_for, replaced),
                Output::Event(Event::Warning { message }) => {
                    tracing::warn!(%message, "defender engine");
                }
                Output::Quota(op) => self.spawn_quota(op),
                Output::Wait(t) => {
                    if st.timer != t {
                        st.timer = t;
                        self.timer_changed.notify_one();
                    }
                    return;
                }
            }
        }
    }

    /// Performs a transmit nobody's future waits for (a token request) in a task.
    fn spawn_transmit(self: &Arc<Self>, t: Transmit) {
        let shared = self.clone();
        self.runtime.spawn(async move {
            let send = t.id;
            let performed = shared.perform(t).await;
            let mut st = shared.lock();
            match performed {
                Performed::Answer(result) => answer(&mut st.engine, send, result),
                Performed::Body(body) => {
                    // Only a call's own future sends a streamed hunt (token requests never
                    // stream); here nobody would take the rows.
                    let end = body.streamer.broken(closed("nobody reads this body"));
                    st.engine.handle_stream_end(send, end, Instant::now());
                }
            }
            shared.drain(&mut st, None);
        });
    }

    /// Performs a shared-store operation in a task of its own; an admission comes back
    /// as an input.
    fn spawn_quota(self: &Arc<Self>, op: QuotaOp) {
        let shared = self.clone();
        self.runtime.spawn(async move {
            let answer = match &shared.store {
                Some(store) => store.perform(op).await,
                // The engine asks only when built with a store: unreachable, but answer.
                None => match op {
                    QuotaOp::Acquire { id, .. } => Some((
                        id,
                        defender_core::engine::Admission::Unavailable(
                            "no quota store was given".into(),
                        ),
                    )),
                    _ => None,
                },
            };
            if let Some((id, admission)) = answer {
                let mut st = shared.lock();
                st.engine.handle_admission(id, admission, Instant::now());
                shared.drain(&mut st, None);
            }
        });
    }

    /// Asks the token provider in a task of its own.
    fn fetch_token(self: &Arc<Self>) {
        let shared = self.clone();
        self.runtime.spawn(async move {
            let result = match &shared.provider {
                Some(p) => p.token(&shared.scope).await.map(|(secret, life)| {
                    let now = Instant::now();
                    AccessToken::new(secret, now, now + life)
                }),
                None => Err(Error::Auth(defender_core::ApiError {
                    code: "NoTokenProvider".into(),
                    message: "the engine asked for a token but no provider was given".into(),
                    target: None,
                    ..defender_core::ApiError::default()
                })),
            };
            let mut st = shared.lock();
            st.engine.handle_token(result, Instant::now());
            shared.drain(&mut st, None);
        });
    }

    /// One transmit over HTTP, in a span naming its group, attempt, status and (for a
    /// streamed body) rows, never its headers: the token is one. A streamed hunt's 2xx
    /// body is left to be read ([`Performed::Body`]); every other body is read whole, up
    /// to the size limit.
    async fn perform(&self, t: Transmit) -> Performed {
        let group = t.group.map_or("token", |g| g.as_str());
        let span = tracing::info_span!(
            "defender.call",
            group,
            attempt = t.attempt,
            status = tracing::field::Empty,
            rows = tracing::field::Empty,
        );
        let (send, timeout) = (t.id, t.timeout);
        let head = async {
            let head = if t.stream {
                send_streamed(&self.http, t.request, timeout, self.max_body).await
            } else {
                perform(&self.http, t.request, timeout, self.max_body)
                    .await
                    .map(Head::Whole)
            };
            match &head {
                Ok(h) => {
                    tracing::Span::current().record("status", h.status().as_u16());
                }
                Err(e) => tracing::debug!(kind = %e.kind, "transport error"),
            }
            head
        }
        .instrument(span.clone())
        .await;
        match head {
            Ok(Head::Whole(r)) => Performed::Answer(Ok(r)),
            Ok(Head::Streamed(response)) => Performed::Body(Box::new(Body {
                send,
                response,
                timeout,
                streamer: HuntStreamer::new(),
                span,
            })),
            Err(e) => Performed::Answer(Err(e)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: the timer task ends.
        self.timer_changed.notify_one();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("surface", &self.surface)
            .field("limits", &self.limits)
            .field("max_body", &self.max_body)
            .field("token_provider", &self.provider.is_some())
            .field("quota_store", &self.store)
            .finish_non_exhaustive()
    }
}

/// What a call's future does next.
enum Step {
    /// Return this.
    End(Result<Value, Error>),
    /// Perform this transmit of the call.
    Send(Transmit),
    /// Wait to be woken.
    Wait,
}

/// Reads a call's slot (removing it at the end).
fn next_step(st: &mut State, id: CallId) -> Step {
    let slot = st
        .slots
        .get_mut(&id)
        .expect("a call's slot stays until its future ends"); // removed only here and by its guard
    if let Some(result) = slot.result.take() {
        st.slots.remove(&id);
        return Step::End(result);
    }
    match slot.transmit.take() {
        Some(t) => Step::Send(t),
        None => Step::Wait,
    }
}

/// A call a future started ([`Shared::submit`]) and drives ([`Caller::drive`]).
///
/// Dropped before its end was seen, it cancels the call and answers what it held, so
/// the engine's accounting settles: a transmit never sent (`Connect`: nothing ran,
/// nothing is charged), one in flight (`Other`: what it may have run is charged), a
/// streamed body being read (cut short by the caller: `Closed`, charged likewise).
pub(crate) struct Caller {
    shared: Arc<Shared>,
    pub(crate) id: CallId,
    wake: Arc<Notify>,
    /// What the engine gave the call last, not yet acted on.
    next: Option<Step>,
    /// The transmit this caller is performing.
    sending: Option<SendId>,
    /// A streamed hunt's body being read.
    body: Option<Box<Body>>,
    ended: bool,
}

/// Where driving a call stopped.
pub(crate) enum Drive {
    /// The call ended (boxed: the other variant is empty).
    Done(Box<Result<Value, Error>>),
    /// A streamed hunt's body is arriving (only for [`Call::HuntStream`]): take its items
    /// with [`Caller::read_item`], hand its end to [`Caller::end_body`], then drive
    /// again (the engine may retry).
    Body,
}

impl Caller {
    /// Performs the call's transmits until it ends or a streamed body arrives.
    pub(crate) async fn drive(&mut self) -> Drive {
        loop {
            let step = match self.next.take() {
                Some(step) => step,
                None => next_step(&mut self.shared.lock(), self.id),
            };
            match step {
                Step::End(result) => {
                    self.ended = true;
                    return Drive::Done(Box::new(result));
                }
                Step::Send(t) => {
                    let send = t.id;
                    self.sending = Some(send);
                    let performed = self.shared.perform(t).await;
                    self.sending = None;
                    match performed {
                        Performed::Body(body) => {
                            self.body = Some(body);
                            return Drive::Body;
                        }
                        Performed::Answer(result) => {
                            let mut st = self.shared.lock();
                            answer(&mut st.engine, send, result);
                            self.shared.drain(&mut st, Some(self.id));
                            self.next = Some(next_step(&mut st, self.id));
                        }
                    }
                }
                // Another caller, a spawned task or the timer task fills the slot.
                Step::Wait => self.wake.notified().await,
            }
        }
    }

    /// The body's next item if it needs no more bytes; `None` when it does, or when no
    /// body is being read.
    pub(crate) fn ready_item(&mut self) -> Option<BodyItem> {
        self.body.as_mut()?.ready_item()
    }

    /// The body's next item, reading more of it as needed; `None` when no body is being
    /// read. After [`BodyItem::End`], give the end to [`Caller::end_body`].
    pub(crate) async fn read_item(&mut self) -> Option<BodyItem> {
        Some(self.body.as_mut()?.next_item().await)
    }

    /// The body ended ([`BodyItem::End`]): the engine completes the call, fails it, or (a
    /// break before any row) retries it; [`Caller::drive`] tells which.
    pub(crate) fn end_body(&mut self, end: StreamEnd) {
        let Some(body) = self.body.take() else {
            return;
        };
        let mut st = self.shared.lock();
        st.engine.handle_stream_end(body.send, end, Instant::now());
        self.shared.drain(&mut st, Some(self.id));
        self.next = Some(next_step(&mut st, self.id));
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut st = self.shared.lock();
        let Some(slot) = st.slots.remove(&self.id) else {
            // Its end was taken from the slot (and is dropped unread).
            return;
        };
        let now = Instant::now();
        // A no-op for a call that already ended.
        st.engine.cancel(self.id, now);
        // The engine counts a polled transmit as in flight: answer it so its reservation
        // and shared-store ticket settle.
        let unsent = match self.next.take() {
            Some(Step::Send(t)) => Some(t),
            _ => None,
        };
        for t in [slot.transmit, unsent].into_iter().flatten() {
            let e = TransportError::new(
                TransportErrorKind::Connect,
                "the call was dropped before its request was sent",
            );
            st.engine.handle_transport_error(t.id, e, now);
        }
        if let Some(send) = self.sending {
            let e = TransportError::new(
                TransportErrorKind::Other,
                "the call was dropped while its request was in flight",
            );
            st.engine.handle_transport_error(send, e, now);
        }
        if let Some(body) = self.body.take() {
            // The server ran the query: the running time so far is charged.
            let end = body
                .streamer
                .broken(closed("the caller stopped reading the body"));
            st.engine.handle_stream_end(body.send, end, now);
        }
        self.shared.drain(&mut st, None);
    }
}

/// What sending a request came to.
enum Performed {
    /// The whole answer, for the engine.
    Answer(Result<http::Response<Vec<u8>>, TransportError>),
    /// A streamed hunt's 2xx head: the body is still to be read.
    Body(Box<Body>),
}

/// A response: read whole, or a streamed hunt's, whose body is read as the rows are taken.
enum Head {
    Whole(http::Response<Vec<u8>>),
    Streamed(reqwest::Response),
}

impl Head {
    fn status(&self) -> http::StatusCode {
        match self {
            Head::Whole(r) => r.status(),
            Head::Streamed(r) => r.status(),
        }
    }
}

/// A streamed hunt's body, read a chunk at a time (as hyper hands them over) by the
/// future that takes its items, with no lock held. Nothing reads ahead of the caller:
/// with one element of the document in the decoder, one chunk is what a streamed hunt
/// holds in memory however slow its reader.
pub(crate) struct Body {
    send: SendId,
    response: reqwest::Response,
    /// Bounds each read (not the whole body: that takes as long as its reader takes).
    timeout: Duration,
    streamer: HuntStreamer,
    /// The span of the call's request, entered while reading.
    span: tracing::Span,
}

/// What a streamed body gave.
pub(crate) enum BodyItem {
    /// The next item.
    Item(StreamItem),
    /// The body ended: its last items, and how it ended (for [`Caller::end_body`]).
    End(Vec<StreamItem>, StreamEnd),
}

impl Body {
    /// The next item if the decoder has one without more bytes.
    fn ready_item(&mut self) -> Option<BodyItem> {
        match self.streamer.next_item() {
            Ok(Some(item)) => Some(BodyItem::Item(item)),
            Ok(None) => None,
            Err(e) => Some(BodyItem::End(Vec::new(), StreamEnd::Decode(e))),
        }
    }

    /// The next item, reading more of the body when the decoder needs it. After
    /// [`BodyItem::End`], the body is done.
    async fn next_item(&mut self) -> BodyItem {
        loop {
            if let Some(item) = self.ready_item() {
                return item;
            }
            let read = tokio::time::timeout(self.timeout, self.response.chunk())
                .instrument(self.span.clone())
                .await;
            let error = match read {
                Ok(Ok(Some(chunk))) => {
                    self.streamer.feed(&chunk);
                    continue;
                }
                Ok(Ok(None)) => {
                    let (rest, end) = std::mem::take(&mut self.streamer).finish();
                    if let StreamEnd::Complete { rows, .. } = &end {
                        self.span.record("rows", rows);
                    }
                    return BodyItem::End(rest, end);
                }
                Ok(Err(e)) => map_err(e),
                Err(_) => timed_out(self.timeout),
            };
            self.span.in_scope(|| {
                tracing::debug!(kind = %error.kind, rows = self.streamer.rows(), "streamed body broken");
            });
            let end = std::mem::take(&mut self.streamer).broken(error);
            return BodyItem::End(Vec::new(), end);
        }
    }
}

fn closed(message: &str) -> TransportError {
    TransportError::new(TransportErrorKind::Closed, message)
}

fn timed_out(timeout: Duration) -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        format!("no answer within {timeout:?}"),
    )
}

/// A call's end into its slot; its future is woken unless it is the one draining.
fn finish(st: &mut State, id: CallId, result: Result<Value, Error>, me: Option<CallId>) {
    if let Some(slot) = st.slots.get_mut(&id) {
        slot.result = Some(result);
        if me != Some(id) {
            slot.wake.notify_one();
        }
    }
}

/// The transport's answer, as an input.
fn answer(
    engine: &mut Engine,
    send: SendId,
    result: Result<http::Response<Vec<u8>>, TransportError>,
) {
    let now = Instant::now();
    match result {
        Ok(resp) => engine.handle_response(send, resp, now, SystemTime::now()),
        Err(e) => engine.handle_transport_error(send, e, now),
    }
}

/// Sleeps until the engine's timer, then `handle_timeout` and drain; ends with the last
/// client handle. Holds only a weak reference, so it keeps nothing alive.
async fn timers(shared: Weak<Shared>, changed: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(s) => s.lock().timer,
            None => return,
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = sleep_until(next) => {
                let Some(s) = shared.upgrade() else { return };
                let mut st = s.lock();
                st.engine.handle_timeout(Instant::now());
                s.drain(&mut st, None);
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// One HTTP exchange: the request as the engine built it, the body read up to `max`;
/// `timeout` bounds the whole exchange.
pub(crate) async fn perform(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let mut req = to_reqwest(request)?;
    *req.timeout_mut() = Some(timeout);
    let resp = http.execute(req).await.map_err(map_err)?;
    read_body(resp, max).await
}

/// A streamed hunt's exchange. A 2xx body is left unread: it takes as long as its
/// reader takes over the rows, so `timeout` bounds the exchange up to the response head,
/// then each read ([`Body`]). Any other body is read whole, up to `max`, within
/// `timeout` from the head.
async fn send_streamed(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max: usize,
) -> Result<Head, TransportError> {
    let req = to_reqwest(request)?;
    let resp = tokio::time::timeout(timeout, http.execute(req))
        .await
        .map_err(|_| timed_out(timeout))?
        .map_err(map_err)?;
    if resp.status().is_success() {
        return Ok(Head::Streamed(resp));
    }
    tokio::time::timeout(timeout, read_body(resp, max))
        .await
        .map_err(|_| timed_out(timeout))?
        .map(Head::Whole)
}

fn to_reqwest(request: http::Request<Vec<u8>>) -> Result<reqwest::Request, TransportError> {
    reqwest::Request::try_from(request)
        .map_err(|e| TransportError::new(TransportErrorKind::Other, e.without_url().to_string()))
}

/// Reads a whole body, up to `max` bytes.
async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let declared = resp.content_length().map(|n| n as usize);
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let mut out = http::Response::builder()
        .status(resp.status())
        .version(resp.version());
    if let Some(h) = out.headers_mut() {
        *h = resp.headers().clone();
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
        if body.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        body.extend_from_slice(&chunk);
    }
    out.body(body)
        .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))
}

fn too_large(max: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::BodyTooLarge,
        format!("the response body exceeds {max} bytes"),
    )
}

fn map_err(e: reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        TransportErrorKind::Timeout
    } else if e.is_connect() {
        TransportErrorKind::Connect
    } else if e.is_body() || e.is_decode() || e.is_request() {
        TransportErrorKind::Closed
    } else {
        TransportErrorKind::Other
    };
    // The URL holds no secret (tokens travel in a header), but keep messages short.
    TransportError::new(kind, e.without_url().to_string())
}

/// A new access token: a refresh is worth a line at the default level, the first fetch
/// only in debug logs. No secret is logged.
fn log_token(valid_for: Duration, replaced: bool) {
    let valid_for_s = valid_for.as_secs();
    if replaced {
        tracing::info!(valid_for_s, "access token refreshed");
    } else {
        tracing::debug!(valid_for_s, "access token fetched");
    }
}
