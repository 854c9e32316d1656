//! cargo fuzz run dump (nightly). Invariants: see simplemsgr::fuzzing::fuzz_dump.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_dump(data);
});
