//! A deterministic virtual-time simulation: the engine against [`ServerModel`] with
//! seeded network latency, hours of traffic in milliseconds, no sleeping.
//!
//! Callers keep a fixed number of calls outstanding (a saturating workload); each
//! transmit reaches the server after an uplink latency drawn from the configured range,
//! is judged there by the reference model, and its answer (200, or 429 with the real
//! Defender body and `Retry-After`) comes back after the query's running time and a
//! downlink latency. A step bound keeps a bug from hanging a test.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant, UNIX_EPOCH};

use defender_core::engine::{Auth, Call, CallId, Config, Engine, Event, Output, SendId};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::IncidentQuery;
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{ApiGroup, Endpoints, Limits, Surface};
use defender_policy::{SplitMix64, StandardPolicy};

use crate::server_model::{
    defender_429_body, theoretical_max, timespan, ServerModel, Verdict, WindowMode,
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
    /// Calls kept outstanding.
    pub callers: usize,
    /// The workload.
    pub workload: Workload,
    /// The engine's safety margin.
    pub margin: Duration,
    /// Seeds latency and running times.
    pub seed: u64,
}

impl SimConfig {
    /// A day of incidents traffic at the 2021 terms, sliding windows, 20-400 ms latency.
    pub fn day_2021(workload: Workload, mode: WindowMode) -> SimConfig {
        SimConfig {
            client_limits: Limits::default(),
            server_limits: Limits::default(),
            mode,
            duration: Duration::from_secs(86_400),
            latency: (Duration::from_millis(20), Duration::from_millis(400)),
            callers: 16,
            workload,
            margin: Duration::from_millis(500),
            seed: 1,
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
    /// Calls that ended in an error.
    pub failed: u64,
    /// Calls submitted that never ended (should be zero).
    pub lost: u64,
    /// 429 responses received.
    pub throttled: u64,
    /// The longest time from submission to end of any call.
    pub worst_wait: Duration,
    /// Running time the engine charged.
    pub running_time: Duration,
    /// Admitted calls per simulated minute.
    pub per_minute: Vec<u32>,
}

impl SimReport {
    /// Admitted calls as a share of the theoretical maximum.
    pub fn share(&self) -> f64 {
        self.admitted_in_span as f64 / self.theoretical_max.max(1) as f64
    }
}

#[derive(Debug)]
enum Ev {
    Arrive(SendId, http::Request<Vec<u8>>),
    Respond(SendId, http::Response<Vec<u8>>),
    Charge(Duration),
}

/// Runs the simulation with the engine and the standard policy.
pub fn run_engine(cfg: &SimConfig) -> SimReport {
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
    config.limits = cfg.client_limits.clone();
    config.margin = cfg.margin;
    let policy = StandardPolicy::patient().seed(cfg.seed);
    let mut engine = Engine::new(config, Box::new(policy), t0).expect("https endpoints"); // the global endpoints are https
    let mut server = ServerModel::new(cfg.server_limits.clone(), cfg.mode, t0);
    let group = match cfg.workload {
        Workload::Incidents => ApiGroup::Incidents,
        Workload::Hunting { .. } => ApiGroup::Hunting,
    };
    let make_call = || match cfg.workload {
        Workload::Incidents => Call::ListIncidents(IncidentQuery {
            top: Some(10),
            ..Default::default()
        }),
        Workload::Hunting { .. } => Call::Hunt(HuntRequest::new("DeviceProcessEvents | take 10")),
    };
    let end = t0 + cfg.duration;
    let mut report = SimReport {
        theoretical_max: theoretical_max(&cfg.server_limits, group, cfg.duration),
        per_minute: vec![0; cfg.duration.as_secs().div_ceil(60) as usize],
        ..SimReport::default()
    };
    let mut submitted: HashMap<CallId, Instant> = HashMap::new();
    for _ in 0..cfg.callers {
        submitted.insert(engine.submit(make_call(), t0), t0);
    }
    let mut net = Net::default();
    let mut now = t0;
    let mut timer: Option<Instant>;
    let step_bound = 50_000_000u64;
    let mut steps = 0u64;
    let mut last_forget = t0;
    loop {
        steps += 1;
        assert!(steps < step_bound, "simulation exceeded its step bound");
        // Drain the engine.
        loop {
            match engine.poll_output() {
                Output::Transmit(t) => {
                    let at = now + uniform(cfg.latency.0, cfg.latency.1);
                    net.push(at, Ev::Arrive(t.id, t.request));
                }
                Output::Event(Event::Completed { id, .. }) => {
                    report.completed += 1;
                    end_call(&mut submitted, id, now, &mut report);
                    if now < end {
                        submitted.insert(engine.submit(make_call(), now), now);
                    }
                }
                Output::Event(Event::Failed { id, .. }) => {
                    report.failed += 1;
                    end_call(&mut submitted, id, now, &mut report);
                    if now < end {
                        submitted.insert(engine.submit(make_call(), now), now);
                    }
                }
                Output::Event(_) => {}
                Output::Wait(t) => {
                    timer = t;
                    break;
                }
            }
        }
        let next_ev = net.peek();
        let next = match (next_ev, timer) {
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
            server.forget_before(now, Duration::from_secs(2 * 86_400));
            last_forget = now;
        }
        if next_ev == Some(now) {
            match net.pop() {
                Ev::Arrive(send, req) => {
                    let back = uniform(cfg.latency.0, cfg.latency.1);
                    if req.uri().path().ends_with("/token") {
                        let body =
                            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"sim"}"#
                                .to_vec();
                        net.push(now + back, Ev::Respond(send, http::Response::new(body)));
                        continue;
                    }
                    match server.arrive(group, now) {
                        Verdict::Admit => {
                            if now < end {
                                report.admitted_in_span += 1;
                                let minute = (now - t0).as_secs() / 60;
                                if let Some(m) = report.per_minute.get_mut(minute as usize) {
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
                            if !ran.is_zero() {
                                net.push(now + ran, Ev::Charge(ran));
                            }
                            net.push(
                                now + ran + back,
                                Ev::Respond(send, http::Response::new(body)),
                            );
                        }
                        Verdict::Throttled { limit, wait } => {
                            let body = defender_429_body(limit, wait, "sim-tenant");
                            let resp = too_many(body, wait);
                            net.push(now + back, Ev::Respond(send, resp));
                        }
                        Verdict::RuntimeSpent { wait } => {
                            let body = serde_json::json!({"error": {"code": "429", "message": format!(
                                "You have exceeded processing resources allocated to this tenant. You can run queries again in {}.",
                                timespan(wait + Duration::from_secs(1)))}})
                            .to_string()
                            .into_bytes();
                            net.push(now + back, Ev::Respond(send, too_many(body, wait)));
                        }
                    }
                }
                Ev::Respond(send, resp) => {
                    if resp.status() == 429 {
                        report.throttled += 1;
                    }
                    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (now - t0);
                    engine.handle_response(send, resp, now, wall);
                }
                Ev::Charge(ran) => server.charge(now, ran),
            }
        } else {
            engine.handle_timeout(now);
        }
    }
    report.lost = submitted.len() as u64;
    report.running_time = engine.running_time_spent();
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

fn end_call(
    submitted: &mut HashMap<CallId, Instant>,
    id: CallId,
    now: Instant,
    report: &mut SimReport,
) {
    if let Some(at) = submitted.remove(&id) {
        report.worst_wait = report.worst_wait.max(now - at);
    }
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
