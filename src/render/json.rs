//! The transaction record written as JSON by hand, byte for byte what serde_json
//! writes for [`TransactionRecord`]'s derived `Serialize` (the tests compare the two
//! on arbitrary records).
//!
//! Why by hand: on small-packet API traffic formatting the records was a third of the
//! run (docs/PERFORMANCE.md): serde_json escapes strings a byte at a time, formats
//! socket addresses through `fmt`, and prints each timestamp through the shortest
//! float algorithm. Here strings without anything to escape are copied whole,
//! addresses and integers go through `itoa`, and a timestamp (an integer number of
//! microseconds) is printed as digits. Anything unusual (escapes, IPv6, dates outside
//! 1970..2106, headers) goes through serde_json itself, so the output cannot drift.

use super::TransactionRecord;
use crate::http::Word;
use crate::time::Ts;
use serde_json::ser::{CompactFormatter, Formatter};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, SocketAddrV4};

/// Appends `rec` as one compact JSON object (no newline), the capture point's part
/// from `cache`.
pub(super) fn write_record(
    out: &mut Vec<u8>,
    rec: &TransactionRecord<'_>,
    cache: &mut RecordCache,
    vantage: usize,
) {
    write_record_start(out, rec);
    write_tail(out, rec, cache, vantage);
}

fn write_record_start(out: &mut Vec<u8>, rec: &TransactionRecord<'_>) {
    out.push(b'{');
    if let Some(kind) = rec.kind {
        out.extend_from_slice(b"\"type\":");
        string(out, kind);
        out.push(b',');
    }
    head(out, rec.id, rec.conn_id);
}

/// The record's numbers: `"id":N,"conn_id":M`.
pub(super) fn head(out: &mut Vec<u8>, id: u64, conn_id: u64) {
    out.extend_from_slice(b"\"id\":");
    integer(out, id);
    out.extend_from_slice(b",\"conn_id\":");
    integer(out, conn_id);
}

/// Everything of the record after its numbers, to its closing brace: what a shard
/// formats, the merger putting the numbers of the whole run in front. The capture
/// point's part is formatted once per capture point into `cache` (its file name
/// and interface were scanned for escapes in every record).
pub(super) fn write_tail(
    out: &mut Vec<u8>,
    rec: &TransactionRecord<'_>,
    cache: &mut RecordCache,
    vantage: usize,
) {
    if cache.parts.len() <= vantage {
        cache.parts.resize_with(vantage + 1, Vec::new);
    }
    let part = &mut cache.parts[vantage];
    if part.is_empty() {
        capture_part(part, rec);
    }
    out.extend_from_slice(part);
    write_after_capture(out, rec, &mut cache.times, &mut cache.addresses);
}

/// `,"capture":{...},"client":`, the part of a record that is the same for every
/// record of a capture point, into `buf` (see [`RecordCache`]).
fn capture_part(buf: &mut Vec<u8>, rec: &TransactionRecord<'_>) {
    buf.extend_from_slice(b",\"capture\":{\"file\":");
    string(buf, rec.capture.file);
    buf.extend_from_slice(b",\"interface\":");
    string(buf, rec.capture.interface);
    buf.extend_from_slice(b"},\"client\":");
}

/// What a record shares with the records before it, formatted once and kept: the
/// capture-point part (by vantage index), timestamp texts and address texts. One
/// per formatting thread.
#[derive(Default)]
pub struct RecordCache {
    parts: Vec<Vec<u8>>,
    times: Timestamps,
    addresses: Addresses,
}

/// Slots of [`Addresses`].
const ADDRESS_SLOTS: usize = 1024;

/// The text of a record's two addresses (`"C","server":"S"`) by the pair, in
/// [`ADDRESS_SLOTS`] slots chosen by a hash (a newer pair takes the slot): every
/// record of a keep-alive connection has the same two (formatting them was 2.4 %
/// of a small-packet run's instructions). IPv4 only.
#[derive(Default)]
struct Addresses(Vec<Option<(SocketAddrV4, SocketAddrV4, Digits<64>)>>);

