//! Scoring request paths against the lab's ground truth (`truth.jsonl`, schema in
//! docs/lab.md): precision and recall of whole paths and of each link.
//!
//! A truth request is matched to the path whose first hop has the same client
//! address and port and VIP, taking requests on one client connection in order. Then
//! each link is checked:
//!
//! - `gateway_host`: the first hop's server is on the host whose gateway took it;
//! - `gateway_upstream`: the gateway's upstream hop has the truth's connection (as the
//!   gateway sent it, before NAT);
//! - `nginx_host`: that hop's server is on the host whose Nginx took it;
//! - `nginx_upstream`: Nginx's upstream hop has the truth's connection;
//! - `backend`: that hop's server is the replica that answered.
//! - `userland_proxy` (only when the truth has Docker's userland proxy between the
//!   gateway and Nginx): the hop below the gateway's upstream hop has the relay's
//!   own connection to Nginx; Nginx's upstream hop hangs below it.
//!
//! A path is exactly right when every link is right and it has no other HTTP hop.
//! Failed requests (no gateway in the truth) are right when the path has only its
//! first hop and no response.
//!
//! Beside the engine's figures the scorer gives two more (issue 13):
//!
//! - **`baseline`**: what plain timing alone gets from the same exchanges. Every HTTP
//!   exchange of the run (every HTTP hop of every path, the engine's links taken
//!   apart) is re-linked by [`baseline`]: an upstream exchange `U` is a candidate
//!   child of an inbound exchange `G` when `U` leaves the host where `G` arrived,
//!   from `G`'s server address, starts after `G`'s request and ends before `G`'s
//!   response, with the same method and URI (no headers); the cost is the start gap
//!   plus the end gap, and the candidates are assigned globally (Hungarian
//!   algorithm) in time chunks. The result is scored like the engine's paths.
//! - **`calibration`**: every link the engine made (an HTTP hop with a parent and a
//!   `confidence`), binned by confidence, with the share that is right. A link is
//!   right when both of its exchanges belong to the same truth request: the client's
//!   exchange by its connection and order on it, the gateway's upstream exchange by
//!   its connection (as the gateway sent it, on the gateway's host) and its ordinal
//!   on it (Nginx's `$connection_requests`), Nginx's upstream exchange by its
//!   connection on the replica's host (one request per connection).

use crate::correlate::{host_of, Hop, HopKind, PathStatus, Report, RequestPath};
use crate::time::Ts;
use pathfinding::prelude::{kuhn_munkres, Matrix};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Precision and recall of one kind of link (or of whole paths).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Score {
    /// Right ones.
    pub correct: usize,
    /// Ones flowtrace produced.
    pub produced: usize,
    /// Ones in the truth.
    pub expected: usize,
    /// correct / produced.
    pub precision: f64,
    /// correct / expected.
    pub recall: f64,
}

impl Score {
    fn finish(mut self) -> Score {
        self.precision = if self.produced == 0 {
            1.0
        } else {
            self.correct as f64 / self.produced as f64
        };
        self.recall = if self.expected == 0 {
            1.0
        } else {
            self.correct as f64 / self.expected as f64
        };
        self
    }
}

/// The score of a run.
#[derive(Clone, Debug, Serialize)]
pub struct ScoreReport {
    /// Truth requests.
    pub truth_requests: usize,
    /// Paths flowtrace produced.
    pub paths: usize,
    /// Whole paths.
    pub paths_exact: Score,
    /// Per link kind.
    pub links: BTreeMap<&'static str, Score>,
    /// The first wrong paths, with what differs.
    pub mistakes: Vec<String>,
    /// The timing-only assignment over the same exchanges, scored the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
    /// The engine's links by confidence, with the share right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// The timing-only assignment's score (module doc).
#[derive(Clone, Debug, Serialize)]
pub struct BaselineReport {
    /// Paths it produced.
    pub paths: usize,
    /// Whole paths.
    pub paths_exact: Score,
    /// Per link kind.
    pub links: BTreeMap<&'static str, Score>,
    /// HTTP exchanges it linked from.
    pub exchanges: usize,
    /// Candidate (inbound, upstream) pairs.
    pub candidate_pairs: usize,
    /// Links it made.
    pub linked: usize,
    /// Assignment problems solved (time chunks).
    pub chunks: usize,
}

/// One confidence bin.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bin {
    /// Lower bound (inclusive).
    pub from: f64,
    /// Upper bound (exclusive; the last bin includes 1).
    pub to: f64,
    /// Links in the bin.
    pub links: usize,
    /// Right ones.
    pub right: usize,
    /// right / links (null when empty).
    pub share_right: Option<f64>,
}

/// Links at or above a confidence threshold.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AtLeast {
    /// The threshold.
    pub confidence: f64,
    /// Links at or above it.
    pub links: usize,
    /// Their share of all links.
    pub share_of_links: Option<f64>,
    /// Right ones among them.
    pub right: usize,
    /// right / links.
    pub share_right: Option<f64>,
}

