//! The connection table's memory budget: what it counts, and what it evicts to stay
//! within it.
//!
//! **What is counted** ([`TcpTable::memory_bytes`]): the hash table's buckets (at its
//! allocated size, one control byte each, [`TcpTable::slot_bytes`] in all: a
//! half-open connection costs only its slot), a box per full connection
//! ([`TcpTable::conn_bytes`], with the HTTP sink about 700 bytes), and each full
//! connection's heap: its out-of-order buffers and what the sink reports
//! (`StreamSink::heap_bytes`: the HTTP parsers' buffers and waiting requests). It is
//! an estimate from sizes, not the allocator's figures; docs/hostile.md compares it
//! with peak RSS.
//!
//! **What is evicted**, counted in `tcp_evicted_half_open` and
//! `tcp_evicted_established`, oldest first (half-open by SYN, established by the
//! last segment: the longest idle):
//! - a hash table without room left reallocates at twice its size; when the old and
//!   the new table together would pass the budget, half-open connections are evicted
//!   until the table is at most half full (then it is rehashed in place, without
//!   growing), and established ones only if that is not enough;
//! - when the total is over the budget (buffers and full connections grew), half of
//!   the half-open connections go (and the table shrinks if that leaves it a quarter
//!   full), then established connections until the total is 7/8 of the budget.
//!
//! Eviction is by batch: two passes find the age below which the batch lies (a
//! 256-bin histogram), a third removes it; a batch is at least 1/16 of the
//! connections of its kind, so the passes cost a few table visits per eviction.

use super::{close, Conn, FlowKey, Slot, StreamSink, TcpTable};
use crate::anomaly::{AnomalyLog, Stats};
use crate::time::Ts;

impl<C> TcpTable<C> {
    /// Bytes of one bucket of the hash table: key, entry and control byte. A
    /// half-open connection costs this (and the table's free buckets).
    pub fn slot_bytes() -> usize {
        std::mem::size_of::<(FlowKey, Slot<C>)>() + 1
    }

    /// Bytes of a full connection's box (rounded as an allocator does).
    pub fn conn_bytes() -> usize {
        std::mem::size_of::<Conn<C>>().next_multiple_of(16) + 16
    }

    fn table_bytes(&self) -> usize {
        crate::memory::hash_table_buckets(self.full_cap) * Self::slot_bytes()
    }

    /// The bytes the table holds now, by the accounting above.
    pub fn memory_bytes(&self) -> usize {
        self.table_bytes()
            + (self.conns.len() - self.half_open) * Self::conn_bytes()
            + self.dynamic_bytes
    }

