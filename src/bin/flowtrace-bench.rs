//! Benchmark helpers, driven by `bench/bench.py`:
//!
//! - `flowtrace-bench gen OUT --size BYTES [--connections N]`: writes a deterministic HTTP capture of
//!   about BYTES: many interleaved keep-alive connections with distinct ports and
//!   sequence numbers (so tshark dissects every one), each with handshake, several
//!   GET/200 exchanges with bodies segmented at the MSS, ACKs and FIN teardown; N
//!   connections (default 512) are open at any time.
//!   Prints the counts it wrote as JSON.
//! - `flowtrace-bench read FILE`: the bare read loop: pcap-parser over the file,
//!   counting frames and bytes, nothing else. Prints them as JSON.
//! - `flowtrace-bench hostile KIND OUT N`: one of issue 17's hostile captures
//!   (`syn-flood`, `frag-flood`, `endless-headers`, `endless-chunked`, `pipelined`,
//!   `gap-never-fills`; N is SYNs, fragments, bytes or requests) between 20 real
//!   requests (`GET /real/K`, answered 200; the floods have 10 more inside, the
//!   fragment flood's in fragments), for `bench/hostile.py`.
//! - `flowtrace-bench exchange-bytes [--segments] [--fat] FILE...`: what one exchange
//!   held by the streaming correlator costs on the heap, measured by this binary's
//!   counting allocator: the captures' transactions are read first, then fed to the
//!   engine (all held, then streamed as `flowtrace pcap --paths` does); with
//!   `--segments` they carry their segment summaries (as with `--svg`), with `--fat`
//!   each request gets a 64 KiB URI, 64 headers of 1 KiB and a 1 KiB
//!   `X-Forwarded-For` (the HTTP stage's bounds). Prints the figures as JSON, with
//!   the engine's own estimate (`Engine::open_bytes`) beside them.

use etherparse::PacketBuilder;
use flowtrace::anomaly::Stats;
use flowtrace::capture::FileSource;
use flowtrace::correlate::{Context, Engine, EngineConfig};
use flowtrace::http::{Headers, HttpTransaction};
use flowtrace::pipeline::{Pipeline, PipelineConfig, Vantage};
use flowtrace::time::Ts;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};

/// A tiny deterministic generator (SplitMix64), so the capture is the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const MSS: usize = 1448;
const BODY: &[u8] = b"flowtrace benchmark body: the quick brown fox jumps over the lazy dog. ";

#[derive(Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    connections: u64,
    transactions: u64,
}

struct Writer {
    out: BufWriter<File>,
    ts_us: u64,
    counts: Counts,
    buf: Vec<u8>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: &str,
        payload: &[u8],
    ) {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, seq, 65535);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'F' => b.fin(),
                'P' => b.psh(),
                'A' => b.ack(ack),
                _ => b,
            };
        }
        self.buf.clear();
        b.write(&mut self.buf, payload).expect("in-memory write");
        self.record();
    }

    /// A TCP segment as `packet` makes it, sent as IPv4 fragments of `size` bytes
    /// (a multiple of 8) with identification `id`.
    #[allow(clippy::too_many_arguments)]
    fn fragmented(
        &mut self,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        payload: &[u8],
        id: u16,
        size: usize,
    ) {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, seq, 65535)
            .psh()
            .ack(ack);
        let mut whole = Vec::new();
        b.write(&mut whole, payload).expect("in-memory write");
        let (head, body) = whole.split_at(34);
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let more = i + 1 < chunks.len();
            self.fragment(head, id, i * size, more, chunk);
        }
    }

    /// One IPv4 fragment: `head` is an Ethernet and IPv4 header (20 bytes) to copy,
    /// `offset` in bytes (a multiple of 8).
    fn fragment(&mut self, head: &[u8], id: u16, offset: usize, more: bool, chunk: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(&head[..34]);
        let ip = &mut self.buf[14..34];
        ip[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        let flags = (if more { 0x2000 } else { 0 }) | (offset / 8) as u16;
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let mut sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        self.buf.extend_from_slice(chunk);
        self.record();
    }

    /// Writes `self.buf` as the next record, 7 µs after the last.
    fn record(&mut self) {
        self.ts_us += 7;
        let (sec, usec) = (
            (self.ts_us / 1_000_000) as u32,
            (self.ts_us % 1_000_000) as u32,
        );
        let len = self.buf.len() as u32;
        for v in [sec, usec, len, len] {
            self.out.write_all(&v.to_le_bytes()).expect("write");
        }
        self.out.write_all(&self.buf).expect("write");
        self.counts.packets += 1;
        self.counts.bytes += 16 + u64::from(len);
    }
}

