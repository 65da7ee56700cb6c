//! The dispatcher shared by every clone of a `Client`, and the IO it asks for. No
//! decision is made here: routing, slots, timers and the settlement of a dropped call are
//! `defender_core::dispatch`'s; this module moves bytes and wakes tasks.
//!
//! ```text
//!  call future:  lock ─ submit ─ next ─ unlock ── Send: perform the HTTP exchange ──
//!                lock ─ handle_response ─ next ─ unlock ── Done: return
//!                                                       └─ Wait: await its Notify
//!  after every input (whoever holds the lock): work (a token request, the token
//!  provider, a quota-store operation) goes to a spawned task that answers it; progress
//!  goes to the broadcast; a changed timer goes to the timer task, which fires it (a
//!  call whose future nobody polls still gets its admission, and its transmit waits in
//!  its slot).
//! ```
//!
//! A call's future dropped before its end abandons the call ([`Caller`]'s `Drop`): the
//! dispatcher settles what it held (a transmit never sent, a request in flight, a body
//! being read). The HTTP exchange itself is `crate::http`'s.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Instant, SystemTime};

use defender_core::credential::{Fetched, TokenExchange, TokenSource};
use defender_core::dispatch::{Dispatcher, Next, Wake, Work};
use defender_core::engine::{Admission, Call, CallId, Engine, GroupUsage, SendId, Transmit, Value};
use defender_core::surface::Endpoints;
use defender_core::token::AccessToken;
use defender_core::{Error, Limits, Surface, TransportError, TransportErrorKind};

use crate::http::{Body, Performed};
use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, Notify};

use crate::{Progress, QuotaStore, TokenProvider};

/// A task's wake primitive, for the dispatcher.
#[derive(Debug, Clone)]
struct Waker(Arc<Notify>);

impl Wake for Waker {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// What every clone of one `Client` shares.
pub(crate) struct Shared {
    dispatcher: Mutex<Dispatcher<Waker>>,
    http: reqwest::Client,
    provider: Option<Arc<dyn TokenProvider>>,
    store: Option<Arc<dyn QuotaStore>>,
    scope: String,
    max_body: usize,
    pub(crate) surface: Surface,
    pub(crate) limits: Limits,
    pub(crate) progress: broadcast::Sender<Progress>,
    /// Where work runs (also from `Drop`, which may run outside the runtime's context).
    runtime: Handle,
    /// Tells the timer task that the timer changed, or that the client is gone.
    timer_changed: Arc<Notify>,
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
    /// The shared state, on the current runtime.
    pub(crate) fn start(parts: Parts) -> Arc<Shared> {
        let (progress, _) = broadcast::channel(64);
        let timer_changed = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            dispatcher: Mutex::new(Dispatcher::new(parts.engine)),
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

    /// Runs `f` on the dispatcher, then hands out what it queued: work to tasks of its
    /// own, progress to subscribers.
    fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut Dispatcher<Waker>) -> R) -> R {
        // A panic while the lock was held is a bug already reported; the dispatcher's
        // state is still the best there is.
        let mut d = self
            .dispatcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let timer = d.timer();
        let out = f(&mut d);
        self.hand_out(&mut d);
        if d.timer() != timer {
            self.timer_changed.notify_one();
        }
        out
    }

    fn hand_out(self: &Arc<Self>, d: &mut MutexGuard<'_, Dispatcher<Waker>>) {
        while let Some(work) = d.take_work() {
            self.spawn_work(work);
        }
        while let Some(p) = d.poll_progress() {
            let _ = self.progress.send(p);
        }
    }

    /// Makes one call: submits it, performs its transmits in this future, returns its end.
    /// A streamed hunt's rows are decoded and dropped: its value is the summary
    /// (`HuntStream` hands the rows out).
    pub(crate) async fn call(self: &Arc<Self>, call: Call) -> Result<Value, Error> {
        if let Call::HuntStream(request) = call {
            use futures_util::StreamExt;
            let mut stream = crate::HuntStream::new(self.clone(), request);
            while let Some(item) = stream.next().await {
                item?;
            }
            return stream
                .take_summary()
                .map(Value::HuntStreamed)
                .ok_or(Error::Internal {
                    message: "a streamed hunt ended without its summary".into(),
                });
        }
        // From the first `.await` on, a dropped future abandons the call through the caller.
        let mut caller = self.submit(call);
        match caller.drive().await {
            Drive::Done(result) => *result,
            // Only a streamed hunt's transmit streams.
            Drive::Body(_) => Err(Error::Internal {
                message: "a call that does not stream got a streamed body".into(),
            }),
        }
    }

