//! Maximum-weight assignment over a sparse candidate graph: each bidder gets at most
//! one object, each object at most one bidder, and the total weight is maximal. Used
//! to pair a proxy's upstream requests with the inbound requests that caused them:
//! all candidates are weighed together, so one ambiguous pair cannot take another's
//! only match.
//!
//! Exact, by successive shortest augmenting paths (the Hungarian method in its sparse
//! form, as in Jonker and Volgenant): bidders are added one at a time, each by the
//! cheapest chain of reassignments (Dijkstra over reduced costs, with a potential per
//! bidder and per object), so after each the assignment is optimal for the bidders
//! added so far. Staying unassigned is an option worth 0 (a private object per
//! bidder). The cost is a shortest-path search per bidder, which only reaches the
//! bidders competing with it: milliseconds for thousands of bidders.
//!
//! Ties go the way of the earliest: bidders are added in input order, and among
//! equally short chains the search takes the one it found first (a bidder's own
//! candidates, in their order, before any reassignment), so between equal candidates
//! the earlier bidder takes the earlier object (order kept, as proxies do) and keeps it.
//!
//! This replaced Bertsekas' auction (until 2026-12-04): its price wars among bidders
//! with nearly equal weights (identical requests through a busy proxy) raised prices
//! by epsilon = 0.01 a bid, 24 million bids for 4,000 bidders, and it was only within
//! `bidders * epsilon` of the optimum (docs/correlation.md).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// `candidates[b]` lists `(object, weight)` for bidder `b` (each object at most once);
/// weights must be positive (a bidder may also stay unassigned, worth 0). Returns the
/// object of each bidder, the assignment of maximal total weight.
pub fn assign(candidates: &[Vec<(usize, f64)>], objects: usize) -> Vec<Option<usize>> {
    Solver::new(candidates, objects).run()
}

/// No object, no bidder, no predecessor.
const NONE: usize = usize::MAX;

/// A column reached at a distance (the second field counts the columns reached
/// before it), for the search's heap: least distance first, then the first reached.
#[derive(PartialEq)]
struct Reached(f64, usize, usize);

impl Eq for Reached {}

