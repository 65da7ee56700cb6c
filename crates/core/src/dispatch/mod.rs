//! The dispatcher: one [`Engine`] shared by many callers, each driving its own call.
//!
//! Both clients run the same machinery around the engine: a slot per call, the engine's
//! outputs routed to their owners, a queue of work that belongs to no call (a token, a
//! quota-store operation), the engine's timer, and the settlement of a call whose owner
//! gave up. It lives here, once, as a pure state machine; a client keeps only its IO and
//! its wake primitive (a task's `Notify`, a thread's `Condvar`: see [`Wake`]).
//!
//! ```text
//!  owner                          dispatcher                         engine
//!  ─────                          ──────────                         ──────
//!  submit(call, waker) ─────────► slot ───────────────────────────► submit
//!                                  │  drain after every input:
//!                                  │    Transmit of a call  ─► its slot (ready), wake it
//!                                  │    Transmit of a token ─► work
//!                                  │    NeedToken, Quota(op)─► work
//!                                  │    Completed / Failed  ─► its slot (outcome), wake it
//!                                  │    Waiting             ─► progress (and a log line)
//!                                  │    Wait(t)             ─► timer; earlier: wake parked
//!  next(id) ◄──── Send(t) ─────────┤  ready ─► held: Request(send)
//!    perform t; handle_response ──►│  held ─► nothing
//!    (a streamed 2xx: handle_body ►│  held ─► Body(send); handle_stream_end ─► nothing)
//!  next(id) ◄──── Done(result) ────┤  outcome: the slot goes
//!  next(id) ◄──── Wait ────────────┤  park until woken, or until timer() (then next()
//!                                  │  fires the engine's timeout itself)
//!  abandon(id) ───────────────────►│  cancel, and settle what the owner held, once:
//!                                  │  ready ─► Held::Unsent; Request ─► Held::InFlight;
//!                                  │  Body ─► Held::Body (see Engine::abandon)
//!  take_work() ◄───────────────────┤  performed by whoever is free; answers come back as
//!                                  │  handle_response / handle_token / handle_admission
//! ```
//!
//! Rules it keeps, whoever drives it:
//! - every call ends once: its owner sees one [`Next::Done`], or gave it up with
//!   [`Dispatcher::abandon`] and sees nothing;
//! - a transmit goes only to its call's owner, and nothing is sent for a call whose owner
//!   is gone (a transmit for a missing slot is abandoned unsent);
//! - an owner is woken ([`Wake::wake`]) whenever [`Dispatcher::next`] would stop saying
//!   [`Next::Wait`] for it, and every parked owner when the timer moves earlier;
//! - what an abandoned call held is settled with the engine exactly once.
//!
//! ```
//! use defender_core::dispatch::{Dispatcher, Next, Wake, Work};
//! use defender_core::engine::{Auth, Call, Config, Engine};
//! use defender_core::hunting::HuntRequest;
//! use defender_core::policy::{Failure, Policy, Retry};
//! use defender_core::token::{ClientCredentials, Secret};
//! use defender_core::Surface;
//! use std::time::{Duration, Instant, UNIX_EPOCH};
//!
//! #[derive(Debug)]
//! struct NoRetry;
//! impl Policy for NoRetry {
//!     fn max_wait(&self) -> Duration { Duration::from_secs(60) }
//!     fn retry(&mut self, _: &Failure) -> Retry { Retry::Stop }
//! }
//! struct Nobody;
//! impl Wake for Nobody { fn wake(&self) {} }
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let creds = ClientCredentials::new("tenant", "app", Secret::new("secret"));
//! let config = Config::new(Surface::DefenderXdr, Auth::ClientCredentials(creds));
//! let mut d = Dispatcher::new(Engine::new(config, Box::new(NoRetry), now).unwrap());
//! let id = d.submit(Call::Hunt(HuntRequest::new("DeviceInfo | take 1")), Nobody, now);
//! // The token request belongs to no call: whoever is free performs it.
//! let Some(Work::Send(token)) = d.take_work() else { panic!() };
//! let body = br#"{"access_token":"x","expires_in":3599}"#.to_vec();
//! d.handle_response(token.id, Ok(http::Response::new(body)), now, UNIX_EPOCH);
//! // The hunt's own request goes to its owner.
//! let Next::Send(t) = d.next(id, now) else { panic!() };
//! let body = br#"{"Schema":[],"Results":[]}"#.to_vec();
//! d.handle_response(t.id, Ok(http::Response::new(body)), now, UNIX_EPOCH);
//! assert!(matches!(d.next(id, now), Next::Done(Ok(_))));
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::credential::{Fetched, ProcessOutput, Step, TokenExchange, TokenSource};
use crate::engine::{
    Admission, AdmitId, Call, CallId, Engine, Event, GroupUsage, Held, Output, Purpose, QuotaOp,
    SendId, StreamEnd, Transmit, Value, WaitReason,
};
use crate::error::{Error, TransportError};
use crate::limits::ApiGroup;
use crate::telemetry::{Probe, Recorder};
use crate::token::AccessToken;

