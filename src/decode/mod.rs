//! Decoding frames into link, network and transport views.
//!
//! etherparse's lax slicer does Ethernet, VLAN (802.1Q, QinQ), IPv4 with options, IPv6
//! with extension headers, TCP, UDP and ICMP; this module adds the link layers and
//! protocols it lacks ([`cooked`]: Linux SLL and SLL2, BSD loopback; [`vrrp`];
//! [`nflog`]: the NFLOG link type; [`tunnel`]: GRE with ERSPAN, bridged Ethernet or
//! IP inside, decoded down to the innermost packet), ARP gleaning, and bounded IP
//! fragment reassembly.
//!
//! Contract: [`Decoder::decode`] never panics on any bytes; whatever does not decode is
//! counted in [`Stats`] and the layers that did decode are kept.

pub mod cooked;
pub mod nflog;
pub mod tunnel;
pub mod vrrp;

use crate::anomaly::{AnomalyLog, Stats};
use crate::capture::{Frame, Linktype};
use crate::time::Ts;
use cooked::{LoopbackFamily, Sll2Packet, SllPacket};
use etherparse::{
    defrag::IpDefragBuf, EtherType, IpAuthHeaderSlice, IpFragOffset, IpNumber,
    Ipv6FragmentHeaderSlice, Ipv6RawExtHeaderSlice, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket,
    LinkSlice, TcpSlice, TransportSlice,
};
use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr};
use vrrp::VrrpPacket;

/// Why a view could not be made over some bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// Fewer bytes than the layer's fixed part or than its length field claims.
    #[error("{layer}: {required} bytes required, {len} present")]
    Truncated {
        /// The layer being decoded.
        layer: &'static str,
        /// Bytes the layer needs.
        required: usize,
        /// Bytes there were.
        len: usize,
    },
    /// A field holds an impossible value.
    #[error("{layer}: {detail}")]
    Invalid {
        /// The layer being decoded.
        layer: &'static str,
        /// What is impossible.
        detail: &'static str,
    },
}

/// Link-layer facts of a frame that later stages need (who sent it, where).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkMeta {
    /// Source MAC (Ethernet, or the cooked header's address when 6 bytes long).
    pub src_mac: Option<[u8; 6]>,
    /// Destination MAC (Ethernet only).
    pub dst_mac: Option<[u8; 6]>,
    /// Interface index from an SLL2 header (`tcpdump -i any`).
    pub ifindex: Option<u32>,
    /// Outermost VLAN id.
    pub vlan: Option<u16>,
}

/// An ARP packet for Ethernet/IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpInfo {
    /// 1 request, 2 reply.
    pub operation: u16,
    /// Sender MAC.
    pub sender_mac: [u8; 6],
    /// Sender IP.
    pub sender_ip: Ipv4Addr,
    /// Target IP.
    pub target_ip: Ipv4Addr,
}

impl ArpInfo {
    /// A gratuitous ARP announces the sender's own address (how a new VRRP master
    /// claims the VIP).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// A TCP segment with the bytes that matter for reassembly.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful when `flags` has ACK).
    pub ack: u32,
    /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// Receive window (unscaled).
    pub window: u16,
    /// Captured payload.
    pub payload: &'a [u8],
    /// Payload bytes on the wire that the capture does not hold (snaplen).
    pub missing: u32,
    /// The IP TTL or hop limit it was captured with (routers lower it on the way, so
    /// it orders the capture points of one packet).
    pub ttl: u8,
}

impl TcpSegment<'_> {
    /// FIN flag.
    pub const FIN: u8 = 0x01;
    /// SYN flag.
    pub const SYN: u8 = 0x02;
    /// RST flag.
    pub const RST: u8 = 0x04;
    /// PSH flag.
    pub const PSH: u8 = 0x08;
    /// ACK flag.
    pub const ACK: u8 = 0x10;

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A VRRP advertisement, copied out of the packet (adverts are rare: one a second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpAdvert {
    /// 2 or 3.
    pub version: u8,
    /// Virtual router id.
    pub vrid: u8,
    /// Sender's priority.
    pub priority: u8,
    /// Advert interval, centiseconds.
    pub interval_centis: u16,
    /// Virtual addresses.
    pub addresses: Vec<IpAddr>,
}

/// What an IP packet carries.
#[derive(Debug, Clone)]
pub enum Transport<'a> {
    /// TCP.
    Tcp(TcpSegment<'a>),
    /// UDP ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP or ICMPv6.
    Icmp,
    /// VRRP advertisement.
    Vrrp(VrrpAdvert),
    /// CARP advertisement.
    Carp,
    /// A fragment held for reassembly (or dropped).
    Fragment,
    /// A transport header that is cut off or malformed.
    Malformed,
    /// Another IP protocol.
    Other(u8),
}

/// An IP packet.
#[derive(Debug, Clone)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 identification (a key that survives NAT); 0 for IPv6.
    pub ip_id: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The payload.
    pub transport: Transport<'a>,
}

