//! HTTP/1.x transactions from reassembled TCP streams.
//!
//! [`HttpAnalyzer`] is a [`StreamSink`]: it sees only in-order data, gaps and ends of
//! each direction (as Zeek's HTTP analyzer does). Requests and responses are paired per
//! connection in order, which handles keep-alive and pipelining (several requests in
//! one segment are each parsed; Packetbeat's bug #6774 is the counter-example). Bodies
//! are framed by Content-Length, chunked encoding or the end of the connection, and
//! skipped without being buffered; responses to HEAD, 1xx, 204 and 304 have none.
//! Interim 1xx responses are attached to their request; 101 and CONNECT end HTTP on
//! the connection.
//!
//! A connection that starts with a SOCKS 4/4a/5 handshake ([`socks`]) is HTTP after
//! it: the handshake is let through in each direction and its target recorded in
//! [`HttpTransaction::socks_target`].
//!
//! Memory per connection is bounded: header blocks by [`MAX_HEADER_BLOCK`], kept
//! headers by [`MAX_KEPT_HEADERS`] and [`MAX_HEADER_VALUE`], and requests awaiting a
//! response by [`MAX_PENDING_REQUESTS`].

mod parse;
pub mod socks;

use crate::anomaly::{AnomalyLog, Stats};
use crate::tcp::{ConnMeta, Dir, End, StreamPos, StreamSink, VantageId};
use crate::time::Ts;
use parse::{MessageParser, Role};
use serde::Serialize;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Largest header block parsed (start line and headers).
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Headers kept per message (all are parsed).
pub const MAX_KEPT_HEADERS: usize = 64;
/// Bytes kept of each header value.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Requests waiting for their response on one connection.
pub const MAX_PENDING_REQUESTS: usize = 512;

/// Which headers of each message the analyzer keeps in [`Request::headers`] and
/// [`Response::headers`]: a choice of whoever reads the transactions (the CLI
/// decides it from its flags). The framing headers are read either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeptHeaders {
    /// All of them, within [`MAX_KEPT_HEADERS`] and [`MAX_HEADER_VALUE`]:
    /// correlation reads `X-Forwarded-For` and the like, `--headers` writes them.
    #[default]
    All,
    /// Only the first `Host` of those `All` keeps (same text, same counters): all a
    /// transaction record without header lists shows. Copying every header out of
    /// the packet was a tenth of a run on small-packet API traffic.
    Host,
}

/// A short text off the wire that is nearly always one of a few values (a method,
/// a reason phrase): those are borrowed from a table instead of copied, one
/// allocation less per message. A borrowed word is never wire text (only [`word`]
/// makes one from the wire, and only from its table), so it holds no byte JSON
/// escapes: the JSON writer copies it without scanning it.
pub type Word = std::borrow::Cow<'static, str>;

/// `text` as a [`Word`]: borrowed when it is one of `known`, else copied.
pub(crate) fn word(text: &str, known: &[&'static str]) -> Word {
    match known.iter().find(|k| **k == text) {
        Some(k) => Word::Borrowed(k),
        None => Word::Owned(text.to_owned()),
    }
}

/// Heap bytes a [`Word`] holds (for the memory budget).
pub(crate) fn word_heap(w: &Word) -> usize {
    match w {
        Word::Borrowed(_) => 0,
        Word::Owned(s) => s.capacity(),
    }
}

/// The request methods a [`Request::method`] borrows (RFC 9110 and PATCH).
pub(crate) const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The reason phrases a [`Response::reason`] borrows: RFC 9110's for the common
/// status codes, as servers send them.
pub(crate) const REASONS: &[&str] = &[
    "OK",
    "Created",
    "Accepted",
    "No Content",
    "Partial Content",
    "Moved Permanently",
    "Found",
    "See Other",
    "Not Modified",
    "Temporary Redirect",
    "Permanent Redirect",
    "Bad Request",
    "Unauthorized",
    "Forbidden",
    "Not Found",
    "Method Not Allowed",
    "Request Timeout",
    "Conflict",
    "Payload Too Large",
    "Too Many Requests",
    "Internal Server Error",
    "Not Implemented",
    "Bad Gateway",
    "Service Unavailable",
    "Gateway Timeout",
    "Switching Protocols",
    "Continue",
    "",
];

/// One HTTP request as seen on the wire.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Request {
    /// Method.
    pub method: Word,
    /// Request target as sent.
    pub uri: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'static str,
    /// Headers in order (bounded; see [`MAX_KEPT_HEADERS`]).
    pub headers: Headers,
    /// Body bytes (as framed on the wire, gaps included).
    pub body_bytes: u64,
    /// First byte of the request.
    pub first_ts: Ts,
    /// Last byte of the request.
    pub last_ts: Ts,
    /// Whether part of it was missing from the capture.
    pub incomplete: bool,
    /// Where its first byte sat on the wire (sequence and acknowledgement numbers,
    /// which NAT leaves alone); `None` when the start was not captured.
    pub wire_pos: Option<StreamPos>,
}

