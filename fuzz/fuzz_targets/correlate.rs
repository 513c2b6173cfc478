//! The `correlate` fuzz target: see `flowtrace::fuzzing::correlate` (src/fuzzing.rs) for
//! how the input is read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flowtrace::fuzzing::correlate(data);
});
