//! Pushes frames through decode, TCP and HTTP, and keeps what later stages need:
//! vantage points, VRRP adverts and gratuitous ARPs.

use crate::anomaly::{AnomalyLog, Stats};
use crate::capture::{Frame, IfaceId, Interfaces};
use crate::decode::{Decoder, Network, Transport};
use crate::http::{HttpAnalyzer, HttpConn, HttpTransaction, KeptHeaders};
use crate::links::HostLinks;
use crate::tcp::{conn_key, mac_string, ConnKey, SegmentSummary, TcpConfig, TcpTable, VantageId};
use crate::time::Ts;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::IpAddr;

mod shard;
use shard::Route;
pub use shard::{run_sharded, ShardedRun, CHURN_VARIABLE};

/// Where packets were seen: a capture file's interface, or, for SLL2 captures
/// (`tcpdump -i any`), one interface index of the capturing host.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Vantage {
    /// The capture file.
    pub file: String,
    /// Index of the capture file among the inputs.
    pub file_index: usize,
    /// Interface name: from pcapng, from the links sidecar for an SLL2 index, or
    /// `ifindex N` / `if N` when unknown.
    pub interface: String,
    /// SLL2 interface index, when the capture has one.
    pub ifindex: Option<u32>,
}

/// A run of VRRP adverts from one sender with one priority.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VrrpRun {
    /// Virtual router id.
    pub vrid: u8,
    /// Sender (the router claiming to be master).
    pub source: IpAddr,
    /// Advertised priority.
    pub priority: u8,
    /// Virtual addresses.
    pub addresses: Vec<IpAddr>,
    /// First advert of the run.
    pub first_ts: Ts,
    /// Last advert of the run.
    pub last_ts: Ts,
    /// Adverts in the run (each vantage point counts).
    pub adverts: u64,
}

/// A gratuitous ARP: a host announcing it owns an address.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GratuitousArp {
    /// When.
    pub ts: Ts,
    /// Where it was seen.
    pub vantage: VantageId,
    /// The address announced.
    pub ip: IpAddr,
    /// The MAC claiming it.
    pub mac: String,
}

/// The segments of every open connection, recorded while frames are pushed and
/// handed to the transactions they belong to (`HttpTransaction::segments`), so that
/// diagrams of the paths correlation keeps are drawn from the same single pass.
///
/// **Bounded in bytes**, a share of the memory budget ([`PipelineConfig::journal_budget`]):
/// each summary's size and its first line, the per-connection queues at their
/// allocated size, the hash table's buckets and the arrival-order queue are counted
/// ([`SegmentJournal::memory_bytes`]).
/// - A connection holds at most [`SegmentJournal::MAX_CONNECTION_BYTES`] between two
///   of its transactions; past it, its new segments are not recorded, counted as
///   `segments_not_kept` (the first ones, with the handshake and the request, are
///   what the diagrams need most).
/// - Past the share, the connections recorded first are evicted, oldest first, with
///   all their segments, counted in `segments_evicted` (segments) and sampled in the
///   anomalies: connections that never carry a transaction (a SYN flood's, TLS,
///   databases) make room for new ones, as the TCP table evicts its half-open
///   connections first. A transaction whose segments were evicted is drawn with
///   those recorded since.
/// - A connection's entry goes when the TCP table drops the connection (swept every
///   10 s of capture time).
pub struct SegmentJournal {
    by_conn: FxHashMap<ConnKey, Held>,
    /// Connections in order of their first recorded segment, oldest first, with
    /// their serial (entries of connections gone since are skipped when met).
    order: VecDeque<(u64, ConnKey)>,
    next_serial: u64,
    /// The queues' bytes (at their allocated size) and first lines, summed.
    heap_bytes: usize,
    budget: usize,
    last_sweep: Ts,
}

/// One connection's recorded segments.
struct Held {
    serial: u64,
    segments: VecDeque<SegmentSummary>,
    /// Its queue's allocated bytes and first lines (as counted in `heap_bytes`).
    heap: usize,
    /// Of which first lines.
    lines: usize,
}

impl Held {
    fn heap_bytes(&self) -> usize {
        self.segments.capacity() * std::mem::size_of::<SegmentSummary>() + self.lines
    }
}

