//! HTTP behind the encapsulations and proxies the decoders' last gaps were about
//! (issue 17): ERSPAN types I to III over GRE, the NFLOG link type, SOCKS 4/4a/5, and
//! requests after reassembly gaps. Each test builds its capture here, checks what
//! flowtrace finds against what the capture was built to hold, and, when tshark is
//! installed, against tshark's HTTP messages on the same file (parity). Without
//! tshark the parity half says it skipped; the first half still runs.

use crate::util::{flowtrace, temp_dir, Doc};
use etherparse::{IpNumber, PacketBuilder};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A pcap file being built: microseconds, little-endian unless `big_endian` (as
/// written on a big-endian host).
pub struct Pcap {
    linktype: u32,
    frames: Vec<Vec<u8>>,
    pub big_endian: bool,
}

impl Pcap {
    pub fn new(linktype: u32) -> Pcap {
        Pcap {
            linktype,
            frames: Vec::new(),
            big_endian: false,
        }
    }

    pub fn push(&mut self, frame: Vec<u8>) {
        self.frames.push(frame);
    }

    /// Writes the file, one frame every millisecond.
    pub fn write(&self, path: &Path) {
        let mut out = Vec::new();
        let be = self.big_endian;
        let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        out.extend_from_slice(&u32b(0xa1b2_c3d4));
        out.extend_from_slice(&u16b(2));
        out.extend_from_slice(&u16b(4));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&u32b(262_144));
        out.extend_from_slice(&u32b(self.linktype));
        for (i, f) in self.frames.iter().enumerate() {
            let t = 1_700_000_000_000_000u64 + i as u64 * 1000;
            for v in [
                (t / 1_000_000) as u32,
                (t % 1_000_000) as u32,
                f.len() as u32,
                f.len() as u32,
            ] {
                out.extend_from_slice(&u32b(v));
            }
            out.extend_from_slice(f);
        }
        std::fs::write(path, out).unwrap();
    }
}

/// One TCP connection's IPv4 packets: handshake, the given segments (from the
/// client when `true`) with sequence and acknowledgement numbers kept, and the
/// teardown. A segment given as `None` is sent on the wire but left out of the
/// capture (a packet the capture lost).
pub struct Conn {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    seq: [u32; 2],
    /// Where each side's last segment started (for retransmissions).
    last_start: [u32; 2],
    pub packets: Vec<Vec<u8>>,
}

impl Conn {
    pub fn new(client: ([u8; 4], u16), server: ([u8; 4], u16)) -> Conn {
        Conn::with_isn(client, server, [1000, 5000])
    }

    /// As [`Conn::new`], with the client's and the server's initial sequence numbers
    /// (correlation joins the views of one exchange by them: distinct connections
    /// of one run need their own, as real ones have).
    pub fn with_isn(client: ([u8; 4], u16), server: ([u8; 4], u16), isn: [u32; 2]) -> Conn {
        let mut c = Conn {
            client,
            server,
            seq: isn,
            last_start: isn,
            packets: Vec::new(),
        };
        c.packet(true, "S", b"", true);
        c.packet(false, "SA", b"", true);
        c.packet(true, "A", b"", true);
        c
    }

    fn packet(&mut self, from_client: bool, flags: &str, payload: &[u8], captured: bool) {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let me = usize::from(!from_client);
        let ack = self.seq[1 - me];
        let mut b = PacketBuilder::ipv4(src.0, dst.0, 64).tcp(src.1, dst.1, self.seq[me], 64000);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(ack),
                'P' => b.psh(),
                'F' => b.fin(),
                _ => b,
            };
        }
        let mut pkt = Vec::new();
        b.write(&mut pkt, payload).unwrap();
        self.last_start[me] = self.seq[me];
        let consumed = payload.len() as u32 + u32::from(flags.contains('S') || flags.contains('F'));
        self.seq[me] = self.seq[me].wrapping_add(consumed);
        if captured {
            self.packets.push(pkt);
        }
    }

    /// Data from one side, cut into segments of at most `mss` bytes.
    pub fn send(&mut self, from_client: bool, data: &[u8], mss: usize) -> &mut Conn {
        for part in data.chunks(mss) {
            self.packet(from_client, "PA", part, true);
        }
        self
    }

    /// A copy of one side's last segment, with `data` as its payload (the same
    /// bytes, or conflicting ones).
    pub fn retransmit(&mut self, from_client: bool, data: &[u8]) -> &mut Conn {
        let me = usize::from(!from_client);
        let after = self.seq[me];
        self.seq[me] = self.last_start[me];
        self.packet(from_client, "PA", data, true);
        self.seq[me] = after;
        self
    }

    /// Data from one side that the capture lost.
    pub fn lose(&mut self, from_client: bool, data: &[u8]) -> &mut Conn {
        self.packet(from_client, "PA", data, false);
        self
    }

    /// FIN from both sides.
    pub fn close(&mut self) -> Vec<Vec<u8>> {
        self.packet(true, "FA", b"", true);
        self.packet(false, "FA", b"", true);
        self.packet(true, "A", b"", true);
        std::mem::take(&mut self.packets)
    }
}

