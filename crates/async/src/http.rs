//! The async client's HTTP: one engine transmit over reqwest (a span per request, never
//! its headers: the token is one), bodies read up to a limit, a streamed hunt's body read
//! a chunk at a time, and reqwest's errors as `TransportError`s. No decision is made here.

use std::time::Duration;

use defender_core::dispatch::HuntCursor;
use defender_core::engine::{SendId, Transmit};
use defender_core::{TransportError, TransportErrorKind};
use tracing::Instrument;

/// One transmit over HTTP, in a span naming its group, attempt, status and (for a
/// streamed body) rows, never its headers: the token is one. A streamed hunt's 2xx
/// body is left to be read ([`Performed::Body`]); every other body is read whole, up
/// to the size limit.
pub(crate) async fn exchange(http: &reqwest::Client, t: Transmit, max_body: usize) -> Performed {
    let span = t.span();
    let (send, timeout) = (t.id, t.timeout);
    let head = async {
        let head = if t.stream {
            send_streamed(http, t.request, timeout, max_body).await
        } else {
            perform(http, t.request, timeout, max_body)
                .await
                .map(Head::Whole)
        };
        match &head {
            Ok(h) => {
                tracing::Span::current()
                    .record(defender_core::telemetry::STATUS, h.status().as_u16());
            }
            Err(e) => tracing::debug!(kind = %e.kind, "transport error"),
        }
        head
    }
    .instrument(span.clone())
    .await;
    match head {
        Ok(Head::Whole(r)) => Performed::Answer(Ok(r)),
        Ok(Head::Streamed(response)) => Performed::Body(Box::new(Body {
            send,
            response,
            timeout,
            span,
        })),
        Err(e) => Performed::Answer(Err(e)),
    }
}

/// What sending a request came to.
pub(crate) enum Performed {
    /// The whole answer, for the engine.
    Answer(Result<http::Response<Vec<u8>>, TransportError>),
    /// A streamed hunt's 2xx head: the body is still to be read.
    Body(Box<Body>),
}

/// A response: read whole, or a streamed hunt's, whose body is read as the rows are taken.
enum Head {
    Whole(http::Response<Vec<u8>>),
    Streamed(reqwest::Response),
}

impl Head {
    fn status(&self) -> http::StatusCode {
        match self {
            Head::Whole(r) => r.status(),
            Head::Streamed(r) => r.status(),
        }
    }
}

/// A streamed hunt's body, read a chunk at a time (as hyper hands them over) by the
/// future that takes its items, with no lock held. Nothing reads ahead of the caller.
pub(crate) struct Body {
    pub(crate) send: SendId,
    response: reqwest::Response,
    /// Bounds each read (not the whole body: that takes as long as its reader takes).
    timeout: Duration,
    /// The span of the call's request, entered while reading.
    pub(crate) span: tracing::Span,
}

impl Body {
    /// The 2xx status of its head.
    pub(crate) fn status(&self) -> http::StatusCode {
        self.response.status()
    }

    /// Reads the next chunk of the body into `cursor` (or tells it the body ended or broke).
    pub(crate) async fn read_into(&mut self, cursor: &mut HuntCursor) {
        let read = tokio::time::timeout(self.timeout, self.response.chunk())
            .instrument(self.span.clone())
            .await;
        let error = match read {
            Ok(Ok(Some(chunk))) => return cursor.feed(&chunk),
            Ok(Ok(None)) => return cursor.eof(),
            Ok(Err(e)) => map_err(e),
            Err(_) => timed_out(self.timeout),
        };
        self.span.in_scope(|| {
            tracing::debug!(kind = %error.kind, "streamed body broken");
        });
        cursor.broken(error);
    }
}

fn timed_out(timeout: Duration) -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        format!("no answer within {timeout:?}"),
    )
}

/// One HTTP exchange: the request as the engine built it, the body read up to `max`;
/// `timeout` bounds the whole exchange.
pub(crate) async fn perform(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let mut req = to_reqwest(request)?;
    *req.timeout_mut() = Some(timeout);
    let resp = http.execute(req).await.map_err(map_err)?;
    read_body(resp, max).await
}

/// A streamed hunt's exchange. A 2xx body is left unread: it takes as long as its
/// reader takes over the rows, so `timeout` bounds the exchange up to the response head,
/// then each read ([`Body`]). Any other body is read whole, up to `max`, within
/// `timeout` from the head.
async fn send_streamed(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max: usize,
) -> Result<Head, TransportError> {
    let req = to_reqwest(request)?;
    let resp = tokio::time::timeout(timeout, http.execute(req))
        .await
        .map_err(|_| timed_out(timeout))?
        .map_err(map_err)?;
    if resp.status().is_success() {
        return Ok(Head::Streamed(resp));
    }
    tokio::time::timeout(timeout, read_body(resp, max))
        .await
        .map_err(|_| timed_out(timeout))?
        .map(Head::Whole)
}

fn to_reqwest(request: http::Request<Vec<u8>>) -> Result<reqwest::Request, TransportError> {
    reqwest::Request::try_from(request)
        .map_err(|e| TransportError::new(TransportErrorKind::Other, e.without_url().to_string()))
}

/// Reads a whole body, up to `max` bytes.
async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
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

/// Runs a token source's process (the Azure CLI) with no input, to its end or until its
/// timeout, when it is killed (dropped with the timed-out future).
pub(crate) async fn run(
    command: defender_core::credential::Command,
) -> Result<defender_core::credential::ProcessOutput, String> {
    use std::process::Stdio;
    let program = command.program.display().to_string();
    let child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    match tokio::time::timeout(command.timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(defender_core::credential::ProcessOutput {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        }),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => Err(format!(
            "{program} did not finish within {:?}",
            command.timeout
        )),
    }
}