/// The engine's links by confidence (module doc).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Calibration {
    /// Links with a confidence.
    pub links: usize,
    /// Right ones.
    pub right: usize,
    /// Per bin.
    pub bins: Vec<Bin>,
    /// Links at confidence >= 0.9.
    pub high: AtLeast,
}

/// Bin edges of the calibration table.
pub const CONFIDENCE_BINS: [f64; 6] = [0.0, 0.5, 0.7, 0.9, 0.99, 1.0];
/// The "high confidence" threshold of the calibration table.
pub const HIGH_CONFIDENCE: f64 = 0.9;

fn share(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Bins `(confidence, right)` pairs into [`CONFIDENCE_BINS`].
pub fn calibrate(links: &[(f64, bool)]) -> Calibration {
    let mut bins: Vec<Bin> = CONFIDENCE_BINS
        .windows(2)
        .map(|w| Bin {
            from: w[0],
            to: w[1],
            links: 0,
            right: 0,
            share_right: None,
        })
        .collect();
    let last = bins.len() - 1;
    let mut high = (0, 0);
    let mut right = 0;
    for &(c, ok) in links {
        let i = bins
            .iter()
            .position(|b| c >= b.from && c < b.to)
            .unwrap_or(if c < 0.0 { 0 } else { last });
        bins[i].links += 1;
        bins[i].right += usize::from(ok);
        right += usize::from(ok);
        if c >= HIGH_CONFIDENCE {
            high.0 += 1;
            high.1 += usize::from(ok);
        }
    }
    for b in &mut bins {
        b.share_right = share(b.right, b.links);
    }
    Calibration {
        links: links.len(),
        right,
        bins,
        high: AtLeast {
            confidence: HIGH_CONFIDENCE,
            links: high.0,
            share_of_links: share(high.0, links.len()),
            right: high.1,
            share_right: share(high.1, high.0),
        },
    }
}

/// Why the truth file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("truth line {line}: {detail}")]
pub struct TruthError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

struct Truth {
    id: u64,
    client: SocketAddr,
    vip: SocketAddr,
    t_start: f64,
    gateway_host: Option<String>,
    gateway_upstream: Option<(SocketAddr, SocketAddr)>,
    /// The request's ordinal on the gateway's upstream connection (Nginx's
    /// `$connection_requests`, 1-based).
    gateway_upstream_request: Option<u64>,
    nginx_host: Option<String>,
    nginx_upstream: Option<(SocketAddr, SocketAddr)>,
    backend: Option<SocketAddr>,
    backend_host: Option<String>,
    /// Docker's userland proxy between the gateway and Nginx: its own connection to
    /// Nginx (`gateway_upstream.userland_proxy`).
    relay: Option<(SocketAddr, SocketAddr)>,
}

fn addr(v: &serde_json::Value, key: &str) -> Option<SocketAddr> {
    v.get(key)?.as_str()?.parse().ok()
}

fn conn(v: &serde_json::Value, key: &str) -> Option<(SocketAddr, SocketAddr)> {
    let c = v.get(key)?;
    Some((addr(c, "src")?, addr(c, "dst")?))
}

fn parse_truth(text: &str) -> Result<Vec<Truth>, TruthError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |detail: &str| TruthError {
            line: i + 1,
            detail: detail.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| err(&e.to_string()))?;
        let client = v.get("client").ok_or_else(|| err("no client"))?;
        out.push(Truth {
            id: v.get("id").and_then(|x| x.as_u64()).unwrap_or(i as u64),
            client: addr(client, "src").ok_or_else(|| err("no client.src"))?,
            vip: addr(client, "dst").ok_or_else(|| err("no client.dst"))?,
            t_start: v.get("t_start").and_then(|x| x.as_f64()).unwrap_or(0.0),
            gateway_host: v
                .pointer("/gateway/server")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
            gateway_upstream: conn(&v, "gateway_upstream"),
            nginx_host: v
                .pointer("/nginx/server")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
            nginx_upstream: conn(&v, "nginx_upstream"),
            relay: v
                .pointer("/gateway_upstream/userland_proxy")
                .and_then(|c| Some((addr(c, "src")?, addr(c, "dst")?))),
            gateway_upstream_request: v
                .pointer("/nginx/connection_requests")
                .and_then(|x| x.as_u64()),
            backend_host: v
                .pointer("/python/server")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
            backend: v
                .pointer("/python/addr")
                .and_then(|x| x.as_str())
                .and_then(|s| s.parse().ok()),
        });
    }
    Ok(out)
}

const LINKS: [&str; 5] = [
    "gateway_host",
    "gateway_upstream",
    "nginx_host",
    "nginx_upstream",
    "backend",
];

