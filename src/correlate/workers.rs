//! A proxy's workers: the order it keeps per worker, learned from the capture.
//!
//! A proxy serves each client connection on one worker (an HAProxy thread, an Nginx
//! worker process), and a worker sends its requests upstream in the order it read
//! them, while workers interleave freely. Measured on the lab's unpaced HAProxy
//! gateway (docs/correlation.md, "Worker order"): its 64 client connections fall into
//! two groups of 32, out of order 1.3 % of the time within a group and 20.9 % across.
//! The assignment's convex start-gap cost assumes one global order, which the other
//! worker breaks, so it has to be weak; this module keeps the order where it holds.
//!
//! - [`merge`]: the links of maximum total weight that keep each group's order (the
//!   inbound exchanges of a group linked in the order their upstream exchanges left),
//!   by a beam search over how far each group has been served.
//! - [`learn`]: the split of a proxy's client connections into two groups that makes
//!   the merge weigh most on a window of its exchanges (local search from several
//!   starts), kept only if, on the window after it, it beats every one of
//!   [`RANDOM_SPLITS`] random splits of the same sizes: a proxy that keeps one order
//!   (one worker, or workers that never stall) gains from a second group only the
//!   freedom any split gives, and its learned split does no better than chance there
//!   (a permutation test at 1 in 20, no tuned threshold).

use crate::rng::Rng;
use crate::time::Ts;
use rustc_hash::FxHashMap;
use std::net::{IpAddr, SocketAddr};

/// Groups a proxy's client connections are split into. Two: the lab's HAProxy runs
/// two threads (one per core); more workers need more groups (not learned yet).
pub(crate) const GROUPS: usize = 2;

/// Random splits the learned one must beat on the held-out window.
pub(crate) const RANDOM_SPLITS: usize = 19;

/// States kept per step of the merge's beam search.
const BEAM: usize = 64;

/// States kept per step while a split is learned (thousands of merges).
const LEARN_BEAM: usize = 64;

/// An upstream exchange to place: its candidate parents as (object, weight); staying
/// unlinked is worth 0, so a candidate of negative weight is never chosen. Bids are
/// given in the order they left.
pub(crate) type Bid = Vec<(usize, f64)>;

/// Where each object (inbound exchange) stands: its group and its rank within the
/// group (the order it arrived in).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    pub group: u8,
    pub rank: u32,
}

/// The links of most total weight a beam search ([`BEAM`] states a step) finds under
/// which each group's objects are linked to bids in their rank order; returns the
/// total and each bid's object. Every place's group is below [`GROUPS`].
pub(crate) fn merge(bids: &[Bid], places: &[Place], pass_cost: f64) -> (f64, Vec<Option<usize>>) {
    debug_assert!(places.iter().all(|p| usize::from(p.group) < GROUPS));
    let mut trail = Vec::with_capacity(bids.len());
    let total = beam_search(bids, places, pass_cost, BEAM, Some(&mut trail));
    // Back from the heaviest last state (equal weights: the least state).
    let mut at = trail
        .last()
        .and_then(|layer| (0..layer.len()).min_by(|&a, &b| heavier_first(&layer[a], &layer[b])));
    let mut chosen = vec![None; bids.len()];
    for (step, layer) in trail.iter().enumerate().rev() {
        let Some(i) = at else { break };
        let (_, _, (prev, object)) = layer[i];
        chosen[step] = object.map(|o| o as usize);
        at = (step > 0).then_some(prev as usize);
    }
    (total, chosen)
}

/// A state of the beam search: the next rank each group may still link (lower ones
/// are passed).
type State = [u32; GROUPS];

/// A state reached at a step, its weight, and how: the index of the state it came
/// from in the step before, and the object linked at this step.
type Node = (State, f64, (u32, Option<u32>));

/// Heaviest first; equal weights by state, so that no order of the search's own
/// shows in the result.
fn heavier_first(a: &Node, b: &Node) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Most cells of [`beam_search`]'s table of a step's states (8 bytes each).
const MAX_TABLE_CELLS: usize = 1 << 16;

// beam_search's table is laid out for two groups.
const _: () = assert!(GROUPS == 2);