fn line_bytes(s: &SegmentSummary) -> usize {
    s.first_line.as_ref().map_or(0, |l| l.len())
}

impl SegmentJournal {
    /// Bytes of segments one connection holds between two of its transactions
    /// (about 1,000 summaries).
    pub const MAX_CONNECTION_BYTES: usize = 128 << 10;
    /// The journal's share of the memory budget by default (the default
    /// `--memory-budget`'s eighth: the CLI passes its own share).
    pub const DEFAULT_BUDGET: usize = 64 << 20;

    /// A journal that holds at most `budget` bytes (at least 64 KiB).
    pub fn new(budget: usize) -> SegmentJournal {
        SegmentJournal {
            by_conn: FxHashMap::default(),
            order: VecDeque::new(),
            next_serial: 0,
            heap_bytes: 0,
            budget: budget.max(64 << 10),
            last_sweep: Ts(i64::MIN),
        }
    }

    /// The bytes the journal holds now, by the accounting above.
    pub fn memory_bytes(&self) -> usize {
        crate::memory::hash_table_buckets(self.by_conn.capacity())
            * (std::mem::size_of::<(ConnKey, Held)>() + 1)
            + self.order.capacity() * std::mem::size_of::<(u64, ConnKey)>()
            + self.heap_bytes
    }

    /// What a new connection's entry adds besides its segments: nothing while the
    /// table and the queue have room, their doubled size (the old one still
    /// allocated) when they must grow.
    fn growth_of_a_new_connection(&self) -> usize {
        let slot = std::mem::size_of::<(ConnKey, Held)>() + 1;
        let table = if self.by_conn.len() < self.by_conn.capacity() {
            0
        } else {
            (crate::memory::hash_table_buckets(self.by_conn.capacity()) * 2).max(4) * slot
        };
        let queue = if self.order.len() < self.order.capacity() {
            0
        } else {
            self.order.capacity().max(4) * std::mem::size_of::<(u64, ConnKey)>()
        };
        table + queue
    }

