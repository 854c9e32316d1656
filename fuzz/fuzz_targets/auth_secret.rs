//! cargo fuzz run auth_secret (nightly). Invariants: see simplemsgr::fuzzing::fuzz_auth_secret.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_auth_secret(data);
});
