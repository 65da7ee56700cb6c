//! Measures generation time and scan throughput:
//! `cargo run --release -p defender-emulator-kql --example scan [rows]`.

use std::time::Instant;

use defender_emulator_kql::{run, Dataset, DatasetConfig, JsonStyle, RunOptions};

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let now = 1_767_225_600_000;
    let mut cfg = DatasetConfig {
        rows_per_table: 0,
        anchor_unix_ms: now,
        ..DatasetConfig::default()
    };
    for t in ["DeviceProcessEvents", "DeviceNetworkEvents", "EmailEvents"] {
        cfg = cfg.with_table_rows(t, rows);
    }
    let start = Instant::now();
    let data = Dataset::generate(&cfg);
    println!("generated 3 x {rows} rows in {:?}", start.elapsed());
    let opts = RunOptions {
        now_unix_ms: now,
        lookback_ms: None,
        ..RunOptions::default()
    };
    for q in [
        "DeviceProcessEvents | where FileName =~ 'powershell.exe' | count",
        "DeviceProcessEvents | where ProcessCommandLine has 'whoami' and AccountName != 'system' | count",
        "DeviceProcessEvents | where Timestamp > ago(7d) and ProcessId > 1000 | count",
        "DeviceNetworkEvents | where RemotePort in (443, 80) and RemoteUrl contains 'microsoft' | count",
        "DeviceNetworkEvents | where RemotePort + 1 > 444 | count",
        "DeviceProcessEvents | summarize count() by DeviceName | top 10 by count_",
        "DeviceProcessEvents | summarize count() by FileName, bin(Timestamp, 1d) | count",
        "DeviceNetworkEvents | sort by Timestamp desc | take 100",
        "EmailEvents | where Subject has 'invoice' | project NetworkMessageId, Subject",
        "DeviceProcessEvents | take 100000 | join kind=inner (DeviceNetworkEvents | take 100000) on ReportId | count",
        "search in (DeviceProcessEvents, DeviceNetworkEvents) \"powershell.exe\" | count",
        "DeviceProcessEvents | take 100000 | lookup (DeviceNetworkEvents | take 100000 | summarize arg_max(Timestamp, RemoteIP) by DeviceId) on DeviceId | count",
        "DeviceProcessEvents | make-series count() on Timestamp step 1h by DeviceName | count",
    ] {
        let t = Instant::now();
        let out = run(q, &data, &opts).unwrap();
        let el = t.elapsed();
        println!(
            "{:>8.1} ms {:>7.1} M rows/s  {} rows  {q}",
            el.as_secs_f64() * 1e3,
            out.rows_scanned as f64 / el.as_secs_f64() / 1e6,
            out.rows.len()
        );
    }
    let out = run("DeviceNetworkEvents | take 100000", &data, &opts).unwrap();
    let t = Instant::now();
    let bytes = out.to_json_bytes(JsonStyle::Defender);
    println!(
        "serialized {} rows ({} MB) in {:?}",
        out.rows.len(),
        bytes.len() / 1_000_000,
        t.elapsed()
    );
}
