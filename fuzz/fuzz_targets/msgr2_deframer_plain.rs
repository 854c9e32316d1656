//! cargo fuzz run msgr2_deframer_plain (nightly). Invariants: see simplemsgr::fuzzing::fuzz_deframer_plain.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_deframer_plain(data);
});
