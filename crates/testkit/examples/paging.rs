//! Paging 40 incidents two at a time against the emulator on loopback, which allows 5
//! calls per 2 s (issue 22): the time taken against the ideal, with the fixed 500 ms
//! margin and with the learned one. A measurement printed, not a timed assertion:
//! `cargo run --release -p defender-testkit --example paging`.

use std::time::{Duration, Instant};

use defender_async::{Client, IncidentQuery};
use defender_core::Limits;
use defender_emulator::{DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use defender_policy::StandardPolicy;
use futures_util::StreamExt;

const INCIDENTS: usize = 40;
const PAGE: u32 = 2;

async fn page_all(learn: bool) -> (Duration, u64, Duration) {
    let limits = Limits::parse("2021,incidents.calls=5/2s").expect("a valid spec");
    let emu = defender_emulator::Emulator::builder()
        .limits(limits.clone())
        .incidents(INCIDENTS)
        .rows_per_table(10)
        .spawn()
        .await
        .expect("the emulator starts");
    let client = Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(emu.base_url())
        .login_url(emu.base_url())
        .limits_value(limits)
        .learn_margin(learn)
        .policy(StandardPolicy::standard().with_max_wait(Duration::from_secs(60)))
        .build()
        .expect("the client builds");
    let query = IncidentQuery {
        top: Some(PAGE),
        ..Default::default()
    };
    let started = Instant::now();
    let mut seen = 0;
    let mut list = std::pin::pin!(client.incidents().list(query));
    while let Some(incident) = list.next().await {
        incident.expect("every page comes");
        seen += 1;
    }
    let took = started.elapsed();
    assert_eq!(seen, INCIDENTS, "every incident once");
    let margin = client
        .quota()
        .await
        .expect("usage")
        .first()
        .map(|u| u.margin)
        .unwrap_or_default();
    (took, emu.stats().throttled, margin)
}

#[tokio::main]
async fn main() {
    // 20 pages (the last page's link ends the listing): 5 go at once, then 5 every 2 s.
    let calls = INCIDENTS.div_ceil(PAGE as usize) as u32;
    let ideal = Duration::from_secs(2) * (calls.saturating_sub(1) / 5);
    println!("{calls} calls at 5 per 2 s: ideal {ideal:?}");
    for learn in [false, true] {
        let (took, throttled, margin) = page_all(learn).await;
        println!(
            "{}: {took:.2?} ({:.3}x the ideal), {throttled} 429s, margin {margin:?}",
            if learn {
                "learned margin"
            } else {
                "fixed margin"
            },
            took.as_secs_f64() / ideal.as_secs_f64()
        );
    }
}
