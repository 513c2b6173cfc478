//! Counters of everything seen, skipped, malformed or unknown, and a bounded sample of
//! individual anomalies.
//!
//! Anomalies are data, not errors (Zeek's `weird.log` is the model): a bad packet bumps
//! a counter and the run goes on. Every counter appears in the text summary and the JSON.

use crate::time::Ts;
use serde::Serialize;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters for one run. Every field is a count of packets, segments, bytes or
        /// messages, as its name says.
        #[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Every counter with its name, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name),)*].into_iter()
            }

            /// Adds every counter of `other` to this one.
            pub fn merge(&mut self, other: &Stats) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Capture files read.
    files,
    /// Frames (packet records) read.
    frames,
    /// Captured bytes of all frames.
    frame_bytes,
    /// Frames whose captured length is below their length on the wire (snaplen).
    frames_cut_by_snaplen,
    /// Frames of a link type flowtrace does not decode.
    unknown_linktype,
    /// Frames whose link-layer header is cut off.
    link_truncated,
    /// Frames carrying neither IP nor ARP (other EtherTypes, LLC, ...).
    non_ip,
    /// ARP packets.
    arp,
    /// Gratuitous ARP packets (sender IP equals target IP).
    gratuitous_arp,
    /// IPv4 packets.
    ipv4,
    /// IPv6 packets.
    ipv6,
    /// IP headers that are cut off or impossible (bad version, header length).
    ip_malformed,
    /// IP packets whose length field claims more bytes than the frame holds, for a
    /// reason other than the snaplen.
    ip_len_exceeds_frame,
    /// IPv4 packets with total length 0 (TSO on the capturing host); the frame's
    /// length is used instead.
    ipv4_zero_total_len,
    /// IP fragments seen.
    ip_fragments,
    /// Datagrams rebuilt from fragments.
    ip_reassembled,
    /// Partial datagrams dropped (an inconsistent fragment, a datagram that alone
    /// would not fit the fragment share of the memory budget, or never completed
    /// within the timeout).
    ip_fragments_dropped,
    /// Partial datagrams evicted, oldest first, to keep fragment reassembly within
    /// its share of the memory budget (a flood of fragments that never complete).
    ip_fragments_evicted,
    /// ICMP and ICMPv6 packets.
    icmp,
    /// UDP datagrams.
    udp,
    /// VRRP advertisements (IP protocol 112).
    vrrp,
    /// OpenBSD CARP advertisements (also IP protocol 112).
    carp,
    /// IP protocol 112 packets that are neither valid VRRP nor CARP.
    vrrp_malformed,
    /// IP packets of other protocols.
    other_ip_protocol,
    /// Frames found inside GRE (ERSPAN types I to III, bridged Ethernet, IP) and
    /// decoded as if captured directly; their outer and inner IP headers are both
    /// counted in `ipv4`/`ipv6`.
    gre_decapsulated,
    /// GRE or ERSPAN headers that could not be followed (cut off, version, protocol
    /// type or frame type flowtrace does not decode, or nested too deep).
    tunnel_malformed,
    /// NFLOG records without a packet (a rule that logs only metadata).
    nflog_no_payload,
    /// TCP segments.
    tcp_segments,
    /// TCP headers cut off or with an impossible data offset.
    tcp_malformed,
    /// TCP segments whose checksum does not match (only with checksum verification
    /// on; usually offloading on the capturing host). They are processed all the same.
    tcp_checksum_mismatch,
    /// TCP connections tracked (each port-reuse generation counts).
    tcp_connections,
    /// Connections picked up without their handshake.
    tcp_midstream,
    /// A new SYN on a 4-tuple whose previous connection had ended.
    tcp_port_reuse,
    /// Segments wholly inside data already delivered (retransmissions, keep-alives).
    tcp_retransmitted,
    /// Segments partly overlapping data already delivered.
    tcp_overlapping,
    /// Overlapping copies of stream bytes that disagree (a retransmission with other
    /// content than the original, or buffered segments that overlap with different
    /// bytes): flowtrace keeps the first copy; a host may have kept the last.
    tcp_conflicting_overlaps,
    /// Segments that arrived ahead of a hole and were buffered.
    tcp_out_of_order,
    /// Holes in a stream that were never filled (missing from the capture).
    tcp_gaps,
    /// Bytes missing in those holes (including payload cut by the snaplen).
    tcp_gap_bytes,
    /// Times a direction's out-of-order buffer hit its bound and was flushed as a gap.
    tcp_reassembly_overflows,
    /// Connections freed because they were idle (unclosed) past the timeout.
    tcp_evicted,
    /// Segments of new connections not tracked because the table was full of
    /// connections that are not half-open.
    tcp_untracked,
    /// Half-open connections (a SYN, perhaps a SYN-ACK, nothing else) freed, oldest
    /// first, to make room for a new connection in a full table or within the
    /// memory budget (a SYN flood).
    tcp_evicted_half_open,
    /// Established connections freed, idle longest first, to stay within the memory
    /// budget once no half-open connection was left to evict (their transactions so
    /// far are reported, unanswered requests as such).
    tcp_evicted_established,
    /// Segments with RST.
    tcp_rst,
    /// HTTP requests parsed.
    http_requests,
    /// HTTP final responses parsed.
    http_responses,
    /// HTTP interim (1xx other than 101) responses parsed.
    http_interim_responses,
    /// HTTP transactions emitted.
    http_transactions,
    /// Requests that never got a response in the capture.
    http_unanswered,
    /// Requests that waited for their response longer than correlation's
    /// `max_request_duration` and stopped holding its decisions back.
    http_pending_overdue,
    /// Requests on a connection whose other direction was never seen (a one-way
    /// capture, or NAT'd replies captured under other addresses), or whose replies
    /// had a gap (dropped packets), that stopped holding correlation back after
    /// `ONE_WAY_GRACE`.
    http_pending_one_way,
    /// Segment summaries for diagrams not recorded: more than
    /// `SegmentJournal::MAX_CONNECTION_BYTES` between two transactions of a
    /// connection, or a summary that would not fit the journal's share of the memory
    /// budget even with every other connection evicted.
    segments_not_kept,
    /// Segment summaries for diagrams evicted with their connection (the one recorded
    /// first) to keep the segment journal within its share of the memory budget.
    segments_evicted,
    /// Requests that stopped holding correlation back because their connection
    /// carried nothing after them (not even an ACK) for `ONE_WAY_GRACE`: the rest of
    /// the connection is missing from the capture (dropped packets).
    http_pending_silent,
    /// Responses with no request to pair with.
    http_orphan_responses,
    /// Messages that could not be parsed (bad start line, header syntax, chunk size).
    http_parse_errors,
    /// Header blocks over the size bound.
    http_header_overflows,
    /// Headers dropped beyond the per-message bound (count or value length).
    http_headers_dropped,
    /// Messages cut by a gap in the stream.
    http_incomplete,
    /// Connections switched away from HTTP (101, CONNECT).
    http_upgrades,
    /// Stream directions that did not start with HTTP.
    http_non_http_streams,
    /// Times the parser skipped bytes to find the next message after a gap or error.
    http_resyncs,
    /// Bytes skipped that way.
    http_skipped_bytes,
    /// Connections that started with a SOCKS 4/4a/5 handshake (HTTP parsed after it).
    socks_handshakes,
    /// SOCKS handshakes that did not end in a connected CONNECT (refused, another
    /// command, malformed, or over the length bound): no HTTP on that connection.
    socks_refused,
}

