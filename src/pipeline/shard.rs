//! A run of the pipeline with its TCP and HTTP work sharded by connection over
//! threads, writing the same bytes as one [`Pipeline`] would.
//!
//! Threads and what crosses them:
//! - the **front** (the caller's thread) reads frames, decodes them (IP fragments are
//!   reassembled here, before any sharding, so a datagram's pieces never split),
//!   names the capture points and keeps VRRP and ARP events: everything that spans
//!   connections. Each TCP segment goes to the shard that holds its connection's
//!   bucket (a range of connection hashes; both directions hash alike): shard 0
//!   is the front's own and takes it at once, the others get it, with a copy of
//!   its payload, in their next round.
//! - each **shard** owns a TCP table and an HTTP analyzer for its connections and
//!   formats the JSON of the transactions they complete, all but the two numbers
//!   that depend on the whole run (`id`, `conn_id`). Shards 1.. have a thread each.
//! - the **merger**, on the last shard's thread, puts the shards' records back into
//!   the order one table would have completed them and writes them with those
//!   numbers.
//!
//! Why shard 0 is the front's: with a thread per shard besides the front, two
//! cores ran four threads, and the kernel left a thread waiting behind another on
//! its core while the other core had nothing to do (it moved none in a run: 14-19 %
//! of both cores idle, docs/PERFORMANCE.md). With the front working a shard and the
//! last shard merging, two shards are two threads. The front reads and decodes for
//! all shards, so
//! it takes fewer connections than the others: the front moves buckets between
//! shards until their threads' CPU times match ([`Route::rebalance`]).
//!
//! How the order is the same as one thread's: frames are numbered; the front cuts
//! them into rounds of [`ROUND_FRAMES`] (fewer when their payload reaches
//! [`ROUND_BYTES`]) and sends every shard its part of every round
//! (possibly empty), so the merger takes round by round from all shards. Each
//! record carries a key, (frame, phase, connection, sequence): what one table does
//! at a frame is a time sweep (phase 0: the front decides it where one table would,
//! and every shard sweeps there; one table closes the swept connections in the order
//! they opened, which the key's connection reproduces across shards), then the
//! frame's segment (phase 1: one shard only). The end of input closes connections in
//! the order they opened, keyed likewise. A shard numbers a new connection with its
//! frame's index ([`TcpTable::set_next_id`]); the merger, seeing the opens of all
//! shards in frame order, maps those to the sequential numbers of one table, and
//! forgets a mapping when its shard drops the connection (so it holds what the
//! shards' tables hold). Anomaly samples are keyed the same way and merged into
//! the first [`AnomalyLog::CAPACITY`] one run would have kept.
//!
//! What can differ from one thread: the TCP table's limits (`max_connections`, the
//! memory budget) are split evenly over the shards, so when a capture makes them
//! evict, each shard evicts by what it holds, not by what all hold; and what each
//! holds depends on where the front moved buckets, which follows the threads' CPU
//! times, so evictions can differ from one run to the next.
//!
//! Why not shard at the frame: the decode is a few percent of the work, and doing it
//! once up front keeps fragments, capture points and the layer-2 events in one place.

use super::{Pipeline, Vantage};
use crate::anomaly::{Anomaly, AnomalyLog, Stats};
use crate::capture::FileSource;
use crate::decode::TcpSegment;
use crate::error::{Error, RenderError};
use crate::http::{HttpAnalyzer, HttpConn, KeptHeaders};
use crate::render::{record_tail, RecordCache, Writer};
use crate::tcp::{connection_hash, TcpConfig, TcpTable, VantageId};
use crate::time::Ts;
use rustc_hash::FxHashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// Frames in a round. Large enough that a round's hand-over costs little against
/// its work, small enough that the rounds in flight hold little memory (they are
/// taken from the TCP table's budget: [`in_flight_bytes`]).
///
/// Measured on the small-packet capture (docs/PERFORMANCE.md): in session 29, six
/// interleaved runs each, 1,024 frames with 2 rounds queued woke the threads about
/// 5,300 times a run (median 0.485 s), 2,048 with 2 queued 2,500 times (0.44 s);
/// in session 30, with fat LTO, 2,048 x 2 0.40-0.41 s against 0.38-0.40 s at 4,096
/// x 2 and 8,192 x 2. Under the 5 M SYN flood with `--memory-budget 64M` the peak
/// was 114-115 MiB at 2,048 x 2, 122-125 at 4,096 x 2 and 131-132 at 2,048 x 4
/// before the rounds in flight counted in the budget.
pub const ROUND_FRAMES: u64 = 4096;
/// Payload bytes after which a round is sent before it has [`ROUND_FRAMES`]
/// frames: what a shard's output holds grows with the payload (a full-size segment
/// of tiny pipelined requests completes about 26 transactions), so rounds of
/// large segments are cut by bytes (1 M pipelined requests: 181 MiB peak with
/// rounds cut only at 2,048 frames). Small-packet rounds stay under it.
pub const ROUND_BYTES: usize = 1 << 20;
/// Rounds queued between the front and a shard, and between a shard and the merger.
const ROUNDS_IN_FLIGHT: usize = 2;

/// Set in the environment, the front moves buckets between shards every round,
/// whatever their loads: for tests, which check that the output does not change.
pub const CHURN_VARIABLE: &str = "FLOWTRACE_TEST_SHARD_CHURN";

