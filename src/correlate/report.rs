//! The records correlation produces: request paths with their hops, the VIP
//! timeline, failovers, clock offsets, the address book and the summary. Renderers,
//! diagrams, checks and the scorer read only these.

use crate::time::Ts;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// A capture point as named in paths.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CaptureRef {
    /// Capture file.
    pub file: String,
    /// Interface.
    pub interface: String,
}

/// One view of an exchange: where it was seen and with which addresses.
#[derive(Clone, Debug, Serialize)]
pub struct Seen {
    /// Capture point.
    pub capture: CaptureRef,
    /// Client as on the wire there.
    pub client: SocketAddr,
    /// Server as on the wire there.
    pub server: SocketAddr,
    /// First request byte there (clock-corrected).
    pub request_ts: Ts,
}

/// Version of the path record's shape: raised when a field changes meaning or goes
/// away (new fields may appear without it).
pub const PATH_SCHEMA_VERSION: u32 = 1;

/// What a hop is.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum HopKind {
    /// An HTTP exchange (a client and a server).
    Http,
    /// An address translation between two capture points of one exchange.
    Nat,
}

/// The role of a server in a path. Written as its name in JSON and text
/// (`gateway`, `load_balancer`, `proxy`, `backend`, `unanswered`, or the name a
/// topology file gives).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Kong, or the first proxy a client reaches.
    Gateway,
    /// A proxy behind the gateway.
    LoadBalancer,
    /// A server naming a proxy product, with no upstream hop seen.
    Proxy,
    /// A server with no upstream hop.
    Backend,
    /// A server that never answered (its role is unknown).
    Unanswered,
    /// A role a topology file (`--names`) defines.
    Named(String),
}

impl Role {
    /// The role's name.
    pub fn as_str(&self) -> &str {
        match self {
            Role::Gateway => "gateway",
            Role::LoadBalancer => "load_balancer",
            Role::Proxy => "proxy",
            Role::Backend => "backend",
            Role::Unanswered => "unanswered",
            Role::Named(n) => n,
        }
    }

    /// The role named `name`: a known one, or a topology file's own.
    pub fn from_name(name: &str) -> Role {
        match name {
            "gateway" => Role::Gateway,
            "load_balancer" => Role::LoadBalancer,
            "proxy" => Role::Proxy,
            "backend" => Role::Backend,
            "unanswered" => Role::Unanswered,
            other => Role::Named(other.to_string()),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How a path ended.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PathStatus {
    /// Every hop answered and every leaf is a backend.
    Complete,
    /// Answered, but a hop is missing (a proxy without its upstream, an unanswered
    /// hop).
    Partial,
    /// The client got no response, or a 5xx.
    Failed,
}

impl PathStatus {
    /// The name used in text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PathStatus::Complete => "complete",
            PathStatus::Partial => "partial",
            PathStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PathStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// An address translation.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Translation {
    /// Source address (and port) rewritten.
    #[serde(rename = "SNAT")]
    Snat,
    /// Destination rewritten.
    #[serde(rename = "DNAT")]
    Dnat,
    /// Both.
    #[serde(rename = "SNAT+DNAT")]
    SnatDnat,
}

impl Translation {
    /// The name used in text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Translation::Snat => "SNAT",
            Translation::Dnat => "DNAT",
            Translation::SnatDnat => "SNAT+DNAT",
        }
    }
}

impl std::fmt::Display for Translation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a clock offset was found.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClockMethod {
    /// The capture others are measured against.
    Reference,
    /// Estimated from exchanges both captures saw.
    Exchanges,
    /// Given by the user (`--offset`).
    Override,
    /// From the agents' wall clocks (`flowtrace collect`): a host whose exchanges
    /// share nothing (yet) with an estimated capture.
    #[serde(rename = "agent_clock")]
    AgentClock,
    /// Nothing shared with an estimated capture.
    None,
}

impl std::fmt::Display for ClockMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClockMethod::Reference => "reference",
            ClockMethod::Exchanges => "exchanges",
            ClockMethod::Override => "override",
            ClockMethod::AgentClock => "agent_clock",
            ClockMethod::None => "none",
        })
    }
}

