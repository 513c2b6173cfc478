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

/// 20 real HTTP connections with a flood of half-open SYNs before, between and
/// inside them (`per_gap` SYNs between two packets of a real connection), read with
/// a table of 64 connections: every real request is reported, the flood's SYNs are
/// evicted oldest first and counted, no connection is refused.
#[test]
fn syn_flood_evicts_half_open_and_keeps_real_connections() {
    let per_gap = 20;
    let mut pcap = Pcap::new(1);
    let mut n = 0u32;
    let mut flood = |pcap: &mut Pcap, count: u32| {
        for _ in 0..count {
            pcap.push(flood_syn(n));
            n += 1;
        }
    };
    flood(&mut pcap, 3000);
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
    flood(&mut pcap, 3000);
    let floods = u64::from(n);
    let dir = temp_dir("syn-flood");
    let path = dir.join("syn-flood.pcap");
    pcap.write(&path);
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
    let mut found: Vec<String> = doc
        .transactions
        .iter()
        .filter(|t| t.status == Some(200))
        .filter_map(|t| t.uri.clone())
        .collect();
    found.sort();
    uris.sort();
    assert_eq!(found, uris, "every real request with its response");
    assert_eq!(doc.stat("tcp_untracked"), 0);
    // Each flood SYN beyond the table's room was evicted (the table ends full).
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
