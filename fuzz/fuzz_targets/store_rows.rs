//! Rows the embedded store reads back from disk (messages, feed events and blocks, feed snapshots): a
//! damaged file must give errors, never a panic.
#![no_main]
use herald_embedded::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else { return };
    match which % 4 {
        0 => fuzzing::message_row(bytes),
        1 => fuzzing::feed_row(bytes),
        2 => {
            let first = bytes.get(..8).map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
            fuzzing::feed_block(first, bytes.get(8..).unwrap_or_default());
        }
        _ => fuzzing::feed_snapshot(bytes),
    }
});