/// What the rounds in flight may hold of frames' items, the payload aside: per
/// shard, the rounds queued each way, the one being filled, the one being worked
/// and the one being merged, each room for every frame of a round (all may go to
/// one shard), with an item in and two out (a SYN flood's segment opens a
/// connection and evicts one).
fn in_flight_bytes(shards: usize) -> usize {
    let rounds = 2 * ROUNDS_IN_FLIGHT + 3;
    let per_frame = std::mem::size_of::<Item>() + 2 * std::mem::size_of::<(Key, What)>();
    shards * rounds * ROUND_FRAMES as usize * per_frame
}

/// Each shard's table budget: the TCP budget less the rounds in flight (at most
/// half of it), shared evenly.
fn table_budget(budget: usize, shards: usize) -> usize {
    budget
        .saturating_sub(in_flight_bytes(shards))
        .max(budget / 2)
        / shards
}

/// Where a record or an anomaly sample falls in one run's order:
/// (frame, phase, connection, sequence).
type Key = (u64, u8, u64, u64);

/// A TCP segment as the front hands it to a shard (its payload in the round's
/// `data`).
struct Seg {
    frame: u64,
    ts: Ts,
    vantage: VantageId,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    missing: u32,
    ttl: u8,
    /// The connection's [`connection_hash`]: its bucket, and the shard's table
    /// looks the connection up by it.
    hash: u64,
    start: u32,
    len: u32,
}

enum Item {
    Seg(Seg),
    /// Sweep the table here, at `ts`, as one table would at this frame.
    Sweep {
        frame: u64,
        ts: Ts,
    },
}

/// One round of one shard's input.
#[derive(Default)]
struct InRound {
    items: Vec<Item>,
    data: Vec<u8>,
    /// Capture points named since the previous round.
    vantages: Vec<Vantage>,
    last: bool,
}

/// The front's side: the rounds being filled for the shard threads, and shard 0,
/// which the front runs itself.
pub(super) struct Route {
    frame: u64,
    last_sweep: Ts,
    /// The rounds of shards 1.. (index `shard - 1`).
    rounds: Vec<InRound>,
    /// Payload bytes routed since the last round was sent (shard 0's too).
    bytes: usize,
    /// Shard 0, worked on the front's thread as each segment is decoded: no copy of
    /// its segments, and one thread fewer than shards plus front, so that on two
    /// cores no thread waits behind another on its core while the other core has
    /// nothing to do (docs/PERFORMANCE.md, session 33).
    local: Shard,
    /// Shard 0's output of the round being filled.
    local_out: OutRound,
    /// The shard of each bucket.
    owner: Vec<u16>,
    /// The last round that routed a segment to each bucket, counted from 1 and
    /// kept modulo 256: enough to tell the rounds still in flight (a handful).
    last_routed: Vec<u8>,
    /// Rounds sent so far.
    sent: u64,
    /// Every shard's load, by shard.
    loads: Vec<Arc<Load>>,
    /// CPU times at the last rebalance: the front's, and each shard's thread's (by
    /// shard; shard 0's is the front's).
    last_busy: (u64, Vec<u64>),
    /// Where the search for buckets to move goes on from.
    cursor: usize,
    /// Moves buckets every round whatever the loads (tests: the output must not
    /// depend on where connections are worked).
    churn: bool,
}

impl Route {
    /// Hands one segment to its connection's shard (and a sweep to all, when one
    /// table would sweep before it); `vantages` is the front's table, which names
    /// the capture points of shard 0's records.
    pub(super) fn segment(
        &mut self,
        ts: Ts,
        vantage: VantageId,
        src: IpAddr,
        dst: IpAddr,
        seg: &TcpSegment<'_>,
        vantages: &[Vantage],
    ) {
        // TcpTable::segment's rule.
        if ts.0.saturating_sub(self.last_sweep.0) >= 1_000_000_000 {
            self.last_sweep = ts;
            for r in &mut self.rounds {
                r.items.push(Item::Sweep {
                    frame: self.frame,
                    ts,
                });
            }
            self.local.sweep(self.frame, ts, &mut self.local_out);
        }
        let hash = connection_hash(
            vantage,
            &SocketAddr::new(src, seg.src_port),
            &SocketAddr::new(dst, seg.dst_port),
        );
        let bucket = bucket_of(hash);
        let shard = usize::from(self.owner[bucket]);
        self.last_routed[bucket] = (self.sent + 1) as u8;
        self.bytes += seg.payload.len();
        if shard == 0 {
            self.local.learn_vantages(vantages);
            self.local.segment(
                self.frame,
                ts,
                vantage,
                (src, dst),
                seg,
                hash,
                &mut self.local_out,
            );
            return;
        }
        let r = &mut self.rounds[shard - 1];
        let start = r.data.len() as u32;
        r.data.extend_from_slice(seg.payload);
        r.items.push(Item::Seg(Seg {
            frame: self.frame,
            ts,
            vantage,
            src,
            dst,
            src_port: seg.src_port,
            dst_port: seg.dst_port,
            seq: seg.seq,
            ack: seg.ack,
            flags: seg.flags,
            window: seg.window,
            missing: seg.missing,
            ttl: seg.ttl,
            hash,
            start,
            len: seg.payload.len() as u32,
        }));
    }

