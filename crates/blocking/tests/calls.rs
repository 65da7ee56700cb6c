//! How calls run without a driver thread: timers fire while other callers are inside
//! HTTP, tokens from a provider are fetched once for many threads, and a failing
//! provider fails calls instead of hanging them.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use defender_blocking::{Client, Progress, TokenProvider};
use defender_core::token::Secret;
use defender_core::{ApiGroup, Error, Limits};
use defender_emulator::{WindowMode, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use defender_policy::StandardPolicy;

use common::{Env, HoldServer};

#[test]
fn a_queued_calls_timer_fires_while_another_caller_is_inside_http() {
    let server = HoldServer::start();
    let (progress, waits) = mpsc::channel();
    let client = Client::builder()
        .tenant("contoso")
        .client_id("app")
        .client_secret("secret")
        .base_url(&server.base)
        .login_url(&server.base)
        .limits("2021,incidents.calls=1/1s")
        .expect("spec")
        .margin(Duration::from_millis(20))
        .policy(StandardPolicy::standard().max_attempts(1))
        .progress(progress)
        .build()
        .expect("builds");
    let first = {
        let client = client.clone();
        std::thread::spawn(move || client.incidents().get(1u64))
    };
    // The first call is inside HTTP, and stays there until the second is answered.
    assert_eq!(server.arrived.recv().expect("the first request"), "1");
    // The second waits for the window: only its own timer can send it.
    let second = client.incidents().get(2u64).expect("the second call");
    assert_eq!(second.incident_id, Some(2u64.into()));
    let first = first.join().expect("no panic").expect("the first call");
    assert_eq!(first.incident_id, Some(1u64.into()));
    match waits.try_recv() {
        Ok(Progress::Waiting { group, .. }) => assert_eq!(group, ApiGroup::Incidents),
        other => panic!("expected a progress event for the wait, got {other:?}"),
    }
}

/// Fetches tokens from the emulator's token endpoint, counting the fetches.
#[derive(Debug)]
struct EmulatorTokens {
    url: String,
    fetched: AtomicU32,
}

impl TokenProvider for EmulatorTokens {
    fn token(&self, scope: &str) -> Result<(Secret, Duration), Error> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        let form = [
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ];
        let mut resp = ureq::post(&self.url)
            .send_form(form)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let bytes = resp
            .body_mut()
            .read_to_vec()
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("a token body");
        let token = body["access_token"].as_str().expect("a token").to_owned();
        Ok((Secret::new(token), Duration::from_secs(3599)))
    }
}

#[test]
fn a_token_provider_is_asked_once_for_many_threads() {
    let limits = Limits::parse("2021,incidents.calls=1000/1m").expect("spec");
    let env = Env::start(limits.clone(), WindowMode::Sliding);
    let provider = Arc::new(EmulatorTokens {
        url: format!(
            "{}/{DEFAULT_TENANT}/oauth2/v2.0/token",
            env.emulator.base_url()
        ),
        fetched: AtomicU32::new(0),
    });
    let client = Client::builder()
        .base_url(env.emulator.base_url())
        .limits_value(limits)
        .token_provider(provider.clone())
        .build()
        .expect("builds");
    assert_eq!(common::callers(&[client], 8, 3), 24);
    assert_eq!(provider.fetched.load(Ordering::SeqCst), 1);
    assert_eq!(env.api_requests(), 24);
    env.rt.block_on(env.emulator.shutdown());
}

#[derive(Debug)]
struct PanickingTokens;

impl TokenProvider for PanickingTokens {
    fn token(&self, _: &str) -> Result<(Secret, Duration), Error> {
        panic!("the provider broke (expected by the test)")
    }
}

#[test]
fn a_panicking_token_provider_fails_calls_instead_of_hanging_them() {
    let limits = Limits::parse("2021").expect("spec");
    let env = Env::start(limits.clone(), WindowMode::Sliding);
    let client = Client::builder()
        .base_url(env.emulator.base_url())
        .limits_value(limits)
        .token_provider(Arc::new(PanickingTokens))
        .build()
        .expect("builds");
    for _ in 0..2 {
        match client.hunt("AlertInfo | take 1") {
            Err(Error::TokenUnavailable { message }) => {
                assert!(message.contains("panicked"), "{message}")
            }
            other => panic!("expected a token error, got {other:?}"),
        }
    }
    assert_eq!(env.api_requests(), 0);
    env.rt.block_on(env.emulator.shutdown());
}

/// A panic inside the HTTP exchange (here in a ureq middleware, code the caller gave the
/// client) unwinds out of the call; the request may have reached the server, so its
/// running-time reservation is charged and released, not left held by an orphan.
#[test]
fn a_panic_inside_the_exchange_releases_what_the_call_held() {
    use std::sync::atomic::AtomicBool;
    let limits = Limits::parse("2021,hunting.calls=100/1m").expect("spec");
    let env = Env::start(limits.clone(), WindowMode::Sliding);
    let armed = Arc::new(AtomicBool::new(true));
    let trip = armed.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .middleware(
            move |req: http::Request<ureq::SendBody>, next: ureq::middleware::MiddlewareNext| {
                if req.uri().path().contains("advanced") && trip.swap(false, Ordering::SeqCst) {
                    panic!("the middleware broke (expected by the test)");
                }
                next.handle(req)
            },
        )
        .build()
        .into();
    let client = env.builder(limits).agent(agent).build().expect("builds");
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        client.hunt("AlertInfo | take 1")
    }));
    assert!(unwound.is_err(), "the panic reaches the caller");
    assert!(!armed.load(Ordering::SeqCst), "the middleware ran");
    let hunting = client
        .quota()
        .expect("quota")
        .into_iter()
        .find(|g| g.group == ApiGroup::Hunting)
        .expect("hunting");
    assert_eq!(hunting.active_calls, 0, "{hunting:?}");
    assert_eq!(
        hunting.runtime_reserved,
        Duration::ZERO,
        "the reservation of the unwound call is released: {hunting:?}"
    );
    // The client goes on.
    client.hunt("AlertInfo | take 1").expect("the next hunt");
    env.rt.block_on(env.emulator.shutdown());
}
