//! The streaming correlation engine: transactions go in as the pipeline completes
//! them, each request path comes out as soon as it is final, and is then forgotten.
//!
//! **The floor.** Every decision waits until nothing that could change it can still
//! arrive. The pipeline says how far that is: the oldest request still waiting for its
//! response (a transaction reaches correlation when it completes), else the newest
//! packet time (the watermark: files are merged by time, so every input has reached
//! it). Clock offsets move it back by the largest offset, and an allowed lateness
//! (a request whose header block is still being reassembled) by a little more. A
//! request that stays unanswered longer than `max_request_duration` stops holding the
//! floor; if it completes after all, it is counted as late.
//!
//! **Decisions**, in rounds as the floor advances ([`Engine::advance`]):
//! 1. An exchange whose request lies behind the floor has every possible parent (an
//!    inbound exchange at the proxy that sent it, which must have started before it)
//!    in: its candidates are scored once (`link`).
//! 2. It is *ready* once every candidate's response lies behind the floor: then every
//!    competitor for those candidates has been scored too. The ready ones are assigned
//!    together with the others still waiting (an exact assignment, `assign`); only the
//!    ready ones' links are kept, the rest are assigned again next round with more
//!    known (a sliding-window assignment).
//! 3. An exchange whose response lies behind the floor can gain no new child and
//!    leaves the candidate index. A path is final when its root and every exchange
//!    under it are decided and out of the index; it is built, emitted, and its
//!    exchanges are dropped.
//!
//! Memory is what is in flight: exchanges between their arrival and their path's
//! emission, bounded by `max_open_exchanges` (past it, a round decides everything
//! that has arrived, counted as forced).

use super::assign;
use super::clock::ClockEstimator;
use super::link::{self, Inbound, Rarity, Upstream, UriHabits};
use super::names::Names;
use super::record::{order_views, Msg, NameBook, View, ViewIn};
use super::report::*;
use super::roles::product_and_role;
use super::summary::SummaryBuilder;
use super::vip;
use super::workers::{self, Workers};
use crate::http::HttpTransaction;
use crate::links::HostLinks;
use crate::pipeline::{GratuitousArp, Vantage, VrrpRun};
use crate::time::Ts;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::rc::Rc;

/// What the engine reads besides transactions: where they were seen, and the layer-2
/// events (both grow during a run; pass the pipeline's current ones).
pub struct Context<'a> {
    /// Capture points.
    pub vantages: &'a [Vantage],
    /// Capture files (or hosts, live), in input order.
    pub files: &'a [String],
    /// Links sidecar per file.
    pub links: &'a [Option<HostLinks>],
    /// The topology file, if given.
    pub names: Option<&'a Names>,
    /// VRRP advert runs so far.
    pub vrrp: &'a [VrrpRun],
    /// Gratuitous ARPs so far.
    pub garp: &'a [GratuitousArp],
}

impl Context<'_> {
    /// The host name of capture `file` (the topology file's, or the file's name
    /// without extensions).
    pub fn host(&self, file: usize) -> String {
        let stem = host_of(self.files.get(file).map(String::as_str).unwrap_or("?"));
        match self.names {
            Some(n) => n.host(&stem),
            None => stem,
        }
    }

    fn capture_ref(&self, vantage: usize) -> CaptureRef {
        match self.vantages.get(vantage) {
            Some(v) => CaptureRef {
                file: v.file.clone(),
                interface: v.interface.clone(),
            },
            None => CaptureRef {
                file: "?".into(),
                interface: "?".into(),
            },
        }
    }
}

/// Host name of a capture file: its name without directories and capture extensions.
pub fn host_of(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let mut stem = name;
    for suffix in [".gz", ".pcapng", ".pcap", ".cap"] {
        stem = stem.strip_suffix(suffix).unwrap_or(stem);
    }
    stem.to_string()
}

/// The engine's limits. Times are nanoseconds of capture time.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Clock jitter allowed between interfaces when nesting exchanges.
    pub tolerance_ns: i64,
    /// How late a transaction may reach correlation behind the floor (its header
    /// block being reassembled, interfaces' timestamps slightly out of order).
    pub lateness_ns: i64,
    /// Longest a proxy may take between receiving a request and sending its
    /// upstream request.
    pub max_proxy_delay_ns: i64,
    /// Longest a request may wait for its response and still hold back decisions.
    pub max_request_duration_ns: i64,
    /// A view that saw only a retransmission (same sequence number, newer
    /// acknowledgement) joins an exchange whose request is this close.
    pub view_join_ns: i64,
    /// Most exchanges held at once.
    pub max_open_exchanges: usize,
    /// Most bytes the exchanges held may take, by [`Engine::open_bytes`]'s
    /// accounting; past it, as past `max_open_exchanges`, a round decides everything
    /// arrived (counted in `forced_rounds`). What bounds correlation's memory when
    /// exchanges are large (long URIs, many headers, many views, segments for
    /// diagrams).
    pub max_open_bytes: usize,
    /// Longest decisions wait at the start for clock offsets between captures.
    pub max_clock_wait_ns: i64,
    /// Samples an estimated offset needs before decisions start.
    pub clock_min_samples: usize,
    /// Decisions are taken when the floor has moved this far.
    pub round_ns: i64,
    /// Clock offsets given by the user (seconds to subtract), per file.
    pub offset_overrides: Vec<Option<f64>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tolerance_ns: 200_000,
            lateness_ns: 100_000_000,
            max_proxy_delay_ns: 30_000_000_000,
            max_request_duration_ns: 30_000_000_000,
            view_join_ns: 1_000_000_000,
            max_open_exchanges: 200_000,
            max_open_bytes: 200_000 * EXCHANGE_BYTES,
            max_clock_wait_ns: 5_000_000_000,
            clock_min_samples: 8,
            round_ns: 20_000_000,
            offset_overrides: Vec::new(),
        }
    }
}

/// What the engine counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineStats {
    /// Transactions taken (those with a request).
    pub views: u64,
    /// Transactions without a request (a response whose request was not captured).
    pub views_without_request: u64,
    /// Exchanges (a request at one or more capture points).
    pub exchanges: u64,
    /// Transactions that arrived after the floor had passed their request: they may
    /// miss a link or make a separate path.
    pub late_views: u64,
    /// Late transactions without a response that matched no exchange still held:
    /// left out (they would only make a false unanswered path).
    pub late_views_dropped: u64,
    /// Candidate parents left out because an exchange had more than
    /// `MAX_CANDIDATES` (the lowest scored).
    pub candidates_not_kept: u64,
    /// Alias groups (addresses of one proxy) left out for being larger than 16.
    pub alias_groups_not_kept: u64,
    /// Rounds of decisions.
    pub rounds: u64,
    /// Rounds that decided everything arrived because `max_open_exchanges` or
    /// `max_open_bytes` was reached.
    pub forced_rounds: u64,
    /// Proxy links made.
    pub links: u64,
    /// Proxies found to keep their order per worker (a split of their client
    /// connections learned and kept: docs/correlation.md, "Worker order").
    pub worker_splits_kept: u64,
    /// Proxies whose learned split did no better than chance on the window after
    /// the one it was learned on (one order kept, or too little to tell).
    pub worker_splits_rejected: u64,
    /// Proxies that stopped learning their workers because what all proxies held
    /// while learning reached its bound (`workers::MAX_HELD`, 16 MiB).
    pub worker_learning_not_kept: u64,
    /// Proxy links the assignment made as the merge that keeps each worker's order
    /// gave them (that parent is preferred, `WORKER_ORDER_BONUS`).
    pub worker_order_links: u64,
    /// Upstream exchanges attached as retries.
    pub retries: u64,
    /// Most exchanges held at once.
    pub peak_open_exchanges: u64,
    /// Failed paths not kept for the failover list (beyond its bound).
    pub failed_paths_not_kept: u64,
}

