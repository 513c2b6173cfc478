//! The `http_parse` fuzz target: see `flowtrace::fuzzing::http_parse` (src/fuzzing.rs) for
//! how the input is read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    flowtrace::fuzzing::http_parse(data);
});