/// One HTTP response as seen on the wire.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: Word,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'static str,
    /// Headers in order (bounded).
    pub headers: Headers,
    /// Body bytes (as framed on the wire, gaps included).
    pub body_bytes: u64,
    /// First byte of the response.
    pub first_ts: Ts,
    /// Last byte of the response.
    pub last_ts: Ts,
    /// Whether part of it was missing from the capture.
    pub incomplete: bool,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.get(name)
}

/// A message's headers in order, stored as one string and spans into it (two
/// allocations per message instead of two per header, one when a single header is
/// kept: the span fits inline). Names and values that are not UTF-8 are kept
/// lossily.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    text: String,
    spans: SmallVec<[[u32; 3]; 1]>,
}

impl Headers {
    /// Heap bytes held (for the memory budget).
    pub fn heap_bytes(&self) -> usize {
        let spans = match self.spans.spilled() {
            true => self.spans.capacity() * std::mem::size_of::<[u32; 3]>(),
            false => 0,
        };
        self.text.capacity() + spans
    }

    /// Room for `count` headers of `bytes` bytes in all.
    pub fn with_capacity(count: usize, bytes: usize) -> Headers {
        Headers {
            text: String::with_capacity(bytes),
            spans: SmallVec::with_capacity(count),
        }
    }

    /// Appends a header whose name is text already (httparse checked it is a token).
    pub fn push_named(&mut self, name: &str, value: &[u8]) {
        let start = self.text.len() as u32;
        self.text.push_str(name);
        self.push_value(start, value);
    }

    /// Appends a header.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.text.len() as u32;
        push_lossy(&mut self.text, name);
        self.push_value(start, value);
    }

    /// Appends the value of the header whose name starts at `start`, and its span.
    fn push_value(&mut self, start: u32, value: &[u8]) {
        let mid = self.text.len() as u32;
        push_lossy(&mut self.text, value);
        self.spans.push([start, mid, self.text.len() as u32]);
    }

    /// Headers in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|[a, b, c]| {
            (
                &self.text[*a as usize..*b as usize],
                &self.text[*b as usize..*c as usize],
            )
        })
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        // Names compared as bytes: slicing the text for each name checks character
        // boundaries, and this runs once per transaction written (`host`).
        let bytes = self.text.as_bytes();
        self.spans
            .iter()
            .find(|[a, b, _]| bytes[*a as usize..*b as usize].eq_ignore_ascii_case(name.as_bytes()))
            .map(|[_, b, c]| &self.text[*b as usize..*c as usize])
    }

    /// How many headers are kept.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Appends `b` to `text`, lossily when it is not UTF-8.
fn push_lossy(text: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => text.push_str(s),
        Err(_) => text.push_str(&String::from_utf8_lossy(b)),
    }
}

/// Builds [`Headers`] from raw bytes with one UTF-8 check for the whole block when it
/// is done, instead of one per name and per value: on small-packet API traffic those
/// short checks were 5 % of the run.
#[derive(Debug, Default)]
pub struct HeadersBuilder {
    bytes: Vec<u8>,
    spans: Vec<[u32; 3]>,
}

impl HeadersBuilder {
    /// Room for `count` headers of `bytes` bytes in all.
    pub fn with_capacity(count: usize, bytes: usize) -> HeadersBuilder {
        HeadersBuilder {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(count),
        }
    }

