//! The batch correlation engine (the first one): holds every transaction of the run,
//! then correlates them at once. Kept while the streaming engine ([`super::engine`])
//! is compared with it on the shipped captures; see `tests/correlate.rs`.

use super::assign;
use super::names;
use super::report::*;

use crate::capture::Warning;
use crate::http::HttpTransaction;
use crate::links::HostLinks;
use crate::pipeline::{GratuitousArp, Vantage, VrrpRun};
use crate::time::Ts;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// What correlation reads.
pub struct Input<'a> {
    /// Every transaction of the run.
    pub transactions: &'a [HttpTransaction],
    /// Capture points.
    pub vantages: &'a [Vantage],
    /// Capture files, in input order.
    pub files: &'a [String],
    /// Links sidecar per file.
    pub links: &'a [Option<HostLinks>],
    /// VRRP advert runs.
    pub vrrp: &'a [VrrpRun],
    /// Gratuitous ARPs.
    pub garp: &'a [GratuitousArp],
    /// Offsets given by the user (seconds to subtract), per file.
    pub offset_overrides: &'a [Option<f64>],
    /// The topology file, if given: names and roles that override inference.
    pub names: Option<&'a names::Names>,
}

impl Input<'_> {
    /// The host name of capture file `file` (the topology file's, or the file's name
    /// without extensions).
    pub fn host(&self, file: usize) -> String {
        let stem = host_of(&self.files[file]);
        match self.names {
            Some(n) => n.host(&stem),
            None => stem,
        }
    }
}

/// One view of an exchange, internal.
#[derive(Clone, Copy)]
struct View {
    tx: usize,
    file: usize,
    vantage: usize,
    client: SocketAddr,
    server: SocketAddr,
    req: Ts,
    req_end: Ts,
    resp: Option<Ts>,
    resp_end: Option<Ts>,
    /// When the exchange's sender started it: the SYN for the first request of a
    /// connection (a proxy connects as soon as it has read the inbound request), the
    /// first request byte otherwise.
    start: Ts,
    /// TTL of the client's packets here: routers lower it, so it orders views across
    /// captures whatever the clocks say.
    ttl: u8,
}

/// An exchange: one request/response on one connection, seen at one or more points.
struct Exchange {
    views: Vec<View>,
    parent: Option<(usize, f64, Vec<String>)>,
    children: Vec<usize>,
}

impl Exchange {
    fn new(view: View) -> Exchange {
        Exchange {
            views: vec![view],
            parent: None,
            children: Vec::new(),
        }
    }
    fn first(&self) -> &View {
        &self.views[0]
    }
    fn last(&self) -> &View {
        self.views.last().expect("an exchange has a view")
    }
}

/// Host name of a capture file: its name without directories and capture extensions.
pub fn host_of(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let mut stem = name;
    for suffix in [".gz", ".pcapng", ".pcap", ".cap"] {
        stem = stem.strip_suffix(suffix).unwrap_or(stem);
    }
    stem.to_string()
}

fn ms(ns: i64) -> f64 {
    (ns as f64 / 1e3).round() / 1e3
}