/// A hop of a path.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    /// Id within the path.
    pub id: usize,
    /// Parent hop id (null for the first).
    pub parent: Option<usize>,
    /// `http` or `nat`.
    pub kind: HopKind,
    /// `http`: client as sent (at `capture`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<SocketAddr>,
    /// `http`: server as addressed (at `capture`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<SocketAddr>,
    /// Where `client` and `server` were seen (the capture point nearest the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureRef>,
    /// Host of the server side (the capture file's host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Role of the server side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The server's name from the topology file, if it names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Software named by the server's headers (Kong, nginx, Python, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Final status (null when none was seen).
    pub status: Option<u16>,
    /// First request byte at the server's side (clock-corrected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_ts: Option<Ts>,
    /// Last response byte at the server's side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_ts: Option<Ts>,
    /// `response_ts - request_ts`, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Latency not spent in child hops, milliseconds (where this hop lost its time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_ms: Option<f64>,
    /// How sure the link to the parent is (0..1; 1 for NAT views of one connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Why the link to the parent was made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// The runner-up parents of a link that is not sure (confidence below 0.99), best
    /// first, at most three: what the link could have been instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<Alternative>,
    /// Every capture point that saw this exchange.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen_at: Vec<Seen>,
    /// `nat`: SNAT, DNAT or SNAT+DNAT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translation: Option<Translation>,
    /// `nat`: addresses before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Endpoints>,
    /// `nat`: addresses after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Endpoints>,
    /// `nat`: where the addresses before were seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_before: Option<CaptureRef>,
    /// `nat`: where the addresses after were seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_after: Option<CaptureRef>,
    /// `nat`: when the translated request was first seen after the translation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<Ts>,
}

/// A parent a link could have had instead: the inbound exchange at the proxy (as the
/// proxy received it) and how far behind the chosen one it scored.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Alternative {
    /// The inbound request's client, as the proxy received it.
    pub client: SocketAddr,
    /// The proxy's address it reached.
    pub server: SocketAddr,
    /// Its method and URI.
    pub method: String,
    /// Its URI.
    pub uri: String,
    /// When its request started.
    pub request_ts: Ts,
    /// Points it scored below the chosen parent (a point is about one bit of
    /// evidence; the confidence comes from the margins over every candidate).
    pub behind: f64,
}

impl Hop {
    /// A hop with only its id, parent and kind set.
    pub fn new(id: usize, parent: Option<usize>, kind: HopKind) -> Hop {
        Hop {
            id,
            parent,
            kind,
            client: None,
            server: None,
            capture: None,
            host: None,
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
            confidence: None,
            evidence: Vec::new(),
            alternatives: Vec::new(),
            seen_at: Vec::new(),
            translation: None,
            before: None,
            after: None,
            capture_before: None,
            capture_after: None,
            ts: None,
        }
    }
}

/// Client and server of a connection.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Endpoints {
    /// Client.
    pub client: SocketAddr,
    /// Server.
    pub server: SocketAddr,
}

/// One client request's way through the stack.
#[derive(Clone, Debug, Serialize)]
pub struct RequestPath {
    /// Version of this record's shape ([`PATH_SCHEMA_VERSION`]; docs/output.md).
    pub schema_version: u32,
    /// Id within the run.
    pub id: usize,
    /// `complete` (reached a backend, answered), `partial`, or `failed` (no response,
    /// or 5xx, to the client).
    pub status: PathStatus,
    /// First request byte at the client's side.
    pub start_ts: Ts,
    /// Last response byte at the client's side (or the last thing seen).
    pub end_ts: Ts,
    /// The VIP the client addressed, and which host held it then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<VipUse>,
    /// Hops, parents before children.
    pub hops: Vec<Hop>,
    /// Id of the transaction of the first hop where the client sent it (the same for
    /// the same input whatever the batching; not part of the JSON record).
    #[serde(skip)]
    pub root_transaction: u64,
    /// The segments of every connection of the path at every capture point, when the
    /// run keeps them for diagrams (`PipelineConfig::keep_segments`); not part of
    /// the JSON record.
    #[serde(skip)]
    pub segments: Vec<crate::tcp::SegmentSummary>,
}

impl RequestPath {
    /// The HTTP hops whose parent is hop `parent`.
    pub fn http_children(&self, parent: usize) -> Vec<&Hop> {
        self.hops
            .iter()
            .filter(|h| h.kind == HopKind::Http && h.parent == Some(parent))
            .collect()
    }
}

/// A path's use of a virtual address.
#[derive(Clone, Debug, Serialize)]
pub struct VipUse {
    /// The virtual address.
    pub address: IpAddr,
    /// The host holding it when the request arrived (from VRRP), if known.
    pub holder: Option<String>,
}

/// A period during which one router held a virtual address.
#[derive(Clone, Debug, Serialize)]
pub struct VipHolding {
    /// Virtual address.
    pub vip: IpAddr,
    /// Virtual router id.
    pub vrid: u8,
    /// Host holding it (by the advert's source address), or the source address.
    pub holder: String,
    /// The advert's source address.
    pub holder_ip: IpAddr,
    /// Advertised priority.
    pub priority: u8,
    /// First advert.
    pub from: Ts,
    /// Last advert.
    pub to: Ts,
    /// Adverts seen.
    pub adverts: u64,
}

/// The VIP moving from one holder to another.
#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    /// Virtual address.
    pub vip: IpAddr,
    /// Previous holder.
    pub from: String,
    /// New holder.
    pub to: String,
    /// Last advert of the previous holder.
    pub last_advert_before: Ts,
    /// First advert (or gratuitous ARP) of the new holder.
    pub first_sign_after: Ts,
    /// Paths that failed between 5 s before and 5 s after, with why.
    pub failed_paths: Vec<FailedPath>,
}

