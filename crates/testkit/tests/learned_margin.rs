//! The learned safety margin (issue 22) against the reference server model: zero 429s
//! whatever the latency spread, close to the maximum where the network is steady, and a
//! link that degrades mid-run costs a handful of 429s and no call.

use std::time::Duration;

use defender_testkit::server_model::WindowMode;
use defender_testkit::sim::{run_engine, SimConfig, SimReport, Workload};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Six hours of `workload` with one-way latencies in `latency`; the margin may grow up
/// to `ceiling` (the configured margin).
fn run(workload: Workload, latency: (Duration, Duration), ceiling: Duration) -> SimReport {
    let mut cfg = SimConfig::day_2021(workload, WindowMode::Sliding);
    cfg.duration = Duration::from_secs(6 * 3600);
    cfg.latency = latency;
    cfg.margin = ceiling;
    cfg.learn_margin = true;
    cfg.seed = 7;
    let r = run_engine(&cfg);
    println!(
        "{workload:?} latency {latency:?} ceiling {ceiling:?}: {} of {} ({:.3}%), 429s {}, failed {}, lost {}",
        r.admitted_in_span,
        r.theoretical_max,
        r.share() * 100.0,
        r.throttled,
        r.failed,
        r.lost
    );
    r
}

fn hunts() -> Workload {
    // Short queries: the call windows bind, not the running-time budget.
    Workload::Hunting {
        min: ms(50),
        max: ms(500),
    }
}

#[test]
fn a_steady_network_gets_within_two_thousandths_of_the_maximum() {
    for workload in [Workload::Incidents, hunts()] {
        let r = run(workload, (ms(20), ms(40)), ms(500));
        assert_eq!((r.throttled, r.failed, r.lost), (0, 0, 0), "{workload:?}");
        assert!(
            r.share() >= 0.998,
            "{workload:?}: at least 99.8% of the maximum, got {:.4}",
            r.share()
        );
    }
}

#[test]
fn wide_spreads_get_zero_429s() {
    for workload in [Workload::Incidents, hunts()] {
        let r = run(workload, (ms(20), ms(400)), ms(500));
        assert_eq!(
            (r.throttled, r.failed, r.lost),
            (0, 0, 0),
            "{workload:?} 20-400 ms"
        );
        // A link this bad needs a ceiling that covers it; the margin then learns to sit
        // near it, and still nothing is refused.
        let r = run(workload, (ms(20), ms(2_000)), ms(4_000));
        assert_eq!(
            (r.throttled, r.failed, r.lost),
            (0, 0, 0),
            "{workload:?} 20-2000 ms"
        );
    }
}

#[test]
fn a_link_that_degrades_costs_a_handful_of_429s_and_no_call() {
    for workload in [Workload::Incidents, hunts()] {
        let mut cfg = SimConfig::day_2021(workload, WindowMode::Sliding);
        cfg.duration = Duration::from_secs(4 * 3600);
        cfg.latency = (ms(20), ms(40));
        cfg.latency_change = Some((Duration::from_secs(2 * 3600), (ms(20), ms(400))));
        cfg.learn_margin = true;
        cfg.seed = 11;
        let r = run_engine(&cfg);
        println!(
            "{workload:?} degrading: {} of {} ({:.3}%), 429s {}, failed {}, lost {}",
            r.admitted_in_span,
            r.theoretical_max,
            r.share() * 100.0,
            r.throttled,
            r.failed,
            r.lost
        );
        assert!(r.throttled <= 10, "{workload:?}: {} 429s", r.throttled);
        assert_eq!((r.failed, r.lost), (0, 0), "{workload:?}");
        // The 429s come right after the change, not spread over the degraded hours.
        let late: u32 = r.throttled_per_minute[150..].iter().sum();
        assert_eq!(late, 0, "{workload:?}: 429s half an hour after the change");
    }
}
