//! How calls run: no driver thread. The engine sits behind a mutex shared by every clone
//! of a `Client`, and each calling thread drives it for itself. No decision is made here.
//!
//! ```text
//!  call ──► lock, submit, drain
//!             │
//!   ┌────────►▼
//!   │    own transmit? ──yes──► hand queued shared work to a waiting thread;
//!   │         │ no              unlock, HTTP, lock, handle_response, drain ──────┐
//!   │         ▼                                                                  │
//!   │    outcome? ──yes──► return (shared work still queued: a waiting thread    │
//!   │         │ no          takes it, or this one does it first)                 │
//!   │         ▼                                                                  │
//!   │    shared work? ──yes──► unlock, perform, lock, answer, drain ─────────────┤
//!   │         │ no   (a token, a store operation)                                │
//!   │         ▼                                                                  │
//!   │    timer due? ──yes──► handle_timeout, drain ──────────────────────────────┤
//!   │         │ no                                                               │
//!   │         ▼                                                                  │
//!   │    wait on the call's condvar, at most until the engine's timer ───────────┤
//!   └────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The mutex is never held during IO. Draining routes every output: a transmit or a final
//! event of another call goes into that call's slot and wakes its thread; tokens and
//! store operations ("shared work") go into one queue that whichever thread is free
//! performs. In the common case the calling thread sends its own request: no hand-off.
//!
//! Timers: every thread waiting on its condvar waits at most until the engine's latest
//! `Wait(Some(t))`, and a drain that moves that instant earlier wakes them all, so a timer
//! fires while any caller waits. Only queued calls have timers, and a queued call's thread
//! is never inside its own HTTP exchange: it waits (and so owns the timers) or is busy
//! with shared work and looks at the timer when it is done.
//!
//! Streamed hunts (`Call::HuntStream`, see `crate::HuntStream`): when the response to a
//! call's own transmit is a 2xx, `drive` returns the unread body to the calling thread,
//! which reads it a chunk at a time, unlocked, as its consumer takes the rows, then hands
//! its end to the engine (`end_body`) and drives again (a break before any row is
//! retried). Its slot stays, neither waiting nor holding a transmit: like a thread inside
//! its own exchange, it takes no shared work and owns no timer (the call is in flight).
//! A consumer that stops early abandons the call: the engine cancels it and is told the
//! body was cut short, so its running time is settled.
//!
//! Another thread may stop a call ([`Shared::cancel`]: a ranged hunt dropped with windows
//! still running): the request is marked in its slot and its condvar woken; the call's own
//! thread, the only one that sends its requests, abandons it at its next look, before
//! sending anything more.
//!
//! Shared work never waits behind a thread's own exchange (a hunting query may run for
//! minutes): a thread about to send its own request hands queued shared work to a
//! waiting thread. The work's beneficiaries (calls waiting for a token or an admission)
//! have threads that are waiting or busy here, so some thread takes it.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{
    Admission, AdmitId, Call, CallId, Engine, Event, GroupUsage, HuntStreamer, Output, QuotaOp,
    SendId, StreamEnd, StreamItem, Transmit, Value,
};
use defender_core::token::AccessToken;
use defender_core::{Error, TransportError, TransportErrorKind};

use crate::{Progress, QuotaStore, TokenProvider};

/// What every clone of a client shares: the engine and the means to do its IO.
pub(crate) struct Shared {
    state: Arc<Mutex<State>>,
    agent: ureq::Agent,
    provider: Option<Arc<dyn TokenProvider>>,
    scope: String,
    max_body: usize,
    progress: Option<mpsc::Sender<Progress>>,
    store: Option<Arc<dyn QuotaStore>>,
    /// The threads that ask the token provider and the quota store (started on first
    /// use): code we did not write may hang, and must not hold a calling thread.
    token_worker: std::sync::OnceLock<Worker>,
    store_worker: std::sync::OnceLock<Worker>,
}

/// A thread that runs jobs in order and hands their answers to the engine's queue of
/// inputs, waking the waiting threads to take them. It ends when the client is dropped.
struct Worker {
    jobs: Mutex<mpsc::Sender<Job>>,
}

type Job = Box<dyn FnOnce() -> Option<Input> + Send>;

