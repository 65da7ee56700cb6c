//! Project tasks: `cargo xtask ci | bench | sim`.
//!
//! - `ci`: what CI runs (`.ci/run`).
//! - `bench`: every criterion benchmark of the workspace, then the simulated day.
//! - `sim [--quick]`: the engine through a simulated day (or two hours with `--quick`).

use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let ok = match task {
        "ci" => run("bash", &[".ci/run"]),
        "bench" => {
            run(
                "cargo",
                &["bench", "-p", "defender-core", "--bench", "admission"],
            ) && run(
                "cargo",
                &[
                    "run",
                    "--release",
                    "-p",
                    "defender-testkit",
                    "--example",
                    "day",
                ],
            )
        }
        "sim" => {
            let mut a = vec![
                "run",
                "--release",
                "-p",
                "defender-testkit",
                "--example",
                "day",
                "--",
            ];
            if args.iter().any(|a| a == "--quick") {
                a.push("--quick");
            }
            run("cargo", &a)
        }
        _ => {
            eprintln!("usage: cargo xtask ci | bench | sim [--quick]");
            task == "help"
        }
    };
    if !ok {
        exit(1);
    }
}

fn run(cmd: &str, args: &[&str]) -> bool {
    eprintln!("$ {cmd} {}", args.join(" "));
    Command::new(cmd)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
