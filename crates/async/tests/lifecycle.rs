//! A call's life through the client: a future dropped while it waits, while its request
//! is admitted but unsent, or while its request is in flight cancels its call and gives
//! back or settles what it held; so does a ranged hunt dropped mid-window. (A token
//! provider serving many callers is a conformance scenario both clients run.)

mod common;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use defender_async::{
    async_trait, Admission, AdmitId, Client, Progress, QuotaOp, QuotaStore, StoreTicket,
};
use defender_core::engine::{Call, GroupUsage};
use defender_core::hunting::HuntRequest;
use defender_core::incidents::IncidentQuery;
use defender_core::{ApiGroup, Limits};
use defender_emulator::{EmulatorHandle, FaultSpec, WindowMode};
use defender_policy::StandardPolicy;
use futures_util::FutureExt;

fn hunt() -> Call {
    Call::Hunt(HuntRequest::new("AlertInfo | take 1"))
}

async fn usage(client: &Client, group: ApiGroup) -> GroupUsage {
    client
        .quota()
        .await
        .expect("usage")
        .into_iter()
        .find(|g| g.group == group)
        .expect("every group")
}

fn charged(u: &GroupUsage) -> Duration {
    u.runtime.iter().map(|(_, d)| *d).sum()
}

/// Waits (polling the emulator) until `f` holds; a bound only turns a hang into a message.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

async fn slow_emulator(limits: &Limits) -> EmulatorHandle {
    defender_emulator::Emulator::builder()
        .limits(limits.clone())
        .faults(FaultSpec::parse("slow=1.0:60s").expect("spec"))
        .spawn()
        .await
        .expect("the emulator starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_it_waits_for_quota_is_cancelled() {
    let limits = Limits::parse("2021,incidents.calls=1/1h").expect("spec");
    let emu = common::emulator(&limits, WindowMode::Sliding).await;
    let client = common::builder(&emu, &limits)
        .policy(StandardPolicy::standard().with_max_wait(Duration::from_secs(7200)))
        .build()
        .expect("the client builds");
    let list = || Call::ListIncidents(IncidentQuery::default());
    client.call(list()).await.expect("the first call fits");
    let mut progress = client.progress();
    {
        let call = client.call(list());
        tokio::select! {
            r = call => panic!("the second call must wait an hour: {r:?}"),
            p = progress.recv() => assert!(matches!(p, Ok(Progress::Waiting { .. })), "{p:?}"),
        }
    }
    assert_eq!(usage(&client, ApiGroup::Incidents).await.active_calls, 0);
    assert_eq!(
        common::api_requests(&emu.stats()),
        1,
        "the dropped call was not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_after_admission_but_before_sending_gives_back_its_reservation() {
    let limits = Limits::parse("2021,hunting.calls=1/1s").expect("spec");
    let emu = common::emulator(&limits, WindowMode::Sliding).await;
    let client = common::builder(&emu, &limits)
        .build()
        .expect("the client builds");
    client.call(hunt()).await.expect("the first call fits");
    let before = usage(&client, ApiGroup::Hunting).await;
    assert_eq!(before.runtime_reserved, Duration::ZERO);
    // Polled once: submitted, it waits for the window; then nobody polls it, so when the
    // timer admits it, its request stays in its slot, unsent.
    let mut call = Box::pin(client.call(hunt()));
    assert!((&mut call).now_or_never().is_none());
    until("the admission", async || {
        usage(&client, ApiGroup::Hunting).await.runtime_reserved > Duration::ZERO
    })
    .await;
    drop(call);
    let after = usage(&client, ApiGroup::Hunting).await;
    assert_eq!(
        after.runtime_reserved,
        Duration::ZERO,
        "reservation given back"
    );
    assert_eq!(
        charged(&after),
        charged(&before),
        "nothing ran, nothing charged"
    );
    assert_eq!(after.active_calls, 0);
    assert_eq!(
        common::api_requests(&emu.stats()),
        1,
        "the dropped call was not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_in_flight_settles_its_reservation() {
    let limits = Limits::parse("2021,hunting.calls=100/1m").expect("spec");
    let emu = slow_emulator(&limits).await;
    let client = common::builder(&emu, &limits)
        .build()
        .expect("the client builds");
    {
        let mut call = pin!(client.call(hunt()));
        tokio::select! {
            r = &mut call => panic!("the server holds it for a minute: {r:?}"),
            _ = until("the request reaching the server", async || emu.stats().faults >= 1) => {}
        }
        assert!(usage(&client, ApiGroup::Hunting).await.runtime_reserved > Duration::ZERO);
    }
    let after = usage(&client, ApiGroup::Hunting).await;
    assert_eq!(
        after.runtime_reserved,
        Duration::ZERO,
        "reservation settled"
    );
    assert_eq!(after.active_calls, 0);
}

/// Counts hunting tickets admitted with a reservation and not yet completed or released.
#[derive(Debug)]
struct Tracking {
    outstanding: tokio::sync::watch::Sender<i64>,
}

#[async_trait]
impl QuotaStore for Tracking {
    async fn perform(&self, op: QuotaOp) -> Option<(AdmitId, Admission)> {
        match op {
            QuotaOp::Acquire { id, .. } => {
                self.outstanding.send_modify(|n| *n += 1);
                Some((id, Admission::Admitted(StoreTicket::new(()))))
            }
            QuotaOp::Release { .. } | QuotaOp::Complete { .. } => {
                self.outstanding.send_modify(|n| *n -= 1);
                None
            }
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_in_flight_completes_its_store_ticket() {
    let limits = Limits::parse("2021,hunting.calls=100/1m").expect("spec");
    let emu = slow_emulator(&limits).await;
    let (tx, mut rx) = tokio::sync::watch::channel(0);
    let client = common::builder(&emu, &limits)
        .quota_store(Arc::new(Tracking { outstanding: tx }))
        .build()
        .expect("the client builds");
    {
        let mut call = pin!(client.call(hunt()));
        tokio::select! {
            r = &mut call => panic!("the server holds it for a minute: {r:?}"),
            _ = until("the request reaching the server", async || emu.stats().faults >= 1) => {}
        }
        assert_eq!(*rx.borrow(), 1, "one ticket held");
    }
    // The completion goes to the store from a task of its own.
    rx.wait_for(|n| *n == 0).await.expect("the store lives");
    assert_eq!(usage(&client, ApiGroup::Hunting).await.active_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_hunt_dropped_mid_window_cancels_its_calls() {
    let limits = Limits::parse("2021,hunting.calls=100/1m").expect("spec");
    let emu = slow_emulator(&limits).await;
    let client = common::builder(&emu, &limits)
        .build()
        .expect("the client builds");
    let to = std::time::SystemTime::now();
    let from = to - Duration::from_secs(3 * 86_400);
    let mut hunt = client
        .hunt_range("AlertInfo | project Timestamp", from, to, None)
        .expect("a valid range");
    tokio::select! {
        w = hunt.next_window() => panic!("the server holds every window a minute: {w:?}"),
        _ = until("a window reaching the server", async || emu.stats().faults >= 1) => {}
    }
    drop(hunt);
    until("every window call ending", async || {
        usage(&client, ApiGroup::Hunting).await.active_calls == 0
    })
    .await;
    assert_eq!(
        usage(&client, ApiGroup::Hunting).await.runtime_reserved,
        Duration::ZERO
    );
}
