//! How fast the emulator answers, so it is never the bottleneck of client tests:
//! rows scanned per second by hunting queries over a 1,000,000-row table, and the
//! latency of a small query under 64 concurrent connections.
//!
//! `cargo run --release -p defender-emulator --example load`

use std::sync::Arc;
use std::time::{Duration, Instant};

use defender_core::Limits;
use defender_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let limits = Limits::parse(
        "2021,hunting.calls=none,incidents.calls=none,hunting.runtime=none,hunting.lookback=none",
    )
    .unwrap();
    let started = Instant::now();
    let emu = Emulator::builder()
        .limits(limits)
        .rows_per_table(1_000)
        .table_rows("DeviceProcessEvents", 1_000_000)
        .spawn()
        .await
        .unwrap();
    println!(
        "generated 1,000,000 DeviceProcessEvents rows and started in {:?}",
        started.elapsed()
    );
    let base = emu.base_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let body = format!(
        "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_SECRET}&grant_type=client_credentials&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"
    );
    let token: serde_json::Value = http
        .post(format!("{base}/{DEFAULT_TENANT}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = Arc::new(token["access_token"].as_str().unwrap().to_owned());
    let url = Arc::new(format!("{base}/api/advancedhunting/run"));

    println!("\nscans of 1,000,000 rows (each query 5 times, median):");
    for q in [
        "DeviceProcessEvents | where FileName =~ 'powershell.exe' | count",
        "DeviceProcessEvents | where ProcessCommandLine has 'invoke' and AccountDomain == 'contoso' | count",
        "DeviceProcessEvents | summarize count() by DeviceName | top 10 by count_",
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = http
                .post(url.as_str())
                .bearer_auth(token.as_str())
                .json(&serde_json::json!({ "Query": q }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            r.bytes().await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        let median = times[2];
        println!("  {:>7.1} M rows/s  {:>8.1?}  {q}", 1.0 / median.as_secs_f64(), median);
    }

    println!("\na small query from 64 concurrent connections, 2,000 requests:");
    let small = serde_json::json!({ "Query": "AlertInfo | take 1" });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (http, url, token, small, next) = (
                http.clone(),
                url.clone(),
                token.clone(),
                small.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2_000 {
                    let t = Instant::now();
                    let r = http
                        .post(url.as_str())
                        .bearer_auth(token.as_str())
                        .json(&small)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                    r.bytes().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let wall = t.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "  {} requests in {:.2?}: {:.0} requests/s; latency p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        all.len(),
        wall,
        all.len() as f64 / wall.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        all[all.len() - 1]
    );
    emu.shutdown().await;
}