mod cursor;

pub use cursor::{CursorStep, HuntCursor};

/// How the dispatcher wakes the owner of a call: a task's `Notify`, a thread's `Condvar`.
/// Called with the dispatcher borrowed (under the client's lock): it must only signal.
pub trait Wake {
    /// Makes the owner look at its call again ([`Dispatcher::next`]).
    fn wake(&self);
}

/// What the owner of a call does next.
#[derive(Debug)]
#[must_use]
pub enum Next {
    /// Perform this request of the call, then answer it ([`Dispatcher::handle_response`],
    /// or for a streamed 2xx [`Dispatcher::handle_body`] and later
    /// [`Dispatcher::handle_stream_end`]).
    Send(Transmit),
    /// The call ended; its slot is gone.
    Done(Result<Value, Error>),
    /// Nothing for now: park until woken, or until [`Dispatcher::timer`] at the latest.
    Wait,
}

/// Work that belongs to no call, for whoever is free.
#[derive(Debug)]
pub enum Work {
    /// A token request: perform it, answer with [`Dispatcher::handle_response`].
    Send(Box<Transmit>),
    /// Ask the caller's token provider; answer with [`Dispatcher::handle_token`].
    FetchToken,
    /// Fetch a token from the configured [`TokenSource`](crate::credential::TokenSource):
    /// perform the exchange's steps until it is done ([`run_exchange`] does it given the
    /// three kinds of IO), answer with [`Dispatcher::handle_fetched`].
    Token(Box<TokenExchange>),
    /// An operation on the shared quota store; answer an `Acquire` with
    /// [`Dispatcher::handle_admission`].
    Quota(QuotaOp),
}

/// Progress the clients report while calls wait (for progress displays).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// A call waits for quota or a server-given retry time.
    Waiting {
        /// The API group.
        group: ApiGroup,
        /// For how long from now.
        wait: Duration,
        /// Which limit binds, or what the server asked (`Display` says it in words).
        reason: WaitReason,
    },
}

/// What a call's owner holds of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
    Nothing,
    /// A request it is exchanging.
    Request(SendId),
    /// A streamed body it is reading.
    Body(SendId),
}

/// One call's mailbox.
#[derive(Debug)]
struct Slot<W> {
    waker: W,
    /// Its next request, not yet taken by its owner.
    ready: Option<Transmit>,
    holding: Holding,
    outcome: Option<Result<Value, Error>>,
    /// Someone asked to stop it ([`Dispatcher::cancel`]).
    cancelled: bool,
    /// Its owner waits to be woken.
    parked: bool,
}

impl<W> Slot<W> {
    /// Whether [`Dispatcher::next`] has something for the owner.
    fn has_news(&self) -> bool {
        self.outcome.is_some() || self.ready.is_some() || self.cancelled
    }
}

