//! A deterministic virtual-time simulation: clients against [`ServerModel`] with seeded
//! network latency, hours of traffic in milliseconds, no sleeping.
//!
//! One or more independent processes share one tenant (one server model); each runs its
//! own client ([`Strategy`]: our engine, or a [baseline](crate::baseline)) and keeps a
//! fixed number of calls outstanding (a saturating workload). Each transmit reaches the
//! server after an uplink latency drawn from the configured range, is judged there by the
//! reference model, and its answer (200, or 429 with the real Defender body and
//! `Retry-After`) comes back after the query's running time and a downlink latency.
//! A step bound keeps a bug from hanging a test. Everything random is drawn from
//! generators seeded by [`SimConfig::seed`], and events at the same instant are taken in
//! the order they were scheduled, so a run is a pure function of its configuration.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defender_core::engine::{
    Admission, Auth, Call, Config, Engine, Event, Output, QuotaMode, QuotaOp, SendId, StoreTicket,
    WaitReason,
};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::IncidentQuery;
use defender_core::quota::{Quota, Ticket};
use defender_core::runtime::{Reservation, RunningTime};
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{ApiGroup, CallLimit, Endpoints, Limits, Surface};
use defender_policy::{SplitMix64, StandardPolicy};

use crate::baseline::{Baseline, BaselineKind, BaselineParams};
use crate::server_model::{
    defender_429_body, runtime_max, theoretical_max, timespan, ServerModel, Verdict, WindowMode,
};

/// What the callers do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// List incidents, one page per call.
    Incidents,
    /// Hunting queries whose running time is uniform in `[min, max]`.
    Hunting {
        /// Shortest running time.
        min: Duration,
        /// Longest running time.
        max: Duration,
    },
}

impl Workload {
    /// The API group the workload calls.
    pub fn group(self) -> ApiGroup {
        match self {
            Workload::Incidents => ApiGroup::Incidents,
            Workload::Hunting { .. } => ApiGroup::Hunting,
        }
    }
}

/// The client each process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `defender_core::Engine` with [`SimConfig::engine_policy`]
    /// (`StandardPolicy::patient()`).
    Engine,
    /// A `governor` limiter sized to the per-minute limit.
    Governor,
    /// Exponential backoff with full jitter on 429.
    Backoff,
    /// A fixed sleep on 429.
    Naive,
    /// `defender_core::Engine` in every process, admitting through one quota store they
    /// all share ([`ModelStore`]: what `defender-redis` does, in memory, instant).
    SharedStore,
}

impl Strategy {
    /// Every strategy, ours first.
    pub const ALL: [Strategy; 4] = [
        Strategy::Engine,
        Strategy::Governor,
        Strategy::Backoff,
        Strategy::Naive,
    ];

    /// A short name for tables and plots.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Engine => "our engine",
            Strategy::Governor => "governor",
            Strategy::Backoff => "backoff",
            Strategy::Naive => "naive",
            Strategy::SharedStore => "our engine, shared store",
        }
    }
}

/// A simulation's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The limits the client enforces.
    pub client_limits: Limits,
    /// The limits the server enforces.
    pub server_limits: Limits,
    /// How the server counts.
    pub mode: WindowMode,
    /// Simulated time during which callers submit.
    pub duration: Duration,
    /// One-way latency range.
    pub latency: (Duration, Duration),
    /// From this much simulated time on, the one-way latency range is this (a link
    /// that changes mid-run).
    pub latency_change: Option<(Duration, (Duration, Duration))>,
    /// Calls kept outstanding by each process.
    pub callers: usize,
    /// Independent processes sharing the tenant, each with its own client that believes
    /// it has the whole quota.
    pub processes: usize,
    /// The workload.
    pub workload: Workload,
    /// The engine's safety margin (with `learn_margin`, its ceiling).
    pub margin: Duration,
    /// Whether the engine learns its margin from round trips.
    pub learn_margin: bool,
    /// Seeds latency, running times and every client's jitter.
    pub seed: u64,
    /// The engine's policy (`StandardPolicy::patient()`); each process reseeds it.
    pub engine_policy: StandardPolicy,
    /// The baselines' settings.
    pub baselines: BaselineParams,
}

