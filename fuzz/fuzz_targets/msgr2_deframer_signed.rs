//! cargo fuzz run msgr2_deframer_signed (nightly). Invariants: see simplemsgr::fuzzing::fuzz_deframer_signed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_deframer_signed(data);
});
