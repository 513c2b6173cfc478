//! TCP connections: a table keyed by vantage point and 4-tuple, port-reuse
//! generations, handshake timing, and per-direction reassembly ([`stream`]) feeding a
//! [`StreamSink`].
//!
//! A connection is tracked per *vantage point* (capture file and interface): the same
//! connection seen on a host NIC and on a bridge is two entries here, each with its own
//! stream; later stages correlate them. One hash lookup per segment: the sink's
//! per-connection state lives in the table entry.

mod budget;
mod map;
pub mod stream;

use crate::anomaly::{AnomalyLog, Stats};
use crate::decode::TcpSegment;
use crate::time::Ts;
use map::ConnMap;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
pub use stream::StreamPos;
use stream::{HalfStream, StreamEvent};

/// A TCP sequence number; ordered by wrapping distance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SeqNumber(pub u32);

impl std::ops::Add<u32> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(rhs))
    }
}

impl std::ops::Sub for SeqNumber {
    type Output = i32;
    /// Signed distance `self - rhs`, correct across wrap-around within 2^31.
    fn sub(self, rhs: SeqNumber) -> i32 {
        self.0.wrapping_sub(rhs.0) as i32
    }
}

/// Which way bytes flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Dir {
    /// From the client (the SYN sender) to the server.
    ToServer = 0,
    /// From the server to the client.
    ToClient = 1,
}

impl Dir {
    /// The other direction.
    pub fn flip(self) -> Dir {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// A vantage point: where packets were seen (capture file and interface; for SLL2
/// captures, the interface index inside the file).
pub type VantageId = u32;

/// What every stage may know of a connection.
#[derive(Clone, Debug, Serialize)]
pub struct ConnMeta {
    /// Unique id within the run.
    pub id: u64,
    /// Where it was seen.
    pub vantage: VantageId,
    /// The side that sent the SYN (or, picked up mid-stream, the side with the higher
    /// port).
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// First segment seen.
    pub first_ts: Ts,
    /// Last segment seen.
    pub last_ts: Ts,
    /// Whether the handshake's SYN was seen.
    pub syn_seen: bool,
    /// SYN → SYN-ACK → ACK times, when seen.
    pub handshake: Handshake,
    /// First sequence number seen in each direction (indexed by [`Dir`]); the ISN when
    /// the SYN was seen. NAT leaves sequence numbers alone, so this pair names the
    /// connection at every capture point it crosses.
    pub first_seq: [Option<u32>; 2],
    /// TTL of the first segment seen in each direction.
    pub first_ttl: [Option<u8>; 2],
}

/// Handshake timestamps.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Handshake {
    /// SYN.
    pub syn: Option<Ts>,
    /// SYN-ACK.
    pub syn_ack: Option<Ts>,
    /// The client's first ACK after the SYN-ACK.
    pub ack: Option<Ts>,
}

impl Handshake {
    /// Round-trip time seen from the capture point: SYN to the client's ACK.
    pub fn rtt_ns(&self) -> Option<i64> {
        Some(self.ack?.0 - self.syn?.0)
    }
}

/// How a direction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// FIN after all data.
    Fin,
    /// RST.
    Rst,
}