/// The beam search over how far each group has been served, for bids whose
/// candidates are in arrival order: its total, and with `trail`, every step's states
/// (what [`merge`] follows back). Learning needs the total alone, thousands of
/// times, so the search is made cheap without changing which states it keeps: an
/// offer lighter than the lightest state kept a step before cannot be among the
/// `beam` heaviest (those states are offered again unchanged, `beam` distinct ones at
/// least that heavy), so it is dropped before it is looked up; a group's candidates
/// are scanned from the first a state may still link, and no further than passing
/// over objects can pay; a step's states are gathered in a table, not a hash map;
/// and the heaviest are selected, not sorted. (The tests hold it to a plain search.)
fn beam_search(
    bids: &[Bid],
    places: &[Place],
    pass_cost: f64,
    beam: usize,
    mut trail: Option<&mut Vec<Vec<Node>>>,
) -> f64 {
    let mut layer: Vec<Node> = vec![([0; GROUPS], 0.0, (u32::MAX, None))];
    let mut offers: Vec<Node> = Vec::new();
    // Each offered state's best offer, in a table over the step's range of states
    // (a state's cell is stamped with the step that last wrote it, and holds the
    // offer's index).
    let mut table: Vec<(u32, u32)> = Vec::new();
    let mut touched: Vec<usize> = Vec::new();
    // Each bid's candidates by group, ranks rising: (rank, weight), and where each
    // bid's run of each group starts.
    let mut runs: Vec<(u32, f64)> = Vec::with_capacity(bids.iter().map(Vec::len).sum());
    // Each run entry's object.
    let mut objects: Vec<u32> = Vec::with_capacity(runs.capacity());
    let mut run_starts: Vec<[usize; GROUPS + 1]> = Vec::with_capacity(bids.len());
    for bid in bids {
        let mut starts = [0; GROUPS + 1];
        for (g, start) in starts.iter_mut().take(GROUPS).enumerate() {
            *start = runs.len();
            for &(o, w) in bid.iter().filter(|c| usize::from(places[c.0].group) == g) {
                runs.push((places[o].rank, w));
                objects.push(o as u32);
            }
        }
        starts[GROUPS] = runs.len();
        // The scan below relies on it: ranks rising within each group's run (the
        // bid's candidates in arrival order).
        debug_assert!((0..GROUPS).all(|g| runs[starts[g]..starts[g + 1]]
            .windows(2)
            .all(|w| w[0].0 < w[1].0)));
        run_starts.push(starts);
    }
    for (step, bid) in bids.iter().enumerate() {
        let stamp = step as u32 + 1;
        // The layer holds distinct states: staying is offered once each.
        let floor = if layer.len() >= beam {
            layer.iter().map(|s| s.1).fold(f64::INFINITY, f64::min)
        } else {
            f64::NEG_INFINITY
        };
        offers.clear();
        offers.extend(
            layer
                .iter()
                .enumerate()
                .map(|(n, &(state, weight, _))| (state, weight, (n as u32, None))),
        );
        // Once passing over objects costs more than the heaviest candidate can
        // bring, a group's later candidates are all below the floor too.
        let heaviest = bid.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
        let starts = run_starts[step];
        for (n, &(state, weight, _)) in layer.iter().enumerate() {
            for g in 0..GROUPS {
                let (begin, end) = (starts[g], starts[g + 1]);
                let first = begin + runs[begin..end].partition_point(|c| c.0 < state[g]);
                for (at, &(rank, w)) in runs.iter().enumerate().take(end).skip(first) {
                    let passing = f64::from(rank - state[g]) * pass_cost;
                    if weight + heaviest - passing < floor {
                        break;
                    }
                    let offered = weight + w - passing;
                    if offered >= floor {
                        let mut s = state;
                        s[g] = rank + 1;
                        offers.push((s, offered, (n as u32, Some(objects[at]))));
                    }
                }
            }
        }
        let mut lo = [u32::MAX; GROUPS];
        let mut hi = [0u32; GROUPS];
        for (s, _, _) in &offers {
            for g in 0..GROUPS {
                lo[g] = lo[g].min(s[g]);
                hi[g] = hi[g].max(s[g]);
            }
        }
        let width = (hi[1] - lo[1] + 1) as usize;
        let cells = (hi[0] - lo[0] + 1) as usize * width;
        layer.clear();
        if cells <= MAX_TABLE_CELLS {
            if table.len() < cells {
                table.resize(cells, (0, 0));
            }
            touched.clear();
            for (i, &(s, w, _)) in offers.iter().enumerate() {
                let cell = (s[0] - lo[0]) as usize * width + (s[1] - lo[1]) as usize;
                let e = &mut table[cell];
                if e.0 != stamp {
                    *e = (stamp, i as u32);
                    touched.push(cell);
                } else if w > offers[e.1 as usize].1 {
                    e.1 = i as u32;
                }
            }
            layer.extend(touched.iter().map(|&cell| offers[table[cell].1 as usize]));
        } else {
            // States spread too far for a table (candidates far apart, as while the
            // layer is not full yet): each state's best by sorting (stable, so the
            // first of equal offers stays, as in the table).
            offers.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
            offers.dedup_by_key(|o| o.0);
            layer.extend_from_slice(&offers);
        }
        if layer.len() > beam {
            layer.select_nth_unstable_by(beam - 1, heavier_first);
            layer.truncate(beam);
        }
        if let Some(trail) = trail.as_deref_mut() {
            trail.push(layer.clone());
        }
    }
    // Never empty: the states of a step are offered again at the next.
    layer.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max)
}