/// Everything the engine reports once the input has ended (the paths went out
/// one by one).
#[derive(Clone, Debug, Serialize)]
pub struct Tail {
    /// Which host held each VIP when.
    pub vip_timeline: Vec<VipHolding>,
    /// VIP moves.
    pub failovers: Vec<Failover>,
    /// Capture clock offsets.
    pub clock_offsets: Vec<ClockOffset>,
    /// Offsets that changed after paths were emitted.
    pub clock_offset_changes: Vec<OffsetChange>,
    /// Names, addresses, MACs, roles.
    pub address_book: Vec<AddressEntry>,
    /// Failed paths as sentences (bounded).
    pub anomalies: Vec<String>,
    /// Sentences not kept.
    pub anomalies_not_kept: u64,
    /// Totals and latency figures.
    pub summary: PathSummary,
    /// The engine's counters.
    pub engine: EngineStats,
}

/// Bytes an exchange holds besides its views and messages (`View::heap_bytes`,
/// `Msg::heap_bytes`): its own struct and hash table bucket, its entries in the
/// indexes (by wire position, sequence number, connection, start, end, and the
/// inbound index), and what rounds add (candidates, evidence, bidders).
///
/// Measured with `flowtrace-bench exchange-bytes` (a counting allocator; the
/// captures' transactions fed to the engine as `flowtrace pcap --paths` does): the
/// heap at its peak less the views' and messages' bytes, per exchange held, was
/// 1,514 (captures/highconc-2000), 1,783 (keepalive-500) and 1,724
/// (real-stock-600) bytes; 1,800 rounds the largest up.
pub const EXCHANGE_OVERHEAD: usize = 1_800;

/// Bytes of one typical exchange held by correlation, all in (overhead, views and
/// message): what `--memory-budget` gives correlation per `--max-open-exchanges`.
///
/// Measured with `flowtrace-bench exchange-bytes` (docs/hostile.md): the heap at its
/// peak per exchange held was 2,935 bytes on captures/highconc-2000 (4,778 exchanges
/// held, 4.7 views each: four captures, NAT and proxies), 3,209 on keepalive-500 and
/// 3,074 on real-stock-600; 3,200 rounds them up. Larger exchanges (segment summaries
/// with `--svg`: 5,267 bytes; requests at the HTTP stage's bounds: 26,489) are bounded
/// in bytes by [`EngineConfig::max_open_bytes`], which counts each one's own size.
pub const EXCHANGE_BYTES: usize = 3_200;

const MAX_FAILED_KEPT: usize = 10_000;
const MAX_ANOMALIES_KEPT: usize = 1_000;
const MAX_ADDRESSES_KEPT: usize = 65_536;
/// Most addresses one proxy may have ([`Engine::add_alias_group`]).
const MAX_ALIASES: usize = 16;
/// Candidate parents kept per exchange (the best by score; the rest are counted as
/// `candidates_not_kept`). A proxy at concurrency C has about C inbound requests open
/// when it sends one upstream.
const MAX_CANDIDATES: usize = 64;

/// Added in the assignment to the weight of the parent the worker-order merge gives
/// an upstream (`workers::merge`): more than the timing scores of two candidates
/// differ by, so the merge's choice stands, and a twentieth of a link's worth, so
/// the assignment still departs from it where that links one more exchange. The
/// merge passes over inbound exchanges it cannot fit into a worker's order; taken
/// as they were, its links left three upstreams of real-haproxy-stock-max without
/// a parent (2,003 paths for 2,000 requests). With any bonus from 0.005 to 0.1 of a
/// link's worth it makes 2,000 paths, 1,743 right; at 0.2, 2,001 (docs/correlation.md).
const WORKER_ORDER_BONUS: f64 = link::CANDIDATE_BASE / 20.0;
/// Exchanges decided by one assignment at most (a round with more runs several, oldest
/// first). Rounds in step with the input decide tens to hundreds; this bounds the
/// catch-up after a floor held back by a request waiting for its response.
const MAX_READY_PER_ASSIGNMENT: usize = 4096;
/// Exchanges in one assignment at most, those decided and their context together.
const MAX_ASSIGNMENT_BIDDERS: usize = 8192;
/// Hops of one path at most (a loop in the capture cannot build an endless path).
const MAX_HOPS: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum UState {
    /// Its request is not behind the floor yet: parents may still arrive.
    Open,
    /// Candidates scored, link not decided.
    Active,
    /// Link decided (a parent or none).
    Decided,
}

struct Exchange {
    views: Vec<View>,
    /// Its bytes as counted in `Engine::open_bytes`.
    bytes: usize,
    /// Index keys that point at it.
    pos_keys: Vec<(u32, u32)>,
    seq_keys: Vec<u32>,
    conn_keys: Vec<(u32, u32, u32)>,
    /// Key in `open` (first view's request time) while `Open`.
    open_key: Option<Ts>,
    /// Key in `inbound` and `by_end` while it may still gain children.
    inbound_key: Option<(IpAddr, Ts, Ts)>,
    /// Its response lies behind the floor: out of the candidate index for good.
    parent_closed: bool,
    state: UState,
    /// Candidate parents: (id, the assignment's score, the confidence's score; see
    /// [`link::Scores`]).
    cands: Vec<(u64, f64, f64)>,
    ready_at: Ts,
    /// The parent, the link's confidence, its evidence and its runner-ups.
    parent: Option<(u64, f64, Vec<String>, Vec<Alternative>)>,
    children: Vec<u64>,
    taken: bool,
    /// The undecided exchanges that have it as a candidate parent.
    bidders: Vec<u64>,
}

impl Exchange {
    fn first(&self) -> &View {
        &self.views[0]
    }
    fn last(&self) -> &View {
        self.views.last().expect("an exchange has a view")
    }
    fn end(&self) -> Ts {
        self.views.iter().map(View::end).max().expect("a view")
    }
    fn children_final(&self) -> bool {
        self.state == UState::Decided && self.parent_closed && self.bidders.is_empty()
    }
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    owned: FxHashSet<(usize, IpAddr)>,
    clock: ClockEstimator,
    shifts: Vec<i64>,
    offsets: Vec<ClockOffset>,
    offset_changes: Vec<OffsetChange>,
    samples_at_estimate: u64,
    started: Option<Ts>,
    settled: bool,
    next_ex: u64,
    exchanges: FxHashMap<u64, Exchange>,
    by_pos: FxHashMap<(u32, u32), u64>,
    by_seq: FxHashMap<u32, Vec<u64>>,
    by_conn: FxHashMap<(u32, u32, u32), u64>,
    inbound: FxHashMap<IpAddr, BTreeSet<(Ts, u64)>>,
    by_end: BTreeSet<(Ts, u64)>,
    open: BTreeSet<(Ts, u64)>,
    active: Vec<u64>,
    roots: Vec<u64>,
    rarity: Rarity,
    names: NameBook,
    floor: Ts,
    last_round: Ts,
    next_path: usize,
    summary: SummaryBuilder,
    failed: Vec<FailedPath>,
    anomalies: Vec<String>,
    anomalies_not_kept: u64,
    roles: BTreeMap<IpAddr, (Role, String)>,
    /// Servers (as the proxy received them) seen forwarding a request upstream: a
    /// leaf answered by one of them is a proxy whose upstream was not seen, not a
    /// backend (roles come from behaviour, never from product names).
    forwarders: FxHashSet<std::net::SocketAddr>,
    /// Other addresses of the same proxy, for an upstream sent from an address that
    /// is not the one its inbound request reached (a two-armed proxy, a host with a
    /// front and a back network): the addresses one capturing host owns (links
    /// sidecars), and those a topology file gives one service name.
    aliases: FxHashMap<IpAddr, Vec<IpAddr>>,
    /// Whether each proxy keeps URIs, learned from unambiguous links.
    habits: UriHabits,
    /// Each proxy's workers: the order it keeps per worker, learned (`workers`).
    workers: Workers,
    timeline: Vec<VipHolding>,
    vrrp_seen: (usize, u64),
    stats: EngineStats,
    open_bytes: usize,
    peak_open_bytes: usize,
}

