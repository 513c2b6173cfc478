//! Entry points of the cargo-fuzz targets in `fuzz/` (see `docs/fuzzing.md`).
//!
//! Each function takes the bytes libFuzzer generates and drives one stage with them;
//! the fuzz targets are one-line wrappers, and the regression tests in
//! `tests/regression.rs` replay the inputs kept in `fuzz/regressions/<target>/`
//! through the same functions, so a finding stays fixed in the ordinary test run.
//! Each returns the run's counters, so a test can assert what was counted.
//! Not part of the stable API.

use crate::anomaly::{AnomalyLog, Stats};
use crate::capture::{FileSource, Frame, IfaceId, Linktype};
use crate::correlate::{Context, Engine, EngineConfig};
use crate::decode::{Decoder, TcpSegment};
use crate::http::{Headers, HttpAnalyzer, HttpConn, HttpTransaction, Request, Response};
use crate::pipeline::{Pipeline, PipelineConfig, Vantage};
use crate::tcp::{ConnMeta, Dir, End, Handshake, StreamPos, StreamSink, TcpConfig, TcpTable};
use crate::time::Ts;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Frames read per capture input at most (a run stays fast on any input).
const MAX_FRAMES: usize = 20_000;

fn write_capture(path: &Path, bytes: &[u8], gzip: bool) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        enc.write_all(bytes)?;
        enc.finish()?;
        Ok(())
    } else {
        f.write_all(bytes)
    }
}

/// What [`capture_file`] did.
#[derive(Debug, Default)]
pub struct CaptureRun {
    /// Whether the capture opened (its header was recognised).
    pub opened: bool,
    /// Frames read.
    pub frames: usize,
    /// Warnings (files that ended early).
    pub warnings: usize,
    /// The pipeline's counters.
    pub stats: Stats,
}

/// Capture file reading: pcap, pcapng and their gzip wrappers, every link type, and
/// the frames read pushed through the whole pipeline (decode, TCP, HTTP).
///
/// The first byte chooses how the rest is written out to temporary files: bit 0
/// gzips it (exercising the gzip sniffing and streaming), bit 1 splits it into two
/// files read as one merged stream (the split point is the second byte's share of
/// the length), bit 2 verifies checksums, bit 3 keeps segment summaries.
pub fn capture_file(data: &[u8]) -> CaptureRun {
    let mut run = CaptureRun::default();
    let Some((&mode, rest)) = data.split_first() else {
        return run;
    };
    let gzip = mode & 1 != 0;
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let tid = format!("{:?}", std::thread::current().id());
    let tid: String = tid.chars().filter(char::is_ascii_digit).collect();
    let a = dir.join(format!("flowtrace-fuzz-{pid}-{tid}-a"));
    let b = dir.join(format!("flowtrace-fuzz-{pid}-{tid}-b"));
    let paths: Vec<PathBuf> = if mode & 2 != 0 && rest.len() > 1 {
        let at = 1 + (rest[0] as usize * (rest.len() - 1)) / 255;
        let ok = write_capture(&a, &rest[1..at], gzip).and(write_capture(&b, &rest[at..], gzip));
        if ok.is_err() {
            return run;
        }
        vec![a, b]
    } else {
        if write_capture(&a, rest, gzip).is_err() {
            return run;
        }
        vec![a]
    };
    if let Ok(mut source) = FileSource::open(&paths) {
        run.opened = true;
        let mut stats = Stats::default();
        let mut pipeline = Pipeline::new(PipelineConfig {
            verify_checksums: mode & 4 != 0,
            keep_segments: mode & 8 != 0,
            ..PipelineConfig::default()
        });
        while let Ok(Some((frame, interfaces))) = source.next_frame(&mut stats) {
            pipeline.push(&frame, interfaces);
            pipeline.drain().for_each(drop);
            run.frames += 1;
            if run.frames >= MAX_FRAMES {
                break;
            }
        }
        pipeline.finish();
        pipeline.drain().for_each(drop);
        run.stats = pipeline.stats();
        run.warnings = source.warnings().len();
    }
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    run
}

/// Link types [`decode_frame`] picks from: NULL, ETHERNET, RAW (12, 14, 101), LOOP,
/// LINUX_SLL, IPV4, IPV6, LINUX_SLL2, one flowtrace does not decode (802.11), and
/// NFLOG (its TLV walk is the decoder's most intricate link layer). Every link type
/// `Decoder::decode` supports is here; new ones go at the end, so that the corpus's
/// selector bytes below 11 keep their meaning.
pub const DECODE_LINKS: [i32; 12] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105, 239];
/// Separates the frames of one [`decode_frame`] input.
pub const FRAME_MARKER: &[u8] = &[0xff, 0x00, 0xff, 0x00];

