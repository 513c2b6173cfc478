//! TCP connections: a table keyed by vantage point and 4-tuple, port-reuse
//! generations, handshake timing, and per-direction reassembly ([`stream`]) feeding a
//! [`StreamSink`].
//!
//! A connection is tracked per *vantage point* (capture file and interface): the same
//! connection seen on a host NIC and on a bridge is two entries here, each with its own
//! stream; later stages correlate them. One hash lookup per segment: the sink's
//! per-connection state lives in the table entry.

pub mod stream;

use crate::anomaly::{AnomalyLog, Stats};
use crate::decode::TcpSegment;
use crate::time::Ts;
use rustc_hash::FxHashMap;
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

/// The table key: both endpoints packed as (IPv6 or IPv4-mapped address, port), so
/// hashing and comparing is a few integer operations.
#[derive(Hash, PartialEq, Eq, Clone, Copy, Debug)]
struct FlowKey {
    lo: (u128, u16),
    hi: (u128, u16),
    vantage: VantageId,
}

fn endpoint_key(a: &SocketAddr) -> (u128, u16) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) | (0xffff << 32),
        IpAddr::V6(v6) => u128::from(v6),
    };
    (ip, a.port())
}

struct Conn<C> {
    meta: ConnMeta,
    halves: [HalfStream; 2],
    /// Directions whose data the sink no longer wants.
    muted: [bool; 2],
    reset: bool,
    state: C,
}

impl<C> Conn<C> {
    fn closed(&self) -> bool {
        self.reset || (self.halves[0].finished() && self.halves[1].finished())
    }

    /// Whether the connection is a handshake that never completed: a SYN, perhaps a
    /// SYN-ACK, but no client ACK after it and no byte in either direction (what a
    /// SYN flood leaves behind).
    fn half_open(&self) -> bool {
        self.meta.syn_seen
            && self.meta.handshake.ack.is_none()
            && self.halves[0].delivered == 0
            && self.halves[1].delivered == 0
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
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            idle_timeout_ns: 300_000_000_000,
            linger_ns: 5_000_000_000,
            max_connections: 1_000_000,
        }
    }
}

/// The connection table.
///
/// When it is full, a new connection takes the place of the oldest half-open one
/// (a handshake that never completed, counted in `tcp_evicted_half_open`): a SYN
/// flood then evicts its own SYNs, and the real connections around it, which
/// complete their handshakes, keep being tracked. Only when no half-open
/// connection is left is a new connection refused (`tcp_untracked`).
pub struct TcpTable<C> {
    conns: FxHashMap<FlowKey, Conn<C>>,
    next_id: u64,
    config: TcpConfig,
    last_sweep: Ts,
    /// Connections opened by a SYN, oldest first, as (key, id): the eviction
    /// candidates. Entries whose connection is gone or no longer half-open are
    /// skipped when met, and dropped in a compaction when the queue outgrows the
    /// table, so it holds at most about twice as many entries as the table.
    syn_order: std::collections::VecDeque<(FlowKey, u64)>,
}

impl<C> TcpTable<C> {
    /// An empty table.
    pub fn new(config: TcpConfig) -> TcpTable<C> {
        TcpTable {
            conns: FxHashMap::default(),
            next_id: 0,
            config,
            last_sweep: Ts(i64::MIN),
            syn_order: std::collections::VecDeque::new(),
        }
    }

    /// Frees the oldest half-open connection; false when there is none.
    fn evict_half_open<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        ts: Ts,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> bool {
        while let Some((key, id)) = self.syn_order.pop_front() {
            let Some(conn) = self.conns.get(&key) else {
                continue;
            };
            if conn.meta.id != id || !conn.half_open() {
                continue;
            }
            let conn = self.conns.remove(&key).expect("present");
            stats.tcp_evicted_half_open += 1;
            log.push("tcp_evicted_half_open", ts, || {
                format!(
                    "{} -> {}: half-open connection evicted, the table is full ({} connections)",
                    conn.meta.client, conn.meta.server, self.config.max_connections
                )
            });
            close(sink, conn, ts, stats);
            return true;
        }
        false
    }