/// Receives the reassembled streams (Zeek's `DeliverStream`/`Undelivered`/
/// `EndpointEOF`). `Conn` is the sink's state per connection, stored in the table.
pub trait StreamSink {
    /// Per-connection state.
    type Conn;
    /// A connection starts being tracked.
    fn open(&mut self, meta: &ConnMeta) -> Self::Conn;
    /// In-order bytes of one direction, starting at `pos`. Return false to stop
    /// receiving data for this direction (the stream is still tracked; gaps and ends
    /// are still reported).
    fn data(
        &mut self,
        conn: &mut Self::Conn,
        meta: &ConnMeta,
        dir: Dir,
        ts: Ts,
        data: &[u8],
        pos: StreamPos,
    ) -> bool;
    /// `len` bytes of one direction are missing from the capture.
    fn gap(&mut self, conn: &mut Self::Conn, meta: &ConnMeta, dir: Dir, ts: Ts, len: u64);
    /// One direction ended.
    fn end(&mut self, conn: &mut Self::Conn, meta: &ConnMeta, dir: Dir, ts: Ts, how: End);
    /// The connection is dropped from the table (closed, idle, or end of input).
    fn close(&mut self, conn: Self::Conn, meta: &ConnMeta, ts: Ts);
    /// The first segment of direction `dir` was seen (with or without payload): from
    /// then on `meta.first_seq[dir]` is set. A sink that waits for the other side
    /// (a request for its response) learns here that the other side is visible.
    fn direction_seen(&mut self, _conn: &mut Self::Conn, _meta: &ConnMeta, _dir: Dir, _ts: Ts) {}
    /// Heap bytes `conn` holds (buffers, queued messages), for the table's memory
    /// budget: an estimate, cheap enough to ask after every segment.
    fn heap_bytes(&self, _conn: &Self::Conn) -> usize {
        0
    }
}

/// One TCP segment as the ladder and swimlane diagrams draw it: what a packet was,
/// without its payload (the first line of an HTTP message excepted). Kept only for
/// a bounded selection of request paths, so that diagrams and reports are drawn
/// from the same single pass as the paths (see `pipeline::SegmentJournal`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Capture time.
    pub ts: Ts,
    /// Where it was seen.
    pub vantage: VantageId,
    /// Source MAC, when the link layer has one.
    pub src_mac: Option<[u8; 6]>,
    /// Destination MAC.
    pub dst_mac: Option<[u8; 6]>,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address.
    pub dst: SocketAddr,
    /// TCP flags byte.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Payload length on the wire.
    pub len: u32,
    /// The payload's first line when it starts an HTTP message (cut at 200 bytes).
    pub first_line: Option<Box<str>>,
}

impl SegmentSummary {
    /// The key of the connection it belongs to at its capture point: (vantage,
    /// lower endpoint, higher endpoint), the same for both directions.
    pub fn conn_key(&self) -> ConnKey {
        conn_key(self.vantage, self.src, self.dst)
    }
}

/// A connection at a capture point, the same for both directions: (vantage, lower
/// endpoint, higher endpoint).
pub type ConnKey = (VantageId, SocketAddr, SocketAddr);

