//! Project tasks: `cargo xtask ci | bench | sim | soak | fuzz | man`.
//!
//! - `ci`: what CI runs (`.ci/run`).
//! - `bench`: every criterion benchmark of the workspace, the simulated day, and the
//!   strategies compared under load, regenerating the plots `docs/sim-*.svg`.
//! - `soak [CALLS]`: the fault soak of the conformance suite with CALLS calls per
//!   client (default 5,000) at 20% injected faults.
//! - `fuzz [TARGET...] [SECONDS]`: every cargo-fuzz target under `fuzz/` (or those
//!   named) for SECONDS each (default 60); needs `cargo install cargo-fuzz`.
//! - `sim [--quick]`: our engine and three baselines (governor, exponential backoff, a
//!   fixed sleep) through a simulated day of three workloads in both window modes,
//!   printed as markdown tables (`--quick`: three simulated hours, a few seconds).
//! - `man [DIR]`: the `defender` man pages (`defender.1`, `defender-hunt.1`...) into DIR
//!   (default `target/man`), generated from the CLI's own definition by `clap_mangen`
//!   through the binary's hidden `defender man DIR`, so xtask itself stays free of the
//!   CLI's dependencies. Read one with `man -l target/man/defender.1`.

use std::path::PathBuf;
use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let quick = args.iter().any(|a| a == "--quick");
    let ok = match task {
        "ci" => run("bash", &[".ci/run"]),
        "bench" => {
            let docs = docs_dir();
            run(
                "cargo",
                &["bench", "-p", "defender-core", "--bench", "admission"],
            ) && run(
                "cargo",
                &["bench", "-p", "defender-core", "--bench", "decode"],
            ) && run(
                "cargo",
                &["bench", "-p", "defender-async", "--bench", "overhead"],
            ) && run(
                "cargo",
                &["bench", "-p", "defender-blocking", "--bench", "overhead"],
            ) && run(
                "cargo",
                &[
                    "run",
                    "--release",
                    "-p",
                    "defender-emulator",
                    "--example",
                    "load",
                ],
            ) && run("cargo", &example("day", &[]))
                && run("cargo", &example("sim", &["--svg", &docs]))
        }
        "sim" => run(
            "cargo",
            &example("sim", if quick { &["--quick"] } else { &[] }),
        ),
        "soak" => {
            // The conformance suite's fault soak, longer: both clients, 20% faults.
            let calls = args
                .iter()
                .skip(1)
                .find_map(|a| a.parse::<u64>().ok())
                .unwrap_or(5_000);
            std::env::set_var("SOAK_CALLS", calls.to_string());
            run(
                "cargo",
                &[
                    "test",
                    "--release",
                    "-p",
                    "defender-testkit",
                    "--test",
                    "conformance",
                    "fault_soak",
                    "--",
                    "--nocapture",
                ],
            )
        }
        "fuzz" => {
            // cargo-fuzz (`cargo install cargo-fuzz`) on the stable toolchain: its
            // sanitizer flags need RUSTC_BOOTSTRAP. Not run by CI.
            let secs = args
                .iter()
                .skip(1)
                .find_map(|a| a.parse::<u64>().ok())
                .unwrap_or(60);
            let only: Vec<&str> = args
                .iter()
                .skip(1)
                .filter(|a| a.parse::<u64>().is_err())
                .map(String::as_str)
                .collect();
            let targets = ["throttle", "hunting", "incidents", "limits", "kql"];
            let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
            targets
                .iter()
                .filter(|t| only.is_empty() || only.contains(t))
                .all(|t| {
                    eprintln!("$ cargo fuzz run {t} -- -max_total_time={secs}");
                    Command::new("cargo")
                        .args(["fuzz", "run", t, "--", &format!("-max_total_time={secs}")])
                        .env("RUSTC_BOOTSTRAP", "1")
                        .current_dir(&fuzz_dir)
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
                })
        }
        "man" => {
            let dir = match args.get(1) {
                Some(d) => PathBuf::from(d),
                None => workspace_root().join("target").join("man"),
            };
            let dir = dir.display().to_string();
            let ok = run(
                "cargo",
                &["run", "--quiet", "-p", "defender-cli", "--", "man", &dir],
            );
            if ok {
                eprintln!("wrote {dir}/defender.1 and a page per subcommand");
            }
            ok
        }
        _ => {
            eprintln!("usage: cargo xtask ci | bench | sim [--quick] | soak [CALLS] | fuzz [TARGET...] [SECONDS] | man [DIR]");
            task == "help"
        }
    };
    if !ok {
        exit(1);
    }
}

/// `cargo run --release` of a testkit example, with its arguments.
fn example<'a>(name: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "run",
        "--release",
        "-p",
        "defender-testkit",
        "--example",
        name,
    ];
    if !args.is_empty() {
        a.push("--");
        a.extend_from_slice(args);
    }
    a
}

/// The workspace's `docs/`, wherever cargo is run from.
fn docs_dir() -> String {
    workspace_root().join("docs").display().to_string()
}

/// The workspace's root, wherever cargo is run from.
fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    root.parent().map(PathBuf::from).unwrap_or(root)
}

fn run(cmd: &str, args: &[&str]) -> bool {
    eprintln!("$ {cmd} {}", args.join(" "));
    Command::new(cmd)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
