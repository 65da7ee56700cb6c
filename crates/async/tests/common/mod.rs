//! Helpers shared by the integration tests: an emulator, a client builder pointed at it.
#![allow(dead_code)]

use std::time::Duration;

use defender_async::{Client, ClientBuilder};
use defender_core::Limits;
use defender_emulator::{
    EmulatorHandle, Stats, WindowMode, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};
use defender_policy::StandardPolicy;

/// An emulator enforcing `limits`, as the conformance suite starts it.
pub async fn emulator(limits: &Limits, mode: WindowMode) -> EmulatorHandle {
    defender_emulator::Emulator::builder()
        .limits(limits.clone())
        .window_mode(mode)
        .rows_per_table(300)
        .incidents(120)
        .seed(7)
        .spawn()
        .await
        .expect("the emulator starts")
}

/// A builder for the emulator's built-in app, enforcing `limits`.
pub fn builder(emu: &EmulatorHandle, limits: &Limits) -> ClientBuilder {
    Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(emu.base_url())
        .login_url(emu.base_url())
        .limits_value(limits.clone())
        .policy(
            StandardPolicy::standard()
                .with_max_wait(Duration::from_secs(30))
                .seed(3),
        )
}

/// API requests the emulator answered (token requests not counted).
pub fn api_requests(stats: &Stats) -> u64 {
    stats.keys.iter().map(|k| k.requests).sum()
}

/// `callers` tasks spread over `clients`, each making `per_caller` incident listings;
/// panics when one fails.
pub async fn list_concurrently(clients: &[Client], callers: usize, per_caller: usize) {
    let tasks: Vec<_> = (0..callers)
        .map(|t| {
            let client = clients[t % clients.len()].clone();
            tokio::spawn(async move {
                for i in 0..per_caller {
                    let call = defender_core::engine::Call::ListIncidents(
                        defender_core::incidents::IncidentQuery {
                            top: Some(1),
                            ..Default::default()
                        },
                    );
                    client
                        .call(call)
                        .await
                        .unwrap_or_else(|e| panic!("caller {t} call {i}: {e}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("no caller panicked");
    }
}
