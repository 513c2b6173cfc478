//! Records an agent publishes from one host and a collector merges from all of them
//! (`flowtrace agent` / `flowtrace collect`, docs/live.md): the agent runs decode,
//! TCP and HTTP locally and sends only what correlation needs; the collector feeds
//! the streaming [`Engine`] with it as `flowtrace pcap --paths` feeds it from files.
//!
//! **What is sent.** One [`Envelope`] per batch of the agent's pipeline (what
//! `src/cli/stream.rs` hands its correlation thread): the exchanges completed since
//! the last one ([`ExchangeRec`]: addresses and ports as seen, the request's TCP
//! sequence/acknowledgement anchor, times, method, URI, status, and header values
//! only as 64-bit hashes with the body sizes), capture points first seen, the VRRP
//! runs when they changed, gratuitous ARPs, the names of header hashes the first time
//! each is used, and the two times the engine's floor needs (the newest packet, the
//! oldest request still waiting). Raw payloads never leave the host; segment
//! summaries (for ladders and swimlanes) only for a bounded selection of exchanges
//! ([`SegmentPolicy`]). The agent's wall clock at sending is a clock sample: the
//! collector measures each host's delay with it.
//!
//! **Encoding.** [postcard](https://docs.rs/postcard): serde-driven, no field names,
//! varint integers. Hashes are sent as 8 raw bytes (a varint of a random 64-bit value
//! takes 10) and an exchange's later times as differences from its request's first
//! byte (small varints). JSON would spell each hash as 20 decimal digits and every
//! field name, several times the 1 KB a request may cost on the wire. Every envelope
//! starts with [`RECORD_VERSION`] (a varint), followed by the record deflated
//! ([`encode`]); a collector refuses versions it does not know
//! ([`RemoteError::Version`]) rather than misreading them.
//!
//! **Merging.** [`Merger`] holds each host's envelopes and releases them in time
//! order behind a watermark (the oldest host's newest packet time), so the engine sees
//! the hosts' exchanges interleaved as one capture of both would give them. A host
//! silent for longer than the allowed lag stops holding the others back and is
//! reported late; a host whose agent ended (`--read` reached the end) no longer holds
//! anyone. Decoding never panics on bad input: a record that does not decode is an
//! error for that message only.

use crate::correlate::record::{Msg, NameBook, Pair, RespMsg, ViewIn};
use crate::correlate::{AgentClock, Context, Engine, RequestPath, Tail};
use crate::http::HttpTransaction;
use crate::links::HostLinks;
use crate::pipeline::{GratuitousArp, Pipeline, Vantage, VrrpRun};
use crate::tcp::{SegmentSummary, StreamPos};
use crate::time::Ts;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// Version of the record layout; bumped on any change of [`Envelope`] or what it holds.
pub const RECORD_VERSION: u16 = 2;

/// Largest envelope a collector decodes (an agent's batch is far smaller; this bounds
/// what a hostile publisher can make a collector allocate per message).
pub const MAX_ENVELOPE_BYTES: usize = 8 << 20;

/// Why a record could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The bytes are not an envelope (cut short, corrupted, or not flowtrace's).
    #[error("not a flowtrace record ({len} bytes): {detail}")]
    Decode {
        /// Length of the message.
        len: usize,
        /// What postcard said.
        detail: String,
    },
    /// An envelope of a layout this collector does not know.
    #[error("record version {found}, this flowtrace reads version {RECORD_VERSION}: run the same flowtrace version on agents and collector")]
    Version {
        /// The version in the message.
        found: u16,
    },
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    #[error("record of {len} bytes, more than the {MAX_ENVELOPE_BYTES} a collector reads")]
    TooLarge {
        /// Length of the message.
        len: usize,
    },
    /// Could not be encoded (never expected: every field is encodable).
    #[error("cannot encode a record: {0}")]
    Encode(String),
}

/// A 64-bit hash, sent as 8 raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H64(pub u64);

impl Serialize for H64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.to_le_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for H64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<H64, D::Error> {
        Ok(H64(u64::from_le_bytes(<[u8; 8]>::deserialize(d)?)))
    }
}

/// One message of an agent: a batch of its pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`RECORD_VERSION`].
    pub version: u16,
    /// The host the agent runs on (`--host`).
    pub host: String,
    /// The agent's run: envelopes of one run are numbered from 0; a restarted agent
    /// starts a new run (a replayed file keeps its run, so its re-sends are the same
    /// messages and JetStream drops them as duplicates).
    pub run: u64,
    /// Number of this envelope within its run.
    pub seq: u64,
    /// The agent's wall clock when it sent this (ns since the epoch): a clock sample.
    pub sent_wall: i64,
    /// The newest packet time on this host (live, with no traffic: the wall clock).
    pub now: i64,
    /// The first byte of the oldest request still waiting for its response here.
    pub pending: Option<i64>,
    /// The agent's input ended: nothing follows from this run.
    pub last: bool,
    /// What changed since the previous envelope.
    pub items: Vec<Item>,
}

/// One piece of an envelope.
// Exchanges are most of the items: boxing them would cost an allocation each for
// the rare, small others.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// The host's interfaces and addresses (first envelope of a run).
    Hello(Hello),
    /// A capture point first seen.
    Vantage(VantageRec),
    /// Names of header hashes used from here on (each sent once per run).
    HeaderNames(Vec<(H64, String)>),
    /// VRRP advert runs of the host that are new or changed: (index of the run
    /// among the host's runs, the run).
    Vrrp(Vec<(u32, VrrpRec)>),
    /// A gratuitous ARP.
    Garp(GarpRec),
    /// A completed exchange.
    Exchange(ExchangeRec),
    /// Envelopes the agent could not keep while the server was unreachable (its
    /// bounded buffer was full), so far in this run.
    Dropped(u64),
}

/// The host an agent runs on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// flowtrace's version on the agent.
    pub agent_version: String,
    /// Its interfaces with their addresses (names the VRRP holder and the hosts that
    /// own a client address).
    pub links: HostLinks,
}

