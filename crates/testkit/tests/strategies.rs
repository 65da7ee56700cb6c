//! Proof under load, short enough for a debug build: our engine against three common
//! baselines (governor, exponential backoff, a fixed sleep) through the simulator, a
//! few simulated hours at the 2021 limits in both window modes.
//! `cargo xtask sim` runs the full day and prints the tables.

use std::time::Duration;

use defender_core::Limits;
use defender_testkit::server_model::{runtime_max, WindowMode};
use defender_testkit::sim::{run, SimConfig, SimReport, Strategy, Workload};

const MODES: [WindowMode; 2] = [WindowMode::Sliding, WindowMode::Fixed];
const HOURS: u64 = 3;

fn runtime_bound() -> Workload {
    Workload::Hunting {
        min: Duration::from_secs(1),
        max: Duration::from_secs(8),
    }
}

fn sim(workload: Workload, mode: WindowMode, processes: usize, strategy: Strategy) -> SimReport {
    let mut cfg = SimConfig::day_2021(workload, mode);
    cfg.duration = Duration::from_secs(HOURS * 3600);
    cfg.processes = processes;
    let r = run(&cfg, strategy);
    println!(
        "{workload:?} x{processes} {mode:?} {}: admitted {} of {} ({:.2}%), budget {:.2}%, 429s {}, lost {}, worst wait {:?}",
        strategy.name(),
        r.admitted_in_span,
        r.theoretical_max,
        r.share() * 100.0,
        r.budget_share() * 100.0,
        r.throttled,
        r.calls_lost(),
        r.worst_wait
    );
    r
}

#[test]
fn the_engine_as_sole_client_meets_its_targets() {
    for mode in MODES {
        let r = sim(Workload::Incidents, mode, 1, Strategy::Engine);
        assert_eq!(r.throttled, 0, "no 429s");
        assert_eq!(r.calls_lost(), 0, "no call lost");
        assert!(r.share() >= 0.99, "{:.4}", r.share());

        // Running-time bound: the maximum is the budget over the realised running times.
        let r = sim(runtime_bound(), mode, 1, Strategy::Engine);
        assert_eq!(r.throttled, 0, "no 429s");
        assert_eq!(r.calls_lost(), 0, "no call lost");
        assert!(r.budget_share() >= 0.99, "{:.4}", r.budget_share());
        assert!(r.share() >= 0.95, "{:.4}", r.share());
    }
}

#[test]
fn four_uncoordinated_engines_lose_no_call() {
    for mode in MODES {
        let r = sim(Workload::Incidents, mode, 4, Strategy::Engine);
        assert_eq!(r.calls_lost(), 0, "no call lost");
        assert!(r.share() >= 0.9, "{:.4}", r.share());
    }
}

#[test]
fn four_engines_sharing_a_store_meet_the_sole_client_targets() {
    for mode in MODES {
        let alone = sim(Workload::Incidents, mode, 4, Strategy::Engine);
        for workload in [Workload::Incidents, runtime_bound()] {
            let r = sim(workload, mode, 4, Strategy::SharedStore);
            assert_eq!(r.throttled, 0, "{workload:?}: no 429s");
            assert_eq!(r.calls_lost(), 0, "{workload:?}: no call lost");
            match workload {
                Workload::Incidents => {
                    assert!(r.share() >= 0.99, "{:.4}", r.share());
                    // Fair turns: no process starves while the others take every slot.
                    assert!(
                        r.worst_wait <= alone.worst_wait * 3 / 2,
                        "worst wait {:?} against {:?} uncoordinated",
                        r.worst_wait,
                        alone.worst_wait
                    );
                }
                Workload::Hunting { .. } => {
                    assert!(r.budget_share() >= 0.98, "{:.4}", r.budget_share())
                }
            }
        }
        assert!(alone.throttled > 0, "without the store they race");
    }
}

#[test]
fn the_baselines_are_worse() {
    for mode in MODES {
        for workload in [Workload::Incidents, runtime_bound()] {
            let ours = sim(workload, mode, 1, Strategy::Engine);
            for strategy in [Strategy::Governor, Strategy::Backoff, Strategy::Naive] {
                let theirs = sim(workload, mode, 1, strategy);
                // Sized to the per-minute limit or not sized at all, each runs into the
                // hourly windows, gets 429s and gives calls up.
                assert!(theirs.throttled > ours.throttled, "{strategy:?}");
                assert!(theirs.calls_lost() > ours.calls_lost(), "{strategy:?}");
            }
        }
        let ours = sim(Workload::Incidents, mode, 4, Strategy::Engine);
        for strategy in [Strategy::Governor, Strategy::Backoff, Strategy::Naive] {
            let theirs = sim(Workload::Incidents, mode, 4, strategy);
            assert!(theirs.throttled > ours.throttled, "{strategy:?}");
            assert!(theirs.calls_lost() > 0, "{strategy:?}");
        }
    }
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let mut cfg = SimConfig::day_2021(Workload::Incidents, WindowMode::Sliding);
    cfg.duration = Duration::from_secs(3600);
    cfg.processes = 2;
    for strategy in Strategy::ALL {
        assert_eq!(run(&cfg, strategy), run(&cfg, strategy), "{strategy:?}");
    }
    let other = SimConfig {
        seed: 2,
        ..cfg.clone()
    };
    assert_ne!(
        run(&cfg, Strategy::Backoff).attempts,
        run(&other, Strategy::Backoff).attempts,
        "the seed drives the jitter"
    );
}

#[test]
fn the_running_time_maximum() {
    let limits = Limits::default();
    let mean = Duration::from_millis(4500);
    // 600 s per hour / 4.5 s = 133.3 queries per hour; 4 h per day binds no tighter.
    assert_eq!(runtime_max(&limits, Duration::from_secs(3600), mean), 133);
    assert_eq!(
        runtime_max(&limits, Duration::from_secs(86_400), mean),
        3200
    );
    // Short queries: the 15 calls per minute bind instead.
    assert_eq!(
        runtime_max(
            &limits,
            Duration::from_secs(3600),
            Duration::from_millis(100)
        ),
        900
    );
}
