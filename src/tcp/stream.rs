//! One direction of a TCP connection: puts segments back in sequence order and turns
//! them into [`StreamEvent`]s.
//!
//! In-order data is handed on straight from the packet buffer (no copy); only
//! segments that arrive ahead of a hole are copied, into a buffer bounded by
//! [`MAX_BUFFERED_BYTES`] and [`MAX_BUFFERED_SEGMENTS`]. A hole is declared a gap (and
//! the stream moves on) when the peer has acknowledged data past it (so the capture
//! missed it, it will never be retransmitted), when the buffer is full, or when the
//! connection ends.
//!
//! Overlaps are first-wins: the bytes that reached the capture point first are the
//! ones delivered, and later copies only add what lies beyond them. When a later
//! copy disagrees with the first, the hosts' own policies (first-wins or last-wins,
//! depending on the stack and on where the data sat) may have read something else
//! than flowtrace: that is counted in `tcp_conflicting_overlaps`. It is checked
//! byte for byte between segments buffered ahead of a hole, and for a retransmission
//! of delivered data against the fingerprints of the last [`RECENT_SEGMENTS`]
//! segments delivered (same sequence number and length: a retransmission cut
//! differently from its original is not compared; the fingerprint covers a
//! segment's length and its first and last 32 bytes, docs/hostile.md).

use super::SeqNumber;
use crate::anomaly::Stats;

/// Bytes a direction may buffer ahead of a hole.
pub const MAX_BUFFERED_BYTES: usize = 256 << 10;
/// Segments a direction may buffer ahead of a hole.
pub const MAX_BUFFERED_SEGMENTS: usize = 128;
/// Delivered segments whose fingerprint a direction keeps, to compare
/// retransmissions with (12 bytes each).
pub const RECENT_SEGMENTS: usize = 4;

/// A delivered segment: where it sat and a fingerprint of its bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Recent {
    seq: u32,
    len: u32,
    fingerprint: u32,
}

/// Bytes at each end of a segment that its fingerprint covers.
const FINGERPRINT_EDGE: usize = 32;
// An edge is one 8-byte word per lane of `fingerprint`.
const _: () = assert!(FINGERPRINT_EDGE == 4 * 8);

/// A 32-bit fingerprint of a segment: its length and its first and last
/// [`FINGERPRINT_EDGE`] bytes (all of it when shorter than both), hashed by four
/// add-rotate lanes folded by a multiply.
///
/// Why not every byte: flowtrace otherwise never reads body bytes (HTTP bodies are
/// counted, not scanned), and hashing all of a full-size segment measured 73-95 ns,
/// about 6 % of the time to read a bulk-transfer capture (docs/hostile.md); the ends
/// cost a few ns. A conflicting copy differs at its start in the cases seen (another
/// request line, other headers, an evasion tool's filler); a change confined to the
/// middle of a segment longer than 64 bytes is not detected. Each lane step is a
/// bijection of its state, so any change within the covered bytes that is confined to
/// one 8-byte word always changes the fingerprint. Not cryptographic.
fn fingerprint(b: &[u8]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [b.len() as u64, K, K.rotate_left(16), K.rotate_left(32)];
    // Words in turn to the four lanes; a last partial word zero-padded.
    let mut add = |part: &[u8]| {
        let mut words = part.chunks_exact(8);
        for (i, w) in (&mut words).enumerate() {
            let lane = &mut lanes[i % 4];
            let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
            *lane = lane.wrapping_add(w).rotate_left(1);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            lanes[(part.len() / 8) % 4] ^= u64::from_le_bytes(last);
        }
    };
    if b.len() <= 2 * FINGERPRINT_EDGE {
        add(b);
    } else {
        // Each edge is one word per lane: what `add` does, unrolled.
        for edge in [&b[..FINGERPRINT_EDGE], &b[b.len() - FINGERPRINT_EDGE..]] {
            for (lane, w) in lanes.iter_mut().zip(edge.chunks_exact(8)) {
                let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
                *lane = lane.wrapping_add(w).rotate_left(1);
            }
        }
    }
    let h = lanes
        .iter()
        .fold(0u64, |h, l| (h ^ l).wrapping_mul(K).rotate_left(27));
    (h >> 32) as u32 ^ h as u32
}

