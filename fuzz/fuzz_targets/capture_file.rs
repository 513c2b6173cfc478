//! The `capture_file` fuzz target: see `flowtrace::fuzzing::capture_file` (src/fuzzing.rs) for
//! how the input is read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flowtrace::fuzzing::capture_file(data);
});
