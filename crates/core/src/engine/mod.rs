//! The engine: every call's life, from submission to one final event.
//!
//! ```text
//!  submit ─► Queued ─(token usable)─► Admitting ─(Admitted: request built)─► Outbox
//!             ▲  ▲                      │  QuotaOp::Acquire, answered by the    │
//!             │  └──(Denied: the group  │  local admission at once or by a      │ poll_output
//!             │      waits ≤ max_wait)──┘  shared store later                   ▼
//!             │   (wait > max_wait, deadline, store silent or down) ─► Failed  InFlight
//!             │                                                                 │
//!             └─(429 / 5xx / transport / 401 once: retry per policy; an update  │
//!                whose outcome is unknown comes back as a read-back) ◄─ answer ◄┘
//!                                        2xx ─► Completed (an update may go on to
//!                                               Graph's comment step)   other ─► Failed
//!  cancel:  Queued/Admitting ─► gone (a late admission is released);
//!           Outbox ─► gone, its Hold released; InFlight ─► Orphan: its answer, transport
//!           error or abandon(Held::…) settles the Hold (Complete with what ran), unheard.
//!  stream:  a HuntStream's 2xx body goes to its reader; handle_stream_end settles it
//!           (Complete, or broken: retried only before any row was handed out).
//!  Every Hold ends once: Release (never sent) or Complete (sent; charged what it ran).
//! ```
//!
//! Where each rule lives: `config` (what a caller sets), `protocol` (calls,
//! values, transmits, quota operations, events), `request` (building a call's HTTP
//! request), `response` (status, headers and body to an outcome; decoding), `update`
//! (calls that change something), `token` (the access token's timing), `streamer` (rows
//! of a streamed hunt), `admission` (the in-process answerer of quota operations); this
//! file holds the phases, retries and timers.
//!
//! Methods come in two kinds, as in quinn-proto: inputs are `handle_*` (and `submit`,
//! `cancel`), outputs come from [`Engine::poll_output`]. **After every input, drain
//! `poll_output` until it returns [`Output::Wait`].** `Wait(Some(t))` is always later than
//! the latest `now` the engine was given; a spurious or early `handle_timeout` is a
//! harmless no-op. Every submitted call ends in exactly one `Completed` or `Failed` event.
//!
//! ```
//! use defender_core::engine::{Auth, Call, Config, Engine, Event, Output};
//! use defender_core::policy::{Failure, Policy, Retry};
//! use defender_core::hunting::HuntRequest;
//! use defender_core::token::{ClientCredentials, Secret};
//! use defender_core::{Endpoints, Limits, Surface};
//! use std::time::{Duration, Instant};
//!
//! #[derive(Debug)]
//! struct NoRetry;
//! impl Policy for NoRetry {
//!     fn max_wait(&self) -> Duration { Duration::from_secs(60) }
//!     fn retry(&mut self, _: &Failure) -> Retry { Retry::Stop }
//! }
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let config = Config::new(
//!     Surface::DefenderXdr,
//!     Auth::ClientCredentials(ClientCredentials::new("tenant", "app", Secret::new("secret"))),
//! );
//! let mut engine = Engine::new(config, Box::new(NoRetry), now).unwrap();
//! let id = engine.submit(Call::Hunt(HuntRequest::new("DeviceProcessEvents | take 1")), now);
//! // The first thing it asks for is a token.
//! let Output::Transmit(t) = engine.poll_output() else { panic!() };
//! assert!(t.request.uri().path().ends_with("/oauth2/v2.0/token"));
//! let token = http::Response::new(br#"{"access_token":"x","expires_in":3599}"#.to_vec());
//! engine.handle_response(t.id, token, now, std::time::UNIX_EPOCH);
//! // The new token is announced (for logs), then the hunt goes.
//! let Output::Event(Event::TokenRefreshed { replaced: false, .. }) = engine.poll_output() else { panic!() };
//! let Output::Transmit(t) = engine.poll_output() else { panic!() };
//! assert_eq!(t.request.uri().path(), "/api/advancedhunting/run");
//! let body = br#"{"Schema":[{"Name":"a","Type":"String"}],"Results":[{"a":"b"}]}"#.to_vec();
//! engine.handle_response(t.id, http::Response::new(body), now, std::time::UNIX_EPOCH);
//! let Output::Event(Event::Completed { id: done, .. }) = engine.poll_output() else { panic!() };
//! assert_eq!(done, id);
//! assert!(matches!(engine.poll_output(), Output::Wait(None)));
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::alerts::{self, Alert, AlertId, AlertPage, AlertQuery, AlertUpdate};
use crate::change::{Change, Record};
use crate::error::{ApiError, Error, TransportError, TransportErrorKind};
use crate::hunting::{Column, HuntRequest, HuntResponse, HuntResult, HuntSummary, Stats};
use crate::incidents::{
    max_top, CommentCollection, Incident, IncidentId, IncidentPage, IncidentQuery, IncidentUpdate,
};
use crate::limits::{format_duration, ApiGroup, CallLimit, Limits};
use crate::margin::MarginLearner;
use crate::policy::{Failure, FailureKind, Policy, Retry, Truncation};
use crate::quota::WindowUsage;
use crate::stream::{DecodeError, DecodeEvent, RowDecoder};
use crate::surface::{Endpoints, Surface};
use crate::throttle::Throttle;
use crate::token::{AccessToken, ClientCredentials};

mod admission;
mod config;
mod protocol;
mod request;
mod response;
mod streamer;
mod token;
mod update;

use admission::LocalAdmission;
pub use config::*;
pub use protocol::*;
use response::running_time;
pub use streamer::*;
pub(crate) use token::refresh_at as token_refresh_at;
use token::TokenCache;
pub use token::{
    DEFAULT_TOKEN_TIMEOUT, TOKEN_REFRESH_AHEAD, TOKEN_RETRY_WHILE_USABLE, TOKEN_USE_MARGIN,
};
use update::UpdateStep;

#[derive(Debug)]
enum Phase {
    Queued,
    /// Asking the shared store.
    Admitting(AdmitId),
    /// Admitted; the transmit sits in the outbox, not yet handed to the transport.
    Outbox(SendId),
    InFlight(SendId),
}

#[derive(Debug)]
struct CallState {
    call: Call,
    group: ApiGroup,
    submitted: Instant,
    /// When the call (re)entered the queue: `max_wait` counts from here.
    queued_since: Instant,
    attempts: u32,
    not_before: Option<Instant>,
    phase: Phase,
    /// What admission gave the call, until it is settled.
    hold: Option<Hold>,
    token_retried: bool,
    sent_at: Option<Instant>,
    announced_until: Option<Instant>,
    /// An update whose outcome is unknown: the next attempt reads the incident back
    /// instead of sending the change again.
    verify: bool,
    /// When the first request of an update that may have reached the server was sent:
    /// a comment read back must be newer than this to be ours.
    maybe_applied_since: Option<Instant>,
    /// Which request of an update is next (Graph sends a comment as a second call).
    step: UpdateStep,
    /// Graph: what the PATCH step answered, merged with the comments at the end.
    patched: Option<Record>,
}

/// What admission (the local one or a shared store) admitted a call with.
#[derive(Debug)]
struct Hold {
    /// The answerer's ticket, handed back in `Release` or `Complete`.
    ticket: StoreTicket,
    /// Whether it holds a running-time reservation (a hunt): its answer must `Complete`.
    reserved: bool,
}

#[derive(Debug)]
enum SendTarget {
    Token,
    Call(CallId),
    /// A call cancelled while in flight: settle its accounting when the answer comes.
    Orphan {
        group: ApiGroup,
        /// What it was admitted with: given back when the request was never sent,
        /// settled when it was.
        hold: Option<Hold>,
        sent_at: Instant,
    },
}

/// How many recent running times the reservation estimate looks at.
const RECENT_RUNTIMES: usize = 32;

/// The sans-IO engine. See the module docs for the loop it expects.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    policy: Box<dyn Policy>,
    /// The in-process answerer of quota operations; `None` when a shared store answers.
    local: Option<LocalAdmission>,
    /// Running time charged by this engine's calls since it started.
    spent: Duration,
    /// The safety margin, learned from round trips (fixed when learning is off).
    margin: MarginLearner,
    /// The token request in flight and when it was handed out: its round trip teaches
    /// the margin too.
    token_sent: Option<(SendId, Instant)>,
    /// The running times of the latest queries: a reservation is their maximum, so that
    /// queries in flight rarely overrun what they hold (the server charges on completion).
    recent_runtimes: VecDeque<Duration>,
    token: TokenCache,
    calls: BTreeMap<CallId, CallState>,
    sends: HashMap<SendId, SendTarget>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    quota_ops: VecDeque<QuotaOp>,
    /// The outstanding admission of each group, the call it is for, and when a store's
    /// answer counts as missing (a local answer comes before anyone looks).
    admitting: BTreeMap<ApiGroup, (AdmitId, CallId, Instant)>,
    /// Admissions given up on (the store did not answer in time): a late `Admitted`
    /// gives its ticket back.
    abandoned: HashMap<AdmitId, ApiGroup>,
    /// Updates that may have been applied, until the call ends or a read-back settles it.
    unsure: HashMap<CallId, Change>,
    next_admit: u64,
    next_call: u64,
    next_send: u64,
    now: Instant,
    dirty: bool,
}