    /// The front's side of a run with `loads.len()` shards, shard 0 `local`, split
    /// evenly to start with.
    fn new(local: Shard, loads: Vec<Arc<Load>>) -> Route {
        let shards = loads.len();
        Route {
            frame: 0,
            last_sweep: Ts(i64::MIN),
            rounds: (1..shards).map(|_| InRound::default()).collect(),
            bytes: 0,
            local,
            local_out: OutRound::default(),
            owner: (0..BUCKETS)
                .map(|b| (b * shards / BUCKETS) as u16)
                .collect(),
            last_routed: vec![0; BUCKETS],
            sent: 0,
            // The front's CPU time before the run (starting the process, opening
            // the files) is not the run's work.
            last_busy: (thread_cpu_ns(), vec![0; shards]),
            loads,
            cursor: 0,
            churn: std::env::var_os(CHURN_VARIABLE).is_some(),
        }
    }

    /// Sends the round filled: every shard thread its part, with the capture
    /// points named since the last round (`vantages` is the front's table), then
    /// shard 0's output to the merger; the last round also ends shard 0. False
    /// when a shard or the merger stopped.
    fn send(&mut self, lanes: &mut Lanes, vantages: &[Vantage], last: bool) -> bool {
        let new = &vantages[lanes.vantages_sent..];
        lanes.vantages_sent = vantages.len();
        let mut ok = true;
        self.bytes = 0;
        for (j, (r, spare)) in self.rounds.iter_mut().zip(&lanes.spare_in).enumerate() {
            let mut round = std::mem::replace(r, spare.try_recv().unwrap_or_default());
            round.vantages = new.to_vec();
            round.last = last;
            ok &= match lanes.to_shards.get(j) {
                Some(tx) => tx.send(round).is_ok(),
                None => lanes.merging.send(ToMerging::Round(round)).is_ok(),
            };
        }
        self.sent += 1;
        self.rebalance();
        // Shard 0's output after the other shards' input: the merger waits for
        // theirs of this round, which they can then already be working on.
        let spare = lanes.local_spare.try_recv().unwrap_or_default();
        let mut out = std::mem::replace(&mut self.local_out, spare);
        if last {
            self.local.learn_vantages(vantages);
            self.local.finish(&mut out);
        }
        ok & lanes.merging.send(ToMerging::Local(out)).is_ok()
    }

    /// Moves buckets between shard 0 (the front's) and each other shard, so that
    /// the cores are equally busy. The front also reads and decodes for all, so an
    /// even split of connections leaves its thread with more to do than the
    /// others, by how much depending on the traffic (docs/PERFORMANCE.md); this
    /// finds the split for the capture and machine at hand, from the busy time of
    /// each thread over the last [`REBALANCE_ROUNDS`] rounds: the front's against
    /// each shard thread's (the last one's merging included).
    ///
    /// A bucket moves only when its shard holds none of its connections and has
    /// worked through every round that routed one to it: a connection's segments
    /// all reach the one table that holds it, so the output is the same whatever
    /// moves (the merger orders records by key, not by shard). Where a table's
    /// limits make it evict, what each holds, and so what it evicts, does depend
    /// on where connections went.
    fn rebalance(&mut self) {
        let workers = self.loads.len() - 1;
        if self.churn {
            for j in 1..=workers {
                let (from, to) = if self.sent.is_multiple_of(2) {
                    (j, 0)
                } else {
                    (0, j)
                };
                self.move_buckets(from, to, BUCKETS / 8);
            }
            return;
        }
        if workers == 0 || !self.sent.is_multiple_of(REBALANCE_ROUNDS) {
            return;
        }
        let front = thread_cpu_ns();
        let front_delta = front.saturating_sub(self.last_busy.0);
        self.last_busy.0 = front;
        for j in 1..=workers {
            let busy = self.loads[j].busy_ns.load(Ordering::Relaxed);
            let delta = busy.saturating_sub(self.last_busy.1[j]);
            self.last_busy.1[j] = busy;
            let (a, b) = (front_delta as f64, delta as f64);
            if a + b <= 0.0 {
                continue;
            }
            // A bucket is 1/BUCKETS of all connections: move a tenth of what
            // the imbalance would take.
            let imbalance = (a - b) / (a + b);
            if imbalance.abs() < IMBALANCE_TOLERATED {
                continue;
            }
            let n = ((imbalance.abs() * GAIN * BUCKETS as f64) as usize).clamp(1, MOVES_PER_ROUND);
            if imbalance > 0.0 {
                self.move_buckets(0, j, n);
            } else {
                self.move_buckets(j, 0, n);
            }
        }
    }

    /// Gives up to `n` of shard `from`'s idle buckets to shard `to`.
    fn move_buckets(&mut self, from: usize, to: usize, n: usize) {
        // Rounds sent that `from` has not worked through (shard 0 works each
        // segment as it is routed).
        let in_flight = if from == 0 {
            0
        } else {
            self.sent - self.loads[from].done.load(Ordering::Acquire).min(self.sent)
        };
        if in_flight >= 256 {
            return;
        }
        let mut moved = 0;
        for _ in 0..MOVE_SEARCH {
            let b = self.cursor;
            self.cursor = (self.cursor + 1) % BUCKETS;
            // Rounds since the bucket's last segment was routed (modulo 256: a
            // bucket idle for longer may look recent, and then stays).
            let age = (self.sent as u8).wrapping_sub(self.last_routed[b]);
            if usize::from(self.owner[b]) == from
                && u64::from(age) >= in_flight
                && self.loads[from].live[b].load(Ordering::Relaxed) == 0
            {
                self.owner[b] = to as u16;
                moved += 1;
                if moved == n {
                    break;
                }
            }
        }
    }
}

