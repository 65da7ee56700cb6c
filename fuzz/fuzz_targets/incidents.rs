//! The incidents decoders never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<defender_core::incidents::IncidentPage>(data);
    let _ = serde_json::from_slice::<defender_core::incidents::Incident>(data);
    let _ = defender_core::ApiError::from_body(data);
    let _ = defender_core::token::parse_token_response(200, data, std::time::Instant::now());
});
