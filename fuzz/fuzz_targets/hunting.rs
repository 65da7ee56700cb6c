//! The hunting decoders never panic, and the streaming decoder agrees with the plain one
//! on what it accepts, whatever the chunking.
#![no_main]
use defender_core::hunting::HuntResponse;
use defender_core::stream::{DecodeEvent, RowDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plain = HuntResponse::from_slice(data);
    let mut d = RowDecoder::new();
    let chunk = (data.first().copied().unwrap_or(1) as usize % 7) + 1;
    let mut rows = 0usize;
    let mut ok = true;
    for c in data.chunks(chunk) {
        d.feed(c);
        loop {
            match d.poll() {
                Ok(Some(DecodeEvent::Row(_))) => rows += 1,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            break;
        }
    }
    if ok && d.finish().is_ok() {
        let plain = plain.expect("the streaming decoder accepted what the plain one refused");
        assert_eq!(plain.results.len(), rows);
    }
});
