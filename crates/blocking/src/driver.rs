//! How calls run: no driver thread. The dispatcher (`defender_core::dispatch`) sits
//! behind a mutex shared by every clone of a `Client`, and each calling thread drives its
//! own call. No decision is made here: this module moves bytes and wakes threads.
//!
//! ```text
//!  call ──► lock, submit
//!   ┌────────►▼
//!   │     next(id) ── Send ──► hand queued work to a parked thread; unlock, HTTP,
//!   │       │                  lock, handle_response ─────────────────────────────┐
//!   │       ├──── Done ──► return (queued work goes to a parked thread first, or   │
//!   │       │              this one performs it)                                   │
//!   │       └──── Wait ──► work queued? unlock, perform, lock, answer ─────────────┤
//!   │                      else park on the call's condvar, at most until the      │
//!   │                      dispatcher's timer (next fires it) ─────────────────────┤
//!   └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The mutex is never held during IO. Work that belongs to no call (a token request, a
//! store operation) is performed by whichever calling thread is free; the token provider
//! and the quota store run on worker threads of their own (code we did not write may hang,
//! and must not hold a calling thread). Shared work never waits behind a thread's own
//! exchange (a hunting query may run for minutes): a thread about to send its own
//! request hands queued work to a parked thread.
//!
//! Another thread may stop a call ([`Shared::cancel`]: a ranged hunt dropped with windows
//! still running); a thread that unwinds out of its call (a panic in the HTTP stack or a
//! middleware) or drops a stream abandons it ([`Shared::abandon`]): the dispatcher
//! settles what it held.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use defender_core::dispatch::{Dispatcher, Next, Wake, Work};
use defender_core::engine::{
    Admission, AdmitId, Call, CallId, Engine, GroupUsage, QuotaOp, SendId, StreamEnd, Transmit,
    Value,
};
use defender_core::token::AccessToken;
use defender_core::{Error, TransportError, TransportErrorKind};

use crate::http::{Body, Sent};
use crate::{Progress, QuotaStore, TokenProvider};

/// A thread's wake primitive, for the dispatcher.
#[derive(Debug, Clone)]
struct Waker(Arc<Condvar>);

impl Wake for Waker {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Everything behind the mutex.
struct State {
    dispatcher: Dispatcher<Waker>,
    progress: Option<mpsc::Sender<Progress>>,
}

impl State {
    /// Gives the dispatcher the answer of some IO.
    fn answer(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Response(send, answer) => {
                self.dispatcher
                    .handle_response(send, answer, now, SystemTime::now())
            }
            Input::Admission(id, answer) => self.dispatcher.handle_admission(id, answer, now),
            Input::Token(t) => self.dispatcher.handle_token(t, now),
            Input::Fetched(t) => self.dispatcher.handle_fetched(t, now),
        }
    }

    /// Hands progress out.
    fn flush(&mut self) {
        while let Some(p) = self.dispatcher.poll_progress() {
            if let Some(tx) = &self.progress {
                let _ = tx.send(p);
            }
        }
    }
}

/// What every clone of a client shares: the dispatcher and the means to do its IO.
pub(crate) struct Shared {
    state: Arc<Mutex<State>>,
    agent: ureq::Agent,
    provider: Option<Arc<dyn TokenProvider>>,
    scope: String,
    max_body: usize,
    store: Option<Arc<dyn QuotaStore>>,
    /// The threads that ask the token provider and the quota store (started on first
    /// use): code we did not write may hang, and must not hold a calling thread.
    token_worker: std::sync::OnceLock<Worker>,
    store_worker: std::sync::OnceLock<Worker>,
}

/// A thread that runs jobs in order and hands their answers to the dispatcher, waking
/// parked threads for the work that follows. It ends when the client is dropped.
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
                    st.answer(input);
                    st.flush();
                    st.dispatcher.wake_for_work();
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

/// The answer of some IO, for the dispatcher.
enum Input {
    Response(SendId, Result<http::Response<Vec<u8>>, TransportError>),
    Admission(AdmitId, Admission),
    Token(Result<AccessToken, Error>),
    Fetched(Result<defender_core::credential::Fetched, Error>),
}

/// A call this thread started ([`Shared::start`]) and drives.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) id: CallId,
    wake: Arc<Condvar>,
}