pub fn ethernet(ip: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    let ether_type: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(ip);
    v
}

/// An Ethernet frame from a switch (192.0.2.1) to a collector (192.0.2.2) carrying
/// `gre` (a GRE header and its payload).
fn outer_gre(gre: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
        .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 255)
        .write(&mut out, IpNumber::GRE, gre)
        .unwrap();
    out
}

/// ERSPAN type II: GRE with a sequence number, protocol 0x88BE, an 8-byte header
/// (version 1, VLAN 0, session 7, index 3), then the mirrored Ethernet frame.
fn erspan2(seq: u32, ip: &[u8]) -> Vec<u8> {
    let mut gre = vec![0x10, 0x00, 0x88, 0xbe];
    gre.extend_from_slice(&seq.to_be_bytes());
    gre.extend_from_slice(&[0x10, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x03]);
    gre.extend(ethernet(ip));
    outer_gre(&gre)
}

/// ERSPAN type III: GRE with a sequence number, protocol 0x22EB, a 12-byte header
/// (version 2, session 7, a timestamp, frame type 0 = Ethernet), with the 8-byte
/// platform subheader when `subheader` (the O bit), then the mirrored frame.
fn erspan3(seq: u32, ip: &[u8], subheader: bool) -> Vec<u8> {
    let mut gre = vec![0x10, 0x00, 0x22, 0xeb];
    gre.extend_from_slice(&seq.to_be_bytes());
    gre.extend_from_slice(&[0x20, 0x00, 0x00, 0x07]);
    gre.extend_from_slice(&seq.wrapping_mul(977).to_be_bytes());
    gre.extend_from_slice(&[0x00, 0x00, 0x00, u8::from(subheader)]);
    if subheader {
        gre.extend_from_slice(&[0x0c, 0, 0, 0x05, 0, 0, 0, 0]);
    }
    gre.extend(ethernet(ip));
    outer_gre(&gre)
}

/// An NFLOG record (family AF_INET, resource 5): a packet header TLV, a prefix TLV
/// and the payload TLV, in little- or big-endian TLV order.
fn nflog(ip: &[u8], little_endian: bool) -> Vec<u8> {
    let tlv = |kind: u16, value: &[u8]| {
        let len = (value.len() + 4) as u16;
        let mut v = if little_endian {
            [len.to_le_bytes(), kind.to_le_bytes()].concat()
        } else {
            [len.to_be_bytes(), kind.to_be_bytes()].concat()
        };
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    };
    let mut v = vec![2, 0, 0, 5];
    v.extend(tlv(1, &[0x08, 0x00, 3, 0]));
    v.extend(tlv(10, b"nat-in\0"));
    v.extend(tlv(9, ip));
    v
}

/// The `decode_frame` fuzz target reaches the NFLOG decoder: its selector byte picks
/// link type 239, and two NFLOG frames (split at the target's frame marker) decode
/// to two TCP segments, in both TLV byte orders; a cut-off NFLOG header is counted.
#[test]
fn decode_frame_fuzz_target_reaches_nflog() {
    use flowtrace::fuzzing::{decode_frame, DECODE_LINKS, FRAME_MARKER};
    let sel = DECODE_LINKS
        .iter()
        .position(|l| *l == 239)
        .expect("NFLOG is fuzzed") as u8;
    let (packets, _) = two_exchanges(CLIENT);
    for le in [true, false] {
        let mut input = vec![sel];
        input.extend(nflog(&packets[0], le));
        input.extend_from_slice(FRAME_MARKER);
        input.extend(nflog(&packets[1], le));
        let stats = decode_frame(&input);
        assert_eq!(
            (stats.tcp_segments, stats.unknown_linktype),
            (2, 0),
            "{stats:?}"
        );
    }
    let stats = decode_frame(&[sel, 2, 0]);
    assert_eq!((stats.link_truncated, stats.tcp_segments), (1, 0));
}

