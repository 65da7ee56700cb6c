//! Measures how much of a corpus of published hunting queries the engine runs (issue 18:
//! "measured, not in CI"): `cargo run -p defender-emulator-kql --example pubcorpus --
//! SAMPLE.json`, where the file is a JSON array of `[source, query]` pairs (for example
//! the KQL blocks of a snapshot of microsoft/Microsoft-365-Defender-Hunting-Queries; the
//! queries are not part of this repository). Prints how many run, how many return rows,
//! that none panicked, and the reasons of the others, most frequent first.
//!
//! With `--prefixes` after the file, it also runs every prefix (at every character
//! boundary) of every query over a small dataset and prints how many there were, how
//! many panicked (none may) and the slowest one's time.

use defender_emulator_kql::{run, Dataset, DatasetConfig, RunOptions};
use std::collections::BTreeMap;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let sample: Vec<(String, String)> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let now = 1_767_225_600_000;
    let d = Dataset::generate(&DatasetConfig {
        seed: 1,
        rows_per_table: 2000,
        anchor_unix_ms: now,
        ..Default::default()
    });
    let o = RunOptions {
        now_unix_ms: now,
        ..Default::default()
    };
    let (mut ok, mut rows, mut panics) = (0, 0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_f, q) in &sample {
        let r = std::panic::catch_unwind(|| run(q, &d, &o));
        match r {
            Ok(Ok(out)) => {
                ok += 1;
                if !out.rows.is_empty() {
                    rows += 1;
                }
            }
            Ok(Err(e)) => {
                let m = e.to_string();
                let key = if let Some(i) = m.find("is valid KQL") {
                    m[..i].to_string()
                } else if m.starts_with("Query could not be parsed") {
                    format!("parse: {}", m.split(" on line").next().unwrap_or(""))
                } else {
                    m.chars().take(90).collect()
                };
                *reasons.entry(key).or_default() += 1;
            }
            Err(_) => panics += 1,
        }
    }
    println!(
        "{ok} of {} run ({rows} return rows), {panics} panics",
        sample.len()
    );
    if std::env::args().nth(2).as_deref() == Some("--prefixes") {
        prefixes(&sample, now);
    }
    let mut v: Vec<_> = reasons.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (k, n) in v.iter().take(45) {
        println!("{n:4}  {k}");
    }
}

/// Every character-boundary prefix of every query, over a small dataset.
fn prefixes(sample: &[(String, String)], now: i64) {
    let d = Dataset::generate(&DatasetConfig {
        seed: 1,
        rows_per_table: 200,
        anchor_unix_ms: now,
        ..Default::default()
    });
    let o = RunOptions {
        now_unix_ms: now,
        ..Default::default()
    };
    let (mut n, mut panics, mut slowest) = (0usize, 0usize, (std::time::Duration::ZERO, 0usize));
    let start = std::time::Instant::now();
    for (k, (_f, q)) in sample.iter().enumerate() {
        let ends = q.char_indices().map(|(i, _)| i).chain([q.len()]);
        for end in ends {
            n += 1;
            let t = std::time::Instant::now();
            let r = std::panic::catch_unwind(|| run(&q[..end], &d, &o));
            let el = t.elapsed();
            if el > slowest.0 {
                slowest = (el, k);
            }
            if r.is_err() {
                panics += 1;
                eprintln!("panic: {:?}", &q[..end]);
            }
        }
    }
    println!(
        "prefixes: {n} in {:?}, {panics} panics, slowest {:?} (query #{})",
        start.elapsed(),
        slowest.0,
        slowest.1
    );
}
