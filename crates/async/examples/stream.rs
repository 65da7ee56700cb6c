//! A streamed hunt: rows printed as they arrive, the summary at the end, against an
//! emulator started in this process (no tenant needed).
//!
//! `cargo run -p defender-async --example stream`

use defender_async::{Client, StreamItem};
use defender_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::builder()
        .table_rows("DeviceProcessEvents", 5_000)
        .spawn()
        .await?;
    let client = Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(emulator.base_url())
        .login_url(emulator.base_url())
        .limits("2021")?
        .build()?;

    let mut stream = client.hunt_stream(
        "DeviceProcessEvents | where FileName endswith '.exe' | project Timestamp, DeviceName, FileName | take 20",
    );
    let mut names = Vec::new();
    while let Some(item) = stream.next().await {
        match item? {
            // The schema comes first: it gives the columns' order.
            StreamItem::Schema(columns) => {
                names = columns.into_iter().map(|c| c.name).collect();
                println!("{}", names.join("\t"));
            }
            StreamItem::Row(row) => {
                let cells: Vec<String> = names
                    .iter()
                    .map(|n| match row.get(n) {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => String::new(),
                    })
                    .collect();
                println!("{}", cells.join("\t"));
            }
        }
    }
    if let Some(summary) = stream.summary() {
        println!(
            "{} rows, {:?} of running time charged{}",
            summary.rows,
            summary.running_time,
            if summary.truncated {
                " (at the row cap: maybe cut)"
            } else {
                ""
            }
        );
    }
    drop(stream);
    emulator.shutdown().await;
    Ok(())
}
