//! Hostile traffic (issue 17), each capture generated here: a SYN flood around real
//! requests (also with `--svg`), a flood of IP fragments that never complete,
//! conflicting retransmissions.

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
pub fn flood_capture(
    name: &str,
    edge: u32,
    per_gap: u32,
) -> (std::path::PathBuf, Vec<String>, u64) {
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
        let isn = [1000 + u32::from(k) * 100_003, 5000 + u32::from(k) * 70_001];
        let packets = Conn::with_isn(([10, 1, 0, 5], 40000 + k), ([10, 2, 0, 9], 80), isn)
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

/// The first fragment of a datagram that never completes, at the far end of a
/// 64 KiB datagram (so a reassembler must hold 64 KiB for its 8 bytes), from
/// 198.51.100.x with identification `i`.
pub fn flood_fragment(i: u32) -> Vec<u8> {
    let mut ip = vec![0u8; 28];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&(0x2000u16 | (65_520 / 8)).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[198, 51, 100 + (i >> 24) as u8 % 4, (i >> 16) as u8]);
    ip[16..20].copy_from_slice(&[10, 2, 0, 9]);
    ethernet(&ip)
}

/// An IPv4 packet cut into fragments of `size` payload bytes (a multiple of 8),
/// with identification `id`.
pub fn fragments(ip: &[u8], id: u16, size: usize) -> Vec<Vec<u8>> {
    let (header, payload) = ip.split_at(20);
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut h = header.to_vec();
            h[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            let more = if i + 1 < chunks.len() { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&(more | (i * size / 8) as u16).to_be_bytes());
            [&h[..], chunk].concat()
        })
        .collect()
}

/// A capture of `count` HTTP connections (the request of connection `k` is
/// `request(k)`, from port `40000 + k`; the response is empty), every segment with data
/// sent in IPv4 fragments of `size` payload bytes (each datagram's fragments
/// together), and after each packet of a real connection `per_gap` first fragments of
/// datagrams that never complete ([`flood_fragment`]). Returns the capture, the
/// flood datagrams and the real datagrams fragmented.
pub fn fragmented_connections(
    count: u16,
    request: impl Fn(u16) -> String,
    size: usize,
    per_gap: u32,
) -> (Pcap, u32, u64) {
    let mut pcap = Pcap::new(1);
    let (mut floods, mut real_datagrams) = (0u32, 0u64);
    for k in 0..count {
        let packets = Conn::new(([10, 1, 0, 5], 40000 + k), ([10, 2, 0, 9], 80))
            .send(true, request(k).as_bytes(), 1400)
            .send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1400)
            .close();
        for (j, p) in packets.iter().enumerate() {
            if p.len() > 60 {
                for f in fragments(p, 0x7000 + k * 16 + j as u16, size) {
                    pcap.push(ethernet(&f));
                }
                real_datagrams += 1;
            } else {
                pcap.push(ethernet(p));
            }
            for _ in 0..per_gap {
                pcap.push(flood_fragment(floods));
                floods += 1;
            }
        }
    }
    (pcap, floods, real_datagrams)
}

/// 20 real HTTP connections whose segments with data travel in IP fragments (each
/// datagram's fragments together), inside a flood of first fragments of 64 KiB
/// datagrams that never complete, 50 between two packets of a real
/// connection, read with a memory budget of 16 MiB (fragment reassembly has a
/// sixteenth of it: about 15 such datagrams): every real request is reported, every
/// flood datagram is evicted (oldest first) or dropped at the end, each counted.
#[test]
fn fragment_flood_within_a_small_memory_budget_keeps_real_requests() {
    let (pcap, floods, real_datagrams) = fragmented_connections(
        20,
        |k| format!("GET /real/{k} HTTP/1.1\r\nHost: app\r\n\r\n"),
        24,
        50,
    );
    let mut uris: Vec<String> = (0..20).map(|k| format!("/real/{k}")).collect();
    uris.sort();
    let path = temp_dir("frag-flood").join("frag-flood.pcap");
    pcap.write(&path);
    let run = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--memory-budget".as_ref(),
        "16M".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: Doc = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(answered(&doc), uris, "every real request with its response");
    assert_eq!(doc.stat("ip_reassembled"), real_datagrams);
    let (evicted, dropped) = (
        doc.stat("ip_fragments_evicted"),
        doc.stat("ip_fragments_dropped"),
    );
    assert_eq!(
        evicted + dropped,
        u64::from(floods),
        "each flood datagram once"
    );
    // About 15 fit the share: the rest were evicted before the end.
    assert!(dropped > 5 && dropped < 20, "{dropped} left at the end");
}

/// The SYN flood with `--svg` and a memory budget of 1 MiB: the segment journal
/// (an eighth of it) cannot hold a summary per flood connection, so the connections
/// recorded first are evicted and counted; every real request is in a path, and
/// the diagrams are drawn.
#[test]
fn syn_flood_with_svg_within_a_small_memory_budget_keeps_real_requests() {
    let (path, uris, floods) = flood_capture("syn-flood-svg", 15_000, 40);
    let dir = temp_dir("syn-flood-svg-diagrams").join("svg");
    let run = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
        "--memory-budget".as_ref(),
        "1M".as_ref(),
        path.as_os_str(),
        "--svg".as_ref(),
        dir.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut found = Vec::new();
    let mut stats = serde_json::Value::Null;
    for line in run.stdout.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        match rec["type"].as_str() {
            Some("path") => {
                for hop in rec["hops"].as_array().unwrap() {
                    if hop["status"] == 200 {
                        found.push(hop["uri"].as_str().unwrap().to_string());
                    }
                }
            }
            Some("summary") => stats = rec["stats"].clone(),
            _ => {}
        }
    }
    found.sort();
    assert_eq!(
        found, uris,
        "every real request in a path with its response"
    );
    let evicted = stats["segments_evicted"].as_u64().unwrap();
    // 128 KiB hold a few hundred one-SYN connections: most of the flood's were
    // evicted, none refused.
    assert!(
        evicted + 1_000 >= floods && evicted <= floods,
        "{evicted} of {floods}"
    );
    assert_eq!(stats["segments_not_kept"], 0);
    assert!(std::fs::read_dir(&dir).unwrap().count() >= 4);
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