/// Decode of one frame (and, since the decoder keeps fragment state, of the frames
/// that follow it). The first byte picks the link type from [`DECODE_LINKS`] (bit 7
/// also verifies checksums, bit 6 claims 64 bytes more on the wire than captured);
/// the rest is split into frames at each [`FRAME_MARKER`] (a single frame when there
/// is none), so fragment reassembly sees several datagrams.
pub fn decode_frame(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let Some((&sel, mut rest)) = data.split_first() else {
        return stats;
    };
    let link = Linktype(DECODE_LINKS[sel as usize % DECODE_LINKS.len()]);
    let mut decoder = Decoder::new().verify_checksums(sel & 0x80 != 0);
    let mut log = AnomalyLog::default();
    let mut i = 0i64;
    loop {
        let (frame, next) = match rest
            .windows(FRAME_MARKER.len())
            .position(|w| w == FRAME_MARKER)
        {
            Some(p) => (&rest[..p], Some(&rest[p + FRAME_MARKER.len()..])),
            None => (rest, None),
        };
        let f = Frame {
            ts: Ts(i * 1_000_000_000),
            iface: IfaceId(0),
            link,
            orig_len: frame.len() as u32 + (sel as u32 & 0x40),
            data: frame,
        };
        let d = decoder.decode(&f, &mut stats, &mut log);
        std::hint::black_box(format!("{d:?}"));
        i += 1;
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    decoder.expire(Ts(i64::MAX), &mut stats);
    stats
}

/// Sequence bases of the four directions of [`tcp_reassembly`]: just below the
/// 32-bit wrap, and elsewhere.
const TCP_BASES: [u32; 4] = [0xffff_ff00, 0x0000_1000, 0x7fff_fff0, 0xffff_fff0];

/// TCP reassembly over a sequence of arbitrary segments, delivered to the HTTP
/// analyzer (as the pipeline does).
///
/// After a configuration byte (bit 0: tiny table limits, so eviction and lingering
/// run), the input is a list of segment records: a header of 8 bytes (who sends,
/// flags, sequence and acknowledgement offsets from each side's base, payload
/// length, missing length, time step, vantage) followed by the payload. Two clients
/// talk to one server, so records interleave two connections in both directions.
pub fn tcp_reassembly(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let Some((&cfg, mut rest)) = data.split_first() else {
        return stats;
    };
    let config = if cfg & 1 != 0 {
        TcpConfig {
            idle_timeout_ns: 2_000_000_000,
            linger_ns: 500_000_000,
            max_connections: 1,
            // Small enough that a few connections' buffers reach it.
            memory_budget: 16 << 10,
        }
    } else {
        TcpConfig::default()
    };
    let mut table: TcpTable<HttpConn> = TcpTable::new(config);
    let mut http = HttpAnalyzer::new();
    let mut log = AnomalyLog::default();
    let server = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let clients = [
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3)),
    ];
    let mut ts = 0i64;
    while rest.len() >= 8 {
        let h = &rest[..8];
        rest = &rest[8..];
        let who = h[0];
        let conn = (who >> 1) as usize & 1;
        let to_server = who & 1 == 0;
        let base_tx = TCP_BASES[conn * 2 + usize::from(!to_server)];
        let base_rx = TCP_BASES[conn * 2 + usize::from(to_server)];
        let seq = base_tx.wrapping_add(u32::from(h[2]) * 16 + u32::from(who >> 4));
        let ack = base_rx.wrapping_add(u32::from(h[3]) * 16);
        let len = (h[4] as usize).min(rest.len());
        let payload = &rest[..len];
        rest = &rest[len..];
        let missing = if h[5] & 0x80 != 0 {
            u32::from(h[5] & 0x7f) * 64
        } else {
            0
        };
        ts += i64::from(h[6]) * 10_000_000 * if h[7] & 0x80 != 0 { 100 } else { 1 };
        let port = 40000 + conn as u16;
        let seg = TcpSegment {
            src_port: if to_server { port } else { 80 },
            dst_port: if to_server { 80 } else { port },
            seq,
            ack,
            flags: h[1],
            window: 512,
            payload,
            missing,
            ttl: 64,
        };
        let (src, dst) = if to_server {
            (clients[conn], server)
        } else {
            (server, clients[conn])
        };
        let vantage = u32::from(h[7] & 1);
        table.segment(
            &mut http,
            Ts(ts),
            vantage,
            src,
            dst,
            &seg,
            &mut stats,
            &mut log,
        );
        http.completed.clear();
        std::hint::black_box(http.pending_floor(Ts(ts), 5_000_000_000));
    }
    table.finish(&mut http, &mut stats);
    http.completed.clear();
    stats
}