/// One anomaly worth showing individually.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Anomaly {
    /// Short kind, the name of the counter it bumped.
    pub kind: &'static str,
    /// When it happened (capture time).
    pub ts: Ts,
    /// What and where: the flow or file and the specifics.
    pub detail: String,
}

/// A bounded sample of anomalies: the first [`AnomalyLog::CAPACITY`] are kept, the rest
/// only counted, so memory does not grow with a hostile capture.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnomalyLog {
    /// The anomalies kept.
    pub samples: Vec<Anomaly>,
    /// Anomalies not kept because the sample was full.
    pub not_kept: u64,
    /// Set by the stage that logs (the HTTP stage: the connection it is handling),
    /// recorded with each sample kept in `tags`: a sharded run orders the samples of
    /// its shards by it as one run would have logged them.
    #[serde(skip)]
    pub(crate) tag: u64,
    /// `tag` at each sample kept, in order.
    #[serde(skip)]
    pub(crate) tags: Vec<u64>,
}

impl AnomalyLog {
    /// How many anomalies are kept.
    pub const CAPACITY: usize = 200;

    /// Records an anomaly; `detail` is only built if it will be kept.
    pub fn push(&mut self, kind: &'static str, ts: Ts, detail: impl FnOnce() -> String) {
        if self.samples.len() < Self::CAPACITY {
            self.samples.push(Anomaly {
                kind,
                ts,
                detail: detail(),
            });
            self.tags.push(self.tag);
        } else {
            self.not_kept += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded() {
        let mut log = AnomalyLog::default();
        for i in 0..(AnomalyLog::CAPACITY + 5) {
            log.push("x", Ts(i as i64), || format!("{i}"));
        }
        assert_eq!(log.samples.len(), AnomalyLog::CAPACITY);
        assert_eq!(log.not_kept, 5);
    }

    #[test]
    fn iter_names_every_counter() {
        let s = Stats {
            tcp_gaps: 3,
            ..Stats::default()
        };
        assert_eq!(
            s.iter().find(|(n, _)| *n == "tcp_gaps"),
            Some(("tcp_gaps", 3))
        );
        assert_eq!(
            s.iter().count(),
            serde_json::to_value(&s).unwrap().as_object().unwrap().len()
        );
    }
}
