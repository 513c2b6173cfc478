//! The `tcp_reassembly` fuzz target: see `flowtrace::fuzzing::tcp_reassembly` (src/fuzzing.rs) for
//! how the input is read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flowtrace::fuzzing::tcp_reassembly(data);
});