/// Timestamp texts kept from one timestamp to the next (formatting timestamps was
/// a fifth of a record's instructions).
#[derive(Default)]
struct Timestamps {
    /// The whole seconds last written with ten digits, and those digits: a
    /// record's four timestamps, and its neighbours', mostly share them.
    seconds: Option<(u64, [u8; 10])>,
    /// The last timestamp and its text: a message in one packet starts and ends
    /// at the same time.
    last: Option<(Ts, Stamp)>,
}

/// The record from the client's address to its closing brace.
fn write_after_capture(
    out: &mut Vec<u8>,
    rec: &TransactionRecord<'_>,
    times: &mut Timestamps,
    addresses: &mut Addresses,
) {
    client_and_server(out, rec.client, rec.server, addresses);
    out.extend_from_slice(b",\"method\":");
    option(out, rec.method, word);
    out.extend_from_slice(b",\"uri\":");
    option(out, rec.uri, string);
    out.extend_from_slice(b",\"version\":");
    option(out, rec.version, plain);
    out.extend_from_slice(b",\"host\":");
    option(out, rec.host, string);
    out.extend_from_slice(b",\"status\":");
    option(out, rec.status, |o, s| integer(o, u64::from(s)));
    out.extend_from_slice(b",\"reason\":");
    option(out, rec.reason, word);
    out.extend_from_slice(b",\"interim\":[");
    for (i, s) in rec.interim.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        integer(out, u64::from(*s));
    }
    out.extend_from_slice(b"],\"request_ts\":");
    option(out, rec.request_ts, |o, t| timestamp(o, t, times));
    out.extend_from_slice(b",\"request_end_ts\":");
    option(out, rec.request_end_ts, |o, t| timestamp(o, t, times));
    out.extend_from_slice(b",\"response_ts\":");
    option(out, rec.response_ts, |o, t| timestamp(o, t, times));
    out.extend_from_slice(b",\"response_end_ts\":");
    option(out, rec.response_end_ts, |o, t| timestamp(o, t, times));
    out.extend_from_slice(b",\"duration_ms\":");
    option(out, rec.duration_ms, milliseconds);
    out.extend_from_slice(b",\"request_body_bytes\":");
    option(out, rec.request_body_bytes, integer);
    out.extend_from_slice(b",\"response_body_bytes\":");
    option(out, rec.response_body_bytes, integer);
    out.extend_from_slice(b",\"incomplete\":");
    out.extend_from_slice(if rec.incomplete { b"true" } else { b"false" });
    if let Some(target) = rec.socks_target {
        out.extend_from_slice(b",\"socks_target\":");
        string(out, target);
    }
    if let Some(h) = rec.request_headers {
        out.extend_from_slice(b",\"request_headers\":");
        serde(out, h);
    }
    if let Some(h) = rec.response_headers {
        out.extend_from_slice(b",\"response_headers\":");
        serde(out, h);
    }
    out.push(b'}');
}

fn option<T>(out: &mut Vec<u8>, v: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Anything else, through serde_json (writing to a `Vec` cannot fail).
fn serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("serialising to a Vec cannot fail");
}

fn integer(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn float(out: &mut Vec<u8>, v: f64) {
    CompactFormatter
        .write_f64(out, v)
        .expect("writing to a Vec cannot fail");
}

/// A duration in milliseconds rounded to the microsecond (`duration_ms`), as the
/// float printer writes it, without its shortest-digits search (1.3 % of a
/// small-packet run's instructions, session 36): a value that is the quotient of a
/// whole number of microseconds by 1000, below 10^12, prints as that quotient's
/// decimals (`0.36`, `5.0`). No shorter decimal lies as close to the float: one
/// with fewer decimals is at least 0.001 away, and floats below 10^12 are less
/// than 0.0002 apart. Anything else goes to the float printer.
fn milliseconds(out: &mut Vec<u8>, v: f64) {
    // Not -0.0, which prints with its sign.
    if v.is_sign_positive() && v < 1e12 {
        let micros = round(v * 1000.0) as u64;
        if micros as f64 / 1e3 == v {
            out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
            out.push(b'.');
            let (fraction, len) = decimals((micros % 1000) as u32, 3);
            let end = out.len() + usize::from(len);
            out.extend_from_slice(&fraction.to_le_bytes());
            out.truncate(end);
            return;
        }
    }
    float(out, v);
}

/// A JSON string known to hold no byte JSON escapes (a word of the parser's
/// tables, a version constant): copied without scanning it (the scans of a record's
/// five strings were 2.7 % of a small-packet run's instructions).
fn plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// A [`Word`]: a borrowed one is a table's word, written as [`plain`] text.
fn word(out: &mut Vec<u8>, w: &Word) {
    match w {
        Word::Borrowed(s) => plain(out, s),
        Word::Owned(s) => string(out, s),
    }
}

/// A JSON string: copied whole unless it holds a byte JSON escapes (control
/// characters, `"` and `\`: serde_json escapes exactly those).
fn string(out: &mut Vec<u8>, s: &str) {
    // No early exit: the loop vectorises, and most strings are short.
    let needs_escape = s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        serde(out, s);
    } else {
        plain(out, s);
    }
}