/// Scores `report` against the truth in `truth_jsonl`, with the timing-only
/// baseline over the same exchanges and the engine's confidence calibration.
pub fn score(report: &Report, truth_jsonl: &str) -> Result<ScoreReport, TruthError> {
    let truth = parse_truth(truth_jsonl)?;
    let mut out = score_paths(&report.paths, &truth);
    let b = baseline(&report.paths);
    let bs = score_paths(&b.paths, &truth);
    out.baseline = Some(BaselineReport {
        paths: bs.paths,
        paths_exact: bs.paths_exact,
        links: bs.links,
        exchanges: b.exchanges,
        candidate_pairs: b.candidate_pairs,
        linked: b.linked,
        chunks: b.chunks,
    });
    out.calibration = Some(calibrate(&judged_links(&report.paths, &truth)));
    Ok(out)
}

/// Which truth request an exchange is, by the identities the truth gives (module
/// doc).
struct Identities {
    client: HashMap<(SocketAddr, SocketAddr, usize), u64>,
    gateway: HashMap<(String, SocketAddr, SocketAddr, u64), u64>,
    /// The userland proxy's connection to Nginx, like the gateway's.
    relay: HashMap<(String, SocketAddr, SocketAddr, u64), u64>,
    /// With its ordinal among the connections of the same addresses (a port reused
    /// during the run), by time.
    backend: HashMap<(String, SocketAddr, SocketAddr, usize), u64>,
}

impl Identities {
    fn new(truth: &[Truth]) -> Identities {
        let mut by_client: BTreeMap<(SocketAddr, SocketAddr), Vec<&Truth>> = BTreeMap::new();
        for t in truth {
            by_client.entry((t.client, t.vip)).or_default().push(t);
        }
        let mut client = HashMap::new();
        for ((c, s), mut ts) in by_client {
            ts.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
            for (i, t) in ts.iter().enumerate() {
                client.insert((c, s, i), t.id);
            }
        }
        let mut gateway = HashMap::new();
        let mut relay = HashMap::new();
        let mut backend = HashMap::new();
        let mut by_time: Vec<&Truth> = truth.iter().collect();
        by_time.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
        let mut uses: HashMap<(String, SocketAddr, SocketAddr), usize> = HashMap::new();
        for t in by_time {
            if let (Some(h), Some((c, s)), Some(n)) = (
                &t.gateway_host,
                t.gateway_upstream,
                t.gateway_upstream_request,
            ) {
                gateway.insert((h.clone(), c, s, n), t.id);
                if let Some((rc, rs)) = t.relay {
                    relay.insert((h.clone(), rc, rs, n), t.id);
                }
            }
            if let (Some(h), Some((c, s))) = (&t.backend_host, t.nginx_upstream) {
                let n = uses.entry((h.clone(), c, s)).or_default();
                backend.insert((h.clone(), c, s, *n), t.id);
                *n += 1;
            }
        }
        Identities {
            client,
            gateway,
            relay,
            backend,
        }
    }

    /// The truth request of `hop`, whose ordinal on its connection (at the capture
    /// nearest its client) is `ordinal` (0-based).
    fn of(&self, hop: &Hop, ordinal: usize) -> Option<u64> {
        let (c, s) = (hop.client?, hop.server?);
        if let Some(id) = self.client.get(&(c, s, ordinal)) {
            return Some(*id);
        }
        let near = hop.capture.as_ref().map(|r| host_of(&r.file))?;
        // Any view on the host nearest the client: the truth names the connection as
        // the gateway sent it, and that view may be missing from the capture.
        let views = std::iter::once((c, s)).chain(hop.seen_at.iter().map(|v| (v.client, v.server)));
        for (vc, vs) in views {
            let key = (near.clone(), vc, vs, ordinal as u64 + 1);
            if let Some(id) = self.gateway.get(&key).or_else(|| self.relay.get(&key)) {
                return Some(*id);
            }
        }
        self.backend
            .get(&(hop.host.clone()?, c, s, ordinal))
            .copied()
    }
}

/// Every HTTP hop's ordinal on its connection (0-based, by request time, at the
/// capture nearest its client), keyed by (path index, hop id). A connection is its
/// client address at that capture and its server address as last seen (after any
/// DNAT): the server as first seen differs between an exchange seen before a DNAT
/// and one whose earlier view was lost (first seen after it), and counting those
/// apart would shift every later request's ordinal.
fn ordinals(paths: &[RequestPath]) -> HashMap<(usize, usize), usize> {
    type Conn = (String, SocketAddr, SocketAddr);
    let mut conns: HashMap<Conn, Vec<(Ts, usize, usize)>> = HashMap::new();
    for (pi, p) in paths.iter().enumerate() {
        for h in p.hops.iter().filter(|h| h.kind == HopKind::Http) {
            if let (Some(c), Some(s)) = (h.client, h.server) {
                let near = h
                    .capture
                    .as_ref()
                    .map(|r| r.file.clone())
                    .unwrap_or_default();
                let t = h
                    .seen_at
                    .first()
                    .map(|x| x.request_ts)
                    .or(h.request_ts)
                    .unwrap_or(Ts(0));
                let last = h.seen_at.last().map_or(s, |v| v.server);
                conns
                    .entry((near, c, last))
                    .or_default()
                    .push((t, pi, h.id));
            }
        }
    }
    let mut out = HashMap::new();
    for (_, mut list) in conns {
        list.sort();
        for (i, (_, pi, id)) in list.into_iter().enumerate() {
            out.insert((pi, id), i);
        }
    }
    out
}