/// One connection's remaining script, as packets to emit one at a time.
struct Conn {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    cseq: u32,
    sseq: u32,
    step: usize,
    requests_left: u32,
    /// Response bytes still to send in the current exchange.
    body_left: usize,
    uri_id: u64,
}

fn gen(out: &str, size: u64, concurrent: usize) -> ExitCode {
    let file = match File::create(out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flowtrace-bench: cannot create {out}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        ts_us: 1_700_000_000_000_000,
        counts: Counts::default(),
        buf: Vec::with_capacity(2048),
    };
    // pcap global header: LE microseconds, version 2.4, snaplen 65535, Ethernet.
    let header: [u8; 24] = [
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    w.out.write_all(&header).expect("write");
    let mut rng = Rng(42);
    let mut serial: u64 = 0;
    let mut new_conn = |rng: &mut Rng| {
        serial += 1;
        let c = Conn {
            client: (
                [10, (serial >> 16) as u8, (serial >> 8) as u8, serial as u8],
                1024 + (serial % 60000) as u16,
            ),
            server: ([192, 0, 2, 80], 80),
            cseq: rng.next() as u32,
            sseq: rng.next() as u32,
            step: 0,
            requests_left: rng.range(1, 12) as u32,
            body_left: 0,
            uri_id: serial,
        };
        (c, serial)
    };
    let mut conns: Vec<Conn> = (0..concurrent.max(1))
        .map(|_| new_conn(&mut rng).0)
        .collect();
    let body = BODY.repeat(MSS / BODY.len() + 1);
    let mut i = 0usize;
    while w.counts.bytes < size {
        i = (i + rng.range(1, 7) as usize) % conns.len();
        let c = &mut conns[i];
        let (cl, sv) = (c.client, c.server);
        match c.step {
            0 => {
                w.packet(cl, sv, c.cseq, 0, "S", b"");
                c.cseq = c.cseq.wrapping_add(1);
                c.step = 1;
            }
            1 => {
                w.packet(sv, cl, c.sseq, c.cseq, "SA", b"");
                c.sseq = c.sseq.wrapping_add(1);
                c.step = 2;
            }
            2 => {
                w.packet(cl, sv, c.cseq, c.sseq, "A", b"");
                c.step = 3;
                w.counts.connections += 1;
            }
            3 => {
                // A request.
                c.uri_id += 1;
                let req = format!(
                    "GET /api/items/{}?page={} HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: flowtrace-bench\r\nAccept: */*\r\nX-Request-ID: {:016x}\r\n\r\n",
                    c.uri_id,
                    c.uri_id % 97,
                    c.uri_id.wrapping_mul(0x9e37_79b9)
                );
                w.packet(cl, sv, c.cseq, c.sseq, "PA", req.as_bytes());
                c.cseq = c.cseq.wrapping_add(req.len() as u32);
                c.body_left = rng.range(100, 12_000) as usize;
                c.step = 4;
            }
            4 => {
                // Response headers with the first body bytes.
                let head = format!(
                    "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                    c.body_left
                );
                let first = c.body_left.min(MSS - head.len());
                let mut seg = head.into_bytes();
                seg.extend_from_slice(&body[..first]);
                w.packet(sv, cl, c.sseq, c.cseq, "PA", &seg);
                c.sseq = c.sseq.wrapping_add(seg.len() as u32);
                c.body_left -= first;
                c.step = if c.body_left > 0 { 5 } else { 6 };
            }
            5 => {
                let n = c.body_left.min(MSS);
                w.packet(sv, cl, c.sseq, c.cseq, "A", &body[..n]);
                c.sseq = c.sseq.wrapping_add(n as u32);
                c.body_left -= n;
                if c.body_left == 0 {
                    c.step = 6;
                }
            }
            6 => {
                // The client acknowledges the response.
                w.packet(cl, sv, c.cseq, c.sseq, "A", b"");
                w.counts.transactions += 1;
                c.requests_left -= 1;
                c.step = if c.requests_left == 0 { 7 } else { 3 };
            }
            7 => {
                w.packet(cl, sv, c.cseq, c.sseq, "FA", b"");
                c.cseq = c.cseq.wrapping_add(1);
                c.step = 8;
            }
            8 => {
                w.packet(sv, cl, c.sseq, c.cseq, "FA", b"");
                c.sseq = c.sseq.wrapping_add(1);
                c.step = 9;
            }
            _ => {
                w.packet(cl, sv, c.cseq, c.sseq, "A", b"");
                *c = new_conn(&mut rng).0;
            }
        }
    }
    w.out.flush().expect("flush");
    let c = &w.counts;
    println!(
        "{{\"file\":{:?},\"packets\":{},\"bytes\":{},\"connections_opened\":{},\"transactions\":{}}}",
        out, c.packets, c.bytes, c.connections, c.transactions
    );
    ExitCode::SUCCESS
}

fn read(path: &str) -> ExitCode {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flowtrace-bench: cannot open {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut reader = match LegacyPcapReader::new(4 << 20, file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flowtrace-bench: {path}: {e:?}");
            return ExitCode::from(2);
        }
    };
    let (mut frames, mut bytes) = (0u64, 0u64);
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                if let PcapBlockOwned::Legacy(b) = block {
                    frames += 1;
                    bytes += b.data.len() as u64;
                }
                reader.consume_noshift(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    break;
                }
            }
            Err(e) => {
                eprintln!("flowtrace-bench: {path}: {e:?}");
                return ExitCode::from(2);
            }
        }
    }
    println!("{{\"frames\":{frames},\"bytes\":{bytes}}}");
    ExitCode::SUCCESS
}