/// Where driving a call stopped.
pub(crate) enum Step {
    /// The call ended (boxed: it is large).
    Done(Box<Result<Value, Error>>),
    /// A streamed hunt's body is arriving (only for [`Call::HuntStream`]).
    Body(Box<Body>),
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
                dispatcher: Dispatcher::new(parts.engine),
                progress: parts.progress,
            })),
            agent: parts.agent,
            provider: parts.provider,
            scope: parts.scope,
            max_body: parts.max_body,
            store: parts.store,
            token_worker: std::sync::OnceLock::new(),
            store_worker: std::sync::OnceLock::new(),
        }
    }

    /// A panic while the dispatcher was borrowed leaves it in an unknown state: the
    /// client is then unusable, as a stopped driver was.
    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state.lock().map_err(|_| Error::Shutdown)
    }

    /// The source that gave the latest token, with a token source.
    pub(crate) fn token_source(&self) -> Option<&'static str> {
        self.lock().ok()?.dispatcher.token_source()
    }

    /// Usage of every group's quota now: the store's, when one admits the calls.
    pub(crate) fn usage(&self) -> Result<Vec<GroupUsage>, Error> {
        let own = self.lock()?.dispatcher.usage(Instant::now());
        match self.store.as_ref().and_then(|s| s.usage()) {
            None => Ok(own),
            Some(counted) => counted
                .map(|u| GroupUsage::with_own_calls(u, &own))
                .map_err(|message| Error::QuotaStore { message }),
        }
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
        if let Call::HuntStream(request) = call {
            // Abandons the call if this thread leaves early (a panic, an error).
            let mut run = crate::stream::Guarded {
                shared: self,
                run: crate::stream::Run::new(request),
            };
            while let Some(item) = run.run.next(self) {
                item?;
            }
            let summary = run.run.take_summary();
            return summary.map(Value::HuntStreamed).ok_or(Error::Internal {
                message: "a streamed hunt ended without its summary".into(),
            });
        }
        let caller = self.start(call)?;
        started(caller.id);
        // Abandons the call if this thread leaves early (a panic, a poisoned client).
        let mut guard = CallGuard {
            shared: self,
            id: Some(caller.id),
        };
        match self.drive(&caller)? {
            Step::Done(outcome) => {
                guard.id = None;
                *outcome
            }
            // Only a streamed hunt's transmit streams.
            Step::Body(_) => Err(Error::Internal {
                message: "a call that does not stream got a streamed body".into(),
            }),
        }
    }

    /// Submits a call for this thread to drive with [`Shared::drive`]. If the thread
    /// gives up before `drive` returned [`Step::Done`], it must [`Shared::abandon`] it.
    pub(crate) fn start(&self, call: Call) -> Result<Caller, Error> {
        let wake = Arc::new(Condvar::new());
        let mut st = self.lock()?;
        let id = st
            .dispatcher
            .submit(call, Waker(wake.clone()), Instant::now());
        st.flush();
        Ok(Caller { id, wake })
    }

    /// Runs the call on this thread until it ends, or until a streamed hunt's body
    /// arrives ([`Step::Body`]: read it, hand its end to [`Shared::end_body`], then
    /// drive again, since the engine may retry).
    pub(crate) fn drive(&self, caller: &Caller) -> Result<Step, Error> {
        let id = caller.id;
        let mut st = self.lock()?;
        loop {
            let now = Instant::now();
            match st.dispatcher.next(id, now) {
                Next::Done(outcome) => {
                    // Queued work goes to a parked thread, or this one performs it first.
                    while st.dispatcher.has_work() && !st.dispatcher.wake_for_work() {
                        st = self.perform_one(st)?;
                    }
                    st.flush();
                    return Ok(Step::Done(Box::new(outcome)));
                }
                Next::Send(t) => {
                    // Work must not wait behind this exchange: a parked thread takes it.
                    st.dispatcher.wake_for_work();
                    st.flush();
                    drop(st);
                    let send = t.id;
                    let sent = self.transmit(t);
                    st = self.lock()?;
                    match sent {
                        Sent::Answer(answer) => st.answer(Input::Response(send, answer)),
                        Sent::Body(body) => {
                            st.dispatcher.handle_body(send, body.status, Instant::now());
                            return Ok(Step::Body(body));
                        }
                    }
                }
                Next::Wait if st.dispatcher.has_work() => st = self.perform_one(st)?,
                Next::Wait => {
                    st.flush();
                    st.dispatcher.park(id);
                    let timer = st.dispatcher.timer();
                    st = match timer {
                        Some(t) => {
                            let wait = t.saturating_duration_since(now);
                            caller.wake.wait_timeout(st, wait).map(|(st, _)| st).ok()
                        }
                        None => caller.wake.wait(st).ok(),
                    }
                    .ok_or(Error::Shutdown)?;
                }
            }
        }
    }

    /// Performs one piece of queued work, unlocked, and answers it.
    fn perform_one<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, Error> {
        let Some(work) = st.dispatcher.take_work() else {
            return Ok(st);
        };
        st.flush();
        drop(st);
        let input = self.perform(work);
        let mut st = self.lock()?;
        if let Some(input) = input {
            st.answer(input);
        }
        Ok(st)
    }

    /// A streamed body ended: the engine completes the call, fails it, or (a break before
    /// any row) retries it.
    pub(crate) fn end_body(&self, send: SendId, end: StreamEnd) -> Result<(), Error> {
        let mut st = self.lock()?;
        st.dispatcher.handle_stream_end(send, end, Instant::now());
        st.flush();
        Ok(())
    }

    /// Asks the thread driving call `id` to give it up: at its next look at the call
    /// (at once if it waits; after the exchange if it is inside one) it abandons it and
    /// returns [`Error::Cancelled`]. A request not sent yet is never sent, and gives its
    /// quota back; one already sent is answered and counted as usual. A call that
    /// already ended, or an unknown id, is left alone.
    pub(crate) fn cancel(&self, id: CallId) {
        // On a poisoned lock the drivers see the poison themselves and stop.
        if let Ok(mut st) = self.state.lock() {
            st.dispatcher.cancel(id);
        }
    }

    /// Gives up a call this thread started and has not seen end: the dispatcher settles
    /// what it held, and parked threads wake to take over the work that follows.
    pub(crate) fn abandon(&self, id: CallId) {
        match self.state.lock() {
            Ok(mut st) => {
                st.dispatcher.abandon(id, Instant::now());
                st.flush();
                st.dispatcher.wake_for_work();
            }
            // The engine cannot be trusted: wake everyone to see the poison and stop.
            Err(poisoned) => poisoned.into_inner().dispatcher.wake_all(),
        }
    }

    /// Sends one request ([`crate::http::exchange`]).
    fn transmit(&self, t: Transmit) -> Sent {
        crate::http::exchange(&self.agent, t, self.max_body)
    }

    /// Performs work that belongs to no call. A panic in the caller's token provider or
    /// store fails what depended on it instead of leaving it waiting forever.
    fn perform(&self, work: Work) -> Option<Input> {
        match work {
            Work::Send(t) => {
                let send = t.id;
                let answer = match self.transmit(*t) {
                    Sent::Answer(answer) => answer,
                    // Only a streamed hunt's transmit streams, and only its caller sends it.
                    Sent::Body(_) => Err(TransportError::new(
                        TransportErrorKind::Closed,
                        "nobody reads this body",
                    )),
                };
                Some(Input::Response(send, answer))
            }
            Work::FetchToken => {
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
            // A token source's steps, on the token worker as a provider's.
            Work::Token(exchange) => {
                let (agent, max) = (self.agent.clone(), self.max_body);
                self.offload(
                    &self.token_worker,
                    "defender-token",
                    Box::new(move || {
                        Some(Input::Fetched(defender_core::dispatch::run_exchange(
                            *exchange,
                            || (Instant::now(), SystemTime::now()),
                            |request, timeout| crate::http::perform(&agent, request, timeout, max),
                            |path| std::fs::read(path).map_err(|e| e.to_string()),
                            crate::http::run,
                        )))
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

/// Abandons a call whose thread did not return normally (a panic, a poisoned client).
struct CallGuard<'a> {
    shared: &'a Shared,
    id: Option<CallId>,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shared.abandon(id);
        }
    }
}