/// The HTTP hop above `hop` in `p` (through any NAT hops).
fn http_parent<'a>(p: &'a RequestPath, hop: &Hop) -> Option<&'a Hop> {
    let mut at = hop.parent?;
    loop {
        let h = p.hops.iter().find(|h| h.id == at)?;
        if h.kind == HopKind::Http {
            return Some(h);
        }
        at = h.parent?;
    }
}

/// Every engine link with a confidence, and whether both its ends are one request.
fn judged_links(paths: &[RequestPath], truth: &[Truth]) -> Vec<(f64, bool)> {
    let ids = Identities::new(truth);
    let ord = ordinals(paths);
    let who = |pi: usize, h: &Hop| ids.of(h, *ord.get(&(pi, h.id))?);
    let mut out = Vec::new();
    for (pi, p) in paths.iter().enumerate() {
        for h in p.hops.iter().filter(|h| h.kind == HopKind::Http) {
            let (Some(c), Some(parent)) = (h.confidence, http_parent(p, h)) else {
                continue;
            };
            let right = match (who(pi, parent), who(pi, h)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            };
            out.push((c, right));
        }
    }
    out
}

/// The timing-only assignment's paths and counts.
pub struct Baseline {
    /// Paths: every exchange no other exchange took as its child is a root.
    pub paths: Vec<RequestPath>,
    /// HTTP exchanges linked from.
    pub exchanges: usize,
    /// Candidate pairs.
    pub candidate_pairs: usize,
    /// Links made.
    pub linked: usize,
    /// Assignment problems solved.
    pub chunks: usize,
}

/// Inbound exchanges per assignment problem: the Hungarian algorithm is cubic, so
/// the run is cut into chunks of this many inbound exchanges (in time order), each
/// taking from the upstream exchanges the earlier chunks left.
pub const BASELINE_CHUNK: usize = 256;
/// Clock jitter allowed when nesting an upstream exchange in an inbound one.
pub const BASELINE_TOLERANCE_NS: i64 = 100_000;

/// One exchange as the baseline sees it.
struct Ex {
    hop: Hop,
    /// Host where its server side was captured (where an inbound exchange arrived).
    host: Option<String>,
    /// Host of the capture nearest its client (where an upstream exchange left).
    near: Option<String>,
    /// Its client as first seen, its server as last seen.
    client: Option<SocketAddr>,
    server_last: Option<SocketAddr>,
    start_near: Ts,
    start: Ts,
    end: Ts,
}

/// Cost of `u` as the upstream exchange of `g` (microseconds of start gap plus end
/// gap), or `None` when `u` cannot be `g`'s child.
fn pair_cost(g: &Ex, u: &Ex) -> Option<i64> {
    if g.host.is_none() || g.host != u.near {
        return None;
    }
    if g.server_last.map(|a| a.ip()) != u.client.map(|a| a.ip()) {
        return None;
    }
    if g.hop.method != u.hop.method || g.hop.uri != u.hop.uri {
        return None;
    }
    let start_gap = u.start_near.0 - g.start.0;
    let end_gap = g.end.0 - u.end.0;
    if start_gap < -BASELINE_TOLERANCE_NS || end_gap < -BASELINE_TOLERANCE_NS {
        return None;
    }
    Some((start_gap.max(0) + end_gap.max(0)) / 1_000)
}