/// A real request on its own connection (client 10.9.K.K), answered 200.
fn real_request(w: &mut Writer, k: u16) {
    real_request_as(w, k, false);
}

/// As [`real_request`]; `fragmented`: the request's segment is sent in IPv4
/// fragments of 16 bytes.
fn real_request_as(w: &mut Writer, k: u16, fragmented: bool) {
    let c = ([10, 9, (k >> 8) as u8, k as u8], 50000 + k);
    let s = ([192, 0, 2, 80], 80);
    let req = format!("GET /real/{k} HTTP/1.1\r\nHost: app\r\n\r\n");
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Sequence numbers of their own, as real ISNs are: correlation joins views of
    // one exchange by them.
    // (far from the sequence numbers of the attacks' connections).
    let (cs, ss) = (
        0x8000_0000 + u32::from(k) * 100_003,
        0xc000_0000 + u32::from(k) * 70_001,
    );
    w.packet(c, s, cs, 0, "S", b"");
    w.packet(s, c, ss, cs + 1, "SA", b"");
    w.packet(c, s, cs + 1, ss + 1, "A", b"");
    if fragmented {
        w.fragmented(c, s, cs + 1, ss + 1, req.as_bytes(), 0x7000 + k, 16);
    } else {
        w.packet(c, s, cs + 1, ss + 1, "PA", req.as_bytes());
    }
    let cend = cs + 1 + req.len() as u32;
    w.packet(s, c, ss + 1, cend, "PA", resp);
    let send = ss + 1 + resp.len() as u32;
    w.packet(c, s, cend, send, "FA", b"");
    w.packet(s, c, send, cend + 1, "FA", b"");
    w.packet(c, s, cend + 1, send + 1, "A", b"");
    w.counts.connections += 1;
    w.counts.transactions += 1;
}

/// Writes `data` from `src` to `dst` in MSS segments starting at `*seq`.
fn stream(
    w: &mut Writer,
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: &mut u32,
    ack: u32,
    data: &[u8],
) {
    for part in data.chunks(MSS) {
        w.packet(src, dst, *seq, ack, "PA", part);
        *seq = seq.wrapping_add(part.len() as u32);
    }
}

/// The client and server of the hostile captures' own connection.
const HOSTILE_CLIENT: ([u8; 4], u16) = ([10, 66, 0, 1], 40000);
const HOSTILE_SERVER: ([u8; 4], u16) = ([192, 0, 2, 80], 80);