/// A capture point of the agent's host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VantageRec {
    /// The agent's id of it (what [`ExchangeRec::vantage`] names).
    pub id: u32,
    /// Interface name.
    pub interface: String,
    /// SLL2 interface index, when the capture has one.
    pub ifindex: Option<u32>,
}

/// A VRRP advert run ([`VrrpRun`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VrrpRec {
    /// Virtual router id.
    pub vrid: u8,
    /// Sender.
    pub source: IpAddr,
    /// Priority.
    pub priority: u8,
    /// Virtual addresses.
    pub addresses: Vec<IpAddr>,
    /// First advert (ns).
    pub first_ts: i64,
    /// Last advert (ns).
    pub last_ts: i64,
    /// Adverts in the run.
    pub adverts: u64,
}

/// A gratuitous ARP ([`GratuitousArp`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GarpRec {
    /// When (ns).
    pub ts: i64,
    /// The agent's capture point.
    pub vantage: u32,
    /// The address announced.
    pub ip: IpAddr,
    /// The MAC claiming it.
    pub mac: String,
}

/// A header as evidence: its name's hash, its (name, value) hash, whether it is the
/// first of its name in the message.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRec(pub H64, pub H64, pub bool);

/// The response side of [`MsgRec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RespRec {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body_bytes: u64,
    /// Headers as evidence.
    pub pairs: Vec<PairRec>,
    /// Socket addresses named in header values, with their header.
    pub addrs: Vec<(PairRec, SocketAddr)>,
    /// `Backend-Server` present.
    pub backend_server: bool,
    /// `Server` value (cut at 256 bytes).
    pub server: Option<String>,
    /// Kong's headers present.
    pub kong: bool,
    /// A header saying a proxy forwarded it.
    pub says_forwarded: bool,
}

/// The HTTP content of an exchange as correlation weighs it: what the engine keeps of
/// a transaction's headers (hashes), computed on the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MsgRec {
    /// Hash of the whole message (views with equal digests share their content).
    pub digest: H64,
    /// Method (cut at 64 bytes).
    pub method: String,
    /// Request target (cut at 2 KiB).
    pub uri: String,
    /// Hash of the whole URI.
    pub uri_hash: H64,
    /// Request headers as evidence.
    pub req_pairs: Vec<PairRec>,
    /// `X-Forwarded-For` addresses.
    pub xff: Option<Vec<IpAddr>>,
    /// `X-Real-IP`.
    pub real_ip: Option<Option<IpAddr>>,
    /// The response.
    pub resp: Option<RespRec>,
}

/// A TCP segment's summary, for the ladder and swimlanes of selected exchanges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentRec {
    /// Time, ns after the exchange's request started (negative: before, e.g. the SYN).
    pub dt: i64,
    /// Source MAC.
    pub src_mac: Option<[u8; 6]>,
    /// Destination MAC.
    pub dst_mac: Option<[u8; 6]>,
    /// Source.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// TCP flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Payload length.
    pub len: u32,
    /// First line of an HTTP message it starts.
    pub first_line: Option<String>,
}

/// One exchange at one capture point of the agent's host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRec {
    /// The agent's transaction id.
    pub id: u64,
    /// The agent's capture point ([`VantageRec::id`]).
    pub vantage: u32,
    /// Client address and port as seen there.
    pub client: SocketAddr,
    /// Server address and port as seen there.
    pub server: SocketAddr,
    /// First byte of the request (ns since the epoch).
    pub req_first: i64,
    /// Last byte of the request, ns after its first.
    pub req_len_ns: i64,
    /// The request's first byte on the wire: TCP (sequence, acknowledgement), which
    /// NAT leaves alone: what joins the views of one exchange across hosts.
    pub wire_pos: Option<(u32, u32)>,
    /// The response's first and last byte, ns after the request's first byte.
    pub resp: Option<(i64, i64)>,
    /// The connection's SYN, ns after the request's first byte (negative).
    pub syn: Option<i64>,
    /// Position of the request on its connection.
    pub index_in_conn: u32,
    /// First sequence number of each direction of the connection.
    pub conn_seq: [Option<u32>; 2],
    /// TTL of the client's first segment.
    pub ttl: Option<u8>,
    /// The HTTP content; `None` when an earlier exchange of the same envelope had
    /// the same content ([`MsgRec::digest`] equal to [`ExchangeRec::digest`]): the
    /// views of one request at several capture points of a host share it.
    pub msg: Option<MsgRec>,
    /// The content's digest.
    pub digest: H64,
    /// Segment summaries (only for exchanges the agent's [`SegmentPolicy`] selects).
    pub segments: Vec<SegmentRec>,
}

fn pair_rec(p: &Pair) -> PairRec {
    PairRec(H64(p.name), H64(p.pair), p.first)
}

fn pair_of(p: &PairRec) -> Pair {
    Pair {
        name: p.0 .0,
        pair: p.1 .0,
        first: p.2,
    }
}

impl MsgRec {
    fn of(m: &Msg) -> MsgRec {
        MsgRec {
            digest: H64(m.digest),
            method: m.method.to_string(),
            uri: m.uri.to_string(),
            uri_hash: H64(m.uri_hash),
            req_pairs: m.req_pairs.iter().map(pair_rec).collect(),
            xff: m.xff.as_ref().map(|x| x.to_vec()),
            real_ip: m.real_ip,
            resp: m.resp.as_ref().map(|r| RespRec {
                status: r.status,
                body_bytes: r.body_bytes,
                pairs: r.pairs.iter().map(pair_rec).collect(),
                addrs: r.addrs.iter().map(|(p, a)| (pair_rec(p), *a)).collect(),
                backend_server: r.backend_server,
                server: r.server.as_ref().map(|s| s.to_string()),
                kong: r.kong,
                says_forwarded: r.says_forwarded,
            }),
        }
    }