/// The [`ConnKey`] of the connection between `a` and `b` seen at `vantage`.
pub fn conn_key(vantage: VantageId, a: SocketAddr, b: SocketAddr) -> ConnKey {
    if a <= b {
        (vantage, a, b)
    } else {
        (vantage, b, a)
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The table key: both endpoints packed as (IPv6 or IPv4-mapped address as four
/// words, port), so hashing and comparing is a few integer operations. 40 bytes
/// (4-byte alignment: a `u128` address would pad the key to 80).
#[derive(Hash, PartialEq, Eq, Clone, Copy, Debug)]
struct FlowKey {
    lo: [u32; 4],
    hi: [u32; 4],
    lo_port: u16,
    hi_port: u16,
    vantage: VantageId,
}

/// A hash of the connection between `a` and `b` seen at `vantage`, the same for
/// both directions: what a sharded run routes a connection's segments by, and
/// what [`TcpTable::drain_removed`] gives with a removed connection's id.
pub fn connection_hash(vantage: VantageId, a: &SocketAddr, b: &SocketAddr) -> u64 {
    FlowKey::new(vantage, a, b).hash_value()
}

impl FlowKey {
    fn hash_value(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        self.hash(&mut h);
        h.finish()
    }

    fn new(vantage: VantageId, a: &SocketAddr, b: &SocketAddr) -> FlowKey {
        let (a, b) = (endpoint_key(a), endpoint_key(b));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            lo: lo.0,
            hi: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
            vantage,
        }
    }

    /// The lower and higher endpoints (an IPv4-mapped IPv6 address comes back as
    /// IPv4: for anomaly messages only).
    fn ends(&self) -> (SocketAddr, SocketAddr) {
        (
            key_addr(self.lo, self.lo_port),
            key_addr(self.hi, self.hi_port),
        )
    }
}

fn endpoint_key(a: &SocketAddr) -> ([u32; 4], u16) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => [0, 0, 0xffff, u32::from(v4)],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            std::array::from_fn(|i| {
                u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    };
    (ip, a.port())
}

fn key_addr(ip: [u32; 4], port: u16) -> SocketAddr {
    let ip = if ip[..3] == [0, 0, 0xffff] {
        IpAddr::from(std::net::Ipv4Addr::from(ip[3]))
    } else {
        let mut o = [0u8; 16];
        for (i, w) in ip.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        IpAddr::from(o)
    };
    SocketAddr::new(ip, port)
}

/// A connection that has sent a SYN (and perhaps had a SYN-ACK) and nothing else:
/// what a SYN flood leaves behind, kept in 48 bytes instead of a full [`Conn`]
/// (about 700 bytes with the HTTP state). It becomes a full connection
/// (`TcpTable::promote`, which replays the SYN and SYN-ACK) at its first other
/// segment; the sink never hears of one that does not.
#[derive(Clone, Copy, Debug)]
struct HalfOpen {
    id: u64,
    syn_ts: Ts,
    syn_ack_ts: Ts,
    last_ts: Ts,
    /// ISN of the client and of the server (the latter once the SYN-ACK is seen).
    isn: [u32; 2],
    /// The SYN-ACK's acknowledgement number.
    syn_ack_ack: u32,
    /// TTL of the SYN and of the SYN-ACK.
    ttl: [u8; 2],
    /// Whether the client is the key's lower endpoint.
    client_is_lo: bool,
    syn_ack: bool,
}

/// A table entry: a cheap half-open connection or a full one (boxed, so that the
/// hash table's buckets stay small and its doublings cheap).
enum Slot<C> {
    HalfOpen(HalfOpen),
    Open(Box<Conn<C>>),
}

struct Conn<C> {
    meta: ConnMeta,
    halves: [HalfStream; 2],
    /// Directions whose data the sink no longer wants.
    muted: [bool; 2],
    reset: bool,
    /// Heap bytes of the reassembly buffers and the sink's state, as last accounted
    /// in the table's total.
    accounted: usize,
    state: C,
}

impl<C> Conn<C> {
    /// A new connection with nothing delivered yet.
    fn boxed(meta: ConnMeta, state: C) -> Box<Conn<C>> {
        Box::new(Conn {
            meta,
            halves: [HalfStream::default(), HalfStream::default()],
            muted: [false; 2],
            reset: false,
            accounted: 0,
            state,
        })
    }

    fn closed(&self) -> bool {
        self.reset || (self.halves[0].finished() && self.halves[1].finished())
    }
}

/// Limits of the connection table.
#[derive(Clone, Copy, Debug)]
pub struct TcpConfig {
    /// Connections idle this long (capture time) are closed and freed.
    pub idle_timeout_ns: i64,
    /// Closed connections linger this long to absorb late retransmissions.
    pub linger_ns: i64,
    /// Most connections tracked at once.
    pub max_connections: usize,
    /// Bytes the table may hold: its hash table, the connections, their
    /// out-of-order buffers and the sink's per-connection state (`budget`).
    pub memory_budget: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            idle_timeout_ns: 300_000_000_000,
            linger_ns: 5_000_000_000,
            max_connections: 1_000_000,
            memory_budget: 512 << 20,
        }
    }
}

