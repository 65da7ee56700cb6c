//! The blocking client's HTTP: one engine transmit over ureq (a span per request, never
//! its headers: the token is one), bodies read up to a limit, a streamed hunt's body read
//! a chunk at a time, ureq's errors as `TransportError`s, and a resolver that skips the
//! lookup thread for IP literals. No decision is made here.

use std::time::Duration;

use defender_core::dispatch::HuntCursor;
use defender_core::engine::{SendId, Transmit};
use defender_core::{TransportError, TransportErrorKind};

/// What sending a request came to.
pub(crate) enum Sent {
    /// The whole answer.
    Answer(Result<http::Response<Vec<u8>>, TransportError>),
    /// A streamed hunt's 2xx head: the body is still to be read.
    Body(Box<Body>),
}

/// Sends one request, under the call's span. A streamed hunt's 2xx body is left to
/// be read ([`Sent::Body`]); every other body is read up to the size limit.
pub(crate) fn exchange(agent: &ureq::Agent, t: Transmit, max_body: usize) -> Sent {
    let span = t.span();
    let enter = span.enter();
    let result = send(agent, t.request, t.timeout, t.stream).and_then(|resp| {
        span.record(defender_core::telemetry::STATUS, resp.status().as_u16());
        if t.stream && resp.status().is_success() {
            Ok(Err(resp))
        } else {
            read_body(resp, max_body).map(Ok)
        }
    });
    if let Err(e) = &result {
        tracing::debug!(kind = %e.kind, "transport error");
    }
    drop(enter);
    match result {
        Ok(Err(streamed)) => Sent::Body(Box::new(Body {
            send: t.id,
            status: streamed.status(),
            reader: streamed.into_body().into_reader(),
            chunk: vec![0; CHUNK].into_boxed_slice(),
            span,
        })),
        Ok(Ok(resp)) => Sent::Answer(Ok(resp)),
        Err(e) => Sent::Answer(Err(e)),
    }
}

/// One request read whole within `timeout` (a token source's step).
pub(crate) fn perform(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    max_body: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    send(agent, request, timeout, false).and_then(|resp| read_body(resp, max_body))
}

/// Runs a token source's process (the Azure CLI) with no input, to its end or until its
/// timeout, when it is killed.
pub(crate) fn run(
    command: &defender_core::credential::Command,
) -> Result<defender_core::credential::ProcessOutput, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(&command.program)
        .args(&command.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", command.program.display()))?;
    let deadline = std::time::Instant::now() + command.timeout;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {:?}",
                    command.program.display(),
                    command.timeout
                ));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    // The CLI's answer is a few hundred bytes: it fits the pipe while the process runs.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut stderr);
    }
    Ok(defender_core::credential::ProcessOutput {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Bytes read from a streamed body at a time. With one element of the document in the
/// decoder, this is what a streamed hunt holds in memory however slow its reader.
const CHUNK: usize = 64 * 1024;

/// A streamed hunt's body, read a chunk at a time by the thread that takes its items,
/// with no lock held: a slow reader slows the read, nothing piles up.
pub(crate) struct Body {
    pub(crate) send: SendId,
    /// The 2xx status of its head.
    pub(crate) status: http::StatusCode,
    reader: ureq::BodyReader<'static>,
    chunk: Box<[u8]>,
    /// The span of the call's request, entered while reading.
    pub(crate) span: tracing::Span,
}

impl Body {
    /// Reads the next chunk of the body into `cursor` (or tells it the body ended or broke).
    pub(crate) fn read_into(&mut self, cursor: &mut HuntCursor) {
        let _enter = self.span.enter();
        loop {
            match std::io::Read::read(&mut self.reader, &mut self.chunk) {
                Ok(0) => return cursor.eof(),
                Ok(n) => return cursor.feed(&self.chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let error = map_io(e);
                    tracing::debug!(kind = %error.kind, "streamed body broken");
                    return cursor.broken(error);
                }
            }
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("send", &self.send)
            .finish_non_exhaustive()
    }
}

/// Sends a request and reads the response head. `timeout` bounds the whole exchange,
/// except for a streamed body, which takes as long as its reader takes over the rows:
/// there it bounds each phase up to the head, then each read.
fn send(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    timeout: Duration,
    stream: bool,
) -> Result<http::Response<ureq::Body>, TransportError> {
    let config = agent.configure_request(request);
    let config = if stream {
        let t = Some(timeout);
        config
            .timeout_global(None)
            .timeout_per_call(None)
            .timeout_recv_body(None)
            .timeout_resolve(t)
            .timeout_connect(t)
            .timeout_send_request(t)
            .timeout_send_body(t)
            .timeout_recv_response(t)
            .timeout_per_read(t)
    } else {
        config.timeout_global(Some(timeout))
    };
    agent.run(config.build()).map_err(map_err)
}

/// Reads a whole body, up to `max` bytes.
fn read_body(
    mut resp: http::Response<ureq::Body>,
    max: usize,
) -> Result<http::Response<Vec<u8>>, TransportError> {
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

/// Resolves IP literals (the emulator, a local proxy) on the calling thread and hands
/// names to ureq's own resolver. That one spawns a thread for every lookup when the
/// request has a timeout, and ureq resolves before it looks for a pooled connection: on
/// loopback that thread cost more than the rest of the exchange.
#[derive(Debug, Default)]
pub(crate) struct LiteralResolver(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for LiteralResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        if config.ip_family() == ureq::config::IpFamily::Any {
            if let Some(addr) = ip_literal(uri) {
                let mut addrs = self.empty();
                addrs.push(addr);
                return Ok(addrs);
            }
        }
        self.0.resolve(uri, config, timeout)
    }
}

/// The address of a URI whose host is an IP address.
fn ip_literal(uri: &http::Uri) -> Option<std::net::SocketAddr> {
    let host = uri.host()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().ok()?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

fn too_large(max: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::BodyTooLarge,
        format!("the response body exceeds {max} bytes"),
    )
}

fn map_err(e: ureq::Error) -> TransportError {
    TransportError::new(error_kind(&e), e.to_string())
}

/// A failed read of a body: ureq's errors come wrapped in `io::Error`.
fn map_io(e: std::io::Error) -> TransportError {
    let kind = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
    {
        Some(inner) => error_kind(inner),
        None => match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                TransportErrorKind::Timeout
            }
            _ => TransportErrorKind::Closed,
        },
    };
    TransportError::new(kind, e.to_string())
}

fn error_kind(e: &ureq::Error) -> TransportErrorKind {
    match e {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_resolve_without_a_lookup() {
        let at = |u: &str| ip_literal(&u.parse().unwrap());
        assert_eq!(
            at("http://127.0.0.1:8080/api"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(at("https://[::1]/x"), Some("[::1]:443".parse().unwrap()));
        assert_eq!(at("http://10.0.0.1"), Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(at("https://api.security.microsoft.com/api"), None);
        assert_eq!(at("/relative"), None);
    }
}