/// Where delivered bytes sat on the wire: the sequence number of their first byte
/// and the acknowledgement number of the segment that carried them. NAT changes
/// neither, so the pair names one request at every capture point it crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StreamPos {
    /// Sequence number of the first byte.
    pub seq: u32,
    /// Acknowledgement number of the carrying segment (0 without ACK).
    pub ack: u32,
}

/// What a direction delivers, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// The next bytes of the stream, and where they start.
    Data(&'a [u8], StreamPos),
    /// `n` bytes of the stream that the capture does not hold.
    Gap(u64),
    /// The sender closed this direction (FIN), after all its data.
    Fin,
}

#[derive(Debug)]
struct Pending {
    seq: SeqNumber,
    ack: u32,
    data: Vec<u8>,
    missing: u32,
}

impl Pending {
    fn end(&self) -> SeqNumber {
        self.seq + (self.data.len() as u32 + self.missing)
    }
}

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub struct HalfStream {
    /// Initial sequence number, when the SYN was seen.
    pub isn: Option<SeqNumber>,
    /// Sequence number of the next byte to deliver.
    next: Option<SeqNumber>,
    fin_at: Option<SeqNumber>,
    fin_delivered: bool,
    /// Highest acknowledgement the peer sent for this direction.
    peer_ack: Option<SeqNumber>,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// Bytes delivered (data and gaps).
    pub delivered: u64,
    /// The last delivered segments, to compare retransmissions with (a ring).
    recent: [Recent; RECENT_SEGMENTS],
    recent_next: u8,
}

