//! A token source through the dispatcher: the engine asks, the dispatcher hands out the
//! source's exchange as work, its steps run with fake IO, the token reaches the call; a
//! chain remembers the source that worked, and a refresh asks it alone (a workload
//! identity file read again).

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defender_core::credential::{ProcessOutput, TokenSource};
use defender_core::dispatch::{run_exchange, Dispatcher, Next, Wake, Work};
use defender_core::engine::{Auth, Call, Config, Engine};
use defender_core::hunting::HuntRequest;
use defender_core::policy::{Failure, Policy, Retry};
use defender_core::{Error, Surface, TransportError, TransportErrorKind};

#[derive(Debug)]
struct NoRetry;
impl Policy for NoRetry {
    fn max_wait(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn retry(&mut self, _: &Failure) -> Retry {
        Retry::Stop
    }
}

struct Nobody;
impl Wake for Nobody {
    fn wake(&self) {}
}

/// Fake IO: what each kind of step saw.
#[derive(Default)]
struct Io {
    log: RefCell<Vec<String>>,
    file: RefCell<String>,
}

impl Io {
    fn run(
        &self,
        work: Work,
        wall: SystemTime,
        now: Instant,
    ) -> Result<defender_core::credential::Fetched, Error> {
        let Work::Token(exchange) = work else {
            panic!("a token source's work")
        };
        run_exchange(
            *exchange,
            || (now, wall),
            |req, _| {
                let uri = req.uri().to_string();
                self.log.borrow_mut().push(format!("http {uri}"));
                if uri.contains("169.254.169.254") {
                    return Err(TransportError::new(
                        TransportErrorKind::Connect,
                        "unreachable",
                    ));
                }
                let body = String::from_utf8(req.body().clone()).unwrap();
                let token = body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("client_assertion="))
                    .unwrap_or("secret")
                    .to_owned();
                let mut resp = http::Response::new(
                    format!(r#"{{"access_token":"tok-{token}","expires_in":3599}}"#).into_bytes(),
                );
                if token == "secret" {
                    *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                    *resp.body_mut() = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#.to_vec();
                }
                Ok(resp)
            },
            |path| {
                self.log
                    .borrow_mut()
                    .push(format!("read {}", path.display()));
                Ok(self.file.borrow().clone().into_bytes())
            },
            |cmd| {
                self.log
                    .borrow_mut()
                    .push(format!("run {}", cmd.program.display()));
                Ok(ProcessOutput {
                    code: Some(1),
                    stdout: vec![],
                    stderr: b"ERROR: Please run 'az login'".to_vec(),
                })
            },
        )
    }
}

#[test]
fn a_chain_through_the_dispatcher() {
    #[allow(clippy::disallowed_methods)] // one real instant to count from
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let env = |k: &str| {
        match k {
            "AZURE_TENANT_ID" => Some("t"),
            "AZURE_CLIENT_ID" => Some("app"),
            "AZURE_FEDERATED_TOKEN_FILE" => Some("/var/run/fed"),
            _ => None,
        }
        .map(str::to_owned)
    };
    let source = TokenSource::from_env("auto", None, None, &env).unwrap();
    let config = Config::new(Surface::DefenderXdr, Auth::Source(source));
    let mut d = Dispatcher::new(Engine::new(config, Box::new(NoRetry), now).unwrap());
    let io = Io::default();
    *io.file.borrow_mut() = "fed-1".into();

    let id = d.submit(Call::Hunt(HuntRequest::new("AlertInfo")), Nobody, now);
    let work = d.take_work().expect("the token is work");
    let fetched = io.run(work, wall, now);
    d.handle_fetched(fetched, now);
    assert_eq!(d.token_source(), Some("workload identity"));
    assert_eq!(
        io.log.take(),
        [
            "read /var/run/fed",
            "http https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ]
    );
    let Next::Send(t) = d.next(id, now) else {
        panic!("the hunt goes")
    };
    assert_eq!(t.request.headers()["authorization"], "Bearer tok-fed-1");
    let body = br#"{"Schema":[],"Results":[]}"#.to_vec();
    d.handle_response(t.id, Ok(http::Response::new(body)), now, wall);
    assert!(matches!(d.next(id, now), Next::Done(Ok(_))));

    // Past the token's use: the workload identity alone, its file read again.
    let later = now + Duration::from_secs(3580);
    *io.file.borrow_mut() = "fed-2".into();
    let id = d.submit(Call::Hunt(HuntRequest::new("AlertInfo")), Nobody, later);
    let fetched = io.run(d.take_work().expect("a refresh"), wall, later);
    d.handle_fetched(fetched, later);
    assert_eq!(
        io.log.take(),
        [
            "read /var/run/fed",
            "http https://login.microsoftonline.com/t/oauth2/v2.0/token",
        ]
    );
    let Next::Send(t) = d.next(id, later) else {
        panic!("the hunt goes")
    };
    assert_eq!(t.request.headers()["authorization"], "Bearer tok-fed-2");
}

#[test]
fn every_failure_is_listed_and_the_calls_fail() {
    #[allow(clippy::disallowed_methods)] // one real instant to count from
    let now = Instant::now();
    let source = TokenSource::from_env("auto", None, None, &|_| None).unwrap();
    let config = Config::new(Surface::Graph, Auth::Source(source));
    let mut d = Dispatcher::new(Engine::new(config, Box::new(NoRetry), now).unwrap());
    let io = Io::default();
    let id = d.submit(Call::Hunt(HuntRequest::new("AlertInfo")), Nobody, now);
    let fetched = io.run(d.take_work().unwrap(), UNIX_EPOCH, now);
    d.handle_fetched(fetched, now);
    assert_eq!(
        io.log.take(),
        [
            "http http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.com",
            "run az",
        ]
    );
    let Next::Done(Err(e)) = d.next(id, now) else {
        panic!("the call fails")
    };
    let e = e.to_string();
    for part in [
        "environment secret: ",
        "environment certificate: ",
        "workload identity: ",
        "managed identity: ",
        "unreachable",
        "Azure CLI: ",
        "az login",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
    assert_eq!(d.token_source(), None);
}

#[derive(Debug)]
struct RetryOnce;
impl Policy for RetryOnce {
    fn max_wait(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn retry(&mut self, f: &Failure) -> Retry {
        if f.attempt < 2 {
            Retry::After(Duration::from_millis(5))
        } else {
            Retry::Stop
        }
    }
}

/// A source's 5xx is retried per policy as the engine's own token request is, and only
/// as often as the policy says.
#[test]
fn a_source_server_error_is_retried_per_policy() {
    #[allow(clippy::disallowed_methods)] // one real instant to count from
    let now = Instant::now();
    let source = TokenSource::managed_identity_imds(None);
    let config = Config::new(Surface::DefenderXdr, Auth::Source(source));
    let mut d = Dispatcher::new(Engine::new(config, Box::new(RetryOnce), now).unwrap());
    let id = d.submit(Call::Hunt(HuntRequest::new("AlertInfo")), Nobody, now);
    let answer = |status: u16| {
        move |_: http::Request<Vec<u8>>, _: Duration| {
            let mut r =
                http::Response::new(br#"{"access_token":"mi","expires_in":"3599"}"#.to_vec());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, TransportError>(r)
        }
    };
    let run = |d: &mut Dispatcher<Nobody>, status: u16, at: Instant| {
        let Some(Work::Token(ex)) = d.take_work() else {
            panic!("a fetch")
        };
        let fetched = run_exchange(
            *ex,
            || (at, UNIX_EPOCH),
            answer(status),
            |_| unreachable!(),
            |_| unreachable!(),
        );
        d.handle_fetched(fetched, at);
    };
    run(&mut d, 503, now);
    assert!(
        matches!(d.next(id, now), Next::Wait),
        "held back, not failed"
    );
    let later = now + Duration::from_millis(10);
    d.handle_timeout(later);
    run(&mut d, 200, later);
    assert!(matches!(d.next(id, later), Next::Send(_)));
    // Twice in a row: the policy stops, the call fails with the server's error.
    let source = TokenSource::managed_identity_imds(None);
    let config = Config::new(Surface::DefenderXdr, Auth::Source(source));
    let mut d = Dispatcher::new(Engine::new(config, Box::new(RetryOnce), now).unwrap());
    let id = d.submit(Call::Hunt(HuntRequest::new("AlertInfo")), Nobody, now);
    run(&mut d, 503, now);
    d.handle_timeout(later);
    run(&mut d, 503, later);
    assert!(matches!(
        d.next(id, later),
        Next::Done(Err(Error::Server { status: 503, .. }))
    ));
}
