//! Proxy links: how likely an upstream exchange `U` was caused by an inbound exchange
//! `G` at the same proxy, from every signal there is, each shared value worth its
//! information.

use super::record::{hash_of, Msg, NameBook, View};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// How often each value occurs among the latest exchanges, so a shared value weighs by
/// its information: `log2(exchanges / occurrences)` bits (a unique URI says much, `/`
/// little, a User-Agent every request carries nothing). The window is the latest
/// [`Rarity::WINDOW`] exchanges: values are counted as exchanges arrive and
/// uncounted as they leave it, so memory stays bounded on a run of any length.
pub(crate) struct Rarity {
    counts: FxHashMap<u64, u32>,
    window: VecDeque<Box<[u64]>>,
}

/// What a value is, in rarity keys.
#[derive(Clone, Copy)]
pub(crate) enum ValueKind {
    Uri = 0,
    Request = 1,
    Response = 2,
    Body = 3,
}

fn key(kind: ValueKind, value: u64) -> u64 {
    hash_of(&[&[kind as u8], &value.to_le_bytes()])
}

impl Rarity {
    /// Exchanges whose values are counted.
    pub const WINDOW: usize = 65_536;

    pub fn new() -> Rarity {
        Rarity {
            counts: FxHashMap::default(),
            window: VecDeque::new(),
        }
    }

    /// Counts one exchange's values.
    pub fn add(&mut self, m: &Msg) {
        let mut keys: Vec<u64> = Vec::with_capacity(2 + m.req_pairs.len());
        if m.has_request {
            keys.push(key(ValueKind::Uri, m.uri_hash));
            keys.extend(m.req_pairs.iter().map(|p| key(ValueKind::Request, p.pair)));
        }
        if let Some(r) = &m.resp {
            keys.extend(r.pairs.iter().map(|p| key(ValueKind::Response, p.pair)));
            keys.push(key(ValueKind::Body, r.body_bytes));
        }
        for k in &keys {
            *self.counts.entry(*k).or_default() += 1;
        }
        self.window.push_back(keys.into_boxed_slice());
        if self.window.len() > Self::WINDOW {
            for k in self.window.pop_front().expect("non-empty").iter() {
                if let Some(c) = self.counts.get_mut(k) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(k);
                    }
                }
            }
        }
    }

    pub fn bits(&self, kind: ValueKind, value: u64) -> f64 {
        let n = self
            .counts
            .get(&key(kind, value))
            .copied()
            .unwrap_or(1)
            .max(1);
        let total = self.window.len().max(1) as f64;
        (total / f64::from(n)).log2().clamp(0.0, 12.0)
    }
}

/// Points per squared millisecond between the end of an upstream response and the
/// start of the inbound response it ends (a proxy answers as soon as its upstream
/// has: in the lab, responses leave a proxy in exactly the order its upstream
/// responses arrive).
const END_GAP_WEIGHT: f64 = 1.0;
/// Points per squared millisecond between an inbound request and the upstream
/// exchange's start, up to [`START_GAP_QUADRATIC_MS`]; past it each millisecond costs
/// what the last one did (a Huber cost: a normal core for a proxy's usual forwarding
/// delay, an exponential tail for the stalls of a loaded proxy, which stretch true
/// start gaps to tens of milliseconds: p90 4-7 ms, p99 12-30 ms on the maximum-rate
/// scenarios). Convex, so the assignment keeps the order in which a proxy received
/// requests; bounded in slope, so one stalled start cannot outweigh a header that
/// names the upstream. (Squared without a bound, the same weight lost a fifth of
/// the nginx links on real-seed-userland-max; at 0.002 the start order counted for
/// nothing; measurements in docs/correlation.md.)
const START_GAP_WEIGHT: f64 = 1.0;
/// Where the start gap's cost turns from squared to linear.
const START_GAP_QUADRATIC_MS: f64 = 3.0;
/// The start gap's weight in a link's confidence: the start order decides between
/// candidates but does not make a link surer. How faithfully a proxy keeps arrival
/// order depends on how it is built (HAProxy's threads reorder it), and counted in
/// confidence it made 2 % of HAProxy's links at 0.9 or more wrong.
const START_GAP_CONFIDENCE_WEIGHT: f64 = 0.002;

/// How often each proxy keeps the URI, learned from its unambiguous links (an upstream
/// with a single candidate parent, so what it learns does not depend on how links
/// are scored). A proxy that always forwards the URI unchanged makes a different URI
/// evidence against a pairing, worth `log2((n + 2) / (changed + 1))` bits after `n`
/// such links (Laplace's rule: about one bit before any, 7.7 after 200 unchanged);
/// one that rewrites URIs (Kong's `strip_path`, a prefix-stripping location) makes
/// it worth nothing.
pub(crate) struct UriHabits {
    proxies: FxHashMap<std::net::SocketAddr, (u32, u32)>,
}

