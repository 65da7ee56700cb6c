//! Helpers shared by the integration tests: an emulator on its own runtime, clients
//! configured for it, and many callers at once.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use defender_blocking::{Client, ClientBuilder};
use defender_core::engine::Call;
use defender_core::incidents::IncidentQuery;
use defender_core::Limits;
use defender_emulator::{
    Emulator, EmulatorHandle, WindowMode, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};

/// An emulator on its own runtime.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub emulator: EmulatorHandle,
}

impl Env {
    /// An emulator enforcing `limits` in `mode`.
    pub fn start(limits: Limits, mode: WindowMode) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let emulator = rt
            .block_on(
                Emulator::builder()
                    .limits(limits)
                    .window_mode(mode)
                    .incidents(20)
                    .seed(7)
                    .spawn(),
            )
            .expect("the emulator starts");
        Env { rt, emulator }
    }

    /// A builder for a client of the emulator's built-in app.
    pub fn builder(&self, limits: Limits) -> ClientBuilder {
        let base = self.emulator.base_url();
        Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret(DEFAULT_SECRET)
            .base_url(&base)
            .login_url(&base)
            .limits_value(limits)
    }

    /// API requests the emulator answered (tokens not counted).
    pub fn api_requests(&self) -> u64 {
        self.emulator.stats().keys.iter().map(|k| k.requests).sum()
    }
}

/// `threads` callers, caller `t` on `clients[t % clients.len()]`, each making `calls`
/// one-incident listings that must all succeed. Returns how many succeeded.
pub fn callers(clients: &[Client], threads: usize, calls: usize) -> u32 {
    let done = std::sync::Arc::new(AtomicU32::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let client = clients[t % clients.len()].clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..calls {
                    let call = Call::ListIncidents(IncidentQuery {
                        top: Some(1),
                        ..Default::default()
                    });
                    client
                        .call(call)
                        .unwrap_or_else(|e| panic!("caller {t} call {i}: {e}"));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("no caller panicked");
    }
    done.load(Ordering::Relaxed)
}