/// `"C","server":"S"`, from `addresses` when the pair was written before.
fn client_and_server(
    out: &mut Vec<u8>,
    client: &SocketAddr,
    server: &SocketAddr,
    addresses: &mut Addresses,
) {
    let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) else {
        socket_addr(out, client);
        out.extend_from_slice(b",\"server\":");
        socket_addr(out, server);
        return;
    };
    if addresses.0.is_empty() {
        addresses.0.resize(ADDRESS_SLOTS, None);
    }
    let mut hasher = rustc_hash::FxHasher::default();
    (c, s).hash(&mut hasher);
    // FxHash's high bits are its well-mixed ones (a hand-made mix of the
    // addresses and ports used 48 slots for 2,208 pairs of the small capture).
    let slot = &mut addresses.0[(hasher.finish() >> 32) as usize % ADDRESS_SLOTS];
    if let Some((sc, ss, text)) = slot {
        if sc == c && ss == s {
            text.append_to(out);
            return;
        }
    }
    // Formatted on the stack and copied once (it was nine copies per address, each
    // a call to memcpy for one to five bytes).
    let mut text = Digits::<64>::new();
    text.v4(c);
    text.push_slice(b",\"server\":");
    text.v4(s);
    text.append_to(out);
    *slot = Some((*c, *s, text));
}

fn socket_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            let mut text = Digits::<24>::new();
            text.v4(a);
            text.append_to(out);
        }
        SocketAddr::V6(_) => serde(out, addr),
    }
}

/// Every octet's decimal digits (left-aligned, zero-filled) and how many there are.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut o = 0;
    while o < 256 {
        let (h, t, u) = ((o / 100) as u8, (o / 10 % 10) as u8, (o % 10) as u8);
        table[o] = if o >= 100 {
            ([b'0' + h, b'0' + t, b'0' + u], 3)
        } else if o >= 10 {
            ([b'0' + t, b'0' + u, 0], 2)
        } else {
            ([b'0' + u, 0, 0], 1)
        };
        o += 1;
    }
    table
};