impl UriHabits {
    /// Proxies followed (more get the prior).
    const MAX_PROXIES: usize = 4096;

    pub fn new() -> UriHabits {
        UriHabits {
            proxies: FxHashMap::default(),
        }
    }

    /// Learns one unambiguous link at `proxy`: whether the URI went upstream unchanged.
    pub fn observe(&mut self, proxy: std::net::SocketAddr, kept: bool) {
        if !self.proxies.contains_key(&proxy) && self.proxies.len() >= Self::MAX_PROXIES {
            return;
        }
        let (n, changed) = self.proxies.entry(proxy).or_default();
        *n = n.saturating_add(1);
        if !kept {
            *changed = changed.saturating_add(1);
        }
    }

    /// Bits against a pairing at `proxy` whose upstream URI differs.
    pub fn changed_uri_bits(&self, proxy: std::net::SocketAddr) -> f64 {
        let (n, changed) = self.proxies.get(&proxy).copied().unwrap_or((0, 0));
        ((f64::from(n) + 2.0) / (f64::from(changed) + 1.0)).log2()
    }
}

/// Added to every candidate's score so that weights stay positive for the assignment.
pub(crate) const CANDIDATE_BASE: f64 = 100_000.0;

/// The upstream side of a candidate pair: its first view (where the proxy sent it)
/// and last view (where its server received it).
pub(crate) struct Upstream<'a> {
    pub first: &'a View,
    pub last: &'a View,
}

/// The inbound side: its last view (where the proxy received it).
pub(crate) struct Inbound<'a> {
    pub last: &'a View,
}

/// Whether a proxy receiving `inbound` may send `upstream`: the same method, or a
/// change proxies make (nginx with proxy_cache fetches a HEAD with GET).
fn method_may_become(inbound: &str, upstream: &str) -> bool {
    inbound == upstream || (inbound == "HEAD" && upstream == "GET")
}

/// Whether `u` can be nested in `g` at all (a method `g`'s may become, `u` inside
/// `g`'s interval within `tolerance` ns). The tolerance is for the clocks of two
/// interfaces; seen at the same one, `u` must lie inside `g` exactly. Requests that
/// follow each other on a keep-alive connection within the tolerance (a loopback
/// server answers in less) would otherwise nest in each other (issue 15). Two
/// exchanges of one connection (the same addresses at the same interface) are never
/// a proxy's inbound and upstream: pipelined responses that end in one segment
/// would otherwise nest the later request in the earlier one.
pub(crate) fn nested(u: &Upstream<'_>, g: &Inbound<'_>, tolerance: i64) -> bool {
    let (uf, gl) = (u.first, g.last);
    let one_interface = uf.vantage == gl.vantage;
    if one_interface && uf.client == gl.client && uf.server == gl.server {
        return false;
    }
    let tolerance = if one_interface { 0 } else { tolerance };
    if !gl.msg.has_request || !method_may_become(&gl.msg.method, &uf.msg.method) {
        return false;
    }
    if gl.req.0 > uf.req.0 + tolerance {
        return false;
    }
    match (uf.resp_end, gl.resp_end) {
        (Some(ue), Some(ge)) => ue.0 <= ge.0 + tolerance,
        (None, Some(ge)) => uf.req.0 <= ge.0,
        // An inbound exchange without a response was open until its connection
        // ended (when it reached correlation), not forever.
        (_, None) => uf.req.0 <= gl.arrived.0 + tolerance,
    }
}

/// A candidate pair's two scores.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scores {
    /// What the assignment maximises.
    pub assign: f64,
    /// What the link's confidence is computed from (the start gap weighs less).
    pub sure: f64,
}