    /// The engine's message. Header names come separately
    /// ([`Engine::learn_header_names`]), so `_names` is not written here.
    pub(crate) fn into_msg(self, _names: &mut NameBook) -> Msg {
        Msg {
            digest: self.digest.0,
            has_request: true,
            method: self.method.into(),
            uri: self.uri.into(),
            uri_hash: self.uri_hash.0,
            req_pairs: self.req_pairs.iter().map(pair_of).collect(),
            xff: self.xff.map(Vec::into_boxed_slice),
            real_ip: self.real_ip,
            resp: self.resp.map(|r| RespMsg {
                status: r.status,
                body_bytes: r.body_bytes,
                pairs: r.pairs.iter().map(pair_of).collect(),
                addrs: r.addrs.iter().map(|(p, a)| (pair_of(p), *a)).collect(),
                backend_server: r.backend_server,
                server: r.server.map(Into::into),
                kong: r.kong,
                says_forwarded: r.says_forwarded,
            }),
        }
    }
}

impl ExchangeRec {
    /// The record of `t` (`None` without a request: correlation has no use for it);
    /// header names first used go into `names`.
    fn of(t: &HttpTransaction, names: &mut NameBook, keep_segments: bool) -> Option<ExchangeRec> {
        let v = ViewIn::of(t)?;
        let msg = Msg::from_transaction(t, names);
        let base = v.req_first.0;
        let segments = if keep_segments {
            t.segments
                .iter()
                .take(MAX_SEGMENTS_SENT)
                .map(|s| SegmentRec {
                    dt: s.ts.0 - base,
                    src_mac: s.src_mac,
                    dst_mac: s.dst_mac,
                    src: s.src,
                    dst: s.dst,
                    flags: s.flags,
                    seq: s.seq,
                    ack: s.ack,
                    len: s.len,
                    first_line: s.first_line.as_ref().map(|l| l.to_string()),
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(ExchangeRec {
            id: v.tx,
            vantage: v.vantage as u32,
            client: v.client,
            server: v.server,
            req_first: base,
            req_len_ns: v.req_last.0 - base,
            wire_pos: v.wire_pos.map(|p| (p.seq, p.ack)),
            resp: v.resp.map(|(a, b)| (a.0 - base, b.0 - base)),
            syn: v.syn.map(|s| s.0 - base),
            index_in_conn: v.index_in_conn,
            conn_seq: v.conn_seq,
            ttl: v.ttl,
            msg: Some(MsgRec::of(&msg)),
            digest: H64(msg.digest),
            segments,
        })
    }

    /// The engine's view fields, message and segments, at the collector's capture
    /// point `vantage`.
    pub(crate) fn into_parts(
        self,
        vantage: usize,
    ) -> (ViewIn, Option<MsgRec>, Vec<SegmentSummary>) {
        let base = self.req_first;
        let at = |d: i64| Ts(base.saturating_add(d));
        let segments = self
            .segments
            .into_iter()
            .map(|s| SegmentSummary {
                ts: at(s.dt),
                vantage: vantage as crate::tcp::VantageId,
                src_mac: s.src_mac,
                dst_mac: s.dst_mac,
                src: s.src,
                dst: s.dst,
                flags: s.flags,
                seq: s.seq,
                ack: s.ack,
                len: s.len,
                first_line: s.first_line.map(Into::into),
            })
            .collect();
        let v = ViewIn {
            tx: self.id,
            vantage,
            client: self.client,
            server: self.server,
            req_first: Ts(base),
            req_last: at(self.req_len_ns),
            wire_pos: self.wire_pos.map(|(seq, ack)| StreamPos { seq, ack }),
            resp: self.resp.map(|(a, b)| (at(a), at(b))),
            syn: self.syn.map(at),
            index_in_conn: self.index_in_conn,
            conn_seq: self.conn_seq,
            ttl: self.ttl,
        };
        (v, self.msg, segments)
    }
}

/// Most segment summaries sent with one exchange.
pub const MAX_SEGMENTS_SENT: usize = 64;

/// Which exchanges an agent sends segment summaries for (the collector draws
/// ladders and swimlanes only for those).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentPolicy {
    /// None.
    None,
    /// Failed (no response, or 5xx), slow (a response after more than 1 s), and one
    /// exchange in 64.
    Selected,
    /// Every exchange (at most [`MAX_SEGMENTS_SENT`] segments each).
    All,
}

impl SegmentPolicy {
    fn wants(self, t: &HttpTransaction) -> bool {
        match self {
            SegmentPolicy::None => false,
            SegmentPolicy::All => true,
            SegmentPolicy::Selected => {
                let slow_or_failed = match (&t.request, &t.response) {
                    (Some(q), Some(r)) => r.status >= 500 || r.first_ts.0 - q.first_ts.0 > SLOW_NS,
                    _ => true,
                };
                slow_or_failed || t.id.is_multiple_of(64)
            }
        }
    }
}

/// An exchange slower than this (request to response) is "slow" for
/// [`SegmentPolicy::Selected`].
const SLOW_NS: i64 = 1_000_000_000;

/// Encodes an envelope: its version, then the postcard record compressed with
/// deflate (flate2, already used for `.pcap.gz`). Compression pays because one
/// request is seen at several capture points of a host and its views repeat the same
/// method, URI and header hashes: on the failover scenario's two hosts a request cost
/// 1,737 bytes uncompressed and 387 compressed at the default level (`tests/remote.rs`).
/// The level is the fastest: replaying the lab's 30 s at its maximum rate (server A's
/// 1.1 M packets, 36,291 requests) the agent took 2.4 s of CPU instead of 3.0 to 4.0
/// (deflate was a quarter of it), for 15 % more bytes (14.8 MB instead of 12.9).
pub fn encode(env: &Envelope) -> Result<Vec<u8>, RemoteError> {
    use std::io::Write;
    let fail = |e: &dyn std::fmt::Display| RemoteError::Encode(e.to_string());
    let raw = postcard::to_stdvec(env).map_err(|e| fail(&e))?;
    // The envelope's own version goes first (a test writes another one).
    let version = postcard::to_stdvec(&env.version).map_err(|e| fail(&e))?;
    let mut z = flate2::write::DeflateEncoder::new(version, flate2::Compression::fast());
    z.write_all(&raw).map_err(|e| fail(&e))?;
    z.finish().map_err(|e| fail(&e))
}

/// Inflates `compressed` (at most [`MAX_ENVELOPE_BYTES`] out: a small hostile message
/// cannot make the collector allocate more); the bytes after the deflate stream's end
/// are an error, as is a stream that does not end.
fn inflate(compressed: &[u8], len: usize) -> Result<Vec<u8>, RemoteError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let decode_err = |detail: String| RemoteError::Decode { len, detail };
    let mut d = Decompress::new(false);
    let mut raw: Vec<u8> = Vec::with_capacity((compressed.len() * 4).min(MAX_ENVELOPE_BYTES));
    loop {
        if raw.len() == raw.capacity() {
            if raw.len() > MAX_ENVELOPE_BYTES {
                return Err(RemoteError::TooLarge { len: raw.len() });
            }
            // Doubling, up to one byte past the limit (which is then refused).
            raw.reserve(raw.len().max(4096).min(MAX_ENVELOPE_BYTES + 1 - raw.len()));
        }
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let input = &compressed[before_in as usize..];
        let status = d
            .decompress_vec(input, &mut raw, FlushDecompress::None)
            .map_err(|e| decode_err(format!("bad compression: {e}")))?;
        if status == Status::StreamEnd {
            break;
        }
        if d.total_in() == before_in && d.total_out() == before_out && raw.len() < raw.capacity() {
            return Err(decode_err("cut short".into()));
        }
    }
    let rest = compressed.len() - d.total_in() as usize;
    if rest > 0 {
        return Err(decode_err(format!("{rest} bytes after the record")));
    }
    Ok(raw)
}

/// Decodes an envelope, checking its version first.
pub fn decode(bytes: &[u8]) -> Result<Envelope, RemoteError> {
    let len = bytes.len();
    if len > MAX_ENVELOPE_BYTES {
        return Err(RemoteError::TooLarge { len });
    }
    let err = |e: postcard::Error| RemoteError::Decode {
        len,
        detail: e.to_string(),
    };
    let (version, compressed) = postcard::take_from_bytes::<u16>(bytes).map_err(err)?;
    if version != RECORD_VERSION {
        return Err(RemoteError::Version { found: version });
    }
    let raw = inflate(compressed, len)?;
    let (env, rest) = postcard::take_from_bytes::<Envelope>(&raw).map_err(err)?;
    if !rest.is_empty() || env.version != RECORD_VERSION {
        return Err(RemoteError::Decode {
            len,
            detail: format!(
                "{} bytes after the record inside, version {} inside",
                rest.len(),
                env.version
            ),
        });
    }
    Ok(env)
}

/// The agent's side: turns what its pipeline completed into envelopes (the same cut
/// as `src/cli/stream.rs`'s batches).
pub struct AgentBatcher {
    host: String,
    run: u64,
    seq: u64,
    hello: Option<Hello>,
    names: NameBook,
    vantages_sent: usize,
    garp_sent: usize,
    /// Each run's advert count as last sent.
    vrrp_sent: Vec<u64>,
    max_wait: i64,
    segments: SegmentPolicy,
    dropped_reported: u64,
}

impl AgentBatcher {
    /// A batcher for `host`'s run `run`, with its interfaces; `max_wait` is how long a
    /// request may wait for its response and still hold back the floor.
    pub fn new(
        host: &str,
        run: u64,
        links: HostLinks,
        max_wait: i64,
        segments: SegmentPolicy,
    ) -> AgentBatcher {
        AgentBatcher {
            host: host.to_string(),
            run,
            seq: 0,
            hello: Some(Hello {
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                links,
            }),
            names: NameBook::tracking(),
            vantages_sent: 0,
            garp_sent: 0,
            vrrp_sent: Vec::new(),
            max_wait,
            segments,
            dropped_reported: 0,
        }
    }