/// The network layer of a frame.
#[derive(Debug, Clone)]
pub enum Network<'a> {
    /// IPv4 or IPv6.
    Ip(IpPacket<'a>),
    /// ARP.
    Arp(ArpInfo),
    /// Nothing flowtrace decodes (or a header that did not decode).
    None,
}

/// A frame that [`Decoder::fast_tcp`] took: an Ethernet, IPv4, TCP segment.
#[derive(Debug, Clone)]
pub struct FastTcp<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IPv4 identification.
    pub ip_id: u16,
    /// The segment (its `ttl` the IPv4 TTL).
    pub segment: TcpSegment<'a>,
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// Link facts.
    pub link: LinkMeta,
    /// Network layer.
    pub net: Network<'a>,
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

/// A datagram waiting for its other fragments.
struct PendingDatagram {
    buf: IpDefragBuf,
    /// Its last fragment's time (partial datagrams idle past the timeout expire).
    last: Ts,
    /// Its place in `Decoder::order` (arrival order of its first fragment).
    serial: u64,
    /// The heap it holds ([`PendingDatagram::heap_bytes`] when last counted).
    heap: usize,
}

impl PendingDatagram {
    /// The heap its buffers hold: the datagram's bytes up to the furthest fragment
    /// (etherparse allocates up to that end at once, so one 8-byte fragment at
    /// offset 65,528 holds 64 KiB) and its list of received ranges.
    fn heap_bytes(&self) -> usize {
        self.buf.data().capacity()
            + self.buf.sections().capacity()
                * std::mem::size_of::<etherparse::defrag::IpFragRange>()
    }
}

/// Partial datagrams older than this (capture time) are dropped.
const FRAGMENT_TIMEOUT_NS: i64 = 30_000_000_000;
/// The fragment reassembly share of the memory budget by default (the default
/// `--memory-budget`'s sixteenth: the CLI passes its own share).
pub const DEFAULT_FRAGMENT_BUDGET: usize = 32 << 20;

/// Turns frames into [`Decoded`] views. Holds only fragment reassembly state.
///
/// **Bounded in bytes** ([`Decoder::fragment_budget`]): the partial datagrams'
/// buffers, their hash table buckets and the arrival-order queue are counted
/// ([`Decoder::fragment_bytes`]); a fragment that would take the total past the
/// budget first evicts the oldest partial datagrams (by their first fragment),
/// each counted in `ip_fragments_evicted` and sampled in the anomalies, so a flood
/// of fragments that never complete pushes out its own, and a real datagram whose
/// fragments arrive together still completes. A datagram that alone would not fit
/// is dropped (`ip_fragments_dropped`).
pub struct Decoder {
    pending: FxHashMap<FragKey, PendingDatagram>,
    /// Partial datagrams in order of their first fragment, oldest first, with their
    /// serial (entries of datagrams completed or expired since are skipped when met).
    order: std::collections::VecDeque<(u64, FragKey)>,
    next_serial: u64,
    /// The pending datagrams' buffers, summed.
    heap_bytes: usize,
    budget: usize,
    reassembled: Vec<u8>,
    verify_checksums: bool,
    /// A GRE datagram reassembled from fragments, while the frame inside it is
    /// decoded (by `inner`, whose results borrow it).
    gre_outer: Vec<u8>,
    /// The decoder of frames inside reassembled GRE datagrams (created at the
    /// first one, with a quarter of this one's budget).
    inner: Option<Box<Decoder>>,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder {
            pending: FxHashMap::default(),
            order: std::collections::VecDeque::new(),
            next_serial: 0,
            heap_bytes: 0,
            budget: DEFAULT_FRAGMENT_BUDGET,
            reassembled: Vec::new(),
            verify_checksums: false,
            gre_outer: Vec::new(),
            inner: None,
        }
    }
}

const LINKTYPE_NULL: i32 = 0;
const LINKTYPE_ETHERNET: i32 = 1;
const LINKTYPE_RAW_OLD: i32 = 12;
const LINKTYPE_RAW_OPENBSD: i32 = 14;
const LINKTYPE_RAW: i32 = 101;
const LINKTYPE_LOOP: i32 = 108;
const LINKTYPE_LINUX_SLL: i32 = 113;
const LINKTYPE_IPV4: i32 = 228;
const LINKTYPE_IPV6: i32 = 229;
const LINKTYPE_LINUX_SLL2: i32 = 276;
const LINKTYPE_NFLOG: i32 = 239;
/// Tunnels inside tunnels followed at most: each level is one more decode on the
/// stack, and a crafted packet can nest GRE as deep as its length allows.
const MAX_TUNNEL_DEPTH: u8 = 4;

impl Decoder {
    /// Creates a decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Verifies TCP checksums and counts mismatches in `tcp_checksum_mismatch`
    /// (segments are never dropped for it: offloads make good segments look bad).
    pub fn verify_checksums(mut self, on: bool) -> Decoder {
        self.verify_checksums = on;
        self
    }

    /// Bytes fragment reassembly may hold (see [`Decoder`]); at least 64 KiB, one
    /// datagram of the largest size.
    pub fn fragment_budget(mut self, bytes: usize) -> Decoder {
        self.budget = bytes.max(64 << 10);
        self
    }