impl PartialOrd for Reached {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Reached {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: reverse both.
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

/// Minimum-cost form: columns are the objects, then one "unassigned" column per
/// bidder (cost 0); a candidate costs minus its weight. Reduced costs
/// `cost - row_pot - col_pot` stay non-negative, and zero on assigned pairs.
struct Solver<'a> {
    candidates: &'a [Vec<(usize, f64)>],
    objects: usize,
    row_pot: Vec<f64>,
    col_pot: Vec<f64>,
    /// The bidder holding each column.
    owner: Vec<usize>,
    /// The column of each bidder.
    column: Vec<usize>,
    // The search's state, reset after each bidder over `touched` only.
    dist: Vec<f64>,
    settled: Vec<bool>,
    /// The settled column whose owner reached this column (NONE: the new bidder).
    prev: Vec<usize>,
    touched: Vec<usize>,
    settled_order: Vec<usize>,
    heap: BinaryHeap<Reached>,
    /// Heap entries so far (the tie-break).
    pushed: usize,
}

impl<'a> Solver<'a> {
    fn new(candidates: &'a [Vec<(usize, f64)>], objects: usize) -> Solver<'a> {
        let columns = objects + candidates.len();
        // Feasible start: each row's potential is its least cost (its best weight,
        // negated; 0 if it has none), every column's 0.
        let row_pot = candidates
            .iter()
            .map(|c| c.iter().map(|e| -e.1).fold(0.0, f64::min))
            .collect();
        Solver {
            candidates,
            objects,
            row_pot,
            col_pot: vec![0.0; columns],
            owner: vec![NONE; columns],
            column: vec![NONE; candidates.len()],
            dist: vec![f64::INFINITY; columns],
            settled: vec![false; columns],
            prev: vec![NONE; columns],
            touched: Vec::new(),
            settled_order: Vec::new(),
            heap: BinaryHeap::new(),
            pushed: 0,
        }
    }

    fn run(mut self) -> Vec<Option<usize>> {
        for row in 0..self.candidates.len() {
            self.add(row);
        }
        self.column
            .iter()
            .map(|&c| (c < self.objects).then_some(c))
            .collect()
    }

    /// Offers `row`'s columns to the search, reached at `base` through `from`.
    fn relax(&mut self, row: usize, base: f64, from: usize) {
        let unassigned = (self.objects + row, 0.0);
        let candidates = self.candidates;
        let edges = candidates[row].iter().map(|&(o, w)| (o, -w));
        for (col, cost) in edges.chain(std::iter::once(unassigned)) {
            if self.settled[col] {
                continue;
            }
            // Rounding may leave a reduced cost a hair below zero.
            let reduced = (cost - self.row_pot[row] - self.col_pot[col]).max(0.0);
            let d = base + reduced;
            if d < self.dist[col] {
                if self.dist[col] == f64::INFINITY {
                    self.touched.push(col);
                }
                self.dist[col] = d;
                self.prev[col] = from;
                self.heap.push(Reached(d, self.pushed, col));
                self.pushed += 1;
            }
        }
    }

    /// Adds `row` by the shortest augmenting path and keeps the potentials feasible.
    fn add(&mut self, row: usize) {
        self.heap.clear();
        self.relax(row, 0.0, NONE);
        // Its own "unassigned" column is always free, so the search ends.
        let (free, length) = loop {
            let Some(Reached(d, _, col)) = self.heap.pop() else {
                unreachable!("the row's unassigned column is free")
            };
            if self.settled[col] || d > self.dist[col] {
                continue;
            }
            self.settled[col] = true;
            if self.owner[col] == NONE {
                break (col, d);
            }
            self.settled_order.push(col);
            // The assigned pair's reduced cost is 0: its owner is reached at `d`.
            self.relax(self.owner[col], d, col);
        };
        // Potentials: every settled column moves by what it is short of the path's
        // length, so the path's pairs get reduced cost 0 and none goes negative.
        self.row_pot[row] += length;
        for &col in &self.settled_order {
            let slack = length - self.dist[col];
            self.col_pot[col] -= slack;
            self.row_pot[self.owner[col]] += slack;
        }
        // Reassign along the path, from the free column back to the new row.
        let mut col = free;
        loop {
            let from = self.prev[col];
            let holder = if from == NONE { row } else { self.owner[from] };
            self.owner[col] = holder;
            self.column[holder] = col;
            if from == NONE {
                break;
            }
            col = from;
        }
        for &col in &self.touched {
            self.dist[col] = f64::INFINITY;
            self.settled[col] = false;
            self.prev[col] = NONE;
        }
        self.touched.clear();
        self.settled_order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The best total weight, by trying everything.
    fn brute_force(c: &[Vec<(usize, f64)>], used: &mut Vec<bool>) -> f64 {
        let Some((first, rest)) = c.split_first() else {
            return 0.0;
        };
        let mut best = brute_force(rest, used);
        for &(o, w) in first {
            if !used[o] {
                used[o] = true;
                best = best.max(w + brute_force(rest, used));
                used[o] = false;
            }
        }
        best
    }

    fn total(c: &[Vec<(usize, f64)>], a: &[Option<usize>]) -> f64 {
        a.iter()
            .enumerate()
            .filter_map(|(b, o)| {
                let o = (*o)?;
                Some(c[b].iter().find(|e| e.0 == o)?.1)
            })
            .sum()
    }

    #[test]
    fn global_beats_greedy() {
        // Greedy would give bidder 0 object 0 (its best, 10) and leave bidder 1 with
        // nothing; the optimum is 0->1 (9) and 1->0 (8).
        let c = vec![vec![(0, 10.0), (1, 9.0)], vec![(0, 8.0)]];
        assert_eq!(assign(&c, 2), vec![Some(1), Some(0)]);
    }

    #[test]
    fn unmatched_when_no_candidates() {
        let c = vec![vec![(0, 1.0)], vec![], vec![(0, 2.0)]];
        assert_eq!(assign(&c, 1), vec![None, None, Some(0)]);
    }

    #[test]
    fn identity_on_diagonal() {
        let n = 50;
        let c: Vec<Vec<(usize, f64)>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (j, if i == j { 5.0 } else { 1.0 }))
                    .collect()
            })
            .collect();
        let a = assign(&c, n);
        assert!(a.iter().enumerate().all(|(i, o)| *o == Some(i)));
    }

    /// Equal weights everywhere (identical requests): the earlier bidder takes the
    /// earlier object, and the bidders left over stay unassigned.
    #[test]
    fn ties_keep_the_order() {
        let c: Vec<Vec<(usize, f64)>> = (0..40)
            .map(|_| (0..10).map(|o| (o, 100_000.0)).collect())
            .collect();
        let a = assign(&c, 10);
        let expected: Vec<Option<usize>> = (0..40).map(|b| (b < 10).then_some(b)).collect();
        assert_eq!(a, expected);
    }

    /// Differences far below the auction's epsilon (0.01) still decide.
    #[test]
    fn small_differences_count() {
        let c = vec![
            vec![(0, 100_000.0), (1, 100_000.001)],
            vec![(0, 100_000.0), (1, 100_000.0)],
        ];
        assert_eq!(assign(&c, 2), vec![Some(1), Some(0)]);
    }

    proptest! {
        #[test]
        fn optimal_and_one_to_one(
            rows in prop::collection::vec(
                prop::collection::btree_map(0usize..6, 1u32..6, 0..6),
                0..7,
            ),
        ) {
            let c: Vec<Vec<(usize, f64)>> = rows
                .iter()
                .map(|r| r.iter().map(|(&o, &w)| (o, f64::from(w))).collect())
                .collect();
            let a = assign(&c, 6);
            let mut used = [false; 6];
            for (b, o) in a.iter().enumerate() {
                if let Some(o) = *o {
                    prop_assert!(!used[o]);
                    used[o] = true;
                    prop_assert!(c[b].iter().any(|e| e.0 == o));
                }
            }
            let best = brute_force(&c, &mut vec![false; 6]);
            prop_assert!((total(&c, &a) - best).abs() < 1e-9);
        }
    }
}
