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