impl HalfStream {
    /// Heap bytes of the out-of-order buffer (for the memory budget).
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes + self.pending.capacity() * std::mem::size_of::<Pending>()
    }

    /// Whether the FIN was delivered.
    pub fn finished(&self) -> bool {
        self.fin_delivered
    }

    /// Handles one segment sent in this direction.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        seq: u32,
        ack: u32,
        syn: bool,
        fin: bool,
        payload: &[u8],
        missing: u32,
        stats: &mut Stats,
        emit: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let mut seq = SeqNumber(seq);
        if syn {
            if self.isn.is_none() {
                self.isn = Some(seq);
            }
            seq = seq + 1;
        }
        let next = *self.next.get_or_insert(seq);
        let len = payload.len() as u32 + missing;
        if fin {
            self.fin_at.get_or_insert(seq + len);
        }
        if len > 0 {
            let rel = seq - next;
            if rel as i64 + len as i64 <= 0 {
                stats.tcp_retransmitted += 1;
                if missing == 0 && self.conflicts_with_recent(seq, payload) {
                    stats.tcp_conflicting_overlaps += 1;
                }
            } else if rel <= 0 {
                if rel < 0 {
                    stats.tcp_overlapping += 1;
                }
                self.deliver(seq, ack, payload, missing, stats, emit);
                self.drain(stats, emit);
            } else if self.peer_ack.is_some_and(|a| a - next > 0) {
                // The peer acknowledged bytes we never saw: the capture lost them.
                self.gap_to(seq, stats, emit);
                self.deliver(seq, ack, payload, missing, stats, emit);
                self.drain(stats, emit);
            } else {
                stats.tcp_out_of_order += 1;
                self.buffer(seq, ack, payload, missing, stats);
                if self.pending_bytes > MAX_BUFFERED_BYTES
                    || self.pending.len() > MAX_BUFFERED_SEGMENTS
                {
                    stats.tcp_reassembly_overflows += 1;
                    self.flush(stats, emit);
                }
            }
        }
        self.check_fin(emit);
    }

    /// Notes an acknowledgement the peer sent for this direction's data; a hole the
    /// peer has acknowledged past is lost from the capture and becomes a gap.
    pub fn peer_acked(
        &mut self,
        ack: u32,
        stats: &mut Stats,
        emit: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let ack = SeqNumber(ack);
        if self.peer_ack.is_none_or(|a| ack - a > 0) {
            self.peer_ack = Some(ack);
        }
        let Some(next) = self.next else { return };
        if !self.pending.is_empty() && ack - next > 0 {
            // Deliver up to the ack: everything buffered below it is final.
            while let Some(first) = self.pending.first() {
                if first.seq - ack >= 0 {
                    break;
                }
                let p = self.pending.remove(0);
                self.pending_bytes -= p.data.len();
                self.gap_to(p.seq, stats, emit);
                self.deliver(p.seq, p.ack, &p.data, p.missing, stats, emit);
            }
            self.drain(stats, emit);
            self.check_fin(emit);
        }
    }

    /// Delivers everything buffered, with gaps for the holes (the connection ends).
    pub fn flush(&mut self, stats: &mut Stats, emit: &mut impl FnMut(StreamEvent<'_>)) {
        while !self.pending.is_empty() {
            let p = self.pending.remove(0);
            self.pending_bytes -= p.data.len();
            self.gap_to(p.seq, stats, emit);
            self.deliver(p.seq, p.ack, &p.data, p.missing, stats, emit);
        }
        if let (Some(fin), Some(next)) = (self.fin_at, self.next) {
            if fin - next > 0 {
                self.gap_to(fin, stats, emit);
            }
        }
        self.check_fin(emit);
    }

    /// Whether `payload` at `seq` repeats a recently delivered segment (same
    /// sequence number and length) with other bytes.
    fn conflicts_with_recent(&self, seq: SeqNumber, payload: &[u8]) -> bool {
        let len = payload.len() as u32;
        len > 0
            && self
                .recent
                .iter()
                .any(|r| r.seq == seq.0 && r.len == len && r.fingerprint != fingerprint(payload))
    }

    /// Whether `payload` at `seq` disagrees with a buffered segment where they
    /// overlap (both are in hand: compared byte for byte).
    fn conflicts_with_pending(&self, seq: SeqNumber, payload: &[u8]) -> bool {
        let end = seq + payload.len() as u32;
        self.pending.iter().any(|p| {
            let p_end = p.seq + p.data.len() as u32;
            if end - p.seq <= 0 || p_end - seq <= 0 {
                return false;
            }
            let from = if seq - p.seq > 0 { seq } else { p.seq };
            let to = if end - p_end < 0 { end } else { p_end };
            let n = (to - from).max(0) as usize;
            let a = (from - seq) as usize;
            let b = (from - p.seq) as usize;
            payload.get(a..a + n) != p.data.get(b..b + n)
        })
    }

    fn buffer(
        &mut self,
        seq: SeqNumber,
        ack: u32,
        payload: &[u8],
        missing: u32,
        stats: &mut Stats,
    ) {
        if self.conflicts_with_pending(seq, payload) {
            stats.tcp_conflicting_overlaps += 1;
        }
        // After the segments buffered at the same sequence number: the first copy
        // is delivered first (first-wins).
        let at = self.pending.partition_point(|p| p.seq - seq <= 0);
        if let Some(p) = at.checked_sub(1).and_then(|i| self.pending.get(i)) {
            if p.seq == seq && p.data.len() + p.missing as usize >= payload.len() + missing as usize
            {
                return; // a retransmission of a buffered segment
            }
        }
        self.pending_bytes += payload.len();
        self.pending.insert(
            at,
            Pending {
                seq,
                ack,
                data: payload.to_vec(),
                missing,
            },
        );
    }

    /// Emits a gap from the next expected byte up to `seq`.
    fn gap_to(
        &mut self,
        seq: SeqNumber,
        stats: &mut Stats,
        emit: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let Some(next) = self.next else { return };
        let hole = seq - next;
        if hole > 0 {
            stats.tcp_gaps += 1;
            stats.tcp_gap_bytes += hole as u64;
            emit(StreamEvent::Gap(hole as u64));
            self.delivered += hole as u64;
            self.next = Some(seq);
        }
    }

    /// Delivers the part of a segment at `seq` past what was already delivered.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        seq: SeqNumber,
        ack: u32,
        payload: &[u8],
        missing: u32,
        stats: &mut Stats,
        emit: &mut impl FnMut(StreamEvent<'_>),
    ) {
        let next = self.next.unwrap_or(seq);
        let skip = (next - seq).max(0) as usize;
        let total = payload.len() + missing as usize;
        if skip >= total {
            return;
        }
        if skip < payload.len() {
            let pos = StreamPos {
                seq: (seq + skip as u32).0,
                ack,
            };
            if skip == 0 {
                let slot = usize::from(self.recent_next) % RECENT_SEGMENTS;
                self.recent[slot] = Recent {
                    seq: seq.0,
                    len: payload.len() as u32,
                    fingerprint: fingerprint(payload),
                };
                self.recent_next = self.recent_next.wrapping_add(1);
            }
            emit(StreamEvent::Data(&payload[skip..], pos));
        }
        let missing_left = (total - skip).min(missing as usize) as u64;
        if missing_left > 0 {
            stats.tcp_gaps += 1;
            stats.tcp_gap_bytes += missing_left;
            emit(StreamEvent::Gap(missing_left));
        }
        self.delivered += (total - skip) as u64;
        self.next = Some(seq + total as u32);
    }

    /// Delivers buffered segments that have become contiguous.
    fn drain(&mut self, stats: &mut Stats, emit: &mut impl FnMut(StreamEvent<'_>)) {
        while let (Some(first), Some(next)) = (self.pending.first(), self.next) {
            if first.seq - next > 0 {
                break;
            }
            let p = self.pending.remove(0);
            self.pending_bytes -= p.data.len();
            if p.end() - next > 0 {
                self.deliver(p.seq, p.ack, &p.data, p.missing, stats, emit);
            } else {
                stats.tcp_retransmitted += 1;
            }
        }
    }

    fn check_fin(&mut self, emit: &mut impl FnMut(StreamEvent<'_>)) {
        if self.fin_delivered || !self.pending.is_empty() {
            return;
        }
        if let (Some(fin), Some(next)) = (self.fin_at, self.next) {
            if fin - next <= 0 {
                self.fin_delivered = true;
                emit(StreamEvent::Fin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        D(Vec<u8>),
        G(u64),
        F,
    }

    fn run(segments: &[(u32, bool, bool, &[u8])]) -> (Vec<Ev>, Stats) {
        let mut h = HalfStream::default();
        let mut stats = Stats::default();
        let mut out = Vec::new();
        for &(seq, syn, fin, data) in segments {
            h.segment(seq, 0, syn, fin, data, 0, &mut stats, &mut |e| {
                out.push(own(e))
            });
        }
        h.flush(&mut stats, &mut |e| out.push(own(e)));
        (merge(out), stats)
    }

    fn own(e: StreamEvent<'_>) -> Ev {
        match e {
            StreamEvent::Data(d, _) => Ev::D(d.to_vec()),
            StreamEvent::Gap(n) => Ev::G(n),
            StreamEvent::Fin => Ev::F,
        }
    }

    /// Joins adjacent data events so tests compare bytes, not segmentation.
    fn merge(events: Vec<Ev>) -> Vec<Ev> {
        let mut out: Vec<Ev> = Vec::new();
        for e in events {
            match (out.last_mut(), e) {
                (Some(Ev::D(a)), Ev::D(b)) => a.extend_from_slice(&b),
                (_, e) => out.push(e),
            }
        }
        out
    }

    #[test]
    fn in_order_with_handshake_and_fin() {
        let (ev, _) = run(&[
            (100, true, false, b""),
            (101, false, false, b"abc"),
            (104, false, true, b"de"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"abcde".to_vec()), Ev::F]);
    }

    #[test]
    fn out_of_order_is_reordered() {
        let (ev, stats) = run(&[
            (0, true, false, b""),
            (4, false, false, b"def"),
            (1, false, false, b"abc"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"abcdef".to_vec())]);
        assert_eq!(stats.tcp_out_of_order, 1);
    }

    #[test]
    fn retransmission_and_overlap() {
        let (ev, stats) = run(&[
            (0, true, false, b""),
            (1, false, false, b"abcd"),
            (1, false, false, b"abcd"),
            (3, false, false, b"cdef"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"abcdef".to_vec())]);
        assert_eq!((stats.tcp_retransmitted, stats.tcp_overlapping), (1, 1));
    }

    /// A retransmission with other bytes than the delivered original is counted;
    /// an identical one is not; the first copy is what was delivered.
    #[test]
    fn conflicting_retransmission_is_counted_first_wins() {
        let (ev, stats) = run(&[
            (0, true, false, b""),
            (1, false, false, b"GET /a HTTP/1.1"),
            (16, false, false, b"\r\n\r\n"),
            (1, false, false, b"GET /a HTTP/1.1"),
            (1, false, false, b"GET /b HTTP/1.1"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"GET /a HTTP/1.1\r\n\r\n".to_vec())]);
        assert_eq!(
            (stats.tcp_retransmitted, stats.tcp_conflicting_overlaps),
            (2, 1)
        );
    }

    /// Segments buffered ahead of a hole that overlap with different bytes are
    /// compared byte for byte; the first to arrive is delivered.
    #[test]
    fn conflicting_buffered_overlap_is_counted_first_wins() {
        let (ev, stats) = run(&[
            (0, true, false, b""),
            (5, false, false, b"efgh"),
            (5, false, false, b"EFGHIJ"),
            (7, false, false, b"ghij"),
            (1, false, false, b"abcd"),
        ]);
        // `IJ` came before `ij`; `EFGHIJ` and `ghij` each disagree with an earlier copy.
        assert_eq!(ev, vec![Ev::D(b"abcdefghIJ".to_vec())]);
        assert_eq!(stats.tcp_conflicting_overlaps, 2);
        // The same overlaps with agreeing bytes count nothing.
        let (ev, stats) = run(&[
            (0, true, false, b""),
            (5, false, false, b"efgh"),
            (5, false, false, b"efghij"),
            (7, false, false, b"ghij"),
            (1, false, false, b"abcd"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"abcdefghij".to_vec())]);
        assert_eq!(stats.tcp_conflicting_overlaps, 0);
    }

    /// The unrolled edges hash as the word-by-word walk over both edges does.
    #[test]
    fn fingerprint_of_long_segments_is_the_walk_over_their_edges() {
        fn walked(b: &[u8]) -> u32 {
            const K: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut lanes = [b.len() as u64, K, K.rotate_left(16), K.rotate_left(32)];
            let edges = [&b[..FINGERPRINT_EDGE], &b[b.len() - FINGERPRINT_EDGE..]];
            for w in edges.iter().flat_map(|e| e.chunks_exact(8)).enumerate() {
                let lane = &mut lanes[w.0 % 4];
                *lane = lane
                    .wrapping_add(u64::from_le_bytes(w.1.try_into().unwrap()))
                    .rotate_left(1);
            }
            let h = lanes
                .iter()
                .fold(0u64, |h, l| (h ^ l).wrapping_mul(K).rotate_left(27));
            (h >> 32) as u32 ^ h as u32
        }
        let bytes: Vec<u8> = (0..1500u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in [65, 66, 100, 333, 1459, 1460, 1500] {
            assert_eq!(fingerprint(&bytes[..len]), walked(&bytes[..len]), "{len}");
        }
    }

    #[test]
    fn fingerprint_sees_its_edges_and_the_length() {
        let base = vec![7u8; 1460];
        let f = fingerprint(&base);
        for i in [0, 1, 7, 8, 15, 16, 31, 1428, 1443, 1444, 1459] {
            let mut b = base.clone();
            b[i] ^= 1;
            assert_ne!(fingerprint(&b), f, "byte {i}");
        }
        assert_ne!(fingerprint(&base[..1459]), f);
        // Short segments are covered whole.
        let short = vec![9u8; 60];
        for i in 0..60 {
            let mut b = short.clone();
            b[i] ^= 0x80;
            assert_ne!(fingerprint(&b), fingerprint(&short), "byte {i}");
        }
    }
    /// How long a full-size segment's fingerprint takes (run with `--ignored
    /// --nocapture` in release): docs/hostile.md has the figure.
    #[test]
    #[ignore]
    fn fingerprint_cost() {
        let seg: Vec<u8> = (0..1460u32).map(|i| i as u8).collect();
        let n = 2_000_000u32;
        let t = std::time::Instant::now();
        let mut acc = 0u32;
        for i in 0..n {
            acc ^= fingerprint(std::hint::black_box(&seg[..1460 - (i as usize & 1)]));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("fingerprint of 1460 bytes: {ns:.1} ns ({acc})");
    }

    #[test]
    fn overlap_into_buffered_segment() {
        let (ev, _) = run(&[
            (0, true, false, b""),
            (6, false, false, b"fgh"),
            (1, false, false, b"abcdefg"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"abcdefgh".to_vec())]);
    }

    #[test]
    fn hole_never_filled_becomes_gap_at_flush() {
        let (ev, stats) = run(&[
            (0, true, false, b""),
            (1, false, false, b"ab"),
            (6, false, true, b"fg"),
        ]);
        assert_eq!(
            ev,
            vec![
                Ev::D(b"ab".to_vec()),
                Ev::G(3),
                Ev::D(b"fg".to_vec()),
                Ev::F
            ]
        );
        assert_eq!((stats.tcp_gaps, stats.tcp_gap_bytes), (1, 3));
    }

    #[test]
    fn ack_past_hole_declares_gap_immediately() {
        let mut h = HalfStream::default();
        let mut stats = Stats::default();
        let mut out = Vec::new();
        h.segment(0, 0, true, false, b"", 0, &mut stats, &mut |e| {
            out.push(own(e))
        });
        h.segment(1, 0, false, false, b"ab", 0, &mut stats, &mut |e| {
            out.push(own(e))
        });
        h.segment(6, 0, false, false, b"fg", 0, &mut stats, &mut |e| {
            out.push(own(e))
        });
        assert_eq!(out.len(), 1);
        h.peer_acked(8, &mut stats, &mut |e| out.push(own(e)));
        assert_eq!(
            merge(out),
            vec![Ev::D(b"ab".to_vec()), Ev::G(3), Ev::D(b"fg".to_vec())]
        );
    }

    #[test]
    fn snaplen_missing_bytes_are_a_gap() {
        let mut h = HalfStream::default();
        let mut stats = Stats::default();
        let mut out = Vec::new();
        h.segment(10, 0, false, false, b"abc", 5, &mut stats, &mut |e| {
            out.push(own(e))
        });
        h.segment(18, 0, false, false, b"x", 0, &mut stats, &mut |e| {
            out.push(own(e))
        });
        assert_eq!(
            out,
            vec![Ev::D(b"abc".to_vec()), Ev::G(5), Ev::D(b"x".to_vec())]
        );
    }

    #[test]
    fn sequence_wraps() {
        let (ev, _) = run(&[
            (u32::MAX - 1, true, false, b""),
            (u32::MAX, false, false, b"ab"),
            (1, false, false, b"cd"),
        ]);
        assert_eq!(ev, vec![Ev::D(b"abcd".to_vec())]);
    }

    #[test]
    fn buffer_is_bounded() {
        let mut h = HalfStream::default();
        let mut stats = Stats::default();
        let mut events = 0;
        h.segment(0, 0, true, false, b"", 0, &mut stats, &mut |_| {});
        let chunk = vec![0u8; 1000];
        for i in 0..400u32 {
            h.segment(
                2 + i * 1000,
                0,
                false,
                false,
                &chunk,
                0,
                &mut stats,
                &mut |_| events += 1,
            );
            assert!(h.pending_bytes <= MAX_BUFFERED_BYTES + 1000);
        }
        assert!(stats.tcp_reassembly_overflows >= 1);
        assert!(events > 0);
    }

    #[test]
    fn midstream_pickup_starts_at_first_segment() {
        let (ev, _) = run(&[(5000, false, false, b"HTTP/1.1 200 OK\r\n")]);
        assert_eq!(ev, vec![Ev::D(b"HTTP/1.1 200 OK\r\n".to_vec())]);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Segments delivered in any order, with duplicates and overlaps, rebuild the
        /// stream exactly (nothing is lost while the buffer bound is not reached).
        #[test]
        fn any_order_rebuilds_the_stream(data in prop::collection::vec(any::<u8>(), 1..3000),
                                         cuts in prop::collection::vec(any::<usize>(), 0..30),
                                         order in prop::collection::vec(any::<usize>(), 0..60),
                                         isn in any::<u32>()) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % data.len()).collect();
            points.push(0);
            points.sort_unstable();
            points.dedup();
            let mut segs: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
            segs.push((*points.last().unwrap(), data.len()));
            // Overlapping duplicates of some segments, extended by a few bytes.
            let extra: Vec<(usize, usize)> = order.iter().take(5).map(|o| {
                let (s, e) = segs[o % segs.len()];
                (s, (e + 7).min(data.len()))
            }).collect();
            segs.extend(extra);
            // Shuffle deterministically by the `order` draws.
            for (i, o) in order.iter().enumerate() {
                let n = segs.len();
                segs.swap(i % n, o % n);
            }
            let mut h = HalfStream::default();
            let mut stats = Stats::default();
            let mut out = Vec::new();
            let mut gaps = 0u64;
            h.segment(isn, 0, true, false, b"", 0, &mut stats, &mut |_| {});
            for (s, e) in segs {
                h.segment(isn.wrapping_add(1 + s as u32), 0, false, false, &data[s..e], 0, &mut stats, &mut |ev| match ev {
                    StreamEvent::Data(d, _) => out.extend_from_slice(d),
                    StreamEvent::Gap(n) => gaps += n,
                    StreamEvent::Fin => {}
                });
            }
            h.flush(&mut stats, &mut |ev| if let StreamEvent::Data(d, _) = ev { out.extend_from_slice(d) });
            prop_assert_eq!(gaps, 0);
            prop_assert_eq!(out, data);
        }
    }
}