    /// Submits a call for a future to drive with [`Caller::drive`]. Dropping the caller
    /// before `drive` returned [`Drive::Done`] abandons the call.
    pub(crate) fn submit(self: &Arc<Self>, call: Call) -> Caller {
        let wake = Arc::new(Notify::new());
        let waker = Waker(wake.clone());
        let id = self.with(|d| d.submit(call, waker, Instant::now()));
        Caller {
            shared: self.clone(),
            id,
            wake,
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

    /// Usage of every group's quota now: the store's, when one admits the calls.
    pub(crate) async fn usage(self: &Arc<Self>) -> Result<Vec<GroupUsage>, Error> {
        let own = self.with(|d| d.usage(Instant::now()));
        let counted = match &self.store {
            Some(store) => store.usage().await,
            None => None,
        };
        match counted {
            None => Ok(own),
            Some(counted) => counted
                .map(|u| GroupUsage::with_own_calls(u, &own))
                .map_err(|message| Error::QuotaStore { message }),
        }
    }

    /// Performs work that belongs to no call in a task of its own, and answers it.
    fn spawn_work(self: &Arc<Self>, work: Work) {
        let shared = self.clone();
        self.runtime.spawn(async move {
            match work {
                Work::Send(t) => {
                    let send = t.id;
                    let answer = shared.exchange(*t).await;
                    shared.with(|d| {
                        d.handle_response(send, answer, Instant::now(), SystemTime::now())
                    });
                }
                // A panic in the caller's provider or store fails what waited for it
                // (as in the blocking client) instead of dying with this task.
                Work::FetchToken => {
                    let token = match &shared.provider {
                        Some(p) => match AssertUnwindSafe(p.token(&shared.scope))
                            .catch_unwind()
                            .await
                        {
                            Ok(answer) => answer.map(|(secret, life)| {
                                let now = Instant::now();
                                AccessToken::new(secret, now, now + life)
                            }),
                            Err(_) => Err(Error::TokenUnavailable {
                                message: "the token provider panicked".into(),
                            }),
                        },
                        None => Err(no_provider()),
                    };
                    shared.with(|d| d.handle_token(token, Instant::now()));
                }
                // A token source's steps: HTTP over the client's reqwest, a file and a
                // process on the blocking pool.
                Work::Token(exchange) => {
                    let fetched = shared.run_exchange(*exchange).await;
                    shared.with(|d| d.handle_fetched(fetched, Instant::now()));
                }
                Work::Quota(op) => {
                    let admit = match &op {
                        defender_core::engine::QuotaOp::Acquire { id, .. } => Some(*id),
                        _ => None,
                    };
                    let answer = match &shared.store {
                        Some(store) => {
                            match AssertUnwindSafe(store.perform(op)).catch_unwind().await {
                                Ok(answer) => answer,
                                Err(_) => admit.map(|id| {
                                    (id, Admission::Unavailable("the store panicked".into()))
                                }),
                            }
                        }
                        // The engine asks only when built with a store: unreachable, but answer.
                        None => match op {
                            defender_core::engine::QuotaOp::Acquire { id, .. } => Some((
                                id,
                                Admission::Unavailable("no quota store was given".into()),
                            )),
                            _ => None,
                        },
                    };
                    if let Some((id, admission)) = answer {
                        shared.with(|d| d.handle_admission(id, admission, Instant::now()));
                    }
                }
            }
        });
    }

    /// Runs a token source's steps: HTTP over the client's reqwest, a file on the
    /// blocking pool, a process with tokio's.
    async fn run_exchange(&self, exchange: TokenExchange) -> Result<Fetched, Error> {
        let (http, max) = (&self.http, self.max_body);
        defender_core::dispatch::run_exchange_async(
            exchange,
            || (Instant::now(), SystemTime::now()),
            |request, timeout| crate::http::perform(http, request, timeout, max),
            |path| blocking(move || std::fs::read(path).map_err(|e| e.to_string())),
            crate::http::run,
        )
        .await
    }

    /// A token fetched now with the client's source, outside its cache (see
    /// `Dispatcher::check_exchange`), and the source.
    pub(crate) async fn check_token(
        self: &Arc<Self>,
    ) -> Result<(TokenSource, Fetched, Endpoints), Error> {
        let (source, exchange, endpoints) = self
            .with(|d| {
                d.check_exchange()
                    .map(|(s, e)| (s, e, d.engine().config().endpoints.clone()))
            })
            .ok_or(Error::TokenUnavailable {
                message: "tokens come from the caller's provider: nothing to check".into(),
            })?;
        let fetched = self.run_exchange(exchange).await?;
        Ok((source, fetched, endpoints))
    }

    /// The source that gave the latest token, with a token source.
    pub(crate) fn token_source(self: &Arc<Self>) -> Option<&'static str> {
        self.with(|d| d.token_source())
    }

    /// A request read whole (a token request, or any call that does not stream).
    async fn exchange(&self, t: Transmit) -> Result<http::Response<Vec<u8>>, TransportError> {
        match self.perform(t).await {
            Performed::Answer(answer) => answer,
            // Only a streamed hunt's transmit streams, and only its caller sends it.
            Performed::Body(_) => Err(TransportError::new(
                TransportErrorKind::Closed,
                "nobody reads this body",
            )),
        }
    }
    async fn perform(&self, t: Transmit) -> Performed {
        crate::http::exchange(&self.http, t, self.max_body).await
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

/// A call a future started ([`Shared::submit`]) and drives ([`Caller::drive`]). Dropped
/// before its end was seen, it abandons the call: the dispatcher settles what it held.
pub(crate) struct Caller {
    shared: Arc<Shared>,
    pub(crate) id: CallId,
    wake: Arc<Notify>,
    ended: bool,
}

/// Where driving a call stopped.
pub(crate) enum Drive {
    /// The call ended (boxed: it is large).
    Done(Box<Result<Value, Error>>),
    /// A streamed hunt's body is arriving (only for [`Call::HuntStream`]): read it, hand
    /// its end to the dispatcher, then drive again (the engine may retry).
    Body(Box<Body>),
}

impl Caller {
    /// Performs the call's transmits until it ends or a streamed body arrives.
    pub(crate) async fn drive(&mut self) -> Drive {
        loop {
            let next = self.shared.with(|d| {
                let next = d.next(self.id, Instant::now());
                if matches!(next, Next::Wait) {
                    d.park(self.id);
                }
                next
            });
            match next {
                Next::Done(result) => {
                    self.ended = true;
                    return Drive::Done(Box::new(result));
                }
                Next::Send(t) => {
                    let send = t.id;
                    match self.shared.perform(t).await {
                        Performed::Body(body) => {
                            let status = body.status();
                            self.shared
                                .with(|d| d.handle_body(send, status, Instant::now()));
                            return Drive::Body(body);
                        }
                        Performed::Answer(answer) => self.shared.with(|d| {
                            d.handle_response(send, answer, Instant::now(), SystemTime::now())
                        }),
                    }
                }
                // Woken by news (a permit is kept if it came first).
                Next::Wait => self.wake.notified().await,
            }
        }
    }

    /// Hands a streamed body's end to the dispatcher.
    pub(crate) fn end_body(&self, send: SendId, end: defender_core::engine::StreamEnd) {
        self.shared
            .with(|d| d.handle_stream_end(send, end, Instant::now()));
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.with(|d| d.abandon(self.id, Instant::now()));
        }
    }
}

fn no_provider() -> Error {
    Error::Auth(defender_core::ApiError {
        code: "NoTokenProvider".into(),
        message: "the engine asked for a token but no provider was given".into(),
        target: None,
        ..defender_core::ApiError::default()
    })
}

/// Sleeps until the dispatcher's timer, then fires it; ends with the last client handle.
/// Holds only a weak reference, so it keeps nothing alive.
async fn timers(shared: Weak<Shared>, changed: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(s) => s.with(|d| d.timer()),
            None => return,
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = sleep_until(next) => {
                let Some(s) = shared.upgrade() else { return };
                s.with(|d| d.handle_timeout(Instant::now()));
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

/// `f` on tokio's blocking pool (a file read, a process run for a token source).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("the task failed: {e}")))
}