    fn record(&mut self, seg: SegmentSummary, ts: Ts, stats: &mut Stats, log: &mut AnomalyLog) {
        let key = seg.conn_key();
        let size = std::mem::size_of::<SegmentSummary>();
        let growth = match self.by_conn.get(&key) {
            Some(h) => {
                // A full queue doubles (from one to four).
                let queue = match h.segments.len() < h.segments.capacity() {
                    true => 0,
                    false => h.segments.capacity().max(4) * size,
                };
                let growth = queue + line_bytes(&seg);
                if h.heap + growth > Self::MAX_CONNECTION_BYTES {
                    stats.segments_not_kept += 1;
                    return;
                }
                growth
            }
            // A new queue holds one summary (a SYN flood's stays at one).
            None => size + line_bytes(&seg) + self.growth_of_a_new_connection(),
        };
        if self.memory_bytes() + growth > self.budget
            && !self.evict_for(growth, &key, ts, stats, log)
        {
            stats.segments_not_kept += 1;
            return;
        }
        let held = match self.by_conn.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let serial = self.next_serial;
                self.next_serial += 1;
                self.order.push_back((serial, key));
                e.insert(Held {
                    serial,
                    segments: VecDeque::with_capacity(1),
                    heap: 0,
                    lines: 0,
                })
            }
        };
        held.lines += line_bytes(&seg);
        held.segments.push_back(seg);
        let heap = held.heap_bytes();
        self.heap_bytes = self.heap_bytes - held.heap + heap;
        held.heap = heap;
    }

    /// Evicts the connections recorded first (not `keep`'s) until `growth` more
    /// bytes fit, each counted; false when they still do not.
    fn evict_for(
        &mut self,
        growth: usize,
        keep: &ConnKey,
        ts: Ts,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> bool {
        let mut kept = None;
        while self.memory_bytes() + growth > self.budget {
            let Some((serial, key)) = self.order.pop_front() else {
                break;
            };
            let live = self.by_conn.get(&key).is_some_and(|h| h.serial == serial);
            if !live {
                continue;
            }
            if &key == keep {
                kept = Some((serial, key));
                continue;
            }
            let h = self.by_conn.remove(&key).expect("just found");
            self.heap_bytes -= h.heap;
            stats.segments_evicted += h.segments.len() as u64;
            let budget = self.budget;
            log.push("segments_evicted", ts, || {
                format!(
                    "{} <-> {}: {} segment summaries for diagrams evicted (oldest connection \
                     first) to keep the segment journal within {budget} bytes",
                    key.1,
                    key.2,
                    h.segments.len()
                )
            });
            if self.by_conn.len() < self.by_conn.capacity() / 4 {
                self.by_conn.shrink_to(self.by_conn.len() * 2);
                self.order
                    .shrink_to(self.order.len().max(self.by_conn.len()) * 2);
            }
        }
        if let Some(k) = kept {
            self.order.push_front(k);
        }
        self.memory_bytes() + growth <= self.budget
    }

    /// Drops the places in the order of connections gone since, once they are most
    /// of it.
    fn compact(&mut self) {
        if self.order.len() > 64 && self.order.len() > 2 * self.by_conn.len() {
            let by_conn = &self.by_conn;
            self.order
                .retain(|(serial, k)| by_conn.get(k).is_some_and(|h| h.serial == *serial));
        }
    }

    /// The segments of `t`'s connection up to its last byte, and the bare ones
    /// right after it.
    fn take_for(&mut self, t: &HttpTransaction) -> Vec<SegmentSummary> {
        let last = [
            t.request.as_ref().map(|r| r.last_ts),
            t.response.as_ref().map(|r| r.last_ts),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Ts(i64::MIN));
        let key = conn_key(t.vantage, t.client, t.server);
        let Some(held) = self.by_conn.get_mut(&key) else {
            return Vec::new();
        };
        let q = &mut held.segments;
        // What followed its last byte without data (ACKs, FIN, RST: the teardown of
        // a connection closed after it) goes with it too, as far as recorded yet;
        // the next segment with data belongs to the next transaction.
        let mut n = q.partition_point(|s| s.ts <= last);
        while q.get(n).is_some_and(|s| s.len == 0) {
            n += 1;
        }
        let taken: Vec<SegmentSummary> = q.drain(..n).collect();
        held.lines -= taken.iter().map(line_bytes).sum::<usize>();
        if held.segments.is_empty() && held.segments.capacity() > 16 {
            held.segments.shrink_to(4);
        }
        let heap = held.heap_bytes();
        self.heap_bytes = self.heap_bytes - held.heap + heap;
        held.heap = heap;
        taken
    }
}

fn first_http_line(payload: &[u8]) -> Option<Box<str>> {
    let head = &payload[..payload.len().min(200)];
    let line = head.split(|b| *b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let is_http = text.starts_with("HTTP/")
        || (text.contains(" HTTP/1.")
            && text
                .split(' ')
                .next()
                .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase())));
    is_http.then(|| text.into())
}

/// Most VRRP runs and gratuitous ARPs kept (a bound against hostile captures).
const MAX_L2_EVENTS: usize = 10_000;

/// Options of a run.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// TCP table limits.
    pub tcp: TcpConfig,
    /// The links sidecar of each input file, by input index.
    pub links: Vec<Option<HostLinks>>,
    /// Verify TCP checksums (count mismatches; never drop).
    pub verify_checksums: bool,
    /// Record every TCP segment's summary and hand it to its transaction
    /// ([`HttpTransaction::segments`]), for diagrams; off, nothing is recorded.
    pub keep_segments: bool,
    /// Bytes IP fragment reassembly may hold (`Decoder::fragment_budget`).
    pub fragment_budget: usize,
    /// Bytes the segment journal may hold when `keep_segments` ([`SegmentJournal`]).
    pub journal_budget: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            tcp: TcpConfig::default(),
            links: Vec::new(),
            verify_checksums: false,
            keep_segments: false,
            fragment_budget: crate::decode::DEFAULT_FRAGMENT_BUDGET,
            journal_budget: SegmentJournal::DEFAULT_BUDGET,
        }
    }
}

