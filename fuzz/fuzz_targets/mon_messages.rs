//! cargo fuzz run mon_messages (nightly). Invariants: see simplemsgr::fuzzing::fuzz_mon_messages.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_mon_messages(data);
});
