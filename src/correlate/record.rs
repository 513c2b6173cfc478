//! What correlation keeps of a transaction: a compact [`View`] per capture point and
//! one shared [`Msg`] with the request's and response's linking evidence as hashes
//! (header name/value pairs, the URI, body sizes, addresses named in headers), never
//! the transaction with its headers. Hashes are 64-bit FxHash of the lower-case name
//! and the value: a collision costs at most one wrong evidence point.

use crate::http::{Headers, HttpTransaction};
use crate::time::Ts;
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

/// Headers that say nothing about which request is which: hop-by-hop ones, and ones
/// proxies rewrite (forwarding headers are weighed on their own).
pub(crate) const NOT_EVIDENCE: &[&str] = &[
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

/// Longest URI, Server value and method kept for output (bytes); longer ones are cut
/// at a character boundary with `…` (their hash is of the whole value).
const MAX_KEPT_TEXT: usize = 2048;

pub(crate) fn hash_of(parts: &[&[u8]]) -> u64 {
    let mut h = FxHasher::default();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

fn lower_hash(name: &str) -> u64 {
    let mut h = FxHasher::default();
    for b in name.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
    h.finish()
}

/// A header as evidence: its name's hash and its (name, value) pair's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pair {
    pub name: u64,
    pub pair: u64,
    /// The first header of this name in the message (what a lookup by name finds).
    pub first: bool,
}

fn pairs(headers: &Headers, names: &mut NameBook) -> Vec<Pair> {
    let mut out: Vec<Pair> = Vec::with_capacity(headers.len());
    for (n, v) in headers.iter() {
        if NOT_EVIDENCE.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            continue;
        }
        let name = lower_hash(n);
        names.learn(name, n);
        let first = !out.iter().any(|p| p.name == name);
        out.push(Pair {
            name,
            pair: hash_of(&[&name.to_le_bytes(), v.as_bytes()]),
            first,
        });
    }
    out
}

/// Header names by hash, for evidence sentences (bounded: names are few in practice,
/// a hostile capture gets `#hash` for the rest).
#[derive(Default)]
pub(crate) struct NameBook {
    names: FxHashMap<u64, Box<str>>,
    /// An agent's book (`crate::remote`) lists the names it learns, to send each
    /// once; the engine's does not.
    fresh: Option<Vec<(u64, String)>>,
}

impl NameBook {
    const CAPACITY: usize = 4096;

    /// A book that lists what it learns ([`NameBook::take_fresh`]).
    pub(crate) fn tracking() -> NameBook {
        NameBook {
            names: FxHashMap::default(),
            fresh: Some(Vec::new()),
        }
    }

    pub(crate) fn learn(&mut self, hash: u64, name: &str) {
        if self.names.len() < Self::CAPACITY && !self.names.contains_key(&hash) {
            let name = cut(name, 128);
            if let Some(f) = &mut self.fresh {
                f.push((hash, name.to_string()));
            }
            self.names.insert(hash, name);
        }
    }

    /// The names learned since the last call (a tracking book only).
    pub(crate) fn take_fresh(&mut self) -> Vec<(u64, String)> {
        self.fresh.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn name(&self, hash: u64) -> String {
        self.names
            .get(&hash)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("#{hash:016x}"))
    }
}

fn cut(s: &str, max: usize) -> Box<str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// What the response says, as evidence and for roles.
#[derive(Debug)]
pub(crate) struct RespMsg {
    pub status: u16,
    pub body_bytes: u64,
    pub pairs: Box<[Pair]>,
    /// Socket addresses named in header values (`Backend-Server: 10.0.0.3:8888`), with
    /// the header they are in.
    pub addrs: Box<[(Pair, SocketAddr)]>,
    /// Whether a `Backend-Server` header is there (naming another upstream counts
    /// against a candidate).
    pub backend_server: bool,
    /// `Server` value.
    pub server: Option<Box<str>>,
    /// `Via: kong/...` or `X-Kong-*`.
    pub kong: bool,
    /// A header that a proxy adds when it has forwarded the request (`Via`,
    /// `Backend-Server`, `X-Upstream-*`, Kong's `X-Kong-Upstream-Latency`): the
    /// server forwarded it, whether or not the upstream hop was captured.
    pub says_forwarded: bool,
}

/// The HTTP content of an exchange, shared by its views (NAT does not change it).
#[derive(Debug)]
pub(crate) struct Msg {
    /// Hash of everything below: views with equal digests share one `Msg`.
    pub digest: u64,
    pub has_request: bool,
    pub method: Box<str>,
    pub uri: Box<str>,
    pub uri_hash: u64,
    pub req_pairs: Box<[Pair]>,
    /// `X-Forwarded-For` addresses (`Some(empty)` when present but none parse).
    pub xff: Option<Box<[IpAddr]>>,
    /// `X-Real-IP` (`Some(None)` when present but not an address).
    pub real_ip: Option<Option<IpAddr>>,
    pub resp: Option<RespMsg>,
}