    /// The next envelope: what `p` completed and what changed since the last one.
    /// `now` is the newest packet time (live, with no traffic: the wall clock),
    /// `wall` the wall clock, `dropped` the envelopes dropped so far in this run.
    pub fn envelope(
        &mut self,
        p: &mut Pipeline,
        now: Ts,
        wall: Ts,
        last: bool,
        dropped: u64,
    ) -> Envelope {
        let pending = p.pending_floor(now, self.max_wait);
        let mut items = Vec::new();
        if let Some(h) = self.hello.take() {
            items.push(Item::Hello(h));
        }
        for (i, v) in p.vantages()[self.vantages_sent..].iter().enumerate() {
            items.push(Item::Vantage(VantageRec {
                id: (self.vantages_sent + i) as u32,
                interface: v.interface.clone(),
                ifindex: v.ifindex,
            }));
        }
        self.vantages_sent = p.vantages().len();
        let mut changed = Vec::new();
        for (i, r) in p.vrrp().iter().enumerate() {
            if self.vrrp_sent.get(i) == Some(&r.adverts) {
                continue;
            }
            if self.vrrp_sent.len() <= i {
                self.vrrp_sent.resize(i + 1, 0);
            }
            self.vrrp_sent[i] = r.adverts;
            changed.push((
                i as u32,
                VrrpRec {
                    vrid: r.vrid,
                    source: r.source,
                    priority: r.priority,
                    addresses: r.addresses.clone(),
                    first_ts: r.first_ts.0,
                    last_ts: r.last_ts.0,
                    adverts: r.adverts,
                },
            ));
        }
        if !changed.is_empty() {
            items.push(Item::Vrrp(changed));
        }
        for g in &p.gratuitous_arps()[self.garp_sent..] {
            items.push(Item::Garp(GarpRec {
                ts: g.ts.0,
                vantage: g.vantage,
                ip: g.ip,
                mac: g.mac.clone(),
            }));
        }
        self.garp_sent = p.gratuitous_arps().len();
        let mut exchanges = Vec::new();
        let mut digests: Vec<u64> = Vec::new();
        for t in p.drain() {
            let keep = self.segments.wants(&t);
            if let Some(mut x) = ExchangeRec::of(&t, &mut self.names, keep) {
                if digests.contains(&x.digest.0) {
                    x.msg = None;
                } else if digests.len() < 4096 {
                    digests.push(x.digest.0);
                }
                exchanges.push(Item::Exchange(x));
            }
        }
        // Names before the exchanges that use them.
        let fresh = self.names.take_fresh();
        if !fresh.is_empty() {
            items.push(Item::HeaderNames(
                fresh.into_iter().map(|(h, n)| (H64(h), n)).collect(),
            ));
        }
        items.extend(exchanges);
        if dropped != self.dropped_reported {
            self.dropped_reported = dropped;
            items.push(Item::Dropped(dropped));
        }
        let env = Envelope {
            version: RECORD_VERSION,
            host: self.host.clone(),
            run: self.run,
            seq: self.seq,
            sent_wall: wall.0,
            now: now.0,
            pending: pending.map(|t| t.0),
            last,
            items,
        };
        self.seq += 1;
        env
    }
}

/// Frames between two envelopes when replaying a file (as `flowtrace pcap --paths`
/// batches them).
pub const FRAMES_PER_ENVELOPE: u64 = 1024;

/// Replays capture `path` as an agent would have captured it live: every
/// [`FRAMES_PER_ENVELOPE`] frames an envelope goes to `send`, the last one marked
/// `last`. Stops early (without error) when `send` returns false. Returns the
/// counters of the run.
pub fn read_capture(
    path: &std::path::Path,
    batcher: &mut AgentBatcher,
    config: crate::pipeline::PipelineConfig,
    mut send: impl FnMut(Envelope) -> bool,
) -> Result<crate::anomaly::Stats, crate::error::CaptureError> {
    let mut source = crate::capture::FileSource::open(&[path])?;
    let mut pipeline = Pipeline::new(config);
    let mut stats = crate::anomaly::Stats::default();
    let mut frames: u64 = 0;
    let mut now = Ts(i64::MIN);
    let wall = || {
        Ts(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64))
    };
    loop {
        match source.next_frame(&mut stats)? {
            Some((frame, interfaces)) => {
                pipeline.push(&frame, interfaces);
                now = now.max(frame.ts);
                frames += 1;
                if frames.is_multiple_of(FRAMES_PER_ENVELOPE)
                    && !send(batcher.envelope(&mut pipeline, now, wall(), false, 0))
                {
                    break;
                }
            }
            None => {
                pipeline.finish();
                send(batcher.envelope(&mut pipeline, now, wall(), true, 0));
                break;
            }
        }
    }
    let mut all = pipeline.stats();
    all.merge(&stats);
    Ok(all)
}