/// The CPU time of the calling thread, in nanoseconds (user and system): what
/// [`Route::rebalance`] balances. Wall-clock times would count a thread's waits for
/// a core it shares as work.
fn thread_cpu_ns() -> u64 {
    #[cfg(unix)]
    {
        use nix::time::{clock_gettime, ClockId};
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0)
    }
    #[cfg(not(unix))]
    0
}

/// Buckets of connection hashes: the unit in which connections are handed from one
/// shard to another ([`Route::rebalance`]). Many more than the connections open at
/// a time in most captures, so that most buckets are empty at any moment and can
/// move.
const BUCKETS: usize = 1 << 14;

/// Buckets looked at in one search for buckets to move.
const MOVE_SEARCH: usize = 2048;

/// Rounds between two rebalances. Every round (a millisecond or two of work,
/// timed by the threads' CPU clocks): on the small-packet capture, rebalancing every
/// fourth round took the first quarter of the run to reach an even split, and the
/// front's CPU time ended 4-5 % above the other thread's; every round, 1-4 %
/// (session 36). [`GAIN`] keeps the noise of one round's times from swinging it.
const REBALANCE_ROUNDS: u64 = 1;

/// Buckets moved at most per rebalance and shard: 0.8 % of the connections, so that
/// a split that starts even reaches one a tenth away within some tens of
/// rebalances, without swinging past it.
const MOVES_PER_ROUND: usize = BUCKETS / 128;

/// The share of connections moved per unit of imbalance at one rebalance: a
/// fraction of what would balance the last rounds' times, since those times are
/// noisy (a tenth either way from one rebalance to the next on a quiet machine).
const GAIN: f64 = 0.1;

/// Busy times this close (their difference over their sum) are balanced.
const IMBALANCE_TOLERATED: f64 = 0.02;

/// A connection's bucket: the high bits of its hash (FxHash's well-mixed ones).
fn bucket_of(hash: u64) -> usize {
    (hash >> (64 - BUCKETS.trailing_zeros())) as usize
}

/// What a shard tells the front about its load, read without waiting.
struct Load {
    /// Connections the shard's table holds, by bucket.
    live: Vec<AtomicU32>,
    /// Rounds the shard has worked through.
    done: AtomicU64,
    /// Nanoseconds spent working through them.
    busy_ns: AtomicU64,
}

impl Load {
    fn new() -> Load {
        Load {
            live: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            done: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
        }
    }
}

/// The shard of a connection with an even split: the same for both directions.
#[cfg(test)]
fn shard_of(vantage: VantageId, a: (IpAddr, u16), b: (IpAddr, u16), shards: usize) -> usize {
    let (a, b) = (SocketAddr::new(a.0, a.1), SocketAddr::new(b.0, b.1));
    bucket_of(connection_hash(vantage, &a, &b)) * shards / BUCKETS
}

enum What {
    /// A connection opened at the key's frame.
    Open,
    /// The shard dropped the connection numbered so.
    Drop(u64),
    /// A transaction of connection `conn`, its tail at `tails[start..end]`.
    Record { conn: u64, start: u32, end: u32 },
}

/// One round of one shard's output.
#[derive(Default)]
struct OutRound {
    items: Vec<(Key, What)>,
    tails: Vec<u8>,
    end: Option<Box<ShardEnd>>,
}

/// What a shard hands over at the end.
struct ShardEnd {
    stats: Stats,
    tcp_log: (AnomalyLog, Vec<Key>),
    http_log: (AnomalyLog, Vec<Key>),
}

/// One shard's tables.
struct Shard {
    tcp: TcpTable<HttpConn>,
    http: HttpAnalyzer,
    stats: Stats,
    log: AnomalyLog,
    log_keys: Vec<Key>,
    http_keys: Vec<Key>,
    vantages: Vec<Vantage>,
    headers: bool,
    /// What the records share, formatted once (capture-point parts, timestamps,
    /// addresses).
    cache: RecordCache,
    seq: u64,
    removed: Vec<(u64, u64)>,
    load: Arc<Load>,
}

impl Shard {
    fn new(tcp: TcpConfig, headers: bool, load: Arc<Load>) -> Shard {
        let mut table = TcpTable::new(tcp);
        table.shard_mode();
        Shard {
            tcp: table,
            // Nothing correlates a sharded run's transactions.
            // Without header lists, a record shows the Host header only.
            http: HttpAnalyzer::new()
                .without_pending_floor()
                .keeping_headers(if headers {
                    KeptHeaders::All
                } else {
                    KeptHeaders::Host
                }),
            stats: Stats::default(),
            log: AnomalyLog::default(),
            log_keys: Vec::new(),
            http_keys: Vec::new(),
            vantages: Vec::new(),
            headers,
            cache: RecordCache::default(),
            seq: 0,
            removed: Vec::new(),
            load,
        }
    }