fn conn_meta(id: u64) -> ConnMeta {
    ConnMeta {
        id,
        vantage: 0,
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2 + id as u8)), 40000),
        server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 80),
        first_ts: Ts(0),
        last_ts: Ts(0),
        syn_seen: id == 0,
        handshake: Handshake::default(),
        first_seq: [Some(1000), None],
        first_ttl: [Some(64), None],
    }
}

/// HTTP parsing over arbitrary chunks and gaps, in both directions of two
/// connections, through the analyzer's stream interface (data, gap, end, close) as
/// the TCP stage drives it.
///
/// The input is a list of operations. An operation byte: bit 0 the connection, bit 1
/// the direction (to the client when set), bits 2-5 the kind (0-10 data: a length
/// byte and that many bytes follow; 11-12 a gap: a length byte follows, its bit 7
/// making the gap huge; 13 FIN; 14 RST; 15 close), bits 6-7 a time step.
pub fn http_parse(data: &[u8]) -> Stats {
    let mut http = HttpAnalyzer::new();
    let mut conns: Vec<Option<(HttpConn, ConnMeta, [u32; 2])>> = (0..2)
        .map(|id| {
            let m = conn_meta(id);
            Some((http.open(&m), m, [1000, 5000]))
        })
        .collect();
    let mut rest = data;
    let mut ts = 0i64;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        ts += 1_000_000 * i64::from(op >> 6);
        let c = usize::from(op & 1);
        let dir = if op & 2 == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let Some((conn, m, seq)) = conns[c].as_mut() else {
            continue;
        };
        m.last_ts = Ts(ts);
        match (op >> 2) & 0x0f {
            0..=10 => {
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                let n = (n as usize).min(tail.len());
                let (chunk, tail) = tail.split_at(n);
                rest = tail;
                http.direction_seen(conn, m, dir, Ts(ts));
                let pos = StreamPos {
                    seq: seq[dir as usize],
                    ack: seq[1 - dir as usize],
                };
                seq[dir as usize] = seq[dir as usize].wrapping_add(n as u32);
                http.data(conn, m, dir, Ts(ts), chunk, pos);
            }
            11 | 12 => {
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let len = if n & 0x80 != 0 {
                    u64::from(n & 0x7f) << 32
                } else {
                    u64::from(n)
                };
                seq[dir as usize] = seq[dir as usize].wrapping_add(len as u32);
                http.gap(conn, m, dir, Ts(ts), len);
            }
            13 => http.end(conn, m, dir, Ts(ts), End::Fin),
            14 => http.end(conn, m, dir, Ts(ts), End::Rst),
            _ => {
                if let Some((conn, m, _)) = conns[c].take() {
                    http.close(conn, &m, Ts(ts));
                }
            }
        }
        std::hint::black_box(http.pending_floor(Ts(ts), 5_000_000_000));
        std::hint::black_box(http.overdue_one_way(Ts(ts)));
        http.completed.clear();
    }
    for (conn, m, _) in conns.into_iter().flatten() {
        http.close(conn, &m, Ts(ts));
    }
    http.completed.clear();
    http.stats
}

const METHODS: [&str; 4] = ["GET", "POST", "HEAD", "CONNECT"];
const URIS: [&str; 4] = ["/", "/api/x?id=1", "http://b.lab/x", "*"];
const MS: i64 = 1_000_000;
/// Bytes of one [`correlate`] record.
pub const CORRELATE_RECORD: usize = 20;

fn lab_ip(o: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, o % 8))
}

