//! The engine against the reference server model for a simulated day at the 2021
//! limits, as the sole client: zero 429s and at least 99% of the theoretical maximum.

use std::time::Duration;

use defender_testkit::server_model::WindowMode;
use defender_testkit::sim::{run_engine, SimConfig, Workload};

fn check(workload: Workload, mode: WindowMode) {
    let cfg = SimConfig::day_2021(workload, mode);
    let r = run_engine(&cfg);
    println!(
        "{workload:?} {mode:?}: admitted {} of {} ({:.2}%), 429s {}, failed {}, lost {}, worst wait {:?}",
        r.admitted_in_span,
        r.theoretical_max,
        r.share() * 100.0,
        r.throttled,
        r.failed,
        r.lost,
        r.worst_wait
    );
    assert_eq!(r.throttled, 0, "no 429s");
    assert_eq!(r.failed, 0, "no failed call");
    assert_eq!(r.lost, 0, "no call lost");
    assert!(
        r.share() >= 0.99,
        "at least 99% of the maximum, got {:.4}",
        r.share()
    );
}

#[test]
fn incidents_sliding() {
    check(Workload::Incidents, WindowMode::Sliding);
}

#[test]
fn incidents_fixed() {
    check(Workload::Incidents, WindowMode::Fixed);
}

#[test]
fn hunting_sliding() {
    // Short queries: the call windows bind, not the running-time budget.
    check(
        Workload::Hunting {
            min: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        WindowMode::Sliding,
    );
}

#[test]
fn hunting_fixed() {
    check(
        Workload::Hunting {
            min: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        WindowMode::Fixed,
    );
}

#[test]
fn hunting_under_a_binding_running_time_budget() {
    // Long queries: 10 minutes per hour binds long before 15 calls per minute does.
    let mut cfg = SimConfig::day_2021(
        Workload::Hunting {
            min: Duration::from_secs(2),
            max: Duration::from_secs(8),
        },
        WindowMode::Sliding,
    );
    cfg.duration = Duration::from_secs(6 * 3600);
    let r = run_engine(&cfg);
    println!(
        "runtime-bound: {r:?}",
        r = (
            r.admitted_in_span,
            r.throttled,
            r.failed,
            r.lost,
            r.running_time
        )
    );
    assert_eq!(r.throttled, 0);
    assert_eq!(r.lost, 0);
    assert_eq!(r.failed, 0);
    // 6 hours at 10 minutes per hour: the engine spends close to 60 minutes, never much more.
    let spent = r.running_time.as_secs_f64();
    assert!(
        spent <= 6.0 * 600.0 + 6.0 * 8.0 * 16.0,
        "overdrawn: {spent}"
    );
    assert!(spent >= 0.9 * 5.0 * 600.0, "wasted budget: {spent}");
}