    /// Appends a header.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        let mid = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value);
        self.spans.push([start, mid, self.bytes.len() as u32]);
    }

    /// How many headers are kept.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The headers; names and values that are not UTF-8 each are kept lossily, as
    /// [`Headers::push`] keeps them.
    pub fn finish(self) -> Headers {
        match String::from_utf8(self.bytes) {
            // Each name and value must be UTF-8 on its own, not only all of them
            // together (a character may not straddle two of them).
            Ok(text)
                if self
                    .spans
                    .iter()
                    .flatten()
                    .all(|&i| text.is_char_boundary(i as usize)) =>
            {
                Headers {
                    text,
                    spans: SmallVec::from_vec(self.spans),
                }
            }
            other => {
                let bytes = match other {
                    Ok(text) => text.into_bytes(),
                    Err(e) => e.into_bytes(),
                };
                let mut headers = Headers::with_capacity(self.spans.len(), bytes.len());
                for [a, b, c] in self.spans {
                    let (a, b, c) = (a as usize, b as usize, c as usize);
                    headers.push(&bytes[a..b], &bytes[b..c]);
                }
                headers
            }
        }
    }
}

impl Serialize for Headers {
    /// As an array of `[name, value]` pairs.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A request and its response on one connection at one vantage point.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HttpTransaction {
    /// Sequence number of the transaction within the run.
    pub id: u64,
    /// The TCP connection ([`ConnMeta::id`]).
    pub conn_id: u64,
    /// Where it was seen.
    pub vantage: VantageId,
    /// Client address and port as on the wire at that vantage point.
    pub client: SocketAddr,
    /// Server address and port.
    pub server: SocketAddr,
    /// The request; `None` for a response without one in the capture.
    pub request: Option<Request>,
    /// The final response; `None` when none was seen.
    pub response: Option<Response>,
    /// Interim (1xx) statuses received before the final response.
    pub interim: Vec<u16>,
    /// Position of the request on its connection (0 for the first).
    pub index_in_conn: u32,
    /// First sequence number of each direction of the connection (client, server).
    pub conn_seq: [Option<u32>; 2],
    /// The connection's handshake times at this vantage point.
    pub handshake: crate::tcp::Handshake,
    /// TTL of the connection's first segment from the client, and from the server.
    pub conn_ttl: [Option<u8>; 2],
    /// The connection's segments at this capture point since the previous transaction
    /// on it, up to this one's last byte (the first transaction has the handshake).
    /// Empty unless the pipeline keeps segments for diagrams
    /// (`PipelineConfig::keep_segments`).
    pub segments: Vec<crate::tcp::SegmentSummary>,
    /// The target (`host:port`) a SOCKS client asked its proxy to connect to, when
    /// the connection began with a SOCKS handshake: the destination the request
    /// meant, while `server` is the proxy.
    pub socks_target: Option<String>,
}

/// Requests awaiting their response, with the interim statuses received so far.
type Pending = VecDeque<(Request, Vec<u16>)>;

/// Per-connection HTTP state.
pub struct HttpConn {
    /// Parsers indexed by [`Dir`].
    parsers: [MessageParser; 2],
    /// Whether the SYN side turned out to be the server.
    swapped: Option<bool>,
    pending: Pending,
    upgraded: bool,
    /// Transactions emitted on this connection so far.
    emitted: u32,
    /// Whether a segment was seen in each direction (indexed by [`Dir`]).
    seen: [bool; 2],
    /// The SOCKS handshake in front of HTTP, when the connection starts with one
    /// (boxed: rare, and the connection table holds an `HttpConn` per connection).
    socks: Option<Box<socks::Handshake>>,
}

/// How long a request on a connection whose other direction was never seen holds
/// correlation back. A server ACKs received data within the delayed-ACK limit
/// (at most 500 ms, RFC 1122 4.2.3.2), so past this the replies are not in this
/// capture (a one-way capture, or replies NAT'd to other addresses at a bridge).
pub const ONE_WAY_GRACE_NS: i64 = 1_000_000_000;

