//! A client's WebSocket text frame, as the gateway parses it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<herald_proto::ClientFrame>(data);
});