/// The message id of an envelope (JetStream's `Nats-Msg-Id`: a re-send of the same
/// envelope within the stream's duplicate window is dropped by the server).
pub fn message_id(env: &Envelope) -> String {
    format!("{}.{:x}.{}", env.host, env.run, env.seq)
}

/// What the merger counted.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct MergeStats {
    /// Envelopes taken.
    pub envelopes: u64,
    /// Envelopes already taken (a redelivery), skipped.
    pub duplicates: u64,
    /// Envelopes missing in a run's numbering (dropped by the agent or lost).
    pub missing: u64,
    /// Envelopes from a host the collector was not started with, skipped.
    pub unknown_host: u64,
    /// Exchanges fed to the engine.
    pub exchanges: u64,
    /// Envelopes whose newest packet was already behind the watermark when they
    /// arrived (their host was late).
    pub late_envelopes: u64,
    /// Envelopes the agents reported dropping (their buffers were full).
    pub agent_dropped: u64,
}

/// A host's feed in the merger.
struct HostFeed {
    name: String,
    queue: VecDeque<Envelope>,
    /// Wall clock (ns) of each queued envelope's arrival (for [`DelayProbe`]).
    arrived: VecDeque<i64>,
    /// Newest packet time of its latest envelope.
    now: Ts,
    /// The pending floor of its latest envelope.
    pending: Option<Ts>,
    /// Wall clock (ns) of its latest envelope's arrival.
    arrival: i64,
    /// Its agent's input ended (and no newer run started).
    finished: bool,
    late: bool,
    /// Next envelope number expected per run.
    runs: FxHashMap<u64, u64>,
    /// (run, agent vantage) to the collector's capture point.
    vantage_map: FxHashMap<(u64, u32), usize>,
    vrrp: Vec<VrrpRun>,
    dropped: FxHashMap<u64, u64>,
    clock: ClockSamples,
}

/// A host's clock samples: the agent's wall clock at sending against the
/// reference clock's at arrival (ns; the NATS server's time of storing it).
#[derive(Clone, Copy, Default)]
struct ClockSamples {
    /// Samples taken.
    n: u64,
    /// The largest `sent - arrival`: the agent's offset less the least delay.
    best: i64,
    /// The latest `sent - arrival`.
    last: i64,
    /// Changed since the engine was told.
    changed: bool,
}

impl ClockSamples {
    fn take(&mut self, sent: i64, arrival: i64) {
        let s = sent.saturating_sub(arrival);
        if self.n == 0 || s > self.best {
            self.best = s;
            self.changed = true;
        }
        self.last = s;
        self.n += 1;
    }

    fn agent_clock(&self) -> Option<AgentClock> {
        (self.n > 0).then(|| AgentClock {
            offset_s: self.best as f64 / 1e9,
            samples: self.n,
            delay_spread_s: self.best.saturating_sub(self.last) as f64 / 1e9,
        })
    }
}

/// An envelope is a clock sample of its host's packet times only when they follow
/// the agent's wall clock: live, its newest packet is at most this far (ns) from its
/// sending (a batch every 100 ms, the wall clock when idle); a replayed file's packet
/// times are those of the capture, not of the agent's clock now.
pub const CLOCK_SAMPLE_MAX_GAP_NS: i64 = 10_000_000_000;

/// A change of a host's state the collector reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// Silent for longer than the allowed lag: no longer holds the others back.
    Late(String),
    /// Sending again after being late.
    Back(String),
}