/// A connection by (vantage, client, server).
pub type OneWayConn = (VantageId, SocketAddr, SocketAddr);

/// The HTTP stage: turns stream events into [`HttpTransaction`]s.
#[derive(Default)]
pub struct HttpAnalyzer {
    /// Transactions completed since the caller last drained them.
    pub completed: Vec<HttpTransaction>,
    next_id: u64,
    /// Counters (moved into the run's totals by the pipeline).
    pub stats: Stats,
    /// Anomaly samples.
    pub log: AnomalyLog,
    /// Requests waiting for their response, by first byte: (time, connection,
    /// position on it). The oldest is how far correlation may decide (a
    /// transaction reaches it only once complete).
    pending_starts: std::collections::BTreeSet<(Ts, u64, u32)>,
    /// The same, for requests on connections whose other direction was not seen yet,
    /// or whose replies had a gap (lost packets); they hold correlation back for
    /// [`ONE_WAY_GRACE_NS`] only.
    one_way_starts: std::collections::BTreeSet<(Ts, u64, u32)>,
    /// Where the connections of `one_way_starts` are, (vantage, client, server), and
    /// how many of their requests are in it.
    one_way_conns: rustc_hash::FxHashMap<u64, (OneWayConn, u32)>,
    /// Where the connections of `pending_starts` are, and how many of their requests
    /// are in it (to look a connection up in the TCP table).
    waiting_conns: rustc_hash::FxHashMap<u64, (OneWayConn, u32)>,
    /// The parser's events of one call, reused (no allocation per message).
    events: Vec<parse::Event>,
    /// Waiting requests are not tracked ([`HttpAnalyzer::without_pending_floor`]).
    no_floor: bool,
    /// Headers kept of each message ([`HttpAnalyzer::keeping_headers`]).
    kept: KeptHeaders,
}

impl HttpAnalyzer {
    /// A new analyzer.
    pub fn new() -> HttpAnalyzer {
        HttpAnalyzer::default()
    }

    /// Stops tracking the requests waiting for their response, which only
    /// [`HttpAnalyzer::pending_floor`] and the calls that settle waiting requests
    /// read: a run that writes transactions without correlating them saves an
    /// ordered-set insert and removal and two hash-map updates per request. The
    /// transactions are the same.
    pub fn without_pending_floor(mut self) -> HttpAnalyzer {
        self.no_floor = true;
        self
    }

    /// Keeps the headers `kept` says of each message (from the next connection on;
    /// all by default).
    pub fn keeping_headers(mut self, kept: KeptHeaders) -> HttpAnalyzer {
        self.kept = kept;
        self
    }

    /// The first byte of the oldest request still waiting for its response, leaving
    /// out (and counting, once each) those waiting longer than `max_age_ns` at `now`:
    /// one request that is never answered must not hold correlation back for good.
    pub fn pending_floor(&mut self, now: Ts, max_age_ns: i64) -> Option<Ts> {
        let limit = now.0.saturating_sub(max_age_ns);
        let mut floor = None;
        while let Some(&first) = self.pending_starts.first() {
            if first.0 .0 >= limit {
                floor = Some(first.0);
                break;
            }
            self.pending_starts.pop_first();
            forget(&mut self.waiting_conns, first.1);
            self.stats.http_pending_overdue += 1;
        }
        let one_way_limit = now.0.saturating_sub(ONE_WAY_GRACE_NS.min(max_age_ns));
        while let Some(&first) = self.one_way_starts.first() {
            if first.0 .0 >= one_way_limit {
                floor = Some(floor.map_or(first.0, |f: Ts| f.min(first.0)));
                break;
            }
            self.one_way_starts.pop_first();
            self.forget_one_way(first.1);
            self.stats.http_pending_one_way += 1;
        }
        floor
    }

