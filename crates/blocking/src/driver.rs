//! The driver thread: owns the engine, performs its transmits with ureq on worker
//! threads, sleeps until its timers, and answers the waiting callers. No decision is made
//! here.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{
    Admission, AdmitId, Call, CallId, Engine, Event, GroupUsage, Output, QuotaOp, SendId, Transmit,
    Value,
};
use defender_core::token::AccessToken;
use defender_core::{Error, TransportError, TransportErrorKind};

use crate::{Progress, QuotaStore, TokenProvider};

pub(crate) enum Msg {
    Submit {
        call: Call,
        reply: mpsc::Sender<Result<Value, Error>>,
    },
    Usage(mpsc::Sender<Vec<GroupUsage>>),
    Response(SendId, Result<http::Response<Vec<u8>>, TransportError>),
    Token(Result<AccessToken, Error>),
    Admission(AdmitId, Admission),
    Shutdown,
}

pub(crate) struct Driver {
    pub(crate) engine: Engine,
    pub(crate) agent: ureq::Agent,
    pub(crate) provider: Option<Arc<dyn TokenProvider>>,
    pub(crate) scope: String,
    pub(crate) max_body: usize,
    pub(crate) progress: Option<mpsc::Sender<Progress>>,
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) workers: Workers,
    /// The shared quota store, when there is one.
    pub(crate) store: Option<Arc<dyn QuotaStore>>,
    /// Operations for the store's thread (started on the first operation).
    pub(crate) store_ops: Option<mpsc::Sender<QuotaOp>>,
}

impl Driver {
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut waiters: HashMap<CallId, mpsc::Sender<Result<Value, Error>>> = HashMap::new();
        loop {
            let timer = self.drain(&mut waiters);
            let msg = match timer {
                Some(t) => match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.engine.handle_timeout(Instant::now());
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            let now = Instant::now();
            match msg {
                Msg::Submit { call, reply } => {
                    let id = self.engine.submit(call, now);
                    waiters.insert(id, reply);
                }
                Msg::Usage(reply) => {
                    let _ = reply.send(self.engine.usage(now));
                }
                Msg::Response(id, Ok(resp)) => {
                    self.engine
                        .handle_response(id, resp, now, SystemTime::now())
                }
                Msg::Response(id, Err(e)) => self.engine.handle_transport_error(id, e, now),
                Msg::Token(t) => self.engine.handle_token(t, now),
                Msg::Admission(id, answer) => self.engine.handle_admission(id, answer, now),
                Msg::Shutdown => return,
            }
        }
    }

    fn drain(
        &mut self,
        waiters: &mut HashMap<CallId, mpsc::Sender<Result<Value, Error>>>,
    ) -> Option<Instant> {
        loop {
            match self.engine.poll_output() {
                Output::Transmit(t) => self.transmit(t),
                Output::Event(Event::Completed { id, value }) => {
                    if let Some(w) = waiters.remove(&id) {
                        let _ = w.send(Ok(value));
                    }
                }
                Output::Event(Event::Failed { id, error }) => {
                    if let Some(w) = waiters.remove(&id) {
                        let _ = w.send(Err(error));
                    }
                }
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
                Output::Event(Event::NeedToken) => self.fetch_token(),
                Output::Event(_) => {}
                Output::Quota(op) => self.quota(op),
                Output::Wait(t) => return t,
            }
        }
    }

    /// Store operations are blocking IO: they run on a thread of their own, in order, so
    /// that this thread keeps answering every other call meanwhile.
    fn quota(&mut self, op: QuotaOp) {
        let Some(store) = self.store.clone() else {
            // The engine emits store operations only in shared mode, set with a store.
            if let QuotaOp::Acquire { id, .. } = op {
                let answer = Admission::Unavailable("no quota store was given".into());
                let _ = self.tx.send(Msg::Admission(id, answer));
            }
            return;
        };
        if self.store_ops.is_none() {
            let (ops, rx) = mpsc::channel::<QuotaOp>();
            let results = self.tx.clone();
            let spawned = std::thread::Builder::new()
                .name("defender-quota".into())
                .spawn(move || {
                    for op in rx {
                        if let Some((id, answer)) = store.perform(op) {
                            if results.send(Msg::Admission(id, answer)).is_err() {
                                return;
                            }
                        }
                    }
                });
            match spawned {
                Ok(_) => self.store_ops = Some(ops),
                Err(e) => {
                    if let QuotaOp::Acquire { id, .. } = op {
                        let answer =
                            Admission::Unavailable(format!("could not start a thread: {e}"));
                        let _ = self.tx.send(Msg::Admission(id, answer));
                    }
                    return;
                }
            }
        }
        if let Some(ops) = &self.store_ops {
            let _ = ops.send(op);
        }
    }