    /// The bytes fragment reassembly holds now, by the accounting of [`Decoder`]
    /// (a GRE datagram's inner decoder included).
    pub fn fragment_bytes(&self) -> usize {
        self.own_bytes() + self.inner.as_ref().map_or(0, |i| i.fragment_bytes())
    }

    /// This decoder's bytes, without its inner decoder's.
    fn own_bytes(&self) -> usize {
        crate::memory::hash_table_buckets(self.pending.capacity())
            * (std::mem::size_of::<(FragKey, PendingDatagram)>() + 1)
            + self.order.capacity() * std::mem::size_of::<(u64, FragKey)>()
            + self.heap_bytes
    }

    /// Decodes one frame. Never fails: problems are counted in `stats`.
    pub fn decode<'a>(
        &'a mut self,
        frame: &Frame<'a>,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> Decoded<'a> {
        self.decode_at(frame, 0, stats, log)
    }

    /// Decodes a frame found `depth` tunnels deep.
    fn decode_at<'a>(
        &'a mut self,
        frame: &Frame<'a>,
        depth: u8,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> Decoded<'a> {
        let mut link = LinkMeta::default();
        if let Some(d) = self.fast_ethernet_ipv4_tcp(frame, stats) {
            return d;
        }
        let sliced = match link_layer(frame, &mut link, stats, log) {
            Ok(s) => s,
            Err(d) => return d,
        };
        let cut_by_snaplen = frame.orig_len as usize > frame.data.len();
        if let Some(gre) = gre_payload(&sliced) {
            match &sliced.net {
                Some(LaxNetSlice::Ipv6(_)) => stats.ipv6 += 1,
                _ => stats.ipv4 += 1,
            }
            return self.decapsulate(frame, gre, depth, link, stats, log);
        }
        let net = match &sliced.net {
            Some(LaxNetSlice::Arp(arp)) => {
                stats.arp += 1;
                match arp_info(arp.slice()) {
                    Some(a) => {
                        if a.is_gratuitous() {
                            stats.gratuitous_arp += 1;
                        }
                        Network::Arp(a)
                    }
                    None => Network::None,
                }
            }
            Some(LaxNetSlice::Ipv4(ip)) => {
                stats.ipv4 += 1;
                let h = ip.header();
                let payload = ip.payload();
                if payload.incomplete && !cut_by_snaplen {
                    stats.ip_len_exceeds_frame += 1;
                    log.push("ip_len_exceeds_frame", frame.ts, || {
                        format!(
                            "{} -> {}: IPv4 total length {} but {} bytes captured",
                            h.source_addr(),
                            h.destination_addr(),
                            h.total_len(),
                            frame.data.len()
                        )
                    });
                }
                if h.total_len() == 0 {
                    stats.ipv4_zero_total_len += 1;
                }
                let wire_payload = usize::from(h.total_len()).saturating_sub(h.slice().len());
                let src = IpAddr::V4(h.source_addr());
                let dst = IpAddr::V4(h.destination_addr());
                let frag = payload.fragmented.then(|| {
                    (
                        u32::from(h.identification()),
                        h.fragments_offset(),
                        h.more_fragments(),
                    )
                });
                let ip_id = h.identification();
                let ttl = h.ttl();
                let ctx = IpCtx {
                    src,
                    dst,
                    ipv6: false,
                    ttl: h.ttl(),
                    wire_payload: cut_by_snaplen.then_some(wire_payload),
                };
                return self.finish_ip(
                    (frame, depth),
                    link,
                    &sliced,
                    payload.ip_number,
                    payload.payload,
                    frag,
                    ctx,
                    ip_id,
                    ttl,
                    stats,
                    log,
                );
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                stats.ipv6 += 1;
                let h = ip.header();
                let payload = ip.payload();
                let ext_len = ip.extensions().slice().len();
                let wire_payload = usize::from(h.payload_length()).saturating_sub(ext_len);
                let frag = if payload.fragmented {
                    let exts = ip.extensions();
                    ipv6_fragment(exts.first_header(), exts.slice())
                } else {
                    None
                };
                let ctx = IpCtx {
                    src: IpAddr::V6(h.source_addr()),
                    dst: IpAddr::V6(h.destination_addr()),
                    ipv6: true,
                    ttl: h.hop_limit(),
                    wire_payload: cut_by_snaplen.then_some(wire_payload),
                };
                let hop = h.hop_limit();
                return self.finish_ip(
                    (frame, depth),
                    link,
                    &sliced,
                    payload.ip_number,
                    payload.payload,
                    frag,
                    ctx,
                    0,
                    hop,
                    stats,
                    log,
                );
            }
            None => {
                if sliced.stop_err.is_some() {
                    stats.ip_malformed += 1;
                } else {
                    stats.non_ip += 1;
                }
                Network::None
            }
        };
        Decoded { link, net }
    }

    /// Decodes the frame inside a GRE packet (ERSPAN, bridged Ethernet, IP) as if it
    /// had been captured directly; what cannot be followed is counted in
    /// `tunnel_malformed`.
    fn decapsulate<'a>(
        &'a mut self,
        frame: &Frame<'a>,
        gre: &'a [u8],
        depth: u8,
        link: LinkMeta,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> Decoded<'a> {
        let malformed = |stats: &mut Stats, log: &mut AnomalyLog, why: String| {
            stats.tunnel_malformed += 1;
            log.push("tunnel_malformed", frame.ts, || why);
            Decoded {
                link,
                net: Network::None,
            }
        };
        if depth >= MAX_TUNNEL_DEPTH {
            let why = format!("GRE nested deeper than {MAX_TUNNEL_DEPTH} tunnels");
            return malformed(stats, log, why);
        }
        let inner = match tunnel::GrePacket::new_checked(gre).and_then(|g| tunnel::inner(&g)) {
            Ok(i) => i,
            Err(e) => return malformed(stats, log, e.to_string()),
        };
        let (linktype, bytes) = match inner {
            tunnel::Inner::Ethernet(b) => (LINKTYPE_ETHERNET, b),
            tunnel::Inner::Ip(b) => (LINKTYPE_RAW, b),
        };
        stats.gre_decapsulated += 1;
        // What the snaplen cut from the outer frame is missing from the inner one.
        let cut = frame.orig_len.saturating_sub(frame.data.len() as u32);
        let inner_frame = Frame {
            ts: frame.ts,
            iface: frame.iface,
            link: Linktype(linktype),
            orig_len: (bytes.len() as u32).saturating_add(cut),
            data: bytes,
        };
        self.decode_at(&inner_frame, depth + 1, stats, log)
    }

    /// Decodes the frame inside a GRE datagram just reassembled from IP fragments
    /// (in `self.reassembled`): the datagram moves to `self.gre_outer`, and the
    /// inner frame is decoded by `self.inner`, a decoder of its own (its fragment
    /// state and buffers are apart from this one's, which hold the datagram).
    fn decapsulate_reassembled<'a>(
        &'a mut self,
        frame: &Frame<'a>,
        depth: u8,
        link: LinkMeta,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> Decoded<'a> {
        if self.inner.is_none() {
            // The inner decoder's share comes out of this one's budget.
            let share = self.budget / 4;
            self.budget -= share;
            let inner = Decoder::new()
                .verify_checksums(self.verify_checksums)
                .fragment_budget(share);
            self.inner = Some(Box::new(inner));
        }
        let Decoder {
            reassembled,
            gre_outer,
            inner,
            ..
        } = self;
        std::mem::swap(reassembled, gre_outer);
        let inner = inner.as_mut().expect("made above");
        let outer = Frame {
            ts: frame.ts,
            iface: frame.iface,
            link: Linktype(LINKTYPE_RAW),
            orig_len: gre_outer.len() as u32,
            data: gre_outer,
        };
        inner.decapsulate(&outer, gre_outer, depth, link, stats, log)
    }

    /// The common case (untagged Ethernet, IPv4 without fragmentation, TCP, nothing
    /// cut off) decoded without building etherparse's whole `LaxSlicedPacket`, which
    /// is large enough that copying it shows in profiles. Anything else returns `None`
    /// and takes the general path.
    fn fast_ethernet_ipv4_tcp<'a>(
        &self,
        frame: &Frame<'a>,
        stats: &mut Stats,
    ) -> Option<Decoded<'a>> {
        let fast = self.fast_tcp(frame, stats)?;
        let data = frame.data;
        let mut src_mac = [0u8; 6];
        let mut dst_mac = [0u8; 6];
        dst_mac.copy_from_slice(&data[0..6]);
        src_mac.copy_from_slice(&data[6..12]);
        Some(Decoded {
            link: LinkMeta {
                src_mac: Some(src_mac),
                dst_mac: Some(dst_mac),
                ifindex: None,
                vlan: None,
            },
            net: Network::Ip(IpPacket {
                src: IpAddr::V4(fast.src),
                dst: IpAddr::V4(fast.dst),
                ip_id: fast.ip_id,
                ttl: fast.segment.ttl,
                transport: Transport::Tcp(fast.segment),
            }),
        })
    }

    /// The common frame of a capture (Ethernet, IPv4 without options that matter,
    /// TCP, whole and unfragmented) decoded with no more than the TCP stage needs,
    /// counted as [`Decoder::decode`] counts it; `None` for any other frame, which
    /// [`Decoder::decode`] then takes whole. A sharded run's front hands such a
    /// segment on without building a [`Decoded`] (its copies were a third of the
    /// front's decode).
    pub fn fast_tcp<'a>(&self, frame: &Frame<'a>, stats: &mut Stats) -> Option<FastTcp<'a>> {
        if frame.link != Linktype(LINKTYPE_ETHERNET) {
            return None;
        }
        let data = frame.data;
        if data.len() < 34 || data[12..14] != [0x08, 0x00] || data[14] >> 4 != 4 || data[23] != 6 {
            return None;
        }
        let ip = &data[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
        if ihl < 20
            || total < ihl
            || total > ip.len()
            || fragmented
            || frame.orig_len as usize > data.len()
        {
            return None;
        }
        let tcp = TcpSlice::from_slice(&ip[ihl..total]).ok()?;
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        stats.ipv4 += 1;
        stats.tcp_segments += 1;
        if self.verify_checksums {
            let ctx = IpCtx {
                src: IpAddr::V4(src),
                dst: IpAddr::V4(dst),
                ipv6: false,
                ttl: ip[8],
                wire_payload: None,
            };
            if !checksum_ok(&tcp, &ctx) {
                stats.tcp_checksum_mismatch += 1;
            }
        }
        Some(FastTcp {
            src,
            dst,
            ip_id: u16::from_be_bytes([ip[4], ip[5]]),
            segment: segment(&tcp, None, ip[8]),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_ip<'a>(
        &'a mut self,
        (frame, depth): (&Frame<'a>, u8),
        link: LinkMeta,
        sliced: &LaxSlicedPacket<'a>,
        proto: IpNumber,
        payload: &'a [u8],
        frag: Option<(u32, IpFragOffset, bool)>,
        ctx: IpCtx,
        ip_id: u16,
        ttl: u8,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> Decoded<'a> {
        let ts = frame.ts;
        let packet = |transport| Decoded {
            link,
            net: Network::Ip(IpPacket {
                src: ctx.src,
                dst: ctx.dst,
                ip_id,
                ttl,
                transport,
            }),
        };
        if let Some((id, offset, more)) = frag {
            stats.ip_fragments += 1;
            return match self.add_fragment(ts, &ctx, proto, id, offset, more, payload, stats, log) {
                true if proto == IpNumber::GRE => {
                    stats.ip_reassembled += 1;
                    self.decapsulate_reassembled(frame, depth, link, stats, log)
                }
                true => {
                    stats.ip_reassembled += 1;
                    let transport = transport_of(proto, &self.reassembled, &ctx, stats);
                    packet(transport)
                }
                false => packet(Transport::Fragment),
            };
        }
        let transport = match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                stats.tcp_segments += 1;
                if self.verify_checksums && ctx.wire_payload.is_none() && !checksum_ok(tcp, &ctx) {
                    stats.tcp_checksum_mismatch += 1;
                }
                Transport::Tcp(segment(tcp, ctx.wire_payload, ttl))
            }
            Some(TransportSlice::Udp(udp)) => {
                stats.udp += 1;
                Transport::Udp {
                    src_port: udp.source_port(),
                    dst_port: udp.destination_port(),
                }
            }
            Some(TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_)) => {
                stats.icmp += 1;
                Transport::Icmp
            }
            _ => transport_of(proto, payload, &ctx, stats),
        };
        packet(transport)
    }

    /// Adds a fragment; returns true when it completed a datagram, now in
    /// `self.reassembled`. Past the budget, the oldest partial datagrams are
    /// evicted first (counted in `ip_fragments_evicted`).
    #[allow(clippy::too_many_arguments)]
    fn add_fragment(
        &mut self,
        ts: Ts,
        ctx: &IpCtx,
        proto: IpNumber,
        id: u32,
        offset: IpFragOffset,
        more: bool,
        payload: &[u8],
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) -> bool {
        let key = FragKey {
            src: ctx.src,
            dst: ctx.dst,
            id,
            proto: proto.0,
        };
        // What this fragment may add: its datagram's bytes up to its end, a range,
        // and a new datagram's bucket and queue entry (a doubling of both counted as
        // the table's size after it).
        let end = usize::from(offset.byte_offset()) + payload.len();
        let held = self
            .pending
            .get(&key)
            .map_or(0, |p| p.buf.data().capacity());
        // A buffer grows to at least twice its size (`Vec`'s amortised growth).
        let data_growth = if end > held {
            end.max(2 * held) - held
        } else {
            0
        };
        let growth = data_growth
            + 4 * std::mem::size_of::<etherparse::defrag::IpFragRange>()
            + if self.pending.contains_key(&key) {
                0
            } else {
                self.growth_of_a_new_datagram()
            };
        if self.own_bytes() + growth > self.budget {
            self.evict_for(growth, &key, ts, stats, log);
            if self.own_bytes() + growth > self.budget {
                // Alone, it would not fit.
                self.remove(&key);
                stats.ip_fragments_dropped += 1;
                return false;
            }
        }
        if !self.pending.contains_key(&key) {
            let serial = self.next_serial;
            self.next_serial += 1;
            self.order.push_back((serial, key));
            self.pending.insert(
                key,
                PendingDatagram {
                    buf: IpDefragBuf::new(proto, Vec::new(), Vec::new()),
                    last: ts,
                    serial,
                    heap: 0,
                },
            );
        }
        let entry = self
            .pending
            .get_mut(&key)
            .expect("present or just inserted");
        entry.last = ts;
        let added = entry.buf.add(offset, more, payload);
        let heap = entry.heap_bytes();
        self.heap_bytes = self.heap_bytes - entry.heap + heap;
        entry.heap = heap;
        if added.is_err() {
            self.remove(&key);
            stats.ip_fragments_dropped += 1;
            return false;
        }
        if !entry.buf.is_complete() {
            return false;
        }
        let Some(done) = self.remove(&key) else {
            return false;
        };
        let (data, _) = done.buf.take_bufs();
        self.reassembled = data;
        true
    }

    /// The bytes a new partial datagram adds besides its buffers: nothing while the
    /// table and queue have room, their next size when they must grow.
    fn growth_of_a_new_datagram(&self) -> usize {
        let slot = std::mem::size_of::<(FragKey, PendingDatagram)>() + 1;
        let table = if self.pending.len() < self.pending.capacity() {
            0
        } else {
            // The doubled table, while the old one is still allocated.
            (crate::memory::hash_table_buckets(self.pending.capacity()) * 2).max(4) * slot
        };
        let queue = if self.order.len() < self.order.capacity() {
            0
        } else {
            self.order.capacity().max(4) * std::mem::size_of::<(u64, FragKey)>()
        };
        table + queue
    }

    /// Removes a pending datagram (its queue entry goes when met); the queue is
    /// compacted once mostly made of such entries.
    fn remove(&mut self, key: &FragKey) -> Option<PendingDatagram> {
        let p = self.pending.remove(key)?;
        self.heap_bytes -= p.heap;
        if self.order.len() > 64 && self.order.len() > 2 * self.pending.len() {
            let pending = &self.pending;
            self.order
                .retain(|(serial, k)| pending.get(k).is_some_and(|p| p.serial == *serial));
        }
        Some(p)
    }

    /// Evicts the oldest partial datagrams (not `keep`, the one a fragment is being
    /// added to) until `growth` more bytes fit in the budget, each counted in
    /// `ip_fragments_evicted`; the freed table shrinks when it is mostly empty.
    fn evict_for(
        &mut self,
        growth: usize,
        keep: &FragKey,
        ts: Ts,
        stats: &mut Stats,
        log: &mut AnomalyLog,
    ) {
        let mut evicted = 0u64;
        let mut kept = None;
        while self.own_bytes() + growth > self.budget {
            let Some((serial, key)) = self.order.pop_front() else {
                break;
            };
            if &key == keep {
                // The datagram being added to stays, in its place.
                if self.pending.get(&key).is_some_and(|p| p.serial == serial) {
                    kept = Some((serial, key));
                }
                continue;
            }
            if self.pending.get(&key).is_some_and(|p| p.serial == serial) {
                let p = self.pending.remove(&key).expect("just found");
                self.heap_bytes -= p.heap;
                evicted += 1;
                let budget = self.budget;
                log.push("ip_fragments_evicted", ts, || {
                    format!(
                        "{} -> {} id {}: partial datagram of {} bytes evicted (oldest first) \
                         to keep fragment reassembly within {budget} bytes",
                        key.src,
                        key.dst,
                        key.id,
                        p.buf.data().len(),
                    )
                });
            }
            if self.pending.len() < self.pending.capacity() / 4 {
                self.pending.shrink_to(self.pending.len() * 2);
                self.order
                    .shrink_to(self.order.len().max(self.pending.len()) * 2);
            }
        }
        if let Some(k) = kept {
            self.order.push_front(k);
        }
        stats.ip_fragments_evicted += evicted;
    }

    /// Drops partial datagrams idle for longer than the timeout, counted in
    /// `ip_fragments_dropped`.
    pub fn expire(&mut self, now: Ts, stats: &mut Stats) {
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, p| {
            let keep = now.0.saturating_sub(p.last.0) < FRAGMENT_TIMEOUT_NS;
            if !keep {
                freed += p.heap;
            }
            keep
        });
        self.heap_bytes -= freed;
        stats.ip_fragments_dropped += (before - self.pending.len()) as u64;
        if self.pending.len() < self.pending.capacity() / 4 {
            self.pending.shrink_to(self.pending.len() * 2);
        }
        let pending = &self.pending;
        self.order
            .retain(|(serial, k)| pending.get(k).is_some_and(|p| p.serial == *serial));
        if self.order.len() < self.order.capacity() / 4 {
            self.order.shrink_to(self.order.len() * 2);
        }
        if let Some(inner) = &mut self.inner {
            inner.expire(now, stats);
        }
    }
}