/// Links every HTTP exchange of `paths` again by timing alone (module doc).
pub fn baseline(paths: &[RequestPath]) -> Baseline {
    let mut ex: Vec<Ex> = Vec::new();
    for p in paths {
        for h in p.hops.iter().filter(|h| h.kind == HopKind::Http) {
            let (Some(start), Some(end)) = (h.request_ts, h.response_ts) else {
                // no response: it can be neither a parent nor a child by timing
                ex.push(Ex {
                    hop: h.clone(),
                    host: None,
                    near: None,
                    client: None,
                    server_last: None,
                    start_near: Ts(i64::MAX),
                    start: Ts(i64::MAX),
                    end: Ts(i64::MIN),
                });
                continue;
            };
            ex.push(Ex {
                hop: h.clone(),
                host: h.host.clone(),
                near: h.capture.as_ref().map(|r| host_of(&r.file)),
                client: h.seen_at.first().map(|s| s.client).or(h.client),
                server_last: h.seen_at.last().map(|s| s.server).or(h.server),
                start_near: h.seen_at.first().map(|s| s.request_ts).unwrap_or(start),
                start,
                end,
            });
        }
    }
    // candidates of each inbound exchange
    let mut order: Vec<usize> = (0..ex.len()).collect();
    order.sort_by_key(|&i| (ex[i].start_near, i));
    let mut cands: Vec<Vec<(usize, i64)>> = vec![Vec::new(); ex.len()];
    let mut candidate_pairs = 0;
    for (gi, g) in ex.iter().enumerate() {
        if g.host.is_none() {
            continue;
        }
        // upstream exchanges start after g: scan those by start time
        let from =
            order.partition_point(|&i| ex[i].start_near.0 < g.start.0 - BASELINE_TOLERANCE_NS);
        for &ui in &order[from..] {
            let u = &ex[ui];
            if u.start_near.0 > g.end.0 + BASELINE_TOLERANCE_NS {
                break;
            }
            if ui == gi {
                continue;
            }
            if let Some(c) = pair_cost(g, u) {
                cands[gi].push((ui, c));
            }
        }
        candidate_pairs += cands[gi].len();
    }
    // assignment, chunk by chunk of inbound exchanges in time order
    let parents: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| !cands[i].is_empty())
        .collect();
    let mut parent_of: Vec<Option<usize>> = vec![None; ex.len()];
    let mut taken = vec![false; ex.len()];
    let mut chunks = 0;
    for chunk in parents.chunks(BASELINE_CHUNK) {
        let pairs: Vec<(usize, usize, i64)> = chunk
            .iter()
            .enumerate()
            .flat_map(|(r, &g)| {
                cands[g]
                    .iter()
                    .filter(|(u, _)| !taken[*u])
                    .map(move |&(u, c)| (r, u, c))
            })
            .collect();
        for (r, u) in assign(chunk.len(), &pairs) {
            parent_of[u] = Some(chunk[r]);
            taken[u] = true;
        }
        chunks += 1;
    }
    let linked = parent_of.iter().filter(|p| p.is_some()).count();
    // paths: each root with its descendants
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); ex.len()];
    for (u, p) in parent_of.iter().enumerate() {
        if let Some(g) = p {
            children[*g].push(u);
        }
    }
    let mut out = Vec::new();
    for root in order.iter().copied().filter(|&i| parent_of[i].is_none()) {
        let mut hops: Vec<Hop> = Vec::new();
        let mut todo = vec![(root, None)];
        while let Some((i, parent)) = todo.pop() {
            let mut h = ex[i].hop.clone();
            h.id = hops.len();
            h.parent = parent;
            h.confidence = None;
            h.evidence.clear();
            for &c in &children[i] {
                todo.push((c, Some(h.id)));
            }
            hops.push(h);
        }
        let r = &ex[root];
        let start = r
            .hop
            .seen_at
            .first()
            .map(|s| s.request_ts)
            .or(r.hop.request_ts);
        out.push(RequestPath {
            schema_version: crate::correlate::PATH_SCHEMA_VERSION,
            id: out.len(),
            status: PathStatus::Partial,
            start_ts: start.unwrap_or(Ts(0)),
            end_ts: r.hop.response_ts.unwrap_or(Ts(0)),
            vip: None,
            hops,
            root_transaction: 0,
            segments: Vec::new(),
        });
    }
    Baseline {
        paths: out,
        exchanges: ex.len(),
        candidate_pairs,
        linked,
        chunks,
    }
}

/// Minimum-cost assignment of `rows` rows to columns over the allowed `(row,
/// column, cost)` pairs (Hungarian algorithm); a row may stay unassigned (at a cost
/// above any allowed pair). Returns the (row, column) pairs assigned. Rows that
/// share no column are independent problems: each connected group is solved on its
/// own (the same result, and the cubic cost stays small).
pub fn assign(rows: usize, pairs: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
    // union-find over rows, joined through the columns they share
    let mut up: Vec<usize> = (0..rows).collect();
    fn root(up: &mut [usize], mut i: usize) -> usize {
        while up[i] != i {
            up[i] = up[up[i]];
            i = up[i];
        }
        i
    }
    let mut first_row: HashMap<usize, usize> = HashMap::new();
    for &(r, c, _) in pairs {
        let other = *first_row.entry(c).or_insert(r);
        let (a, b) = (root(&mut up, r), root(&mut up, other));
        up[a] = b;
    }
    let mut groups: BTreeMap<usize, Vec<(usize, usize, i64)>> = BTreeMap::new();
    for &(r, c, cost) in pairs {
        let g = root(&mut up, r);
        groups.entry(g).or_default().push((r, c, cost));
    }
    let mut out = Vec::new();
    for group in groups.values() {
        let mut rs: Vec<usize> = group.iter().map(|p| p.0).collect();
        rs.sort_unstable();
        rs.dedup();
        let local: Vec<(usize, usize, i64)> = group
            .iter()
            .map(|&(r, c, cost)| (rs.binary_search(&r).expect("collected above"), c, cost))
            .collect();
        out.extend(
            assign_one(rs.len(), &local)
                .into_iter()
                .map(|(r, c)| (rs[r], c)),
        );
    }
    out.sort_unstable();
    out
}

