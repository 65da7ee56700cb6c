//! The share of the maximum with a fixed margin and with a learned one, per latency
//! spread (issue 22): `cargo run --release -p defender-testkit --example margin`.
//! Six simulated hours each, one process of 16 callers, the 2021 limits.

use std::time::Duration;

use defender_testkit::server_model::WindowMode;
use defender_testkit::sim::{run_engine, SimConfig, Workload};

fn main() {
    let ms = Duration::from_millis;
    let workloads = [
        ("incidents", Workload::Incidents),
        (
            "hunting",
            Workload::Hunting {
                min: ms(50),
                max: ms(500),
            },
        ),
    ];
    let spreads = [
        ((ms(20), ms(40)), ms(500)),
        ((ms(20), ms(400)), ms(500)),
        ((ms(20), ms(2_000)), ms(4_000)),
    ];
    println!("| workload | one-way latency | ceiling | fixed margin: share, 429s | learned: share, 429s |");
    println!("|---|---|---|---|---|");
    for (name, workload) in workloads {
        for ((lo, hi), ceiling) in spreads {
            let mut cfg = SimConfig::day_2021(workload, WindowMode::Sliding);
            cfg.duration = Duration::from_secs(6 * 3600);
            cfg.latency = (lo, hi);
            cfg.margin = ceiling;
            cfg.seed = 7;
            let fixed = run_engine(&cfg);
            cfg.learn_margin = true;
            let learned = run_engine(&cfg);
            println!(
                "| {name} | {}-{} ms | {} ms | {:.2}%, {} | {:.2}%, {} |",
                lo.as_millis(),
                hi.as_millis(),
                ceiling.as_millis(),
                fixed.share() * 100.0,
                fixed.throttled,
                learned.share() * 100.0,
                learned.throttled,
            );
        }
    }
}