struct IpCtx {
    src: IpAddr,
    dst: IpAddr,
    ipv6: bool,
    ttl: u8,
    /// Payload length on the wire when the snaplen cut the frame.
    wire_payload: Option<usize>,
}

fn checksum_ok(tcp: &TcpSlice<'_>, ctx: &IpCtx) -> bool {
    let computed = match (ctx.src, ctx.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()),
        _ => return true,
    };
    computed.is_ok_and(|c| c == tcp.checksum())
}

fn segment<'a>(tcp: &TcpSlice<'a>, wire_payload: Option<usize>, ttl: u8) -> TcpSegment<'a> {
    let header = tcp.header_slice();
    let payload = tcp.payload();
    let missing = wire_payload
        .map(|w| w.saturating_sub(header.len() + payload.len()))
        .unwrap_or(0);
    TcpSegment {
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: header[13],
        window: tcp.window_size(),
        payload,
        missing: missing.min(u32::MAX as usize) as u32,
        ttl,
    }
}

/// Decodes a transport payload etherparse did not (reassembled datagrams, VRRP,
/// cut-off headers).
fn transport_of<'a>(
    proto: IpNumber,
    payload: &'a [u8],
    ctx: &IpCtx,
    stats: &mut Stats,
) -> Transport<'a> {
    match proto {
        IpNumber::TCP => match TcpSlice::from_slice(payload) {
            Ok(tcp) => {
                stats.tcp_segments += 1;
                Transport::Tcp(segment(&tcp, ctx.wire_payload, ctx.ttl))
            }
            Err(_) => {
                stats.tcp_malformed += 1;
                Transport::Malformed
            }
        },
        IpNumber::UDP => {
            if payload.len() >= 8 {
                stats.udp += 1;
                Transport::Udp {
                    src_port: u16::from_be_bytes([payload[0], payload[1]]),
                    dst_port: u16::from_be_bytes([payload[2], payload[3]]),
                }
            } else {
                Transport::Malformed
            }
        }
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            stats.icmp += 1;
            Transport::Icmp
        }
        IpNumber(112) => {
            if vrrp::is_carp(payload) {
                stats.carp += 1;
                return Transport::Carp;
            }
            match VrrpPacket::new_checked(payload, ctx.ipv6) {
                Ok(v) => {
                    stats.vrrp += 1;
                    Transport::Vrrp(VrrpAdvert {
                        version: v.version(),
                        vrid: v.vrid(),
                        priority: v.priority(),
                        interval_centis: v.interval_centis(),
                        addresses: v.addresses().collect(),
                    })
                }
                Err(_) => {
                    stats.vrrp_malformed += 1;
                    Transport::Malformed
                }
            }
        }
        IpNumber(p) => {
            stats.other_ip_protocol += 1;
            Transport::Other(p)
        }
    }
}