impl Worker {
    fn start(name: &str, state: Arc<Mutex<State>>) -> Worker {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for job in rx {
                    let Some(input) = job() else { continue };
                    let Ok(mut st) = state.lock() else { return };
                    st.inputs.push_back(input);
                    // Any waiting thread can answer it; one that is busy finds it later.
                    for slot in st.slots.values().filter(|s| s.waiting) {
                        slot.wake.notify_one();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a worker thread");
        }
        Worker {
            jobs: Mutex::new(tx),
        }
    }

    /// Queues `job`; gives it back when the worker is gone (it could not start).
    fn run(&self, job: Job) -> Result<(), Job> {
        match self.jobs.lock() {
            Ok(tx) => tx.send(job).map_err(|e| e.0),
            Err(_) => Err(job),
        }
    }
}

/// Everything behind the mutex.
struct State {
    engine: Engine,
    /// The calls in progress, one per calling thread.
    slots: HashMap<CallId, Slot>,
    /// Tokens to fetch and store operations to perform, by whichever thread is free.
    work: VecDeque<Work>,
    /// The engine's latest `Wait`: when `handle_timeout` is due.
    timer: Option<Instant>,
    /// Answers of the token provider and the quota store, from their worker threads,
    /// for any calling thread to hand to the engine.
    inputs: VecDeque<Input>,
}

/// One call's mailbox.
struct Slot {
    wake: Arc<Condvar>,
    /// Its thread waits on `wake`.
    waiting: bool,
    /// Its next request, for its thread to send (the engine has at most one per call).
    transmit: Option<Transmit>,
    /// The request its thread is exchanging now: if the thread unwinds out of the
    /// exchange (a panic in the HTTP stack or a middleware), [`Shared::abandon`] settles
    /// it as a request that may have run.
    sending: Option<SendId>,
    /// How it ended.
    outcome: Option<Result<Value, Error>>,
    /// Another thread asked to stop it ([`Shared::cancel`]): its own thread abandons it.
    cancelled: bool,
}

/// IO that does not belong to one call.
enum Work {
    /// A token request (or a request whose caller is gone).
    Transmit(Box<Transmit>),
    /// An operation on the shared quota store.
    Quota(QuotaOp),
    /// A token from the token provider.
    Token,
}

/// The answer of some IO, for the engine.
enum Input {
    Response(SendId, Result<http::Response<Vec<u8>>, TransportError>),
    Admission(AdmitId, Admission),
    Token(Result<AccessToken, Error>),
}

/// What sending a request came to.
enum Sent {
    /// The whole answer, for the engine.
    Answer(Input),
    /// A streamed hunt's 2xx head: the body is still to be read.
    Body(Box<Body>),
}

/// A response: read whole, or a streamed hunt's, whose body is read as the rows are taken.
enum Head {
    Whole(http::Response<Vec<u8>>),
    Streamed(http::Response<ureq::Body>),
}

/// A call this thread started ([`Shared::start`]) and drives.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) id: CallId,
    wake: Arc<Condvar>,
}

/// Where driving a call stopped.
pub(crate) enum Step {
    /// The call ended.
    Done(Result<Value, Error>),
    /// A streamed hunt's body is arriving (only for [`Call::HuntStream`]).
    Body(Box<Body>),
}

/// Bytes read from a streamed body at a time. With one element of the document in the
/// decoder, this is what a streamed hunt holds in memory however slow its reader.
const CHUNK: usize = 64 * 1024;

/// A streamed hunt's body, read a chunk at a time by the thread that takes its items,
/// with no lock held: a slow reader slows the read, nothing piles up.
pub(crate) struct Body {
    send: SendId,
    reader: ureq::BodyReader<'static>,
    chunk: Box<[u8]>,
    streamer: HuntStreamer,
    /// The span of the call's request, entered while reading.
    span: tracing::Span,
}

/// What a streamed body gave.
pub(crate) enum BodyItem {
    /// The next item.
    Item(StreamItem),
    /// The body ended: its last items, and how it ended (for [`Shared::end_body`]).
    End(Vec<StreamItem>, StreamEnd),
}

impl Body {
    /// The request this body answers.
    pub(crate) fn send(&self) -> SendId {
        self.send
    }