/// The connection table.
///
/// A connection opened by a SYN is kept as a small `HalfOpen` entry until its
/// next segment, so a SYN flood costs about 100 bytes a SYN. When the table is full
/// (`max_connections`) or its memory would pass the budget (see `budget`), the
/// oldest half-open connections make room (`tcp_evicted_half_open`), then the
/// connections idle longest (`tcp_evicted_established`): a flood evicts its own
/// SYNs, and the real connections around it, which complete their handshakes,
/// keep being tracked. Only when nothing can be evicted is a new connection refused
/// (`tcp_untracked`).
pub struct TcpTable<C> {
    conns: ConnMap<Slot<C>>,
    next_id: u64,
    config: TcpConfig,
    last_sweep: Ts,
    /// Half-open entries in `conns`.
    half_open: usize,
    /// The hash table's usable capacity at its current size (`capacity()` counts
    /// down as deletions leave tombstones; this does not).
    full_cap: usize,
    /// Heap bytes of every full connection's buffers and sink state.
    dynamic_bytes: usize,
    /// The most [`TcpTable::memory_bytes`] has been.
    peak_bytes: usize,
    /// Sweeps only when [`TcpTable::sweep`] is called (a shard of a sharded run,
    /// whose sweeps are decided for all shards by the thread that routes the
    /// segments, at the frame where one table would sweep).
    external_sweeps: bool,
    /// Ids and [`connection_hash`]es of the entries removed since
    /// [`TcpTable::drain_removed`], when kept (a
    /// shard's merger forgets the connection's global id then).
    removed: Option<Vec<(u64, u64)>>,
}

impl<C> TcpTable<C> {
    /// An empty table.
    pub fn new(config: TcpConfig) -> TcpTable<C> {
        TcpTable {
            conns: ConnMap::default(),
            next_id: 0,
            config,
            last_sweep: Ts(i64::MIN),
            half_open: 0,
            full_cap: 0,
            dynamic_bytes: 0,
            peak_bytes: 0,
            external_sweeps: false,
            removed: None,
        }
    }

    /// Makes the table one shard of a sharded run: it sweeps only when told
    /// ([`TcpTable::sweep`]) and keeps the ids of the entries it removes
    /// ([`TcpTable::drain_removed`]).
    pub fn shard_mode(&mut self) {
        self.external_sweeps = true;
        self.removed = Some(Vec::new());
    }

    /// The id the next new connection gets. A shard sets it to the index of the
    /// frame before handing the table its segment: ids then order connections as
    /// one table's would, and a merger can map them to one table's numbers.
    pub fn set_next_id(&mut self, id: u64) {
        self.next_id = id;
    }

    /// The id the next new connection gets (advanced by one when a segment opened
    /// one).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Moves the ids and [`connection_hash`]es of the entries removed since the
    /// last call to `out` (nothing
    /// unless [`TcpTable::shard_mode`]).
    pub fn drain_removed(&mut self, out: &mut Vec<(u64, u64)>) {
        if let Some(r) = &mut self.removed {
            out.append(r);
        }
    }

    /// The sink's state and the metadata of the connection between `a` and `b` at
    /// `vantage`, if it is tracked (and past its handshake's first segments).
    pub fn conn_mut(
        &mut self,
        vantage: VantageId,
        a: SocketAddr,
        b: SocketAddr,
    ) -> Option<(&mut C, &ConnMeta)> {
        match self.conns.get_mut(&FlowKey::new(vantage, &a, &b)) {
            Some(Slot::Open(c)) => Some((&mut c.state, &c.meta)),
            _ => None,
        }
    }