/// The link layer of `frame` (and PPPoE, between Ethernet and IP): the packet it
/// carries as etherparse's lax slices, with the link facts written to `link`. A
/// frame that carries nothing to decode further gives its [`Decoded`] instead,
/// counted (`link_truncated`, `non_ip`, `ip_malformed`, `unknown_linktype`).
fn link_layer<'a>(
    frame: &Frame<'a>,
    link: &mut LinkMeta,
    stats: &mut Stats,
    log: &mut AnomalyLog,
) -> Result<LaxSlicedPacket<'a>, Decoded<'static>> {
    let data = frame.data;
    let sliced = match frame.link {
        Linktype(LINKTYPE_ETHERNET) => match LaxSlicedPacket::from_ethernet(data) {
            Ok(p) => p,
            Err(_) => return Err(truncated_link(stats, *link)),
        },
        Linktype(LINKTYPE_LINUX_SLL2) => match Sll2Packet::new_checked(data) {
            Ok(p) => {
                link.ifindex = Some(p.ifindex());
                link.src_mac = p.source_mac();
                match ether_payload(p.protocol(), &data[Sll2Packet::<&[u8]>::HEADER_LEN..]) {
                    Some(s) => s,
                    None => return Err(non_ip(stats, *link)),
                }
            }
            Err(_) => return Err(truncated_link(stats, *link)),
        },
        Linktype(LINKTYPE_LINUX_SLL) => match SllPacket::new_checked(data) {
            Ok(p) => {
                link.src_mac = p.source_mac();
                match ether_payload(p.protocol(), &data[SllPacket::<&[u8]>::HEADER_LEN..]) {
                    Some(s) => s,
                    None => return Err(non_ip(stats, *link)),
                }
            }
            Err(_) => return Err(truncated_link(stats, *link)),
        },
        Linktype(t @ (LINKTYPE_NULL | LINKTYPE_LOOP)) => {
            match cooked::loopback_family(data, t == LINKTYPE_LOOP) {
                Ok(LoopbackFamily::Ipv4 | LoopbackFamily::Ipv6) => {
                    match LaxSlicedPacket::from_ip(&data[4..]) {
                        Ok(p) => p,
                        Err(_) => return Err(ip_malformed(stats, *link)),
                    }
                }
                Ok(LoopbackFamily::Other(_)) => return Err(non_ip(stats, *link)),
                Err(_) => return Err(truncated_link(stats, *link)),
            }
        }
        Linktype(
            LINKTYPE_RAW_OLD | LINKTYPE_RAW_OPENBSD | LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6,
        ) => match LaxSlicedPacket::from_ip(data) {
            Ok(p) => p,
            Err(_) => return Err(ip_malformed(stats, *link)),
        },
        Linktype(LINKTYPE_NFLOG) => match nflog::payload(data) {
            Ok(nflog::NflogRecord {
                payload: Some(ip), ..
            }) => match LaxSlicedPacket::from_ip(ip) {
                Ok(p) => p,
                Err(_) => return Err(ip_malformed(stats, *link)),
            },
            Ok(_) => {
                stats.nflog_no_payload += 1;
                return Err(non_ip(stats, *link));
            }
            Err(e) => {
                log.push("link_truncated", frame.ts, || format!("NFLOG: {e}"));
                return Err(truncated_link(stats, *link));
            }
        },
        _ => {
            stats.unknown_linktype += 1;
            return Err(Decoded {
                link: *link,
                net: Network::None,
            });
        }
    };

    if let Some(LinkSlice::Ethernet2(eth)) = &sliced.link {
        link.src_mac = Some(eth.source());
        link.dst_mac = Some(eth.destination());
    }
    if let Some(LaxLinkExtSlice::Vlan(v)) = sliced.link_exts.first() {
        link.vlan = Some(v.vlan_identifier().value());
    }

    pppoe(sliced, *link, stats)
}