/// The engine and every call's slot. See the module docs.
#[derive(Debug)]
pub struct Dispatcher<W> {
    engine: Engine,
    slots: HashMap<CallId, Slot<W>>,
    work: VecDeque<Work>,
    /// The engine's latest `Wait`.
    timer: Option<Instant>,
    progress: VecDeque<Progress>,
    /// The token source's name and, in a chain, the entry that gave the latest token.
    picked: Option<(&'static str, Option<usize>)>,
    /// Metrics (with the feature `metrics`; nothing otherwise).
    recorder: Recorder,
}

impl<W: Wake> Dispatcher<W> {
    /// A dispatcher around `engine`.
    pub fn new(engine: Engine) -> Dispatcher<W> {
        Dispatcher {
            engine,
            slots: HashMap::new(),
            work: VecDeque::new(),
            timer: None,
            progress: VecDeque::new(),
            picked: None,
            recorder: Recorder::default(),
        }
    }

    /// The engine (its configuration, active calls, running time spent).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Usage of every group's quota now.
    pub fn usage(&self, now: Instant) -> Vec<GroupUsage> {
        self.engine.usage(now)
    }

    /// Submits a call owned by whoever `waker` wakes; drive it with [`Dispatcher::next`].
    pub fn submit(&mut self, call: Call, waker: W, now: Instant) -> CallId {
        let group = call.group();
        let id = self.engine.submit(call, now);
        self.recorder.submitted(id, group);
        self.slots.insert(
            id,
            Slot {
                waker,
                ready: None,
                holding: Holding::Nothing,
                outcome: None,
                cancelled: false,
                parked: false,
            },
        );
        self.drain(now);
        id
    }

    /// For the owner of call `id`: what to do next. A due timer is fired here. A call
    /// someone cancelled is abandoned before anything more is sent and ends with
    /// [`Error::Cancelled`]; so does an unknown id (a call already ended).
    pub fn next(&mut self, id: CallId, now: Instant) -> Next {
        loop {
            let Some(slot) = self.slots.get_mut(&id) else {
                return Next::Done(Err(Error::Cancelled));
            };
            slot.parked = false;
            if let Some(outcome) = slot.outcome.take() {
                self.slots.remove(&id);
                return Next::Done(outcome);
            }
            if slot.cancelled {
                self.abandon(id, now);
                return Next::Done(Err(Error::Cancelled));
            }
            if let Some(t) = slot.ready.take() {
                slot.holding = Holding::Request(t.id);
                self.recorder.sent(&t, now);
                return Next::Send(t);
            }
            match self.timer {
                Some(t) if t <= now => {
                    self.engine.handle_timeout(now);
                    self.drain(now);
                }
                _ => return Next::Wait,
            }
        }
    }

    /// The owner of `id` parks after [`Next::Wait`] (call it under the same borrow as
    /// `next`, so no news slips in between): it is woken when its call has news, when the
    /// timer moves earlier, and by [`Dispatcher::wake_for_work`].
    pub fn park(&mut self, id: CallId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.parked = true;
        }
    }

    /// Wakes every owner (the client is unusable: each sees it and stops).
    pub fn wake_all(&self) {
        for slot in self.slots.values() {
            slot.waker.wake();
        }
    }

    /// Whether [`Dispatcher::next`] would give the owner of `id` something other than
    /// [`Next::Wait`] without a timer firing.
    pub fn has_news(&self, id: CallId) -> bool {
        self.slots.get(&id).is_none_or(Slot::has_news)
    }

    /// When the engine's timer is due: park no later than this.
    pub fn timer(&self) -> Option<Instant> {
        self.timer
    }