/// The whole pipeline from frames to transactions.
pub struct Pipeline {
    decoder: Decoder,
    tcp: TcpTable<HttpConn>,
    http: HttpAnalyzer,
    stats: Stats,
    log: AnomalyLog,
    links: Vec<Option<HostLinks>>,
    vantages: Vec<Vantage>,
    by_iface: Vec<Option<VantageId>>,
    by_ifindex: FxHashMap<(IfaceId, u32), VantageId>,
    vrrp: Vec<VrrpRun>,
    garp: Vec<GratuitousArp>,
    last_expire: Ts,
    journal: Option<SegmentJournal>,
}

impl Pipeline {
    /// A pipeline with `config`.
    pub fn new(config: PipelineConfig) -> Pipeline {
        Pipeline {
            decoder: Decoder::new()
                .verify_checksums(config.verify_checksums)
                .fragment_budget(config.fragment_budget),
            tcp: TcpTable::new(config.tcp),
            http: HttpAnalyzer::new(),
            stats: Stats::default(),
            log: AnomalyLog::default(),
            links: config.links,
            vantages: Vec::new(),
            by_iface: Vec::new(),
            by_ifindex: FxHashMap::default(),
            vrrp: Vec::new(),
            garp: Vec::new(),
            last_expire: Ts(i64::MIN),
            journal: config
                .keep_segments
                .then(|| SegmentJournal::new(config.journal_budget)),
        }
    }

    /// Stops tracking requests waiting for their response
    /// ([`HttpAnalyzer::without_pending_floor`]): for a run that writes transactions
    /// and never asks for [`Pipeline::pending_floor`] (which then says nothing waits).
    pub fn without_pending_floor(&mut self) {
        self.http = std::mem::take(&mut self.http).without_pending_floor();
    }

    /// Keeps only the headers `kept` says of each HTTP message
    /// ([`HttpAnalyzer::keeping_headers`]): for a run whose transactions are only
    /// written, without header lists.
    pub fn keeping_headers(&mut self, kept: KeptHeaders) {
        self.http = std::mem::take(&mut self.http).keeping_headers(kept);
    }

    /// Processes one frame. Completed transactions wait in [`Pipeline::drain`].
    pub fn push(&mut self, frame: &Frame<'_>, interfaces: &Interfaces) {
        self.push_routed(frame, interfaces, None);
    }

