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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{Call, CallId, Engine, Event, GroupUsage, Output, QuotaOp, SendId};
use defender_core::engine::{Transmit, Value};
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
    pub(crate) async fn call(self: &Arc<Self>, call: Call) -> Result<Value, Error> {
        let wake = Arc::new(Notify::new());
        let (id, mut next) = {
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
            (id, next_step(&mut st, id))
        };
        // From the first `.await` on, a dropped future cancels the call through the guard.
        let mut guard = CallGuard {
            shared: self,
            id,
            sending: None,
            ended: false,
        };
        loop {
            next = match next {
                Step::End(result) => {
                    guard.ended = true;
                    return result;
                }
                Step::Send(t) => {
                    let send = t.id;
                    guard.sending = Some(send);
                    let result = self.perform(t).await;
                    guard.sending = None;
                    let mut st = self.lock();
                    answer(&mut st.engine, send, result);
                    self.drain(&mut st, Some(id));
                    next_step(&mut st, id)
                }
                Step::Wait => {
                    // Another caller, a spawned task or the timer task fills the slot.
                    wake.notified().await;
                    next_step(&mut self.lock(), id)
                }
            };
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
                Output::Event(_) => {}
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
            let result = shared.perform(t).await;
            let mut st = shared.lock();
            answer(&mut st.engine, send, result);
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
                })),
            };
            let mut st = shared.lock();
            st.engine.handle_token(result, Instant::now());
            shared.drain(&mut st, None);
        });
    }

    /// One transmit over HTTP, in a span naming its group, attempt and status (never
    /// its headers: the token is one).
    async fn perform(&self, t: Transmit) -> Result<http::Response<Vec<u8>>, TransportError> {
        let group = t.group.map_or("token", |g| g.as_str());
        let span = tracing::info_span!(
            "defender.call",
            group,
            attempt = t.attempt,
            status = tracing::field::Empty
        );
        async {
            let result = perform(&self.http, t.request, t.timeout, self.max_body).await;
            match &result {
                Ok(r) => {
                    tracing::Span::current().record("status", r.status().as_u16());
                }
                Err(e) => tracing::debug!(kind = %e.kind, "transport error"),
            }
            result
        }
        .instrument(span)
        .await
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

/// Cancels its call when the call's future is dropped before the end.
struct CallGuard<'a> {
    shared: &'a Arc<Shared>,
    id: CallId,
    /// The transmit this future is performing.
    sending: Option<SendId>,
    ended: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut st = self.shared.lock();
        let Some(slot) = st.slots.remove(&self.id) else {
            return;
        };
        if slot.result.is_some() {
            // It ended; nobody reads the result.
            return;
        }
        let now = Instant::now();
        st.engine.cancel(self.id, now);
        // The engine counts a polled transmit as in flight: answer it so its reservation
        // and shared-store ticket settle.
        if let Some(t) = slot.transmit {
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
        self.shared.drain(&mut st, None);
    }
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

/// One HTTP exchange: the request as the engine built it, the body read up to `max`.
pub(crate) async fn perform(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let mut req = reqwest::Request::try_from(request)
        .map_err(|e| TransportError::new(TransportErrorKind::Other, e.without_url().to_string()))?;
    *req.timeout_mut() = Some(timeout);
    let mut resp = http.execute(req).await.map_err(map_err)?;
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
