//! Totals and latency figures of the paths emitted so far, in bounded memory:
//! per-role latency histograms (HdrHistogram, 3 significant digits, microseconds up
//! to an hour) and a heap of the slowest paths, never a list of every value.

use super::report::{PathStatus, PathSummary, RequestPath, Role, RoleLatency};
use hdrhistogram::Histogram;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Slowest paths listed in the summary.
pub const SLOWEST_KEPT: usize = 5;

/// Milliseconds as ordered integer nanoseconds (for the heap).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Slow(i64, Reverse<usize>);

/// The summary builder.
#[derive(Default)]
pub struct SummaryBuilder {
    paths: usize,
    complete: usize,
    partial: usize,
    failed: usize,
    /// By role name (so listed alphabetically): the role, its latencies, the max.
    by_role: BTreeMap<String, (Role, Histogram<u64>, f64)>,
    slowest: BinaryHeap<Reverse<Slow>>,
    /// Failed paths by reason (at most a status code's worth of reasons, bounded).
    failed_by_reason: BTreeMap<String, usize>,
}

impl SummaryBuilder {
    /// Counts one path.
    pub fn add(&mut self, p: &RequestPath) {
        self.paths += 1;
        match p.status {
            PathStatus::Complete => self.complete += 1,
            PathStatus::Partial => self.partial += 1,
            PathStatus::Failed => {
                self.failed += 1;
                let reason = super::report::failure_reason(p);
                if self.failed_by_reason.len() < 64 || self.failed_by_reason.contains_key(&reason) {
                    *self.failed_by_reason.entry(reason).or_default() += 1;
                } else {
                    *self.failed_by_reason.entry("other".into()).or_default() += 1;
                }
            }
        }
        for h in &p.hops {
            if let (Some(role), Some(l)) = (&h.role, h.latency_ms) {
                // Roles are few (the topology file's plus five), but they come from
                // the user: bounded all the same.
                if !self.by_role.contains_key(role.as_str()) && self.by_role.len() >= 64 {
                    continue;
                }
                let (_, hist, max) = self.by_role.entry(role.to_string()).or_insert_with(|| {
                    (
                        role.clone(),
                        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
                        0.0,
                    )
                });
                let us = (l * 1e3).round().clamp(1.0, 3_600_000_000.0) as u64;
                hist.saturating_record(us);
                *max = max.max(l);
            }
        }
        let took = p.end_ts.0 - p.start_ts.0;
        let entry = Reverse(Slow(took, Reverse(p.id)));
        if self.slowest.len() < SLOWEST_KEPT {
            self.slowest.push(entry);
        } else if self.slowest.peek().is_some_and(|min| entry < *min) {
            self.slowest.pop();
            self.slowest.push(entry);
        }
    }

    /// The summary now.
    pub fn summary(&self) -> PathSummary {
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1e3;
        let latency_by_role = self
            .by_role
            .iter()
            .map(|(_, (role, h, max))| RoleLatency {
                role: role.clone(),
                count: h.len() as usize,
                p50_ms: q(h, 0.5),
                p90_ms: q(h, 0.9),
                p99_ms: q(h, 0.99),
                max_ms: *max,
            })
            .collect();
        let mut slowest: Vec<Slow> = self.slowest.iter().map(|r| r.0).collect();
        slowest.sort_by(|a, b| b.cmp(a));
        let mut failed_by_reason: Vec<(String, usize)> = self
            .failed_by_reason
            .iter()
            .map(|(r, n)| (r.clone(), *n))
            .collect();
        failed_by_reason.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        PathSummary {
            paths: self.paths,
            complete: self.complete,
            partial: self.partial,
            failed: self.failed,
            latency_by_role,
            slowest: slowest
                .iter()
                .map(|s| (s.1 .0, (s.0 as f64 / 1e3).round() / 1e3))
                .collect(),
            failed_by_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::report::{Hop, HopKind};
    use crate::time::Ts;

    fn path(id: usize, ms: i64, status: PathStatus) -> RequestPath {
        let mut hop = Hop::new(0, None, HopKind::Http);
        hop.role = Some(Role::Backend);
        hop.latency_ms = Some(ms as f64);
        RequestPath {
            schema_version: 1,
            id,
            status,
            start_ts: Ts(0),
            end_ts: Ts(ms * 1_000_000),
            vip: None,
            hops: vec![hop],
            root_transaction: id as u64,
            segments: Vec::new(),
        }
    }

    #[test]
    fn percentiles_and_slowest_in_bounded_memory() {
        let mut s = SummaryBuilder::default();
        for i in 1..=1000 {
            s.add(&path(i, i as i64, PathStatus::Complete));
        }
        s.add(&path(1001, 5, PathStatus::Failed));
        let out = s.summary();
        assert_eq!((out.paths, out.complete, out.failed), (1001, 1000, 1));
        let b = &out.latency_by_role[0];
        assert_eq!(b.count, 1001);
        assert!((b.p50_ms - 500.0).abs() <= 1.0, "{}", b.p50_ms);
        assert!((b.p99_ms - 990.0).abs() <= 1.0, "{}", b.p99_ms);
        assert_eq!(b.max_ms, 1000.0);
        let ids: Vec<usize> = out.slowest.iter().map(|s| s.0).collect();
        assert_eq!(ids, vec![1000, 999, 998, 997, 996]);
        assert_eq!(out.slowest[0].1, 1000.0);
        assert_eq!(
            out.failed_by_reason,
            vec![("no response (connection reset or timed out)".to_string(), 1)]
        );
    }
}
