//! Clock offsets between captures, estimated as exchanges arrive and refined while
//! the run goes on.
//!
//! For an exchange seen by two captures, with `a` the difference of the request's
//! first byte and `b` of the response's first byte, `(a + b) / 2` is the offset
//! whichever capture is nearer the client (path delays cancel when they are
//! symmetric). The handshake is not used: a NAT delays a connection's first packet
//! while it sets up its state, which makes the SYN's way slower than the SYN-ACK's.
//! Per pair of captures the latest [`SAMPLES_KEPT`] samples are kept (a ring); the
//! median is the estimate and the spread (MAD) over the square root of their number
//! its uncertainty. Offsets are chained breadth-first from the reference capture.
//!
//! A capture that shares no exchange with an estimated one (yet) takes its offset
//! from the agents' wall clocks when the collector knows them ([`AgentClock`], set
//! with [`ClockEstimator::set_agent_clock`]): the difference of its agent's offset and
//! that of an estimated capture's agent, both against the NATS server's clock. Those
//! err by a message's delay (milliseconds), exchanges by microseconds, so exchanges
//! win as soon as there are any.

use super::report::{AgentClock, ClockMethod, ClockOffset};
use std::collections::BTreeMap;

/// Samples kept per pair of captures.
pub const SAMPLES_KEPT: usize = 1024;

/// A ring of the latest samples of one pair of captures.
#[derive(Default, Clone)]
struct Ring {
    samples: Vec<f64>,
    next: usize,
    total: u64,
}

impl Ring {
    fn push(&mut self, s: f64) {
        if self.samples.len() < SAMPLES_KEPT {
            self.samples.push(s);
        } else {
            self.samples[self.next] = s;
            self.next = (self.next + 1) % SAMPLES_KEPT;
        }
        self.total += 1;
    }
}

/// The offset estimator.
pub struct ClockEstimator {
    files: Vec<String>,
    overrides: Vec<Option<f64>>,
    pairs: BTreeMap<(usize, usize), Ring>,
    agent_clocks: Vec<Option<AgentClock>>,
    /// An agent clock changed what [`ClockEstimator::estimate`] would give.
    agent_clock_changed: bool,
}

impl ClockEstimator {
    /// An estimator for `files`, with the user's overrides (seconds) per file.
    pub fn new(files: Vec<String>, overrides: Vec<Option<f64>>) -> ClockEstimator {
        ClockEstimator {
            agent_clocks: vec![None; files.len()],
            files,
            overrides,
            pairs: BTreeMap::new(),
            agent_clock_changed: false,
        }
    }

    /// One more capture (a host that joined a running collector), without override.
    pub fn add_file(&mut self, name: String) {
        self.files.push(name);
        self.overrides.resize(self.files.len(), None);
        self.agent_clocks.resize(self.files.len(), None);
    }

    /// What capture `file`'s agent clock says against the NATS server's. A change of
    /// more than 50 µs or a first one marks the estimate changed
    /// ([`ClockEstimator::take_agent_clock_changed`]).
    pub fn set_agent_clock(&mut self, file: usize, clock: AgentClock) {
        let Some(slot) = self.agent_clocks.get_mut(file) else {
            return;
        };
        let moved = slot.is_none_or(|old| (old.offset_s - clock.offset_s).abs() > 50e-6);
        self.agent_clock_changed |= moved;
        *slot = Some(clock);
    }

    /// Whether an agent clock moved since the last call.
    pub fn take_agent_clock_changed(&mut self) -> bool {
        std::mem::take(&mut self.agent_clock_changed)
    }

    /// Number of captures.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no captures.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Records one exchange's first request and response bytes (raw capture times,
    /// nanoseconds) per capture that saw it answered.
    pub fn observe(&mut self, per_file: &[(usize, i64, i64)]) {
        for (i, &(x, qx, rx)) in per_file.iter().enumerate() {
            for &(y, qy, ry) in &per_file[i + 1..] {
                if x == y {
                    continue;
                }
                let (key, sign) = if x < y { ((x, y), 1.0) } else { ((y, x), -1.0) };
                let a = (qy - qx) as f64;
                let b = (ry - rx) as f64;
                self.pairs
                    .entry(key)
                    .or_default()
                    .push(sign * (a + b) / 2e9);
            }
        }
    }