/// A path that failed near a failover.
#[derive(Clone, Debug, Serialize)]
pub struct FailedPath {
    /// Path id.
    pub path: usize,
    /// When it started.
    pub start_ts: Ts,
    /// What went wrong.
    pub reason: String,
}

/// A capture's clock offset.
#[derive(Clone, Debug, Serialize)]
pub struct ClockOffset {
    /// Capture file.
    pub capture: String,
    /// Seconds this capture's clock is ahead of the reference (subtracted from its
    /// timestamps).
    pub offset_s: f64,
    /// Uncertainty (seconds): the estimates' spread around the median.
    pub uncertainty_s: f64,
    /// Connections the estimate rests on.
    pub samples: usize,
    /// `reference`, `exchanges` (estimated from exchanges both captures saw),
    /// `override`, `agent_clock` (from the agents' clock samples, see
    /// [`AgentClock`]) or `none` (nothing shared with an estimated capture).
    pub method: ClockMethod,
    /// A live agent's clock against the NATS server's (`flowtrace collect` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_clock: Option<AgentClock>,
}

/// What a host's clock samples say (`flowtrace collect`): each message an agent sends
/// carries its wall clock at sending; the NATS server's clock when it stored the
/// message less it is the one-way delay less the agent's offset against the server.
/// The smallest over the samples (NTP's minimum-delay filter) is the sample least
/// delayed by queues, so the offset is the largest `sent - stored`; it errs by that
/// sample's delay (the network's and the publisher's queue), never by less. The server
/// is the one clock every host's samples share, and the stream keeps its times, so a
/// collector reading a backlog or replaying after a restart gets the same samples.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct AgentClock {
    /// Seconds the agent's clock is ahead of the NATS server's (the least delayed
    /// sample).
    pub offset_s: f64,
    /// Samples taken (messages whose packet times follow the agent's wall clock).
    pub samples: u64,
    /// Seconds between the least and the most recent sample's delay: how much the
    /// delay varies (the offset's error is at most the least delay, unknown here).
    pub delay_spread_s: f64,
}

/// One row of the address book (the seed's name/IP/MAC tables).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressEntry {
    /// Name: host and interface, or role and host for addresses only seen as peers.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
    /// MAC, when known.
    pub mac: Option<String>,
    /// Host (capture) it belongs to or was seen behind.
    pub host: String,
    /// Interface, when known.
    pub interface: Option<String>,
    /// Role inferred from traffic, if any.
    pub role: Option<Role>,
}

/// Latency figures of one hop role.
#[derive(Clone, Debug, Serialize)]
pub struct RoleLatency {
    /// Role.
    pub role: Role,
    /// Hops.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// Totals.
#[derive(Clone, Debug, Serialize, Default)]
pub struct PathSummary {
    /// Paths.
    pub paths: usize,
    /// Complete paths.
    pub complete: usize,
    /// Partial paths.
    pub partial: usize,
    /// Failed paths.
    pub failed: usize,
    /// Latency per role of the server side.
    pub latency_by_role: Vec<RoleLatency>,
    /// The slowest paths: (id, milliseconds).
    pub slowest: Vec<(usize, f64)>,
    /// Failed paths by what went wrong ([`failure_reason`]), most frequent first.
    pub failed_by_reason: Vec<(String, usize)>,
}

/// What went wrong on a failed path, as the client saw it: no response, or the
/// status it got.
pub fn failure_reason(p: &RequestPath) -> String {
    match p.hops.first().and_then(|h| h.status) {
        None => "no response (connection reset or timed out)".into(),
        Some(s) => format!("status {s}"),
    }
}

/// Everything correlation produces.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// One per client request.
    pub paths: Vec<RequestPath>,
    /// Which host held each VIP when.
    pub vip_timeline: Vec<VipHolding>,
    /// VIP moves.
    pub failovers: Vec<Failover>,
    /// Capture clock offsets.
    pub clock_offsets: Vec<ClockOffset>,
    /// Offsets that changed after paths had been emitted with the previous ones.
    pub clock_offset_changes: Vec<OffsetChange>,
    /// Names, addresses, MACs, roles.
    pub address_book: Vec<AddressEntry>,
    /// Things that look wrong in the paths.
    pub anomalies: Vec<String>,
    /// Totals and latency figures.
    pub summary: PathSummary,
}

/// An offset applied after paths had already been emitted with the previous one.
#[derive(Clone, Debug, Serialize)]
pub struct OffsetChange {
    /// Capture file.
    pub capture: String,
    /// Offset before, seconds.
    pub from_s: f64,
    /// Offset after, seconds.
    pub to_s: f64,
    /// Paths emitted before the change.
    pub after_paths: usize,
}