    /// Takes the capture points of the front's table (`vantages`) it does not
    /// have yet: shard 0's, which the front names as it goes.
    fn learn_vantages(&mut self, vantages: &[Vantage]) {
        let known = self.vantages.len();
        if known < vantages.len() {
            self.vantages.extend_from_slice(&vantages[known..]);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Works through one round; `out` is an emptied round to fill. Returns the
    /// round's output and its input, emptied, to be refilled.
    fn round(&mut self, mut input: InRound, mut out: OutRound) -> (OutRound, InRound) {
        self.vantages.append(&mut input.vantages);
        for item in input.items.drain(..) {
            match item {
                Item::Sweep { frame, ts } => self.sweep(frame, ts, &mut out),
                Item::Seg(s) => {
                    let payload = &input.data[s.start as usize..][..s.len as usize];
                    let seg = TcpSegment {
                        src_port: s.src_port,
                        dst_port: s.dst_port,
                        seq: s.seq,
                        ack: s.ack,
                        flags: s.flags,
                        window: s.window,
                        payload,
                        missing: s.missing,
                        ttl: s.ttl,
                    };
                    let ends = (s.src, s.dst);
                    self.segment(s.frame, s.ts, s.vantage, ends, &seg, s.hash, &mut out);
                }
            }
        }
        input.data.clear();
        if input.last {
            self.finish(&mut out);
        }
        input.last = false;
        (out, input)
    }

    /// Sweeps the table at `ts`, as one table would at `frame`.
    fn sweep(&mut self, frame: u64, ts: Ts, out: &mut OutRound) {
        self.tcp.sweep(&mut self.http, ts, &mut self.stats);
        self.collect(out, frame, 0);
    }

    /// Takes the segment of frame `frame`.
    #[allow(clippy::too_many_arguments)]
    fn segment(
        &mut self,
        frame: u64,
        ts: Ts,
        vantage: VantageId,
        (src, dst): (IpAddr, IpAddr),
        seg: &TcpSegment<'_>,
        hash: u64,
        out: &mut OutRound,
    ) {
        self.tcp.set_next_id(frame);
        self.tcp.segment_hashed(
            &mut self.http,
            ts,
            vantage,
            src,
            dst,
            seg,
            Some(hash),
            &mut self.stats,
            &mut self.log,
        );
        if self.tcp.next_id() != frame {
            let key = (frame, 1, 0, self.next_seq());
            out.items.push((key, What::Open));
            self.load.live[bucket_of(hash)].fetch_add(1, Ordering::Relaxed);
        }
        self.collect(out, frame, 1);
    }

    /// Ends the input: closes every connection and puts what the shard hands over
    /// at the end into `out`.
    fn finish(&mut self, out: &mut OutRound) {
        self.tcp.finish(&mut self.http, &mut self.stats);
        self.collect(out, u64::MAX, 0);
        let mut stats = std::mem::take(&mut self.stats);
        stats.merge(&self.http.stats);
        out.end = Some(Box::new(ShardEnd {
            stats,
            tcp_log: (
                std::mem::take(&mut self.log),
                std::mem::take(&mut self.log_keys),
            ),
            http_log: (
                std::mem::take(&mut self.http.log),
                std::mem::take(&mut self.http_keys),
            ),
        }));
    }

    /// Moves what the last step completed, dropped and logged into `out`, keyed.
    /// Phase 1 (a frame's segment) is one shard's only, so its key needs no
    /// connection; in a sweep and at the end, connections close in the order they
    /// opened in every shard, and the key says which.
    fn collect(&mut self, out: &mut OutRound, frame: u64, phase: u8) {
        let mut completed = std::mem::take(&mut self.http.completed);
        // Read in place, then dropped in place: draining moved each transaction
        // (about 550 bytes) out of the list first.
        for t in &completed {
            let start = out.tails.len() as u32;
            record_tail(
                &mut out.tails,
                t,
                &self.vantages,
                self.headers,
                &mut self.cache,
            );
            let end = out.tails.len() as u32;
            let conn = if phase == 1 { 0 } else { t.conn_id };
            let key = (frame, phase, conn, self.next_seq());
            out.items.push((
                key,
                What::Record {
                    conn: t.conn_id,
                    start,
                    end,
                },
            ));
        }
        completed.clear();
        self.http.completed = completed;
        self.tcp.drain_removed(&mut self.removed);
        // Drained, not taken: the list keeps its capacity for the next segment.
        for i in 0..self.removed.len() {
            let (id, hash) = self.removed[i];
            let key = (frame, phase, 0, self.next_seq());
            out.items.push((key, What::Drop(id)));
            self.load.live[bucket_of(hash)].fetch_sub(1, Ordering::Relaxed);
        }
        self.removed.clear();
        // The TCP table logs only at a frame's segment (evictions).
        for i in self.log_keys.len()..self.log.samples.len() {
            self.log_keys.push((frame, 1, 0, i as u64));
        }
        for i in self.http_keys.len()..self.http.log.samples.len() {
            let conn = if phase == 1 { 0 } else { self.http.log.tags[i] };
            self.http_keys.push((frame, phase, conn, i as u64));
        }
    }
}

/// What a sharded run returns besides the output: the writer (for the summary),
/// and the counters and anomaly samples of all its stages.
pub struct ShardedRun<W: Write> {
    /// The writer, every transaction written.
    pub writer: Writer<W>,
    /// Every counter (the front's and the shards').
    pub stats: Stats,
    /// The anomaly samples one run would have kept.
    pub anomalies: AnomalyLog,
}

/// Reads every frame of `source` through `front` (decode, capture points, layer-2
/// events) and `shards` shards (TCP and HTTP; each with `tcp`'s limits divided by
/// `shards`), writing each transaction to `writer` in one run's order, with the
/// same bytes (JSON formats only). `read_stats` takes the reader's counters;
/// `progress` is called every 65,536 frames with the frames read so far.
/// `front` must not keep segments for diagrams.
#[allow(clippy::too_many_arguments)]
pub fn run_sharded<W: Write + Send>(
    front: &mut Pipeline,
    source: &mut FileSource,
    read_stats: &mut Stats,
    shards: usize,
    tcp: TcpConfig,
    writer: Writer<W>,
    headers: bool,
    mut progress: impl FnMut(u64, &FileSource),
) -> Result<ShardedRun<W>, Error> {
    debug_assert!(front.journal.is_none(), "the journal needs one table");
    // Shard 0 is the front's and the last one merges: two at least.
    let shards = shards.max(2);
    let per_shard = TcpConfig {
        max_connections: (tcp.max_connections / shards).max(1),
        memory_budget: table_budget(tcp.memory_budget, shards),
        ..tcp
    };
    let mut front_keys: Vec<Key> = Vec::new();
    std::thread::scope(|scope| {
        // Shards 1..n-1 on threads; the last also merges: on two cores, two
        // threads (the front and it) do all the work (docs/PERFORMANCE.md).
        let merging = shards - 1;
        let loads: Vec<Arc<Load>> = (0..shards).map(|_| Arc::new(Load::new())).collect();
        let mut from_shards = Vec::new();
        let mut spare_out_tx = Vec::new();
        let mut workers = Vec::new();
        let (merging_tx, merging_rx) = sync_channel::<ToMerging>(2 * ROUNDS_IN_FLIGHT);
        let (local_back_tx, local_back_rx) = channel::<OutRound>();
        let mut lanes = Lanes {
            to_shards: Vec::new(),
            merging: merging_tx,
            spare_in: Vec::new(),
            local_spare: local_back_rx,
            vantages_sent: 0,
        };
        for load in loads[1..merging].iter().cloned() {
            // Emptied rounds go back to the thread that fills them: memory freed
            // on the thread that allocated it, and no allocation per round once
            // warm (rounds allocated on one thread and freed on another piled up
            // in the allocator: 150 MiB peak on the small-packet capture).
            let (tx, rx) = sync_channel::<InRound>(ROUNDS_IN_FLIGHT);
            let (out_tx, out_rx) = sync_channel::<OutRound>(ROUNDS_IN_FLIGHT);
            let (back_tx, back_rx) = channel::<InRound>();
            let (out_back_tx, out_back_rx) = channel::<OutRound>();
            lanes.to_shards.push(tx);
            lanes.spare_in.push(back_rx);
            from_shards.push(out_rx);
            spare_out_tx.push(out_back_tx);
            let shard = Shard::new(per_shard, headers, load);
            let worker = std::thread::Builder::new().name("flowtrace-shard".into());
            workers.push(
                worker
                    .spawn_scoped(scope, move || {
                        shard_thread(shard, rx, out_tx, back_tx, out_back_rx)
                    })
                    .map_err(RenderError::Io)?,
            );
        }
        let (merging_back_tx, merging_back_rx) = channel::<InRound>();
        lanes.spare_in.push(merging_back_rx);
        let merging_shard = Shard::new(per_shard, headers, loads[merging].clone());
        let merger = std::thread::Builder::new()
            .name("flowtrace-shard-merge".into())
            .spawn_scoped(scope, move || {
                let back = Backs {
                    input: merging_back_tx,
                    local: local_back_tx,
                    shards: spare_out_tx,
                };
                merging_thread(merging_shard, writer, merging_rx, from_shards, back)
            })
            .map_err(RenderError::Io)?;

        let local = Shard::new(per_shard, headers, loads[0].clone());
        let mut route = Route::new(local, loads);
        // Churning, short rounds: many moves even in a small capture.
        let round_frames = if route.churn { 64 } else { ROUND_FRAMES };
        let mut read: Result<(), Error> = Ok(());
        let mut frames: u64 = 0;
        let mut in_round: u64 = 0;
        loop {
            let (frame, interfaces) = match source.next_frame(read_stats) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    read = Err(e.into());
                    break;
                }
            };
            route.frame = frames;
            front.push_routed(&frame, interfaces, Some(&mut route));
            for i in front_keys.len()..front.log.samples.len() {
                front_keys.push((frames, 0, 0, i as u64));
            }
            frames += 1;
            in_round += 1;
            if in_round == round_frames || route.bytes >= ROUND_BYTES {
                in_round = 0;
                if !route.send(&mut lanes, &front.vantages, false) {
                    break;
                }
            }
            if frames.is_multiple_of(65_536) {
                progress(frames, source);
            }
        }
        if read.is_ok() {
            front.finish();
            route.send(&mut lanes, &front.vantages, true);
        }
        // Closing the channels stops the shards and the merger (after an error,
        // mid-run).
        drop(lanes);
        for w in workers {
            w.join()
                .map_err(|_| RenderError::Io(std::io::Error::other("a shard panicked")))?;
        }
        let merged = merger
            .join()
            .map_err(|_| RenderError::Io(std::io::Error::other("the merger panicked")))?;
        read?;
        let (writer, ends) = merged?;
        Ok(gather(front, front_keys, writer, ends))
    })
}