    fn fetch_token(&self) {
        let tx = self.tx.clone();
        let scope = self.scope.clone();
        let provider = self.provider.clone();
        std::thread::spawn(move || {
            let result = match provider {
                Some(p) => p.token(&scope).map(|(secret, life)| {
                    let now = Instant::now();
                    AccessToken::new(secret, now, now + life)
                }),
                None => Err(Error::Auth(defender_core::ApiError {
                    code: "NoTokenProvider".into(),
                    message: "the engine asked for a token but no provider was given".into(),
                    target: None,
                })),
            };
            let _ = tx.send(Msg::Token(result));
        });
    }

    fn transmit(&mut self, t: Transmit) {
        let group = t.group.map_or("token", |g| g.as_str());
        let span = tracing::info_span!(
            "defender.call",
            group,
            attempt = t.attempt,
            status = tracing::field::Empty
        );
        self.workers.run(
            Job { transmit: t, span },
            &self.agent,
            self.max_body,
            &self.tx,
        );
    }
}

/// A transmit for a worker thread.
struct Job {
    transmit: Transmit,
    span: tracing::Span,
}

/// Worker threads that perform transmits, kept alive between calls (a thread per call
/// cost more than the call on loopback). A worker is added when none is idle, up to
/// `MAX_WORKERS`; beyond that, transmits queue.
#[derive(Default)]
pub(crate) struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    queue: Option<Arc<std::sync::Mutex<mpsc::Receiver<Job>>>>,
    idle: Arc<std::sync::atomic::AtomicUsize>,
    count: usize,
}

const MAX_WORKERS: usize = 64;

impl Workers {
    fn run(&mut self, job: Job, agent: &ureq::Agent, max: usize, results: &mpsc::Sender<Msg>) {
        use std::sync::atomic::Ordering;
        if self.jobs.is_none() {
            let (tx, rx) = mpsc::channel();
            self.jobs = Some(tx);
            self.queue = Some(Arc::new(std::sync::Mutex::new(rx)));
        }
        if self.idle.load(Ordering::Acquire) == 0 && self.count < MAX_WORKERS {
            let queue = self.queue.clone().expect("made above");
            let idle = self.idle.clone();
            let (agent, worker_results) = (agent.clone(), results.clone());
            self.count += 1;
            let spawned = std::thread::Builder::new()
                .name("defender-http".into())
                .spawn(move || loop {
                    idle.fetch_add(1, Ordering::AcqRel);
                    // The lock is held only while waiting for the next job.
                    let next = queue.lock().map(|rx| rx.recv());
                    idle.fetch_sub(1, Ordering::AcqRel);
                    let Ok(Ok(Job { transmit: t, span })) = next else {
                        return;
                    };
                    let _enter = span.enter();
                    let result = perform(&agent, t.request, t.timeout, max);
                    match &result {
                        Ok(r) => {
                            span.record("status", r.status().as_u16());
                        }
                        Err(e) => tracing::debug!(kind = %e.kind, "transport error"),
                    }
                    if worker_results.send(Msg::Response(t.id, result)).is_err() {
                        return;
                    }
                });
            if let Err(e) = spawned {
                self.count -= 1;
                if self.count == 0 {
                    // No worker at all: fail this transmit rather than queue it forever.
                    let error = TransportError::new(
                        TransportErrorKind::Other,
                        format!("could not start a thread: {e}"),
                    );
                    let _ = results.send(Msg::Response(job.transmit.id, Err(error)));
                    return;
                }
            }
        }
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
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
    let request = agent
        .configure_request(request)
        .timeout_global(Some(timeout))
        .build();
    let mut resp = agent.run(request).map_err(map_err)?;
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

fn too_large(max: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::BodyTooLarge,
        format!("the response body exceeds {max} bytes"),
    )
}

fn map_err(e: ureq::Error) -> TransportError {
    let kind = match &e {
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
    };
    TransportError::new(kind, e.to_string())
}
