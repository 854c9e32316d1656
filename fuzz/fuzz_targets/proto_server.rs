//! cargo fuzz run proto_server (nightly). Invariants: see simplemsgr::fuzzing::fuzz_proto_server.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    simplemsgr::fuzzing::fuzz_proto_server(data);
});