impl Msg {
    pub fn from_transaction(t: &HttpTransaction, names: &mut NameBook) -> Msg {
        let mut digest = FxHasher::default();
        let (has_request, method, uri, req_pairs, xff, real_ip) = match &t.request {
            Some(r) => {
                r.method.hash(&mut digest);
                r.uri.hash(&mut digest);
                for (n, v) in r.headers.iter() {
                    n.hash(&mut digest);
                    v.hash(&mut digest);
                }
                let xff = r.header("x-forwarded-for").map(|v| {
                    v.split(',')
                        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                        .collect::<Vec<_>>()
                        .into_boxed_slice()
                });
                let real_ip = r.header("x-real-ip").map(|v| v.trim().parse().ok());
                (
                    true,
                    cut(&r.method, 64),
                    cut(&r.uri, MAX_KEPT_TEXT),
                    pairs(&r.headers, names),
                    xff,
                    real_ip,
                )
            }
            None => (false, "".into(), "".into(), Vec::new(), None, None),
        };
        let uri_hash = t
            .request
            .as_ref()
            .map_or(0, |r| hash_of(&[b"uri", r.uri.as_bytes()]));
        let resp = t.response.as_ref().map(|r| {
            r.status.hash(&mut digest);
            r.body_bytes.hash(&mut digest);
            for (n, v) in r.headers.iter() {
                n.hash(&mut digest);
                v.hash(&mut digest);
            }
            let pairs = pairs(&r.headers, names);
            let mut addrs = Vec::new();
            let mut backend_server = false;
            let mut kong = false;
            let mut says_forwarded = false;
            let mut server = None;
            for (n, v) in r.headers.iter() {
                if n.eq_ignore_ascii_case("backend-server") {
                    backend_server = true;
                }
                if n.eq_ignore_ascii_case("backend-server")
                    || n.eq_ignore_ascii_case("via")
                    || n.eq_ignore_ascii_case("x-kong-upstream-latency")
                    || (n.len() > 11 && n[..11].eq_ignore_ascii_case("x-upstream-"))
                {
                    says_forwarded = true;
                }
                if n.len() > 7 && n[..7].eq_ignore_ascii_case("x-kong-") {
                    kong = true;
                }
                if n.eq_ignore_ascii_case("via") && v.to_ascii_lowercase().contains("kong") {
                    kong = true;
                }
                if n.eq_ignore_ascii_case("server") && server.is_none() {
                    server = Some(cut(v, 256));
                }
                if addrs.len() < 8 && v.contains(':') {
                    let name = lower_hash(n);
                    let pair = Pair {
                        name,
                        pair: hash_of(&[&name.to_le_bytes(), v.as_bytes()]),
                        first: true,
                    };
                    for tok in v.split([',', ' ', ';']) {
                        if let Ok(a) = tok.trim().parse::<SocketAddr>() {
                            addrs.push((pair, a));
                        }
                    }
                }
            }
            RespMsg {
                status: r.status,
                body_bytes: r.body_bytes,
                pairs: pairs.into_boxed_slice(),
                addrs: addrs.into_boxed_slice(),
                backend_server,
                server,
                kong,
                says_forwarded,
            }
        });
        Msg {
            digest: digest.finish(),
            has_request,
            method,
            uri,
            uri_hash,
            req_pairs: req_pairs.into_boxed_slice(),
            xff,
            real_ip,
            resp,
        }
    }

    /// The heap it holds with its `Rc` (the allocator's rounding aside): its fields,
    /// the method, URI (at most `MAX_KEPT_TEXT`), header pairs (at most
    /// `http::MAX_KEPT_HEADERS` a message), forwarded-for addresses (one header value,
    /// at most `http::MAX_HEADER_VALUE` bytes), and what the response names.
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let resp = self.resp.as_ref().map_or(0, |r| {
            r.pairs.len() * size_of::<Pair>()
                + r.addrs.len() * size_of::<(Pair, SocketAddr)>()
                + r.server.as_ref().map_or(0, |s| s.len())
        });
        2 * size_of::<usize>()
            + size_of::<Msg>()
            + self.method.len()
            + self.uri.len()
            + self.req_pairs.len() * size_of::<Pair>()
            + self
                .xff
                .as_ref()
                .map_or(0, |x| x.len() * size_of::<IpAddr>())
            + resp
    }

    /// Whether this message has header pair `p` as the first of its name (what
    /// `headers.get(name) == Some(value)` asks).
    pub fn req_has(&self, p: &Pair) -> bool {
        self.req_pairs.iter().any(|q| q.first && q.pair == p.pair)
    }
}

impl RespMsg {
    pub fn has(&self, p: &Pair) -> bool {
        self.pairs.iter().any(|q| q.first && q.pair == p.pair)
    }
}