    /// The next item, reading more of the body when the decoder needs it. After
    /// [`BodyItem::End`], the body is done.
    pub(crate) fn next_item(&mut self) -> BodyItem {
        loop {
            match self.streamer.next_item() {
                Ok(Some(item)) => return BodyItem::Item(item),
                Ok(None) => {}
                Err(e) => return BodyItem::End(Vec::new(), StreamEnd::Decode(e)),
            }
            let _enter = self.span.enter();
            match std::io::Read::read(&mut self.reader, &mut self.chunk) {
                Ok(0) => {
                    let (rest, end) = std::mem::take(&mut self.streamer).finish();
                    if let StreamEnd::Complete { rows, .. } = &end {
                        self.span.record("rows", rows);
                    }
                    return BodyItem::End(rest, end);
                }
                Ok(n) => self.streamer.feed(&self.chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let error = map_io(e);
                    tracing::debug!(kind = %error.kind, rows = self.streamer.rows(), "streamed body broken");
                    let end = std::mem::take(&mut self.streamer).broken(error);
                    return BodyItem::End(Vec::new(), end);
                }
            }
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("send", &self.send)
            .field("rows", &self.streamer.rows())
            .finish_non_exhaustive()
    }
}

/// What a client is built with.
pub(crate) struct Parts {
    pub(crate) engine: Engine,
    pub(crate) agent: ureq::Agent,
    pub(crate) provider: Option<Arc<dyn TokenProvider>>,
    pub(crate) scope: String,
    pub(crate) max_body: usize,
    pub(crate) progress: Option<mpsc::Sender<Progress>>,
    pub(crate) store: Option<Arc<dyn QuotaStore>>,
}

impl Shared {
    pub(crate) fn new(parts: Parts) -> Shared {
        Shared {
            state: Arc::new(Mutex::new(State {
                engine: parts.engine,
                slots: HashMap::new(),
                work: VecDeque::new(),
                timer: None,
                inputs: VecDeque::new(),
            })),
            agent: parts.agent,
            provider: parts.provider,
            scope: parts.scope,
            max_body: parts.max_body,
            progress: parts.progress,
            store: parts.store,
            token_worker: std::sync::OnceLock::new(),
            store_worker: std::sync::OnceLock::new(),
        }
    }

    /// A panic while the engine was borrowed leaves it in an unknown state: the client is
    /// then unusable, as a stopped driver was.
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state.lock().map_err(|_| Error::Shutdown)
    }

    /// Usage of every group's quota now.
    pub(crate) fn usage(&self) -> Result<Vec<GroupUsage>, Error> {
        Ok(self.lock()?.engine.usage(Instant::now()))
    }

    /// Makes one call on this thread, blocking until it ends. A streamed hunt's rows are
    /// decoded and dropped: its value is the summary (`HuntStream` hands rows out).
    pub(crate) fn call(&self, call: Call) -> Result<Value, Error> {
        self.call_with(call, |_| {})
    }

    /// [`Shared::call`], telling `started` the call's id once it is submitted, so that
    /// another thread may [`Shared::cancel`] it.
    pub(crate) fn call_with(
        &self,
        call: Call,
        started: impl FnOnce(CallId),
    ) -> Result<Value, Error> {
        let caller = self.start(call)?;
        started(caller.id);
        // Cancels the call if this thread leaves early (a panic, a poisoned engine).
        let mut guard = CallGuard {
            shared: self,
            id: Some(caller.id),
        };
        loop {
            match self.drive(&caller)? {
                Step::Done(outcome) => {
                    guard.id = None;
                    return outcome;
                }
                Step::Body(mut body) => {
                    let end = loop {
                        match body.next_item() {
                            BodyItem::Item(_) => {}
                            BodyItem::End(_, end) => break end,
                        }
                    };
                    self.end_body(body.send(), end)?;
                }
            }
        }
    }

    /// Submits a call for this thread to drive with [`Shared::drive`]. If the thread
    /// gives up before `drive` returned [`Step::Done`], it must [`Shared::abandon`] it.
    pub(crate) fn start(&self, call: Call) -> Result<Caller, Error> {
        let wake = Arc::new(Condvar::new());
        let mut st = self.lock()?;
        let id = st.engine.submit(call, Instant::now());
        st.slots.insert(
            id,
            Slot {
                wake: wake.clone(),
                waiting: false,
                transmit: None,
                outcome: None,
                cancelled: false,
                sending: None,
            },
        );
        self.drain(&mut st);
        Ok(Caller { id, wake })
    }