/// Builds the report.
pub fn correlate(input: &Input<'_>) -> Report {
    // Exchanges: views grouped by where the request's first byte sat on the wire
    // (its sequence number and the acknowledgement number it carried, which NAT
    // leaves alone), so a request is found at every capture point, also on a
    // connection picked up mid-stream (after a VIP move), and on a bridge device that
    // shows the request after DNAT but the response before it. A view that
    // saw a retransmission (same sequence number, newer acknowledgement) joins by the
    // sequence number when that is unambiguous within a second.
    let mut by_pos: FxHashMap<(u32, u32), usize> = FxHashMap::default();
    let mut by_seq: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    let mut by_conn: FxHashMap<(u32, u32, u32), usize> = FxHashMap::default();
    let mut exchanges: Vec<Exchange> = Vec::new();
    for (i, t) in input.transactions.iter().enumerate() {
        let Some(req) = &t.request else { continue };
        let v = &input.vantages[t.vantage as usize];
        let view = View {
            tx: i,
            file: v.file_index,
            vantage: t.vantage as usize,
            client: t.client,
            server: t.server,
            req: req.first_ts,
            req_end: req.last_ts,
            resp: t.response.as_ref().map(|r| r.first_ts),
            resp_end: t.response.as_ref().map(|r| r.last_ts),
            start: start_of(t, req.first_ts),
            ttl: t.conn_ttl[0].unwrap_or(0),
        };
        let found = match req.wire_pos {
            Some(pos) => by_pos.get(&(pos.seq, pos.ack)).copied().or_else(|| {
                let same_seq: Vec<usize> = by_seq
                    .get(&pos.seq)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&e| (exchanges[e].first().req.0 - view.req.0).abs() < 1_000_000_000)
                    .collect();
                (same_seq.len() == 1).then(|| same_seq[0])
            }),
            None => match t.conn_seq {
                [Some(c), Some(s)] => by_conn.get(&(c, s, t.index_in_conn)).copied(),
                _ => None,
            },
        };
        let e = match found {
            Some(e) => {
                exchanges[e].views.push(view);
                e
            }
            None => {
                exchanges.push(Exchange::new(view));
                exchanges.len() - 1
            }
        };
        if let Some(pos) = req.wire_pos {
            by_pos.entry((pos.seq, pos.ack)).or_insert(e);
            let list = by_seq.entry(pos.seq).or_default();
            if !list.contains(&e) {
                list.push(e);
            }
        }
        if let [Some(c), Some(s)] = t.conn_seq {
            by_conn.entry((c, s, t.index_in_conn)).or_insert(e);
        }
    }

    // Which capture's host owns which address (links sidecars).
    let owned: std::collections::HashSet<(usize, IpAddr)> = input
        .links
        .iter()
        .enumerate()
        .filter_map(|(f, l)| Some((f, l.as_ref()?)))
        .flat_map(|(f, l)| {
            l.links
                .iter()
                .flat_map(move |link| link.addresses.iter().map(move |a| (f, *a)))
        })
        .collect();
    let owns = |file: usize, ip: IpAddr| owned.contains(&(file, ip));
    let offsets = estimate_offsets(input, &exchanges);
    let shift: Vec<i64> = offsets
        .iter()
        .map(|o| (o.offset_s * 1e9).round() as i64)
        .collect();
    for e in &mut exchanges {
        for v in &mut e.views {
            let d = shift.get(v.file).copied().unwrap_or(0);
            v.req = Ts(v.req.0 - d);
            v.req_end = Ts(v.req_end.0 - d);
            v.resp = v.resp.map(|t| Ts(t.0 - d));
            v.resp_end = v.resp_end.map(|t| Ts(t.0 - d));
            v.start = Ts(v.start.0 - d);
        }
        order_views(&mut e.views, &owns);
    }

    link_proxies(input, &mut exchanges);

    let timeline = vip_timeline(input);
    let mut anomalies = Vec::new();
    let mut paths = Vec::new();
    let mut roots: Vec<usize> = (0..exchanges.len())
        .filter(|&e| exchanges[e].parent.is_none())
        .collect();
    roots.sort_by_key(|&e| (exchanges[e].first().req, e));
    for root in roots {
        let path = build_path(
            input,
            &exchanges,
            root,
            paths.len(),
            &timeline,
            &mut anomalies,
        );
        paths.push(path);
    }
    let failovers = failovers(input, &timeline, &paths);
    let address_book = address_book(input, &paths);
    let summary = summarize(&paths);
    Report {
        paths,
        vip_timeline: timeline,
        failovers,
        clock_offsets: offsets,
        clock_offset_changes: Vec::new(),
        address_book,
        anomalies,
        summary,
    }
}

/// Orders an exchange's views nearest the client first. The TTL decides first (a
/// router between two captures lowered it, whatever the clocks say); a view taken on
/// the host that owns the client's address (by the links sidecars) starts the chain.
/// Among views with the same TTL the chain continues with a view showing the same
/// addresses as the last one, else one in the capture the chain last came through,
/// else the earliest: between captures of the same TTL, clock estimates are only good
/// to some microseconds, about the time a packet takes between two hosts, so time
/// alone would misplace a NAT.
fn order_views(views: &mut Vec<View>, owns: &impl Fn(usize, IpAddr) -> bool) {
    views.sort_by_key(|v| {
        (
            std::cmp::Reverse(v.ttl),
            !owns(v.file, v.client.ip()),
            v.req,
            v.vantage,
        )
    });
    let mut rest: Vec<View> = std::mem::take(views);
    rest.reverse(); // the next in sorted order is at the end
    while let Some(first) = rest.pop() {
        views.push(first);
        while !rest.is_empty() {
            let top_ttl = rest.iter().map(|v| v.ttl).max().expect("non-empty");
            let in_group = |v: &View| v.ttl == top_ttl;
            let cur = *views.last().expect("pushed");
            let same_addresses = rest.iter().rposition(|v| {
                in_group(v) && v.ttl == cur.ttl && (v.client, v.server) == (cur.client, cur.server)
            });
            let same_capture = || {
                views.iter().rev().find_map(|placed| {
                    rest.iter()
                        .rposition(|v| in_group(v) && v.file == placed.file)
                })
            };
            let pick = same_addresses
                .or_else(same_capture)
                .or_else(|| rest.iter().rposition(in_group))
                .expect("the group is not empty");
            let next = rest.remove(pick);
            views.push(next);
        }
    }
}

fn start_of(t: &HttpTransaction, first_byte: Ts) -> Ts {
    match t.handshake.syn {
        Some(syn) if t.index_in_conn == 0 && syn <= first_byte => syn,
        _ => first_byte,
    }
}