impl Engine {
    /// An engine over `files` (capture files, or the host's name live) with their
    /// links sidecars.
    pub fn new(cfg: EngineConfig, files: &[String], links: &[Option<HostLinks>]) -> Engine {
        let owned: FxHashSet<(usize, IpAddr)> = links
            .iter()
            .enumerate()
            .filter_map(|(f, l)| Some((f, l.as_ref()?)))
            .flat_map(|(f, l)| {
                l.links
                    .iter()
                    .flat_map(move |link| link.addresses.iter().map(move |a| (f, *a)))
            })
            .collect();
        let mut overrides = cfg.offset_overrides.clone();
        overrides.resize(files.len(), None);
        let clock = ClockEstimator::new(files.to_vec(), overrides);
        let offsets = clock.estimate();
        let shifts = offsets
            .iter()
            .map(|o| (o.offset_s * 1e9).round() as i64)
            .collect();
        let mut by_file: BTreeMap<usize, Vec<IpAddr>> = BTreeMap::new();
        for &(f, ip) in &owned {
            if !ip.is_loopback() && !ip.is_unspecified() {
                by_file.entry(f).or_default().push(ip);
            }
        }
        let mut engine = Engine {
            settled: files.len() <= 1
                || cfg.offset_overrides.iter().filter(|o| o.is_some()).count() + 1 >= files.len(),
            cfg,
            owned,
            clock,
            shifts,
            offsets,
            offset_changes: Vec::new(),
            samples_at_estimate: 0,
            started: None,
            next_ex: 0,
            exchanges: FxHashMap::default(),
            by_pos: FxHashMap::default(),
            by_seq: FxHashMap::default(),
            by_conn: FxHashMap::default(),
            inbound: FxHashMap::default(),
            by_end: BTreeSet::new(),
            open: BTreeSet::new(),
            active: Vec::new(),
            roots: Vec::new(),
            rarity: Rarity::new(),
            names: NameBook::default(),
            floor: Ts(i64::MIN),
            last_round: Ts(i64::MIN),
            next_path: 0,
            summary: SummaryBuilder::default(),
            failed: Vec::new(),
            anomalies: Vec::new(),
            anomalies_not_kept: 0,
            roles: BTreeMap::new(),
            forwarders: FxHashSet::default(),
            aliases: FxHashMap::default(),
            habits: UriHabits::new(),
            workers: Workers::default(),
            timeline: Vec::new(),
            vrrp_seen: (0, 0),
            stats: EngineStats::default(),
            open_bytes: 0,
            peak_open_bytes: 0,
        };
        for group in by_file.into_values() {
            engine.add_alias_group(&group);
        }
        engine
    }

    /// One more capture (a host that joined a running collector), numbered after the
    /// others, with its interfaces; its offset is `none` until samples give one.
    pub fn add_file(&mut self, name: String, links: Option<&HostLinks>) {
        let f = self.shifts.len();
        self.clock.add_file(name.clone());
        self.shifts.push(0);
        self.offsets.push(ClockOffset {
            capture: name,
            offset_s: 0.0,
            uncertainty_s: 0.0,
            samples: 0,
            method: super::ClockMethod::None,
            agent_clock: None,
        });
        let mut group = Vec::new();
        for a in links
            .iter()
            .flat_map(|l| &l.links)
            .flat_map(|l| &l.addresses)
        {
            self.owned.insert((f, *a));
            if !a.is_loopback() && !a.is_unspecified() {
                group.push(*a);
            }
        }
        self.add_alias_group(&group);
        // Decisions already started: the new capture's offset comes as it can.
    }

    /// What capture `file`'s agent clock says against the collector's (used while its
    /// exchanges share nothing with another capture's).
    pub fn set_agent_clock(&mut self, file: usize, clock: super::AgentClock) {
        self.clock.set_agent_clock(file, clock);
    }

    /// Makes `group` addresses of one proxy: an upstream sent from any of them may
    /// have been caused by a request that reached any other. A group larger than
    /// 16 addresses is left out (a host with that many addresses is a router or a
    /// node of many services, and linking across all of them would only add wrong
    /// candidates); counted in `alias_groups_not_kept`.
    pub fn add_alias_group(&mut self, group: &[IpAddr]) {
        let mut group: Vec<IpAddr> = group.to_vec();
        group.sort_unstable();
        group.dedup();
        if group.len() < 2 {
            return;
        }
        if group.len() > MAX_ALIASES {
            self.stats.alias_groups_not_kept += 1;
            return;
        }
        for &ip in &group {
            let list = self.aliases.entry(ip).or_default();
            for &other in &group {
                if other != ip && !list.contains(&other) && list.len() < MAX_ALIASES {
                    list.push(other);
                }
            }
        }
    }

    /// Exchanges held now.
    pub fn open_exchanges(&self) -> usize {
        self.exchanges.len()
    }

    /// Bytes the exchanges held now take, by estimate: each message and view
    /// (`Msg::heap_bytes`, `View::heap_bytes`) and [`EXCHANGE_OVERHEAD`] an
    /// exchange.
    pub fn open_bytes(&self) -> usize {
        self.open_bytes
    }

    /// The most [`Engine::open_bytes`] has been.
    pub fn peak_open_bytes(&self) -> usize {
        self.peak_open_bytes
    }

