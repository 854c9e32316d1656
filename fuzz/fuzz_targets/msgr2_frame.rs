//! cargo fuzz run msgr2_frame (nightly). Invariants: see simplemsgr::fuzzing::fuzz_frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_frame(data);
});