/// The total of [`beam_search`] alone.
fn merge_weight(bids: &[Bid], places: &[Place], pass_cost: f64, beam: usize) -> f64 {
    beam_search(bids, places, pass_cost, beam, None)
}

/// The places of objects whose connections are split as `group_of` says (objects in
/// arrival order, each with its connection's index).
fn places(conn_of: &[usize], group_of: &[u8]) -> Vec<Place> {
    places_of(conn_of.iter().map(|&c| group_of[c]))
}

/// The places of objects in arrival order, given each one's group: its rank is how
/// many of its group came before it. An object of no group (a connection not placed
/// yet, [`grow`]) is in no group's order.
pub(crate) fn places_of(groups: impl Iterator<Item = u8>) -> Vec<Place> {
    let mut next = [0u32; GROUPS];
    groups
        .map(|group| {
            let Some(next) = next.get_mut(usize::from(group)) else {
                return Place { group, rank: 0 };
            };
            let rank = *next;
            *next += 1;
            Place { group, rank }
        })
        .collect()
}

/// A window of a proxy's exchanges: its upstream ones in the order they left, with
/// their candidates among its inbound ones, given in arrival order by their
/// connection's index.
pub(crate) struct Window {
    /// Each bid's candidates in arrival order (by object index).
    pub bids: Vec<Bid>,
    pub conn_of: Vec<usize>,
    /// What passing over an object costs ([`merge`]).
    pub pass_cost: f64,
}

impl Window {
    fn weight(&self, group_of: &[u8]) -> f64 {
        merge_weight(
            &self.bids,
            &places(&self.conn_of, group_of),
            self.pass_cost,
            LEARN_BEAM,
        )
    }
}

/// Local search from `g`: passes of single flips of the connections with an object
/// in the window, each kept if it makes the merge weigh more, until a pass gains
/// nothing, `passes` are done or the `budget` of merges is spent; the weight
/// reached.
fn climb(on: &Window, g: &mut [u8], passes: usize, budget: &mut usize) -> f64 {
    let mut present = vec![false; g.len()];
    for &c in &on.conn_of {
        present[c] = true;
    }
    let mut cur = on.weight(g);
    *budget = budget.saturating_sub(1);
    for _ in 0..passes {
        let mut moved = false;
        for c in (0..g.len()).filter(|&c| present[c]) {
            if *budget == 0 {
                return cur;
            }
            *budget -= 1;
            g[c] ^= 1;
            let w = on.weight(g);
            if w > cur + 1e-9 {
                cur = w;
                moved = true;
            } else {
                g[c] ^= 1;
            }
        }
        if !moved {
            break;
        }
    }
    cur
}

/// A split grown one connection at a time, in the order they first sent a request:
/// each joins the group that makes the merge of the connections placed so far weigh
/// more. A start that is already shaped by the data: on the lab's HAProxy, the local
/// search from it reached the best split found from four random starts in fewer
/// passes than any of them (docs/correlation.md, "Worker order").
fn grow(on: &Window, g: &mut [u8], budget: &mut usize) {
    const UNPLACED: u8 = GROUPS as u8;
    let mut order: Vec<usize> = Vec::new();
    let mut seen = vec![false; g.len()];
    for &c in &on.conn_of {
        if !std::mem::replace(&mut seen[c], true) {
            order.push(c);
        }
    }
    g.fill(UNPLACED);
    for c in order {
        let mut best = (f64::NEG_INFINITY, 0u8);
        for group in 0..GROUPS as u8 {
            g[c] = group;
            *budget = budget.saturating_sub(1);
            let w = on.weight(g);
            if w > best.0 {
                best = (w, group);
            }
        }
        g[c] = best.1;
    }
    // Connections without an object in the window: any group will do.
    for x in g.iter_mut().filter(|x| **x == UNPLACED) {
        *x = 0;
    }
}

