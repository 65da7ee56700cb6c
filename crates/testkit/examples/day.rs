//! Drives the engine through a simulated day at the 2021 limits against the reference
//! server model, in both window modes, and prints what it achieved.
//!
//! `cargo run --release -p defender-testkit --example day`

use std::time::Duration;

use defender_testkit::server_model::WindowMode;
use defender_testkit::sim::{run_engine, SimConfig, Workload};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("A simulated day at the 2021 limits, 16 callers, 20-400 ms latency, our engine as sole client:\n");
    println!(
        "{:<34} {:>7} {:>9} {:>8} {:>6} {:>6} {:>12}",
        "workload", "window", "admitted", "of max", "429s", "lost", "worst wait"
    );
    let hunting = Workload::Hunting {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    for (name, workload) in [
        ("incidents (50/min, 1500/h)", Workload::Incidents),
        ("hunting (15/min, 10 min/h)", hunting),
    ] {
        for mode in [WindowMode::Sliding, WindowMode::Fixed] {
            let mut cfg = SimConfig::day_2021(workload, mode);
            if quick {
                cfg.duration = Duration::from_secs(2 * 3600);
            }
            let r = run_engine(&cfg);
            println!(
                "{:<34} {:>7} {:>9} {:>7.2}% {:>6} {:>6} {:>11.0}s",
                name,
                format!("{mode:?}").to_lowercase(),
                r.admitted_in_span,
                r.share() * 100.0,
                r.throttled,
                r.lost,
                r.worst_wait.as_secs_f64()
            );
        }
    }
}
