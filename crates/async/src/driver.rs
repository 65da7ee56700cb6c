//! The driver task: owns the engine, performs its transmits with reqwest, sleeps until
//! its timers, and routes its events to the waiting futures. No decision is made here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{
    Admission, AdmitId, Call, CallId, Engine, Event, GroupUsage, Output, QuotaOp, SendId, Transmit,
    Value,
};
use defender_core::token::AccessToken;
use defender_core::{Error, TransportError, TransportErrorKind};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::Instrument;

use crate::{Progress, QuotaStore, TokenProvider};

static KEYS: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_key() -> u64 {
    KEYS.fetch_add(1, Ordering::Relaxed)
}

pub(crate) enum Command {
    Submit {
        key: u64,
        call: Call,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    Cancel(u64),
    Usage(oneshot::Sender<Vec<GroupUsage>>),
}

enum Internal {
    Response(SendId, Result<http::Response<Vec<u8>>, TransportError>),
    Token(Result<AccessToken, Error>),
    Admission(AdmitId, Admission),
}

pub(crate) struct Driver {
    engine: Engine,
    http: reqwest::Client,
    provider: Option<Arc<dyn TokenProvider>>,
    store: Option<Arc<dyn QuotaStore>>,
    scope: String,
    max_body: usize,
    progress: broadcast::Sender<Progress>,
    waiters: HashMap<CallId, (u64, oneshot::Sender<Result<Value, Error>>)>,
    keys: HashMap<u64, CallId>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
}

impl Driver {
    pub(crate) fn new(
        engine: Engine,
        http: reqwest::Client,
        provider: Option<Arc<dyn TokenProvider>>,
        store: Option<Arc<dyn QuotaStore>>,
        scope: String,
        max_body: usize,
        progress: broadcast::Sender<Progress>,
    ) -> Driver {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        Driver {
            engine,
            http,
            provider,
            store,
            scope,
            max_body,
            progress,
            waiters: HashMap::new(),
            keys: HashMap::new(),
            internal_tx,
            internal_rx,
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let timer = self.drain();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Every client handle is gone: nobody can wait for an answer.
                    None => break,
                },
                Some(msg) = self.internal_rx.recv() => self.internal(msg),
                _ = sleep_until(timer), if timer.is_some() => self.engine.handle_timeout(Instant::now()),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { key, call, reply } => {
                let id = self.engine.submit(call, Instant::now());
                self.waiters.insert(id, (key, reply));
                self.keys.insert(key, id);
            }
            Command::Cancel(key) => {
                if let Some(id) = self.keys.remove(&key) {
                    self.waiters.remove(&id);
                    self.engine.cancel(id, Instant::now());
                }
            }
            Command::Usage(reply) => {
                let _ = reply.send(self.engine.usage(Instant::now()));
            }
        }
    }

    fn internal(&mut self, msg: Internal) {
        let now = Instant::now();
        match msg {
            Internal::Response(id, Ok(resp)) => {
                self.engine
                    .handle_response(id, resp, now, SystemTime::now())
            }
            Internal::Response(id, Err(e)) => self.engine.handle_transport_error(id, e, now),
            Internal::Token(t) => self.engine.handle_token(t, now),
            Internal::Admission(id, a) => self.engine.handle_admission(id, a, now),
        }
    }

    /// Drains the engine's outputs; returns its timer.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.engine.poll_output() {
                Output::Transmit(t) => self.transmit(t),
                Output::Event(Event::Completed { id, value }) => self.finish(id, Ok(value)),
                Output::Event(Event::Failed { id, error }) => self.finish(id, Err(error)),
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
                Output::Quota(op) => self.quota(op),
                Output::Wait(t) => return t,
            }
        }
    }

    fn finish(&mut self, id: CallId, result: Result<Value, Error>) {
        if let Some((key, reply)) = self.waiters.remove(&id) {
            self.keys.remove(&key);
            let _ = reply.send(result);
        }
    }

    /// Performs a shared-store operation in a task of its own; an admission comes back
    /// as an input.
    fn quota(&mut self, op: QuotaOp) {
        let tx = self.internal_tx.clone();
        match self.store.clone() {
            Some(store) => {
                tokio::spawn(async move {
                    if let Some((id, answer)) = store.perform(op).await {
                        let _ = tx.send(Internal::Admission(id, answer));
                    }
                });
            }
            None => {
                // The engine asks only when built with a store: unreachable, but answer.
                if let QuotaOp::Acquire { id, .. } = op {
                    let answer = Admission::Unavailable("no quota store was given".into());
                    let _ = tx.send(Internal::Admission(id, answer));
                }
            }
        }
    }

    fn fetch_token(&mut self) {
        let tx = self.internal_tx.clone();
        let scope = self.scope.clone();
        match self.provider.clone() {
            Some(p) => {
                tokio::spawn(async move {
                    let result = p.token(&scope).await.map(|(secret, life)| {
                        let now = Instant::now();
                        AccessToken::new(secret, now, now + life)
                    });
                    let _ = tx.send(Internal::Token(result));
                });
            }
            None => {
                let _ = tx.send(Internal::Token(Err(Error::Auth(defender_core::ApiError {
                    code: "NoTokenProvider".into(),
                    message: "the engine asked for a token but no provider was given".into(),
                    target: None,
                }))));
            }
        }
    }

    fn transmit(&mut self, t: Transmit) {
        let http = self.http.clone();
        let tx = self.internal_tx.clone();
        let max = self.max_body;
        let group = t.group.map_or("token", |g| g.as_str());
        let span = tracing::info_span!(
            "defender.call",
            group,
            attempt = t.attempt,
            status = tracing::field::Empty
        );
        tokio::spawn(
            async move {
                let result = perform(&http, t.request, t.timeout, max).await;
                match &result {
                    Ok(r) => {
                        tracing::Span::current().record("status", r.status().as_u16());
                    }
                    Err(e) => tracing::debug!(kind = %e.kind, "transport error"),
                }
                let _ = tx.send(Internal::Response(t.id, result));
            }
            .instrument(span),
        );
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
    if resp.content_length().is_some_and(|n| n as usize > max) {
        return Err(too_large(max));
    }
    let mut out = http::Response::builder()
        .status(resp.status())
        .version(resp.version());
    if let Some(h) = out.headers_mut() {
        *h = resp.headers().clone();
    }
    let mut body = Vec::new();
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