impl SimConfig {
    /// A day of traffic at the 2021 terms, one process of 16 callers, 20-400 ms latency.
    pub fn day_2021(workload: Workload, mode: WindowMode) -> SimConfig {
        SimConfig {
            client_limits: Limits::default(),
            server_limits: Limits::default(),
            mode,
            duration: Duration::from_secs(86_400),
            latency: (Duration::from_millis(20), Duration::from_millis(400)),
            latency_change: None,
            callers: 16,
            processes: 1,
            workload,
            margin: Duration::from_millis(500),
            learn_margin: false,
            seed: 1,
            engine_policy: StandardPolicy::patient(),
            baselines: BaselineParams::default(),
        }
    }

    /// The most calls the server could admit during `duration`: the call windows'
    /// [`theoretical_max`], and for hunting also the running-time budget divided by the
    /// mean running time ([`runtime_max`]).
    pub fn theoretical_max(&self) -> u64 {
        match self.workload {
            Workload::Incidents => {
                theoretical_max(&self.server_limits, ApiGroup::Incidents, self.duration)
            }
            Workload::Hunting { min, max } => {
                runtime_max(&self.server_limits, self.duration, (min + max) / 2)
            }
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimReport {
    /// Calls the server admitted while callers were submitting.
    pub admitted_in_span: u64,
    /// The most calls any client could have had admitted in that span.
    pub theoretical_max: u64,
    /// Calls that ended in success.
    pub completed: u64,
    /// Calls that ended in an error (for the baselines: given up after their retries).
    pub failed: u64,
    /// Calls submitted that never ended (should be zero).
    pub lost: u64,
    /// 429 responses received.
    pub throttled: u64,
    /// Requests sent to the API (first attempts and retries, tokens excluded).
    pub attempts: u64,
    /// The longest time from submission to end of any call.
    pub worst_wait: Duration,
    /// Running time the server charged.
    pub running_time: Duration,
    /// Running time of the queries admitted while callers were submitting.
    pub running_time_in_span: Duration,
    /// The running-time budget of that span: for each runtime window, its budget times
    /// the windows the span touches; the tightest (zero without runtime limits).
    pub runtime_budget: Duration,
    /// Admitted calls per simulated minute.
    pub per_minute: Vec<u32>,
    /// Calls the server refused (429) per simulated minute.
    pub throttled_per_minute: Vec<u32>,
}

impl SimReport {
    /// Admitted calls as a share of the theoretical maximum.
    pub fn share(&self) -> f64 {
        self.admitted_in_span as f64 / self.theoretical_max.max(1) as f64
    }

    /// The running time of the span's queries as a share of its budget: for a
    /// running-time-bound workload, the share of the maximum with the realised running
    /// times (the maximum is `budget / realised mean`).
    pub fn budget_share(&self) -> f64 {
        self.running_time_in_span.as_secs_f64() / self.runtime_budget.as_secs_f64().max(1e-9)
    }

    /// Calls that did not get their result: given up (`failed`) or never ended (`lost`).
    pub fn calls_lost(&self) -> u64 {
        self.failed + self.lost
    }
}

/// What a simulated client asks of the simulator next.
#[derive(Debug)]
pub enum ClientOutput {
    /// Send a request; `token` marks a token request (answered by the login endpoint,
    /// not counted by the API).
    Send {
        /// Answer with this id.
        id: u64,
        /// A token request.
        token: bool,
    },
    /// A call ended.
    Ended {
        /// The call, as `submit` returned it.
        call: u64,
        /// Whether it succeeded.
        ok: bool,
    },
    /// Nothing to do until this instant, or until the next input when `None`.
    Wait(Option<Instant>),
}

/// A client the simulator can drive: the engine, a baseline, or your own. After every
/// input the simulator polls until `Wait`.
pub trait SimClient {
    /// A caller submits a call of the workload; returns its id.
    fn submit(&mut self, now: Instant) -> u64;
    /// The answer to a `Send`.
    fn handle_response(
        &mut self,
        send: u64,
        response: http::Response<Vec<u8>>,
        now: Instant,
        wall: SystemTime,
    );
    /// A `Wait` instant came.
    fn handle_timeout(&mut self, now: Instant);
    /// The next output.
    fn poll(&mut self) -> ClientOutput;
}

/// The engine as a [`SimClient`], with its own quota or admitting through a
/// [`ModelStore`] shared with the other processes.
#[derive(Debug)]
pub struct EngineClient {
    engine: Engine,
    /// The transmits handed out, by number (the simulator speaks in numbers).
    sends: std::collections::HashMap<u64, SendId>,
    workload: Workload,
    store: Option<Rc<RefCell<ModelStore>>>,
    now: Instant,
}

impl EngineClient {
    /// An engine with `policy` seeded with `seed`, enforcing `limits`.
    pub fn new(
        limits: Limits,
        margin: Duration,
        workload: Workload,
        policy: StandardPolicy,
        seed: u64,
        now: Instant,
    ) -> EngineClient {
        EngineClient::with_mode(
            limits,
            margin,
            workload,
            policy,
            seed,
            now,
            QuotaMode::Local,
        )
    }

    /// [`EngineClient::new`] with the quota in `mode`.
    pub fn with_mode(
        limits: Limits,
        margin: Duration,
        workload: Workload,
        policy: StandardPolicy,
        seed: u64,
        now: Instant,
        mode: QuotaMode,
    ) -> EngineClient {
        EngineClient::build(limits, margin, workload, policy, seed, now, mode, false)
    }

    #[allow(clippy::too_many_arguments)] // the simulator's knobs, each named at the call
    fn build(
        limits: Limits,
        margin: Duration,
        workload: Workload,
        policy: StandardPolicy,
        seed: u64,
        now: Instant,
        mode: QuotaMode,
        learn_margin: bool,
    ) -> EngineClient {
        let surface = Surface::DefenderXdr;
        let mut config = Config::new(
            surface,
            Auth::ClientCredentials(ClientCredentials::new(
                "sim-tenant",
                "sim-app",
                Secret::new("sim-secret"),
            )),
        );
        config.endpoints = Endpoints::new(surface, Default::default());
        config.limits = limits;
        config.margin = margin;
        config.learn_margin = learn_margin;
        config.quota = mode;
        let policy = policy.seed(seed);
        let engine = Engine::new(config, Box::new(policy), now).expect("https endpoints"); // the global endpoints are https
        EngineClient {
            engine,
            sends: std::collections::HashMap::new(),
            workload,
            store: None,
            now,
        }
    }

    /// An engine in [`QuotaMode::Shared`] admitting through `store`.
    pub fn shared(
        limits: Limits,
        margin: Duration,
        workload: Workload,
        policy: StandardPolicy,
        seed: u64,
        now: Instant,
        store: Rc<RefCell<ModelStore>>,
    ) -> EngineClient {
        let mut c = EngineClient::with_mode(
            limits,
            margin,
            workload,
            policy,
            seed,
            now,
            QuotaMode::Shared,
        );
        c.store = Some(store);
        c
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl SimClient for EngineClient {
    fn submit(&mut self, now: Instant) -> u64 {
        let call = match self.workload {
            Workload::Incidents => Call::ListIncidents(IncidentQuery {
                top: Some(10),
                ..Default::default()
            }),
            Workload::Hunting { .. } => {
                Call::Hunt(HuntRequest::new("DeviceProcessEvents | take 10"))
            }
        };
        self.now = self.now.max(now);
        self.engine.submit(call, now).get()
    }

    fn handle_response(
        &mut self,
        send: u64,
        response: http::Response<Vec<u8>>,
        now: Instant,
        wall: SystemTime,
    ) {
        self.now = self.now.max(now);
        if let Some(send) = self.sends.remove(&send) {
            self.engine.handle_response(send, response, now, wall);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.engine.handle_timeout(now);
    }

    fn poll(&mut self) -> ClientOutput {
        loop {
            return match self.engine.poll_output() {
                Output::Quota(op) => {
                    // Only in shared mode; the store answers at once.
                    let store = self.store.as_ref().expect("a store in shared mode");
                    let answer = store.borrow_mut().perform(op, self.now);
                    if let Some((id, a)) = answer {
                        self.engine.handle_admission(id, a, self.now);
                    }
                    continue;
                }
                Output::Transmit(t) => {
                    self.sends.insert(t.id.get(), t.id);
                    ClientOutput::Send {
                        id: t.id.get(),
                        token: t.call().is_none(),
                    }
                }
                Output::Event(Event::Completed { id, .. }) => ClientOutput::Ended {
                    call: id.get(),
                    ok: true,
                },
                Output::Event(Event::Failed { id, .. }) => ClientOutput::Ended {
                    call: id.get(),
                    ok: false,
                },
                // The simulated clients use client credentials (no NeedToken) and
                // have nobody to tell of a wait or a warning.
                Output::Event(
                    Event::Waiting { .. }
                    | Event::NeedToken
                    | Event::Warning { .. }
                    | Event::TokenRefreshed { .. },
                ) => continue,
                Output::Wait(t) => ClientOutput::Wait(t),
            };
        }
    }
}

/// The quota store the processes of [`Strategy::SharedStore`] share: core's exact
/// [`Quota`] per group and [`RunningTime`], with the engines' margin: the semantics of
/// `defender-redis`, in memory and without latency.
#[derive(Debug)]
pub struct ModelStore {
    quotas: BTreeMap<ApiGroup, Quota>,
    runtime: RunningTime,
    /// How soon to ask again when running time is held by queries in flight.
    poll: Duration,
}

impl ModelStore {
    /// A store enforcing `limits` with `margin`.
    pub fn new(limits: &Limits, margin: Duration) -> ModelStore {
        ModelStore {
            quotas: ApiGroup::ALL
                .into_iter()
                .map(|g| (g, Quota::new(&limits.group(g).calls, margin)))
                .collect(),
            runtime: RunningTime::new(&limits.hunting.runtime, margin),
            poll: Duration::from_secs(1),
        }
    }

    /// Performs `op` at `now`; an acquire returns its answer.
    pub fn perform(
        &mut self,
        op: QuotaOp,
        now: Instant,
    ) -> Option<(defender_core::engine::AdmitId, Admission)> {
        match op {
            QuotaOp::Acquire {
                id,
                group,
                estimate,
                ..
            } => {
                let quota = self.quotas.get_mut(&group).expect("every group"); // built from ApiGroup::ALL
                let ticket = match quota.try_acquire(now) {
                    Ok(t) => t,
                    Err(d) => {
                        return Some((
                            id,
                            Admission::Denied {
                                retry_after: Some(d.retry_at.saturating_duration_since(now)),
                                reason: d
                                    .limit
                                    .map_or(WaitReason::ServerRetryTime, WaitReason::Calls),
                            },
                        ))
                    }
                };
                let mut reservation = None;
                if group == ApiGroup::Hunting && !estimate.is_zero() {
                    match self.runtime.try_reserve(now, estimate) {
                        Ok(r) => reservation = Some(r),
                        Err(d) => {
                            quota.release(ticket);
                            let wait = d
                                .retry_at
                                .map_or(self.poll, |t| t.saturating_duration_since(now));
                            return Some((
                                id,
                                Admission::Denied {
                                    retry_after: Some(wait),
                                    reason: d
                                        .limit
                                        .map_or(WaitReason::RuntimeHeld, WaitReason::Runtime),
                                },
                            ));
                        }
                    }
                }
                Some((
                    id,
                    Admission::Admitted(StoreTicket::new((ticket, reservation))),
                ))
            }
            QuotaOp::Release { group, ticket } => {
                if let Some((t, r)) = ticket.into_inner::<(Ticket, Option<Reservation>)>() {
                    self.quotas.get_mut(&group).expect("every group").release(t); // as above
                    if let Some(r) = r {
                        self.runtime.cancel(r);
                    }
                }
                None
            }
            QuotaOp::Complete {
                ticket, running, ..
            } => {
                if let Some((_, Some(r))) = ticket.into_inner::<(Ticket, Option<Reservation>)>() {
                    self.runtime.complete(r, running, now);
                }
                None
            }
            QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                runtime_exhausted,
            } => {
                let quota = self.quotas.get_mut(&group).expect("every group"); // as above
                if let Some(l) = limit {
                    quota.handle_learned_limit(l);
                }
                match (retry_after, runtime_exhausted) {
                    (Some(w), true) => self.runtime.handle_exhausted(now + w),
                    (Some(w), false) => quota.handle_retry_at(now + w),
                    (None, _) => {}
                }
                None
            }
            _ => None,
        }
    }
}

/// Runs the simulation with the engine and the standard policy in every process.
pub fn run_engine(cfg: &SimConfig) -> SimReport {
    run(cfg, Strategy::Engine)
}

/// Runs the simulation with `strategy` in every process.
pub fn run(cfg: &SimConfig, strategy: Strategy) -> SimReport {
    let per_minute = tightest(&cfg.client_limits, cfg.workload.group());
    let store = Rc::new(RefCell::new(ModelStore::new(
        &cfg.client_limits,
        cfg.margin,
    )));
    run_with(cfg, |process, now| -> Box<dyn SimClient> {
        // Every process draws its own jitter.
        let seed = cfg.seed.wrapping_add(process as u64 * 0x9E37_79B9);
        let baseline = |kind| {
            Box::new(Baseline::new(
                kind,
                cfg.baselines.clone(),
                per_minute,
                seed,
                now,
            ))
        };
        match strategy {
            Strategy::Engine => Box::new(EngineClient::build(
                cfg.client_limits.clone(),
                cfg.margin,
                cfg.workload,
                cfg.engine_policy.clone(),
                seed,
                now,
                QuotaMode::Local,
                cfg.learn_margin,
            )),
            Strategy::Governor => baseline(BaselineKind::Governor),
            Strategy::Backoff => baseline(BaselineKind::Backoff),
            Strategy::Naive => baseline(BaselineKind::Naive),
            Strategy::SharedStore => Box::new(EngineClient::shared(
                cfg.client_limits.clone(),
                cfg.margin,
                cfg.workload,
                cfg.engine_policy.clone(),
                seed,
                now,
                store.clone(),
            )),
        }
    })
}

/// The call window with the shortest period (the per-minute limit).
fn tightest(limits: &Limits, group: ApiGroup) -> CallLimit {
    limits
        .group(group)
        .calls
        .iter()
        .min_by_key(|l| l.per)
        .copied()
        .unwrap_or(CallLimit {
            max: u32::MAX,
            per: Duration::from_secs(60),
        })
}

#[derive(Debug)]
enum Ev {
    Arrive(usize, u64, bool),
    Respond(usize, u64, http::Response<Vec<u8>>),
    Charge(Duration),
}

/// Runs the simulation with the client `make(process, t0)` builds for each process.
pub fn run_with(
    cfg: &SimConfig,
    mut make: impl FnMut(usize, Instant) -> Box<dyn SimClient>,
) -> SimReport {
    #[allow(clippy::disallowed_methods)] // the one real instant virtual time counts from
    let t0 = Instant::now();
    let mut rng = SplitMix64(cfg.seed);
    let mut uniform = move |lo: Duration, hi: Duration| -> Duration {
        let span = hi.saturating_sub(lo).as_nanos() as u64;
        lo + Duration::from_nanos(if span == 0 {
            0
        } else {
            rng.next() % (span + 1)
        })
    };
    let latency_at = |now: Instant| match cfg.latency_change {
        Some((after, range)) if now >= t0 + after => range,
        _ => cfg.latency,
    };
    let processes = cfg.processes.max(1);
    let mut clients: Vec<Box<dyn SimClient>> = (0..processes).map(|p| make(p, t0)).collect();
    let mut timers: Vec<Option<Instant>> = vec![None; processes];
    let mut server = ServerModel::new(cfg.server_limits.clone(), cfg.mode, t0);
    let group = cfg.workload.group();
    let horizon = {
        let g = cfg.server_limits.group(group);
        let calls = g.calls.iter().map(|l| l.per);
        let runtime = g.runtime.iter().map(|l| l.per);
        calls.chain(runtime).max().unwrap_or_default() + Duration::from_secs(60)
    };
    let end = t0 + cfg.duration;
    let runtime_budget = match cfg.workload {
        Workload::Incidents => Duration::ZERO,
        Workload::Hunting { .. } => cfg
            .server_limits
            .hunting
            .runtime
            .iter()
            .map(|l| {
                let windows = cfg.duration.as_nanos().div_ceil(l.per.as_nanos().max(1));
                l.budget
                    .saturating_mul(windows.min(u32::MAX as u128) as u32)
            })
            .min()
            .unwrap_or_default(),
    };
    let mut report = SimReport {
        theoretical_max: cfg.theoretical_max(),
        runtime_budget,
        per_minute: vec![0; cfg.duration.as_secs().div_ceil(60) as usize],
        throttled_per_minute: vec![0; cfg.duration.as_secs().div_ceil(60) as usize],
        ..SimReport::default()
    };
    let mut submitted: HashMap<(usize, u64), Instant> = HashMap::new();
    for (p, client) in clients.iter_mut().enumerate() {
        for _ in 0..cfg.callers {
            submitted.insert((p, client.submit(t0)), t0);
        }
    }
    let mut net = Net::default();
    let mut now = t0;
    let mut dirty: Vec<bool> = vec![true; processes];
    let step_bound = 100_000_000u64;
    let mut steps = 0u64;
    let mut last_forget = t0;
    loop {
        steps += 1;
        assert!(steps < step_bound, "simulation exceeded its step bound");
        // Drain every client that had an input.
        for p in 0..processes {
            if !std::mem::take(&mut dirty[p]) {
                continue;
            }
            let client = &mut clients[p];
            loop {
                match client.poll() {
                    ClientOutput::Send { id, token } => {
                        let (lo, hi) = latency_at(now);
                        let at = now + uniform(lo, hi);
                        net.push(at, Ev::Arrive(p, id, token));
                    }
                    ClientOutput::Ended { call, ok } => {
                        if ok {
                            report.completed += 1;
                        } else {
                            report.failed += 1;
                        }
                        if let Some(at) = submitted.remove(&(p, call)) {
                            report.worst_wait = report.worst_wait.max(now - at);
                        }
                        if now < end {
                            submitted.insert((p, client.submit(now)), now);
                        }
                    }
                    ClientOutput::Wait(t) => {
                        timers[p] = t;
                        break;
                    }
                }
            }
        }
        let next_ev = net.peek();
        let next_timer = timers.iter().flatten().min().copied();
        let next = match (next_ev, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        if next > end + Duration::from_secs(2 * 86_400) {
            break;
        }
        assert!(next >= now, "time went backwards");
        now = next;
        if now.saturating_duration_since(last_forget) > Duration::from_secs(3600) {
            server.forget_before(now, horizon);
            last_forget = now;
        }
        if next_ev == Some(now) {
            match net.pop() {
                Ev::Arrive(p, send, token) => {
                    let (lo, hi) = latency_at(now);
                    let back = uniform(lo, hi);
                    if token {
                        let body =
                            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"sim"}"#
                                .to_vec();
                        net.push(now + back, Ev::Respond(p, send, http::Response::new(body)));
                        continue;
                    }
                    report.attempts += 1;
                    let minute = ((now - t0).as_secs() / 60) as usize;
                    let verdict = server.arrive(group, now);
                    if verdict != Verdict::Admit {
                        if let Some(m) = report.throttled_per_minute.get_mut(minute) {
                            *m += 1;
                        }
                    }
                    match verdict {
                        Verdict::Admit => {
                            if now < end {
                                report.admitted_in_span += 1;
                                if let Some(m) = report.per_minute.get_mut(minute) {
                                    *m += 1;
                                }
                            }
                            let (body, ran) = match cfg.workload {
                                Workload::Incidents => {
                                    (br#"{"value":[]}"#.to_vec(), Duration::ZERO)
                                }
                                Workload::Hunting { min, max } => {
                                    let ran = uniform(min, max);
                                    let body = format!(
                                        r#"{{"Stats":{{"ExecutionTime":{}}},"Schema":[],"Results":[]}}"#,
                                        ran.as_secs_f64()
                                    );
                                    (body.into_bytes(), ran)
                                }
                            };
                            if now < end {
                                report.running_time_in_span += ran;
                            }
                            if !ran.is_zero() {
                                net.push(now + ran, Ev::Charge(ran));
                            }
                            net.push(
                                now + ran + back,
                                Ev::Respond(p, send, http::Response::new(body)),
                            );
                        }
                        Verdict::Throttled { limit, wait } => {
                            let body = defender_429_body(limit, wait, "sim-tenant");
                            let resp = too_many(body, wait);
                            net.push(now + back, Ev::Respond(p, send, resp));
                        }
                        Verdict::RuntimeSpent { wait } => {
                            let body = serde_json::json!({"error": {"code": "429", "message": format!(
                                "You have exceeded processing resources allocated to this tenant. You can run queries again in {}.",
                                timespan(wait + Duration::from_secs(1)))}})
                            .to_string()
                            .into_bytes();
                            net.push(now + back, Ev::Respond(p, send, too_many(body, wait)));
                        }
                    }
                }
                Ev::Respond(p, send, resp) => {
                    if resp.status() == 429 {
                        report.throttled += 1;
                    }
                    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (now - t0);
                    clients[p].handle_response(send, resp, now, wall);
                    dirty[p] = true;
                }
                Ev::Charge(ran) => server.charge(now, ran),
            }
        } else {
            for p in 0..processes {
                if timers[p].is_some_and(|t| t <= now) {
                    timers[p] = None;
                    clients[p].handle_timeout(now);
                    dirty[p] = true;
                }
            }
        }
    }
    report.lost = submitted.len() as u64;
    report.running_time = server.charged();
    report
}

fn too_many(body: Vec<u8>, wait: Duration) -> http::Response<Vec<u8>> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    http::Response::builder()
        .status(429)
        .header("retry-after", secs.max(1).to_string())
        .body(body)
        .expect("a valid response") // static status and header
}

/// Network and server events ordered by (time, sequence).
#[derive(Debug, Default)]
struct Net {
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Ev>,
    seq: u64,
}

impl Net {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.pending.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn peek(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    fn pop(&mut self) -> Ev {
        let Reverse((_, id)) = self.queue.pop().expect("peeked before"); // callers peek first
        self.pending
            .remove(&id)
            .expect("every queued event is pending") // inserted with its key
    }
}