    /// Runs the call on this thread until it ends, or until a streamed hunt's body
    /// arrives ([`Step::Body`]: read it, hand its end to [`Shared::end_body`], then
    /// drive again, since the engine may retry).
    pub(crate) fn drive(&self, caller: &Caller) -> Result<Step, Error> {
        let Caller { id, wake } = caller;
        let id = *id;
        let mut st = self.lock()?;
        loop {
            if let Some(input) = st.inputs.pop_front() {
                self.answer(&mut st, input);
                continue;
            }
            let slot = st
                .slots
                .get_mut(&id)
                .expect("a slot lives until its call returns"); // removed only below, or by abandon after the last drive
            if slot.cancelled && slot.outcome.is_none() {
                // Checked before sending: a cancelled call's request never goes out.
                drop(st);
                self.abandon(id, None);
                return Ok(Step::Done(Err(Error::Cancelled)));
            }
            if let Some(t) = slot.transmit.take() {
                slot.sending = Some(t.id);
                // Shared work must not wait behind this exchange: a waiting thread takes it.
                wake_for_work(&mut st);
                drop(st);
                let sent = self.transmit(t);
                st = self.lock()?;
                if let Some(slot) = st.slots.get_mut(&id) {
                    slot.sending = None;
                }
                match sent {
                    Sent::Answer(input) => {
                        self.answer(&mut st, input);
                        continue;
                    }
                    Sent::Body(body) => return Ok(Step::Body(body)),
                }
            }
            if slot.outcome.is_some() && (st.work.is_empty() || wake_for_work(&mut st)) {
                // Done; queued shared work, if any, went to a waiting thread.
                let outcome = st.slots.remove(&id).and_then(|s| s.outcome);
                return Ok(Step::Done(outcome.expect("checked above"))); // the slot had an outcome
            }
            if let Some(work) = st.work.pop_front() {
                drop(st);
                let input = self.perform(work);
                st = self.lock()?;
                if let Some(input) = input {
                    self.answer(&mut st, input);
                }
                continue;
            }
            let now = Instant::now();
            match st.timer {
                Some(t) if t <= now => {
                    st.engine.handle_timeout(now);
                    self.drain(&mut st);
                }
                timer => {
                    set_waiting(&mut st, id, true);
                    st = match timer {
                        Some(t) => wake
                            .wait_timeout(st, t - now)
                            .map(|(st, _)| st)
                            .map_err(|_| Error::Shutdown)?,
                        None => wake.wait(st).map_err(|_| Error::Shutdown)?,
                    };
                    set_waiting(&mut st, id, false);
                }
            }
        }
    }

    /// A streamed body ended ([`BodyItem::End`]): the engine completes the call, fails it,
    /// or (a break before any row) retries it.
    pub(crate) fn end_body(&self, send: SendId, end: StreamEnd) -> Result<(), Error> {
        let mut st = self.lock()?;
        st.engine.handle_stream_end(send, end, Instant::now());
        self.drain(&mut st);
        Ok(())
    }

    /// Asks the thread driving call `id` to give it up: at its next look at the call
    /// (at once if it waits; after the exchange if it is inside one) it abandons it and
    /// returns [`Error::Cancelled`]. A request not sent yet is never sent, and gives its
    /// quota back; one already sent is answered and counted as usual. A call that
    /// already ended, or an unknown id, is left alone.
    pub(crate) fn cancel(&self, id: CallId) {
        let mut st = match self.state.lock() {
            Ok(st) => st,
            // The drivers see the poison themselves and stop.
            Err(_) => return,
        };
        if let Some(slot) = st.slots.get_mut(&id) {
            slot.cancelled = true;
            slot.wake.notify_one();
        }
    }