    /// As [`Pipeline::push`], except that a TCP segment goes to `route` (when given)
    /// instead of this pipeline's TCP table: the front of a sharded run.
    fn push_routed(
        &mut self,
        frame: &Frame<'_>,
        interfaces: &Interfaces,
        mut route: Option<&mut Route>,
    ) {
        self.stats.frames += 1;
        self.stats.frame_bytes += frame.data.len() as u64;
        if (frame.orig_len as usize) > frame.data.len() {
            self.stats.frames_cut_by_snaplen += 1;
        }
        if frame.ts.0.saturating_sub(self.last_expire.0) > 10_000_000_000 {
            self.last_expire = frame.ts;
            self.decoder.expire(frame.ts, &mut self.stats);
        }
        if let (Some(route), None) = (route.as_deref_mut(), &self.journal) {
            if let Some(fast) = self.decoder.fast_tcp(frame, &mut self.stats) {
                let vantage = vantage_of(
                    &mut self.vantages,
                    &mut self.by_iface,
                    &mut self.by_ifindex,
                    &self.links,
                    frame.iface,
                    None,
                    interfaces,
                );
                let (src, dst) = (IpAddr::V4(fast.src), IpAddr::V4(fast.dst));
                route.segment(frame.ts, vantage, src, dst, &fast.segment, &self.vantages);
                return;
            }
        }
        let decoded = self.decoder.decode(frame, &mut self.stats, &mut self.log);
        let vantage = vantage_of(
            &mut self.vantages,
            &mut self.by_iface,
            &mut self.by_ifindex,
            &self.links,
            frame.iface,
            decoded.link.ifindex,
            interfaces,
        );
        if let (Some(journal), Network::Ip(ip)) = (&mut self.journal, &decoded.net) {
            if let Transport::Tcp(seg) = &ip.transport {
                journal.record(
                    SegmentSummary {
                        ts: frame.ts,
                        vantage,
                        src_mac: decoded.link.src_mac,
                        dst_mac: decoded.link.dst_mac,
                        src: std::net::SocketAddr::new(ip.src, seg.src_port),
                        dst: std::net::SocketAddr::new(ip.dst, seg.dst_port),
                        flags: seg.flags,
                        seq: seg.seq,
                        ack: seg.ack,
                        len: seg.payload.len() as u32 + seg.missing,
                        first_line: first_http_line(seg.payload),
                    },
                    frame.ts,
                    &mut self.stats,
                    &mut self.log,
                );
            }
        }
        match decoded.net {
            Network::Ip(ip) => match &ip.transport {
                Transport::Tcp(seg) => match route {
                    Some(route) => {
                        route.segment(frame.ts, vantage, ip.src, ip.dst, seg, &self.vantages)
                    }
                    None => self.tcp.segment(
                        &mut self.http,
                        frame.ts,
                        vantage,
                        ip.src,
                        ip.dst,
                        seg,
                        &mut self.stats,
                        &mut self.log,
                    ),
                },
                Transport::Vrrp(advert) => {
                    // A run continues while adverts keep coming (within 3 intervals,
                    // VRRP's master-down time).
                    let gap_limit = 3 * i64::from(advert.interval_centis.max(1)) * 10_000_000;
                    let room = self.vrrp.len() < MAX_L2_EVENTS;
                    let extends = self.vrrp.iter_mut().rev().find(|r| {
                        r.vrid == advert.vrid && r.source == ip.src && r.priority == advert.priority
                    });
                    match extends {
                        Some(r) if frame.ts.0 - r.last_ts.0 <= gap_limit => {
                            r.last_ts = frame.ts;
                            r.adverts += 1;
                        }
                        _ if room => self.vrrp.push(VrrpRun {
                            vrid: advert.vrid,
                            source: ip.src,
                            priority: advert.priority,
                            addresses: advert.addresses.clone(),
                            first_ts: frame.ts,
                            last_ts: frame.ts,
                            adverts: 1,
                        }),
                        _ => {}
                    }
                }
                _ => {}
            },
            Network::Arp(arp) if arp.is_gratuitous() && self.garp.len() < MAX_L2_EVENTS => {
                self.garp.push(GratuitousArp {
                    ts: frame.ts,
                    vantage,
                    ip: IpAddr::V4(arp.sender_ip),
                    mac: mac_string(&arp.sender_mac),
                });
            }
            _ => {}
        }
    }

