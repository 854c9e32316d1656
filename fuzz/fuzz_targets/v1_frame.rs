//! cargo fuzz run v1_frame (nightly). Invariants: see simplemsgr::fuzzing::fuzz_v1_frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_v1_frame(data);
});
