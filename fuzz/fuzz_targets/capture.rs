//! cargo fuzz run capture (nightly). Invariants: see simplemsgr::fuzzing::fuzz_capture.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_capture(data);
});