/// A PPPoE session frame (EtherType 0x8864) carries its IP packet behind a 6-byte
/// PPPoE header and a 2-byte PPP protocol; any other packet passes unchanged.
fn pppoe<'a>(
    sliced: LaxSlicedPacket<'a>,
    link: LinkMeta,
    stats: &mut Stats,
) -> Result<LaxSlicedPacket<'a>, Decoded<'static>> {
    match (&sliced.net, sliced.ether_payload()) {
        (None, Some(p)) if p.ether_type == EtherType(0x8864) => {
            let b = p.payload;
            match b.get(6..8) {
                Some([0x00, 0x21]) | Some([0x00, 0x57]) => {
                    LaxSlicedPacket::from_ip(&b[8..]).map_err(|_| ip_malformed(stats, link))
                }
                _ => Err(non_ip(stats, link)),
            }
        }
        _ => Ok(sliced),
    }
}

/// The payload of an unfragmented IP packet of protocol GRE (47); a fragmented one
/// is decoded once reassembled (`Decoder::decapsulate_reassembled`).
fn gre_payload<'a>(sliced: &LaxSlicedPacket<'a>) -> Option<&'a [u8]> {
    let payload = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => ip.payload(),
        Some(LaxNetSlice::Ipv6(ip)) => ip.payload(),
        _ => return None,
    };
    (payload.ip_number == IpNumber::GRE && !payload.fragmented).then_some(payload.payload)
}