    /// Gives up a call this thread started and has not seen end: the engine cancels it,
    /// settles what it had sent (a body being read, given as `body`, was cut short by
    /// the caller), and every waiting thread wakes to take over what this one held.
    pub(crate) fn abandon(&self, id: CallId, body: Option<Box<Body>>) {
        let end = body.map(|b| {
            let send = b.send;
            let error = TransportError::new(
                TransportErrorKind::Closed,
                "the caller stopped reading the body",
            );
            (send, b.streamer.broken(error))
        });
        match self.state.lock() {
            Ok(mut st) => {
                let now = Instant::now();
                let (unsent, sending) = st
                    .slots
                    .remove(&id)
                    .map_or((None, None), |s| (s.transmit, s.sending));
                st.engine.cancel(id, now);
                if let Some(send) = sending {
                    // The thread unwound out of the exchange: the request may have run,
                    // so its running time is charged and its reservation released.
                    let error = TransportError::new(
                        TransportErrorKind::Other,
                        "the call was given up while its request was in flight",
                    );
                    st.engine.handle_transport_error(send, error, now);
                }
                if let Some((send, end)) = end {
                    st.engine.handle_stream_end(send, end, now);
                }
                if let Some(t) = unsent {
                    // Handed to the call's thread, never sent: nothing ran on the server.
                    let error = TransportError::new(
                        TransportErrorKind::Connect,
                        "the call was given up before its request was sent",
                    );
                    st.engine.handle_transport_error(t.id, error, now);
                }
                self.drain(&mut st);
                for slot in st.slots.values() {
                    slot.wake.notify_one();
                }
            }
            Err(poisoned) => {
                // The engine cannot be trusted: wake everyone to see the poison and stop.
                for slot in poisoned.into_inner().slots.values() {
                    slot.wake.notify_one();
                }
            }
        }
    }

    /// Gives the engine the answer of some IO, then drains it.
    fn answer(&self, st: &mut State, input: Input) {
        let now = Instant::now();
        match input {
            Input::Response(id, Ok(resp)) => {
                st.engine.handle_response(id, resp, now, SystemTime::now())
            }
            Input::Response(id, Err(e)) => st.engine.handle_transport_error(id, e, now),
            Input::Admission(id, answer) => st.engine.handle_admission(id, answer, now),
            Input::Token(t) => st.engine.handle_token(t, now),
        }
        self.drain(st);
    }