/// Learns a split of `conns` connections on `learn_on` (each connection's group)
/// and checks it on `check_on`; `None` when it does not beat every random split there (or there is nothing to
/// split). The local search starts from a grown split ([`grow`]) and from
/// `random_starts` random ones, those on threads of their own (each start is
/// independent, and which wins depends only on the weights, so the result does not
/// depend on the threads).
pub(crate) fn learn(
    conns: usize,
    learn_on: &Window,
    check_on: &Window,
    random_starts: usize,
) -> Option<Vec<u8>> {
    // Too few connections to split, or too many to search (a merge per flip), or
    // too few requests on each for an order to show (connections that carry one
    // request each, without keep-alive).
    if !(2..=MAX_CONNS).contains(&conns) || learn_on.conn_of.len() < MIN_PER_CONN * conns {
        return None;
    }
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let randoms: Vec<Vec<u8>> = (0..random_starts)
        .map(|_| (0..conns).map(|_| (rng.next() >> 63) as u8).collect())
        .collect();
    let from = |mut g: Vec<u8>| {
        let mut budget = START_MERGES;
        let w = climb(learn_on, &mut g, LEARN_PASSES, &mut budget);
        (w, g)
    };
    let climbed: Vec<(f64, Vec<u8>)> = std::thread::scope(|scope| {
        // Each random start on a thread of its own; where none can be had, here.
        let mut done = Vec::new();
        let mut running = Vec::new();
        for g in randoms {
            match std::thread::Builder::new().spawn_scoped(scope, {
                let g = g.clone();
                move || from(g)
            }) {
                Ok(h) => running.push(h),
                Err(_) => done.push(from(g)),
            }
        }
        let mut budget = START_MERGES;
        let mut g = vec![0u8; conns];
        grow(learn_on, &mut g, &mut budget);
        let w = climb(learn_on, &mut g, LEARN_PASSES, &mut budget);
        let mut all = vec![(w, g)];
        for h in running {
            // A start that panicked is a bug: passed on, not left out.
            all.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all.extend(done);
        all
    });
    // The heaviest; the first of equals (the grown start, then the random ones in
    // order).
    let mut best: Option<(f64, Vec<u8>)> = None;
    for (w, g) in climbed {
        if best.as_ref().is_none_or(|(b, _)| w > *b) {
            best = Some((w, g));
        }
    }
    let (_, group_of) = best?;
    let ones = group_of.iter().filter(|&&x| x == 1).count();
    if ones == 0 || ones == conns {
        return None;
    }
    let held_out = check_on.weight(&group_of);
    let mut best_random = f64::NEG_INFINITY;
    for _ in 0..RANDOM_SPLITS {
        // A random split of the same sizes (Fisher-Yates over the connections).
        let mut order: Vec<usize> = (0..conns).collect();
        for i in (1..conns).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut g = vec![0u8; conns];
        for &c in &order[..ones] {
            g[c] = 1;
        }
        best_random = best_random.max(check_on.weight(&g));
    }
    (held_out > best_random).then_some(group_of)
}

/// Upstream exchanges a window holds while a proxy's split is learned (one window to
/// learn on, the next to check on). 512: the smallest power of two with which the
/// lab's HAProxy split was found (docs/correlation.md); links made before the split
/// is known are made without it.
pub(crate) const WINDOW: usize = 512;

/// Proxies (sending addresses) whose workers are learned at most; others are linked
/// without it.
pub(crate) const MAX_PROXIES: usize = 64;

/// Bytes held by all the proxies still collecting their two windows, at most,
/// counting a candidate pair as [`PAIR_BYTES`] and an inbound exchange's entry as
/// [`INBOUND_BYTES`]. A gateway at concurrency 64 holds about 30,000 pairs and 2,000
/// inbound exchanges (0.7 MiB at the lab's HAProxy: 512 + 512 upstreams with 29
/// candidates each); past the bound the proxy whose exchange would cross it stops
/// learning, counted. Outside `--memory-budget`, which this fixed bound is small
/// beside (512 MiB by default).
const MAX_HELD: usize = 16 << 20;

/// A candidate pair as held while learning: its id and weight.
const PAIR_BYTES: usize = 16;

/// An inbound exchange's entry as held while learning: a hash map's key, value
/// (56 bytes) and its share of the table's spare room.
const INBOUND_BYTES: usize = 128;

/// What one upstream exchange's observation ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learning {
    /// Its proxy's split was learned and kept.
    Kept,
    /// Its proxy's split did no better than chance: one order.
    Rejected,
    /// Its proxy stopped learning for the bound on what is held ([`MAX_HELD`]).
    NotKept,
}

/// Random starts of the local search, beside the grown one ([`grow`]): one, on the
/// second core.
const RANDOM_STARTS: usize = 1;

/// Passes of the local search at most (the lab's HAProxy split took 4 to 8).
const LEARN_PASSES: usize = 8;

/// Merges one start of the local search may take, growing included (at the lab's
/// HAProxy gateway, 64 connections: 385 from the grown start, 513 from a random one),
/// so that the learning's time is bounded whatever the capture holds.
const START_MERGES: usize = 640;