    /// Paths emitted so far.
    pub fn paths_emitted(&self) -> usize {
        self.next_path
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn shift(&self, file: usize) -> i64 {
        self.shifts.get(file).copied().unwrap_or(0)
    }

    /// Takes one completed transaction; `now` is the watermark (newest packet time)
    /// when it completed.
    ///
    /// The transaction's segment summaries (`HttpTransaction::segments`, kept for
    /// diagrams) are moved into the engine, not copied.
    pub fn ingest(&mut self, t: &mut HttpTransaction, vantages: &[Vantage], now: Ts) {
        let Some(v) = ViewIn::of(t) else {
            self.stats.views_without_request += 1;
            return;
        };
        let segments = std::mem::take(&mut t.segments);
        let t = &*t;
        self.ingest_view(
            v,
            |names| Msg::from_transaction(t, names),
            segments,
            vantages,
            now,
        );
    }

    /// Takes one exchange an agent recorded on another host (`crate::remote`): the
    /// same as [`Engine::ingest`] of the transaction it was made from.
    pub fn ingest_remote(
        &mut self,
        x: crate::remote::ExchangeRec,
        msg: crate::remote::MsgRec,
        vantage: usize,
        vantages: &[Vantage],
        now: Ts,
    ) {
        let (v, _, segments) = x.into_parts(vantage);
        self.ingest_view(v, |names| msg.into_msg(names), segments, vantages, now);
    }

    /// Learns the names of header hashes (agents send each name once), for the
    /// evidence sentences.
    pub fn learn_header_names(&mut self, names: &[(u64, String)]) {
        for (h, n) in names {
            self.names.learn(*h, n);
        }
    }

    fn ingest_view(
        &mut self,
        t: ViewIn,
        make_msg: impl FnOnce(&mut NameBook) -> Msg,
        segments: Vec<crate::tcp::SegmentSummary>,
        vantages: &[Vantage],
        now: Ts,
    ) {
        self.stats.views += 1;
        if self.started.is_none() {
            self.started = Some(t.req_first);
        }
        let file = vantages.get(t.vantage).map_or(0, |v| v.file_index);
        let shift = self.shift(file);
        let corrected_req = Ts(t.req_first.0 - shift);
        if corrected_req < self.floor {
            self.stats.late_views += 1;
        }
        let found = match t.wire_pos {
            Some(pos) => self.by_pos.get(&(pos.seq, pos.ack)).copied().or_else(|| {
                let same_seq: Vec<u64> = self
                    .by_seq
                    .get(&pos.seq)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|e| {
                        self.exchanges.get(e).is_some_and(|x| {
                            (x.first().req.0 - corrected_req.0).abs() < self.cfg.view_join_ns
                        })
                    })
                    .collect();
                (same_seq.len() == 1).then(|| same_seq[0])
            }),
            None => match t.conn_seq {
                [Some(c), Some(s)] => self.by_conn.get(&(c, s, t.index_in_conn)).copied(),
                _ => None,
            },
        };
        if found.is_none() && corrected_req < self.floor && t.resp.is_none() {
            // An unanswered request seen after its exchange was decided (its
            // connection's replies are elsewhere): it would only make a false path.
            self.stats.late_views_dropped += 1;
            return;
        }
        let msg = make_msg(&mut self.names);
        let mut added = 0;
        let (id, msg) = match found {
            Some(id) => {
                let ex = self.exchanges.get(&id).expect("indexed exchanges exist");
                let shared = ex.views.iter().find(|v| v.msg.digest == msg.digest);
                let msg = shared.map_or_else(
                    || {
                        added += msg.heap_bytes();
                        Rc::new(msg)
                    },
                    |v| v.msg.clone(),
                );
                (id, msg)
            }
            None => {
                self.rarity.add(&msg);
                let id = self.next_ex;
                self.next_ex += 1;
                self.stats.exchanges += 1;
                self.exchanges.insert(
                    id,
                    Exchange {
                        views: Vec::new(),
                        bytes: 0,
                        pos_keys: Vec::new(),
                        seq_keys: Vec::new(),
                        conn_keys: Vec::new(),
                        open_key: None,
                        inbound_key: None,
                        parent_closed: false,
                        state: UState::Open,
                        cands: Vec::new(),
                        ready_at: Ts(i64::MIN),
                        parent: None,
                        children: Vec::new(),
                        taken: false,
                        bidders: Vec::new(),
                    },
                );
                added += EXCHANGE_OVERHEAD + msg.heap_bytes();
                (id, Rc::new(msg))
            }
        };
        let mut view = View::from_in(&t, file, now, shift, msg);
        view.segments = segments;
        added += view.heap_bytes();
        self.open_bytes += added;
        self.peak_open_bytes = self.peak_open_bytes.max(self.open_bytes);
        // Clock samples: this view against the earliest answered view of every other
        // capture that saw the exchange.
        if let Some(resp) = view.resp {
            let ex = &self.exchanges[&id];
            let mut per_file: Vec<(usize, i64, i64)> =
                vec![(file, view.req.0 + view.shift, resp.0 + view.shift)];
            let mut fresh = true;
            for v in &ex.views {
                let Some(r) = v.resp else { continue };
                if v.file == file {
                    fresh = false;
                    break;
                }
                match per_file.iter_mut().find(|p| p.0 == v.file) {
                    Some(p) if p.1 <= v.req.0 + v.shift => {}
                    Some(p) => *p = (v.file, v.req.0 + v.shift, r.0 + v.shift),
                    None => per_file.push((v.file, v.req.0 + v.shift, r.0 + v.shift)),
                }
            }
            if fresh && per_file.len() > 1 {
                self.clock.observe(&per_file);
            }
        }
        let ex = self.exchanges.get_mut(&id).expect("just found or made");
        if let Some(pos) = t.wire_pos {
            if let std::collections::hash_map::Entry::Vacant(e) =
                self.by_pos.entry((pos.seq, pos.ack))
            {
                e.insert(id);
                ex.pos_keys.push((pos.seq, pos.ack));
            }
            let list = self.by_seq.entry(pos.seq).or_default();
            if !list.contains(&id) {
                list.push(id);
                ex.seq_keys.push(pos.seq);
            }
        }
        if let [Some(c), Some(s)] = t.conn_seq {
            if let std::collections::hash_map::Entry::Vacant(e) =
                self.by_conn.entry((c, s, t.index_in_conn))
            {
                e.insert(id);
                ex.conn_keys.push((c, s, t.index_in_conn));
            }
        }
        ex.views.push(view);
        ex.bytes += added;
        self.reindex(id);
        self.stats.peak_open_exchanges = self
            .stats
            .peak_open_exchanges
            .max(self.exchanges.len() as u64);
    }

    /// Orders an exchange's views and files it in the indexes by its first and last
    /// views.
    fn reindex(&mut self, id: u64) {
        let owned = &self.owned;
        let ex = self.exchanges.get_mut(&id).expect("exists");
        order_views(&mut ex.views, &|f, ip| owned.contains(&(f, ip)));
        if let Some(k) = ex.open_key.take() {
            self.open.remove(&(k, id));
        }
        if ex.state == UState::Open {
            let k = ex.views[0].req;
            self.open.insert((k, id));
            ex.open_key = Some(k);
        }
        if let Some((ip, req, end)) = ex.inbound_key.take() {
            if let Some(set) = self.inbound.get_mut(&ip) {
                set.remove(&(req, id));
                if set.is_empty() {
                    self.inbound.remove(&ip);
                }
            }
            self.by_end.remove(&(end, id));
        }
        if !ex.parent_closed {
            let last = ex.last();
            let key = (last.server.ip(), last.req, ex.end());
            self.inbound.entry(key.0).or_default().insert((key.1, id));
            self.by_end.insert((key.2, id));
            ex.inbound_key = Some(key);
        }
    }

    /// The floor of the latest round: what lies behind it is decided.
    pub fn floor(&self) -> Ts {
        self.floor
    }

    /// The floor for a watermark `now` and the oldest pending request `pending`.
    fn floor_for(&self, now: Ts, pending: Option<Ts>) -> Ts {
        let raw = pending.map_or(now, |p| p.min(now));
        let max_shift = self.shifts.iter().copied().max().unwrap_or(0);
        Ts(raw
            .0
            .saturating_sub(max_shift)
            .saturating_sub(self.cfg.lateness_ns))
    }

    /// Takes the decisions the floor allows and emits the paths that became final.
    /// `now` is the watermark, `pending` the oldest request still waiting for its
    /// response (the pipeline's [`crate::pipeline::Pipeline::pending_floor`]).
    pub fn advance(
        &mut self,
        now: Ts,
        pending: Option<Ts>,
        ctx: &Context<'_>,
        emit: &mut dyn FnMut(RequestPath),
    ) {
        if !self.settled {
            let waited = self
                .started
                .is_some_and(|s| now.0.saturating_sub(s.0) > self.cfg.max_clock_wait_ns);
            if !(waited || self.clock.settled(self.cfg.clock_min_samples)) {
                return;
            }
            self.settled = true;
            self.refresh_offsets(true);
        }
        let floor = self.floor_for(now, pending);
        if self.exchanges.len() > self.cfg.max_open_exchanges
            || self.open_bytes > self.cfg.max_open_bytes
        {
            // Decide everything held, then go on from the watermark's own floor: a
            // forced floor kept would make every transaction of the next
            // `max_request_duration` late (and drop the unanswered ones).
            self.stats.forced_rounds += 1;
            let before = self.floor;
            self.round(
                floor.max(Ts(now.0.saturating_add(self.cfg.max_request_duration_ns))),
                ctx,
                emit,
            );
            self.floor = before.max(floor);
            self.last_round = self.floor;
            return;
        }
        if floor.0.saturating_sub(self.last_round.0) < self.cfg.round_ns {
            return;
        }
        self.round(floor, ctx, emit);
    }