    /// Drains the engine until `Wait`, routing every output.
    fn drain(&self, st: &mut State) {
        loop {
            match st.engine.poll_output() {
                Output::Transmit(t) => match t.call.and_then(|c| st.slots.get_mut(&c)) {
                    Some(slot) => {
                        debug_assert!(slot.transmit.is_none(), "one request per call at a time");
                        slot.transmit = Some(t);
                        slot.wake.notify_one();
                    }
                    None => st.work.push_back(Work::Transmit(Box::new(t))),
                },
                Output::Event(Event::Completed { id, value }) => finish(st, id, Ok(value)),
                Output::Event(Event::Failed { id, error }) => finish(st, id, Err(error)),
                Output::Event(Event::Waiting {
                    group,
                    until,
                    reason,
                    ..
                }) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    tracing::debug!(%group, wait_ms = wait.as_millis() as u64, %reason, "waiting for quota");
                    if let Some(p) = &self.progress {
                        let _ = p.send(Progress::Waiting {
                            group,
                            wait,
                            reason,
                        });
                    }
                }
                Output::Event(Event::NeedToken) => st.work.push_back(Work::Token),
                Output::Event(Event::TokenRefreshed {
                    valid_for,
                    replaced,
                }) => log_token(valid_for, replaced),
                Output::Event(Event::Warning { message }) => {
                    tracing::warn!(%message, "defender engine");
                }
                Output::Quota(op) => st.work.push_back(Work::Quota(op)),
                Output::Wait(t) => {
                    let earlier = match (t, st.timer) {
                        (Some(new), Some(old)) => new < old,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    st.timer = t;
                    if earlier {
                        // Waiting threads sleep until the old instant at most: re-arm them.
                        for slot in st.slots.values().filter(|s| s.waiting) {
                            slot.wake.notify_one();
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Sends one request, under the call's span. A streamed hunt's 2xx body is left to
    /// be read ([`Sent::Body`]); every other body is read up to the size limit.
    fn transmit(&self, t: Transmit) -> Sent {
        let group = t.group.map_or("token", |g| g.as_str());
        let span = tracing::info_span!(
            "defender.call",
            group,
            attempt = t.attempt,
            status = tracing::field::Empty,
            rows = tracing::field::Empty,
        );
        let enter = span.enter();
        let result = send(&self.agent, t.request, t.timeout, t.stream).and_then(|resp| {
            span.record("status", resp.status().as_u16());
            if t.stream && resp.status().is_success() {
                Ok(Head::Streamed(resp))
            } else {
                read_body(resp, self.max_body).map(Head::Whole)
            }
        });
        if let Err(e) = &result {
            tracing::debug!(kind = %e.kind, "transport error");
        }
        drop(enter);
        match result {
            Ok(Head::Streamed(resp)) => Sent::Body(Box::new(Body {
                send: t.id,
                reader: resp.into_body().into_reader(),
                chunk: vec![0; CHUNK].into_boxed_slice(),
                streamer: HuntStreamer::new(),
                span,
            })),
            Ok(Head::Whole(resp)) => Sent::Answer(Input::Response(t.id, Ok(resp))),
            Err(e) => Sent::Answer(Input::Response(t.id, Err(e))),
        }
    }

    /// Performs shared work. A panic in the caller's token provider or store fails what
    /// depended on it instead of leaving it waiting forever.
    fn perform(&self, work: Work) -> Option<Input> {
        match work {
            Work::Transmit(t) => match self.transmit(*t) {
                Sent::Answer(input) => Some(input),
                Sent::Body(body) => {
                    // Only a call's own thread sends a streamed hunt; a caller gone before
                    // its request was sent leaves nobody for the rows.
                    let end = body.streamer.broken(TransportError::new(
                        TransportErrorKind::Closed,
                        "nobody reads this body",
                    ));
                    let mut st = self.lock().ok()?;
                    st.engine.handle_stream_end(body.send, end, Instant::now());
                    self.drain(&mut st);
                    None
                }
            },
            Work::Token => {
                let Some(provider) = self.provider.clone() else {
                    return Some(Input::Token(Err(provider_error(
                        "the engine asked for a token but no provider was given",
                    ))));
                };
                let scope = self.scope.clone();
                // On a worker: a provider that hangs or panics holds no calling thread;
                // the engine's token timeout ends the calls that wait for it.
                self.offload(
                    &self.token_worker,
                    "defender-token",
                    Box::new(move || {
                        let result = catch_unwind(AssertUnwindSafe(|| provider.token(&scope)))
                            .unwrap_or_else(|_| {
                                Err(Error::TokenUnavailable {
                                    message: "the token provider panicked".into(),
                                })
                            })
                            .map(|(secret, life)| {
                                let now = Instant::now();
                                AccessToken::new(secret, now, now + life)
                            });
                        Some(Input::Token(result))
                    }),
                )
            }
            Work::Quota(op) => {
                let admit = match &op {
                    QuotaOp::Acquire { id, .. } => Some(*id),
                    _ => None,
                };
                let Some(store) = self.store.clone() else {
                    // The engine emits store operations only in shared mode, set with a store.
                    let answer = Admission::Unavailable("no quota store was given".into());
                    return admit.map(|id| Input::Admission(id, answer));
                };
                // On a worker, as tokens: the engine's store timeout bounds the wait.
                self.offload(
                    &self.store_worker,
                    "defender-quota-store",
                    Box::new(
                        move || match catch_unwind(AssertUnwindSafe(|| store.perform(op))) {
                            Ok(answer) => answer.map(|(id, a)| Input::Admission(id, a)),
                            Err(_) => admit.map(|id| {
                                Input::Admission(
                                    id,
                                    Admission::Unavailable("the store panicked".into()),
                                )
                            }),
                        },
                    ),
                )
            }
        }
    }
}

impl Shared {
    /// Hands `job` to the worker in `cell` (started on first use); runs it here when no
    /// worker thread could be started.
    fn offload(&self, cell: &std::sync::OnceLock<Worker>, name: &str, job: Job) -> Option<Input> {
        let worker = cell.get_or_init(|| Worker::start(name, self.state.clone()));
        match worker.run(job) {
            Ok(()) => None,
            Err(job) => job(),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The engine holds the credentials and the token: not shown.
        f.debug_struct("Shared")
            .field("provider", &self.provider)
            .field("max_body", &self.max_body)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn provider_error(message: &str) -> Error {
    Error::Auth(defender_core::ApiError {
        code: "NoTokenProvider".into(),
        message: message.into(),
        target: None,
        ..defender_core::ApiError::default()
    })
}

fn set_waiting(st: &mut State, id: CallId, waiting: bool) {
    if let Some(slot) = st.slots.get_mut(&id) {
        slot.waiting = waiting;
    }
}

/// A call ended: its thread takes the outcome from its slot.
fn finish(st: &mut State, id: CallId, outcome: Result<Value, Error>) {
    if let Some(slot) = st.slots.get_mut(&id) {
        slot.outcome = Some(outcome);
        slot.wake.notify_one();
    }
}

/// Wakes waiting threads for the queued shared work (one per item); whether any woke.
fn wake_for_work(st: &mut State) -> bool {
    let mut wanted = st.work.len();
    let mut woke = false;
    for slot in st.slots.values_mut().filter(|s| s.waiting) {
        if wanted == 0 {
            break;
        }
        // Not waiting any more as far as the next hand-off is concerned.
        slot.waiting = false;
        slot.wake.notify_one();
        wanted -= 1;
        woke = true;
    }
    woke
}

/// Cleans up after a call that did not return normally (a panic, or a poisoned engine):
/// see [`Shared::abandon`].
struct CallGuard<'a> {
    shared: &'a Shared,
    id: Option<CallId>,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.abandon(id, None);
        }
    }
}

/// One HTTP exchange: the request as the engine built it, the body read up to `max`.
pub fn perform(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    read_body(send(agent, request, timeout, false)?, max)
}

/// Sends a request and reads the response head. `timeout` bounds the whole exchange,
/// except for a streamed body, which takes as long as its reader takes over the rows:
/// there it bounds each phase up to the head, then each read.
fn send(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    stream: bool,
) -> Result<http::Response<ureq::Body>, TransportError> {
    let config = agent.configure_request(request);
    let config = if stream {
        let t = Some(timeout);
        config
            .timeout_global(None)
            .timeout_per_call(None)
            .timeout_recv_body(None)
            .timeout_resolve(t)
            .timeout_connect(t)
            .timeout_send_request(t)
            .timeout_send_body(t)
            .timeout_recv_response(t)
            .timeout_per_read(t)
    } else {
        config.timeout_global(Some(timeout))
    };
    agent.run(config.build()).map_err(map_err)
}

/// Reads a whole body, up to `max` bytes.
fn read_body(
    mut resp: http::Response<ureq::Body>,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let declared = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(max as u64)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => too_large(max),
            other => map_err(other),
        })?;
    let (parts, _) = resp.into_parts();
    Ok(http::Response::from_parts(parts, bytes))
}

/// Resolves IP literals (the emulator, a local proxy) on the calling thread and hands
/// names to ureq's own resolver. That one spawns a thread for every lookup when the
/// request has a timeout, and ureq resolves before it looks for a pooled connection: on
/// loopback that thread cost more than the rest of the exchange.
#[derive(Debug, Default)]
pub(crate) struct LiteralResolver(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for LiteralResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if config.ip_family() == ureq::config::IpFamily::Any {
            if let Some(addr) = ip_literal(uri) {
                let mut addrs = self.empty();
                addrs.push(addr);
                return Ok(addrs);
            }
        }
        self.0.resolve(uri, config, timeout)
    }
}

/// The address of a URI whose host is an IP address.
fn ip_literal(uri: &http::Uri) -> Option<std::net::SocketAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().ok()?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

fn too_large(max: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::BodyTooLarge,
        format!("the response body exceeds {max} bytes"),
    )
}

fn map_err(e: ureq::Error) -> TransportError {
    TransportError::new(error_kind(&e), e.to_string())
}

/// A failed read of a body: ureq's errors come wrapped in `io::Error`.
fn map_io(e: std::io::Error) -> TransportError {
    let kind = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
    {
        Some(inner) => error_kind(inner),
        None => match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                TransportErrorKind::Timeout
            }
            _ => TransportErrorKind::Closed,
        },
    };
    TransportError::new(kind, e.to_string())
}

fn error_kind(e: &ureq::Error) -> TransportErrorKind {
    match e {
        ureq::Error::Timeout(_) => TransportErrorKind::Timeout,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TransportErrorKind::Connect,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            TransportErrorKind::Connect
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            TransportErrorKind::Timeout
        }
        ureq::Error::Io(_) | ureq::Error::Protocol(_) => TransportErrorKind::Closed,
        ureq::Error::BodyExceedsLimit(_) => TransportErrorKind::BodyTooLarge,
        _ => TransportErrorKind::Other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_resolve_without_a_lookup() {
        let at = |u: &str| ip_literal(&u.parse().unwrap());
        assert_eq!(
            at("http://127.0.0.1:8080/api"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(at("https://[::1]/x"), Some("[::1]:443".parse().unwrap()));
        assert_eq!(at("http://10.0.0.1"), Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(at("https://api.security.microsoft.com/api"), None);
        assert_eq!(at("/relative"), None);
    }
}