/// One view of an exchange: where it was seen, with which addresses, when (times
/// clock-corrected by `shift`, the offset applied to its capture).
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub tx: u64,
    pub file: usize,
    pub vantage: usize,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub req: Ts,
    pub req_end: Ts,
    pub resp: Option<Ts>,
    pub resp_end: Option<Ts>,
    /// When the exchange's sender started it: the SYN for the first request of a
    /// connection (a proxy connects as soon as it has read the inbound request), the
    /// first request byte otherwise.
    pub start: Ts,
    /// When the transaction reached correlation (its connection closed, for one
    /// without a response): the latest it can have been open.
    pub arrived: Ts,
    /// TTL of the client's packets here: routers lower it, so it orders views across
    /// captures whatever the clocks say.
    pub ttl: u8,
    /// Offset (ns) subtracted from this view's capture times.
    pub shift: i64,
    pub msg: Rc<Msg>,
    /// The transaction's segments, when the run keeps them for diagrams (moved in by
    /// the engine, not copied).
    pub segments: Vec<crate::tcp::SegmentSummary>,
}

/// What a view is made of, whether it comes from a transaction of this run's
/// pipeline or from an agent's record (`crate::remote`): the same fields either way,
/// so that both feed the engine identically.
#[derive(Clone, Debug)]
pub(crate) struct ViewIn {
    pub tx: u64,
    pub vantage: usize,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub req_first: Ts,
    pub req_last: Ts,
    pub wire_pos: Option<crate::tcp::StreamPos>,
    pub resp: Option<(Ts, Ts)>,
    pub syn: Option<Ts>,
    pub index_in_conn: u32,
    pub conn_seq: [Option<u32>; 2],
    pub ttl: Option<u8>,
}

impl ViewIn {
    /// The view fields of `t`; `None` without a request.
    pub fn of(t: &HttpTransaction) -> Option<ViewIn> {
        let req = t.request.as_ref()?;
        Some(ViewIn {
            tx: t.id,
            vantage: t.vantage as usize,
            client: t.client,
            server: t.server,
            req_first: req.first_ts,
            req_last: req.last_ts,
            wire_pos: req.wire_pos,
            resp: t.response.as_ref().map(|r| (r.first_ts, r.last_ts)),
            syn: t.handshake.syn,
            index_in_conn: t.index_in_conn,
            conn_seq: t.conn_seq,
            ttl: t.conn_ttl[0],
        })
    }
}

impl View {
    #[cfg(test)]
    pub fn new(
        t: &HttpTransaction,
        file: usize,
        arrived: Ts,
        shift: i64,
        msg: Rc<Msg>,
    ) -> Option<View> {
        Some(View::from_in(&ViewIn::of(t)?, file, arrived, shift, msg))
    }

    pub fn from_in(t: &ViewIn, file: usize, arrived: Ts, shift: i64, msg: Rc<Msg>) -> View {
        let start = match t.syn {
            Some(syn) if t.index_in_conn == 0 && syn <= t.req_first => syn,
            _ => t.req_first,
        };
        let s = |ts: Ts| Ts(ts.0 - shift);
        View {
            tx: t.tx,
            file,
            vantage: t.vantage,
            client: t.client,
            server: t.server,
            req: s(t.req_first),
            req_end: s(t.req_last),
            resp: t.resp.map(|r| s(r.0)),
            resp_end: t.resp.map(|r| s(r.1)),
            start: s(start),
            arrived: s(arrived.max(t.req_last)),
            ttl: t.ttl.unwrap_or(0),
            shift,
            msg,
            segments: Vec::new(),
        }
    }

    /// Moves this view's times to offset `shift`.
    pub fn reshift(&mut self, shift: i64) {
        let d = shift - self.shift;
        if d == 0 {
            return;
        }
        let s = |ts: Ts| Ts(ts.0 - d);
        self.req = s(self.req);
        self.req_end = s(self.req_end);
        self.resp = self.resp.map(s);
        self.resp_end = self.resp_end.map(s);
        self.start = s(self.start);
        self.arrived = s(self.arrived);
        self.shift = shift;
    }

    /// The heap it holds in its exchange's list, its message aside (shared by the
    /// views that carry the same one): itself and its segment summaries.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<View>()
            + self.segments.capacity() * std::mem::size_of::<crate::tcp::SegmentSummary>()
            + self
                .segments
                .iter()
                .map(|s| s.first_line.as_ref().map_or(0, |l| l.len()))
                .sum::<usize>()
    }

    /// The latest this view's exchange was open here: its response's end, else when
    /// it reached correlation.
    pub fn end(&self) -> Ts {
        self.resp_end.unwrap_or(self.arrived)
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
pub(crate) fn order_views(views: &mut Vec<View>, owns: &impl Fn(usize, IpAddr) -> bool) {
    if views.len() < 2 {
        return;
    }
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
            let cur = views.last().expect("pushed");
            let (cur_ttl, cur_addrs) = (cur.ttl, (cur.client, cur.server));
            let same_addresses = rest.iter().rposition(|v| {
                in_group(v) && v.ttl == cur_ttl && (v.client, v.server) == cur_addrs
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

#[cfg(test)]
pub(crate) mod tests;
