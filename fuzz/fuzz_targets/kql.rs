//! The emulator's KQL parser and evaluator never panic.
#![no_main]
use std::sync::OnceLock;

use defender_emulator_kql::{run, Dataset, DatasetConfig, RunOptions};
use libfuzzer_sys::fuzz_target;

fn data() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| {
        Dataset::generate(&DatasetConfig {
            rows_per_table: 50,
            anchor_unix_ms: 1_800_000_000_000,
            ..DatasetConfig::default()
        })
    })
}

fuzz_target!(|data_in: &[u8]| {
    if let Ok(q) = std::str::from_utf8(data_in) {
        let opts = RunOptions {
            now_unix_ms: 1_800_000_000_000,
            ..RunOptions::default()
        };
        let _ = run(q, data(), &opts);
    }
});