    /// The most [`TcpTable::memory_bytes`] has been.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    pub(super) fn note_peak(&mut self) {
        self.peak_bytes = self.peak_bytes.max(self.memory_bytes());
    }

    /// Makes room for one new connection; false when nothing could be evicted.
    pub(super) fn make_room<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        ts: Ts,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> bool {
        if self.conns.len() >= self.config.max_connections {
            let n = (self.half_open / 16).max(1);
            if self.evict_half_open(n, ts, stats, log) == 0 {
                return false;
            }
        }
        let len = self.conns.len();
        let reallocates = len >= self.conns.capacity();
        if reallocates && len + 1 > self.full_cap / 2 {
            let grown = self.memory_bytes() + 2 * self.table_bytes().max(Self::slot_bytes() * 4);
            if grown > self.config.memory_budget {
                let target = (self.full_cap / 2).saturating_sub(1);
                let n = len.saturating_sub(target);
                let evicted = self.evict_half_open(n, ts, stats, log);
                if evicted < n {
                    self.evict_established(sink, ts, n - evicted, stats, log);
                }
            }
        }
        true
    }

    /// Brings the total back under the budget: half-open connections first, then
    /// the established ones idle longest.
    pub(super) fn relieve<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        ts: Ts,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) {
        if self.half_open > 0 {
            self.evict_half_open(self.half_open.div_ceil(2), ts, stats, log);
            self.shrink_if_sparse();
        }
        let target = self.config.memory_budget / 8 * 7;
        while self.memory_bytes() > target && self.conns.len() > self.half_open {
            let n = ((self.conns.len() - self.half_open) / 16).max(1);
            self.evict_established(sink, ts, n, stats, log);
        }
    }

    /// Gives memory back when the table is less than a quarter full.
    pub(super) fn shrink_if_sparse(&mut self) {
        if self.full_cap > 1024 && self.conns.len() < self.full_cap / 4 {
            self.conns.shrink_to(self.conns.len() * 2);
            self.full_cap = self.conns.capacity();
        }
    }

    /// Evicts at least `n` of the oldest half-open connections (all of them if
    /// fewer); returns how many went.
    fn evict_half_open(
        &mut self,
        n: usize,
        ts: Ts,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> usize {
        if n == 0 || self.half_open == 0 {
            return 0;
        }
        let ids = || {
            self.conns.values().filter_map(|s| match s {
                Slot::HalfOpen(h) => Some(h.id),
                Slot::Open(_) => None,
            })
        };
        let Some(last) = cutoff(ids, n) else {
            return 0;
        };
        let budget = self.config.memory_budget;
        let mut evicted = 0;
        self.conns.retain(|k, s| {
            let Slot::HalfOpen(h) = s else { return true };
            if h.id > last {
                return true;
            }
            if let Some(r) = &mut self.removed {
                r.push((h.id, k.hash_value()));
            }
            evicted += 1;
            log.push("tcp_evicted_half_open", ts, || {
                let (a, b) = k.ends();
                format!(
                    "{a} <-> {b}: half-open connection evicted to make room (memory budget {budget} bytes, or --max-connections)"
                )
            });
            false
        });
        self.half_open -= evicted;
        stats.tcp_evicted_half_open += evicted as u64;
        evicted
    }

    /// Evicts at least `n` of the established connections idle longest (closing
    /// them: the sink emits what they carried).
    fn evict_established<S: StreamSink<Conn = C>>(
        &mut self,
        sink: &mut S,
        ts: Ts,
        n: usize,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) {
        let ages = || {
            self.conns.values().filter_map(|s| match s {
                Slot::Open(c) => Some(order(c.meta.last_ts)),
                Slot::HalfOpen(_) => None,
            })
        };
        if n == 0 {
            return;
        }
        let Some(last) = cutoff(ages, n) else {
            return;
        };
        let keys: Vec<FlowKey> = self
            .conns
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Open(c) if order(c.meta.last_ts) <= last))
            .map(|(k, _)| *k)
            .collect();
        let budget = self.config.memory_budget;
        for key in keys {
            if let Some(Slot::Open(conn)) = self.remove(&key) {
                stats.tcp_evicted_established += 1;
                log.push("tcp_evicted_established", ts, || {
                    format!(
                        "{} -> {}: connection idle since {} evicted, memory budget {budget} bytes reached",
                        conn.meta.client, conn.meta.server, conn.meta.last_ts
                    )
                });
                close(sink, *conn, ts, stats);
            }
        }
    }
}

/// A capture time as an unsigned key in the same order.
fn order(ts: Ts) -> u64 {
    (ts.0 as u64) ^ (1 << 63)
}

/// The largest value to evict so that at least `n` of `values` go (all of them
/// when fewer), and as few more as a 256-bin histogram over their range allows:
/// exact when the range is under 256; `None` when there are no values. Inclusive,
/// so that the largest value possible (a capture time of `i64::MAX`) can go too.
fn cutoff<I: Iterator<Item = u64>>(values: impl Fn() -> I, n: usize) -> Option<u64> {
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let mut any = false;
    for v in values() {
        (lo, hi, any) = (lo.min(v), hi.max(v), true);
    }
    if !any {
        return None;
    }
    let width = (hi - lo) / 256 + 1;
    let mut bins = [0usize; 257];
    for v in values() {
        bins[((v - lo) / width) as usize] += 1;
    }
    let mut seen = 0;
    for (b, count) in bins.iter().enumerate() {
        seen += count;
        if seen >= n {
            let last = (b as u64 + 1)
                .checked_mul(width)
                .map_or(hi, |end| lo.saturating_add(end - 1));
            return Some(last.min(hi));
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::cutoff;

    #[test]
    fn cutoff_is_exact_over_a_small_range_and_covers_n_over_a_large_one() {
        let small: Vec<u64> = (100..150).collect();
        assert_eq!(cutoff(|| small.iter().copied(), 1), Some(100));
        assert_eq!(cutoff(|| small.iter().copied(), 10), Some(109));
        let large: Vec<u64> = (0..100_000).map(|i| i * 7).collect();
        let c = cutoff(|| large.iter().copied(), 1000).unwrap();
        let below = large.iter().filter(|v| **v <= c).count();
        assert!((1000..1000 + 100_000 / 256 + 2).contains(&below), "{below}");
        assert_eq!(cutoff(|| large.iter().copied(), 200_000), Some(699_993));
        assert_eq!(cutoff(std::iter::empty, 5), None);
        // The extremes of the range can be evicted.
        let edge = [u64::MAX, u64::MAX - 1, 0];
        assert_eq!(cutoff(|| edge.iter().copied(), 3), Some(u64::MAX));
        assert_eq!(
            cutoff(|| edge.iter().copied(), 1),
            Some(0x00ff_ffff_ffff_ffff)
        );
    }
}
