//! cargo fuzz run msgr2_deframer_encrypted (nightly). Invariants: see simplemsgr::fuzzing::fuzz_deframer_encrypted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_deframer_encrypted(data);
});