    /// The connections with a request waiting longer than [`ONE_WAY_GRACE_NS`] while
    /// its other direction was never seen: (vantage, client, server) each, to hand
    /// back to [`HttpAnalyzer::settle_one_way`].
    pub fn overdue_one_way(&self, now: Ts) -> Vec<OneWayConn> {
        let limit = now.0.saturating_sub(ONE_WAY_GRACE_NS);
        let mut out = Vec::new();
        let mut listed = rustc_hash::FxHashSet::default();
        for &(ts, id, _) in &self.one_way_starts {
            if ts.0 >= limit {
                break;
            }
            if let Some((c, _)) = self.one_way_conns.get(&id) {
                if listed.insert(id) {
                    out.push(*c);
                }
            }
        }
        out
    }

    /// The oldest waiting requests that started before `now - ONE_WAY_GRACE_NS`
    /// (at most `n`), with their connection: to ask the TCP table whether anything
    /// was seen on it after the request ([`HttpAnalyzer::release_if_silent`]).
    pub fn waiting_past_grace(&self, now: Ts, n: usize) -> Vec<((Ts, u64, u32), OneWayConn)> {
        let limit = now.0.saturating_sub(ONE_WAY_GRACE_NS);
        self.pending_starts
            .iter()
            .take_while(|k| k.0 .0 < limit)
            .take(n)
            .filter_map(|k| Some((*k, self.waiting_conns.get(&k.1)?.0)))
            .collect()
    }

    /// Releases waiting request `key` when its connection has carried nothing since
    /// the request's last byte, not even an acknowledgement: a server acknowledges
    /// within the delayed-ACK limit (at most 500 ms, RFC 1122 4.2.3.2), so past the
    /// grace time the rest of the connection is missing from the capture (dropped
    /// packets), and the request holds correlation back no longer. A slow server that
    /// acknowledged the request keeps it waiting the full `max_request_duration`.
    pub fn release_if_silent(&mut self, key: (Ts, u64, u32), conn: &HttpConn, meta: &ConnMeta) {
        let Some(i) = key.2.checked_sub(conn.emitted) else {
            return;
        };
        let Some((req, _)) = conn.pending.get(i as usize) else {
            return;
        };
        if req.first_ts == key.0 && meta.last_ts <= req.last_ts && self.pending_starts.remove(&key)
        {
            forget(&mut self.waiting_conns, key.1);
            self.stats.http_pending_silent += 1;
        }
    }

    fn forget_one_way(&mut self, conn: u64) {
        if let Some(e) = self.one_way_conns.get_mut(&conn) {
            e.1 -= 1;
            if e.1 == 0 {
                self.one_way_conns.remove(&conn);
            }
        }
    }

    /// Emits, as unanswered, the waiting requests of a connection whose other
    /// direction is still unseen: its replies are not in this capture, and the
    /// exchange they belong to is being decided now.
    pub fn settle_one_way(&mut self, conn: &mut HttpConn, meta: &ConnMeta) {
        if conn.seen == [true, true] {
            return;
        }
        self.stats.http_pending_one_way += conn.pending.len() as u64;
        self.emit_unanswered(conn, meta);
        self.one_way_conns.remove(&meta.id);
    }

