//! The proof under load: three workloads, each through four strategies (our engine and
//! three baselines), in both window modes, for a simulated day at the 2021 limits.
//! Prints one markdown table per workload; with `--svg DIR`, also writes
//! `DIR/sim-<workload>.svg` (calls per minute against the limit lines).
//!
//! `cargo run --release -p defender-testkit --example sim -- [--quick] [--svg docs]`
//! (`cargo xtask sim [--quick]`; `cargo xtask bench` regenerates the plots).

use std::time::{Duration, Instant};

use defender_testkit::plot::{self, Panel};
use defender_testkit::server_model::WindowMode;
use defender_testkit::sim::{self, SimConfig, SimReport, Strategy, Workload};

struct Scenario {
    slug: &'static str,
    title: &'static str,
    workload: Workload,
    processes: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let svg_dir = args
        .iter()
        .position(|a| a == "--svg")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let duration = if quick {
        Duration::from_secs(3 * 3600)
    } else {
        Duration::from_secs(86_400)
    };
    let scenarios = [
        Scenario {
            slug: "incidents",
            title: "1. One client saturating incidents (50/min and 1,500/h)",
            workload: Workload::Incidents,
            processes: 1,
        },
        Scenario {
            slug: "hunting",
            title: "2. One client saturating hunting, 1-8 s queries (15/min; 10 min/h and 4 h/day of running time)",
            workload: Workload::Hunting {
                min: Duration::from_secs(1),
                max: Duration::from_secs(8),
            },
            processes: 1,
        },
        Scenario {
            slug: "shared",
            title: "3. Four uncoordinated processes sharing one tenant's incidents quota",
            workload: Workload::Incidents,
            processes: 4,
        },
    ];
    println!(
        "Simulated {} at the 2021 limits, 16 callers per process, 20-400 ms latency each way, seed 1.\n",
        if quick { "3 hours" } else { "a day" }
    );
    #[allow(clippy::disallowed_methods)] // wall time of the whole run, for the reader
    let started = Instant::now();
    for sc in &scenarios {
        println!("### {}\n", sc.title);
        let hunting = matches!(sc.workload, Workload::Hunting { .. });
        let (budget_head, budget_rule) = if hunting {
            (" running time / budget |", "---:|")
        } else {
            ("", "")
        };
        println!(
            "| strategy | window | admitted | of max |{budget_head} 429s | calls lost | worst wait | requests |"
        );
        println!("|---|---|---:|---:|{budget_rule}---:|---:|---:|---:|");
        let mut panels = Vec::new();
        let mut strategies = Strategy::ALL.to_vec();
        if sc.processes > 1 {
            strategies.insert(1, Strategy::SharedStore);
        }
        for strategy in strategies {
            for mode in [WindowMode::Sliding, WindowMode::Fixed] {
                let mut cfg = SimConfig::day_2021(sc.workload, mode);
                cfg.duration = duration;
                cfg.processes = sc.processes;
                let r = sim::run(&cfg, strategy);
                row(strategy, mode, &r, hunting);
                let limits = plot::limit_lines(&cfg);
                panels.push(Panel {
                    title: format!("{}, {} windows", strategy.name(), mode_name(mode)),
                    per_minute: r.per_minute.clone(),
                    throttled_per_minute: r.throttled_per_minute.clone(),
                    limits,
                    summary: format!(
                        "{:.1}% of max, {} 429s, {} lost",
                        r.share() * 100.0,
                        r.throttled,
                        r.calls_lost()
                    ),
                });
            }
        }
        let cfg = SimConfig::day_2021(sc.workload, WindowMode::Sliding);
        println!(
            "\ntheoretical maximum: {} calls in {} h\n",
            SimConfig {
                duration,
                ..cfg.clone()
            }
            .theoretical_max(),
            duration.as_secs() / 3600
        );
        if let Some(dir) = &svg_dir {
            let path = format!("{dir}/sim-{}.svg", sc.slug);
            let svg = plot::grid_svg(sc.title, 2, &panels);
            std::fs::write(&path, svg).unwrap_or_else(|e| panic!("writing {path}: {e}"));
            eprintln!("wrote {path}");
        }
    }
    eprintln!("({:.1} s)", started.elapsed().as_secs_f64());
}

fn mode_name(mode: WindowMode) -> &'static str {
    match mode {
        WindowMode::Sliding => "sliding",
        WindowMode::Fixed => "fixed",
    }
}

fn row(strategy: Strategy, mode: WindowMode, r: &SimReport, budget: bool) {
    let budget = if budget {
        format!(" {:.2}% |", r.budget_share() * 100.0)
    } else {
        String::new()
    };
    println!(
        "| {} | {} | {} | {:.2}% |{budget} {} | {} | {:.0} s | {} |",
        strategy.name(),
        mode_name(mode),
        r.admitted_in_span,
        r.share() * 100.0,
        r.throttled,
        r.calls_lost(),
        r.worst_wait.as_secs_f64(),
        r.attempts
    );
}