/// Client connections of a proxy whose split is learned at most: a merge per flip,
/// and keep-alive connections, each carrying several requests, are what a worker's
/// order shows on (twice the lab's concurrency of 64).
const MAX_CONNS: usize = 128;

/// Requests per client connection, on average, in the learning window at least.
const MIN_PER_CONN: usize = 4;

/// A client connection as the proxy received it: the capture point, and the client's
/// address there.
pub(crate) type ConnKey = (usize, SocketAddr);

/// What is known of one proxy's workers.
pub(crate) enum ProxyWorkers {
    /// Collecting its upstream exchanges, each with its candidate parents as (id,
    /// weight), and those parents' arrival times and connections.
    Learning {
        bids: Vec<(Ts, Vec<(u64, f64)>)>,
        inbound: FxHashMap<u64, (Ts, ConnKey)>,
    },
    /// Its client connections' groups.
    Known(FxHashMap<ConnKey, u8>),
    /// One order, or not enough to tell, or stopped for the bound on what learning
    /// holds ([`MAX_HELD`]): linked without a split.
    None,
}

/// A proxy: the capture file its upstream exchanges are first seen in (its host's)
/// and the address it sends them from. The address alone is not enough: hosts with
/// the same container subnets have proxies with the same address, each keeping its
/// own order.
pub(crate) type ProxyKey = (usize, IpAddr);

/// Every proxy's workers.
#[derive(Default)]
pub(crate) struct Workers {
    proxies: FxHashMap<ProxyKey, ProxyWorkers>,
    /// Bytes held while learning ([`MAX_HELD`]).
    held: usize,
}

impl Workers {
    /// The groups of `proxy`'s client connections, once known.
    pub fn groups(&self, proxy: ProxyKey) -> Option<&FxHashMap<ConnKey, u8>> {
        match self.proxies.get(&proxy) {
            Some(ProxyWorkers::Known(g)) => Some(g),
            _ => None,
        }
    }

    /// Takes note of an upstream exchange `proxy` sent at `start`, with its
    /// candidate parents (id, weight) and where each arrived (`parent(id)`: its
    /// request's end and its connection); learns the split once two windows are in,
    /// and then says whether it was kept.
    pub fn observe(
        &mut self,
        proxy: ProxyKey,
        start: Ts,
        cands: impl ExactSizeIterator<Item = (u64, f64)>,
        parent: impl Fn(u64) -> (Ts, ConnKey),
    ) -> Option<Learning> {
        if !self.proxies.contains_key(&proxy) && self.proxies.len() >= MAX_PROXIES {
            return None;
        }
        let entry = self
            .proxies
            .entry(proxy)
            .or_insert_with(|| ProxyWorkers::Learning {
                bids: Vec::new(),
                inbound: FxHashMap::default(),
            });
        let ProxyWorkers::Learning { bids, inbound } = entry else {
            return None;
        };
        let held_here = |bids: &Vec<(Ts, Vec<(u64, f64)>)>, inbound: &FxHashMap<u64, _>| {
            bids.iter().map(|b| b.1.len()).sum::<usize>() * PAIR_BYTES
                + inbound.len() * INBOUND_BYTES
        };
        if self.held + cands.len() * (PAIR_BYTES + INBOUND_BYTES) > MAX_HELD {
            self.held -= held_here(bids, inbound);
            *entry = ProxyWorkers::None;
            return Some(Learning::NotKept);
        }
        // Copied only here: most upstreams are sent once their proxy is decided.
        let cands: Vec<(u64, f64)> = cands.collect();
        for &(g, _) in &cands {
            if let std::collections::hash_map::Entry::Vacant(v) = inbound.entry(g) {
                v.insert(parent(g));
                self.held += INBOUND_BYTES;
            }
        }
        self.held += cands.len() * PAIR_BYTES;
        bids.push((start, cands));
        if bids.len() < 2 * WINDOW {
            return None;
        }
        self.held -= held_here(bids, inbound);
        let found = learn_from(bids, inbound);
        let kept = if found.is_some() {
            Learning::Kept
        } else {
            Learning::Rejected
        };
        *entry = found.map_or(ProxyWorkers::None, ProxyWorkers::Known);
        Some(kept)
    }
}