/// (client, server, method, uri) of each request and (client, server, status) of
/// each response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Messages {
    pub requests: Vec<(String, String, String, String)>,
    pub responses: Vec<(String, String, u16)>,
}

impl Messages {
    fn sorted(mut self) -> Messages {
        self.requests.sort();
        self.responses.sort();
        self
    }
}

pub fn flowtrace_messages(file: &Path) -> (Messages, Doc) {
    let run = flowtrace([
        "pcap".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        file.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc: Doc = serde_json::from_str(&run.stdout).unwrap();
    let mut m = Messages::default();
    for t in &doc.transactions {
        if let (Some(method), Some(uri)) = (&t.method, &t.uri) {
            m.requests.push((
                t.client.clone(),
                t.server.clone(),
                method.clone(),
                uri.clone(),
            ));
        }
        if let Some(s) = t.status {
            m.responses.push((t.client.clone(), t.server.clone(), s));
        }
    }
    (m.sorted(), doc)
}

/// tshark's HTTP messages in `file` (innermost IP addresses), or `None` when tshark is
/// not installed. `decode_as` are extra `-d` rules.
pub fn tshark_messages(file: &Path, decode_as: &[&str]) -> Option<Messages> {
    if Command::new("tshark").arg("-v").output().is_err() {
        eprintln!("\n*** tshark parity SKIPPED: tshark is not installed ***\n");
        return None;
    }
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(file);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args([
        "-Y",
        "http.request or http.response",
        "-T",
        "fields",
        "-E",
        "occurrence=l",
        "-e",
        "ip.src",
        "-e",
        "tcp.srcport",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.response.code",
    ]);
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = Messages::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (src, dst) = (format!("{}:{}", f[0], f[1]), format!("{}:{}", f[2], f[3]));
        if !f[4].is_empty() {
            m.requests
                .push((src, dst, f[4].to_string(), f[5].to_string()));
        } else if let Ok(code) = f[6].parse() {
            m.responses.push((dst, src, code));
        }
    }
    Some(m.sorted())
}

/// Asserts flowtrace finds `expected`, and that tshark (when present) agrees.
fn check(file: &Path, expected: &Messages, decode_as: &[&str]) -> Doc {
    let (found, doc) = flowtrace_messages(file);
    assert_eq!(&found, expected, "flowtrace on {}", file.display());
    if let Some(t) = tshark_messages(file, decode_as) {
        assert_eq!(&t, expected, "tshark on {}", file.display());
    }
    doc
}

const CLIENT: ([u8; 4], u16) = ([10, 1, 0, 5], 41000);
const SERVER: ([u8; 4], u16) = ([10, 2, 0, 9], 80);

/// Two keep-alive exchanges between CLIENT and SERVER; the second response spans
/// three segments.
fn two_exchanges(client: ([u8; 4], u16)) -> (Vec<Vec<u8>>, Messages) {
    let body = "b".repeat(3000);
    let resp2 = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let packets = Conn::new(client, SERVER)
        .send(true, b"GET /mirror/a HTTP/1.1\r\nHost: app\r\n\r\n", 1400)
        .send(
            false,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            1400,
        )
        .send(true, b"GET /mirror/b HTTP/1.1\r\nHost: app\r\n\r\n", 1400)
        .send(false, resp2.as_bytes(), 1400)
        .close();
    let c = format!(
        "{}.{}.{}.{}:{}",
        client.0[0], client.0[1], client.0[2], client.0[3], client.1
    );
    let s = "10.2.0.9:80".to_string();
    let expected = Messages {
        requests: vec![
            (c.clone(), s.clone(), "GET".into(), "/mirror/a".into()),
            (c.clone(), s.clone(), "GET".into(), "/mirror/b".into()),
        ],
        responses: vec![(c.clone(), s.clone(), 200), (c, s, 404)],
    }
    .sorted();
    (packets, expected)
}

fn file(dir: &str, name: &str) -> PathBuf {
    temp_dir(dir).join(name)
}

#[test]
fn erspan_type_ii_and_iii_over_gre() {
    for (name, variant) in [("erspan2", 2), ("erspan3", 3), ("erspan3-subheader", 4)] {
        let (packets, expected) = two_exchanges(CLIENT);
        let mut pcap = Pcap::new(1);
        for (i, p) in packets.iter().enumerate() {
            pcap.push(match variant {
                2 => erspan2(i as u32, p),
                3 => erspan3(i as u32, p, false),
                _ => erspan3(i as u32, p, true),
            });
        }
        let path = file(&format!("encap-{name}"), &format!("{name}.pcap"));
        pcap.write(&path);
        let doc = check(&path, &expected, &[]);
        assert_eq!(doc.stat("gre_decapsulated"), packets.len() as u64, "{name}");
        assert_eq!(doc.stat("tunnel_malformed"), 0, "{name}");
    }
}

/// Splits the IPv4 packet inside an Ethernet frame into fragments whose payloads
/// hold at most `size` bytes (a multiple of 8), each with its own Ethernet header,
/// in reverse order when `reverse` (reassembly must not depend on arrival order).
fn fragment_ipv4(frame: &[u8], size: usize, reverse: bool) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let (header, payload) = ip.split_at(ihl);
    let mut out: Vec<Vec<u8>> = payload
        .chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let mut h = header.to_vec();
            let more = (i + 1) * size < payload.len();
            let field = ((i * size / 8) as u16) | if more { 0x2000 } else { 0 };
            h[2..4].copy_from_slice(&((ihl + chunk.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
            h[6..8].copy_from_slice(&field.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let sum = h
                .chunks(2)
                .fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
            let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            [eth, &h, chunk].concat()
        })
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

/// ERSPAN inside a fragmented outer IPv4 datagram (a mirror session's MTU below
/// the mirrored frames plus their GRE and ERSPAN headers): the outer datagram is
/// reassembled, then the mirrored frame inside it decoded, with tshark parity.
#[test]
fn erspan_over_gre_in_ip_fragments() {
    let (packets, expected) = two_exchanges(CLIENT);
    let mut pcap = Pcap::new(1);
    let mut fragmented = 0u64;
    for (i, p) in packets.iter().enumerate() {
        let frame = if i % 2 == 0 {
            erspan2(i as u32, p)
        } else {
            erspan3(i as u32, p, true)
        };
        let frags = fragment_ipv4(&frame, 512, i % 3 == 1);
        if frags.len() > 1 {
            fragmented += 1;
        }
        for f in frags {
            pcap.push(f);
        }
    }
    assert!(fragmented >= 2, "the test fragments some datagrams");
    let path = file("encap-erspan-fragments", "erspan-fragments.pcap");
    pcap.write(&path);
    let doc = check(&path, &expected, &[]);
    assert_eq!(doc.stat("gre_decapsulated"), packets.len() as u64);
    assert_eq!(doc.stat("ip_reassembled"), fragmented);
    assert_eq!(doc.stat("tunnel_malformed"), 0);
    assert_eq!(doc.stat("ip_fragments_dropped"), 0);
}

/// NFLOG's TLVs are in the capturing host's byte order; the file's own byte order
/// is that host's too (tshark reads the TLVs by it), flowtrace by which order makes
/// the TLV list consistent.
#[test]
fn nflog_link_type_in_both_tlv_byte_orders() {
    for le in [true, false] {
        let (packets, expected) = two_exchanges(CLIENT);
        let mut pcap = Pcap::new(239);
        pcap.big_endian = !le;
        for p in &packets {
            pcap.push(nflog(p, le));
        }
        // A record without a packet (a rule logging metadata only) is counted.
        let mut meta_only = vec![2, 0, 0, 5];
        meta_only.extend_from_slice(&if le { [8, 0, 10, 0] } else { [0, 8, 0, 10] });
        meta_only.extend_from_slice(b"log\0");
        pcap.push(meta_only);
        let name = if le { "nflog-le" } else { "nflog-be" };
        let path = file(name, &format!("{name}.pcap"));
        pcap.write(&path);
        let doc = check(&path, &expected, &[]);
        assert_eq!(doc.stat("nflog_no_payload"), 1);
        assert_eq!(doc.stat("link_truncated"), 0);
    }
}

/// A request whose first segment the capture lost, acknowledged by the server, then
/// a request whose request line (a 2500-byte URI) is longer than a segment: flowtrace
/// resynchronises on it after the gap, as tshark does.
#[test]
fn request_after_gap_with_request_line_longer_than_a_segment() {
    let long_uri = format!("/ad?kv={}", "x".repeat(2500));
    let long_req = format!("GET {long_uri} HTTP/1.1\r\nHost: ads\r\n\r\n");
    for (linktype, name) in [(1u32, "gap-eth"), (101, "gap-raw"), (228, "gap-ipv4")] {
        let mut conn = Conn::new(CLIENT, SERVER);
        conn.send(true, b"GET /first HTTP/1.1\r\nHost: ads\r\n\r\n", 1200)
            .send(
                false,
                b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n",
                1200,
            )
            .lose(true, b"GET /lost HTTP/1.1\r\nHost: ads\r\nX-Pad: ")
            .send(true, &[b'p'; 700], 1200)
            .send(true, b"\r\n\r\n", 1200)
            .send(false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1200)
            .send(true, long_req.as_bytes(), 1200)
            .send(false, b"HTTP/1.1 204 No Content\r\n\r\n", 1200);
        let packets = conn.close();
        let mut pcap = Pcap::new(linktype);
        for p in &packets {
            pcap.push(if linktype == 1 {
                ethernet(p)
            } else {
                p.clone()
            });
        }
        let path = file(name, &format!("{name}.pcap"));
        pcap.write(&path);
        let (c, s) = ("10.1.0.5:41000".to_string(), "10.2.0.9:80".to_string());
        let (found, doc) = flowtrace_messages(&path);
        let uris: Vec<&str> = found.requests.iter().map(|r| r.3.as_str()).collect();
        assert!(uris.contains(&long_uri.as_str()), "{name}: {uris:?}");
        assert!(uris.contains(&"/first"), "{name}");
        assert!(doc.stat("tcp_gaps") >= 1, "{name}");
        let expected_long = (c.clone(), s.clone(), "GET".to_string(), long_uri.clone());
        if let Some(t) = tshark_messages(&path, &[]) {
            // Parity on what tshark reports: every request it finds, flowtrace finds.
            for r in &t.requests {
                assert!(found.requests.contains(r), "{name}: tshark's {r:?} missing");
            }
            assert!(t.requests.contains(&expected_long), "{name}: tshark");
            for r in &t.responses {
                assert!(
                    found.responses.contains(r),
                    "{name}: tshark's {r:?} missing"
                );
            }
        }
    }
}

const PROXY: ([u8; 4], u16) = ([10, 3, 0, 1], 1080);

/// One handshake step: the client's message and the proxy's answer.
type Message<'a> = (&'a [u8], &'a [u8]);

/// A client's HTTP through a SOCKS proxy: the handshake as (client, proxy) message
/// pairs, each message in segments of `mss` bytes, the client waiting for each answer
/// as real clients do; then two keep-alive exchanges.
fn socks_connection(handshake: &[Message], mss: usize) -> Vec<Vec<u8>> {
    let mut c = Conn::new(CLIENT, PROXY);
    for (hello, reply) in handshake {
        c.send(true, hello, mss).send(false, reply, mss);
    }
    c.send(
        true,
        b"GET /via-proxy/1 HTTP/1.1\r\nHost: intranet.example\r\n\r\n",
        1400,
    )
    .send(
        false,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        1400,
    )
    .send(
        true,
        b"GET /via-proxy/2 HTTP/1.1\r\nHost: intranet.example\r\n\r\n",
        1400,
    )
    .send(
        false,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        1400,
    );
    c.close()
}

/// SOCKS 4, 4a and 5 (with and without user/password, whole messages or one byte per
/// segment): the HTTP after the handshake is parsed on the same connection, the
/// target is recorded, and tshark (which dissects SOCKS on port 1080 and the HTTP it
/// carries) reports the same requests. tshark 4.0 does not reassemble a handshake
/// split across segments and finds no HTTP then (docs/parity.md); that case is
/// checked against what the capture holds only. A refused handshake is counted and its
/// connection yields nothing.
#[test]
fn http_inside_socks_4_4a_5() {
    let mut socks4 = vec![4, 1, 0, 80, 192, 168, 7, 7];
    socks4.extend_from_slice(b"alice\0");
    let mut socks4a = vec![4, 1, 0, 80, 0, 0, 0, 1];
    socks4a.extend_from_slice(b"alice\0intranet.example\0");
    let reply4: &[u8] = &[0, 90, 0, 0, 0, 0, 0, 0];
    let greet: &[u8] = &[5, 1, 0];
    let greet_auth: &[u8] = &[5, 2, 0, 2];
    let mut auth = vec![1, 5];
    auth.extend_from_slice(b"alice\x06secret");
    let mut connect_name = vec![5, 1, 0, 3, 16];
    connect_name.extend_from_slice(b"intranet.example\x00\x50");
    let connect_ip: &[u8] = &[5, 1, 0, 1, 192, 168, 7, 7, 0, 80];
    let connected: &[u8] = &[5, 0, 0, 1, 10, 3, 0, 1, 0x9c, 0x40];
    let no_auth: &[u8] = &[5, 0];
    let cases: Vec<(&str, Vec<Message>, usize, &str)> = vec![
        ("socks4", vec![(&socks4, reply4)], 1400, "192.168.7.7:80"),
        (
            "socks4a",
            vec![(&socks4a, reply4)],
            1400,
            "intranet.example:80",
        ),
        (
            "socks5",
            vec![(greet, no_auth), (&connect_name, connected)],
            1400,
            "intranet.example:80",
        ),
        (
            "socks5-split",
            vec![(greet, no_auth), (&connect_name, connected)],
            1,
            "intranet.example:80",
        ),
        (
            "socks5-auth",
            vec![
                (greet_auth, &[5, 2]),
                (&auth, &[1, 0]),
                (connect_ip, connected),
            ],
            1400,
            "192.168.7.7:80",
        ),
    ];
    let (c, s) = ("10.1.0.5:41000".to_string(), "10.3.0.1:1080".to_string());
    let expected = Messages {
        requests: vec![
            (c.clone(), s.clone(), "GET".into(), "/via-proxy/1".into()),
            (c.clone(), s.clone(), "GET".into(), "/via-proxy/2".into()),
        ],
        responses: vec![(c.clone(), s.clone(), 200), (c.clone(), s.clone(), 404)],
    }
    .sorted();
    for (name, handshake, mss, target) in cases {
        let mut pcap = Pcap::new(1);
        for p in socks_connection(&handshake, mss) {
            pcap.push(ethernet(&p));
        }
        let path = file(name, &format!("{name}.pcap"));
        pcap.write(&path);
        let doc = if name == "socks5-split" {
            let (found, doc) = flowtrace_messages(&path);
            assert_eq!(found, expected, "{name}");
            doc
        } else {
            check(&path, &expected, &[])
        };
        assert_eq!(doc.stat("socks_handshakes"), 1, "{name}");
        assert_eq!(doc.stat("socks_refused"), 0, "{name}");
        assert_eq!(doc.stat("http_non_http_streams"), 0, "{name}");
        let run = flowtrace([
            "pcap".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            path.as_os_str(),
        ]);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        for t in v["transactions"].as_array().unwrap() {
            assert_eq!(t["socks_target"], target, "{name}");
        }
        let text = flowtrace(["pcap".as_ref(), path.as_os_str()]);
        let shown =
            format!("10.1.0.5:41000 -> 10.3.0.1:1080 (SOCKS to {target})  GET /via-proxy/1");
        assert!(text.stdout.contains(&shown), "{name}: {}", text.stdout);
    }
    // The proxy refuses (SOCKS 5 reply 5: connection refused): nothing is reported.
    let mut pcap = Pcap::new(1);
    let refused: &[u8] = &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0];
    for p in socks_connection(&[(greet, no_auth), (&connect_name, refused)], 1400) {
        pcap.push(ethernet(&p));
    }
    let path = file("socks5-refused", "socks5-refused.pcap");
    pcap.write(&path);
    let (found, doc) = flowtrace_messages(&path);
    assert_eq!(found, Messages::default());
    assert_eq!(
        (doc.stat("socks_handshakes"), doc.stat("socks_refused")),
        (1, 1)
    );
}