/// [`assign`] for one connected group.
fn assign_one(rows: usize, pairs: &[(usize, usize, i64)]) -> Vec<(usize, usize)> {
    if rows == 0 || pairs.is_empty() {
        return Vec::new();
    }
    let mut cols: Vec<usize> = pairs.iter().map(|p| p.1).collect();
    cols.sort_unstable();
    cols.dedup();
    let max = pairs.iter().map(|p| p.2).max().unwrap_or(0).max(0);
    // weights to maximise: allowed pairs -cost; one "unassigned" column per row,
    // worse than any allowed pair; forbidden pairs worse still
    let unassigned = -(max + 1) * 2 - 1;
    let forbidden = unassigned * (rows as i64 + 1) * 2;
    let n = cols.len() + rows;
    let mut w = Matrix::new(rows, n, forbidden);
    for r in 0..rows {
        w[(r, cols.len() + r)] = unassigned;
    }
    for &(r, c, cost) in pairs {
        let j = cols.binary_search(&c).expect("collected above");
        w[(r, j)] = -cost.max(0);
    }
    let (_, to) = kuhn_munkres(&w);
    to.into_iter()
        .enumerate()
        .filter(|&(r, j)| j < cols.len() && w[(r, j)] > unassigned)
        .map(|(r, j)| (r, cols[j]))
        .collect()
}

/// Counts the links flowtrace produced, over all paths, by kind.
fn count_produced(paths: &[RequestPath], links: &mut BTreeMap<&'static str, Score>) {
    for p in paths {
        let root = &p.hops[0];
        if root.role.is_some() && p.hops.len() > 1 {
            links.get_mut("gateway_host").expect("known").produced += 1;
        }
        for g in p.http_children(0) {
            links.get_mut("gateway_upstream").expect("known").produced += 1;
            links.get_mut("nginx_host").expect("known").produced += 1;
            for n in p.http_children(g.id) {
                // a hop between the gateway's and Nginx's upstream: a userland proxy
                let below = p.http_children(n.id);
                if !below.is_empty() {
                    links.entry("userland_proxy").or_default().produced += 1;
                }
                for _ in 0..below.len().max(1) {
                    links.get_mut("nginx_upstream").expect("known").produced += 1;
                    links.get_mut("backend").expect("known").produced += 1;
                }
            }
        }
    }
}

/// Checks path `p` against truth `t`, counting its right links into `links`; what is
/// wrong about it (empty when it is exact).
fn check_path(
    t: &Truth,
    p: &RequestPath,
    links: &mut BTreeMap<&'static str, Score>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let root = &p.hops[0];
    let http_hops = p.hops.iter().filter(|h| h.kind == HopKind::Http).count();
    let gw = p.http_children(0);
    let gw = (gw.len() == 1).then(|| gw[0]);
    let only_child = |h: &Hop| {
        let c = p.http_children(h.id);
        (c.len() == 1).then(|| c[0])
    };
    // with a userland proxy, Nginx's upstream hangs below the relay's hop
    let relay = gw.filter(|_| t.relay.is_some()).and_then(only_child);
    let ng = if t.relay.is_some() {
        relay.and_then(only_child)
    } else {
        gw.and_then(only_child)
    };
    let mut check = |name: &'static str, ok: bool, expected: bool, what: String| {
        if ok {
            links.entry(name).or_default().correct += 1;
        } else if expected {
            wrong.push(what);
        }
    };
    if let Some(h) = &t.gateway_host {
        check(
            "gateway_host",
            root.host.as_deref() == Some(h.as_str()) && gw.is_some(),
            true,
            format!("gateway on {:?}, truth {h}", root.host),
        );
    }
    if let Some((src, dst)) = t.gateway_upstream {
        let ok = gw.is_some_and(|g| {
            g.client == Some(src)
                && g.server == Some(dst)
                && (t.gateway_host.is_none()
                    || g.capture.as_ref().map(|r| host_of(&r.file)) == t.gateway_host)
        });
        check(
            "gateway_upstream",
            ok,
            true,
            format!(
                "gateway upstream {:?}, truth {src} -> {dst}",
                gw.map(|g| (g.client, g.server))
            ),
        );
    }
    if let Some(h) = &t.nginx_host {
        let ok = gw.is_some_and(|g| g.host.as_deref() == Some(h.as_str()));
        check(
            "nginx_host",
            ok,
            true,
            format!("nginx on {:?}, truth {h}", gw.and_then(|g| g.host.clone())),
        );
    }
    if let Some((src, dst)) = t.relay {
        let ok = relay.is_some_and(|r| r.client == Some(src) && r.server == Some(dst));
        check(
            "userland_proxy",
            ok,
            true,
            format!(
                "userland proxy {:?}, truth {src} -> {dst}",
                relay.map(|r| (r.client, r.server))
            ),
        );
    }
    if let Some((src, dst)) = t.nginx_upstream {
        // the replica's host too: with the same container subnets on every
        // host, the addresses alone do not name the connection
        let ok = ng.is_some_and(|n| {
            n.client == Some(src)
                && n.server == Some(dst)
                && (t.backend_host.is_none() || n.host == t.backend_host)
        });
        check(
            "nginx_upstream",
            ok,
            true,
            format!(
                "nginx upstream {:?}, truth {src} -> {dst}",
                ng.map(|n| (n.client, n.server))
            ),
        );
    }
    if let Some(b) = t.backend {
        let ok = ng.is_some_and(|n| {
            n.seen_at.last().map(|s| s.server) == Some(b)
                && (t.backend_host.is_none() || n.host == t.backend_host)
        });
        check(
            "backend",
            ok,
            true,
            format!(
                "backend {:?}, truth {b}",
                ng.and_then(|n| n.seen_at.last().map(|s| s.server))
            ),
        );
    }
    let failed_truth = t.gateway_host.is_none();
    let shape_ok = if failed_truth {
        http_hops == 1 && root.status.is_none()
    } else {
        http_hops == 3 + usize::from(t.relay.is_some())
    };
    if !shape_ok {
        wrong.push(format!("{http_hops} HTTP hops"));
    }
    wrong
}

