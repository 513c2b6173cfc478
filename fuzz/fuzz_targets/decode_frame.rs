//! The `decode_frame` fuzz target: see `flowtrace::fuzzing::decode_frame` (src/fuzzing.rs) for
//! how the input is read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flowtrace::fuzzing::decode_frame(data);
});