/// The collector's side: each host's envelopes merged by time behind a watermark and
/// fed to the engine.
pub struct Merger {
    hosts: Vec<HostFeed>,
    files: Vec<String>,
    links: Vec<Option<HostLinks>>,
    vantages: Vec<Vantage>,
    vrrp: Vec<VrrpRun>,
    garp: Vec<GratuitousArp>,
    watermark: Ts,
    max_host_lag_ns: i64,
    stats: MergeStats,
    /// Per-stage delays, when asked for (`FLOWTRACE_DELAY_STATS`, set by `flowtrace
    /// collect`).
    pub probe: Option<Box<DelayProbe>>,
}

/// Where a record's time goes on its way to a path (ns of wall clock, one sample per
/// exchange or per path): what `flowtrace collect` prints with
/// `FLOWTRACE_DELAY_STATS=1`. The wall clocks of agent and collector are compared
/// as they are (one kernel clock in the lab).
#[derive(Clone, Debug, Default)]
pub struct DelayProbe {
    /// Agent: the exchange's last byte to its envelope's making (`sent_wall`).
    pub agent: Samples,
    /// Its envelope's making to its arrival at the collector.
    pub transport: Samples,
    /// Its envelope's making to its storing by the NATS server (JetStream's
    /// `published`): the agent's outbox and publishing; the rest of `transport` is
    /// the collector's reading.
    pub stored: Samples,
    /// Its storing by the NATS server to its arrival at the collector: the
    /// collector's reading alone (`transport` less `stored`, per exchange).
    pub read: Samples,
    /// Arrival to its release into the engine (behind the watermark).
    pub held: Samples,
    /// Per path: its line written, less the watermark then.
    pub path_wall_watermark: Samples,
    /// Per path: the watermark less the engine's floor then.
    pub path_watermark_floor: Samples,
    /// Per path: the engine's floor less its `end_ts`.
    pub path_floor_end: Samples,
    /// Per path: its line written less its `end_ts`.
    pub path_total: Samples,
}

/// One stage's delay samples (ns), bounded: past [`Samples::MAX`] a uniform sample of
/// all those seen is kept (reservoir sampling), so a long run's percentiles stay
/// estimates in bounded memory (4 MiB for the probe's eight stages).
#[derive(Clone, Debug, Default)]
pub struct Samples {
    kept: Vec<i64>,
    seen: u64,
    rng: crate::rng::Rng,
}

impl Samples {
    /// Samples kept at most.
    pub const MAX: usize = 1 << 16;

    /// Adds one sample: kept while fewer than [`Samples::MAX`] are, else in place of
    /// a kept one with probability `MAX / seen`.
    pub fn push(&mut self, x: i64) {
        self.seen += 1;
        if self.kept.len() < Self::MAX {
            self.kept.push(x);
            return;
        }
        // Any fixed seed will do: the choice only has to be uniform.
        let j = self.rng.next() % self.seen;
        if let Some(slot) = self.kept.get_mut(j as usize) {
            *slot = x;
        }
    }

    /// Samples pushed, kept or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// `n` (samples seen) and the p50, p99 and max of those kept, in seconds (to
    /// the millisecond), as one JSON object.
    pub fn summary(&self) -> serde_json::Value {
        let mut v = self.kept.clone();
        v.sort_unstable();
        let at = |f: f64| {
            v.get(((v.len() as f64 - 1.0) * f).round() as usize)
                .map_or(0.0, |x| (*x as f64 / 1e6).round() / 1e3)
        };
        serde_json::json!({"n": self.seen, "p50": at(0.5), "p99": at(0.99), "max": at(1.0)})
    }
}

impl std::ops::Deref for Samples {
    type Target = [i64];
    fn deref(&self) -> &[i64] {
        &self.kept
    }
}

impl PartialEq<Vec<i64>> for Samples {
    fn eq(&self, other: &Vec<i64>) -> bool {
        self.kept == *other
    }
}

impl DelayProbe {
    /// p50, p99 and max of each stage, in seconds, as one JSON object (`n`: samples
    /// seen; the percentiles are of those kept).
    pub fn summary(&self) -> serde_json::Value {
        let q = Samples::summary;
        serde_json::json!({
            "agent_end_to_envelope": q(&self.agent),
            "envelope_to_stored": q(&self.stored),
            "envelope_to_arrival": q(&self.transport),
            "stored_to_arrival": q(&self.read),
            "arrival_to_release": q(&self.held),
            "path_watermark_to_written": q(&self.path_wall_watermark),
            "path_floor_to_watermark": q(&self.path_watermark_floor),
            "path_end_to_floor": q(&self.path_floor_end),
            "path_total": q(&self.path_total),
        })
    }
}

