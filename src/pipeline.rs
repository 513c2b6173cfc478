//! Pushes frames through decode, TCP and HTTP, and keeps what later stages need:
//! vantage points, VRRP adverts and gratuitous ARPs.

use crate::anomaly::{AnomalyLog, Stats};
use crate::capture::{Frame, IfaceId, Interfaces};
use crate::decode::{Decoder, Network, Transport};
use crate::http::{HttpAnalyzer, HttpConn, HttpTransaction};
use crate::links::HostLinks;
use crate::tcp::{conn_key, mac_string, ConnKey, SegmentSummary, TcpConfig, TcpTable, VantageId};
use crate::time::Ts;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::net::IpAddr;

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
/// Bounded: at most [`SegmentJournal::MAX_PER_CONNECTION`] segments wait per
/// connection and [`SegmentJournal::MAX_HELD`] in all (past either, new segments are
/// not recorded, counted as `segments_not_kept`: the first ones, with the handshake
/// and the request, are what the diagrams need most), and a connection's entry goes
/// when the TCP table drops the connection.
#[derive(Default)]
pub struct SegmentJournal {
    by_conn: FxHashMap<ConnKey, std::collections::VecDeque<SegmentSummary>>,
    /// Segments held in `by_conn`.
    held: usize,
    last_sweep: Ts,
}

impl SegmentJournal {
    /// Segments kept per connection between two of its transactions.
    pub const MAX_PER_CONNECTION: usize = 1024;
    /// Segments held at once over all connections (about 100 bytes each): connections
    /// that never carry a transaction (TLS, databases) must not fill memory.
    pub const MAX_HELD: usize = 1 << 20;

    fn record(&mut self, seg: SegmentSummary, stats: &mut Stats) {
        if self.held >= Self::MAX_HELD {
            stats.segments_not_kept += 1;
            return;
        }
        let q = self.by_conn.entry(seg.conn_key()).or_default();
        if q.len() >= Self::MAX_PER_CONNECTION {
            stats.segments_not_kept += 1;
            return;
        }
        q.push_back(seg);
        self.held += 1;
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
        let Some(q) = self
            .by_conn
            .get_mut(&conn_key(t.vantage, t.client, t.server))
        else {
            return Vec::new();
        };
        // What followed its last byte without data (ACKs, FIN, RST: the teardown of
        // a connection closed after it) goes with it too, as far as recorded yet;
        // the next segment with data belongs to the next transaction.
        let mut n = q.partition_point(|s| s.ts <= last);
        while q.get(n).is_some_and(|s| s.len == 0) {
            n += 1;
        }
        self.held -= n;
        q.drain(..n).collect()
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
#[derive(Clone, Debug, Default)]
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
            decoder: Decoder::new().verify_checksums(config.verify_checksums),
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
            journal: config.keep_segments.then(SegmentJournal::default),
        }
    }

    /// Processes one frame. Completed transactions wait in [`Pipeline::drain`].
    pub fn push(&mut self, frame: &Frame<'_>, interfaces: &Interfaces) {
        self.stats.frames += 1;
        self.stats.frame_bytes += frame.data.len() as u64;
        if (frame.orig_len as usize) > frame.data.len() {
            self.stats.frames_cut_by_snaplen += 1;
        }
        if frame.ts.0.saturating_sub(self.last_expire.0) > 10_000_000_000 {
            self.last_expire = frame.ts;
            self.decoder.expire(frame.ts, &mut self.stats);
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
                    &mut self.stats,
                );
            }
        }
        match decoded.net {
            Network::Ip(ip) => match &ip.transport {
                Transport::Tcp(seg) => self.tcp.segment(
                    &mut self.http,
                    frame.ts,
                    vantage,
                    ip.src,
                    ip.dst,
                    seg,
                    &mut self.stats,
                    &mut self.log,
                ),
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
            journal.by_conn.retain(|&(v, a, b), q| {
                let keep = tcp.conn_mut(v, a, b).is_some();
                if !keep {
                    freed += q.len();
                }
                keep
            });
            journal.held -= freed;
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

    /// Ends the input: closes every connection (their transactions become drainable).
    pub fn finish(&mut self) {
        self.tcp.finish(&mut self.http, &mut self.stats);
    }

    /// All counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.merge(&self.http.stats);
        s
    }

    /// Anomaly samples of every stage.
    pub fn anomalies(&self) -> AnomalyLog {
        let mut log = self.log.clone();
        for a in &self.http.log.samples {
            if log.samples.len() < AnomalyLog::CAPACITY {
                log.samples.push(a.clone());
            } else {
                log.not_kept += 1;
            }
        }
        log.not_kept += self.http.log.not_kept;
        log.samples.sort_by_key(|a| a.ts);
        log
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