/// The split learned from two windows of collected exchanges, if it beats chance.
fn learn_from(
    bids: &mut [(Ts, Vec<(u64, f64)>)],
    inbound: &FxHashMap<u64, (Ts, ConnKey)>,
) -> Option<FxHashMap<ConnKey, u8>> {
    bids.sort_by_key(|(start, _)| *start);
    let mut conns: Vec<ConnKey> = inbound.values().map(|(_, c)| *c).collect();
    conns.sort_unstable();
    conns.dedup();
    let conn_index = |c: &ConnKey| conns.binary_search(c).expect("collected");
    // In which window each inbound exchange is a candidate (bit 0: the first, 1: the
    // second): one that is a candidate in both belongs to neither, or the merge of
    // each would pass it over for an upstream in the other.
    let mut seen_in: FxHashMap<u64, u8> = FxHashMap::default();
    for (k, (_, c)) in bids.iter().enumerate() {
        let bit = if k < WINDOW { 1 } else { 2 };
        for (g, _) in c {
            *seen_in.entry(*g).or_default() |= bit;
        }
    }
    let window = |part: &[(Ts, Vec<(u64, f64)>)]| {
        let mut objects: Vec<(Ts, u64)> = part
            .iter()
            .flat_map(|(_, c)| c.iter().map(|(g, _)| (inbound[g].0, *g)))
            .filter(|(_, g)| seen_in[g] != 3)
            .collect();
        objects.sort_unstable();
        objects.dedup();
        let index: FxHashMap<u64, usize> = objects
            .iter()
            .enumerate()
            .map(|(i, (_, g))| (*g, i))
            .collect();
        Window {
            bids: part
                .iter()
                .map(|(_, c)| {
                    let mut bid: Bid = c
                        .iter()
                        .filter_map(|(g, w)| Some((*index.get(g)?, *w)))
                        .collect();
                    bid.sort_unstable_by_key(|&(o, _)| o);
                    bid
                })
                .collect(),
            conn_of: objects
                .iter()
                .map(|(_, g)| conn_index(&inbound[g].1))
                .collect(),
            pass_cost: crate::correlate::link::CANDIDATE_BASE,
        }
    };
    let (first, second) = bids.split_at(WINDOW);
    let group_of = learn(conns.len(), &window(first), &window(second), RANDOM_STARTS)?;
    Some(conns.into_iter().zip(group_of).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A plain beam search (a hash map of every offer, a full sort a step), the
    /// reference the cheap one is held to.
    fn merge_with_beam(
        bids: &[Bid],
        places: &[Place],
        pass_cost: f64,
        beam: usize,
    ) -> (f64, Vec<Option<usize>>) {
        // A state: the next rank each group may still link (lower ones are passed).
        type State = [u32; GROUPS];
        struct Node {
            state: State,
            weight: f64,
            /// (node of the previous step, object linked at this step).
            back: (u32, Option<u32>),
        }
        let mut steps: Vec<Vec<Node>> = Vec::with_capacity(bids.len() + 1);
        steps.push(vec![Node {
            state: [0; GROUPS],
            weight: 0.0,
            back: (u32::MAX, None),
        }]);
        for bid in bids {
            let prev = steps.last().expect("the first step is there");
            let mut best: HashMap<State, (f64, (u32, Option<u32>))> =
                HashMap::with_capacity(prev.len() * (bid.len() + 1));
            let mut offer = |state: State, weight: f64, back: (u32, Option<u32>)| {
                let e = best.entry(state).or_insert((f64::NEG_INFINITY, back));
                if weight > e.0 {
                    *e = (weight, back);
                }
            };
            for (n, node) in prev.iter().enumerate() {
                offer(node.state, node.weight, (n as u32, None));
                for &(o, w) in bid {
                    let p = places[o];
                    let g = usize::from(p.group);
                    if p.rank >= node.state[g] {
                        let mut s = node.state;
                        s[g] = p.rank + 1;
                        // Every object passed over is one left without an upstream: it
                        // costs what a link is worth.
                        let passed = f64::from(p.rank - node.state[g]);
                        offer(
                            s,
                            node.weight + w - passed * pass_cost,
                            (n as u32, Some(o as u32)),
                        );
                    }
                }
            }
            let mut next: Vec<Node> = best
                .into_iter()
                .map(|(state, (weight, back))| Node {
                    state,
                    weight,
                    back,
                })
                .collect();
            // Heaviest first; equal weights by state, so the result does not depend on
            // the hash map's order.
            next.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.state.cmp(&b.state)));
            next.truncate(beam);
            steps.push(next);
        }
        let last = steps.last().expect("the first step is there");
        let total = last.first().map_or(0.0, |n| n.weight);
        let mut chosen = vec![None; bids.len()];
        let mut at = 0u32;
        for step in (1..steps.len()).rev() {
            let (prev, object) = steps[step][at as usize].back;
            chosen[step - 1] = object.map(|o| o as usize);
            at = prev;
        }
        (total, chosen)
    }

    /// Connections of the synthetic proxy: even ones on worker 0, odd ones on
    /// worker 1. Sixteen, so that a random split of the same sizes is the workers'
    /// own once in 6,435 (the check compares with 19 of them).
    const CONNS: usize = 16;

    /// Two workers: requests arrive one a slot, round-robin over the connections,
    /// and each worker forwards its own in order half a slot later; but worker 1
    /// stalls for 6 slots in every 20 and then sends its backlog at once, so the
    /// global order is broken and each worker's is kept. Every object up to 10 slots
    /// before an upstream is its candidate, weighed as the engine's timing cost does:
    /// convex in the start gap (which favours the global order) and in how far the
    /// response's relay is from the usual (which points at the right pair: each
    /// request takes its own time at the server).
    fn two_workers(n: usize) -> (Window, Vec<usize>) {
        let conn_of: Vec<usize> = (0..n).map(|k| k % CONNS).collect();
        let departure = |k: usize| {
            let (period, at) = (k / 20, k % 20);
            if conn_of[k] % 2 == 1 && (10..16).contains(&at) {
                // The backlog leaves at the stall's end, in order.
                (period * 20 + 16) as f64 + 0.1 * (at - 10) as f64
            } else {
                k as f64 + 0.5
            }
        };
        // The server's time for each request: 0 to 20 slots, fixed per request.
        let service = |k: usize| ((k * 7919) % 200) as f64 / 10.0;
        // The inbound response ends 0.2 slots after the upstream one.
        let relayed = |o: usize| departure(o) + service(o) + 0.2;
        let mut departures: Vec<(f64, usize)> = (0..n).map(|k| (departure(k), k)).collect();
        departures.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bids = departures
            .iter()
            .map(|&(t, k)| {
                let upstream_end = t + service(k);
                (0..n)
                    .filter(|&o| (o as f64) <= t && t - (o as f64) <= 10.0)
                    .map(|o| {
                        let start_gap = t - o as f64 - 0.5;
                        let end_gap = relayed(o) - upstream_end - 0.2;
                        let w = 10.0 - 0.05 * start_gap.powi(2) - 0.5 * end_gap.abs();
                        (o, w.max(0.1))
                    })
                    .collect()
            })
            .collect();
        let truth = departures.iter().map(|&(_, k)| k).collect();
        (
            Window {
                bids,
                conn_of,
                pass_cost: 10.0,
            },
            truth,
        )
    }

    /// A random window: `n` objects on 8 connections, `n` bids each with up to
    /// `per_bid` candidates drawn from the objects within `reach` of it (in arrival
    /// order), weights around a link's worth.
    fn random_window(seed: u64, n: usize, per_bid: usize, reach: usize) -> (Vec<Bid>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let conn_of: Vec<usize> = (0..n).map(|_| (rng.next() % 8) as usize).collect();
        let bids = (0..n)
            .map(|k| {
                let lo = k.saturating_sub(reach);
                let hi = (k + reach).min(n - 1);
                let mut bid: Bid = (0..per_bid)
                    .map(|_| {
                        let o = lo + (rng.next() % (hi - lo + 1) as u64) as usize;
                        (o, 50.0 + (rng.next() % 100) as f64)
                    })
                    .collect();
                bid.sort_by_key(|c| c.0);
                bid.dedup_by_key(|c| c.0);
                bid
            })
            .collect();
        (bids, conn_of)
    }

    /// The beam search keeps the same states as a plain one: the same weight, with
    /// near candidates (the table) and with candidates anywhere in a window of 1,200
    /// (states too spread for the table while the layer fills); and the links
    /// merge() follows back keep each group's order and weigh that total.
    #[test]
    fn merge_weight_is_the_full_merges_total() {
        for (seed, n, reach) in [(1, 400, 6), (2, 400, 20), (3, 1200, 1200), (4, 1200, 1200)] {
            let (bids, conn_of) = random_window(seed, n, 12, reach);
            let split: Vec<u8> = (0..8).map(|c| (c % 2) as u8).collect();
            let places = places(&conn_of, &split);
            for beam in [1, 8, 64] {
                let full = merge_with_beam(&bids, &places, 100.0, beam).0;
                let cheap = merge_weight(&bids, &places, 100.0, beam);
                assert_eq!(full, cheap, "seed {seed}, reach {reach}, beam {beam}");
            }
            // The links merge() follows back weigh its total.
            let (total, chosen) = merge(&bids, &places, 100.0);
            assert_eq!(total, merge_with_beam(&bids, &places, 100.0, BEAM).0);
            let mut state = [0u32; GROUPS];
            let mut weight = 0.0;
            for (bid, c) in bids.iter().zip(&chosen) {
                let Some(o) = *c else { continue };
                let p = places[o];
                let g = usize::from(p.group);
                assert!(p.rank >= state[g], "seed {seed}: a group's order broken");
                weight +=
                    bid.iter().find(|x| x.0 == o).unwrap().1 - f64::from(p.rank - state[g]) * 100.0;
                state[g] = p.rank + 1;
            }
            assert!(
                (weight - total).abs() < 1e-6 * total.abs().max(1.0),
                "seed {seed}: {weight} against {total}"
            );
        }
    }

    /// What proxies hold while they collect their windows is bounded: past the
    /// bound, the proxy whose exchange would cross it stops learning, and the others
    /// go on.
    #[test]
    fn learning_state_is_bounded() {
        let mut w = Workers::default();
        let mut not_kept = Vec::new();
        let mut next_id = 0u64;
        for k in 0..1000u32 {
            for p in 0..8u8 {
                let proxy = (0, IpAddr::from([198, 18, 0, p]));
                let cands: Vec<(u64, f64)> = (0..64)
                    .map(|_| {
                        next_id += 1;
                        (next_id, 1.0)
                    })
                    .collect();
                let parent = |g: u64| {
                    (
                        Ts(g as i64),
                        (0, SocketAddr::from(([198, 18, 1, 1], (g % 60_000) as u16))),
                    )
                };
                match w.observe(proxy, Ts(i64::from(k)), cands.iter().copied(), parent) {
                    Some(Learning::NotKept) => not_kept.push(p),
                    Some(other) => panic!("{other:?} before two windows"),
                    None => {}
                }
                assert!(w.held <= MAX_HELD, "{}", w.held);
            }
        }
        // Each proxy would hold 9 MiB by the end (1,000 upstreams of 64 candidates,
        // each with an inbound exchange of its own): one fits the bound, the others
        // stop, each once.
        assert!(!not_kept.is_empty() && not_kept.len() < 8, "{not_kept:?}");
        let mut once = not_kept.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once.len(), not_kept.len(), "{not_kept:?}");
    }

    #[test]
    fn merge_keeps_each_groups_order() {
        let (w, truth) = two_workers(160);
        let right = |split: &[u8]| {
            let (_, chosen) = merge(&w.bids, &places(&w.conn_of, split), 10.0);
            chosen
                .iter()
                .zip(&truth)
                .filter(|(c, t)| **c == Some(**t))
                .count()
        };
        let workers: Vec<u8> = (0..CONNS).map(|c| (c % 2) as u8).collect();
        let with_workers = right(&workers);
        assert_eq!(with_workers, truth.len());
        // One group (one global order) cannot follow the stalled worker.
        let one = right(&[0; CONNS]);
        assert!(one < with_workers, "{one}");
    }

    #[test]
    fn learns_the_workers_and_checks_them() {
        let (learn_on, _) = two_workers(320);
        let (check_on, _) = two_workers(320);
        let g = learn(CONNS, &learn_on, &check_on, 1).expect("a split beating chance");
        // As the workers' (either way round), but for connections whose requests
        // seldom meet a stall, which any group serves as well (a random split
        // agrees on 8 of 16).
        let same = (0..CONNS).filter(|&c| usize::from(g[c]) == c % 2).count();
        let agree = same.max(CONNS - same);
        assert!(agree >= CONNS - 2, "{agree} of {CONNS}: {g:?}");
    }

    /// Connections that carry a request or two each (no keep-alive), or more of them
    /// than the search is bounded for, are not searched: no split, at once.
    #[test]
    fn thin_or_too_many_connections_are_not_searched() {
        let (w, _) = two_workers(320);
        let (check, _) = two_workers(320);
        // The same 320 requests as if spread over 100 connections (3.2 each).
        let thin = Window {
            bids: w.bids.clone(),
            conn_of: (0..320).map(|k| k % 100).collect(),
            pass_cost: 10.0,
        };
        assert!(learn(100, &thin, &check, 1).is_none());
        assert!(learn(MAX_CONNS + 1, &w, &check, 1).is_none());
        // And the workers' own connections still are.
        assert!(learn(CONNS, &w, &check, 1).is_some());
    }

    #[test]
    fn one_order_is_not_split() {
        // One worker: departures in arrival order; no split can do better than any
        // other, so none beats every random one.
        let n = 48;
        let conn_of: Vec<usize> = (0..n).map(|k| k % 4).collect();
        let bids: Vec<Bid> = (0..n)
            .map(|t| (0..=t).map(|o| (o, 10.0 - 0.1 * (t - o) as f64)).collect())
            .collect();
        let w = Window {
            bids: bids.clone(),
            conn_of: conn_of.clone(),
            pass_cost: 10.0,
        };
        let check = Window {
            bids,
            conn_of,
            pass_cost: 10.0,
        };
        assert!(learn(4, &w, &check, 4).is_none());
    }
}