fn transaction(h: &[u8], id: u64, base: &mut i64) -> HttpTransaction {
    let client = SocketAddr::new(lab_ip(h[1]), 40000 + u16::from(h[2] & 0x0f));
    let server = SocketAddr::new(lab_ip(h[3]), [80, 8080, 443, 3128][usize::from(h[3] >> 6)]);
    *base += i64::from(h[4]) * MS / 4;
    let first = Ts(*base);
    let req_last = Ts(*base + i64::from(h[5]) * MS / 8);
    let seq = u32::from_be_bytes([h[6], h[7], 0, 0]);
    let ack = u32::from_be_bytes([h[8], h[9], 0, 0]);
    let mut headers = Headers::with_capacity(4, 128);
    let f = h[10];
    if f & 1 != 0 {
        headers.push(b"Host", b"b.lab");
    }
    if f & 2 != 0 {
        let v = format!("198.18.0.{}, 198.18.0.{}", h[11] % 8, h[11] >> 5);
        headers.push(b"X-Forwarded-For", v.as_bytes());
    }
    if f & 4 != 0 {
        headers.push(b"X-Real-IP", format!("198.18.0.{}", h[11] % 8).as_bytes());
    }
    if f & 8 != 0 {
        headers.push(b"X-Forwarded-For", &h[12..16]);
    }
    if f & 16 != 0 {
        headers.push(b"Via", b"1.1 proxy");
    }
    let request = (f & 32 == 0).then(|| Request {
        method: METHODS[usize::from(h[12] & 3)].into(),
        uri: URIS[usize::from(h[12] >> 2 & 3)].into(),
        version: "HTTP/1.1",
        headers,
        body_bytes: u64::from(h[13]),
        first_ts: first,
        last_ts: req_last,
        incomplete: h[13] & 1 != 0,
        wire_pos: (f & 64 == 0).then_some(StreamPos { seq, ack }),
    });
    let resp_first = Ts(req_last.0 + i64::from(h[15]) * MS / 4);
    let response = (f & 128 == 0).then(|| Response {
        status: [200, 404, 502, 101][usize::from(h[14] & 3)],
        reason: Default::default(),
        version: "HTTP/1.1",
        headers: Headers::default(),
        body_bytes: u64::from(h[14]),
        first_ts: resp_first,
        last_ts: Ts(resp_first.0 + i64::from(h[16]) * MS / 16),
        incomplete: h[16] & 1 != 0,
    });
    let syn = Ts(first.0 - i64::from(h[18]) * MS / 16);
    HttpTransaction {
        id,
        conn_id: u64::from(h[2]) + 256 * u64::from(h[0] & 3),
        vantage: u32::from(h[0] & 3),
        client,
        server,
        request,
        response,
        interim: if h[14] & 4 != 0 { vec![100] } else { vec![] },
        index_in_conn: u32::from(h[17] >> 5),
        conn_seq: [
            Some(seq.wrapping_sub(u32::from(h[17]))),
            (h[17] & 1 != 0).then_some(ack.wrapping_sub(1)),
        ],
        handshake: Handshake {
            syn: (h[18] & 1 != 0).then_some(syn),
            syn_ack: (h[18] & 2 != 0).then_some(Ts(syn.0 + MS / 10)),
            ack: (h[18] & 4 != 0).then_some(Ts(syn.0 + MS / 5)),
        },
        conn_ttl: [Some(64 - (h[19] & 3)), Some(64 - (h[19] >> 6))],
        segments: Vec::new(),
        socks_target: None,
    }
}

/// Correlation over an arbitrary stream of exchanges: transactions built from the
/// input are ingested by the streaming engine at four capture points (a client, a
/// router, two servers), with watermarks advanced between them, as `flowtrace paths`
/// does; the report is serialised at the end.
///
/// A configuration byte (bit 0: at most 4 open exchanges; bit 1: no wait for clock
/// offsets; bit 2: an alias group), then records of [`CORRELATE_RECORD`] bytes, one
/// transaction each: capture point, addresses (from small sets, so one connection
/// shows up at several points as NAT would leave it), sequence numbers, times,
/// method and target, forwarding headers, response. Returns the paths emitted.
pub fn correlate(data: &[u8]) -> usize {
    let Some((&cfg, rest)) = data.split_first() else {
        return 0;
    };
    let files: Vec<String> = ["client.pcap", "router.pcap", "A.pcap", "B.pcap"]
        .map(String::from)
        .to_vec();
    let links = vec![None; files.len()];
    let vantages: Vec<Vantage> = (0..4)
        .map(|i| Vantage {
            file: files[i].clone(),
            file_index: i,
            interface: "eth0".into(),
            ifindex: None,
        })
        .collect();
    let mut ecfg = EngineConfig::default();
    if cfg & 1 != 0 {
        ecfg.max_open_exchanges = 4;
    }
    if cfg & 2 != 0 {
        ecfg.clock_min_samples = 1;
        ecfg.max_clock_wait_ns = 0;
    }
    let mut engine = Engine::new(ecfg, &files, &links);
    if cfg & 4 != 0 {
        engine.add_alias_group(&[lab_ip(1), lab_ip(5)]);
    }
    let ctx = Context {
        vantages: &vantages,
        files: &files,
        links: &links,
        names: None,
        vrrp: &[],
        garp: &[],
    };
    let mut paths = Vec::new();
    let mut base = 1_000_000_000_000i64;
    for (i, h) in rest.chunks_exact(CORRELATE_RECORD).enumerate() {
        let mut t = transaction(h, i as u64, &mut base);
        // Transactions reach correlation once complete, a little after their end.
        let now = Ts(base + i64::from(h[19] & 0x3c) * MS);
        engine.ingest(&mut t, &vantages, now);
        if h[0] & 4 != 0 {
            let pending = (h[0] & 8 != 0).then_some(Ts(base - MS));
            engine.advance(now, pending, &ctx, &mut |p| paths.push(p));
        }
    }
    let tail = engine.finish(&ctx, &mut |p| paths.push(p));
    let n = paths.len();
    let report = tail.into_report(paths);
    let _ = std::hint::black_box(serde_json::to_string(&report));
    n
}