impl Engine {
    /// A new engine. Fails when an endpoint would send credentials over plain HTTP to a
    /// host other than loopback.
    pub fn new(config: Config, policy: Box<dyn Policy>, now: Instant) -> Result<Engine, Error> {
        config.endpoints.check_secure()?;
        let local = LocalAdmission::for_mode(config.quota, &config.limits, config.margin);
        let margin = MarginLearner::new(config.margin);
        Ok(Engine {
            config,
            policy,
            local,
            spent: Duration::ZERO,
            margin,
            token_sent: None,
            recent_runtimes: VecDeque::new(),
            token: TokenCache::default(),
            calls: BTreeMap::new(),
            sends: HashMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            quota_ops: VecDeque::new(),
            admitting: BTreeMap::new(),
            abandoned: HashMap::new(),
            unsure: HashMap::new(),
            next_admit: 0,
            next_call: 0,
            next_send: 0,
            now,
            dirty: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Submits a call; its end comes as one `Completed` or `Failed` event.
    pub fn submit(&mut self, call: Call, now: Instant) -> CallId {
        let now = self.advance(now);
        self.next_call += 1;
        let id = CallId(self.next_call);
        let group = call.group();
        let step = UpdateStep::first(&call, self.config.surface);
        self.calls.insert(
            id,
            CallState {
                call,
                group,
                submitted: now,
                queued_since: now,
                attempts: 0,
                not_before: None,
                phase: Phase::Queued,
                hold: None,
                token_retried: false,
                sent_at: None,
                announced_until: None,
                verify: false,
                maybe_applied_since: None,
                step,
                patched: None,
            },
        );
        self.dirty = true;
        id
    }

    /// Cancels a call. A call not yet handed to the transport gives back its quota; one in
    /// flight has been sent and still counts. Ends with `Failed { error: Cancelled }`
    /// unless the call had already ended.
    pub fn cancel(&mut self, id: CallId, now: Instant) {
        self.advance(now);
        let Some(state) = self.calls.remove(&id) else {
            return;
        };
        match state.phase {
            // The store's answer finds no call and gives back what it admitted.
            Phase::Queued | Phase::Admitting(_) => {}
            Phase::Outbox(send) => {
                self.outbox.retain(|t| t.id != send);
                self.sends.remove(&send);
                self.give_back(state);
            }
            Phase::InFlight(send) => {
                self.sends.insert(
                    send,
                    SendTarget::Orphan {
                        group: state.group,
                        hold: state.hold,
                        sent_at: state.sent_at.unwrap_or(self.now),
                    },
                );
            }
        }
        self.fail(id, Error::Cancelled);
        self.dirty = true;
    }

    /// The caller gave up a request the engine handed out (see [`Held`]): the call is
    /// cancelled if it was not already, and what it held is settled once, by what
    /// happened to the request rather than by a made-up transport error. An unknown or
    /// already answered `id` is a no-op.
    pub fn abandon(&mut self, id: SendId, held: Held, now: Instant) {
        if let Some(SendTarget::Call(call)) = self.sends.get(&id) {
            let call = *call;
            self.cancel(call, now);
        }
        self.advance(now);
        self.dirty = true;
        match self.sends.remove(&id) {
            None | Some(SendTarget::Call(_)) => {}
            Some(SendTarget::Token) => self.token_transport_error(TransportError::new(
                TransportErrorKind::Other,
                "the token request was given up by the transport",
            )),
            Some(SendTarget::Orphan {
                group,
                hold,
                sent_at,
            }) => match held {
                // Never sent: its place in the windows and its reservation go back as if
                // it had been cancelled in the outbox.
                Held::Unsent => self.release(group, hold),
                // Sent: it counts, and what it may have run is charged.
                Held::InFlight | Held::Body => {
                    let ran = self.now.saturating_duration_since(sent_at);
                    self.settle(group, hold, ran);
                }
            },
        }
    }

    /// A timer fired. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        self.dirty = true;
    }

    /// The transport's answer to a transmit. `wall_now` reads HTTP-date retry times.
    pub fn handle_response(
        &mut self,
        id: SendId,
        response: http::Response<Vec<u8>>,
        now: Instant,
        wall_now: SystemTime,
    ) {
        self.advance(now);
        self.dirty = true;
        let Some(target) = self.sends.remove(&id) else {
            return;
        };
        let status = response.status().as_u16();
        match target {
            SendTarget::Token => {
                if let Some((_, at)) = self.token_sent.take_if(|(t, _)| *t == id) {
                    self.observe_round_trip(self.now.saturating_duration_since(at));
                }
                self.token_response(status, response.body())
            }
            SendTarget::Orphan {
                group,
                hold,
                sent_at,
            } => {
                // Nobody waits for the answer, but what it says about the quota counts.
                if status == 429 {
                    let throttle = Throttle::parse(response.headers(), response.body(), wall_now);
                    self.apply_throttle(group, &throttle);
                }
                if hold.as_ref().is_some_and(|h| h.reserved) {
                    let actual = if response.status().is_success() {
                        let stats = HuntResponse::from_slice(response.body())
                            .ok()
                            .and_then(|h| h.stats);
                        running_time(stats.as_ref(), self.now.saturating_duration_since(sent_at))
                    } else {
                        Duration::ZERO
                    };
                    self.settle(group, hold, actual);
                }
            }
            SendTarget::Call(call_id) => self.call_response(call_id, response, wall_now),
        }
    }

    /// The transport could not complete a transmit.
    pub fn handle_transport_error(&mut self, id: SendId, error: TransportError, now: Instant) {
        self.advance(now);
        self.dirty = true;
        let Some(target) = self.sends.remove(&id) else {
            return;
        };
        match target {
            SendTarget::Token => self.token_transport_error(error),
            SendTarget::Orphan {
                group,
                hold,
                sent_at,
            } => {
                let ran = self.ran_for(error.kind, sent_at);
                self.settle(group, hold, ran);
            }
            SendTarget::Call(call_id) => {
                let Some(mut state) = self.calls.remove(&call_id) else {
                    return;
                };
                let ran = self.ran_for(error.kind, state.sent_at.unwrap_or(self.now));
                self.settle(state.group, state.hold.take(), ran);
                let attempts = state.attempts;
                if !state.idempotent() && error.kind != TransportErrorKind::Connect {
                    // The update was written: the server may have applied it.
                    let kind = FailureKind::Transport(error.kind);
                    let error = Error::Transport { attempts, error };
                    return self.ambiguous_update(call_id, state, kind, None, error);
                }
                if error.kind == TransportErrorKind::BodyTooLarge {
                    self.fail(
                        call_id,
                        Error::Transport {
                            attempts: state.attempts,
                            error,
                        },
                    );
                    return;
                }
                let failure = Failure {
                    group: state.group,
                    attempt: state.attempts,
                    kind: FailureKind::Transport(error.kind),
                    server_wait: None,
                    elapsed: self.now.saturating_duration_since(state.submitted),
                    idempotent: state.idempotent(),
                };
                self.retry_or_fail(call_id, state, failure, None, || Error::Transport {
                    attempts,
                    error,
                });
            }
        }
    }

    /// What the driver must do next. Drain until `Wait`.
    pub fn poll_output(&mut self) -> Output {
        if self.dirty {
            self.dirty = false;
            self.drive();
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if let Some(op) = self.quota_ops.pop_front() {
            return Output::Quota(op);
        }
        if let Some(t) = self.outbox.pop_front() {
            match t.call() {
                Some(c) => {
                    if let Some(call) = self.calls.get_mut(&c) {
                        call.phase = Phase::InFlight(t.id);
                    }
                }
                None => self.token_sent = Some((t.id, self.now)),
            }
            return Output::Transmit(t);
        }
        Output::Wait(
            self.next_timer()
                .map(|t| t.max(self.now + Duration::from_millis(1))),
        )
    }

    /// Usage of every group's quota at `now`, as the in-process admission counts it.
    /// With a shared store the windows live in the store: these then hold only the
    /// engine's own calls (`active_calls`); ask the store for the rest (the clients'
    /// `quota()` does).
    pub fn usage(&self, now: Instant) -> Vec<GroupUsage> {
        let now = now.max(self.now);
        ApiGroup::ALL
            .into_iter()
            .map(|group| {
                let active = self.calls.values().filter(|c| c.group == group).count();
                match &self.local {
                    Some(local) => local.usage(group, now, active),
                    None => GroupUsage {
                        group,
                        windows: Vec::new(),
                        blocked_until: None,
                        runtime: Vec::new(),
                        runtime_reserved: Duration::ZERO,
                        runtime_blocked_until: None,
                        in_flight: 0,
                        margin: self.margin.margin(),
                        active_calls: active,
                        clients: Vec::new(),
                        source: UsageSource::Engine,
                    },
                }
            })
            .collect()
    }

    /// The safety margin added to every call window now.
    pub fn margin(&self) -> Duration {
        self.margin.margin()
    }

    /// A round trip was seen (the server's own working time taken out): the learned
    /// margin may move.
    fn observe_round_trip(&mut self, rtt: Duration) {
        if self.config.learn_margin {
            let changed = self.margin.observe(rtt);
            self.use_margin(changed);
        }
    }

    fn use_margin(&mut self, changed: Option<Duration>) {
        if let Some(m) = changed {
            tracing::debug!(margin = ?m, "safety margin");
            if let Some(local) = self.local.as_mut() {
                local.set_margin(m);
            }
        }
    }

    /// Calls not yet ended.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Running time charged since the engine started.
    pub fn running_time_spent(&self) -> Duration {
        self.spent
    }

    fn advance(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    fn ran_for(&self, kind: TransportErrorKind, sent_at: Instant) -> Duration {
        match kind {
            // Never reached the server: nothing ran.
            TransportErrorKind::Connect => Duration::ZERO,
            _ => self.now.saturating_duration_since(sent_at),
        }
    }

    /// Ends a call with `error`; for an update that may have been applied, the error
    /// becomes [`Error::OutcomeUnknown`] carrying it.
    fn fail(&mut self, id: CallId, error: Error) {
        let error = match self.unsure.remove(&id) {
            Some(change) => Error::OutcomeUnknown {
                change: Box::new(change),
                cause: Box::new(error),
            },
            None => error,
        };
        self.events.push_back(Event::Failed { id, error });
    }

    fn complete(&mut self, id: CallId, value: Value) {
        self.unsure.remove(&id);
        self.events.push_back(Event::Completed { id, value });
    }

    fn warn(&mut self, message: String) {
        self.events.push_back(Event::Warning { message });
    }

    fn next_send_id(&mut self) -> SendId {
        self.next_send += 1;
        SendId(self.next_send)
    }

    fn drive(&mut self) {
        let now = self.now;
        // A store that has not answered in time counts as unavailable for the call that
        // asked; its late answer is given back.
        let late: Vec<(ApiGroup, AdmitId, CallId)> = self
            .admitting
            .iter()
            .filter(|(_, (_, _, by))| *by <= now)
            .map(|(g, (a, c, _))| (*g, *a, *c))
            .collect();
        for (group, admit, call) in late {
            self.admitting.remove(&group);
            self.abandoned.insert(admit, group);
            let waiting = self
                .calls
                .get(&call)
                .is_some_and(|c| matches!(c.phase, Phase::Admitting(a) if a == admit));
            if waiting {
                self.calls.remove(&call);
                let message = format!(
                    "the store did not answer within {} (store_timeout)",
                    format_duration(self.config.store_timeout)
                );
                self.fail(call, Error::QuotaStore { message });
            }
        }
        // A token provider that has not answered in time failed.
        self.token_provider_overdue(now);
        // Deadlines of calls not yet sent.
        let expired: Vec<(CallId, Duration)> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Queued | Phase::Admitting(_)))
            .filter_map(|(id, c)| {
                let d = self.policy.deadline(c.group)?;
                (now >= c.submitted + d).then_some((*id, d))
            })
            .collect();
        for (id, deadline) in expired {
            self.calls.remove(&id);
            self.fail(id, Error::DeadlineExceeded { deadline });
        }

        let any_queued = self
            .calls
            .values()
            .any(|c| matches!(c.phase, Phase::Queued));
        if !any_queued {
            return;
        }
        // Tokens: fetch when none is usable, or ahead of expiry while calls are active.
        self.fetch_token_if_needed();
        if self.usable_token().is_none() {
            return;
        }

        let mut blocked: Vec<ApiGroup> = Vec::new();
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(state) = self.calls.get(&id) else {
                continue;
            };
            if !matches!(state.phase, Phase::Queued) || blocked.contains(&state.group) {
                continue;
            }
            if state.not_before.is_some_and(|t| t > now) {
                // Backing off after a failure; a server-given time also blocks its group.
                continue;
            }
            let group = state.group;
            // One admission at a time per group: the answer for one call tells whether
            // the others may try.
            if self.admitting.contains_key(&group) {
                blocked.push(group);
                continue;
            }
            self.next_admit += 1;
            let admit = AdmitId(self.next_admit);
            self.admitting
                .insert(group, (admit, id, now + self.config.store_timeout));
            self.calls.get_mut(&id).expect("present").phase = Phase::Admitting(admit); // looked up above
            let estimate = if group == ApiGroup::Hunting {
                self.runtime_estimate()
            } else {
                Duration::ZERO
            };
            self.quota_op(QuotaOp::Acquire {
                id: admit,
                group,
                estimate,
                margin: self.margin.margin(),
            });
            // A store answers later; the local answer came already, and the group goes
            // on to its next call only if this one was admitted.
            let admitted = self
                .calls
                .get(&id)
                .is_some_and(|c| matches!(c.phase, Phase::Outbox(_)));
            if !admitted {
                blocked.push(group);
            }
        }
    }

    /// An admitted call: build its request and put it in the outbox (or fail it when the
    /// request cannot be built, giving back what it was admitted with).
    fn dispatch(&mut self, id: CallId, token: &str, hold: Hold) {
        let now = self.now;
        let Some(state) = self.calls.get(&id) else {
            return;
        };
        let group = state.group;
        let stream = matches!(state.call, Call::HuntStream(_));
        let request = match self.build_request(&state.call, state.verify, state.step, token) {
            Ok(r) => r,
            Err(e) => {
                if let Some(mut state) = self.calls.remove(&id) {
                    state.hold = Some(hold);
                    self.give_back(state);
                }
                self.fail(id, e);
                return;
            }
        };
        let send = self.next_send_id();
        let timeout = self.policy.request_timeout(group);
        let state = self.calls.get_mut(&id).expect("present"); // looked up above, not removed since
        state.attempts += 1;
        state.phase = Phase::Outbox(send);
        state.hold = Some(hold);
        state.sent_at = Some(now);
        state.not_before = None;
        state.announced_until = None;
        let attempt = state.attempts;
        self.sends.insert(send, SendTarget::Call(id));
        self.outbox.push_back(Transmit {
            id: send,
            purpose: Purpose::Call { id, group },
            attempt,
            request,
            timeout,
            stream,
        });
    }

    fn retry_or_fail(
        &mut self,
        id: CallId,
        mut state: CallState,
        failure: Failure,
        server_wait: Option<Duration>,
        error: impl FnOnce() -> Error,
    ) {
        match self.policy.retry(&failure) {
            Retry::After(backoff) => {
                let wait = backoff.max(server_wait.unwrap_or_default());
                let retry_at = self.now + wait;
                state.phase = Phase::Queued;
                state.queued_since = self.now;
                state.not_before = Some(retry_at);
                let max_wait = self.policy.max_wait();
                // Every wait the server asks for is held to `max_wait` (a 429's, and a
                // 5xx's `Retry-After`); the policy's own backoff is not.
                let server_asked = failure.kind == FailureKind::Throttled || server_wait.is_some();
                if server_asked && wait > max_wait {
                    self.fail(id, error());
                    return;
                }
                if let Some(deadline) = self.policy.deadline(state.group) {
                    if retry_at >= state.submitted + deadline {
                        self.fail(id, error());
                        return;
                    }
                }
                if server_asked {
                    let group = state.group;
                    state.announced_until = Some(retry_at);
                    self.events.push_back(Event::Waiting {
                        id,
                        group,
                        until: retry_at,
                        reason: WaitReason::ServerAsked(wait),
                    });
                }
                self.calls.insert(id, state);
            }
            Retry::Stop => self.fail(id, error()),
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        // Anything due at or before `now` was acted on by the last `drive`; offering it
        // again would spin.
        let now = self.now;
        let mut t: Option<Instant> = None;
        let mut offer = |x: Instant| {
            if x > now {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for (_, _, by) in self.admitting.values() {
            offer(*by);
        }
        if let Some(by) = self.token.provider_deadline() {
            offer(by);
        }
        let mut any_queued = false;
        for c in self.calls.values() {
            if matches!(c.phase, Phase::Admitting(_)) {
                if let Some(d) = self.policy.deadline(c.group) {
                    offer(c.submitted + d);
                }
            }
            if matches!(c.phase, Phase::Queued) {
                any_queued = true;
                if let Some(nb) = c.not_before {
                    offer(nb);
                }
                if let Some(d) = self.policy.deadline(c.group) {
                    offer(c.submitted + d);
                }
            }
        }
        if any_queued {
            if let Some(t) = self.token.timer() {
                offer(t);
            }
            if let Some(local) = &self.local {
                local.timers().for_each(&mut offer);
            }
        }
        t
    }
}