/// The run's counters and anomaly samples: the front's and every shard's.
fn gather<W: Write>(
    front: &Pipeline,
    front_keys: Vec<Key>,
    writer: Writer<W>,
    ends: Vec<ShardEnd>,
) -> ShardedRun<W> {
    let mut stats = front.stats();
    let mut tcp_logs = vec![(front.log.clone(), front_keys)];
    let mut http_logs = Vec::new();
    for end in ends {
        stats.merge(&end.stats);
        tcp_logs.push(end.tcp_log);
        http_logs.push(end.http_log);
    }
    let anomalies = super::combine_logs(&merge_logs(tcp_logs), &merge_logs(http_logs));
    ShardedRun {
        writer,
        stats,
        anomalies,
    }
}

/// The front's ends of the channels to the shard threads.
struct Lanes {
    /// Rounds to shards 1..n-2 (the last one's go by `merging`).
    to_shards: Vec<SyncSender<InRound>>,
    merging: SyncSender<ToMerging>,
    /// Emptied rounds back from shards 1..n-1.
    spare_in: Vec<Receiver<InRound>>,
    /// Shard 0's emptied output rounds, back from the merger.
    local_spare: Receiver<OutRound>,
    /// Capture points already sent to the shard threads.
    vantages_sent: usize,
}

