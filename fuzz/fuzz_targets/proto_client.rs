//! cargo fuzz run proto_client (nightly). Invariants: see simplemsgr::fuzzing::fuzz_proto_client.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_proto_client(data);
});