fn ether_payload(protocol: u16, payload: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    (protocol >= 0x0600).then(|| LaxSlicedPacket::from_ether_type(EtherType(protocol), payload))
}

/// Reads an Ethernet/IPv4 ARP packet (hardware type 1, protocol 0x0800, lengths 6/4).
fn arp_info(b: &[u8]) -> Option<ArpInfo> {
    if b.len() < 28 || b[4] != 6 || b[5] != 4 || u16::from_be_bytes([b[2], b[3]]) != 0x0800 {
        return None;
    }
    let mut sender_mac = [0u8; 6];
    sender_mac.copy_from_slice(&b[8..14]);
    Some(ArpInfo {
        operation: u16::from_be_bytes([b[6], b[7]]),
        sender_mac,
        sender_ip: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
        target_ip: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
    })
}

fn truncated_link(stats: &mut Stats, link: LinkMeta) -> Decoded<'static> {
    stats.link_truncated += 1;
    Decoded {
        link,
        net: Network::None,
    }
}

fn non_ip(stats: &mut Stats, link: LinkMeta) -> Decoded<'static> {
    stats.non_ip += 1;
    Decoded {
        link,
        net: Network::None,
    }
}

fn ip_malformed(stats: &mut Stats, link: LinkMeta) -> Decoded<'static> {
    stats.ip_malformed += 1;
    Decoded {
        link,
        net: Network::None,
    }
}