    /// Connections tracked now (half-open ones included).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Half-open connections tracked now.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Handles one segment seen at `vantage`.
    #[allow(clippy::too_many_arguments)]
    pub fn segment<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        ts: Ts,
        vantage: VantageId,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        seg: &TcpSegment<'_>,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) {
        self.segment_hashed(sink, ts, vantage, src_ip, dst_ip, seg, None, stats, log);
    }

    /// [`TcpTable::segment`] with the connection's [`connection_hash`], when the
    /// caller has it already (a sharded run routes by it): the table's lookups use it
    /// instead of hashing the key again.
    #[allow(clippy::too_many_arguments)]
    pub fn segment_hashed<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        ts: Ts,
        vantage: VantageId,
        src_ip: IpAddr,
        dst_ip: IpAddr,
        seg: &TcpSegment<'_>,
        hash: Option<u64>,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) {
        if !self.external_sweeps && ts.0.saturating_sub(self.last_sweep.0) >= 1_000_000_000 {
            self.sweep(sink, ts, stats);
        }
        if self.memory_bytes() > self.config.memory_budget {
            self.relieve(sink, ts, stats, log);
        }
        let src = SocketAddr::new(src_ip, seg.src_port);
        let dst = SocketAddr::new(dst_ip, seg.dst_port);
        let key = FlowKey::new(vantage, &src, &dst);
        let hash = hash.unwrap_or_else(|| key.hash_value());
        let bare_syn = seg.flags
            & (TcpSegment::SYN | TcpSegment::ACK | TcpSegment::FIN | TcpSegment::RST)
            == TcpSegment::SYN
            && seg.payload.is_empty()
            && seg.missing == 0;

        match self.conns.get_mut_hashed(&key, hash) {
            Some(Slot::HalfOpen(h)) => {
                let from_client = (endpoint_key(&src) == (key.lo, key.lo_port)) == h.client_is_lo;
                if half_open_segment(h, from_client, ts, seg) {
                    return;
                }
                if !(bare_syn && from_client) {
                    self.promote(sink, key, src, dst, stats, log);
                } else {
                    // A new ISN from the client: the port is reused.
                    stats.tcp_port_reuse += 1;
                    self.remove(&key);
                }
            }
            Some(Slot::Open(conn)) => {
                let client_isn = conn.halves[Dir::ToServer as usize].isn;
                let new_generation = seg.has(TcpSegment::SYN)
                    && !seg.has(TcpSegment::ACK)
                    && conn.meta.client == src
                    && (conn.closed() || client_isn.is_some_and(|isn| isn != SeqNumber(seg.seq)));
                if !new_generation {
                    // The common case: one lookup for the whole segment.
                    track(sink, conn, ts, src, dst, seg, stats, log);
                    account(sink, conn, &mut self.dynamic_bytes);
                    self.note_peak();
                    return;
                }
                stats.tcp_port_reuse += 1;
                if let Some(Slot::Open(old)) = self.remove(&key) {
                    sink.close(old.state, &old.meta, ts);
                }
            }
            None => {}
        }
        if !self.conns.contains_key_hashed(&key, hash) {
            if !self.make_room(sink, ts, stats, log) {
                stats.tcp_untracked += 1;
                return;
            }
            if bare_syn {
                self.open_half(key, ts, &src, seg, stats);
                return;
            }
            self.open(sink, key, ts, vantage, orient(src, dst, seg), seg, stats);
        }
        let Some(Slot::Open(conn)) = self.conns.get_mut_hashed(&key, hash) else {
            return;
        };
        track(sink, conn, ts, src, dst, seg, stats, log);
        account(sink, conn, &mut self.dynamic_bytes);
        self.note_peak();
    }

    /// Starts tracking a connection opened by a bare SYN as a [`HalfOpen`] entry.
    fn open_half(
        &mut self,
        key: FlowKey,
        ts: Ts,
        src: &SocketAddr,
        seg: &TcpSegment<'_>,
        stats: &mut Stats,
    ) {
        stats.tcp_connections += 1;
        let h = HalfOpen {
            id: self.next_id,
            syn_ts: ts,
            syn_ack_ts: ts,
            last_ts: ts,
            isn: [seg.seq, 0],
            syn_ack_ack: 0,
            ttl: [seg.ttl, 0],
            client_is_lo: endpoint_key(src) == (key.lo, key.lo_port),
            syn_ack: false,
        };
        self.next_id += 1;
        self.insert(key, Slot::HalfOpen(h));
        self.half_open += 1;
    }

    /// Turns a half-open entry into a full connection, replaying its SYN and
    /// SYN-ACK as they were seen (same times, numbers and TTLs).
    fn promote<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        key: FlowKey,
        src: SocketAddr,
        dst: SocketAddr,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) {
        let h = match self.conns.get(&key) {
            Some(Slot::HalfOpen(h)) => *h,
            _ => return,
        };
        let src_is_lo = endpoint_key(&src) == (key.lo, key.lo_port);
        let (client, server) = if src_is_lo == h.client_is_lo {
            (src, dst)
        } else {
            (dst, src)
        };
        let meta = ConnMeta {
            id: h.id,
            vantage: key.vantage,
            client,
            server,
            first_ts: h.syn_ts,
            last_ts: h.syn_ts,
            syn_seen: true,
            handshake: Handshake::default(),
            first_seq: [None; 2],
            first_ttl: [None; 2],
        };
        let state = sink.open(&meta);
        let mut conn = Conn::boxed(meta, state);
        let syn = replayed(
            client.port(),
            server.port(),
            h.isn[0],
            0,
            TcpSegment::SYN,
            h.ttl[0],
        );
        track(sink, &mut conn, h.syn_ts, client, server, &syn, stats, log);
        if h.syn_ack {
            let flags = TcpSegment::SYN | TcpSegment::ACK;
            let sa = replayed(
                server.port(),
                client.port(),
                h.isn[1],
                h.syn_ack_ack,
                flags,
                h.ttl[1],
            );
            track(
                sink,
                &mut conn,
                h.syn_ack_ts,
                server,
                client,
                &sa,
                stats,
                log,
            );
        }
        conn.meta.last_ts = h.last_ts;
        self.half_open -= 1;
        self.conns.insert(key, Slot::Open(conn));
    }

    /// Starts tracking a new full connection between `ends` (client, server).
    #[allow(clippy::too_many_arguments)]
    fn open<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        key: FlowKey,
        ts: Ts,
        vantage: VantageId,
        (client, server): (SocketAddr, SocketAddr),
        seg: &TcpSegment<'_>,
        stats: &mut Stats,
    ) {
        let meta = ConnMeta {
            id: self.next_id,
            vantage,
            client,
            server,
            first_ts: ts,
            last_ts: ts,
            syn_seen: seg.has(TcpSegment::SYN),
            handshake: Handshake::default(),
            first_seq: [None; 2],
            first_ttl: [None; 2],
        };
        self.next_id += 1;
        stats.tcp_connections += 1;
        if !meta.syn_seen {
            stats.tcp_midstream += 1;
        }
        let state = sink.open(&meta);
        let conn = Conn::boxed(meta, state);
        self.insert(key, Slot::Open(conn));
    }

    /// Inserts a new entry, noting the hash table's size.
    fn insert(&mut self, key: FlowKey, slot: Slot<C>) {
        self.conns.insert(key, slot);
        self.full_cap = self.full_cap.max(self.conns.capacity());
        self.note_peak();
    }

    /// Removes an entry, keeping the counts and the accounted bytes.
    fn remove(&mut self, key: &FlowKey) -> Option<Slot<C>> {
        let slot = self.conns.remove(key)?;
        let id = match &slot {
            Slot::HalfOpen(h) => {
                self.half_open -= 1;
                h.id
            }
            Slot::Open(c) => {
                self.dynamic_bytes -= c.accounted;
                c.meta.id
            }
        };
        if let Some(r) = &mut self.removed {
            r.push((id, key.hash_value()));
        }
        Some(slot)
    }

    /// Closes connections idle past the timeout, and closed ones past the linger
    /// time; gives memory back when the table has emptied to a quarter of its size.
    pub fn sweep<S: StreamSink<Conn = C>>(&mut self, sink: &mut S, now: Ts, stats: &mut Stats) {
        self.last_sweep = now;
        let cfg = self.config;
        let mut expired: Vec<(u64, FlowKey)> = self
            .conns
            .iter()
            .filter_map(|(k, s)| {
                let (id, last, closed) = match s {
                    Slot::HalfOpen(h) => (h.id, h.last_ts, false),
                    Slot::Open(c) => (c.meta.id, c.meta.last_ts, c.closed()),
                };
                let idle = now.0.saturating_sub(last.0);
                (idle >= cfg.idle_timeout_ns || (closed && idle >= cfg.linger_ns))
                    .then_some((id, *k))
            })
            .collect();
        // Closed in the order they were opened, not the hash table's: the
        // transactions they complete come out in an order that does not depend on
        // the table's layout, which a sharded run (one table per shard) reproduces.
        expired.sort_unstable_by_key(|(id, _)| *id);
        for (_, key) in expired {
            match self.remove(&key) {
                Some(Slot::Open(conn)) => {
                    if !conn.closed() {
                        stats.tcp_evicted += 1;
                    }
                    close(sink, *conn, now, stats);
                }
                Some(Slot::HalfOpen(_)) => stats.tcp_evicted += 1,
                None => {}
            }
        }
        self.shrink_if_sparse();
    }

    /// Closes every connection (end of input).
    pub fn finish<S: StreamSink<Conn = C>>(&mut self, sink: &mut S, stats: &mut Stats) {
        let mut conns: Vec<Conn<C>> = self
            .conns
            .drain()
            .filter_map(|(_, s)| match s {
                Slot::Open(c) => Some(*c),
                Slot::HalfOpen(_) => None,
            })
            .collect();
        self.half_open = 0;
        self.dynamic_bytes = 0;
        conns.sort_by_key(|c| c.meta.id);
        for conn in conns {
            let ts = conn.meta.last_ts;
            close(sink, conn, ts, stats);
        }
    }
}