    /// Notes a connection opened by a SYN as an eviction candidate, keeping the
    /// queue within about twice the table's size.
    fn note_syn(&mut self, key: FlowKey, id: u64) {
        self.syn_order.push_back((key, id));
        if self.syn_order.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.syn_order.retain(|(k, id)| {
                conns
                    .get(k)
                    .is_some_and(|c| c.meta.id == *id && c.half_open())
            });
        }
    }

    /// The sink's state and the metadata of the connection between `a` and `b` at
    /// `vantage`, if it is tracked.
    pub fn conn_mut(
        &mut self,
        vantage: VantageId,
        a: SocketAddr,
        b: SocketAddr,
    ) -> Option<(&mut C, &ConnMeta)> {
        let (a, b) = (endpoint_key(&a), endpoint_key(&b));
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.conns
            .get_mut(&FlowKey { lo, hi, vantage })
            .map(|c| (&mut c.state, &c.meta))
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
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
        if ts.0.saturating_sub(self.last_sweep.0) >= 1_000_000_000 {
            self.sweep(sink, ts, stats);
        }
        let src = SocketAddr::new(src_ip, seg.src_port);
        let dst = SocketAddr::new(dst_ip, seg.dst_port);
        let (a, b) = (endpoint_key(&src), endpoint_key(&dst));
        let key = if a <= b {
            FlowKey {
                vantage,
                lo: a,
                hi: b,
            }
        } else {
            FlowKey {
                vantage,
                lo: b,
                hi: a,
            }
        };
        let syn_only = seg.has(TcpSegment::SYN) && !seg.has(TcpSegment::ACK);

        if let Some(conn) = self.conns.get(&key) {
            let client_isn = conn.halves[Dir::ToServer as usize].isn;
            let new_generation = syn_only
                && conn.meta.client == src
                && (conn.closed() || client_isn.is_some_and(|isn| isn != SeqNumber(seg.seq)));
            if new_generation {
                stats.tcp_port_reuse += 1;
                let old = self.conns.remove(&key).expect("present");
                sink.close(old.state, &old.meta, ts);
            }
        }
        if !self.conns.contains_key(&key) {
            // No sweep here: the periodic one above freed what was idle or closed
            // within the last second of capture time, and sweeping the whole table
            // for every new connection made a full table quadratic (a flood of 5 M
            // SYNs against 1 M connections did not finish).
            if self.conns.len() >= self.config.max_connections
                && !self.evict_half_open(sink, ts, stats, log)
            {
                stats.tcp_untracked += 1;
                return;
            }
            self.open(sink, key, ts, vantage, orient(src, dst, seg), seg, stats);
        }
        let conn = self.conns.get_mut(&key).expect("inserted above");
        let dir = if conn.meta.client == src {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        conn.meta.last_ts = ts;
        conn.meta.first_ttl[dir as usize].get_or_insert(seg.ttl);
        let first = &mut conn.meta.first_seq[dir as usize];
        let new_direction = first.is_none();
        if seg.has(TcpSegment::SYN) || first.is_none() {
            // A SYN's sequence number (the ISN) wins over anything seen before it.
            if first.is_none() || seg.has(TcpSegment::SYN) {
                *first = Some(seg.seq);
            }
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

    /// Starts tracking a new connection between `ends` (client, server).
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
        if meta.syn_seen {
            self.note_syn(key, meta.id);
        } else {
            stats.tcp_midstream += 1;
        }
        let state = sink.open(&meta);
        self.conns.insert(
            key,
            Conn {
                meta,
                halves: [HalfStream::default(), HalfStream::default()],
                muted: [false; 2],
                reset: false,
                state,
            },
        );
    }

    /// Closes connections idle past the timeout, and closed ones past the linger time.
    pub fn sweep<S: StreamSink<Conn = C>>(&mut self, sink: &mut S, now: Ts, stats: &mut Stats) {
        self.last_sweep = now;
        let cfg = self.config;
        let expired: Vec<FlowKey> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let idle = now.0.saturating_sub(c.meta.last_ts.0);
                idle >= cfg.idle_timeout_ns || (c.closed() && idle >= cfg.linger_ns)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let conn = self.conns.remove(&key).expect("listed");
            if !conn.closed() {
                stats.tcp_evicted += 1;
            }
            close(sink, conn, now, stats);
        }
    }

    /// Closes every connection (end of input).
    pub fn finish<S: StreamSink<Conn = C>>(&mut self, sink: &mut S, stats: &mut Stats) {
        let mut conns: Vec<Conn<C>> = self.conns.drain().map(|(_, c)| c).collect();
        conns.sort_by_key(|c| c.meta.id);
        for conn in conns {
            let ts = conn.meta.last_ts;
            close(sink, conn, ts, stats);
        }
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
