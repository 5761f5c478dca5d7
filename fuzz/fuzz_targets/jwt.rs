//! An access token presented by a client: parsed and verified, never accepted unless signed with the key.
#![no_main]
use herald_core::auth::Tokens;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use std::time::Duration;

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| {
    Tokens::new(b"fuzzing-secret-fuzzing-secret-32b!", Duration::from_secs(900), Duration::from_secs(86_400))
});

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(TOKENS.verify_access(token).is_err(), "a token the fuzzer made up was accepted: {token}");
    }
});
