//! Hostile traffic (issue 17), each capture generated here: a SYN flood around real
//! requests, conflicting retransmissions.

use crate::encap::{ethernet, flowtrace_messages, Conn, Pcap};
use crate::util::{flowtrace, temp_dir, Doc};
use etherparse::PacketBuilder;

/// A spoofed SYN from 198.51.100.x to the server.
fn flood_syn(i: u32) -> Vec<u8> {
    let mut pkt = Vec::new();
    PacketBuilder::ipv4(
        [198, 51, (100 + (i >> 16) % 4) as u8, (i >> 8) as u8],
        [10, 2, 0, 9],
        64,
    )
    .tcp(
        1024 + (i % 60000) as u16,
        80,
        i.wrapping_mul(2_654_435_761),
        1024,
    )
    .syn()
    .write(&mut pkt, &[])
    .unwrap();
    ethernet(&pkt)
}

/// A capture of 20 real HTTP connections with a flood of half-open SYNs before
/// (`edge` SYNs), between and inside them (`per_gap` SYNs between two packets of a
/// real connection) and after (`edge`): its path, the real URIs (sorted) and the
/// number of flood SYNs.
fn flood_capture(name: &str, edge: u32, per_gap: u32) -> (std::path::PathBuf, Vec<String>, u64) {
    let mut pcap = Pcap::new(1);
    let mut n = 0u32;
    let mut flood = |pcap: &mut Pcap, count: u32| {
        for _ in 0..count {
            pcap.push(flood_syn(n));
            n += 1;
        }
    };
    flood(&mut pcap, edge);
    let mut uris = Vec::new();
    for k in 0..20u16 {
        let uri = format!("/real/{k}");
        let req = format!("GET {uri} HTTP/1.1\r\nHost: app\r\n\r\n");
        let packets = Conn::new(([10, 1, 0, 5], 40000 + k), ([10, 2, 0, 9], 80))
            .send(true, req.as_bytes(), 1400)
            .send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1400)
            .close();
        for p in packets {
            pcap.push(ethernet(&p));
            flood(&mut pcap, per_gap);
        }
        uris.push(uri);
    }
    flood(&mut pcap, edge);
    let floods = u64::from(n);
    let path = temp_dir(name).join(format!("{name}.pcap"));
    pcap.write(&path);
    uris.sort();
    (path, uris, floods)
}

/// The URIs answered 200 in a `--format json` document, sorted.
fn answered(doc: &Doc) -> Vec<String> {
    let mut found: Vec<String> = doc
        .transactions
        .iter()
        .filter(|t| t.status == Some(200))
        .filter_map(|t| t.uri.clone())
        .collect();
    found.sort();
    found
}

/// 20 real HTTP connections inside a flood of half-open SYNs, read with a table of
/// 64 connections: every real request is reported, the flood's SYNs are evicted
/// oldest first and counted, no connection is refused.
#[test]
fn syn_flood_evicts_half_open_and_keeps_real_connections() {
    let (path, uris, floods) = flood_capture("syn-flood", 3000, 20);
    let run = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--max-connections".as_ref(),
        "64".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: Doc = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answered(&doc), uris, "every real request with its response");
    assert_eq!(doc.stat("tcp_untracked"), 0);
    // Each flood SYN beyond the table's room was evicted (the table ends nearly
    // full: evictions go by batches of a sixteenth of the half-open connections).
    let evicted = doc.stat("tcp_evicted_half_open");
    assert!(
        evicted + 64 >= floods && evicted <= floods,
        "{evicted} of {floods}"
    );
    assert_eq!(doc.stat("tcp_connections"), floods + 20);
    // With the default table (room for the whole flood) nothing is evicted and the
    // same requests are found.
    let (messages, roomy) = flowtrace_messages(&path);
    assert_eq!(roomy.stat("tcp_evicted_half_open"), 0);
    assert_eq!(messages.requests.len(), 20);
}

/// The same kind of flood against a memory budget of 1 MiB (the smallest allowed;
/// the connection table gets three quarters of it, a half-open connection costs an
/// 89-byte slot): the table cannot hold the flood, so its oldest SYNs are evicted
/// and counted, and every real request around and inside it is still reported.
#[test]
fn syn_flood_within_a_small_memory_budget_keeps_real_requests() {
    let (path, uris, floods) = flood_capture("syn-flood-budget", 15_000, 40);
    let run = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--memory-budget".as_ref(),
        "1M".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: Doc = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answered(&doc), uris, "every real request with its response");
    assert_eq!(doc.stat("tcp_untracked"), 0);
    assert_eq!(doc.stat("tcp_evicted_established"), 0);
    // 768 KiB hold at most about 8,000 slots: most of the flood was evicted.
    let evicted = doc.stat("tcp_evicted_half_open");
    assert!(
        evicted + 8_000 >= floods && evicted <= floods,
        "{evicted} of {floods}"
    );
    // A budget that is not a size is refused with a clear error.
    let bad = flowtrace([
        "pcap".as_ref(),
        "--memory-budget".as_ref(),
        "lots".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("--memory-budget"), "{}", bad.stderr);
}

/// A request retransmitted once with the same bytes and once with other bytes of
/// the same length (an evasion attempt: which copy a host keeps depends on its
/// stack): flowtrace reports the first copy and counts one conflict.
#[test]
fn conflicting_retransmission_is_counted_and_first_copy_wins() {
    let real = b"GET /real HTTP/1.1\r\nHost: app\r\n\r\n";
    let evil = b"GET /evil HTTP/1.1\r\nHost: app\r\n\r\n";
    let mut conn = Conn::new(([10, 1, 0, 5], 40000), ([10, 2, 0, 9], 80));
    conn.send(true, real, 1400)
        .retransmit(true, real)
        .retransmit(true, evil)
        .send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1400);
    let mut pcap = Pcap::new(1);
    for p in conn.close() {
        pcap.push(ethernet(&p));
    }
    let path = temp_dir("conflicting-retransmission").join("conflict.pcap");
    pcap.write(&path);
    let (found, doc) = flowtrace_messages(&path);
    let uris: Vec<&str> = found.requests.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(uris, vec!["/real"]);
    assert_eq!(doc.stat("tcp_retransmitted"), 2);
    assert_eq!(doc.stat("tcp_conflicting_overlaps"), 1);
}