/// Issue 17's hostile captures, each between 10 real requests before and 10 after;
/// the floods carry 10 more inside them (30 in all).
fn hostile(kind: &str, out: &str, n: u64) -> ExitCode {
    let (attack, flood): (fn(&mut Writer, u64), bool) = match kind {
        "syn-flood" => (syn_flood, true),
        "frag-flood" => (frag_flood, true),
        "endless-headers" => (endless_headers, false),
        "endless-chunked" => (endless_chunked, false),
        "pipelined" => (pipelined, false),
        "gap-never-fills" => (gap_never_fills, false),
        _ => {
            eprintln!("flowtrace-bench: unknown hostile kind {kind}");
            return ExitCode::from(2);
        }
    };
    let file = match File::create(out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flowtrace-bench: cannot create {out}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        ts_us: 1_700_000_000_000_000,
        counts: Counts::default(),
        buf: Vec::with_capacity(2048),
    };
    let header: [u8; 24] = [
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    w.out.write_all(&header).expect("write");
    for k in 0..10 {
        real_request(&mut w, k);
    }
    attack(&mut w, n);
    // A flood wrote requests 10 to 19 inside itself.
    let real: u16 = if flood { 30 } else { 20 };
    for k in real - 10..real {
        real_request(&mut w, k);
    }
    w.out.flush().expect("write");
    let c = &w.counts;
    println!(
        "{{\"file\":\"{out}\",\"kind\":\"{kind}\",\"packets\":{},\"bytes\":{},\"real_requests\":{real}}}",
        c.packets, c.bytes,
    );
    ExitCode::SUCCESS
}

/// The hostile connection's three-way handshake; its next client and server sequence
/// numbers.
fn handshake(w: &mut Writer) -> (u32, u32) {
    let (c, s) = (HOSTILE_CLIENT, HOSTILE_SERVER);
    let (cseq, sseq) = (5000u32, 7000u32);
    w.packet(c, s, cseq, 0, "S", b"");
    w.packet(s, c, sseq, cseq + 1, "SA", b"");
    w.packet(c, s, cseq + 1, sseq + 1, "A", b"");
    (cseq + 1, sseq + 1)
}

/// The `i`th flood source address.
fn flood_source(i: u64) -> [u8; 4] {
    [
        198,
        18 + (i >> 24) as u8 % 2,
        (i >> 16) as u8,
        (i >> 8) as u8,
    ]
}

/// Whether the `i`th of `n` flood packets is followed by real request 10 + k (one
/// every n/10, ten in all).
fn real_inside(i: u64, n: u64) -> bool {
    n >= 10 && i % (n / 10) == n / 20 && i / (n / 10) < 10
}

/// `n` SYNs from `n` sources, never answered.
fn syn_flood(w: &mut Writer, n: u64) {
    let mut real = 10;
    for i in 0..n {
        let src = (flood_source(i), 1024 + (i % 64000) as u16);
        w.packet(
            src,
            HOSTILE_SERVER,
            (i as u32).wrapping_mul(2_654_435_761),
            0,
            "S",
            b"",
        );
        if real_inside(i, n) {
            real_request(w, real);
            real += 1;
        }
    }
}

/// `n` first fragments of datagrams that never complete, each at the far end of a
/// 64 KiB datagram (the most a reassembler may have to hold for 8 bytes), from `n`
/// sources; the real requests inside have their request segments in fragments.
fn frag_flood(w: &mut Writer, n: u64) {
    let mut real = 10;
    let mut head = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([198, 18, 0, 0], HOSTILE_SERVER.0, 64)
        .tcp(1024, HOSTILE_SERVER.1, 0, 65535)
        .write(&mut head, b"")
        .expect("in-memory write");
    for i in 0..n {
        // The source address: bytes 26..30 of an Ethernet + IPv4 header.
        head[26..30].copy_from_slice(&flood_source(i));
        w.fragment(&head, i as u16, 65_520, true, &[0xee; 8]);
        if real_inside(i, n) {
            real_request_as(w, real, true);
            real += 1;
        }
    }
}

/// One request whose header block never ends (`n` bytes of 2 kB lines).
fn endless_headers(w: &mut Writer, n: u64) {
    let (mut cs, ss) = handshake(w);
    let mut block = b"GET /endless-headers HTTP/1.1\r\nHost: app\r\n".to_vec();
    let mut i = 0u64;
    while (block.len() as u64) < n {
        block.extend_from_slice(format!("X-Filler-{i:08}: {}\r\n", "a".repeat(2000)).as_bytes());
        i += 1;
    }
    stream(w, HOSTILE_CLIENT, HOSTILE_SERVER, &mut cs, ss, &block);
}

/// One chunked response of `n` bytes that never ends.
fn endless_chunked(w: &mut Writer, n: u64) {
    let (mut cs, mut ss) = handshake(w);
    let req = b"GET /endless-chunked HTTP/1.1\r\nHost: app\r\n\r\n";
    stream(w, HOSTILE_CLIENT, HOSTILE_SERVER, &mut cs, ss, req);
    let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    while (body.len() as u64) < n {
        body.extend_from_slice(b"400\r\n");
        body.extend_from_slice(&[b'c'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    stream(w, HOSTILE_SERVER, HOSTILE_CLIENT, &mut ss, cs, &body);
}

/// `n` tiny requests in batches of 500 (within the per-connection bound of requests
/// awaiting a response), each batch then answered.
fn pipelined(w: &mut Writer, n: u64) {
    let (mut cs, mut ss) = handshake(w);
    let mut sent = 0u64;
    while sent < n {
        let batch = (n - sent).min(500);
        let mut reqs = Vec::new();
        let mut resps = Vec::new();
        for j in 0..batch {
            reqs.extend_from_slice(format!("GET /p/{} HTTP/1.1\r\n\r\n", sent + j).as_bytes());
            resps.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
        }
        stream(w, HOSTILE_CLIENT, HOSTILE_SERVER, &mut cs, ss, &reqs);
        stream(w, HOSTILE_SERVER, HOSTILE_CLIENT, &mut ss, cs, &resps);
        sent += batch;
    }
    w.counts.transactions += n;
}

/// A response of `n` bytes whose first body segment is lost and never retransmitted
/// in the capture, and which the client never acknowledges past.
fn gap_never_fills(w: &mut Writer, n: u64) {
    let (c, s) = (HOSTILE_CLIENT, HOSTILE_SERVER);
    let (mut cs, mut ss) = handshake(w);
    let req = b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n";
    stream(w, c, s, &mut cs, ss, req);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
    stream(w, s, c, &mut ss, cs, head.as_bytes());
    let hole = ss;
    ss = ss.wrapping_add(MSS as u32);
    let mut left = n.saturating_sub(MSS as u64);
    let chunk = [b'g'; MSS];
    while left > 0 {
        let k = left.min(MSS as u64) as usize;
        w.packet(s, c, ss, cs, "PA", &chunk[..k]);
        ss = ss.wrapping_add(k as u32);
        left -= k as u64;
        if left.is_multiple_of(64 * MSS as u64) {
            w.packet(c, s, cs, hole, "A", b"");
        }
    }
}

/// The system allocator, counting the bytes live (as requested, the allocator's
/// rounding aside): what `exchange-bytes` measures with.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is passed on to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Transactions completed between two points where the streaming reader hands a
/// batch to correlation, with that point's watermark and pending floor.
struct Batch {
    transactions: Vec<HttpTransaction>,
    now: Ts,
    pending: Option<Ts>,
}

/// Makes a request as large as the HTTP stage lets one be: a 64 KiB URI, 64 headers
/// of 1 KiB values, one an `X-Forwarded-For` of as many addresses as fit.
fn fatten(t: &mut HttpTransaction, k: usize) {
    let Some(r) = &mut t.request else { return };
    r.uri = format!("/fat/{k}/{}", "u".repeat(64 << 10));
    let mut h = Headers::default();
    let xff: Vec<String> = (0..128)
        .map(|i| format!("10.{}.{}.{}", k % 250, i, 1))
        .collect();
    let mut xff = xff.join(",");
    xff.truncate(1024);
    if let Some(cut) = xff.rfind(',') {
        xff.truncate(cut);
    }
    h.push(b"X-Forwarded-For", xff.as_bytes());
    for i in 0..63 {
        h.push(format!("X-Fat-{i}").as_bytes(), "v".repeat(1024).as_bytes());
    }
    r.headers = h;
}

/// `exchange-bytes`: see the module doc.
fn exchange_bytes(files: &[String], segments: bool, fat: bool) -> ExitCode {
    let mut source = match FileSource::open(files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flowtrace-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let max_wait = EngineConfig::default().max_request_duration_ns;
    let mut pipeline = Pipeline::new(PipelineConfig {
        keep_segments: segments,
        ..PipelineConfig::default()
    });
    let mut stats = Stats::default();
    let mut batches: Vec<Batch> = Vec::new();
    let mut now = Ts(i64::MIN);
    let mut frames = 0u64;
    let mut done = false;
    while !done {
        match source.next_frame(&mut stats) {
            Ok(Some((frame, interfaces))) => {
                pipeline.push(&frame, interfaces);
                now = now.max(frame.ts);
                frames += 1;
            }
            Ok(None) => {
                pipeline.finish();
                done = true;
            }
            Err(e) => {
                eprintln!("flowtrace-bench: {e}");
                return ExitCode::from(2);
            }
        }
        if done || frames.is_multiple_of(4096) {
            let pending = pipeline.pending_floor(now, max_wait);
            let mut transactions: Vec<HttpTransaction> = pipeline.drain().collect();
            if fat {
                for (k, t) in transactions.iter_mut().enumerate() {
                    fatten(t, k);
                }
            }
            batches.push(Batch {
                transactions,
                now,
                pending,
            });
        }
    }
    let vantages: Vec<Vantage> = pipeline.vantages().to_vec();
    let (vrrp, garp) = (
        pipeline.vrrp().to_vec(),
        pipeline.gratuitous_arps().to_vec(),
    );
    drop(pipeline);
    let names: Vec<String> = files.to_vec();
    let links = vec![None; files.len()];
    let ctx = Context {
        vantages: &vantages,
        files: &names,
        links: &links,
        names: None,
        vrrp: &vrrp,
        garp: &garp,
    };
    let unbounded = EngineConfig {
        max_open_exchanges: usize::MAX,
        max_open_bytes: usize::MAX,
        ..EngineConfig::default()
    };
    let views: usize = batches.iter().map(|b| b.transactions.len()).sum();

    // Every exchange held: ingested, never advanced.
    let base = live();
    let mut engine = Engine::new(unbounded.clone(), &names, &links);
    for b in &batches {
        for t in &b.transactions {
            let mut copy = t.clone();
            engine.ingest(&mut copy, &vantages, b.now);
        }
    }
    let held_heap = live() - base;
    let held = engine.open_exchanges();
    let held_accounted = engine.open_bytes();
    drop(engine);

    // Streamed: ingested and advanced batch by batch, paths emitted and dropped;
    // the heap sampled after each batch.
    let base = live();
    let mut engine = Engine::new(unbounded, &names, &links);
    let mut peak = (0isize, 0usize, 0usize);
    let mut paths = 0usize;
    for b in &batches {
        for t in &b.transactions {
            let mut copy = t.clone();
            engine.ingest(&mut copy, &vantages, b.now);
        }
        let heap = live() - base;
        if heap > peak.0 {
            peak = (heap, engine.open_exchanges(), engine.open_bytes());
        }
        engine.advance(b.now, b.pending, &ctx, &mut |_| paths += 1);
    }
    engine.finish(&ctx, &mut |_| paths += 1);
    let per = |bytes: isize, n: usize| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
    println!(
        "{{\"files\":{},\"frames\":{frames},\"views\":{views},\"segments\":{segments},\"fat\":{fat},\
         \"held\":{{\"exchanges\":{held},\"heap_bytes\":{held_heap},\"bytes_per_exchange\":{:.1},\
         \"accounted_bytes\":{held_accounted},\"accounted_per_exchange\":{:.1}}},\
         \"streamed\":{{\"paths\":{paths},\"peak_heap_bytes\":{},\"open_exchanges_at_peak\":{},\
         \"bytes_per_exchange_at_peak\":{:.1},\"accounted_at_peak\":{}}}}}",
        files.len(),
        per(held_heap, held),
        per(held_accounted as isize, held),
        peak.0,
        peak.1,
        per(peak.0, peak.1),
        peak.2,
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") if args.len() >= 3 => {
            let size = args
                .iter()
                .position(|a| a == "--size")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| parse_size(s))
                .unwrap_or(64 << 20);
            let connections = args
                .iter()
                .position(|a| a == "--connections")
                .and_then(|i| args.get(i + 1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(512);
            gen(&args[2], size, connections)
        }
        Some("read") if args.len() == 3 => read(&args[2]),
        Some("exchange-bytes") if args.len() >= 3 => {
            let files: Vec<String> = args[2..]
                .iter()
                .filter(|a| !a.starts_with("--"))
                .cloned()
                .collect();
            let flag = |f: &str| args[2..].iter().any(|a| a == f);
            exchange_bytes(&files, flag("--segments"), flag("--fat"))
        }
        Some("hostile") if args.len() == 5 => match parse_size(&args[4]) {
            Some(n) => hostile(&args[2], &args[3], n),
            None => {
                eprintln!("flowtrace-bench: N must be a number (K, M, G allowed)");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("usage: flowtrace-bench gen OUT [--size BYTES|64M|1G] [--connections N] | flowtrace-bench read FILE | flowtrace-bench hostile KIND OUT N | flowtrace-bench exchange-bytes [--segments] [--fat] FILE...");
            ExitCode::from(2)
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}
