//! cargo fuzz run banner (nightly). Invariants: see simplemsgr::fuzzing::fuzz_banner.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_banner(data);
});