    /// Ends the input: decides and emits everything, and reports the rest.
    pub fn finish(&mut self, ctx: &Context<'_>, emit: &mut dyn FnMut(RequestPath)) -> Tail {
        // The offsets reported are those of every sample taken.
        self.settled = true;
        self.refresh_offsets(true);
        self.round(Ts(i64::MAX / 4), ctx, emit);
        debug_assert!(self.exchanges.is_empty(), "everything was emitted");
        let timeline = vip::timeline(ctx);
        let failovers = vip::failovers(ctx, &timeline, &self.failed);
        Tail {
            vip_timeline: timeline,
            failovers,
            clock_offsets: self.offsets.clone(),
            clock_offset_changes: self.offset_changes.clone(),
            address_book: self.address_book(ctx),
            anomalies: self.anomalies.clone(),
            anomalies_not_kept: self.anomalies_not_kept,
            summary: self.summary.summary(),
            engine: self.stats.clone(),
        }
    }

    /// The engine's counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Re-estimates the offsets (when enough new samples came in, or `always`) and
    /// moves held exchanges to the new ones.
    fn refresh_offsets(&mut self, always: bool) {
        if self.clock.len() < 2 {
            return;
        }
        let samples = self.clock.samples();
        let always = self.clock.take_agent_clock_changed() || always;
        if !always
            && samples < self.samples_at_estimate.max(32) * 2
            && samples - self.samples_at_estimate < 4096
        {
            return;
        }
        self.samples_at_estimate = samples;
        let new = self.clock.estimate();
        let mut changed = false;
        for (f, o) in new.iter().enumerate() {
            let old = &self.offsets[f];
            let moved = (o.offset_s - old.offset_s).abs();
            // A move within what the estimate can tell is not worth a note.
            let noise = (3.0 * o.uncertainty_s).max(20e-6);
            if self.next_path > 0 && moved > noise {
                self.offset_changes.push(OffsetChange {
                    capture: o.capture.clone(),
                    from_s: old.offset_s,
                    to_s: o.offset_s,
                    after_paths: self.next_path,
                });
                self.offset_changes.truncate(1000);
            }
            let shift = (o.offset_s * 1e9).round() as i64;
            if (shift - self.shifts[f]).abs() >= 1_000 {
                self.shifts[f] = shift;
                changed = true;
            }
            self.offsets[f] = o.clone();
        }
        if changed {
            let ids: Vec<u64> = self.exchanges.keys().copied().collect();
            for id in ids {
                let ex = self.exchanges.get_mut(&id).expect("exists");
                for v in &mut ex.views {
                    let s = self.shifts.get(v.file).copied().unwrap_or(0);
                    v.reshift(s);
                }
                self.reindex(id);
            }
        }
    }

    fn round(&mut self, floor: Ts, ctx: &Context<'_>, emit: &mut dyn FnMut(RequestPath)) {
        self.stats.rounds += 1;
        self.floor = self.floor.max(floor);
        self.last_round = floor;
        let floor = self.floor;
        self.refresh_offsets(false);
        let sig = (
            ctx.vrrp.len(),
            ctx.vrrp.iter().map(|r| r.adverts).sum::<u64>(),
        );
        if sig != self.vrrp_seen {
            self.vrrp_seen = sig;
            self.timeline = vip::timeline(ctx);
        }
        let tol = self.cfg.tolerance_ns;
        // 1. Exchanges whose possible parents are all in: score their candidates.
        while let Some(&(req, id)) = self.open.first() {
            if req.0.saturating_add(tol) >= floor.0 {
                break;
            }
            self.open.remove(&(req, id));
            // Inbound exchanges that ended before this request cannot be its parent,
            // nor any later one's: retire them first, so a long catch-up round (the
            // end of the input) does not scan them for every request.
            self.retire_inbound(Ts(req.0.saturating_sub(tol)));
            self.close(id);
        }
        // 2. Assign the ready ones, with the others as context.
        let ready: Vec<u64> = self
            .active
            .iter()
            .copied()
            .filter(|id| self.exchanges[id].ready_at < floor)
            .collect();
        if !ready.is_empty() {
            // In time order, a bounded number at a time: after a held-back floor
            // (a backlog) one assignment over all of them would cost more than the
            // sum of assignments over slices (each bidder's search reaches more rivals).
            let mut ready = ready;
            ready.sort_by_key(|id| (self.exchanges[id].first().req, *id));
            for slice in ready.chunks(MAX_READY_PER_ASSIGNMENT) {
                self.decide(slice);
            }
        }
        // 3. Exchanges that can gain no new child leave the candidate index.
        self.retire_inbound(floor);
        // 4. Emit the paths that are final, in the order they started.
        let mut done: Vec<(Ts, u64)> = Vec::new();
        let mut waiting = Vec::with_capacity(self.roots.len());
        for &r in &self.roots {
            if self.tree_final(r) {
                done.push((self.exchanges[&r].first().req, r));
            } else {
                waiting.push(r);
            }
        }
        self.roots = waiting;
        done.sort();
        for (_, r) in done {
            let path = self.build_path(ctx, r);
            self.drop_tree(r);
            self.account(&path);
            emit(path);
        }
    }

    /// Takes the exchanges that ended more than two tolerances before `floor` out of
    /// the candidate index: they can gain no new child.
    fn retire_inbound(&mut self, floor: Ts) {
        let tol = self.cfg.tolerance_ns;
        while let Some(&(end, id)) = self.by_end.first() {
            if end.0.saturating_add(2 * tol) >= floor.0 {
                break;
            }
            self.by_end.remove(&(end, id));
            let ex = self
                .exchanges
                .get_mut(&id)
                .expect("indexed exchanges exist");
            ex.parent_closed = true;
            if let Some((ip, req, _)) = ex.inbound_key.take() {
                if let Some(set) = self.inbound.get_mut(&ip) {
                    set.remove(&(req, id));
                    if set.is_empty() {
                        self.inbound.remove(&ip);
                    }
                }
            }
        }
    }

    /// Scores the candidate parents of `id` (its request is behind the floor).
    fn close(&mut self, id: u64) {
        let ex = &self.exchanges[&id];
        let (uf, ul) = (ex.first(), ex.last());
        let u_start = uf.start;
        let u = Upstream {
            first: uf,
            last: ul,
        };
        let mut cands: Vec<(u64, f64, f64)> = Vec::new();
        let mut ready_at = Ts(i64::MIN);
        let sender = uf.client.ip();
        let proxy_addresses =
            std::iter::once(sender).chain(self.aliases.get(&sender).into_iter().flatten().copied());
        for list in proxy_addresses.filter_map(|a| self.inbound.get(&a)) {
            let lo = Ts(uf.req.0.saturating_sub(self.cfg.max_proxy_delay_ns));
            let hi = Ts(uf.req.0.saturating_add(self.cfg.tolerance_ns));
            for &(_, gid) in list.range((lo, 0)..=(hi, u64::MAX)) {
                if gid == id {
                    continue;
                }
                let gx = &self.exchanges[&gid];
                let g = Inbound { last: gx.last() };
                if !link::nested(&u, &g, self.cfg.tolerance_ns) {
                    continue;
                }
                let s = link::scores(&u, &g, &self.rarity, &self.habits, &self.names, None);
                cands.push((gid, s.assign, s.sure));
            }
        }
        if cands.len() > MAX_CANDIDATES {
            // The best by score: the timing term ranks far-off parents low. Without
            // the cut, inbound exchanges that never got a response (drops, resets)
            // span the rest of their connection and become candidates of everything
            // their proxy sends, and the assignment's cost explodes.
            self.stats.candidates_not_kept += (cands.len() - MAX_CANDIDATES) as u64;
            cands.select_nth_unstable_by(MAX_CANDIDATES - 1, |a, b| {
                b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
            });
            cands.truncate(MAX_CANDIDATES);
            cands.sort_unstable_by_key(|c| c.0);
        }
        for &(gid, _, _) in &cands {
            let gx = &self.exchanges[&gid];
            ready_at = ready_at.max(Ts(gx.end().0.saturating_add(2 * self.cfg.tolerance_ns)));
        }
        if !cands.is_empty() {
            let exchanges = &self.exchanges;
            let weights = cands.iter().map(|&(g, w, _)| (g, w));
            match self
                .workers
                .observe((uf.file, sender), u_start, weights, |g| {
                    let l = exchanges[&g].last();
                    (l.req_end, (l.vantage, l.client))
                }) {
                Some(workers::Learning::Kept) => self.stats.worker_splits_kept += 1,
                Some(workers::Learning::Rejected) => self.stats.worker_splits_rejected += 1,
                Some(workers::Learning::NotKept) => self.stats.worker_learning_not_kept += 1,
                None => {}
            }
        }
        let ex = self.exchanges.get_mut(&id).expect("exists");
        ex.open_key = None;
        if cands.is_empty() {
            ex.state = UState::Decided;
            self.roots.push(id);
            return;
        }
        ex.state = UState::Active;
        ex.ready_at = ready_at;
        for &(g, _, _) in &cands {
            self.exchanges.get_mut(&g).expect("exists").bidders.push(id);
        }
        self.exchanges.get_mut(&id).expect("exists").cands = cands;
        self.active.push(id);
    }

