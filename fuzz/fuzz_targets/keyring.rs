//! cargo fuzz run keyring (nightly). Invariants: see simplemsgr::fuzzing::fuzz_keyring.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_keyring(data);
});
