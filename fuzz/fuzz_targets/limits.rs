//! The limits spec parser never panics, and what it accepts round-trips.
#![no_main]
use defender_core::limits::{parse_duration, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_duration(s);
        if let Ok(l) = Limits::parse(s) {
            assert_eq!(Limits::parse(&l.to_spec()).as_ref(), Ok(&l));
        }
    }
});