/// Scores `paths` against `truth` (the engine's or the baseline's).
fn score_paths(paths: &[RequestPath], truth: &[Truth]) -> ScoreReport {
    // Paths by the client's connection, in time order.
    let mut by_client: BTreeMap<(SocketAddr, SocketAddr), Vec<&RequestPath>> = BTreeMap::new();
    for p in paths {
        if let Some(root) = p.hops.first() {
            if let (Some(c), Some(s)) = (root.client, root.server) {
                by_client.entry((c, s)).or_default().push(p);
            }
        }
    }
    // Paths are emitted as they become final, not in the order they started.
    for list in by_client.values_mut() {
        list.sort_by_key(|p| (p.start_ts, p.id));
    }
    let mut truth_by_client: BTreeMap<(SocketAddr, SocketAddr), Vec<&Truth>> = BTreeMap::new();
    for t in truth {
        truth_by_client
            .entry((t.client, t.vip))
            .or_default()
            .push(t);
    }
    let mut links: BTreeMap<&'static str, Score> =
        LINKS.iter().map(|l| (*l, Score::default())).collect();
    if truth.iter().any(|t| t.relay.is_some()) {
        links.insert("userland_proxy", Score::default());
    }
    let mut exact = Score {
        produced: paths.len(),
        expected: truth.len(),
        ..Score::default()
    };
    count_produced(paths, &mut links);
    let mut mistakes = Vec::new();
    for (key, mut ts) in truth_by_client {
        ts.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
        let paths = by_client.get(&key).cloned().unwrap_or_default();
        for (i, t) in ts.iter().enumerate() {
            for (name, present) in [
                ("gateway_host", t.gateway_host.is_some()),
                ("gateway_upstream", t.gateway_upstream.is_some()),
                ("nginx_host", t.nginx_host.is_some()),
                ("nginx_upstream", t.nginx_upstream.is_some()),
                ("backend", t.backend.is_some()),
                ("userland_proxy", t.relay.is_some()),
            ] {
                if present {
                    links.entry(name).or_default().expected += 1;
                }
            }
            let Some(p) = paths.get(i) else {
                if mistakes.len() < 20 {
                    mistakes.push(format!("truth {}: no path for client {}", t.id, t.client));
                }
                continue;
            };
            let wrong = check_path(t, p, &mut links);
            if wrong.is_empty() {
                exact.correct += 1;
            } else if mistakes.len() < 20 {
                mistakes.push(format!(
                    "truth {} (path {}): {}",
                    t.id,
                    p.id,
                    wrong.join("; ")
                ));
            }
        }
    }
    ScoreReport {
        truth_requests: truth.len(),
        paths: paths.len(),
        paths_exact: exact.finish(),
        links: links.into_iter().map(|(k, v)| (k, v.finish())).collect(),
        mistakes,
        baseline: None,
        calibration: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{CaptureRef, Seen};

    #[test]
    fn assignment_is_global_not_greedy() {
        // row 0 prefers column 10, but row 1 can only take 10: the optimum gives
        // row 0 column 11
        let got = assign(2, &[(0, 10, 1), (0, 11, 2), (1, 10, 1)]);
        assert_eq!(got, vec![(0, 11), (1, 10)]);
    }

    #[test]
    fn assignment_leaves_a_row_without_a_free_column_unassigned() {
        let got = assign(3, &[(0, 7, 5), (1, 7, 3)]);
        assert_eq!(got, vec![(1, 7)]);
        assert!(assign(2, &[]).is_empty());
    }

    #[test]
    fn assignment_solves_independent_groups_alike() {
        // two groups sharing no column: the same answer as each alone
        let pairs = [
            (0, 1, 4),
            (0, 2, 1),
            (1, 2, 1),
            (2, 5, 9),
            (3, 5, 2),
            (3, 6, 3),
        ];
        assert_eq!(assign(4, &pairs), vec![(0, 1), (1, 2), (2, 5), (3, 6)]);
    }

    #[test]
    fn calibration_bins_by_confidence() {
        let links = [
            (0.2, true),
            (0.49, false),
            (0.5, true),
            (0.7, true),
            (0.9, false),
            (0.98, true),
            (0.99, true),
            (1.0, true),
        ];
        let c = calibrate(&links);
        assert_eq!(c.links, 8);
        assert_eq!(c.right, 6);
        let counts: Vec<(usize, usize)> = c.bins.iter().map(|b| (b.links, b.right)).collect();
        assert_eq!(counts, vec![(2, 1), (1, 1), (1, 1), (2, 1), (2, 2)]);
        assert_eq!(c.bins[0].share_right, Some(0.5));
        assert_eq!(c.high.links, 4);
        assert_eq!(c.high.right, 3);
        assert_eq!(c.high.share_of_links, Some(0.5));
        assert_eq!(c.high.share_right, Some(0.75));
        let empty = calibrate(&[]);
        assert!(empty.bins.iter().all(|b| b.share_right.is_none()));
        assert_eq!(empty.high.share_of_links, None);
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// An HTTP exchange as one hop of its own path: seen on `file` (host
    /// `near`), answered on `host`, between `t0` and `t1` milliseconds.
    fn exchange(
        id: usize,
        near: &str,
        host: &str,
        c: &str,
        s: &str,
        t0: i64,
        t1: i64,
    ) -> RequestPath {
        let mut h = Hop::new(0, None, HopKind::Http);
        h.client = Some(sa(c));
        h.server = Some(sa(s));
        h.capture = Some(CaptureRef {
            file: format!("{near}.pcap"),
            interface: "eth0".into(),
        });
        h.host = Some(host.into());
        h.method = Some("GET".into());
        h.uri = Some("/".into());
        h.request_ts = Some(Ts(t0 * 1_000_000));
        h.response_ts = Some(Ts(t1 * 1_000_000));
        h.status = Some(200);
        h.seen_at = vec![Seen {
            capture: h.capture.clone().unwrap(),
            client: sa(c),
            server: sa(s),
            request_ts: Ts(t0 * 1_000_000),
        }];
        RequestPath {
            schema_version: crate::correlate::PATH_SCHEMA_VERSION,
            id,
            status: PathStatus::Partial,
            start_ts: Ts(t0 * 1_000_000),
            end_ts: Ts(t1 * 1_000_000),
            vip: None,
            hops: vec![h],
            root_transaction: 0,
            segments: Vec::new(),
        }
    }

    #[test]
    fn baseline_links_by_timing_on_the_proxys_host() {
        // two client requests to a proxy on A (10.0.0.2:80); two upstream exchanges
        // from 10.0.0.2 on A; one more from the same address on B (another host:
        // never a candidate). Nearest in time: U1 in G1, U2 in G2.
        let paths = vec![
            exchange(0, "client", "A", "10.9.0.1:1000", "10.0.0.2:80", 0, 100),
            exchange(1, "client", "A", "10.9.0.1:1001", "10.0.0.2:80", 5, 60),
            exchange(2, "A", "A", "10.0.0.2:4000", "10.0.1.3:8888", 10, 50),
            exchange(3, "A", "A", "10.0.0.2:4001", "10.0.1.4:8888", 2, 95),
            exchange(4, "B", "B", "10.0.0.2:4002", "10.0.1.3:8888", 6, 55),
        ];
        let b = baseline(&paths);
        assert_eq!(b.exchanges, 5);
        assert_eq!(b.linked, 2);
        // G1 [0,100] takes U2 [2,95] (cost 2+5); G2 [5,60] takes U1 [10,50]
        let child = |root_port: u16| {
            let p = b
                .paths
                .iter()
                .find(|p| p.hops[0].client.map(|c| c.port()) == Some(root_port))
                .unwrap();
            assert_eq!(p.hops.len(), 2, "{:?}", p.hops);
            assert_eq!(p.hops[1].parent, Some(0));
            p.hops[1].client.unwrap().port()
        };
        assert_eq!(child(1000), 4001);
        assert_eq!(child(1001), 4000);
        // B's exchange stays a path of its own
        assert_eq!(b.paths.len(), 3);
    }

    /// A request whose view before the DNAT was lost (first seen after it) is still
    /// the first on its connection: ordinals count by the server as last seen, so the
    /// requests after it keep theirs.
    #[test]
    fn ordinals_survive_a_view_lost_before_the_dnat() {
        let mut lost = exchange(0, "A", "A", "10.0.0.2:4000", "10.0.1.2:80", 0, 5);
        let mut kept = exchange(1, "A", "A", "10.0.0.2:4000", "10.0.0.17:80", 10, 15);
        // The kept one was seen before (10.0.0.17:80) and after (10.0.1.2:80) the DNAT.
        let capture = kept.hops[0].capture.clone().unwrap();
        kept.hops[0].seen_at.push(Seen {
            capture,
            client: sa("10.0.0.2:4000"),
            server: sa("10.0.1.2:80"),
            request_ts: Ts(10_000_000),
        });
        lost.hops[0].seen_at[0].server = sa("10.0.1.2:80");
        let ord = ordinals(&[lost, kept]);
        assert_eq!(ord[&(0, 0)], 0);
        assert_eq!(ord[&(1, 0)], 1);
    }
}
