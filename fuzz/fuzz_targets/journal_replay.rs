//! A damaged journal replayed at start: its scan and the records it would apply.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((applied, journal)) = data.split_first() else { return };
    herald_embedded::fuzzing::journal(journal, u64::from(*applied % 4));
});