    /// Emits every request still waiting on `conn` as unanswered, oldest first.
    fn emit_unanswered(&mut self, conn: &mut HttpConn, meta: &ConnMeta) {
        let swapped = conn.swapped.unwrap_or(false);
        while let Some((req, interim)) = conn.pending.pop_front() {
            self.emit(
                meta,
                swapped,
                &mut conn.emitted,
                Some(req),
                None,
                interim,
                target(&conn.socks),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        meta: &ConnMeta,
        swapped: bool,
        index_in_conn: &mut u32,
        request: Option<Request>,
        response: Option<Response>,
        interim: Vec<u16>,
        socks_target: Option<&str>,
    ) {
        let (client, server) = if swapped {
            (meta.server, meta.client)
        } else {
            (meta.client, meta.server)
        };
        let socks_target = socks_target.map(str::to_string);
        let (conn_seq, conn_ttl) = if swapped {
            (
                [meta.first_seq[1], meta.first_seq[0]],
                [meta.first_ttl[1], meta.first_ttl[0]],
            )
        } else {
            (meta.first_seq, meta.first_ttl)
        };
        let index = *index_in_conn;
        *index_in_conn += 1;
        if let Some(r) = &request {
            let key = (r.first_ts, meta.id, index);
            if self.pending_starts.remove(&key) {
                forget(&mut self.waiting_conns, meta.id);
            } else if self.one_way_starts.remove(&key) {
                self.forget_one_way(meta.id);
            }
        }
        if request.is_some() && response.is_none() {
            self.stats.http_unanswered += 1;
        }
        if request.is_none() {
            self.stats.http_orphan_responses += 1;
        }
        self.stats.http_transactions += 1;
        self.completed.push(HttpTransaction {
            id: self.next_id,
            conn_id: meta.id,
            vantage: meta.vantage,
            client,
            server,
            request,
            response,
            interim,
            index_in_conn: index,
            conn_seq,
            conn_ttl,
            handshake: meta.handshake,
            segments: Vec::new(),
            socks_target,
        });
        self.next_id += 1;
    }

    /// Acts on `events` (drained: the vector is kept for reuse).
    fn handle(&mut self, conn: &mut HttpConn, meta: &ConnMeta, events: &mut Vec<parse::Event>) {
        let swapped = conn.swapped.unwrap_or(false);
        for ev in events.drain(..) {
            match ev {
                parse::Event::Request(req) => {
                    self.stats.http_requests += 1;
                    if conn.seen != [true, true] {
                        // The replies of this connection are not in the capture: the
                        // client sent the next request, so the earlier ones are done as
                        // far as this capture point can tell.
                        self.emit_unanswered(conn, meta);
                    }
                    if conn.pending.len() >= MAX_PENDING_REQUESTS {
                        let (old, interim) = conn.pending.pop_front().expect("non-empty");
                        self.emit(
                            meta,
                            swapped,
                            &mut conn.emitted,
                            Some(old),
                            None,
                            interim,
                            target(&conn.socks),
                        );
                    }
                    let index = conn.emitted + conn.pending.len() as u32;
                    let key = (req.first_ts, meta.id, index);
                    if self.no_floor {
                        // Never in either set: nothing later moves or removes it.
                    } else if conn.seen == [true, true] {
                        self.pending_starts.insert(key);
                        self.waiting_conns
                            .entry(meta.id)
                            .or_insert(((meta.vantage, meta.client, meta.server), 0))
                            .1 += 1;
                    } else {
                        self.one_way_starts.insert(key);
                        self.one_way_conns
                            .entry(meta.id)
                            .or_insert(((meta.vantage, meta.client, meta.server), 0))
                            .1 += 1;
                    }
                    conn.pending.push_back((req, Vec::new()));
                }
                parse::Event::RequestDone {
                    last_ts,
                    body_bytes,
                    incomplete,
                } => {
                    if let Some((req, _)) = conn.pending.back_mut() {
                        req.last_ts = last_ts;
                        req.body_bytes = body_bytes;
                        req.incomplete |= incomplete;
                    }
                }
                parse::Event::Interim(status) => {
                    self.stats.http_interim_responses += 1;
                    if let Some((_, interim)) = conn.pending.front_mut() {
                        interim.push(status);
                    }
                }
                parse::Event::Response(resp) => {
                    self.stats.http_responses += 1;
                    let upgrade = resp.status == 101;
                    let (req, interim) = match conn.pending.pop_front() {
                        Some((r, i)) => (Some(r), i),
                        None => (None, Vec::new()),
                    };
                    let connect_ok = req.as_ref().is_some_and(|r| r.method == "CONNECT")
                        && (200..300).contains(&resp.status);
                    self.emit(
                        meta,
                        swapped,
                        &mut conn.emitted,
                        req,
                        Some(resp),
                        interim,
                        target(&conn.socks),
                    );
                    if upgrade || connect_ok {
                        self.stats.http_upgrades += 1;
                        conn.upgraded = true;
                        for p in &mut conn.parsers {
                            p.stop();
                        }
                    }
                }
            }
        }
    }
}

impl StreamSink for HttpAnalyzer {
    type Conn = HttpConn;

    /// The parsers' buffers, the SOCKS handshake, and the requests waiting for
    /// their response (each with its method, URI and headers).
    fn heap_bytes(&self, conn: &HttpConn) -> usize {
        let parsers: usize = conn.parsers.iter().map(MessageParser::heap_bytes).sum();
        let waiting: usize = conn
            .pending
            .iter()
            .map(|(r, v)| {
                word_heap(&r.method) + r.uri.capacity() + r.headers.heap_bytes() + v.capacity() * 2
            })
            .sum();
        parsers
            + waiting
            + conn.pending.capacity() * std::mem::size_of::<(Request, Vec<u16>)>()
            + conn
                .socks
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<socks::Handshake>())
    }

    fn open(&mut self, meta: &ConnMeta) -> HttpConn {
        HttpConn {
            parsers: [
                MessageParser::new(Role::Request, self.kept),
                MessageParser::new(Role::Response, self.kept),
            ],
            swapped: None,
            pending: VecDeque::new(),
            upgraded: false,
            emitted: 0,
            seen: meta.first_seq.map(|s| s.is_some()),
            socks: None,
        }
    }

    fn direction_seen(&mut self, conn: &mut HttpConn, meta: &ConnMeta, dir: Dir, _ts: Ts) {
        conn.seen[dir as usize] = true;
        if conn.seen != [true, true] {
            return;
        }
        // Both sides are visible now: its waiting requests wait the full time.
        for (i, (req, _)) in conn.pending.iter().enumerate() {
            let key = (req.first_ts, meta.id, conn.emitted + i as u32);
            if self.one_way_starts.remove(&key) {
                self.pending_starts.insert(key);
                self.waiting_conns
                    .entry(meta.id)
                    .or_insert(((meta.vantage, meta.client, meta.server), 0))
                    .1 += 1;
            }
        }
        self.one_way_conns.remove(&meta.id);
    }

    fn data(
        &mut self,
        conn: &mut HttpConn,
        meta: &ConnMeta,
        dir: Dir,
        ts: Ts,
        data: &[u8],
        pos: StreamPos,
    ) -> bool {
        // Only the parsers log, and only from here: the tag names the connection.
        self.log.tag = meta.id;
        if conn.upgraded {
            return false;
        }
        let (data, pos) = match self.through_socks(conn, dir, ts, data, pos) {
            SocksGate::Http(data, pos) => (data, pos),
            SocksGate::Hold => return true,
            SocksGate::Stop => return false,
        };
        if conn.swapped.is_none() {
            // The first bytes decide which side speaks requests.
            let looks_like_response = data.starts_with(b"HTTP/");
            let swapped = match dir {
                Dir::ToServer => looks_like_response,
                Dir::ToClient => !looks_like_response && parse::looks_like_request(data),
            };
            if swapped {
                conn.parsers.swap(0, 1);
            }
            conn.swapped = Some(swapped);
        }
        let parser = &mut conn.parsers[dir as usize];
        let mut events = std::mem::take(&mut self.events);
        let keep = parser.data(
            ts,
            data,
            pos,
            &conn.pending,
            &mut self.stats,
            &mut self.log,
            &mut events,
        );
        if !events.is_empty() {
            self.handle(conn, meta, &mut events);
        }
        self.events = events;
        keep && !conn.upgraded
    }

    fn gap(&mut self, conn: &mut HttpConn, meta: &ConnMeta, dir: Dir, ts: Ts, len: u64) {
        if let Some(h) = conn.socks.as_mut() {
            // A handshake cut by a gap cannot be followed; HTTP resynchronises after.
            h.sides[dir as usize].give_up();
        }
        let mut events = Vec::new();
        conn.parsers[dir as usize].gap(ts, len, &conn.pending, &mut self.stats, &mut events);
        if !events.is_empty() {
            self.handle(conn, meta, &mut events);
        }
        let reply_dir = if conn.swapped.unwrap_or(false) {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        if dir == reply_dir {
            // Replies went missing from this capture (dropped packets): the responses
            // of the requests still waiting may be among them, so they hold
            // correlation back for the grace time only, not for the whole
            // `max_request_duration` (a lossy live capture otherwise holds every path
            // back that long).
            for (i, (req, _)) in conn.pending.iter().enumerate() {
                let key = (req.first_ts, meta.id, conn.emitted + i as u32);
                if self.pending_starts.remove(&key) {
                    forget(&mut self.waiting_conns, meta.id);
                    self.one_way_starts.insert(key);
                    self.one_way_conns
                        .entry(meta.id)
                        .or_insert(((meta.vantage, meta.client, meta.server), 0))
                        .1 += 1;
                }
            }
        }
    }

    fn end(&mut self, conn: &mut HttpConn, meta: &ConnMeta, dir: Dir, ts: Ts, how: End) {
        let mut events = Vec::new();
        conn.parsers[dir as usize].end(ts, &mut self.stats, &mut events);
        if how == End::Rst {
            conn.parsers[dir.flip() as usize].end(ts, &mut self.stats, &mut events);
        }
        if !events.is_empty() {
            self.handle(conn, meta, &mut events);
        }
    }

    fn close(&mut self, mut conn: HttpConn, meta: &ConnMeta, ts: Ts) {
        let mut events = Vec::new();
        for p in &mut conn.parsers {
            p.end(ts, &mut self.stats, &mut events);
        }
        if !events.is_empty() {
            self.handle(&mut conn, meta, &mut events);
        }
        self.emit_unanswered(&mut conn, meta);
    }
}

/// What a direction's bytes are with respect to a SOCKS handshake.
enum SocksGate<'d> {
    /// HTTP bytes (after the handshake, or no handshake), starting at this position.
    Http(&'d [u8], StreamPos),
    /// All handshake: nothing for HTTP yet.
    Hold,
    /// The handshake failed: no HTTP on this connection.
    Stop,
}

impl HttpAnalyzer {
    /// Lets a SOCKS handshake at the start of a connection through: detects it in
    /// the client's first bytes, consumes each direction's part of it, and passes
    /// on what follows.
    fn through_socks<'d>(
        &mut self,
        conn: &mut HttpConn,
        dir: Dir,
        ts: Ts,
        data: &'d [u8],
        pos: StreamPos,
    ) -> SocksGate<'d> {
        if conn.socks.is_none() {
            if conn.swapped.is_some() || dir != Dir::ToServer || !socks::starts_handshake(data) {
                return SocksGate::Http(data, pos);
            }
            self.stats.socks_handshakes += 1;
            conn.socks = Some(Box::new(socks::Handshake::new(data[0])));
            conn.swapped = Some(false);
        }
        let Some(h) = conn.socks.as_mut() else {
            return SocksGate::Http(data, pos);
        };
        let version = h.version;
        let side = &mut h.sides[dir as usize];
        if side.done {
            return SocksGate::Http(data, pos);
        }
        let fed = match dir {
            Dir::ToServer => side.feed(data, socks::client),
            Dir::ToClient => side.feed(data, |b| socks::server(version, b)),
        };
        match fed {
            socks::Fed::Consumed => SocksGate::Hold,
            socks::Fed::Rest(used, target) => {
                if target.is_some() {
                    h.target = target;
                }
                let rest = &data[used..];
                if rest.is_empty() {
                    return SocksGate::Hold;
                }
                let pos = StreamPos {
                    seq: pos.seq.wrapping_add(used as u32),
                    ack: pos.ack,
                };
                SocksGate::Http(rest, pos)
            }
            socks::Fed::Refused(why) => {
                self.stats.socks_refused += 1;
                self.log
                    .push("socks_refused", ts, || format!("SOCKS {version}: {why}"));
                for s in &mut h.sides {
                    s.give_up();
                }
                for p in &mut conn.parsers {
                    p.stop();
                }
                SocksGate::Stop
            }
        }
    }
}

/// The SOCKS target of a connection, if it began with a SOCKS handshake.
fn target(socks: &Option<Box<socks::Handshake>>) -> Option<&str> {
    socks.as_ref().and_then(|s| s.target.as_deref())
}

/// One request fewer waiting on connection `conn`.
fn forget(map: &mut rustc_hash::FxHashMap<u64, (OneWayConn, u32)>, conn: u64) {
    if let Some(e) = map.get_mut(&conn) {
        e.1 -= 1;
        if e.1 == 0 {
            map.remove(&conn);
        }
    }
}

#[cfg(test)]
mod tests;
