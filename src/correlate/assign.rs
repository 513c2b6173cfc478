//! Maximum-weight assignment over a sparse candidate graph (Bertsekas' auction
//! algorithm): each bidder gets at most one object, each object at most one bidder,
//! and the total weight is maximal to within `n * EPSILON`. Used to pair a proxy's
//! upstream requests with the inbound requests that caused them: all candidates are
//! weighed together, so one ambiguous pair cannot take another's only match.

/// Bids raise prices by at least epsilon; the result is within `bidders * epsilon`
/// of the optimum. (Epsilon scaling with prices kept between phases does not mix
/// with bidders that may stay unassigned: later phases priced them out.)
const EPSILON: f64 = 0.01;

/// `candidates[b]` lists `(object, weight)` for bidder `b`; weights must be positive
/// (a bidder may also stay unassigned, worth 0). Returns the object of each bidder.
pub fn assign(candidates: &[Vec<(usize, f64)>], objects: usize) -> Vec<Option<usize>> {
    let mut price = vec![0.0f64; objects];
    auction(candidates, &mut price, EPSILON)
}

fn auction(
    candidates: &[Vec<(usize, f64)>],
    price: &mut [f64],
    epsilon: f64,
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
    let mut rounds_left = (candidates.len() + 1) * ((max_weight / epsilon) as usize + 2);
    while let Some(b) = queue.pop() {
        if rounds_left == 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