/// A segment on a half-open connection: true when it leaves it half-open (the
/// SYN again, or the SYN-ACK), false when the connection must become a full one.
fn half_open_segment(h: &mut HalfOpen, from_client: bool, ts: Ts, seg: &TcpSegment<'_>) -> bool {
    let flags = seg.flags & (TcpSegment::SYN | TcpSegment::ACK | TcpSegment::FIN | TcpSegment::RST);
    if !seg.payload.is_empty() || seg.missing != 0 {
        return false;
    }
    let syn_again = from_client && flags == TcpSegment::SYN && seg.seq == h.isn[0];
    let syn_ack = !from_client && flags == TcpSegment::SYN | TcpSegment::ACK;
    if syn_ack && !h.syn_ack {
        h.syn_ack = true;
        h.syn_ack_ts = ts;
        h.isn[1] = seg.seq;
        h.syn_ack_ack = seg.ack;
        h.ttl[1] = seg.ttl;
    }
    if syn_again || syn_ack {
        h.last_ts = ts;
        return true;
    }
    false
}

fn replayed(
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    ttl: u8,
) -> TcpSegment<'static> {
    TcpSegment {
        src_port,
        dst_port,
        seq,
        ack,
        flags,
        window: 0,
        payload: &[],
        missing: 0,
        ttl,
    }
}