/// The wall clock now, ns since the epoch.
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Merger {
    /// A merger over `hosts` (in the order the engine numbers them) with their
    /// interfaces; a host silent for `max_host_lag_ns` of wall clock is late.
    pub fn new(hosts: &[(String, Option<HostLinks>)], max_host_lag_ns: i64) -> Merger {
        let mut m = Merger {
            hosts: Vec::new(),
            files: Vec::new(),
            links: Vec::new(),
            vantages: Vec::new(),
            vrrp: Vec::new(),
            garp: Vec::new(),
            watermark: Ts(i64::MIN),
            max_host_lag_ns,
            stats: MergeStats::default(),
            probe: None,
        };
        for (name, links) in hosts {
            m.add_host(name, links.clone());
        }
        m
    }

    /// Whether `host` is one of the merger's hosts.
    pub fn knows(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.name == host)
    }

    /// A host that announced itself after the merger started, numbered after the
    /// others (the engine must be told: [`Engine::add_file`] with the same name).
    /// Its lag counts from now; its records older than the watermark are late.
    pub fn add_host(&mut self, name: &str, links: Option<HostLinks>) {
        if self.knows(name) {
            return;
        }
        self.hosts.push(HostFeed {
            name: name.to_string(),
            queue: VecDeque::new(),
            arrived: VecDeque::new(),
            now: Ts(i64::MIN),
            pending: None,
            arrival: i64::MIN,
            finished: false,
            late: false,
            runs: FxHashMap::default(),
            vantage_map: FxHashMap::default(),
            vrrp: Vec::new(),
            dropped: FxHashMap::default(),
            clock: ClockSamples::default(),
        });
        self.files.push(name.to_string());
        self.links.push(links);
    }

    /// Each host's clock against the NATS server's, from its clock samples (`None`:
    /// no sample yet, or a replay), in engine order.
    pub fn agent_clocks(&self) -> Vec<Option<AgentClock>> {
        self.hosts.iter().map(|h| h.clock.agent_clock()).collect()
    }

    /// The hosts, in engine order (the engine's "files").
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Each host's interfaces.
    pub fn links(&self) -> &[Option<HostLinks>] {
        &self.links
    }

    /// Capture points so far.
    pub fn vantages(&self) -> &[Vantage] {
        &self.vantages
    }

    /// VRRP runs so far (every host's).
    pub fn vrrp(&self) -> &[VrrpRun] {
        &self.vrrp
    }

    /// Gratuitous ARPs so far.
    pub fn gratuitous_arps(&self) -> &[GratuitousArp] {
        &self.garp
    }

    /// Counters.
    pub fn stats(&self) -> &MergeStats {
        &self.stats
    }

    /// The watermark: exchanges are released up to it.
    pub fn watermark(&self) -> Ts {
        self.watermark
    }

    /// Envelopes held, not yet released.
    pub fn held(&self) -> usize {
        self.hosts.iter().map(|h| h.queue.len()).sum()
    }

    /// Hosts late now.
    pub fn late_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.late)
            .map(|h| h.name.clone())
            .collect()
    }

    /// Takes an envelope that arrived at wall clock `wall` (ns). Returns false when
    /// it was skipped (an envelope already taken, or from an unknown host).
    pub fn push(&mut self, env: Envelope, wall: i64) -> bool {
        self.push_stored(env, wall, wall)
    }

    /// As [`Merger::push`], with `stored` (ns) the reference clock's time of the
    /// envelope's arrival for its clock sample: the NATS server's time of storing it
    /// (JetStream's `published`), which a collector reading a backlog, or replaying
    /// the stream after a restart, reads unchanged, so the samples (and the offsets
    /// they give) are the same whenever the collector runs.
    pub fn push_stored(&mut self, env: Envelope, wall: i64, stored: i64) -> bool {
        let Some(h) = self.hosts.iter_mut().find(|h| h.name == env.host) else {
            self.stats.unknown_host += 1;
            return false;
        };
        let next = h.runs.entry(env.run).or_insert(0);
        if env.seq < *next {
            self.stats.duplicates += 1;
            return false;
        }
        self.stats.missing += env.seq - *next;
        *next = env.seq + 1;
        self.stats.envelopes += 1;
        h.arrival = wall;
        if env.sent_wall.abs_diff(env.now) <= CLOCK_SAMPLE_MAX_GAP_NS as u64 {
            h.clock.take(env.sent_wall, stored);
        }
        let now = Ts(env.now);
        if now < self.watermark {
            self.stats.late_envelopes += 1;
        }
        h.now = h.now.max(now);
        h.pending = env.pending.map(Ts);
        // A run that ended finishes the host; a newer run (a restarted agent) that
        // has not ended holds it again.
        h.finished = env.last;
        if let Some(p) = &mut self.probe {
            for item in &env.items {
                if let Item::Exchange(x) = item {
                    let end = x.req_first + x.resp.map_or(x.req_len_ns, |r| r.1);
                    p.agent.push(env.sent_wall - end);
                    p.transport.push(wall - env.sent_wall);
                    p.stored.push(stored - env.sent_wall);
                    p.read.push(wall - stored);
                }
            }
        }
        h.arrived.push_back(wall);
        h.queue.push_back(env);
        true
    }

    /// Marks hosts late or back by wall clock `wall`; returns what changed. A host is
    /// late when it has been silent for the allowed lag while another host was heard
    /// from (or had ended): when every host is silent at once the cause is between
    /// them and the collector (a NATS server restarting), not one host, and declaring
    /// them all late would only make their records late when they come back.
    pub fn check_lag(&mut self, wall: i64) -> Vec<HostEvent> {
        let mut events = Vec::new();
        for h in &mut self.hosts {
            if h.arrival == i64::MIN {
                // A host that has sent nothing yet: its lag counts from the first look.
                h.arrival = wall;
            }
        }
        let newest = self
            .hosts
            .iter()
            .map(|h| if h.finished { wall } else { h.arrival })
            .max()
            .unwrap_or(wall);
        for h in &mut self.hosts {
            let silent = !h.finished && newest.saturating_sub(h.arrival) > self.max_host_lag_ns;
            if silent && !h.late {
                h.late = true;
                events.push(HostEvent::Late(h.name.clone()));
            } else if !silent && h.late {
                h.late = false;
                events.push(HostEvent::Back(h.name.clone()));
            }
        }
        events
    }

    /// Releases every envelope behind the watermark into `engine` and advances it;
    /// paths that became final go to `emit`.
    pub fn step(&mut self, engine: &mut Engine, emit: &mut dyn FnMut(RequestPath)) {
        for (i, h) in self.hosts.iter_mut().enumerate() {
            if std::mem::take(&mut h.clock.changed) {
                if let Some(c) = h.clock.agent_clock() {
                    engine.set_agent_clock(i, c);
                }
            }
        }
        let active: Vec<Ts> = self
            .hosts
            .iter()
            .filter(|h| !h.finished && !h.late)
            .map(|h| h.now)
            .collect();
        let w = match active.iter().min() {
            Some(m) => *m,
            None => self
                .hosts
                .iter()
                .map(|h| h.now)
                .max()
                .unwrap_or(Ts(i64::MIN)),
        };
        let before = self.watermark;
        self.watermark = before.max(w);
        let released = self.release(engine, self.watermark);
        if released == 0 && self.watermark == before {
            return;
        }
        let pending = self.pending();
        let ctx = Context {
            vantages: &self.vantages,
            files: &self.files,
            links: &self.links,
            names: None,
            vrrp: &self.vrrp,
            garp: &self.garp,
        };
        engine.advance(self.watermark, pending, &ctx, emit);
    }

    /// Releases everything held and ends the engine's input.
    pub fn finish(&mut self, engine: &mut Engine, emit: &mut dyn FnMut(RequestPath)) -> Tail {
        // The report shows every sample taken.
        for (i, c) in self.agent_clocks().into_iter().enumerate() {
            if let Some(c) = c {
                engine.set_agent_clock(i, c);
            }
        }
        self.release(engine, Ts(i64::MAX));
        let ctx = Context {
            vantages: &self.vantages,
            files: &self.files,
            links: &self.links,
            names: None,
            vrrp: &self.vrrp,
            garp: &self.garp,
        };
        engine.finish(&ctx, emit)
    }

    /// The oldest request that may still complete: every host's pending floor and
    /// the requests of what it holds.
    fn pending(&self) -> Option<Ts> {
        let mut min: Option<Ts> = None;
        let mut take = |t: Ts| min = Some(min.map_or(t, |m: Ts| m.min(t)));
        for h in &self.hosts {
            if !h.finished && !h.late {
                if let Some(p) = h.pending {
                    take(p);
                }
            }
            for env in &h.queue {
                if let Some(p) = env.pending {
                    take(Ts(p));
                }
                for item in &env.items {
                    if let Item::Exchange(x) = item {
                        take(Ts(x.req_first));
                    }
                }
            }
        }
        min
    }

    /// Feeds `engine` every held envelope up to `upto`, oldest first (ties by host
    /// order, then arrival); returns how many.
    fn release(&mut self, engine: &mut Engine, upto: Ts) -> usize {
        let mut n = 0;
        loop {
            let next = self
                .hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.queue.front().map(|e| (Ts(e.now), i)))
                .filter(|(t, _)| *t <= upto)
                .min();
            let Some((_, i)) = next else { break };
            let env = self.hosts[i].queue.pop_front().expect("a front");
            let arrived = self.hosts[i].arrived.pop_front().unwrap_or(0);
            if let Some(p) = &mut self.probe {
                let held = wall_ns() - arrived;
                for item in &env.items {
                    if let Item::Exchange(_) = item {
                        p.held.push(held);
                    }
                }
            }
            self.apply(engine, i, env);
            n += 1;
        }
        n
    }

    fn apply(&mut self, engine: &mut Engine, host: usize, env: Envelope) {
        let now = Ts(env.now);
        let run = env.run;
        let mut contents: FxHashMap<u64, MsgRec> = FxHashMap::default();
        for item in env.items {
            match item {
                Item::Hello(_) => {}
                Item::Vantage(v) => {
                    // A restarted agent numbers its capture points anew: the same
                    // interface is the same capture point.
                    let found = self.vantages.iter().position(|x| {
                        x.file_index == host && x.interface == v.interface && x.ifindex == v.ifindex
                    });
                    let id = found.unwrap_or_else(|| {
                        self.vantages.push(Vantage {
                            file: self.files[host].clone(),
                            file_index: host,
                            interface: v.interface,
                            ifindex: v.ifindex,
                        });
                        self.vantages.len() - 1
                    });
                    self.hosts[host].vantage_map.insert((run, v.id), id);
                }
                Item::HeaderNames(names) => {
                    let names: Vec<(u64, String)> =
                        names.into_iter().map(|(h, n)| (h.0, n)).collect();
                    engine.learn_header_names(&names);
                }
                Item::Vrrp(runs) => {
                    let list = &mut self.hosts[host].vrrp;
                    for (i, r) in runs {
                        let i = i as usize;
                        // The pipeline keeps at most 10,000 runs: a larger index is
                        // not from an agent.
                        if i >= MAX_VRRP_RUNS {
                            continue;
                        }
                        let run = VrrpRun {
                            vrid: r.vrid,
                            source: r.source,
                            priority: r.priority,
                            addresses: r.addresses,
                            first_ts: Ts(r.first_ts),
                            last_ts: Ts(r.last_ts),
                            adverts: r.adverts,
                        };
                        match list.get_mut(i) {
                            Some(slot) => *slot = run,
                            None => list.push(run),
                        }
                    }
                    self.vrrp = self.hosts.iter().flat_map(|h| h.vrrp.clone()).collect();
                }
                Item::Garp(g) => {
                    if let Some(&v) = self.hosts[host].vantage_map.get(&(run, g.vantage)) {
                        if self.garp.len() < MAX_GARP {
                            self.garp.push(GratuitousArp {
                                ts: Ts(g.ts),
                                vantage: v as crate::tcp::VantageId,
                                ip: g.ip,
                                mac: g.mac,
                            });
                        }
                    }
                }
                Item::Exchange(x) => {
                    // An exchange names a capture point its envelope or an earlier one
                    // announced; one that does not is from a corrupt or foreign run.
                    let Some(&v) = self.hosts[host].vantage_map.get(&(run, x.vantage)) else {
                        continue;
                    };
                    let msg = match &x.msg {
                        Some(m) => {
                            contents.entry(x.digest.0).or_insert_with(|| m.clone());
                            m.clone()
                        }
                        // Content sent with an earlier exchange of this envelope.
                        None => match contents.get(&x.digest.0) {
                            Some(m) => m.clone(),
                            None => continue,
                        },
                    };
                    self.stats.exchanges += 1;
                    engine.ingest_remote(x, msg, v, &self.vantages, now);
                }
                Item::Dropped(n) => {
                    let h = &mut self.hosts[host];
                    let before = h.dropped.insert(run, n).unwrap_or(0);
                    self.stats.agent_dropped += n.saturating_sub(before);
                }
            }
        }
    }
}

/// Most VRRP runs the collector keeps per host (the pipeline's bound).
const MAX_VRRP_RUNS: usize = 10_000;

/// Most gratuitous ARPs the collector keeps (as the pipeline: a bound against a
/// hostile host).
const MAX_GARP: usize = 10_000;

#[cfg(test)]
mod tests;
