//! Hunting and incidents through the async client, against an emulator started in this
//! process (no tenant needed). Against a real tenant, drop the emulator and the
//! `base_url`/`login_url` lines and set AZURE_TENANT_ID, AZURE_CLIENT_ID and
//! AZURE_CLIENT_SECRET.
//!
//! `cargo run -p defender-async --example hunt`

use defender_async::Client;
use defender_core::incidents::{IncidentQuery, IncidentStatus, IncidentUpdate};
use defender_core::Surface;
use defender_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::builder().spawn().await?;
    let client = Client::builder()
        .surface(Surface::DefenderXdr)
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(emulator.base_url())
        .login_url(emulator.base_url())
        .limits("xdr")?
        .build()?;

    let result = client
        .hunt("DeviceProcessEvents | where FileName =~ 'powershell.exe' | project Timestamp, DeviceName, ProcessCommandLine | take 5")
        .await?;
    println!(
        "{} rows (truncated: {}), ran {:?}",
        result.rows.len(),
        result.truncated,
        result.running_time
    );
    for row in &result.rows {
        println!(
            "  {} {} {}",
            row["Timestamp"], row["DeviceName"], row["ProcessCommandLine"]
        );
    }

    // Many tasks share one client and one quota.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .hunt(format!("AlertInfo | take {}", i + 1))
                    .await
                    .map(|r| r.rows.len())
            })
        })
        .collect();
    for t in tasks {
        print!("{} ", t.await??);
    }
    println!("rows from 8 concurrent hunts");

    let mut active = std::pin::pin!(client.incidents().list(IncidentQuery {
        filter: defender_core::incidents::IncidentFilter::new().status(IncidentStatus::Active),
        top: Some(50),
        ..IncidentQuery::default()
    }));
    let mut n = 0;
    let mut first = None;
    while let Some(incident) = active.next().await {
        let incident = incident?;
        first.get_or_insert(incident.incident_id.clone());
        n += 1;
    }
    println!("{n} active incidents");
    if let Some(Some(id)) = first {
        let update = IncidentUpdate {
            status: Some(IncidentStatus::InProgress),
            comment: Some("triaged by the example".into()),
            ..Default::default()
        };
        let updated = client.incidents().update(id.clone(), update).await?;
        println!("incident {id} is now {:?}", updated.status);
    }
    for usage in client.quota().await? {
        for w in usage.windows {
            println!("{}: {} of {}", usage.group, w.used, w.limit);
        }
    }
    emulator.shutdown().await;
    Ok(())
}
