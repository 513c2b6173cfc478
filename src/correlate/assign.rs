//! Maximum-weight assignment over a sparse candidate graph (Bertsekas' auction
//! algorithm): each bidder gets at most one object, each object at most one bidder,
//! and the total weight is maximal to within `n * EPSILON`. Used to pair a proxy's
//! upstream requests with the inbound requests that caused them: all candidates are
//! weighed together, so one ambiguous pair cannot take another's only match.

/// Bids raise prices by at least epsilon; the result is within `bidders * epsilon`
/// of the optimum. (Epsilon scaling with prices kept between phases does not mix
/// with bidders that may stay unassigned: later phases priced them out.)
const EPSILON: f64 = 0.01;

/// Bids per bidder at most, on average, for a large auction. A price war among many
/// bidders with nearly equal weights for the same objects raises prices by epsilon a
/// bid: without a bound its length grows with the bidders (measured: 25,000 bids a
/// bidder over 30,000 bidders after a backlog). Past the bound, the bidders still
/// queued take their best object still free (greedy), so the war's end costs
/// accuracy, never a link.
const MIN_BIDS_PER_BIDDER: usize = 4096;
/// Bids per bidder at most, for a small auction.
const MAX_BIDS_PER_BIDDER: usize = 1 << 15;
/// Bids in one auction that the per-bidder bound may use above
/// [`MIN_BIDS_PER_BIDDER`]: twice what the largest auction (4,096 bidders,
/// docs/correlation.md) could make before. The unpaced realistic scenarios need 6,000
/// to 8,600 bids a bidder over 1,000 to 4,000 bidders (a HAProxy gateway's identical
/// requests, a relay's); cut at 4,096 a bidder, 197 upstream requests of 4,000 were
/// left unlinked and 26 % of the HAProxy scenario's paths were right instead of 64 %.
const BIDS_PER_AUCTION: usize = 1 << 25;

/// The per-bidder bound of an auction of `bidders`.
fn bids_per_bidder(bidders: usize) -> usize {
    (BIDS_PER_AUCTION / bidders.max(1)).clamp(MIN_BIDS_PER_BIDDER, MAX_BIDS_PER_BIDDER)
}

/// `candidates[b]` lists `(object, weight)` for bidder `b`; weights must be positive
/// (a bidder may also stay unassigned, worth 0). Returns the object of each bidder.
pub fn assign(candidates: &[Vec<(usize, f64)>], objects: usize) -> Vec<Option<usize>> {
    let mut price = vec![0.0f64; objects];
    auction(
        candidates,
        &mut price,
        EPSILON,
        bids_per_bidder(candidates.len()),
    )
}

fn auction(
    candidates: &[Vec<(usize, f64)>],
    price: &mut [f64],
    epsilon: f64,
    max_bids_per_bidder: usize,
) -> Vec<Option<usize>> {
    let mut owner: Vec<Option<usize>> = vec![None; price.len()];
    let mut assigned: Vec<Option<usize>> = vec![None; candidates.len()];
    let mut queue: Vec<usize> = (0..candidates.len()).rev().collect();
    // Bounded: each round raises a price by at least epsilon and prices cannot exceed
    // the largest weight, so this ends; the cap guards against float surprises.
    let max_weight = candidates
        .iter()
        .flatten()
        .map(|c| c.1)
        .fold(0.0f64, f64::max);
    let mut rounds_left =
        (candidates.len() + 1) * ((max_weight / epsilon) as usize + 2).min(max_bids_per_bidder);
    while let Some(b) = queue.pop() {
        if rounds_left == 0 {
            queue.push(b);
            greedy_rest(candidates, &queue, &mut owner, &mut assigned);
            break;
        }
        rounds_left -= 1;
        let (mut best, mut best_value, mut second) = (None, 0.0f64, 0.0f64);
        for &(o, w) in &candidates[b] {
            let v = w - price[o];
            if v > best_value {
                second = best_value;
                best_value = v;
                best = Some(o);
            } else if v > second {
                second = v;
            }
        }
        let Some(o) = best else { continue };
        price[o] += best_value - second + epsilon;
        if let Some(prev) = owner[o].replace(b) {
            assigned[prev] = None;
            queue.push(prev);
        }
        assigned[b] = Some(o);
    }
    assigned
}

/// Gives each of `rest` (best first by weight) its best object not yet owned.
fn greedy_rest(
    candidates: &[Vec<(usize, f64)>],
    rest: &[usize],
    owner: &mut [Option<usize>],
    assigned: &mut [Option<usize>],
) {
    let mut order: Vec<usize> = rest.to_vec();
    let best = |b: usize| candidates[b].iter().map(|c| c.1).fold(0.0f64, f64::max);
    order.sort_by(|a, b| best(*b).total_cmp(&best(*a)).then(a.cmp(b)));
    for b in order {
        let free = candidates[b]
            .iter()
            .filter(|(o, _)| owner[*o].is_none())
            .max_by(|x, y| x.1.total_cmp(&y.1));
        if let Some(&(o, _)) = free {
            owner[o] = Some(b);
            assigned[b] = Some(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bid_bound_shrinks_with_the_auction() {
        assert_eq!(bids_per_bidder(100), MAX_BIDS_PER_BIDDER);
        assert_eq!(bids_per_bidder(4_000), BIDS_PER_AUCTION / 4_000);
        assert_eq!(bids_per_bidder(30_000), MIN_BIDS_PER_BIDDER);
        // at most the budget, or MIN_BIDS_PER_BIDDER a bidder
        for n in [1, 4_000, 8_192, 65_536, 1_000_000] {
            assert!(n * bids_per_bidder(n) <= BIDS_PER_AUCTION.max(n * MIN_BIDS_PER_BIDDER));
        }
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

    /// A price war cut short by the bid budget still ends with every object owned
    /// (the rest go greedily), each to one bidder.
    #[test]
    fn budget_cut_completes_greedily() {
        // 40 bidders with equal weights on the same 10 objects: a long war.
        let c: Vec<Vec<(usize, f64)>> = (0..40)
            .map(|_| (0..10).map(|o| (o, 100.0)).collect())
            .collect();
        let mut price = vec![0.0; 10];
        let a = auction(&c, &mut price, EPSILON, 2);
        let mut owned: Vec<usize> = a.iter().flatten().copied().collect();
        owned.sort();
        assert_eq!(owned, (0..10).collect::<Vec<_>>(), "{a:?}");
        // Without the cut the war ends the same way, in many more bids.
        let full = assign(&c, 10);
        assert_eq!(full.iter().flatten().count(), 10);
    }
}