/// Heap bytes a full connection holds besides its box: out-of-order buffers and the
/// sink's state.
fn conn_heap_bytes<S: StreamSink>(sink: &S, conn: &Conn<S::Conn>) -> usize {
    conn.halves[0].buffered_bytes() + conn.halves[1].buffered_bytes() + sink.heap_bytes(&conn.state)
}

/// Brings the table's total of heap bytes (`dynamic`) up to date with `conn`'s.
fn account<S: StreamSink>(sink: &S, conn: &mut Conn<S::Conn>, dynamic: &mut usize) {
    let now = conn_heap_bytes(sink, conn);
    *dynamic = *dynamic + now - conn.accounted;
    conn.accounted = now;
}

/// One segment of a full connection, from `src` to `dst`.
#[allow(clippy::too_many_arguments)]
fn track<S: StreamSink>(
    sink: &mut S,
    conn: &mut Conn<S::Conn>,
    ts: Ts,
    src: SocketAddr,
    dst: SocketAddr,
    seg: &TcpSegment<'_>,
    stats: &mut Stats,
    log: &mut AnomalyLog,
) {
    let dir = if conn.meta.client == src {
        Dir::ToServer
    } else {
        Dir::ToClient
    };
    conn.meta.last_ts = ts;
    conn.meta.first_ttl[dir as usize].get_or_insert(seg.ttl);
    let first = &mut conn.meta.first_seq[dir as usize];
    let new_direction = first.is_none();
    // A SYN's sequence number (the ISN) wins over anything seen before it.
    if first.is_none() || seg.has(TcpSegment::SYN) {
        *first = Some(seg.seq);
    }
    if new_direction {
        sink.direction_seen(&mut conn.state, &conn.meta, dir, ts);
    }
    let hs = &mut conn.meta.handshake;
    match (dir, seg.has(TcpSegment::SYN), seg.has(TcpSegment::ACK)) {
        (Dir::ToServer, true, false) => {
            hs.syn.get_or_insert(ts);
            conn.meta.syn_seen = true;
        }
        (Dir::ToClient, true, true) => {
            hs.syn_ack.get_or_insert(ts);
        }
        (Dir::ToServer, false, true) if hs.syn_ack.is_some() && hs.ack.is_none() => {
            hs.ack = Some(ts);
        }
        _ => {}
    }

    let Conn {
        meta,
        halves,
        muted,
        state,
        reset,
        ..
    } = conn;
    if seg.has(TcpSegment::ACK) {
        let peer = dir.flip();
        let peer_muted = &mut muted[peer as usize];
        halves[peer as usize].peer_acked(seg.ack, stats, &mut |e| {
            dispatch(sink, state, meta, peer, ts, e, peer_muted)
        });
    }
    let this_muted = &mut muted[dir as usize];
    halves[dir as usize].segment(
        seg.seq,
        if seg.has(TcpSegment::ACK) { seg.ack } else { 0 },
        seg.has(TcpSegment::SYN),
        seg.has(TcpSegment::FIN),
        seg.payload,
        seg.missing,
        stats,
        &mut |e| dispatch(sink, state, meta, dir, ts, e, this_muted),
    );
    if seg.has(TcpSegment::RST) && !*reset {
        stats.tcp_rst += 1;
        *reset = true;
        for d in [dir, dir.flip()] {
            let m = &mut muted[d as usize];
            halves[d as usize].flush(stats, &mut |e| dispatch(sink, state, meta, d, ts, e, m));
        }
        sink.end(state, meta, dir, ts, End::Rst);
        log.push("tcp_rst", ts, || format!("{} -> {}: RST", src, dst));
    }
}