    /// Assigns the `ready` exchanges together with every undecided exchange that
    /// competes with one of them for a parent (the bidders of their candidates),
    /// and keeps the links of the ready ones. Competitors further away cannot change
    /// a ready exchange's best choice by much, and leaving them out keeps a round's
    /// cost to the neighbourhood of what it decides: with a backlog of undecided
    /// exchanges (a floor held back), assigning all of them every round is quadratic.
    fn decide(&mut self, ready: &[u64]) {
        let mut object_of: FxHashMap<u64, usize> = FxHashMap::default();
        let mut objects: Vec<u64> = Vec::new();
        let mut bidders: Vec<u64> = Vec::new();
        let mut in_assignment: FxHashSet<u64> = FxHashSet::default();
        for &u in ready {
            if in_assignment.insert(u) {
                bidders.push(u);
            }
        }
        // Context: the exchanges competing with these for a parent first, then the
        // other undecided ones in arrival order, up to MAX_ASSIGNMENT_BIDDERS (rounds in
        // step with the input have fewer: all of them take part).
        let most = MAX_ASSIGNMENT_BIDDERS.max(ready.len());
        // A parent shared by many ready exchanges has its bidders taken once: all of
        // them went in the first time (or the limit stopped everything).
        let mut parents_seen: FxHashSet<u64> = FxHashSet::default();
        'found: for &u in ready {
            for (g, _, _) in &self.exchanges[&u].cands {
                if !parents_seen.insert(*g) {
                    continue;
                }
                for &b in &self.exchanges[g].bidders {
                    if bidders.len() >= most {
                        break 'found;
                    }
                    if in_assignment.insert(b) {
                        bidders.push(b);
                    }
                }
            }
        }
        for &b in &self.active {
            if bidders.len() >= most {
                break;
            }
            if in_assignment.insert(b) {
                bidders.push(b);
            }
        }
        // Upstreams of proxies whose workers are known: the parent the merge that
        // keeps each worker's order gives them is preferred in the assignment.
        let merged = self.merge_by_workers(&bidders);
        let bids: Vec<Vec<(usize, f64)>> = bidders
            .iter()
            .map(|id| {
                let order = merged.get(id);
                self.exchanges[id]
                    .cands
                    .iter()
                    .filter(|(g, _, _)| !self.exchanges[g].taken)
                    .map(|&(g, w, _)| {
                        let o = *object_of.entry(g).or_insert_with(|| {
                            objects.push(g);
                            objects.len() - 1
                        });
                        (
                            o,
                            if order == Some(&g) {
                                w + WORKER_ORDER_BONUS
                            } else {
                                w
                            },
                        )
                    })
                    .collect()
            })
            .collect();
        let assigned = assign::assign(&bids, objects.len());
        let chosen: FxHashMap<u64, u64> = bidders
            .iter()
            .zip(&assigned)
            .filter_map(|(&u, a)| Some((u, objects[(*a)?])))
            .collect();
        let ready_set: FxHashSet<u64> = ready.iter().copied().collect();
        // Links first, then retries (which look at the links made).
        let mut leftover = Vec::new();
        for &u in ready {
            match chosen.get(&u) {
                Some(&g) if !self.descends_from(g, u) => {
                    if merged.get(&u) == Some(&g) {
                        self.stats.worker_order_links += 1;
                    }
                    self.link(u, g);
                }
                _ => leftover.push(u),
            }
        }
        for u in leftover {
            self.retry_or_root(u);
        }
        self.active.retain(|id| !ready_set.contains(id));
    }

    /// The parents [`workers::merge`] gives the `bidders` sent by proxies whose
    /// workers are known: per proxy, its upstreams in the order they left, and as
    /// objects the candidates on client connections of known group, in the order
    /// their requests arrived. An upstream whose best candidate is on a connection
    /// of unknown group (one opened after the split was learned) gets none, as does
    /// one the merge leaves unlinked: the assignment links them on their scores
    /// alone ([`WORKER_ORDER_BONUS`]).
    fn merge_by_workers(&self, bidders: &[u64]) -> FxHashMap<u64, u64> {
        let mut out = FxHashMap::default();
        let mut by_proxy: BTreeMap<workers::ProxyKey, Vec<u64>> = BTreeMap::new();
        for &u in bidders {
            let ux = &self.exchanges[&u];
            let proxy = (ux.first().file, ux.first().client.ip());
            let Some(groups) = self.workers.groups(proxy) else {
                continue;
            };
            let best = ux
                .cands
                .iter()
                .filter(|(g, _, _)| !self.exchanges[g].taken)
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            let known = best.is_some_and(|(g, _, _)| {
                let l = self.exchanges[g].last();
                groups.contains_key(&(l.vantage, l.client))
            });
            if known {
                by_proxy.entry(proxy).or_default().push(u);
            }
        }
        for (proxy, mut ups) in by_proxy {
            let groups = self.workers.groups(proxy).expect("checked above");
            ups.sort_by_key(|u| (self.exchanges[u].first().start, *u));
            let mut objects: Vec<(Ts, u64, u8)> = Vec::new();
            for u in &ups {
                for (g, _, _) in &self.exchanges[u].cands {
                    let gx = &self.exchanges[g];
                    if gx.taken {
                        continue;
                    }
                    let l = gx.last();
                    if let Some(&group) = groups.get(&(l.vantage, l.client)) {
                        objects.push((l.req_end, *g, group));
                    }
                }
            }
            objects.sort_unstable();
            objects.dedup();
            let places = workers::places_of(objects.iter().map(|&(_, _, group)| group));
            let index: FxHashMap<u64, usize> = objects
                .iter()
                .enumerate()
                .map(|(i, &(_, g, _))| (g, i))
                .collect();
            let bids: Vec<workers::Bid> = ups
                .iter()
                .map(|u| {
                    // Candidates in arrival order, as the merge takes them.
                    let mut bid: workers::Bid = self.exchanges[u]
                        .cands
                        .iter()
                        .filter_map(|(g, w, _)| Some((*index.get(g)?, *w)))
                        .collect();
                    bid.sort_unstable_by_key(|c| c.0);
                    bid
                })
                .collect();
            let (_, chosen) = workers::merge(&bids, &places, link::CANDIDATE_BASE);
            for (u, c) in ups.iter().zip(chosen) {
                if let Some(o) = c {
                    out.insert(*u, objects[o].1);
                }
            }
        }
        out
    }

    fn finish_bidding(&mut self, u: u64) {
        let cands = std::mem::take(&mut self.exchanges.get_mut(&u).expect("exists").cands);
        for (g, _, _) in &cands {
            if let Some(gx) = self.exchanges.get_mut(g) {
                if let Some(i) = gx.bidders.iter().position(|b| *b == u) {
                    gx.bidders.swap_remove(i);
                }
            }
        }
        self.exchanges.get_mut(&u).expect("exists").cands = cands;
    }

    fn evidence(&self, u: u64, g: u64) -> Vec<String> {
        let (ux, gx) = (&self.exchanges[&u], &self.exchanges[&g]);
        let mut why = Vec::new();
        link::scores(
            &Upstream {
                first: ux.first(),
                last: ux.last(),
            },
            &Inbound { last: gx.last() },
            &self.rarity,
            &self.habits,
            &self.names,
            Some(&mut why),
        );
        why
    }

    fn link(&mut self, u: u64, g: u64) {
        let ux = &self.exchanges[&u];
        let (w, sure) = ux
            .cands
            .iter()
            .find(|c| c.0 == g)
            .map_or((0.0, 0.0), |c| (c.1, c.2));
        let rivals = ux.cands.iter().filter(|c| c.0 != g).map(|c| c.2);
        let lone = ux.cands.len() <= 1;
        // Every candidate counts, those already taken by another link too: that link
        // may be the wrong one.
        let confidence = link::confidence(sure, rivals);
        if lone {
            // Unambiguous: the only parent it could have. It teaches whether this
            // proxy keeps URIs.
            let gl = self.exchanges[&g].last();
            let kept = gl.msg.uri_hash == ux.first().msg.uri_hash;
            self.habits.observe(gl.server, kept);
        }
        let mut alternatives = Vec::new();
        if confidence < 0.99 {
            let mut others: Vec<(u64, f64)> = ux
                .cands
                .iter()
                .filter(|c| c.0 != g)
                .map(|c| (c.0, c.1))
                .collect();
            others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (gid, score) in others.into_iter().take(3) {
                let gl = self.exchanges[&gid].last();
                alternatives.push(Alternative {
                    client: gl.client,
                    server: gl.server,
                    method: gl.msg.method.to_string(),
                    uri: gl.msg.uri.to_string(),
                    request_ts: gl.req,
                    behind: ((w - score) * 100.0).round() / 100.0,
                });
            }
        }
        let why = self.evidence(u, g);
        self.finish_bidding(u);
        let ux = self.exchanges.get_mut(&u).expect("exists");
        ux.parent = Some((g, confidence, why, alternatives));
        ux.state = UState::Decided;
        let gx = self.exchanges.get_mut(&g).expect("exists");
        gx.taken = true;
        gx.children.push(u);
        let server = gx.last().server;
        if self.forwarders.len() < MAX_ADDRESSES_KEPT {
            self.forwarders.insert(server);
        }
        self.stats.links += 1;
    }

    /// Whether `id` is `ancestor` or lies under it. Exchanges whose intervals nest in
    /// each other both ways (within the clock tolerance of two interfaces) are each
    /// other's candidate parent; linked both ways they would make a cycle, a tree
    /// without a root, never written and never let go.
    fn descends_from(&self, id: u64, ancestor: u64) -> bool {
        let mut at = Some(id);
        while let Some(e) = at {
            if e == ancestor {
                return true;
            }
            at = self
                .exchanges
                .get(&e)
                .and_then(|x| x.parent.as_ref().map(|p| p.0));
        }
        false
    }

    /// An upstream left over is a retry when its best candidate's upstream attempts
    /// all failed (no response, or 502/503/504) before it started; else a root.
    fn retry_or_root(&mut self, u: u64) {
        let ux = &self.exchanges[&u];
        let ustart = ux.first().req;
        let best = ux
            .cands
            .iter()
            .filter(|(g, _, _)| {
                let gx = &self.exchanges[g];
                !self.descends_from(*g, u)
                    && !gx.children.is_empty()
                    && gx.children.iter().all(|c| {
                        let cv = self.exchanges[c].first();
                        let failed = cv
                            .msg
                            .resp
                            .as_ref()
                            .is_none_or(|r| (502..=504).contains(&r.status));
                        failed && cv.resp_end.unwrap_or(cv.req_end) <= ustart
                    })
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|c| c.0);
        match best {
            Some(g) => {
                let mut why = self.evidence(u, g);
                why.push("retry after an earlier upstream attempt".into());
                self.finish_bidding(u);
                let ux = self.exchanges.get_mut(&u).expect("exists");
                ux.parent = Some((g, 0.5, why, Vec::new()));
                ux.state = UState::Decided;
                let gx = self.exchanges.get_mut(&g).expect("exists");
                gx.children.push(u);
                self.stats.retries += 1;
            }
            None => {
                self.finish_bidding(u);
                self.exchanges.get_mut(&u).expect("exists").state = UState::Decided;
                self.roots.push(u);
            }
        }
    }

    /// Whether no exchange of the tree can change any more. Every node is checked,
    /// however large the tree: the whole tree is dropped once emitted, and a node
    /// still bid for must not go (its bidders would then miss it).
    fn tree_final(&self, root: u64) -> bool {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let ex = &self.exchanges[&id];
            if !ex.children_final() {
                return false;
            }
            stack.extend(ex.children.iter().copied());
        }
        true
    }

    fn drop_tree(&mut self, root: u64) {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let Some(ex) = self.exchanges.remove(&id) else {
                continue;
            };
            self.open_bytes -= ex.bytes;
            for k in &ex.pos_keys {
                if self.by_pos.get(k) == Some(&id) {
                    self.by_pos.remove(k);
                }
            }
            for k in &ex.seq_keys {
                if let Some(list) = self.by_seq.get_mut(k) {
                    list.retain(|e| *e != id);
                    if list.is_empty() {
                        self.by_seq.remove(k);
                    }
                }
            }
            for k in &ex.conn_keys {
                if self.by_conn.get(k) == Some(&id) {
                    self.by_conn.remove(k);
                }
            }
            if let Some(k) = ex.open_key {
                self.open.remove(&(k, id));
            }
            if let Some((ip, req, end)) = ex.inbound_key {
                if let Some(set) = self.inbound.get_mut(&ip) {
                    set.remove(&(req, id));
                    if set.is_empty() {
                        self.inbound.remove(&ip);
                    }
                }
                self.by_end.remove(&(end, id));
            }
            stack.extend(ex.children);
        }
    }

    /// Counts an emitted path in the summary, the failed list and the address book.
    fn account(&mut self, p: &RequestPath) {
        self.summary.add(p);
        if p.status == PathStatus::Failed {
            if self.failed.len() < MAX_FAILED_KEPT {
                self.failed.push(FailedPath {
                    path: p.id,
                    start_ts: p.start_ts,
                    reason: super::report::failure_reason(p),
                });
            } else {
                self.stats.failed_paths_not_kept += 1;
            }
        }
        for h in &p.hops {
            if let (Some(role), Some(seen)) = (&h.role, h.seen_at.last()) {
                let ip = seen.server.ip();
                if !self.roles.contains_key(&ip) && self.roles.len() >= MAX_ADDRESSES_KEPT {
                    continue;
                }
                let entry = self
                    .roles
                    .entry(ip)
                    .or_insert_with(|| (role.clone(), h.host.clone().unwrap_or_default()));
                // A role seen answering wins over "unanswered".
                if entry.0 == Role::Unanswered && *role != Role::Unanswered {
                    entry.0 = role.clone();
                }
            }
        }
    }

    fn build_path(&mut self, ctx: &Context<'_>, root: u64) -> RequestPath {
        let id = self.next_path;
        self.next_path += 1;
        let mut hops: Vec<Hop> = Vec::new();
        let mut stack: Vec<(u64, Option<usize>)> = vec![(root, None)];
        let mut complete = true;
        let mut visited: Vec<u64> = Vec::new();
        while let Some((e, parent)) = stack.pop() {
            if hops.len() >= MAX_HOPS {
                complete = false;
                break;
            }
            visited.push(e);
            let ex = &self.exchanges[&e];
            let first = ex.first();
            let last = ex.last();
            let (product, inferred) = product_and_role(
                &first.msg,
                !ex.children.is_empty(),
                parent.is_none(),
                self.forwarders.contains(&last.server),
            );
            let named = ctx.names.and_then(|n| n.service(last.server));
            let role: Role = named
                .and_then(|s| s.role.as_deref())
                .map_or(inferred, Role::from_name);
            let lresp = last.msg.resp.as_ref();
            // A leaf ends the path when it serves the request itself: a backend, or
            // a role the topology file gave it.
            if ex.children.is_empty() && !matches!(role, Role::Backend | Role::Named(_)) {
                complete = false;
            }
            if lresp.is_none() {
                complete = false;
            }
            let latency = last.resp_end.map(|r| r.0 - last.req.0);
            let child_time: i64 = ex
                .children
                .iter()
                .filter_map(|c| {
                    let cv = self.exchanges[c].first();
                    Some(cv.resp_end?.0 - cv.req.0)
                })
                .sum();
            let (confidence, evidence, alternatives) = match &ex.parent {
                Some((_, c, why, alt)) => (Some(*c), why.clone(), alt.clone()),
                None => (None, Vec::new(), Vec::new()),
            };
            let hop_id = hops.len();
            let mut hop = Hop::new(hop_id, parent, HopKind::Http);
            hop.client = Some(first.client);
            hop.server = Some(first.server);
            hop.capture = Some(ctx.capture_ref(first.vantage));
            hop.host = Some(ctx.host(last.file));
            hop.role = Some(role);
            hop.name = named.and_then(|s| s.name.clone());
            hop.product = product;
            hop.method = Some(last.msg.method.to_string());
            hop.uri = Some(last.msg.uri.to_string());
            hop.status = lresp.map(|r| r.status);
            hop.request_ts = Some(last.req);
            hop.response_ts = last.resp_end;
            hop.latency_ms = latency.map(ms);
            hop.self_ms = latency.map(|l| ms((l - child_time).max(0)));
            hop.confidence = confidence;
            hop.evidence = evidence;
            hop.alternatives = alternatives;
            hop.seen_at = ex
                .views
                .iter()
                .map(|v| Seen {
                    capture: ctx.capture_ref(v.vantage),
                    client: v.client,
                    server: v.server,
                    request_ts: v.req,
                })
                .collect();
            hops.push(hop);
            nat_hops(ctx, ex, hop_id, &mut hops);
            let mut children = ex.children.clone();
            children.sort_unstable();
            for &c in children.iter().rev() {
                stack.push((c, Some(hop_id)));
            }
        }
        let rex = &self.exchanges[&root];
        let rfirst = rex.first();
        let rresp = rfirst.msg.resp.as_ref();
        let status = match rresp.map(|r| r.status) {
            None => PathStatus::Failed,
            Some(s) if s >= 500 => PathStatus::Failed,
            Some(_) if complete => PathStatus::Complete,
            Some(_) => PathStatus::Partial,
        };
        let start = rfirst.req;
        let end = rfirst.resp_end.unwrap_or(rfirst.req_end);
        let vip_ip = rfirst.server.ip();
        let vip = self
            .timeline
            .iter()
            .any(|h| h.vip == vip_ip)
            .then(|| VipUse {
                address: vip_ip,
                holder: vip::holder_at(&self.timeline, vip_ip, start),
            });
        if status == PathStatus::Failed {
            if self.anomalies.len() < MAX_ANOMALIES_KEPT {
                self.anomalies.push(failure_note(id, rfirst));
            } else {
                self.anomalies_not_kept += 1;
            }
        }
        let root_transaction = rfirst.tx;
        // The segments go with the path (the exchanges are dropped next).
        let mut segments = Vec::new();
        for e in visited {
            if let Some(ex) = self.exchanges.get_mut(&e) {
                for v in &mut ex.views {
                    segments.append(&mut v.segments);
                }
            }
        }
        segments.sort_by_key(|s: &crate::tcp::SegmentSummary| (s.ts, s.vantage));
        RequestPath {
            schema_version: PATH_SCHEMA_VERSION,
            id,
            status,
            start_ts: start,
            end_ts: end,
            vip,
            hops,
            root_transaction,
            segments,
        }
    }

    fn address_book(&self, ctx: &Context<'_>) -> Vec<AddressEntry> {
        // A name the topology file gives the address ("ip", or any "ip:port" of it).
        let named = |ip: IpAddr| -> Option<String> {
            let n = ctx.names?;
            n.services
                .iter()
                .find(|(k, _)| {
                    k.parse::<IpAddr>().ok() == Some(ip)
                        || k.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()) == Some(ip)
                })
                .and_then(|(_, s)| s.name.clone())
        };
        let mut out = Vec::new();
        let mut known = BTreeSet::new();
        for (f, l) in ctx.links.iter().enumerate() {
            let Some(l) = l else { continue };
            let host = ctx.host(f);
            for link in &l.links {
                for ip in &link.addresses {
                    if ip.is_loopback() {
                        continue;
                    }
                    known.insert(*ip);
                    out.push(AddressEntry {
                        name: named(*ip).unwrap_or_else(|| format!("{host} {}", link.ifname)),
                        ip: *ip,
                        mac: link.mac.clone(),
                        host: host.clone(),
                        interface: Some(link.ifname.clone()),
                        role: self.roles.get(ip).map(|r| r.0.clone()),
                    });
                }
            }
        }
        for (ip, (role, host)) in &self.roles {
            if !known.contains(ip) {
                out.push(AddressEntry {
                    name: named(*ip).unwrap_or_else(|| format!("{role} on {host}")),
                    ip: *ip,
                    mac: None,
                    host: host.clone(),
                    interface: None,
                    role: Some(role.clone()),
                });
            }
        }
        out.sort();
        out
    }
}