/// Per-file clock offsets (see the module doc): from exchanges seen in two captures,
/// with `a` the difference of the request's first byte and `b` of the response's
/// first byte. (The handshake is not used: a NAT delays a connection's first packet
/// while it sets up its state, which makes the SYN's way slower than the SYN-ACK's.)
fn estimate_offsets(input: &Input<'_>, exchanges: &[Exchange]) -> Vec<ClockOffset> {
    let n = input.files.len();
    let mut pair: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for e in exchanges {
        // Per file, the view that saw the request first (nearest the client there).
        let mut per_file: Vec<Option<(Ts, Ts)>> = vec![None; n];
        for v in &e.views {
            let Some(resp) = v.resp else { continue };
            let slot = &mut per_file[v.file];
            if slot.is_none_or(|(req, _)| v.req < req) {
                *slot = Some((v.req, resp));
            }
        }
        for x in 0..n {
            for y in (x + 1)..n {
                if let (Some((qx, rx)), Some((qy, ry))) = (per_file[x], per_file[y]) {
                    let a = (qy.0 - qx.0) as f64;
                    let b = (ry.0 - rx.0) as f64;
                    pair.entry((x, y)).or_default().push((a + b) / 2e9);
                }
            }
        }
    }
    // Breadth-first from the reference (file 0, or the first without an override).
    let mut out: Vec<Option<ClockOffset>> = vec![None; n];
    for (f, o) in input.offset_overrides.iter().enumerate().take(n) {
        if let Some(secs) = o {
            out[f] = Some(ClockOffset {
                capture: input.files[f].clone(),
                offset_s: *secs,
                uncertainty_s: 0.0,
                samples: 0,
                method: ClockMethod::Override,
            });
        }
    }
    if n > 0 && out.iter().all(|o| o.is_none()) {
        out[0] = Some(ClockOffset {
            capture: input.files[0].clone(),
            offset_s: 0.0,
            uncertainty_s: 0.0,
            samples: 0,
            method: ClockMethod::Reference,
        });
    }
    loop {
        let mut progressed = false;
        for y in 0..n {
            if out[y].is_some() {
                continue;
            }
            // The known file with the most shared connections.
            let best = (0..n)
                .filter_map(|x| {
                    let known = out[x].as_ref()?;
                    let (key, sign) = if x < y { ((x, y), 1.0) } else { ((y, x), -1.0) };
                    let est = pair.get(&key)?;
                    Some((est.len(), known.offset_s, sign, est))
                })
                .max_by_key(|(len, ..)| *len);
            if let Some((_, base, sign, est)) = best {
                let mut v: Vec<f64> = est.iter().map(|e| e * sign).collect();
                v.sort_by(f64::total_cmp);
                let median = v[v.len() / 2];
                let mut dev: Vec<f64> = v.iter().map(|e| (e - median).abs()).collect();
                dev.sort_by(f64::total_cmp);
                let mad = dev[dev.len() / 2] * 1.4826;
                out[y] = Some(ClockOffset {
                    capture: input.files[y].clone(),
                    offset_s: base + median,
                    uncertainty_s: mad / (v.len() as f64).sqrt(),
                    samples: v.len(),
                    method: ClockMethod::Exchanges,
                });
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(f, o)| {
            o.unwrap_or(ClockOffset {
                capture: input.files[f].clone(),
                offset_s: 0.0,
                uncertainty_s: f64::NAN.min(0.0),
                samples: 0,
                method: ClockMethod::None,
            })
        })
        .collect()
}

/// Headers that say nothing about which request is which: hop-by-hop ones, and ones
/// proxies rewrite (forwarding headers are weighed on their own).
const NOT_EVIDENCE: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "via",
];

/// How often each value occurs over all exchanges, so a shared value weighs by its
/// information: `log2(exchanges / occurrences)` bits (a unique URI says much, `/`
/// little, a User-Agent every request carries nothing).
#[derive(Default)]
struct Rarity {
    total: f64,
    counts: FxHashMap<(u8, String, String), u32>,
}

impl Rarity {
    const URI: u8 = 0;
    const REQUEST: u8 = 1;
    const RESPONSE: u8 = 2;
    const BODY: u8 = 3;

    fn add(&mut self, kind: u8, name: &str, value: &str) {
        *self
            .counts
            .entry((kind, name.to_ascii_lowercase(), value.to_string()))
            .or_default() += 1;
    }

    fn bits(&self, kind: u8, name: &str, value: &str) -> f64 {
        let n = self
            .counts
            .get(&(kind, name.to_ascii_lowercase(), value.to_string()))
            .copied()
            .unwrap_or(1)
            .max(1);
        (self.total / f64::from(n)).log2().clamp(0.0, 12.0)
    }
}

/// Points per squared millisecond between the end of an upstream response and the
/// start of the inbound response it ends (a proxy answers as soon as its upstream
/// has: in the lab, responses leave a proxy in exactly the order its upstream
/// responses arrive).
const END_GAP_WEIGHT: f64 = 1.0;
/// Points per squared millisecond between an inbound request and the upstream
/// exchange's start. Much weaker: connecting to the upstream and queueing inside a
/// loaded proxy stretch it to tens of milliseconds (measurements in
/// docs/correlation.md).
const START_GAP_WEIGHT: f64 = 0.002;

/// Added to every candidate's score so that weights stay positive.
const CANDIDATE_BASE: f64 = 100_000.0;

/// Pairs proxies' upstream exchanges with the inbound exchanges that caused them.
fn link_proxies(input: &Input<'_>, exchanges: &mut [Exchange]) {
    let txs = input.transactions;
    let mut rarity = Rarity {
        total: exchanges.len().max(1) as f64,
        ..Rarity::default()
    };
    for e in exchanges.iter() {
        let t = &txs[e.first().tx];
        if let Some(r) = &t.request {
            rarity.add(Rarity::URI, "", &r.uri);
            for (n, v) in r.headers.iter() {
                rarity.add(Rarity::REQUEST, n, v);
            }
        }
        if let Some(r) = &t.response {
            for (n, v) in r.headers.iter() {
                rarity.add(Rarity::RESPONSE, n, v);
            }
            rarity.add(Rarity::BODY, "", &r.body_bytes.to_string());
        }
    }
    // Inbound exchanges by the server address where they arrive.
    let mut inbound: FxHashMap<IpAddr, Vec<usize>> = FxHashMap::default();
    for (i, e) in exchanges.iter().enumerate() {
        inbound.entry(e.last().server.ip()).or_default().push(i);
    }
    for list in inbound.values_mut() {
        list.sort_by_key(|&i| exchanges[i].last().req);
    }
    // For each node, the latest end (response, else request) of its inbound exchanges
    // up to each position: walking back from an upstream exchange, once no earlier
    // inbound exchange ends after it, none can enclose it. This keeps the search
    // proportional to the exchanges open at the time, not to the whole capture.
    let open_until: FxHashMap<IpAddr, Vec<i64>> = inbound
        .iter()
        .map(|(ip, list)| {
            let mut latest = i64::MIN;
            let ends = list
                .iter()
                .map(|&g| {
                    let l = exchanges[g].last();
                    latest = latest.max(l.resp_end.map_or(i64::MAX, |t| t.0));
                    latest
                })
                .collect();
            (*ip, ends)
        })
        .collect();
    let tolerance = 200_000; // 0.2 ms of capture-clock jitter between interfaces
                             // Scores every candidate (collect = false), or, after the assignment, only the
                             // chosen pairs with their evidence spelled out (collect = true): keeping the
                             // reasons of every candidate pair would cost memory in proportion to all pairs.
    let scan = |collect: bool,
                wanted: &dyn Fn(usize) -> bool,
                pair_wanted: &dyn Fn(usize, usize) -> bool,
                found: &mut dyn FnMut(usize, usize, f64, Vec<String>)| {
        for (u, ue) in exchanges.iter().enumerate() {
            if !wanted(u) {
                continue;
            }
            let uf = ue.first();
            let Some(list) = inbound.get(&uf.client.ip()) else {
                continue;
            };
            let Some(ureq) = &txs[uf.tx].request else {
                continue;
            };
            let uresp = txs[ue.last().tx]
                .response
                .as_ref()
                .or(txs[uf.tx].response.as_ref());
            let userver = ue.last().server.to_string();
            // Inbound exchanges that started before this one.
            let end = list.partition_point(|&g| exchanges[g].last().req.0 <= uf.req.0 + tolerance);
            let ends = &open_until[&uf.client.ip()];
            let must_end_after = uf.resp_end.unwrap_or(uf.req).0 - tolerance;
            for (pos, &g) in list[..end].iter().enumerate().rev() {
                if ends[pos] < must_end_after {
                    break; // no earlier inbound exchange is still open
                }
                if g == u || !pair_wanted(u, g) {
                    continue;
                }
                let gl = exchanges[g].last();
                if uf.req.0 - gl.req.0 > 120_000_000_000 {
                    break; // nothing waits two minutes for an upstream
                }
                let Some(greq) = &txs[gl.tx].request else {
                    continue;
                };
                if greq.method != ureq.method {
                    continue;
                }
                // The upstream must end before the inbound response does.
                let nested = match (uf.resp_end, gl.resp_end) {
                    (Some(ue_end), Some(ge_end)) => ue_end.0 <= ge_end.0 + tolerance,
                    (None, Some(ge_end)) => uf.req.0 <= ge_end.0,
                    (_, None) => true,
                };
                if !nested {
                    continue;
                }
                let mut score = 10.0;
                let mut why = Vec::new();
                if greq.uri == ureq.uri {
                    let bits = rarity.bits(Rarity::URI, "", &ureq.uri);
                    score += 1.0 + bits;
                    if collect {
                        why.push(format!("same method and URI ({bits:.1} bits)"));
                    }
                }
                let gclient = gl.client.ip().to_string();
                if let Some(xff) = ureq.header("x-forwarded-for") {
                    if xff.split(',').any(|a| a.trim() == gclient) {
                        score += 2.0;
                        if collect {
                            why.push(format!("X-Forwarded-For names {gclient}"));
                        }
                    } else {
                        score -= 10.0;
                    }
                }
                if let Some(real) = ureq.header("x-real-ip") {
                    if real == gclient {
                        score += 1.0;
                        if collect {
                            why.push(format!("X-Real-IP is {gclient}"));
                        }
                    } else {
                        score -= 10.0;
                    }
                }
                for (n, v) in ureq.headers.iter() {
                    let lower = n.to_ascii_lowercase();
                    if NOT_EVIDENCE.contains(&lower.as_str()) || greq.headers.get(n) != Some(v) {
                        continue;
                    }
                    let bits = rarity.bits(Rarity::REQUEST, n, v);
                    if bits >= 1.0 {
                        score += bits;
                        if collect {
                            why.push(format!("request header {n} propagated ({bits:.1} bits)"));
                        }
                    }
                }
                let gresp = txs[gl.tx].response.as_ref();
                if let (Some(a), Some(b)) = (gresp, uresp) {
                    if a.status == b.status {
                        score += 1.0;
                    } else if !(502..=504).contains(&a.status) {
                        score -= 3.0;
                    }
                    if a.body_bytes == b.body_bytes {
                        let bits = rarity.bits(Rarity::BODY, "", &a.body_bytes.to_string());
                        score += bits;
                        if bits >= 1.0 && collect {
                            why.push(format!("same response body size ({} B)", a.body_bytes));
                        }
                    }
                    for (n, v) in b.headers.iter() {
                        let lower = n.to_ascii_lowercase();
                        if NOT_EVIDENCE.contains(&lower.as_str()) || a.headers.get(n) != Some(v) {
                            continue;
                        }
                        let bits = rarity.bits(Rarity::RESPONSE, n, v);
                        if bits >= 1.0 {
                            score += bits;
                            if collect {
                                why.push(format!(
                                    "response header {n} propagated ({bits:.1} bits)"
                                ));
                            }
                        }
                    }
                    // A header of the inbound response naming the upstream's address
                    // (Nginx's Backend-Server: $upstream_addr, and the like).
                    if let Some((n, v)) =
                        a.headers.iter().find(|(_, v)| v.contains(userver.as_str()))
                    {
                        let bits = rarity.bits(Rarity::RESPONSE, n, v).max(1.0);
                        score += 2.0 + bits;
                        if collect {
                            why.push(format!("response header {n} names the upstream {userver}"));
                        }
                    } else if a
                        .headers
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case("backend-server"))
                    {
                        score -= 5.0;
                    }
                }
                // Nesting: the tighter, the likelier. The penalty is convex (squared ms of
                // slack): a linear one adds up to the same total for every way of pairing
                // nested exchanges, while a convex one prefers the order-keeping pairing
                // that proxies follow.
                let start_gap = (uf.start.0 - gl.req_end.0).max(0);
                let end_gap = match (uf.resp_end, gl.resp) {
                    (Some(a), Some(b)) => (b.0 - a.0).max(0),
                    _ => 0,
                };
                let (sg, eg) = (start_gap as f64 / 1e6, end_gap as f64 / 1e6);
                score -= START_GAP_WEIGHT * sg * sg + END_GAP_WEIGHT * eg * eg;
                if collect {
                    why.push(format!(
                "starts {:.3} ms after the inbound request, ends {:.3} ms before its response",
                start_gap as f64 / 1e6,
                end_gap as f64 / 1e6
            ));
                }
                // Offset so every plausible candidate stays positive: clipping would
                // flatten exactly the differences the assignment needs.
                found(u, g, CANDIDATE_BASE + score, why);
            }
        }
    };
    let mut candidates: Vec<Vec<(usize, f64)>> = vec![Vec::new(); exchanges.len()];
    scan(false, &|_| true, &|_, _| true, &mut |u, g, w, _| {
        candidates[u].push((g, w))
    });
    let assigned = assign::assign(&candidates, exchanges.len());
    let mut evidence: FxHashMap<(usize, usize), Vec<String>> = FxHashMap::default();
    scan(
        true,
        &|u| assigned[u].is_some(),
        &|u, g| assigned[u] == Some(g),
        &mut |u, g, _, why| {
            evidence.insert((u, g), why);
        },
    );
    let mut taken: Vec<bool> = vec![false; exchanges.len()];
    for (u, g) in assigned.iter().enumerate() {
        if let Some(g) = *g {
            taken[g] = true;
            let w = candidates[u]
                .iter()
                .find(|c| c.0 == g)
                .map(|c| c.1)
                .unwrap_or(0.0);
            let runner_up = candidates[u]
                .iter()
                .filter(|c| c.0 != g)
                .map(|c| c.1)
                .fold(0.0f64, f64::max);
            let (w, runner_up) = (w - CANDIDATE_BASE, runner_up - CANDIDATE_BASE);
            let confidence = if runner_up <= -CANDIDATE_BASE {
                0.99
            } else {
                (1.0 - (-(w - runner_up).max(0.0) / 3.0).exp()).clamp(0.0, 0.99)
            };
            let why = evidence.remove(&(u, g)).unwrap_or_default();
            exchanges[u].parent = Some((g, (confidence * 100.0).round() / 100.0, why));
            exchanges[g].children.push(u);
        }
    }
    // Retries: an upstream left over whose best candidate's upstream attempts all
    // failed (no response, or 502/503/504) before it started.
    for (u, g) in assigned.iter().enumerate() {
        if g.is_some() {
            continue;
        }
        let best = candidates[u]
            .iter()
            .filter(|(g, _)| {
                !exchanges[*g].children.is_empty()
                    && exchanges[*g].children.iter().all(|&c| {
                        let cv = exchanges[c].first();
                        let failed = txs[cv.tx]
                            .response
                            .as_ref()
                            .is_none_or(|r| (502..=504).contains(&r.status));
                        failed && cv.resp_end.unwrap_or(cv.req_end).0 <= exchanges[u].first().req.0
                    })
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some(&(g, _)) = best {
            let mut why = evidence.remove(&(u, g)).unwrap_or_default();
            why.push("retry after an earlier upstream attempt".into());
            exchanges[u].parent = Some((g, 0.5, why));
            exchanges[g].children.push(u);
        }
    }
    for e in exchanges.iter_mut() {
        e.children.sort_unstable();
    }
}

fn product_and_role(
    t: &HttpTransaction,
    has_children: bool,
    is_root: bool,
) -> (Option<String>, &'static str) {
    let resp = t.response.as_ref();
    let header = |n: &str| resp.and_then(|r| r.header(n)).unwrap_or("");
    let via = header("via").to_ascii_lowercase();
    let server = header("server");
    let kong = via.contains("kong")
        || resp.is_some_and(|r| {
            r.headers
                .iter()
                .any(|(n, _)| n.to_ascii_lowercase().starts_with("x-kong-"))
        });
    let product = if kong {
        Some("Kong".to_string())
    } else if server.is_empty() {
        None
    } else {
        Some(server.split('/').next().unwrap_or(server).to_string())
    };
    let role = if kong {
        "gateway"
    } else if resp.is_none() && !has_children {
        "unanswered"
    } else if has_children {
        if is_root {
            "gateway"
        } else {
            "load_balancer"
        }
    } else {
        let s = server.to_ascii_lowercase();
        if s.contains("nginx") || s.contains("kong") || s.contains("haproxy") || s.contains("envoy")
        {
            "proxy"
        } else {
            "backend"
        }
    };
    let product = match product.as_deref() {
        Some(p) if p.starts_with("BaseHTTP") || p.starts_with("SimpleHTTP") => {
            Some("Python".into())
        }
        _ => product,
    };
    (product, role)
}

fn capture_ref(input: &Input<'_>, vantage: usize) -> CaptureRef {
    let v = &input.vantages[vantage];
    CaptureRef {
        file: v.file.clone(),
        interface: v.interface.clone(),
    }
}

fn build_path(
    input: &Input<'_>,
    exchanges: &[Exchange],
    root: usize,
    id: usize,
    timeline: &[VipHolding],
    anomalies: &mut Vec<String>,
) -> RequestPath {
    let txs = input.transactions;
    let mut hops: Vec<Hop> = Vec::new();
    let mut members: Vec<u64> = Vec::new();
    let mut stack: Vec<(usize, Option<usize>)> = vec![(root, None)];
    let mut complete = true;
    while let Some((e, parent)) = stack.pop() {
        let ex = &exchanges[e];
        members.extend(ex.views.iter().map(|v| txs[v.tx].id));
        let first = ex.first();
        let last = ex.last();
        let t = &txs[last.tx];
        let req = t.request.as_ref();
        let (product, inferred) =
            product_and_role(&txs[first.tx], !ex.children.is_empty(), parent.is_none());
        let named = input.names.and_then(|n| n.service(last.server));
        let role: &str = named.and_then(|s| s.role.as_deref()).unwrap_or(inferred);
        if ex.children.is_empty() && role != "backend" {
            complete = false;
        }
        if t.response.is_none() {
            complete = false;
        }
        let resp_end = last.resp_end;
        let latency = resp_end.map(|r| r.0 - last.req.0);
        let child_time: i64 = ex
            .children
            .iter()
            .filter_map(|&c| {
                let cv = exchanges[c].first();
                Some(cv.resp_end?.0 - cv.req.0)
            })
            .sum();
        let (confidence, evidence) = match &ex.parent {
            Some((_, c, why)) => (Some(*c), why.clone()),
            None => (None, Vec::new()),
        };
        let hop_id = hops.len();
        hops.push(Hop {
            id: hop_id,
            parent,
            kind: HopKind::Http,
            client: Some(first.client),
            server: Some(first.server),
            capture: Some(capture_ref(input, first.vantage)),
            host: Some(input.host(last.file)),
            role: Some(role.to_string()),
            name: named.and_then(|s| s.name.clone()),
            product,
            method: req.map(|r| r.method.clone()),
            uri: req.map(|r| r.uri.clone()),
            status: t.response.as_ref().map(|r| r.status),
            request_ts: Some(last.req),
            response_ts: resp_end,
            latency_ms: latency.map(ms),
            self_ms: latency.map(|l| ms((l - child_time).max(0))),
            confidence,
            evidence,
            seen_at: ex
                .views
                .iter()
                .map(|v| Seen {
                    capture: capture_ref(input, v.vantage),
                    client: v.client,
                    server: v.server,
                    request_ts: v.req,
                })
                .collect(),
            translation: None,
            before: None,
            after: None,
            capture_before: None,
            capture_after: None,
            ts: None,
        });
        // Translations between consecutive views with different addresses.
        let mut prev = first;
        for v in &ex.views[1..] {
            if (v.client, v.server) != (prev.client, prev.server) {
                let kind = match (v.client != prev.client, v.server != prev.server) {
                    (true, true) => Translation::SnatDnat,
                    (true, false) => Translation::Snat,
                    _ => Translation::Dnat,
                };
                let nat_id = hops.len();
                hops.push(Hop {
                    id: nat_id,
                    parent: Some(hop_id),
                    kind: HopKind::Nat,
                    client: None,
                    server: None,
                    capture: None,
                    host: Some(input.host(v.file)),
                    role: None,
                    name: None,
                    product: None,
                    method: None,
                    uri: None,
                    status: None,
                    request_ts: None,
                    response_ts: None,
                    latency_ms: None,
                    self_ms: None,
                    confidence: Some(1.0),
                    evidence: vec!["same TCP sequence numbers on both sides".into()],
                    seen_at: Vec::new(),
                    translation: Some(kind),
                    before: Some(Endpoints {
                        client: prev.client,
                        server: prev.server,
                    }),
                    after: Some(Endpoints {
                        client: v.client,
                        server: v.server,
                    }),
                    capture_before: Some(capture_ref(input, prev.vantage)),
                    capture_after: Some(capture_ref(input, v.vantage)),
                    ts: Some(v.req),
                });
            }
            prev = v;
        }
        for &c in ex.children.iter().rev() {
            stack.push((c, Some(hop_id)));
        }
    }
    let rex = &exchanges[root];
    let rfirst = rex.first();
    let rt = &txs[rfirst.tx];
    let status = match rt.response.as_ref().map(|r| r.status) {
        None => PathStatus::Failed,
        Some(s) if s >= 500 => PathStatus::Failed,
        Some(_) if complete => PathStatus::Complete,
        Some(_) => PathStatus::Partial,
    };
    let start = rfirst.req;
    let end = rfirst.resp_end.unwrap_or(rfirst.req_end);
    let vip = timeline
        .iter()
        .any(|h| h.vip == rfirst.server.ip())
        .then(|| VipUse {
            address: rfirst.server.ip(),
            holder: holder_at(timeline, rfirst.server.ip(), start),
        });
    if status == PathStatus::Failed {
        anomalies.push(format!(
            "path {id}: {} {} from {} failed ({})",
            rt.request
                .as_ref()
                .map(|r| r.method.as_str())
                .unwrap_or("-"),
            rt.request.as_ref().map(|r| r.uri.as_str()).unwrap_or("-"),
            rfirst.client,
            failure_reason(rt)
        ));
    }
    RequestPath {
        schema_version: PATH_SCHEMA_VERSION,
        id,
        status,
        start_ts: start,
        end_ts: end,
        vip,
        hops,
        root_transaction: rt.id,
    }
}

fn failure_reason(t: &HttpTransaction) -> String {
    match &t.response {
        None => "no response".into(),
        Some(r) => format!("status {}", r.status),
    }
}

/// The host holding `vip` at `ts`: the latest holding that started by then.
fn holder_at(timeline: &[VipHolding], vip: IpAddr, ts: Ts) -> Option<String> {
    timeline
        .iter()
        .filter(|h| h.vip == vip && h.from <= ts && h.priority > 0)
        .max_by_key(|h| h.from)
        .map(|h| h.holder.clone())
}

/// Which host owns `ip`, by the links sidecars.
fn host_owning(input: &Input<'_>, ip: IpAddr) -> Option<String> {
    input.links.iter().enumerate().find_map(|(f, l)| {
        l.as_ref()?
            .links
            .iter()
            .any(|link| link.addresses.contains(&ip))
            .then(|| input.host(f))
    })
}

fn vip_timeline(input: &Input<'_>) -> Vec<VipHolding> {
    let mut out: Vec<VipHolding> = Vec::new();
    let mut runs: Vec<&VrrpRun> = input.vrrp.iter().collect();
    runs.sort_by_key(|r| r.first_ts);
    for r in runs {
        for vip in &r.addresses {
            // The same advert seen by several captures extends one holding.
            if let Some(h) = out
                .iter_mut()
                .rev()
                .find(|h| h.vip == *vip && h.vrid == r.vrid)
            {
                if h.holder_ip == r.source
                    && h.priority == r.priority
                    && r.first_ts.0 <= h.to.0 + 3_000_000_000
                {
                    h.to = h.to.max(r.last_ts);
                    h.adverts += r.adverts;
                    continue;
                }
            }
            out.push(VipHolding {
                vip: *vip,
                vrid: r.vrid,
                holder: host_owning(input, r.source).unwrap_or_else(|| r.source.to_string()),
                holder_ip: r.source,
                priority: r.priority,
                from: r.first_ts,
                to: r.last_ts,
                adverts: r.adverts,
            });
        }
    }
    out
}

fn failovers(input: &Input<'_>, timeline: &[VipHolding], paths: &[RequestPath]) -> Vec<Failover> {
    let mut out = Vec::new();
    let mut vips: Vec<IpAddr> = timeline.iter().map(|h| h.vip).collect();
    vips.sort();
    vips.dedup();
    for vip in vips {
        let holdings: Vec<&VipHolding> = timeline
            .iter()
            .filter(|h| h.vip == vip && h.priority > 0)
            .collect();
        for w in holdings.windows(2) {
            if w[0].holder == w[1].holder {
                continue;
            }
            // A gratuitous ARP for the VIP can be the first sign of the new holder.
            let garp = input
                .garp
                .iter()
                .filter(|g| g.ip == vip && g.ts > w[0].to)
                .map(|g| g.ts)
                .min();
            let first_sign = garp.map_or(w[1].from, |g| g.min(w[1].from));
            let window = (w[0].to.0 - 5_000_000_000, first_sign.0 + 5_000_000_000);
            let failed_paths = paths
                .iter()
                .filter(|p| {
                    p.status == PathStatus::Failed
                        && p.start_ts.0 >= window.0
                        && p.start_ts.0 <= window.1
                })
                .map(|p| FailedPath {
                    path: p.id,
                    start_ts: p.start_ts,
                    reason: match p.hops.first().and_then(|h| h.status) {
                        None => "no response (connection reset or timed out)".into(),
                        Some(s) => format!("status {s}"),
                    },
                })
                .collect();
            out.push(Failover {
                vip,
                from: w[0].holder.clone(),
                to: w[1].holder.clone(),
                last_advert_before: w[0].to,
                first_sign_after: first_sign,
                failed_paths,
            });
        }
    }
    out
}

fn address_book(input: &Input<'_>, paths: &[RequestPath]) -> Vec<AddressEntry> {
    let mut roles: BTreeMap<IpAddr, (String, String)> = BTreeMap::new();
    for p in paths {
        for h in &p.hops {
            if let (Some(role), Some(seen)) = (&h.role, h.seen_at.last()) {
                let entry = roles
                    .entry(seen.server.ip())
                    .or_insert_with(|| (role.clone(), h.host.clone().unwrap_or_default()));
                // A role seen answering wins over "unanswered".
                if entry.0 == "unanswered" && role != "unanswered" {
                    entry.0 = role.clone();
                }
            }
        }
    }
    // A name the topology file gives the address ("ip", or any "ip:port" of it).
    let named = |ip: IpAddr| -> Option<String> {
        let n = input.names?;
        n.services
            .iter()
            .find(|(k, _)| {
                k.parse::<IpAddr>().ok() == Some(ip)
                    || k.parse::<SocketAddr>().ok().map(|a| a.ip()) == Some(ip)
            })
            .and_then(|(_, s)| s.name.clone())
    };
    let mut out = Vec::new();
    let mut known = std::collections::BTreeSet::new();
    for (f, l) in input.links.iter().enumerate() {
        let Some(l) = l else { continue };
        let host = input.host(f);
        for link in &l.links {
            for ip in &link.addresses {
                if ip.is_loopback() {
                    continue;
                }
                known.insert(*ip);
                out.push(AddressEntry {
                    name: named(*ip).unwrap_or_else(|| format!("{host} {}", link.ifname)),
                    ip: *ip,
                    mac: link.mac.clone(),
                    host: host.clone(),
                    interface: Some(link.ifname.clone()),
                    role: roles.get(ip).map(|r| r.0.clone()),
                });
            }
        }
    }
    for (ip, (role, host)) in roles {
        if !known.contains(&ip) {
            out.push(AddressEntry {
                name: named(ip).unwrap_or_else(|| format!("{role} on {host}")),
                ip,
                mac: None,
                host,
                interface: None,
                role: Some(role),
            });
        }
    }
    out.sort();
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summarize(paths: &[RequestPath]) -> PathSummary {
    let mut by_role: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in paths {
        for h in &p.hops {
            if let (Some(role), Some(l)) = (&h.role, h.latency_ms) {
                by_role.entry(role.clone()).or_default().push(l);
            }
        }
    }
    let latency_by_role = by_role
        .into_iter()
        .map(|(role, mut v)| {
            v.sort_by(f64::total_cmp);
            RoleLatency {
                role,
                count: v.len(),
                p50_ms: percentile(&v, 0.5),
                p90_ms: percentile(&v, 0.9),
                p99_ms: percentile(&v, 0.99),
                max_ms: *v.last().unwrap_or(&0.0),
            }
        })
        .collect();
    let mut slowest: Vec<(usize, f64)> = paths
        .iter()
        .map(|p| (p.id, ms(p.end_ts.0 - p.start_ts.0)))
        .collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(5);
    PathSummary {
        paths: paths.len(),
        complete: paths
            .iter()
            .filter(|p| p.status == PathStatus::Complete)
            .count(),
        partial: paths
            .iter()
            .filter(|p| p.status == PathStatus::Partial)
            .count(),
        failed: paths
            .iter()
            .filter(|p| p.status == PathStatus::Failed)
            .count(),
        latency_by_role,
        slowest,
    }
}

/// Files whose reading ended early also weaken paths; kept with the report's inputs.
pub fn warnings_note(warnings: &[Warning]) -> Vec<String> {
    warnings
        .iter()
        .map(|w| format!("{}: {}", w.file, w.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_files() {
        assert_eq!(host_of("captures/x/A.pcap.gz"), "A");
        assert_eq!(host_of("router.pcapng"), "router");
        assert_eq!(host_of("dump"), "dump");
    }

    #[test]
    fn percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.99), 5.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