fn close<S: StreamSink>(sink: &mut S, mut conn: Conn<S::Conn>, ts: Ts, stats: &mut Stats) {
    for d in [Dir::ToServer, Dir::ToClient] {
        let Conn {
            meta,
            halves,
            muted,
            state,
            ..
        } = &mut conn;
        let m = &mut muted[d as usize];
        halves[d as usize].flush(stats, &mut |e| dispatch(sink, state, meta, d, ts, e, m));
    }
    sink.close(conn.state, &conn.meta, ts);
}

fn dispatch<S: StreamSink>(
    sink: &mut S,
    state: &mut S::Conn,
    meta: &ConnMeta,
    dir: Dir,
    ts: Ts,
    event: StreamEvent<'_>,
    muted: &mut bool,
) {
    match event {
        StreamEvent::Data(d, pos) => {
            if !*muted && !sink.data(state, meta, dir, ts, d, pos) {
                *muted = true;
            }
        }
        StreamEvent::Gap(n) => {
            if !*muted {
                sink.gap(state, meta, dir, ts, n)
            }
        }
        StreamEvent::Fin => sink.end(state, meta, dir, ts, End::Fin),
    }
}

/// Picks client and server for a new connection: the SYN's sender is the client; a
/// SYN-ACK's receiver is; otherwise (picked up mid-stream) the side with the lower
/// port is taken as the server.
fn orient(src: SocketAddr, dst: SocketAddr, seg: &TcpSegment<'_>) -> (SocketAddr, SocketAddr) {
    let syn = seg.has(TcpSegment::SYN);
    let ack = seg.has(TcpSegment::ACK);
    let src_is_server = if syn { ack } else { src.port() < dst.port() };
    if src_is_server {
        (dst, src)
    } else {
        (src, dst)
    }
}

#[cfg(test)]
mod tests;