/// The last fragment header's (identification, offset, more fragments) among the IPv6
/// extension headers in `rest`, the first of type `first`.
///
/// Walks the headers with etherparse's checked slices rather than its
/// `Ipv6ExtensionsSlice` iterator: when the lax parse stopped at a header it could not
/// parse (a Hop-by-Hop header after a Fragment header, a truncated Destination
/// Options header), the iterator goes on past the end of the slice and reads memory
/// out of bounds (etherparse 0.21; found by the `decode_frame` fuzzer, input kept in
/// `fuzz/regressions/decode_frame/`).
fn ipv6_fragment(first: Option<IpNumber>, mut rest: &[u8]) -> Option<(u32, IpFragOffset, bool)> {
    let mut next = first?;
    let mut frag = None;
    while !rest.is_empty() {
        let (len, after) = match next {
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let Ok(f) = Ipv6FragmentHeaderSlice::from_slice(rest) else {
                    break;
                };
                frag = Some((f.identification(), f.fragment_offset(), f.more_fragments()));
                (f.slice().len(), f.next_header())
            }
            IpNumber::AUTHENTICATION_HEADER => {
                let Ok(a) = IpAuthHeaderSlice::from_slice(rest) else {
                    break;
                };
                (a.slice().len(), a.next_header())
            }
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let Ok(h) = Ipv6RawExtHeaderSlice::from_slice(rest) else {
                    break;
                };
                (h.slice().len(), h.next_header())
            }
            _ => break,
        };
        rest = &rest[len..];
        next = after;
    }
    frag
}

#[cfg(test)]
mod tests;