    /// Fires the engine's timer (early or repeated: harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        self.drain(now);
    }

    /// The answer to a transmit (a call's, or a token request from [`Work::Send`]):
    /// a response read whole, or why there is none.
    pub fn handle_response(
        &mut self,
        send: SendId,
        answer: Result<http::Response<Vec<u8>>, TransportError>,
        now: Instant,
        wall_now: SystemTime,
    ) {
        self.release_holding(send);
        self.recorder.answered(
            send,
            answer.as_ref().map(|r| r.status()).map_err(|e| e.kind),
            now,
        );
        match answer {
            Ok(resp) => self.engine.handle_response(send, resp, now, wall_now),
            Err(e) => self.engine.handle_transport_error(send, e, now),
        }
        self.drain(now);
    }

    /// The answer to a streamed hunt's transmit is a 2xx (`status`) whose body its owner
    /// now reads (through a [`HuntCursor`]); its end comes with
    /// [`Dispatcher::handle_stream_end`].
    pub fn handle_body(&mut self, send: SendId, status: http::StatusCode, now: Instant) {
        self.recorder.answered(send, Ok(status), now);
        for slot in self.slots.values_mut() {
            if slot.holding == Holding::Request(send) {
                slot.holding = Holding::Body(send);
            }
        }
    }

    /// A streamed body ended: the engine completes the call, fails it, or (a break
    /// before any row) retries it.
    pub fn handle_stream_end(&mut self, send: SendId, end: StreamEnd, now: Instant) {
        self.release_holding(send);
        self.engine.handle_stream_end(send, end, now);
        self.drain(now);
    }

    /// The token provider's answer to [`Work::FetchToken`].
    pub fn handle_token(&mut self, token: Result<AccessToken, Error>, now: Instant) {
        self.engine.handle_token(token, now);
        self.drain(now);
    }

    /// The answer of a [`Work::Token`] exchange: the token, and which source gave it (in
    /// a chain, that source alone is asked from then on).
    pub fn handle_fetched(&mut self, fetched: Result<Fetched, Error>, now: Instant) {
        let token = fetched.map(|f| {
            self.picked = Some((f.source, f.picked));
            f.token
        });
        self.engine.handle_token(token, now);
        self.drain(now);
    }

    /// The name of the source that gave the latest token ("certificate", "Azure CLI",
    /// "managed identity (IMDS)", …), with [`Auth::Source`](crate::engine::Auth::Source).
    pub fn token_source(&self) -> Option<&'static str> {
        self.picked.map(|(name, _)| name)
    }

    /// A fresh exchange with the configured source (a client secret counts as one), for
    /// a credential check such as `defender auth`: it runs outside the token cache, costs
    /// no API quota, and its token is not used for calls. `None` with a token provider.
    pub fn check_exchange(&self) -> Option<(TokenSource, TokenExchange)> {
        let config = self.engine.config();
        let source = match &config.auth {
            crate::engine::Auth::Source(source) => source.clone(),
            crate::engine::Auth::ClientCredentials(c) => TokenSource::Secret {
                tenant: c.tenant.clone(),
                client_id: c.client_id.clone(),
                secret: c.secret.clone(),
                v1: false,
            },
            _ => return None,
        };
        let exchange =
            TokenExchange::new(&source, &config.endpoints, None).with_timeout(config.token_timeout);
        Some((source, exchange))
    }

    /// The shared store's answer to a [`QuotaOp::Acquire`].
    pub fn handle_admission(&mut self, id: AdmitId, answer: Admission, now: Instant) {
        self.engine.handle_admission(id, answer, now);
        self.drain(now);
    }

    /// Asks the owner of call `id` to give it up: at its next [`Dispatcher::next`] (at
    /// once if it is parked; after its exchange if it is in one) the call is abandoned
    /// and ends with [`Error::Cancelled`], unless it ended first. A request not sent yet
    /// never is. An unknown id is left alone.
    pub fn cancel(&mut self, id: CallId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.cancelled = true;
            slot.waker.wake();
        }
    }

    /// The owner of `id` gave it up (its future dropped, its thread unwound, its stream
    /// dropped): the engine cancels the call, and what the owner held is settled once (a
    /// transmit not taken or not sent: [`Held::Unsent`]; a request in flight:
    /// [`Held::InFlight`]; a body being read: [`Held::Body`]). The settlement may queue
    /// work (a store release): see [`Dispatcher::wake_for_work`]. A call that already
    /// ended, or an unknown id, is a no-op.
    pub fn abandon(&mut self, id: CallId, now: Instant) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.recorder.ended(id, None);
        self.engine.cancel(id, now);
        if let Some(t) = slot.ready {
            self.engine.abandon(t.id, Held::Unsent, now);
        }
        match slot.holding {
            Holding::Nothing => {}
            Holding::Request(send) => {
                self.recorder.forget(send);
                self.engine.abandon(send, Held::InFlight, now);
            }
            Holding::Body(send) => self.engine.abandon(send, Held::Body, now),
        }
        self.drain(now);
    }

    /// Work that belongs to no call, oldest first.
    pub fn take_work(&mut self) -> Option<Work> {
        self.work.pop_front()
    }

    /// Whether work is queued.
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Wakes parked owners for the queued work, one per item (they perform it before
    /// parking again); whether any was woken. For transports whose callers perform the
    /// work themselves (threads), before an owner goes into a long exchange of its own.
    pub fn wake_for_work(&mut self) -> bool {
        let mut wanted = self.work.len();
        let mut woke = false;
        for slot in self.slots.values_mut().filter(|s| s.parked) {
            if wanted == 0 {
                break;
            }
            slot.parked = false;
            slot.waker.wake();
            wanted -= 1;
            woke = true;
        }
        woke
    }

    /// Progress to report, oldest first.
    pub fn poll_progress(&mut self) -> Option<Progress> {
        self.progress.pop_front()
    }

    /// Calls with a slot (submitted, not yet ended and seen by their owner).
    pub fn calls(&self) -> usize {
        self.slots.len()
    }

    fn release_holding(&mut self, send: SendId) {
        for slot in self.slots.values_mut() {
            if matches!(slot.holding, Holding::Request(s) | Holding::Body(s) if s == send) {
                slot.holding = Holding::Nothing;
            }
        }
    }

    /// Drains the engine until `Wait`, routing every output.
    fn drain(&mut self, now: Instant) {
        loop {
            match self.engine.poll_output() {
                Output::Transmit(t) => match t.purpose {
                    Purpose::Token => {
                        self.recorder.sent(&t, now);
                        self.work.push_back(Work::Send(Box::new(t)));
                    }
                    Purpose::Call { id: call, .. } => match self.slots.get_mut(&call) {
                        Some(slot) => {
                            debug_assert!(slot.ready.is_none(), "one request per call at a time");
                            slot.ready = Some(t);
                            slot.waker.wake();
                        }
                        // Its owner is gone: never sent.
                        None => self.engine.abandon(t.id, Held::Unsent, now),
                    },
                },
                Output::Event(event) => {
                    self.recorder.event(&event, now);
                    self.route(event, now);
                }
                Output::Quota(op) => self.work.push_back(Work::Quota(op)),
                Output::Wait(t) => {
                    let earlier = match (t, self.timer) {
                        (Some(new), Some(old)) => new < old,
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                    self.timer = t;
                    self.recorder.drained(&self.engine, now);
                    if earlier {
                        // Parked owners sleep until the old instant at most: re-arm them.
                        for slot in self.slots.values_mut().filter(|s| s.parked) {
                            slot.waker.wake();
                        }
                    }
                    return;
                }
            }
        }
    }

    fn route(&mut self, event: Event, now: Instant) {
        match event {
            Event::Completed { id, value } => self.finish(id, Ok(value)),
            Event::Failed { id, error } => self.finish(id, Err(error)),
            Event::Waiting {
                group,
                until,
                reason,
                ..
            } => {
                let wait = until.saturating_duration_since(now);
                tracing::debug!(%group, wait_ms = wait.as_millis() as u64, %reason, "waiting for quota");
                self.progress.push_back(Progress::Waiting {
                    group,
                    wait,
                    reason,
                });
            }
            Event::NeedToken => {
                let config = self.engine.config();
                let work = match &config.auth {
                    crate::engine::Auth::Source(source) => Work::Token(Box::new(
                        TokenExchange::new(
                            source,
                            &config.endpoints,
                            self.picked.and_then(|p| p.1),
                        )
                        .with_timeout(config.token_timeout),
                    )),
                    _ => Work::FetchToken,
                };
                self.work.push_back(work);
            }
            Event::TokenRefreshed {
                valid_for,
                replaced,
            } => {
                // A refresh is worth a line at the default level, the first fetch only in
                // debug logs. No secret is logged.
                let valid_for_s = valid_for.as_secs();
                if replaced {
                    tracing::info!(valid_for_s, "access token refreshed");
                } else {
                    tracing::debug!(valid_for_s, "access token fetched");
                }
            }
            Event::Warning { message } => tracing::warn!(%message, "defender engine"),
        }
    }

    /// A call's end into its slot (none when its owner gave it up).
    fn finish(&mut self, id: CallId, outcome: Result<Value, Error>) {
        if let Some(slot) = self.slots.get_mut(&id) {
            self.recorder.ended(id, Some(outcome.as_ref().map(|_| ())));
            slot.outcome = Some(outcome);
            slot.waker.wake();
        }
    }
}

/// Runs a token exchange to its end with the transport's three kinds of IO (an HTTP
/// exchange, reading a file, running a process), each given the step and answering it;
/// a blocking transport runs it as is, an async one awaits each step in the closures it
/// passes to [`run_exchange_async`].
pub fn run_exchange(
    mut exchange: TokenExchange,
    mut now: impl FnMut() -> (Instant, SystemTime),
    mut http: impl FnMut(
        http::Request<Vec<u8>>,
        Duration,
    ) -> Result<http::Response<Vec<u8>>, TransportError>,
    mut read: impl FnMut(&std::path::Path) -> Result<Vec<u8>, String>,
    mut run: impl FnMut(&crate::credential::Command) -> Result<ProcessOutput, String>,
) -> Result<Fetched, Error> {
    loop {
        let (at, wall) = now();
        match exchange.poll_step(at, wall) {
            Step::Http { request, timeout } => {
                let probe = Probe::new(&request, "token", at);
                let answer = http(request, timeout);
                let (at, wall) = now();
                probe.done(answer.as_ref().map(|r| r.status()).map_err(|e| e.kind), at);
                exchange.handle_http(answer, at, wall);
            }
            Step::ReadFile(path) => exchange.handle_file(read(&path)),
            Step::Run(command) => {
                let answer = run(&command);
                let (at, wall) = now();
                exchange.handle_process(answer, at, wall);
            }
            Step::Done(result) => return result,
        }
    }
}

/// [`run_exchange`] for an async transport: each kind of IO is a closure returning a
/// future. No runtime is needed here; the transport's futures do the IO.
pub async fn run_exchange_async<H, HF, R, RF, P, PF>(
    mut exchange: TokenExchange,
    now: impl Fn() -> (Instant, SystemTime),
    mut http: H,
    mut read: R,
    mut run: P,
) -> Result<Fetched, Error>
where
    H: FnMut(http::Request<Vec<u8>>, Duration) -> HF,
    HF: std::future::Future<Output = Result<http::Response<Vec<u8>>, TransportError>>,
    R: FnMut(std::path::PathBuf) -> RF,
    RF: std::future::Future<Output = Result<Vec<u8>, String>>,
    P: FnMut(crate::credential::Command) -> PF,
    PF: std::future::Future<Output = Result<ProcessOutput, String>>,
{
    loop {
        let (at, wall) = now();
        match exchange.poll_step(at, wall) {
            Step::Http { request, timeout } => {
                let probe = Probe::new(&request, "token", at);
                let answer = http(request, timeout).await;
                let (at, wall) = now();
                probe.done(answer.as_ref().map(|r| r.status()).map_err(|e| e.kind), at);
                exchange.handle_http(answer, at, wall);
            }
            Step::ReadFile(path) => exchange.handle_file(read(path).await),
            Step::Run(command) => {
                let answer = run(command).await;
                let (at, wall) = now();
                exchange.handle_process(answer, at, wall);
            }
            Step::Done(result) => return result,
        }
    }
}
