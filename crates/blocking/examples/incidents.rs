//! Incidents and hunting through the blocking client, from several threads sharing one
//! quota, against an emulator started in this process (no tenant needed).
//!
//! `cargo run -p defender-blocking --example incidents`

use defender_blocking::Client;
use defender_core::incidents::IncidentQuery;
use defender_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The emulator is an async server; it runs on its own runtime beside the client.
    let rt = tokio::runtime::Runtime::new()?;
    let emulator = rt.block_on(Emulator::builder().spawn())?;
    let client = Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(emulator.base_url())
        .login_url(emulator.base_url())
        .limits("2021")?
        .build()?;

    let high: Vec<_> = client
        .incidents()
        .list(IncidentQuery::default())
        .filter_map(Result::ok)
        .filter(|i| i.severity.as_deref() == Some("High"))
        .collect();
    println!("{} high-severity incidents across every page", high.len());

    let threads: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                client
                    .hunt(format!("DeviceLogonEvents | take {}", 10 * (i + 1)))
                    .map(|r| r.rows.len())
            })
        })
        .collect();
    for t in threads {
        println!("a thread got {} rows", t.join().expect("no panic")?);
    }
    for usage in client.quota()? {
        for w in usage.windows {
            println!("{}: {} of {}", usage.group, w.used, w.limit);
        }
    }
    rt.block_on(emulator.shutdown());
    Ok(())
}