    /// Samples seen over all pairs.
    pub fn samples(&self) -> u64 {
        self.pairs.values().map(|r| r.total).sum()
    }

    /// Whether every capture has an offset other than `none` or `agent_clock` (and
    /// at least `min_samples` behind each estimated one): an agent clock fills in,
    /// but decisions wait for exchanges (up to the engine's `max_clock_wait_ns`).
    pub fn settled(&self, min_samples: usize) -> bool {
        self.estimate().iter().all(|o| {
            !matches!(o.method, ClockMethod::None | ClockMethod::AgentClock)
                && (o.method != ClockMethod::Exchanges || o.samples >= min_samples)
        })
    }

    /// The offsets now.
    pub fn estimate(&self) -> Vec<ClockOffset> {
        let n = self.files.len();
        let mut out: Vec<Option<ClockOffset>> = vec![None; n];
        for (f, o) in self.overrides.iter().enumerate().take(n) {
            if let Some(secs) = o {
                out[f] = Some(ClockOffset {
                    capture: self.files[f].clone(),
                    offset_s: *secs,
                    uncertainty_s: 0.0,
                    samples: 0,
                    method: ClockMethod::Override,
                    agent_clock: None,
                });
            }
        }
        if n > 0 && out.iter().all(|o| o.is_none()) {
            out[0] = Some(ClockOffset {
                capture: self.files[0].clone(),
                offset_s: 0.0,
                uncertainty_s: 0.0,
                samples: 0,
                method: ClockMethod::Reference,
                agent_clock: None,
            });
        }
        loop {
            let mut progressed = false;
            for y in 0..n {
                if out[y].is_some() {
                    continue;
                }
                // The known capture with the most shared exchanges.
                let best = (0..n)
                    .filter_map(|x| {
                        let known = out[x].as_ref()?;
                        let (key, sign) = if x < y { ((x, y), 1.0) } else { ((y, x), -1.0) };
                        let ring = self.pairs.get(&key)?;
                        Some((ring.samples.len(), known.offset_s, sign, ring))
                    })
                    .max_by_key(|(len, ..)| *len);
                if let Some((_, base, sign, ring)) = best {
                    let mut v: Vec<f64> = ring.samples.iter().map(|e| e * sign).collect();
                    v.sort_by(f64::total_cmp);
                    let median = v[v.len() / 2];
                    let mut dev: Vec<f64> = v.iter().map(|e| (e - median).abs()).collect();
                    dev.sort_by(f64::total_cmp);
                    let mad = dev[dev.len() / 2] * 1.4826;
                    out[y] = Some(ClockOffset {
                        capture: self.files[y].clone(),
                        offset_s: base + median,
                        uncertainty_s: mad / (v.len() as f64).sqrt(),
                        samples: ring.total as usize,
                        method: ClockMethod::Exchanges,
                        agent_clock: None,
                    });
                    progressed = true;
                }
            }
            if !progressed && !self.fill_from_agent_clock(&mut out) {
                break;
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(f, o)| {
                let mut o = o.unwrap_or(ClockOffset {
                    capture: self.files[f].clone(),
                    offset_s: 0.0,
                    uncertainty_s: 0.0,
                    samples: 0,
                    method: ClockMethod::None,
                    agent_clock: None,
                });
                o.agent_clock = self.agent_clocks.get(f).copied().flatten();
                o
            })
            .collect()
    }

    /// Gives one capture without an offset its offset from agent clocks: against
    /// the estimated capture with an agent clock whose delays vary least. Returns
    /// whether it did.
    fn fill_from_agent_clock(&self, out: &mut [Option<ClockOffset>]) -> bool {
        let base = (0..out.len())
            .filter_map(|x| Some((x, out[x].as_ref()?, self.agent_clocks.get(x).copied()??)))
            .min_by(|a, b| a.2.delay_spread_s.total_cmp(&b.2.delay_spread_s));
        let Some((_, known, kc)) = base else {
            return false;
        };
        let (base_offset, base_u) = (known.offset_s, known.uncertainty_s);
        let Some(y) = (0..out.len())
            .find(|&y| out[y].is_none() && self.agent_clocks.get(y).is_some_and(Option::is_some))
        else {
            return false;
        };
        let yc = self.agent_clocks[y].expect("checked");
        out[y] = Some(ClockOffset {
            capture: self.files[y].clone(),
            offset_s: base_offset + yc.offset_s - kc.offset_s,
            uncertainty_s: base_u + yc.delay_spread_s + kc.delay_spread_s,
            samples: yc.samples.min(usize::MAX as u64) as usize,
            method: ClockMethod::AgentClock,
            agent_clock: None,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_recovered_from_symmetric_delays() {
        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, None]);
        assert!(!c.settled(1));
        // b's clock is 2 s ahead; one-way delay 1 ms each way.
        for i in 0..10 {
            let q = i * 1_000_000_000;
            c.observe(&[
                (0, q, q + 5_000_000),
                (1, q + 2_001_000_000, q + 2_004_000_000),
            ]);
        }
        let o = c.estimate();
        assert_eq!(o[0].method, ClockMethod::Reference);
        assert_eq!(o[1].method, ClockMethod::Exchanges);
        assert!((o[1].offset_s - 2.0).abs() < 1e-9, "{}", o[1].offset_s);
        assert!(c.settled(10));
        assert!(!c.settled(11));
    }

    #[test]
    fn overrides_win_and_unrelated_captures_have_none() {
        let c = ClockEstimator::new(
            vec!["a".into(), "b".into(), "c".into()],
            vec![None, Some(0.5), None],
        );
        let o = c.estimate();
        assert_eq!(o[1].method, ClockMethod::Override);
        assert_eq!(o[1].offset_s, 0.5);
        assert_eq!(o[0].method, ClockMethod::None);
    }

    #[test]
    fn the_ring_keeps_the_latest_samples() {
        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, None]);
        for _ in 0..SAMPLES_KEPT {
            c.observe(&[(0, 0, 0), (1, 1_000_000_000, 1_000_000_000)]);
        }
        for _ in 0..SAMPLES_KEPT {
            c.observe(&[(0, 0, 0), (1, 3_000_000_000, 3_000_000_000)]);
        }
        let o = c.estimate();
        assert!((o[1].offset_s - 3.0).abs() < 1e-9);
        assert_eq!(o[1].samples, 2 * SAMPLES_KEPT);
    }

