//! One test per fuzzing finding: each replays the input kept in
//! `fuzz/regressions/<target>/` through the fuzz target's own entry point
//! (`flowtrace::fuzzing`), so the finding stays fixed in the ordinary test run
//! (docs/fuzzing.md).

use flowtrace::fuzzing;

fn input(target: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/fuzz/regressions/{target}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// decode_frame: an IPv6 fragment header followed by a Hop-by-Hop header (which
/// etherparse's lax parse rejects there) made etherparse 0.21's extension-header
/// iterator read past the end of the packet (AddressSanitizer: heap-buffer-overflow
/// in `Ipv6RawExtHeaderSlice::from_slice_unchecked`). The decoder now walks the
/// headers with checked slices; the datagram is still seen as IPv6 and fragmented.
#[test]
fn decode_frame_ipv6_extension_iterator_out_of_bounds() {
    let stats = fuzzing::decode_frame(&input("decode_frame", "ipv6-ext-iter-oob-read.bin"));
    assert_eq!(stats.ipv6, 1, "{stats:?}");
}

/// capture_file: a 968-byte pcap whose record claims far more bytes than the file
/// holds grew the read buffer to 256 MiB (about 100 ms of page faults per input: the
/// fuzzer ran at 7 executions a second). The buffer now grows only once it is full of input; the
/// record is reported cut off and what came before it is kept.
#[test]
fn capture_file_huge_record_length_in_a_small_file() {
    let t = std::time::Instant::now();
    let run = fuzzing::capture_file(&input("capture_file", "huge-caplen-grows-buffer.bin"));
    assert!(run.opened);
    assert_eq!(run.warnings, 1, "{run:?}");
    // Not a benchmark: generous, but far below what 256 MiB of page faults cost
    // in a debug build on a loaded machine.
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}
