//! The first bytes of an upload, from which its type is told.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = herald_media::sniff::sniff(data);
});