    /// One exchange seen by captures `x` and `y`, `y`'s clock `offset_s` ahead, with
    /// 1 ms each way between them.
    fn seen(x: usize, y: usize, offset_s: f64) -> [(usize, i64, i64); 2] {
        let off = (offset_s * 1e9) as i64;
        [(x, 0, 5_000_000), (y, off + 1_000_000, off + 4_000_000)]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_order_of_captures_in_a_sample_does_not_matter() {
        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, None]);
        let [x, y] = seen(0, 1, 2.0);
        c.observe(&[y, x]);
        assert!(close(c.estimate()[1].offset_s, 2.0));
        // Seen from b: a is 2 s behind.
        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, Some(0.0)]);
        c.observe(&seen(1, 0, -2.0));
        let o = c.estimate();
        assert_eq!(o[0].method, ClockMethod::Exchanges);
        assert!(close(o[0].offset_s, -2.0), "{}", o[0].offset_s);
    }

    #[test]
    fn offsets_chain_through_captures_and_prefer_the_best_connected() {
        let files = vec!["a".into(), "b".into(), "c".into()];
        let mut c = ClockEstimator::new(files, vec![None, None, None]);
        for _ in 0..5 {
            c.observe(&seen(0, 1, 1.0));
            c.observe(&seen(1, 2, 0.5));
        }
        let o = c.estimate();
        assert!(close(o[2].offset_s, 1.5), "{}", o[2].offset_s);
        assert_eq!(o[2].method, ClockMethod::Exchanges);
        // One contradicting sample a-c loses to five b-c ones.
        c.observe(&seen(0, 2, 9.0));
        assert!(close(c.estimate()[2].offset_s, 1.5));
        assert_eq!(c.samples(), 11);
    }

    #[test]
    fn the_median_ignores_outliers_and_the_spread_gives_the_uncertainty() {
        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, None]);
        for _ in 0..9 {
            c.observe(&seen(0, 1, 1.0));
        }
        c.observe(&seen(0, 1, 50.0));
        c.observe(&seen(0, 1, -50.0));
        let o = c.estimate();
        assert!(close(o[1].offset_s, 1.0));
        assert_eq!(o[1].uncertainty_s, 0.0);

        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, None]);
        for s in [1.0, 1.2, 1.1] {
            c.observe(&seen(0, 1, s));
        }
        let o = c.estimate();
        assert!((o[1].offset_s - 1.1).abs() < 1e-6);
        // MAD 0.1, scaled by 1.4826, over sqrt(3).
        let want = 0.1 * 1.4826 / 3f64.sqrt();
        assert!(
            (o[1].uncertainty_s - want).abs() < 1e-6,
            "{}",
            o[1].uncertainty_s
        );
    }

    #[test]
    fn a_capture_paired_with_itself_is_no_sample() {
        let mut c = ClockEstimator::new(vec!["a".into(), "b".into()], vec![None, None]);
        c.observe(&[(0, 0, 1), (0, 5, 6)]);
        c.observe(&[(1, 0, 1)]);
        assert_eq!(c.samples(), 0);
        assert_eq!(c.estimate()[1].method, ClockMethod::None);
        assert!(!c.settled(0));
        assert!(ClockEstimator::new(Vec::new(), Vec::new()).is_empty());
    }

    fn agent(offset_s: f64) -> AgentClock {
        AgentClock {
            offset_s,
            samples: 5,
            delay_spread_s: 0.001,
        }
    }

    #[test]
    fn agent_clocks_fill_in_until_exchanges_come() {
        let files = vec!["a".into(), "b".into(), "c".into()];
        let mut c = ClockEstimator::new(files, vec![None, None, None]);
        c.set_agent_clock(0, agent(0.25));
        c.set_agent_clock(1, agent(2.25));
        assert!(c.take_agent_clock_changed());
        assert!(!c.take_agent_clock_changed());
        let o = c.estimate();
        assert_eq!(o[1].method, ClockMethod::AgentClock);
        assert!(close(o[1].offset_s, 2.0), "{}", o[1].offset_s);
        assert!((o[1].uncertainty_s - 0.002).abs() < 1e-12);
        assert_eq!(o[2].method, ClockMethod::None, "c has no agent clock");
        assert_eq!(o[0].agent_clock, Some(agent(0.25)));
        // Not settled on agent clocks alone: decisions wait for exchanges.
        assert!(!c.settled(1));
        // Exchanges win over the agent clock.
        c.observe(&seen(0, 1, 1.5));
        let o = c.estimate();
        assert_eq!(o[1].method, ClockMethod::Exchanges);
        assert!(close(o[1].offset_s, 1.5));
        // A small move is no change; a joining capture gets one too.
        c.set_agent_clock(1, agent(2.25 + 10e-6));
        assert!(!c.take_agent_clock_changed());
        c.add_file("d".into());
        c.set_agent_clock(3, agent(-0.75));
        assert!(c.take_agent_clock_changed());
        let o = c.estimate();
        assert_eq!(o.len(), 4);
        assert_eq!(o[3].method, ClockMethod::AgentClock);
        assert!(close(o[3].offset_s, -1.0), "{}", o[3].offset_s);
    }
}