    /// Transactions completed since the last call.
    pub fn drain(&mut self) -> std::vec::Drain<'_, HttpTransaction> {
        self.attach_segments();
        self.http.completed.drain(..)
    }

    /// Hands each completed transaction its connection's recorded segments, and
    /// forgets (every 10 s of capture time) those of connections no longer tracked.
    fn attach_segments(&mut self) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        for t in &mut self.http.completed {
            t.segments = journal.take_for(t);
        }
        let now = self.last_expire;
        if now.0.saturating_sub(journal.last_sweep.0) > 10_000_000_000 {
            journal.last_sweep = now;
            let tcp = &mut self.tcp;
            let mut freed = 0;
            journal.by_conn.retain(|&(v, a, b), h| {
                let keep = tcp.conn_mut(v, a, b).is_some();
                if !keep {
                    freed += h.heap;
                }
                keep
            });
            journal.heap_bytes -= freed;
            journal.compact();
            if journal.by_conn.len() < journal.by_conn.capacity() / 4 {
                journal.by_conn.shrink_to(journal.by_conn.len() * 2);
                journal.order.shrink_to(journal.order.len() * 2);
            }
        }
    }

    /// Hands each transaction completed since the last call to `f`, with the vantage
    /// table that names its capture point; stops at the first error.
    pub fn emit<E>(
        &mut self,
        mut f: impl FnMut(&HttpTransaction, &[Vantage]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.attach_segments();
        for t in self.http.completed.drain(..) {
            f(&t, &self.vantages)?;
        }
        Ok(())
    }

    /// Whether transactions are waiting in [`Pipeline::drain`].
    pub fn has_completed(&self) -> bool {
        !self.http.completed.is_empty()
    }

    /// How many transactions are waiting in [`Pipeline::drain`].
    pub fn completed_len(&self) -> usize {
        self.http.completed.len()
    }

    /// Ends the input: closes every connection (their transactions become drainable)
    /// and drops the partial datagrams left, counted in `ip_fragments_dropped`.
    pub fn finish(&mut self) {
        self.tcp.finish(&mut self.http, &mut self.stats);
        self.decoder.expire(Ts(i64::MAX), &mut self.stats);
    }

    /// All counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.merge(&self.http.stats);
        s
    }

    /// Anomaly samples of every stage.
    pub fn anomalies(&self) -> AnomalyLog {
        combine_logs(&self.log, &self.http.log)
    }

    /// Every vantage point, indexed by [`VantageId`].
    pub fn vantages(&self) -> &[Vantage] {
        &self.vantages
    }

    /// VRRP advert runs, in order of first advert.
    pub fn vrrp(&self) -> &[VrrpRun] {
        &self.vrrp
    }

    /// Gratuitous ARPs, in capture order.
    pub fn gratuitous_arps(&self) -> &[GratuitousArp] {
        &self.garp
    }

    /// The first byte of the oldest request still waiting for its response (see
    /// [`HttpAnalyzer::pending_floor`]): transactions completed later start no
    /// earlier, which tells correlation how far it may decide.
    pub fn pending_floor(&mut self, now: Ts, max_age_ns: i64) -> Option<Ts> {
        for (vantage, client, server) in self.http.overdue_one_way(now) {
            if let Some((conn, meta)) = self.tcp.conn_mut(vantage, client, server) {
                self.http.settle_one_way(conn, meta);
            }
        }
        // The oldest waiting requests whose connection went silent right after them.
        for (key, (vantage, client, server)) in self.http.waiting_past_grace(now, 64) {
            if let Some((conn, meta)) = self.tcp.conn_mut(vantage, client, server) {
                self.http.release_if_silent(key, conn, meta);
            }
        }
        self.http.pending_floor(now, max_age_ns)
    }

    /// Connections tracked now.
    pub fn open_connections(&self) -> usize {
        self.tcp.len()
    }
}

/// The samples of the decode and TCP stages' log, then the HTTP stage's while
/// there is room, in time order.
fn combine_logs(log: &AnomalyLog, http: &AnomalyLog) -> AnomalyLog {
    let mut log = log.clone();
    // `tags` pair samples with connections inside one sharded stage only.
    log.tags.clear();
    for a in &http.samples {
        if log.samples.len() < AnomalyLog::CAPACITY {
            log.samples.push(a.clone());
        } else {
            log.not_kept += 1;
        }
    }
    log.not_kept += http.not_kept;
    log.samples.sort_by_key(|a| a.ts);
    log
}

