//! How calls run without a driver thread: timers fire while other callers are inside
//! HTTP, a failing provider fails calls instead of hanging them, and a panic inside the
//! exchange releases what the call held. (A token provider asked once for many threads
//! is a conformance scenario both clients run.)

mod common;

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use defender_blocking::{Client, Progress, TokenProvider};
use defender_core::token::Secret;
use defender_core::{ApiGroup, Error, Limits};
use defender_emulator::WindowMode;
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