/// Where the merging shard sends emptied rounds back to.
struct Backs {
    /// Its input rounds, to the front.
    input: Sender<InRound>,
    /// Shard 0's output rounds, to the front.
    local: Sender<OutRound>,
    /// The output rounds of shards 1..n-2, to their threads.
    shards: Vec<Sender<OutRound>>,
}

/// A shard thread other than the merging one: works rounds until the last.
fn shard_thread(
    mut shard: Shard,
    rx: Receiver<InRound>,
    out_tx: SyncSender<OutRound>,
    back_tx: Sender<InRound>,
    out_back_rx: Receiver<OutRound>,
) {
    for input in rx.iter() {
        let last = input.last;
        let out = out_back_rx.try_recv().unwrap_or_default();
        let (out, input) = shard.round(input, out);
        shard.load.busy_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        shard.load.done.fetch_add(1, Ordering::Release);
        // The front may have finished: then the round is dropped here.
        let _ = back_tx.send(input);
        // A closed channel: the merger stopped on an error it reports.
        if out_tx.send(out).is_err() || last {
            break;
        }
    }
}

/// The last shard's thread: works its rounds and, as shard 0's output of each
/// round arrives, merges that round of every shard and writes it.
fn merging_thread<W: Write>(
    mut shard: Shard,
    writer: Writer<W>,
    rx: Receiver<ToMerging>,
    from_shards: Vec<Receiver<OutRound>>,
    back: Backs,
) -> Result<(Writer<W>, Vec<ShardEnd>), Error> {
    let load = shard.load.clone();
    let mut merger = Merger::new(writer);
    // Its own output of the rounds whose shard 0 output is still to come.
    let mut own = std::collections::VecDeque::new();
    let mut own_spares: Vec<OutRound> = Vec::new();
    let mut rounds: Vec<OutRound> = Vec::with_capacity(from_shards.len() + 2);
    for message in rx.iter() {
        match message {
            ToMerging::Round(input) => {
                let out = own_spares.pop().unwrap_or_default();
                let (out, input) = shard.round(input, out);
                load.done.fetch_add(1, Ordering::Release);
                // The front may have finished: then the round is dropped.
                let _ = back.input.send(input);
                own.push_back(out);
            }
            ToMerging::Local(local) => {
                rounds.clear();
                rounds.push(local);
                for rx in &from_shards {
                    rounds.push(rx.recv().map_err(|_| stopped())?);
                }
                rounds.push(own.pop_front().ok_or_else(stopped)?);
                merger.round(&rounds)?;
                if rounds.iter().any(|r| r.end.is_some()) {
                    let ends = rounds
                        .iter_mut()
                        .map(|r| r.end.take().map(|e| *e).ok_or_else(stopped))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok((merger.writer, ends));
                }
                let mut emptied = rounds.drain(..).map(|mut r| {
                    r.items.clear();
                    r.tails.clear();
                    r
                });
                // Senders that finished drop their rounds here.
                if let Some(r) = emptied.next() {
                    let _ = back.local.send(r);
                }
                for spare in &back.shards {
                    if let Some(r) = emptied.next() {
                        let _ = spare.send(r);
                    }
                }
                own_spares.extend(emptied);
            }
        }
        load.busy_ns.store(thread_cpu_ns(), Ordering::Relaxed);
    }
    // The front stopped before the end (an error it reports).
    Err(stopped().into())
}

/// Puts the shards' records back into one run's order and writes them, a round of
/// every shard at a time.
struct Merger<W: Write> {
    writer: Writer<W>,
    /// Connection numbers as one table gives them, by the shards' numbers (the
    /// frame each opened at), for the connections the shards still hold.
    numbers: FxHashMap<u64, u64>,
    next_number: u64,
    next_id: u64,
    order: Vec<(Key, u32, u32)>,
    dropped: Vec<u64>,
}

impl<W: Write> Merger<W> {
    fn new(writer: Writer<W>) -> Merger<W> {
        Merger {
            writer,
            numbers: FxHashMap::default(),
            next_number: 0,
            next_id: 0,
            order: Vec::new(),
            dropped: Vec::new(),
        }
    }

    /// Writes the records of one round of every shard (`rounds`, by shard).
    fn round(&mut self, rounds: &[OutRound]) -> Result<(), Error> {
        self.order.clear();
        for (s, r) in rounds.iter().enumerate() {
            self.order.extend(
                r.items
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (*k, s as u32, i as u32)),
            );
        }
        // Keys are unique: a shard's sequence numbers are, and two shards share a
        // frame's phase only in sweeps and at the end, keyed by their (distinct)
        // connections.
        // A stable sort: it finds the runs each shard's records are already in
        // and merges them (an unstable sort took 1.7 % of the run's instructions).
        self.order.sort_by_key(|(k, _, _)| *k);
        for &(key, s, i) in &self.order {
            let r = &rounds[s as usize];
            match &r.items[i as usize].1 {
                What::Open => {
                    self.numbers.insert(key.0, self.next_number);
                    self.next_number += 1;
                }
                What::Drop(id) => self.dropped.push(*id),
                What::Record { conn, start, end } => {
                    let number = self.numbers.get(conn).copied();
                    debug_assert!(number.is_some(), "connection {conn} not opened");
                    self.writer.transaction_tail(
                        self.next_id,
                        number.unwrap_or(*conn),
                        &r.tails[*start as usize..*end as usize],
                    )?;
                    self.next_id += 1;
                }
            }
        }
        // After the whole round: a connection's last records follow its drop.
        for id in self.dropped.drain(..) {
            self.numbers.remove(&id);
        }
        Ok(())
    }
}