fn ms(ns: i64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

impl Tail {
    /// The whole report, with the paths collected by the caller.
    pub fn into_report(self, paths: Vec<RequestPath>) -> Report {
        Report {
            paths,
            vip_timeline: self.vip_timeline,
            failovers: self.failovers,
            clock_offsets: self.clock_offsets,
            clock_offset_changes: self.clock_offset_changes,
            address_book: self.address_book,
            anomalies: self.anomalies,
            summary: self.summary,
        }
    }
}

/// The NAT hops of exchange `ex` (hop `hop_id`): one for each pair of consecutive
/// views whose addresses differ.
fn nat_hops(ctx: &Context<'_>, ex: &Exchange, hop_id: usize, hops: &mut Vec<Hop>) {
    let mut prev = ex.first();
    for v in &ex.views[1..] {
        if (v.client, v.server) != (prev.client, prev.server) {
            let kind = match (v.client != prev.client, v.server != prev.server) {
                (true, true) => Translation::SnatDnat,
                (true, false) => Translation::Snat,
                _ => Translation::Dnat,
            };
            let mut nat = Hop::new(hops.len(), Some(hop_id), HopKind::Nat);
            nat.host = Some(ctx.host(v.file));
            nat.confidence = Some(1.0);
            nat.evidence = vec!["same TCP sequence numbers on both sides".into()];
            nat.translation = Some(kind);
            nat.before = Some(Endpoints {
                client: prev.client,
                server: prev.server,
            });
            nat.after = Some(Endpoints {
                client: v.client,
                server: v.server,
            });
            nat.capture_before = Some(ctx.capture_ref(prev.vantage));
            nat.capture_after = Some(ctx.capture_ref(v.vantage));
            nat.ts = Some(v.req);
            hops.push(nat);
        }
        prev = v;
    }
}

/// What the anomaly list says about failed path `id` whose first view is `rfirst`.
fn failure_note(id: usize, rfirst: &View) -> String {
    let m = &rfirst.msg;
    format!(
        "path {id}: {} {} from {} failed ({})",
        if m.method.is_empty() { "-" } else { &m.method },
        if m.uri.is_empty() { "-" } else { &m.uri },
        rfirst.client,
        match m.resp.as_ref() {
            None => "no response".to_string(),
            Some(r) => format!("status {}", r.status),
        }
    )
}

#[cfg(test)]
mod tests;