/// A short text built on the stack, at most `N` bytes.
#[derive(Clone, Copy)]
struct Digits<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Digits<N> {
    fn new() -> Self {
        Digits {
            bytes: [0; N],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    fn push_slice(&mut self, s: &[u8]) {
        self.bytes[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    /// `"A.B.C.D:P"`.
    fn v4(&mut self, a: &SocketAddrV4) {
        self.push(b'"');
        for (i, octet) in a.ip().octets().iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            self.octet(*octet);
        }
        self.push(b':');
        self.number(u64::from(a.port()));
        self.push(b'"');
    }

    /// An address octet in decimal, from a table (addresses are in every record).
    fn octet(&mut self, o: u8) {
        let (digits, len) = OCTETS[usize::from(o)];
        self.bytes[self.len..self.len + 3].copy_from_slice(&digits);
        self.len += usize::from(len);
    }

    /// `n` in decimal.
    fn number(&mut self, n: u64) {
        let mut width = 1;
        let mut power = 10;
        while width < 20 && n >= power {
            width += 1;
            power = power.wrapping_mul(10);
        }
        self.fixed(n, width);
    }

    /// The last `width` decimal digits of `n`, zero-padded: two digits at a time
    /// from a table (as itoa does), half the divisions of one at a time.
    fn fixed(&mut self, n: u64, width: usize) {
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";
        let mut rest = n;
        let mut end = self.len + width;
        while end >= self.len + 2 {
            let pair = (rest % 100) as usize * 2;
            rest /= 100;
            self.bytes[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
            end -= 2;
        }
        if end > self.len {
            self.bytes[end - 1] = b'0' + (rest % 10) as u8;
        }
        self.len += width;
    }

    /// Appends the text to `out`. All `N` bytes are copied, then the tail cut:
    /// a copy of a constant length is a few moves, where one of a variable length
    /// is a call to memcpy.
    fn append_to(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        out.extend_from_slice(&self.bytes);
        out.truncate(end);
    }
}

/// Epoch seconds with microsecond precision, as [`Ts`]'s `Serialize` writes them:
/// the microseconds are computed the same way, then printed as digits, with
/// trailing zeros dropped (`1700000000.5`, `1700000000.0`). That is exactly the
/// shortest float text while a microsecond is more than one unit in the last
/// place, i.e. below 2^32 seconds; 1 s and later keeps the float printer from
/// choosing an exponent. Other times go through the float printer.
fn timestamp(out: &mut Vec<u8>, ts: Ts, times: &mut Timestamps) {
    if let Some((last, stamp)) = &times.last {
        if *last == ts {
            stamp.append_to(out);
            return;
        }
    }
    let micros = if (1..1 << 61).contains(&ts.0) && ts.0 % 1000 == 0 {
        // Whole microseconds (every timestamp of a pcap file) before 2043: the
        // float division and rounding below give exactly these (the nanoseconds
        // as a float are off by at most 128, the quotient by at most a quarter
        // of a microsecond more: less than the half that rounding forgives), so
        // they are skipped.
        (ts.0 / 1000) as u64
    } else {
        let micros = round(ts.0 as f64 / 1000.0);
        if !(0.0..4_294_967_296e6).contains(&micros) {
            serde(out, &ts);
            return;
        }
        micros as u64
    };
    if !(1_000_000..4_294_967_296_000_000).contains(&micros) {
        serde(out, &ts);
        return;
    }
    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
    if !(1_000_000_000..10_000_000_000).contains(&secs) {
        // Before 2001 or after 2286: formatted on the stack, not kept.
        let mut text = Digits::<32>::new();
        text.number(secs);
        text.push(b'.');
        let (fraction, len) = decimals(frac as u32, 6);
        text.push_slice(&fraction.to_le_bytes()[..usize::from(len)]);
        text.append_to(out);
        return;
    }
    // Every date from 2001 to 2286: ten digits, mostly those of the timestamp
    // before.
    let seconds = match times.seconds {
        Some((s, digits)) if s == secs => digits,
        _ => {
            let mut text = Digits::<16>::new();
            text.fixed(secs, 10);
            let mut digits = [0; 10];
            digits.copy_from_slice(&text.bytes[..10]);
            times.seconds = Some((secs, digits));
            digits
        }
    };
    let (fraction, fraction_len) = decimals(frac as u32, 6);
    let stamp = Stamp {
        seconds,
        fraction,
        fraction_len,
    };
    stamp.append_to(out);
    times.last = Some((ts, stamp));
}

/// A timestamp's text from 2001 to 2286: ten digits of seconds, a dot, and one to
/// six digits of fraction (in `fraction`'s low bytes, first digit lowest).
///
/// Why not a [`Digits`]: its digits are stored a byte or two at a time and then
/// copied out in wide loads, which the processor cannot forward from the narrow
/// stores just made: the load waits for the stores to reach the cache (a fifth of
/// the timestamp's samples, session 36). The fraction is built in a register.
#[derive(Clone, Copy)]
struct Stamp {
    seconds: [u8; 10],
    fraction: u64,
    fraction_len: u8,
}

impl Stamp {
    fn append_to(&self, out: &mut Vec<u8>) {
        let end = out.len() + 11 + usize::from(self.fraction_len);
        out.extend_from_slice(&self.seconds);
        out.push(b'.');
        out.extend_from_slice(&self.fraction.to_le_bytes());
        out.truncate(end);
    }
}

/// The decimals of `frac`, a fraction of `width` digits (1 to 8, `frac` below
/// 10^width): their text in the low bytes of a word, the first digit lowest,
/// trailing zeros dropped (`0` when there are none), and how many bytes that is
/// (the bytes above are not part of it).
fn decimals(frac: u32, width: u32) -> (u64, u8) {
    debug_assert!((1..=8).contains(&width) && u64::from(frac) < 10u64.pow(width));
    if frac == 0 {
        return (u64::from(b'0'), 1);
    }
    // The digits of `frac`, the leading zeros of eight digits dropped: the
    // trailing zeros are the zero bytes at the top.
    let digits = eight_digits(frac) >> (8 * (8 - width));
    (
        digits | 0x3030_3030_3030_3030,
        8 - (digits.leading_zeros() / 8) as u8,
    )
}

/// The eight decimal digits of `n` (below 10^8, zero-padded) as the values 0-9 in
/// the bytes of a word, the first digit in the lowest byte: the digits of both
/// halves, then of their halves, found at once with multiplications by
/// reciprocals (exact for the ranges each step sees).
fn eight_digits(n: u32) -> u64 {
    debug_assert!(n < 100_000_000);
    // Two lanes of 32 bits: the high four digits, the low four.
    let fours = u64::from(n / 10_000) | (u64::from(n % 10_000) << 32);
    // x / 100 for x < 10,000 is (x * 5243) >> 19.
    let hundreds = ((fours * 5243) >> 19) & 0x0000_007f_0000_007f;
    // Four lanes of 16 bits: each two digits.
    let twos = hundreds | ((fours - hundreds * 100) << 16);
    // x / 10 for x < 100 is (x * 103) >> 10.
    let tens = ((twos * 103) >> 10) & 0x000f_000f_000f_000f;
    tens | ((twos - tens * 10) << 8)
}

/// `f64::round` without the call into libm (the baseline x86-64 target has no
/// rounding instruction), for positive values below 2^63; others (and -0.0, NaN)
/// go to `f64::round`. Exact: the integer part of a float is a float, and so is the
/// rest.
fn round(x: f64) -> f64 {
    if x.is_sign_negative() || x.is_nan() || x >= 9.2e18 {
        return x.round();
    }
    let whole = x as u64 as f64;
    if x - whole >= 0.5 {
        whole + 1.0
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpTransaction, Request, Response};
    use crate::pipeline::Vantage;
    use proptest::prelude::*;

    proptest! {
        /// The digits found at once are `format!`'s.
        #[test]
        fn eight_digits_are_formats(n in 0u32..100_000_000) {
            for n in [n, 0, 9, 10, 9_999, 10_000, 99_999_999] {
                let digits = (eight_digits(n) | 0x3030_3030_3030_3030).to_le_bytes();
                let expected = format!("{n:08}");
                prop_assert_eq!(&digits[..], expected.as_bytes());
            }
        }

        /// Durations print as serde_json prints them: the quotients of whole
        /// microseconds, and any other float.
        #[test]
        fn milliseconds_print_as_serde_json_does(
            micros in 0u64..2_000_000_000_000_000,
            small in 0u64..10_000_000,
            any in any::<f64>(),
        ) {
            for v in [micros as f64 / 1e3, small as f64 / 1e3, any, 0.0, -0.0, 0.001, 5.0] {
                let mut out = Vec::new();
                milliseconds(&mut out, v);
                let mut expected = Vec::new();
                float(&mut expected, v);
                prop_assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(expected).unwrap());
            }
        }

        /// Whole microseconds, at any date, print as serde_json prints them.
        #[test]
        fn whole_microseconds_print_as_serde_json_does(micros in 0i64..i64::MAX / 1000) {
            // 4005858909679584 µs (2096): the shortcut would print one more.
            let fixed = Ts(4_005_858_909_679_584_000);
            for ts in [Ts(micros * 1000), Ts((micros % (1 << 51)) * 1000), fixed] {
                let mut out = Vec::new();
                timestamp(&mut out, ts, &mut Timestamps::default());
                let expected = serde_json::to_string(&ts).unwrap();
                prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
            }
        }

        /// Digits by pairs write what `format!` writes, for every width.
        #[test]
        fn digits_are_formats(n in any::<u64>(), width in 1usize..=20) {
            let mut text = Digits::<24>::new();
            text.number(n);
            let expected = n.to_string();
            prop_assert_eq!(&text.bytes[..text.len], expected.as_bytes());
            let mut text = Digits::<24>::new();
            text.push(b'x');
            text.fixed(n, width);
            let full = format!("{n:020}");
            prop_assert_eq!(&text.bytes[1..text.len], &full.as_bytes()[20 - width..]);
        }
    }

    #[test]
    fn octets_are_formats() {
        for o in 0..=255u8 {
            let mut text = Digits::<8>::new();
            text.octet(o);
            assert_eq!(&text.bytes[..text.len], o.to_string().as_bytes(), "{o}");
        }
    }

    #[test]
    fn digits_at_the_edges() {
        for n in [
            0u64,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            65_535,
            u64::MAX,
        ] {
            let mut text = Digits::<24>::new();
            text.number(n);
            assert_eq!(&text.bytes[..text.len], n.to_string().as_bytes(), "{n}");
        }
    }

    fn vantages() -> Vec<Vantage> {
        vec![Vantage {
            file: "a \"b\"\\c\u{1}.pcap".into(),
            file_index: 0,
            interface: "eth0".into(),
            ifindex: None,
        }]
    }

    /// Both writers on one transaction; panics when they differ.
    fn same(t: &HttpTransaction, headers: bool, kind: Option<&'static str>) {
        let v = vantages();
        let mut rec = TransactionRecord::new(t, &v, headers);
        rec.kind = kind;
        let mut cache = RecordCache::default();
        let mut ours = Vec::new();
        write_record(&mut ours, &rec, &mut cache, 2);
        let theirs = serde_json::to_vec(&rec).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        // The capture point's part formatted once, then reused.
        let mut cached = Vec::new();
        write_record(&mut cached, &rec, &mut cache, 2);
        assert_eq!(cached, ours);
    }

    fn transaction(
        addrs: (SocketAddr, SocketAddr),
        texts: [String; 4],
        times: [i64; 4],
        status: Option<u16>,
        request: bool,
    ) -> HttpTransaction {
        let [method, uri, reason, host] = texts;
        let mut headers = crate::http::Headers::default();
        headers.push(b"Host", host.as_bytes());
        headers.push(b"X-\"q\"", b"v\\1");
        HttpTransaction {
            id: times[0].unsigned_abs(),
            conn_id: 7,
            vantage: 0,
            client: addrs.0,
            server: addrs.1,
            request: request.then(|| Request {
                method: method.into(),
                uri,
                version: "HTTP/1.1",
                headers: headers.clone(),
                body_bytes: 12,
                first_ts: Ts(times[0]),
                last_ts: Ts(times[1]),
                incomplete: false,
                wire_pos: None,
            }),
            response: status.map(|status| Response {
                status,
                reason: reason.into(),
                version: "HTTP/1.0",
                headers,
                body_bytes: 0,
                first_ts: Ts(times[2]),
                last_ts: Ts(times[3]),
                incomplete: true,
            }),
            interim: if times[1] % 2 == 0 {
                vec![100, 103]
            } else {
                Vec::new()
            },
            index_in_conn: 0,
            conn_seq: [None, None],
            handshake: Default::default(),
            conn_ttl: [None, None],
            segments: Vec::new(),
            // Present on some: a SOCKS target with text to escape now and then.
            socks_target: (times[2] % 3 == 0).then(|| format!("{host}:1080")),
        }
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn time() -> impl Strategy<Value = i64> {
        prop_oneof![
            // Capture times of today, at every precision.
            1_600_000_000_000_000_000i64..1_900_000_000_000_000_000,
            (1_600_000_000i64..1_900_000_000).prop_map(|s| s * 1_000_000_000),
            (1_600_000_000_000i64..1_900_000_000_000).prop_map(|ms| ms * 1_000_000),
            // Near the fast path's edges, and outside it.
            0i64..3_000_000_000,
            4_294_967_000_000_000_000i64..4_294_968_000_000_000_000,
            any::<i64>(),
        ]
    }

    proptest! {
        #[test]
        fn same_bytes_as_serde_json(
            addrs in (addr(), addr()),
            texts in any::<[String; 4]>(),
            times in [time(), time(), time(), time()],
            status in proptest::option::of(any::<u16>()),
            request in any::<bool>(),
            headers in any::<bool>(),
            jsonl in any::<bool>(),
        ) {
            let t = transaction(addrs, texts, times, status, request);
            same(&t, headers, jsonl.then_some("transaction"));
        }
    }

    proptest! {
        #[test]
        fn round_is_f64_round(x in any::<f64>(), whole in 0u64..1 << 53) {
            prop_assert_eq!(round(x).to_bits(), x.round().to_bits());
            for v in [whole as f64, whole as f64 + 0.5, whole as f64 - 0.5, whole as f64 / 1000.0] {
                prop_assert_eq!(round(v).to_bits(), v.round().to_bits());
            }
        }
    }

    /// One cache of addresses across more pairs than it has slots, each pair
    /// written again later (after others took its slot, or not): every record the
    /// same as serde_json's.
    #[test]
    fn cached_addresses_print_as_serde_json_does() {
        let v = vantages();
        let mut cache = RecordCache::default();
        for round in 0..2 {
            for i in 0..3 * ADDRESS_SLOTS as u32 {
                let client =
                    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1024 + (i % 7) as u16));
                let server = SocketAddr::from(([192, 0, 2, (i % 5) as u8], 80 + round));
                let t = transaction(
                    (client, server),
                    ["GET".into(), "/".into(), "OK".into(), "h".into()],
                    [1, 2, 3, 4].map(|k| 1_700_000_000_000_000_000 + k * i64::from(i)),
                    Some(200),
                    true,
                );
                for _ in 0..2 {
                    let rec = TransactionRecord::new(&t, &v, false);
                    let mut ours = Vec::new();
                    write_record(&mut ours, &rec, &mut cache, 0);
                    assert_eq!(ours, serde_json::to_vec(&rec).unwrap(), "pair {i}");
                }
            }
        }
    }

    /// One cache across timestamps that repeat, share their seconds, change
    /// them, round up into the next second and come back: each the same as
    /// serde_json's text.
    #[test]
    fn cached_seconds_print_as_serde_json_does() {
        let base = 1_700_000_000_000_000_000i64;
        let mut times = Timestamps::default();
        for ns in [
            base,
            base + 1_000,
            base + 999_999_500,
            base + 1_000_000_000,
            base + 999_999_499,
            base - 1,
            base + 7_000_000_123,
            base + 7_000_000_000,
            base + 7_000_000_000,
            4_000_000_000_000_000_000,
            4_000_000_000_000_000_000,
            base,
            base,
        ] {
            let mut ours = Vec::new();
            timestamp(&mut ours, Ts(ns), &mut times);
            let theirs = serde_json::to_vec(&Ts(ns)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{ns}"
            );
        }
    }

    #[test]
    fn timestamps_print_as_serde_json_does() {
        let base = 1_700_000_000_000_000_000i64;
        let addrs = (
            "10.0.0.1:80".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
        );
        for offset in [
            0,
            1,
            499,
            500,
            1_000,
            10_000,
            120_000,
            999_999_499,
            999_999_500,
            100_000_000,
            123_456_000,
            120_300_000,
            999_999_000,
            5_999_000,
        ] {
            let t = transaction(
                addrs,
                ["GET".into(), "/".into(), "OK".into(), "h".into()],
                [base + offset, base - offset, 1_000_000_000 + offset, offset],
                Some(200),
                true,
            );
            same(&t, false, None);
        }
    }
}