#[allow(clippy::too_many_arguments)]
fn vantage_of(
    vantages: &mut Vec<Vantage>,
    by_iface: &mut Vec<Option<VantageId>>,
    by_ifindex: &mut FxHashMap<(IfaceId, u32), VantageId>,
    links: &[Option<HostLinks>],
    iface: IfaceId,
    ifindex: Option<u32>,
    interfaces: &Interfaces,
) -> VantageId {
    let slot = iface.0 as usize;
    if ifindex.is_none() {
        if let Some(Some(v)) = by_iface.get(slot) {
            return *v;
        }
    } else if let Some(v) = by_ifindex.get(&(iface, ifindex.unwrap_or(0))) {
        return *v;
    }
    let desc = interfaces.get(iface);
    let interface = match ifindex {
        Some(ix) => links
            .get(desc.file)
            .and_then(|l| l.as_ref())
            .and_then(|l| l.by_index(ix))
            .map(|l| l.ifname.clone())
            .unwrap_or_else(|| format!("ifindex {ix}")),
        None => desc
            .name
            .clone()
            .unwrap_or_else(|| format!("if {}", desc.index_in_file)),
    };
    vantages.push(Vantage {
        file: desc.file_name.clone(),
        file_index: desc.file,
        interface,
        ifindex,
    });
    let id = (vantages.len() - 1) as VantageId;
    match ifindex {
        Some(ix) => {
            by_ifindex.insert((iface, ix), id);
        }
        None => {
            if by_iface.len() <= slot {
                by_iface.resize(slot + 1, None);
            }
            by_iface[slot] = Some(id);
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn summary(client: SocketAddr, ts: i64, line: Option<&str>) -> SegmentSummary {
        SegmentSummary {
            ts: Ts(ts),
            vantage: 0,
            src_mac: None,
            dst_mac: None,
            src: client,
            dst: "192.0.2.80:80".parse().unwrap(),
            flags: 0x02,
            seq: 1,
            ack: 0,
            len: line.map_or(0, |l| l.len() as u32),
            first_line: line.map(Into::into),
        }
    }

    fn client(i: u32) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V4((0xc612_0000 + (i >> 8)).into()),
            1024 + (i & 0xff) as u16,
        )
    }

    /// A SYN flood's connections, one summary each, pass the journal's share: the
    /// accounted bytes stay within it, the connections recorded first are evicted
    /// (counted, each sampled), and a real connection recorded in the middle of the
    /// flood keeps every segment it records.
    #[test]
    fn journal_stays_within_its_share_and_evicts_oldest_connections_first() {
        let budget = 256 << 10;
        let mut j = SegmentJournal::new(budget);
        let mut stats = Stats::default();
        let mut log = AnomalyLog::default();
        let real: SocketAddr = "10.9.0.1:50000".parse().unwrap();
        let mut peak = 0;
        for i in 0..20_000u32 {
            j.record(
                summary(client(i), i64::from(i), None),
                Ts(0),
                &mut stats,
                &mut log,
            );
            if (15_000..15_008).contains(&i) {
                let line = (i == 15_003).then_some("GET /real HTTP/1.1");
                j.record(
                    summary(real, i64::from(i), line),
                    Ts(0),
                    &mut stats,
                    &mut log,
                );
            }
            if i == 15_007 {
                // Its transaction would take them now (and leave an empty entry).
                let key = conn_key(0, real, "192.0.2.80:80".parse().unwrap());
                let held = &j.by_conn[&key];
                assert_eq!(held.segments.len(), 8);
                assert_eq!(held.lines, "GET /real HTTP/1.1".len());
            }
            peak = peak.max(j.memory_bytes());
        }
        assert!(peak <= budget, "{peak} bytes held, share {budget}");
        // Every flood connection still held is younger than every one evicted (the
        // real one, older than the last hundreds, is gone too).
        let flood_held = j.by_conn.len() as u64;
        assert!(flood_held > 400, "{flood_held}");
        assert_eq!(stats.segments_evicted, 20_000 + 8 - flood_held);
        assert!(j.by_conn.contains_key(&conn_key(
            0,
            client(19_999),
            "192.0.2.80:80".parse().unwrap()
        )));
        assert!(!j
            .by_conn
            .contains_key(&conn_key(0, client(0), "192.0.2.80:80".parse().unwrap())));
        assert_eq!(stats.segments_not_kept, 0);
        // One sample per connection evicted (the real one's eight segments in one).
        assert_eq!(
            log.samples.len() as u64 + log.not_kept,
            stats.segments_evicted - 7
        );
        assert_eq!(log.samples[0].kind, "segments_evicted");
        // The heap counted is what the entries hold.
        let heap: usize = j.by_conn.values().map(Held::heap_bytes).sum();
        assert_eq!(j.heap_bytes, heap);
    }

    /// One connection holds at most `MAX_CONNECTION_BYTES`: its first segments are
    /// kept, the rest counted as not kept.
    #[test]
    fn one_connection_holds_at_most_its_bound() {
        let mut j = SegmentJournal::new(SegmentJournal::DEFAULT_BUDGET);
        let mut stats = Stats::default();
        let mut log = AnomalyLog::default();
        let c: SocketAddr = "10.9.0.1:50000".parse().unwrap();
        for i in 0..5_000 {
            j.record(summary(c, i, None), Ts(0), &mut stats, &mut log);
        }
        let held = j.by_conn.values().next().unwrap();
        assert!(held.heap <= SegmentJournal::MAX_CONNECTION_BYTES);
        assert_eq!(held.segments.front().unwrap().ts, Ts(0));
        assert_eq!(stats.segments_not_kept, 5_000 - held.segments.len() as u64);
        assert!(held.segments.len() > 500, "{}", held.segments.len());
        assert_eq!(stats.segments_evicted, 0);
    }
}