/// The scores of linking `u` under `g` (positive; [`CANDIDATE_BASE`] plus points),
/// with the reasons spelled out when `why` is given.
pub(crate) fn scores(
    u: &Upstream<'_>,
    g: &Inbound<'_>,
    rarity: &Rarity,
    habits: &UriHabits,
    names: &NameBook,
    mut why: Option<&mut Vec<String>>,
) -> Scores {
    let (uf, gl) = (u.first, g.last);
    let (um, gm): (&Msg, &Msg) = (&uf.msg, &gl.msg);
    // The reasons are formatted only when asked for: scoring every candidate pair
    // would otherwise format (and drop) a dozen strings each (17 % of a collector's
    // CPU).
    macro_rules! say {
        ($($arg:tt)*) => {
            if let Some(w) = why.as_deref_mut() {
                w.push(format!($($arg)*));
            }
        };
    }
    let mut score = 10.0;
    if gm.uri_hash == um.uri_hash {
        let bits = rarity.bits(super::link::ValueKind::Uri, um.uri_hash);
        score += 1.0 + bits;
        say!(
            "same {} ({bits:.1} bits)",
            if gm.method == um.method {
                "method and URI"
            } else {
                "URI"
            }
        );
    } else if gm.has_request {
        let against = habits.changed_uri_bits(gl.server);
        score -= against;
        say!("another URI ({against:.1} bits against: this proxy keeps URIs)");
    }
    let gclient = gl.client.ip();
    if let Some(xff) = &um.xff {
        if xff.contains(&gclient) {
            score += 2.0;
            say!("X-Forwarded-For names {gclient}");
        } else {
            score -= 10.0;
        }
    }
    if let Some(real) = &um.real_ip {
        if *real == Some(gclient) {
            score += 1.0;
            say!("X-Real-IP is {gclient}");
        } else {
            score -= 10.0;
        }
    }
    for p in um.req_pairs.iter() {
        if !gm.req_has(p) {
            continue;
        }
        let bits = rarity.bits(ValueKind::Request, p.pair);
        if bits >= 1.0 {
            score += bits;
            say!(
                "request header {} propagated ({bits:.1} bits)",
                names.name(p.name)
            );
        }
    }
    // The upstream's response as its server sent it (last view), else as the proxy
    // received it.
    let uresp = u.last.msg.resp.as_ref().or(um.resp.as_ref());
    if let (Some(a), Some(b)) = (gm.resp.as_ref(), uresp) {
        if a.status == b.status {
            score += 1.0;
        } else if !(502..=504).contains(&a.status) {
            score -= 3.0;
        }
        if a.body_bytes == b.body_bytes {
            let bits = rarity.bits(ValueKind::Body, a.body_bytes);
            score += bits;
            if bits >= 1.0 {
                say!("same response body size ({} B)", a.body_bytes);
            }
        }
        for p in b.pairs.iter() {
            if !a.has(p) {
                continue;
            }
            let bits = rarity.bits(ValueKind::Response, p.pair);
            if bits >= 1.0 {
                score += bits;
                say!(
                    "response header {} propagated ({bits:.1} bits)",
                    names.name(p.name)
                );
            }
        }
        // A header of the inbound response naming the upstream's address (Nginx's
        // Backend-Server: $upstream_addr, and the like).
        let userver = u.last.server;
        if let Some((p, _)) = a.addrs.iter().find(|(_, addr)| *addr == userver) {
            let bits = rarity.bits(ValueKind::Response, p.pair).max(1.0);
            score += 2.0 + bits;
            say!(
                "response header {} names the upstream {userver}",
                names.name(p.name)
            );
        } else if a.backend_server {
            score -= 5.0;
        }
    }
    // Nesting: the tighter, the likelier. The penalty is convex (squared ms of slack):
    // a linear one adds up to the same total for every way of pairing nested
    // exchanges, while a convex one prefers the order-keeping pairing that proxies
    // follow.
    let start_gap = (uf.start.0 - gl.req_end.0).max(0);
    let end_gap = match (uf.resp_end, gl.resp) {
        (Some(a), Some(b)) => (b.0 - a.0).max(0),
        _ => 0,
    };
    let (sg, eg) = (start_gap as f64 / 1e6, end_gap as f64 / 1e6);
    let start_cost = if sg <= START_GAP_QUADRATIC_MS {
        START_GAP_WEIGHT * sg * sg
    } else {
        START_GAP_WEIGHT * START_GAP_QUADRATIC_MS * (2.0 * sg - START_GAP_QUADRATIC_MS)
    };
    score -= END_GAP_WEIGHT * eg * eg;
    let sure = score - START_GAP_CONFIDENCE_WEIGHT * sg * sg;
    score -= start_cost;
    say!("starts {sg:.3} ms after the inbound request, ends {eg:.3} ms before its response");
    // Offset so every plausible candidate stays positive: clipping would flatten
    // exactly the differences the assignment needs.
    Scores {
        assign: CANDIDATE_BASE + score,
        sure: CANDIDATE_BASE + sure,
    }
}

/// Points of score difference that make a rival parent `e` times less likely.
const CONFIDENCE_SCALE: f64 = 3.0;

/// How sure a link is: the chosen parent's share of the posterior over every candidate
/// parent, `1 / (1 + sum exp(-margin / 3))` with each rival's margin (the chosen score
/// minus the rival's, at least 0), not only the runner-up's. Several rivals a few points
/// behind make a link as doubtful as one rival just behind: with three rivals 3 points
/// behind it is 0.48, where the runner-up's margin alone said 0.63. A lone candidate
/// is 0.99. Rounded to hundredths, at most 0.99.
pub(crate) fn confidence(chosen: f64, rivals: impl IntoIterator<Item = f64>) -> f64 {
    let against: f64 = rivals
        .into_iter()
        .map(|r| (-(chosen - r).max(0.0) / CONFIDENCE_SCALE).exp())
        .sum();
    let c = (1.0 / (1.0 + against)).min(0.99);
    (c * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