/// What the front sends the last shard, which also merges: its rounds, and shard
/// 0's output of each round after that round's input.
enum ToMerging {
    Round(InRound),
    Local(OutRound),
}

fn stopped() -> RenderError {
    RenderError::Io(std::io::Error::other("a shard stopped"))
}

/// The first [`AnomalyLog::CAPACITY`] samples of several logs in key order: what
/// one log would have kept had all pushed to it in that order.
fn merge_logs(parts: Vec<(AnomalyLog, Vec<Key>)>) -> AnomalyLog {
    let mut not_kept = 0;
    let mut all: Vec<(Key, Anomaly)> = Vec::new();
    for (log, keys) in parts {
        not_kept += log.not_kept;
        all.extend(keys.into_iter().zip(log.samples));
    }
    all.sort_by_key(|(k, _)| *k);
    if all.len() > AnomalyLog::CAPACITY {
        not_kept += (all.len() - AnomalyLog::CAPACITY) as u64;
        all.truncate(AnomalyLog::CAPACITY);
    }
    AnomalyLog {
        samples: all.into_iter().map(|(_, a)| a).collect(),
        not_kept,
        ..AnomalyLog::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions of a connection go to one shard, and connections spread.
    #[test]
    fn both_directions_hash_alike_and_connections_spread() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "192.0.2.80".parse().unwrap();
        let mut per_shard = [0usize; 2];
        for port in 1024..3072u16 {
            let s = shard_of(0, (a, port), (b, 80), 2);
            assert_eq!(s, shard_of(0, (b, 80), (a, port), 2));
            per_shard[s] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
    }

    /// Connections fill the buckets at least as well as random keys would: ports alone,
    /// addresses alone (of a client below and above the server in the key's order), or
    /// both varying. 4,096 random keys fill about 3,620 of the 16,384 buckets; these
    /// fill 3,584 to 4,096. A cheaper hand-written hash (FxHash over the key as five
    /// words) filled only 3,029 when the client's address varied, which this catches.
    #[test]
    fn connections_spread_over_the_buckets() {
        let server = SocketAddr::new("192.0.2.80".parse().unwrap(), 80);
        let cases: [&dyn Fn(u32) -> SocketAddr; 5] = [
            &|i| SocketAddr::new("10.0.0.1".parse().unwrap(), 1024 + i as u16),
            &|i| SocketAddr::new("203.0.113.9".parse().unwrap(), 1024 + i as u16),
            &|i| SocketAddr::new(IpAddr::V4((0x0a00_0000 + i).into()), 40000),
            &|i| SocketAddr::new(IpAddr::V4((0xcb00_7100 + i).into()), 40000),
            &|i| {
                SocketAddr::new(
                    IpAddr::V4((0x0a01_0000 + i * 7).into()),
                    1024 + (i * 13) as u16,
                )
            },
        ];
        for (n, client) in cases.iter().enumerate() {
            let mut seen = vec![false; BUCKETS];
            for i in 0..4096 {
                seen[bucket_of(connection_hash(0, &client(i), &server))] = true;
            }
            let distinct = seen.iter().filter(|&&s| s).count();
            assert!(distinct > 3500, "case {n}: {distinct} buckets");
        }
    }

    /// The rounds in flight come out of the tables' budget, never more than half.
    #[test]
    fn rounds_in_flight_are_taken_from_the_table_budget() {
        let reserve = in_flight_bytes(2);
        assert!(reserve > 1 << 20 && reserve < 32 << 20, "{reserve}");
        assert_eq!(table_budget(512 << 20, 2), ((512 << 20) - reserve) / 2);
        assert_eq!(table_budget(reserve, 2), reserve / 4);
        assert_eq!(table_budget(0, 2), 0);
    }

    /// The samples kept are the first in key order, the others counted.
    #[test]
    fn merged_logs_keep_the_first_in_key_order() {
        let mut parts = Vec::new();
        for shard in 0..2u64 {
            let mut log = AnomalyLog::default();
            let mut keys = Vec::new();
            for i in 0..AnomalyLog::CAPACITY as u64 {
                let frame = 2 * i + shard;
                log.push("x", Ts(frame as i64), || format!("{frame}"));
                keys.push((frame, 1, 0, i));
            }
            log.not_kept = 3;
            parts.push((log, keys));
        }
        let log = merge_logs(parts);
        assert_eq!(log.samples.len(), AnomalyLog::CAPACITY);
        assert_eq!(log.not_kept, 6 + AnomalyLog::CAPACITY as u64);
        let frames: Vec<String> = log.samples.iter().map(|a| a.detail.clone()).collect();
        let expected: Vec<String> = (0..AnomalyLog::CAPACITY).map(|f| f.to_string()).collect();
        assert_eq!(frames, expected);
    }
}
