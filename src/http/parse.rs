//! The message parser for one direction of a connection.
//!
//! Headers are parsed by httparse straight from the segment when a header block fits
//! in it (the common case), otherwise from a bounded accumulation buffer. Bodies are
//! only counted. After a gap in framing that cannot be skipped exactly, or a parse
//! error, the parser resynchronises at the next line that starts a message.

use super::{
    word, word_heap, Headers, HeadersBuilder, KeptHeaders, Pending, Request, Response, Word,
    MAX_HEADER_BLOCK, MAX_HEADER_VALUE, MAX_KEPT_HEADERS, METHODS, REASONS,
};
use crate::anomaly::{AnomalyLog, Stats};
use crate::tcp::StreamPos;
use crate::time::Ts;

/// Which messages a direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// What the parser reports to the connection.
#[derive(Debug)]
pub enum Event {
    /// A request's headers are complete (its body may follow).
    Request(Request),
    /// The last request's body is complete.
    RequestDone {
        last_ts: Ts,
        body_bytes: u64,
        incomplete: bool,
    },
    /// An interim 1xx response.
    Interim(u16),
    /// A final response, complete.
    Response(Response),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    Size,
    /// Inside chunk data.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd(u8),
    /// Trailer lines after the last chunk.
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages.
    Start,
    /// Inside a header block.
    Headers,
    /// Inside a body of known remaining length.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// A body that ends with the connection.
    UntilClose,
    /// Lost framing: skipping to the next message start.
    Resync,
    /// Not HTTP (or no longer: upgraded).
    Stopped,
}

/// A message whose headers are parsed but whose body is still coming.
#[derive(Debug)]
enum Open {
    None,
    Request,
    Response(Box<Response>),
}

/// Parser of one direction.
#[derive(Debug)]
pub struct MessageParser {
    role: Role,
    state: State,
    buf: Vec<u8>,
    open: Open,
    first_ts: Ts,
    body_bytes: u64,
    incomplete: bool,
    seen_message: bool,
    /// Final responses produced (to find the request each one answers).
    answered: usize,
    /// Where the message being parsed started on the wire.
    first_pos: Option<StreamPos>,
    /// Which headers of a message are kept.
    kept: KeptHeaders,
}

/// Whether bytes start like a request line: a method token and a space.
pub fn looks_like_request(data: &[u8]) -> bool {
    let token = data
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    (3..=20).contains(&token) && matches!(data.get(token), Some(b' ' | b'\r' | b'\n'))
        || (token == data.len() && token > 0)
}

fn looks_like_response(data: &[u8]) -> bool {
    let n = data.len().min(5);
    data[..n] == b"HTTP/"[..n] && n > 0
}

impl MessageParser {
    /// A parser for `role`, keeping the headers `kept` says.
    pub fn new(role: Role, kept: KeptHeaders) -> MessageParser {
        MessageParser {
            role,
            state: State::Start,
            buf: Vec::new(),
            open: Open::None,
            first_ts: Ts::default(),
            body_bytes: 0,
            incomplete: false,
            seen_message: false,
            answered: 0,
            first_pos: None,
            kept,
        }
    }

    /// Heap bytes held: the header buffer, and an open response's head.
    pub fn heap_bytes(&self) -> usize {
        let open = match &self.open {
            Open::Response(r) => {
                std::mem::size_of::<Response>() + word_heap(&r.reason) + r.headers.heap_bytes()
            }
            _ => 0,
        };
        self.buf.capacity() + open
    }

    /// Stops parsing (the connection switched protocols).
    pub fn stop(&mut self) {
        self.state = State::Stopped;
        self.buf = Vec::new();
    }

    /// Feeds in-order bytes. Returns false when the direction is not HTTP (any more).
    #[allow(clippy::too_many_arguments)]
    pub fn data(
        &mut self,
        ts: Ts,
        mut data: &[u8],
        pos: StreamPos,
        pending: &Pending,
        stats: &mut Stats,
        log: &mut AnomalyLog,
        events: &mut Vec<Event>,
    ) -> bool {
        self.answered = 0;
        let whole = data.len();
        while !data.is_empty() {
            match self.state {
                State::Stopped => return false,
                State::Start => {
                    let skip = data
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    data = &data[skip..];
                    if data.is_empty() {
                        break;
                    }
                    let plausible = match self.role {
                        Role::Request => looks_like_request(data),
                        Role::Response => looks_like_response(data),
                    };
                    if !plausible {
                        if self.seen_message {
                            stats.http_parse_errors += 1;
                            self.state = State::Resync;
                            continue;
                        }
                        stats.http_non_http_streams += 1;
                        self.stop();
                        return false;
                    }
                    self.first_ts = ts;
                    self.first_pos = Some(StreamPos {
                        seq: pos.seq.wrapping_add((whole - data.len()) as u32),
                        ack: pos.ack,
                    });
                    self.body_bytes = 0;
                    self.incomplete = false;
                    self.state = State::Headers;
                }
                State::Headers => {
                    let used = self.headers(ts, data, pending, stats, log, events);
                    data = &data[used..];
                }
                State::Body(remaining) => {
                    let n = remaining.min(data.len() as u64);
                    self.body_bytes += n;
                    data = &data[n as usize..];
                    if n == remaining {
                        self.finish(ts, events);
                    } else {
                        self.state = State::Body(remaining - n);
                    }
                }
                State::Chunked(c) => {
                    let used = self.chunked(ts, c, data, stats, events);
                    data = &data[used..];
                }
                State::UntilClose => {
                    self.body_bytes += data.len() as u64;
                    data = &[];
                }
                State::Resync => match find_message_start(self.role, data) {
                    Some(at) => {
                        stats.http_skipped_bytes += at as u64;
                        data = &data[at..];
                        self.buf.clear();
                        self.state = State::Start;
                    }
                    None => {
                        stats.http_skipped_bytes += data.len() as u64;
                        data = &[];
                    }
                },
            }
        }
        true
    }

    /// Parses headers from `data` (and what was buffered); returns bytes used.
    fn headers(
        &mut self,
        ts: Ts,
        data: &[u8],
        pending: &Pending,
        stats: &mut Stats,
        log: &mut AnomalyLog,
        events: &mut Vec<Event>,
    ) -> usize {
        let buffered = self.buf.len();
        let block: &[u8] = if buffered == 0 {
            data
        } else {
            let room = MAX_HEADER_BLOCK.saturating_sub(buffered);
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            &self.buf
        };
        // Uninitialised slots: filling 128 empty headers (4 KiB) for every message was
        // the largest cost of this function on small-packet traffic.
        let mut storage = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let config = httparse::ParserConfig::default();
        let kept = self.kept;
        let parsed = match self.role {
            Role::Request => {
                let mut req = httparse::Request::new(&mut []);
                match config.parse_request_with_uninit_headers(&mut req, block, &mut storage) {
                    Ok(httparse::Status::Complete(n)) => {
                        Ok(Some((n, Head::from_request(&req, kept, stats))))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => match lenient_request(block, kept, stats) {
                        Some(result) => {
                            if result.is_some() {
                                log.push("http_lenient_request_line", ts, || {
                                    format!("request line httparse rejects ({e}); parsed leniently")
                                });
                            }
                            Ok(result)
                        }
                        None => Err(e),
                    },
                }
            }
            Role::Response => {
                let mut resp = httparse::Response::new(&mut []);
                match config.parse_response_with_uninit_headers(&mut resp, block, &mut storage) {
                    Ok(httparse::Status::Complete(n)) => {
                        Ok(Some((n, Head::from_response(&resp, kept, stats))))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        match parsed {
            Ok(Some((n, head))) => {
                let used = n - buffered;
                self.buf.clear();
                self.seen_message = true;
                let at_hand = data.len() - used;
                self.start_body(ts, head, pending, stats, log, events, at_hand);
                used
            }
            Ok(None) => {
                if buffered == 0 {
                    if data.len() >= MAX_HEADER_BLOCK {
                        return self.overflow(stats);
                    }
                    self.buf.extend_from_slice(data);
                } else if self.buf.len() >= MAX_HEADER_BLOCK {
                    return self.overflow(stats);
                }
                data.len()
            }
            Err(e) => {
                stats.http_parse_errors += 1;
                let role = self.role;
                log.push("http_parse_errors", ts, || {
                    format!("{role:?} header block: {e}")
                });
                self.buf.clear();
                if !self.seen_message {
                    stats.http_non_http_streams += 1;
                    self.stop();
                    return data.len();
                }
                self.state = State::Resync;
                // Skip the bad start's first byte so resync does not find it again
                // (when it was buffered, it is already gone).
                usize::from(buffered == 0)
            }
        }
    }

    fn overflow(&mut self, stats: &mut Stats) -> usize {
        stats.http_header_overflows += 1;
        self.buf.clear();
        self.state = State::Resync;
        1
    }

    /// Acts on a parsed head; `at_hand` bytes of the body's segment follow it.
    #[allow(clippy::too_many_arguments)]
    fn start_body(
        &mut self,
        ts: Ts,
        head: Head,
        pending: &Pending,
        stats: &mut Stats,
        log: &mut AnomalyLog,
        events: &mut Vec<Event>,
        at_hand: usize,
    ) {
        let framing = head.framing(stats, log, ts);
        match head.kind {
            HeadKind::Request { method, uri } => {
                events.push(Event::Request(Request {
                    method,
                    uri,
                    version: head.version,
                    headers: head.headers,
                    body_bytes: 0,
                    first_ts: self.first_ts,
                    last_ts: ts,
                    incomplete: false,
                    wire_pos: self.first_pos,
                }));
                self.open = Open::Request;
                // A request without Content-Length or chunked coding has no body.
                self.set_framing(ts, framing.unwrap_or(Framing::Length(0)), events);
            }
            HeadKind::Response { status, reason } => {
                if (100..200).contains(&status) && status != 101 {
                    events.push(Event::Interim(status));
                    self.state = State::Start;
                    return;
                }
                let method = pending.get(self.answered).map(|(r, _)| &*r.method);
                self.answered += 1;
                // After 101, or a 2xx to CONNECT, another protocol follows: no body.
                let switches =
                    status == 101 || (method == Some("CONNECT") && (200..300).contains(&status));
                let bodiless = switches || method == Some("HEAD") || status == 204 || status == 304;
                let framing = if bodiless {
                    Framing::Length(0)
                } else {
                    framing.unwrap_or(Framing::UntilClose)
                };
                let response = Response {
                    status,
                    reason,
                    version: head.version,
                    headers: head.headers,
                    body_bytes: 0,
                    first_ts: self.first_ts,
                    last_ts: ts,
                    incomplete: false,
                };
                match framing {
                    // The whole body is in this segment (an API's small response): the
                    // response is complete as it will be once the body is counted,
                    // so it goes out now, not boxed to wait for its end (an
                    // allocation and two copies of it per response).
                    Framing::Length(len) if len <= at_hand as u64 => {
                        events.push(Event::Response(Response {
                            body_bytes: len,
                            incomplete: self.incomplete,
                            ..response
                        }));
                        self.open = Open::None;
                    }
                    _ => self.open = Open::Response(Box::new(response)),
                }
                self.set_framing(ts, framing, events);
                if switches {
                    // What follows is another protocol.
                    self.stop();
                }
            }
        }
    }

    fn set_framing(&mut self, ts: Ts, framing: Framing, events: &mut Vec<Event>) {
        match framing {
            Framing::Length(0) => self.finish(ts, events),
            Framing::Length(n) => self.state = State::Body(n),
            Framing::Chunked => self.state = State::Chunked(Chunk::Size),
            Framing::UntilClose => self.state = State::UntilClose,
        }
    }

    /// The open message is complete.
    fn finish(&mut self, ts: Ts, events: &mut Vec<Event>) {
        match std::mem::replace(&mut self.open, Open::None) {
            Open::Request => events.push(Event::RequestDone {
                last_ts: ts,
                body_bytes: self.body_bytes,
                incomplete: self.incomplete,
            }),
            Open::Response(mut r) => {
                r.last_ts = ts;
                r.body_bytes = self.body_bytes;
                r.incomplete = self.incomplete;
                events.push(Event::Response(*r));
            }
            Open::None => {}
        }
        if self.state != State::Stopped {
            self.state = State::Start;
        }
    }

    /// Walks chunked framing; returns bytes used.
    fn chunked(
        &mut self,
        ts: Ts,
        c: Chunk,
        data: &[u8],
        stats: &mut Stats,
        events: &mut Vec<Event>,
    ) -> usize {
        match c {
            Chunk::Data(remaining) => {
                let n = remaining.min(data.len() as u64);
                self.body_bytes += n;
                self.state = State::Chunked(if n == remaining {
                    Chunk::DataEnd(2)
                } else {
                    Chunk::Data(remaining - n)
                });
                n as usize
            }
            Chunk::DataEnd(left) => {
                // Expect CRLF; tolerate a bare LF.
                let mut used = 0;
                let mut left = left;
                while left > 0 && used < data.len() {
                    match data[used] {
                        b'\r' if left == 2 => {
                            used += 1;
                            left = 1;
                        }
                        b'\n' => {
                            used += 1;
                            left = 0;
                        }
                        _ => {
                            left = 0;
                        }
                    }
                }
                self.state = State::Chunked(if left == 0 {
                    Chunk::Size
                } else {
                    Chunk::DataEnd(left)
                });
                used
            }
            Chunk::Size | Chunk::Trailer => {
                let Some(line_end) = data.iter().position(|b| *b == b'\n') else {
                    if self.buf.len() + data.len() > 4096 {
                        stats.http_parse_errors += 1;
                        self.buf.clear();
                        self.abandon(ts, events);
                    } else {
                        self.buf.extend_from_slice(data);
                    }
                    return data.len();
                };
                self.buf.extend_from_slice(&data[..line_end]);
                let line = std::mem::take(&mut self.buf);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                if c == Chunk::Trailer {
                    if line.is_empty() {
                        self.finish(ts, events);
                    }
                    return line_end + 1;
                }
                match parse_chunk_size(line) {
                    Some(0) => self.state = State::Chunked(Chunk::Trailer),
                    Some(n) => self.state = State::Chunked(Chunk::Data(n)),
                    None => {
                        stats.http_parse_errors += 1;
                        self.abandon(ts, events);
                    }
                }
                line_end + 1
            }
        }
    }

    /// Ends the open message as incomplete and looks for the next one.
    fn abandon(&mut self, ts: Ts, events: &mut Vec<Event>) {
        self.incomplete = true;
        self.finish(ts, events);
        self.state = State::Resync;
    }

    /// `len` bytes are missing from the stream.
    pub fn gap(
        &mut self,
        ts: Ts,
        len: u64,
        pending: &Pending,
        stats: &mut Stats,
        events: &mut Vec<Event>,
    ) {
        match self.state {
            State::Body(remaining) => {
                stats.http_incomplete += 1;
                self.incomplete = true;
                if len < remaining {
                    self.body_bytes += len;
                    self.state = State::Body(remaining - len);
                } else {
                    self.body_bytes += remaining;
                    self.finish(ts, events);
                    if len > remaining {
                        self.state = State::Resync;
                    }
                }
            }
            State::Chunked(Chunk::Data(remaining)) if len < remaining => {
                stats.http_incomplete += 1;
                self.incomplete = true;
                self.body_bytes += len;
                self.state = State::Chunked(Chunk::Data(remaining - len));
            }
            State::UntilClose => {
                stats.http_incomplete += 1;
                self.incomplete = true;
                self.body_bytes += len;
            }
            State::Chunked(_) => {
                stats.http_incomplete += 1;
                self.abandon(ts, events);
            }
            State::Headers => {
                // The headers are cut: report what the start line and the complete
                // header lines say, marked incomplete, then find the next message.
                stats.http_incomplete += 1;
                let buf = std::mem::take(&mut self.buf);
                if let Some(head) = partial_head(self.role, &buf, stats) {
                    self.seen_message = true;
                    self.incomplete = true;
                    let mut log = AnomalyLog::default();
                    self.answered = 0;
                    self.start_body(ts, head, pending, stats, &mut log, events, 0);
                    self.incomplete = true;
                    if self.state != State::Start {
                        self.finish(ts, events);
                    }
                }
                self.state = State::Resync;
            }
            State::Start => {
                if self.seen_message {
                    self.state = State::Resync;
                } else {
                    // Picked up mid-stream after a hole: find the first message.
                    self.seen_message = true;
                    self.state = State::Resync;
                }
            }
            State::Resync | State::Stopped => {}
        }
        if self.state == State::Resync {
            stats.http_resyncs += 1;
        }
    }

    /// The direction ended (FIN, RST, or the connection closed).
    pub fn end(&mut self, ts: Ts, stats: &mut Stats, events: &mut Vec<Event>) {
        match self.state {
            State::UntilClose => self.finish(ts, events),
            State::Body(_) | State::Chunked(_) => {
                stats.http_incomplete += 1;
                self.incomplete = true;
                self.finish(ts, events);
            }
            State::Headers => {
                stats.http_incomplete += 1;
                self.buf.clear();
                self.state = State::Start;
            }
            _ => {}
        }
        self.buf = Vec::new();
    }
}

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

enum HeadKind {
    Request { method: Word, uri: String },
    Response { status: u16, reason: Word },
}

/// Kept headers, the Content-Length (if any, and whether usable), and whether the
/// body is chunked.
type Collected = (Headers, Option<Result<u64, ()>>, bool);

/// A parsed start line and header block, copied out of the packet bytes.
struct Head {
    kind: HeadKind,
    version: &'static str,
    headers: Headers,
    content_length: Option<Result<u64, ()>>,
    chunked: bool,
}

fn lossy(b: &[u8], max: usize) -> String {
    let b = &b[..b.len().min(max)];
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// `s` cut at `max` bytes, as [`lossy`] cuts it; a text that fits is copied without
/// checking it again (httparse hands the URI and the reason over as `&str`).
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_owned()
    } else {
        lossy(s.as_bytes(), max)
    }
}

fn version_str(v: Option<u8>) -> &'static str {
    match v {
        Some(0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl Head {
    /// The headers `kept` says of `raw`, with the body's framing. With
    /// [`KeptHeaders::Host`] the one header kept is the first `Host` among those
    /// [`KeptHeaders::All`] would keep, with the same text, and the counters move
    /// the same.
    fn collect(raw: &[httparse::Header<'_>], kept: KeptHeaders, stats: &mut Stats) -> Collected {
        let (content_length, chunked) = framing_headers(raw);
        let limit = raw.len().min(MAX_KEPT_HEADERS);
        // Headers past the limit, and values cut short, are counted as dropped.
        stats.http_headers_dropped += (raw.len() - limit) as u64
            + raw[..limit]
                .iter()
                .filter(|h| h.value.len() > MAX_HEADER_VALUE)
                .count() as u64;
        let raw = &raw[..limit];
        let headers = match kept {
            KeptHeaders::All => {
                let bytes = raw
                    .iter()
                    .map(|h| h.name.len() + h.value.len())
                    .sum::<usize>();
                let mut headers = HeadersBuilder::with_capacity(
                    limit,
                    bytes.min(limit * (256 + MAX_HEADER_VALUE)),
                );
                for h in raw {
                    let name = h.name.as_bytes();
                    headers.push(
                        &name[..name.len().min(256)],
                        &h.value[..h.value.len().min(MAX_HEADER_VALUE)],
                    );
                }
                headers.finish()
            }
            KeptHeaders::Host => match raw.iter().find(|h| h.name.eq_ignore_ascii_case("host")) {
                Some(h) => {
                    let value = &h.value[..h.value.len().min(MAX_HEADER_VALUE)];
                    let mut headers = Headers::with_capacity(1, h.name.len() + value.len());
                    headers.push_named(h.name, value);
                    headers
                }
                None => Headers::default(),
            },
        };
        (headers, content_length, chunked)
    }

    fn from_request(req: &httparse::Request<'_, '_>, kept: KeptHeaders, stats: &mut Stats) -> Head {
        let (headers, content_length, chunked) = Head::collect(req.headers, kept, stats);
        Head {
            kind: HeadKind::Request {
                method: word(req.method.unwrap_or(""), METHODS),
                uri: cut(req.path.unwrap_or(""), 8192),
            },
            version: version_str(req.version),
            headers,
            content_length,
            chunked,
        }
    }

    fn from_response(
        resp: &httparse::Response<'_, '_>,
        kept: KeptHeaders,
        stats: &mut Stats,
    ) -> Head {
        let (headers, content_length, chunked) = Head::collect(resp.headers, kept, stats);
        Head {
            kind: HeadKind::Response {
                status: resp.code.unwrap_or(0),
                reason: match resp.reason.unwrap_or("") {
                    r if r.len() <= 256 => word(r, REASONS),
                    r => lossy(r.as_bytes(), 256).into(),
                },
            },
            version: version_str(resp.version),
            headers,
            content_length,
            chunked,
        }
    }

    /// Body framing from the headers (RFC 9112 section 6.3): chunked wins over
    /// Content-Length; an unusable Content-Length leaves the length unknown.
    fn framing(&self, stats: &mut Stats, log: &mut AnomalyLog, ts: Ts) -> Option<Framing> {
        if self.chunked {
            if self.content_length.is_some() {
                log.push("http_parse_errors", ts, || {
                    "both Transfer-Encoding: chunked and Content-Length; chunked wins".into()
                });
            }
            return Some(Framing::Chunked);
        }
        match self.content_length {
            Some(Ok(n)) => Some(Framing::Length(n)),
            Some(Err(())) => {
                stats.http_parse_errors += 1;
                log.push("http_parse_errors", ts, || {
                    "invalid or conflicting Content-Length".into()
                });
                None
            }
            None => None,
        }
    }
}

/// The Content-Length of a header block (if any, and whether usable: several must
/// agree) and whether its body is chunked (the last Transfer-Encoding's last coding).
fn framing_headers(raw: &[httparse::Header<'_>]) -> (Option<Result<u64, ()>>, bool) {
    let mut content_length = None;
    let mut chunked = false;
    for h in raw {
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(());
            content_length = match (content_length, parsed) {
                (None, p) => Some(p),
                (Some(Ok(a)), Ok(b)) if a == b => Some(Ok(a)),
                _ => Some(Err(())),
            };
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = String::from_utf8_lossy(h.value)
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    (content_length, chunked)
}

/// Splits a start line into its three space-separated parts, the last two possibly
/// empty (tshark reads `OPTIONS HTTP/1.1` as method `OPTIONS`, URI `HTTP/1.1`).
fn split_start_line(line: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |b| *b == b' ');
    let a = parts.next().unwrap_or(b"");
    let b = parts.next().unwrap_or(b"");
    let c = parts.next().unwrap_or(b"");
    (a, b, c)
}

fn is_token(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c))
}

/// A request whose start line httparse rejects (missing URI or version, `HTTP/1.`):
/// the method is the first token, the URI the second word, and the headers must still
/// parse. `None`: not a request; `Some(None)`: need more bytes.
fn lenient_request(
    block: &[u8],
    kept: KeptHeaders,
    stats: &mut Stats,
) -> Option<Option<(usize, Head)>> {
    let line_end = block.iter().position(|b| *b == b'\n')?;
    let (method, uri, version) = split_start_line(&block[..line_end]);
    if !is_token(method)
        || !method
            .iter()
            .all(|c| c.is_ascii_uppercase() || *c == b'_' || *c == b'-')
    {
        return None;
    }
    let mut storage = [httparse::EMPTY_HEADER; 128];
    match httparse::parse_headers(&block[line_end + 1..], &mut storage) {
        Ok(httparse::Status::Complete((n, headers))) => {
            let (headers, content_length, chunked) = Head::collect(headers, kept, stats);
            Some(Some((
                line_end + 1 + n,
                Head {
                    kind: HeadKind::Request {
                        method: lossy(method, 64).into(),
                        uri: lossy(uri, 8192),
                    },
                    version: if version == b"HTTP/1.0" {
                        "HTTP/1.0"
                    } else {
                        "HTTP/1.1"
                    },
                    headers,
                    content_length,
                    chunked,
                },
            )))
        }
        Ok(httparse::Status::Partial) => Some(None),
        Err(_) => None,
    }
}

/// What can be read of a header block cut short: its start line and the header lines
/// that are complete.
fn partial_head(role: Role, buf: &[u8], stats: &mut Stats) -> Option<Head> {
    let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let (a, b, c) = split_start_line(&buf[..line_end]);
    let kind = match role {
        Role::Request if is_token(a) => HeadKind::Request {
            method: lossy(a, 64).into(),
            uri: lossy(b, 8192),
        },
        Role::Response if a.starts_with(b"HTTP/1.") => HeadKind::Response {
            status: std::str::from_utf8(b).ok()?.parse().ok()?,
            reason: lossy(c, 256).into(),
        },
        _ => return None,
    };
    let version_field = if role == Role::Request { c } else { a };
    let mut headers = HeadersBuilder::default();
    let rest = buf.get(line_end + 1..).unwrap_or(b"");
    let complete_lines = rest
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| &rest[..=i])
        .unwrap_or(b"");
    for line in complete_lines.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            if headers.len() < MAX_KEPT_HEADERS {
                let value = line[colon + 1..].trim_ascii();
                headers.push(
                    &line[..colon.min(256)],
                    &value[..value.len().min(MAX_HEADER_VALUE)],
                );
            } else {
                stats.http_headers_dropped += 1;
            }
        }
    }
    Some(Head {
        kind,
        version: if version_field == b"HTTP/1.0" {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        headers: headers.finish(),
        content_length: None,
        chunked: false,
    })
}

/// Parses a chunk-size line (hex digits, optional extensions after `;`); `None` on
/// bad syntax or a size over 2^62 (Zeek's chunk_2pow64 trace is the hostile case).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|b| *b == b';').unwrap_or(line.len());
    let digits = line[..end].trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// Methods a request line cut by the end of a chunk may start with (see
/// [`starts_long_request_line`]).
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
];

/// Whether `rest`, a line with no end in this chunk, starts a request: a known method,
/// a space and the first byte of a request target (`/`, `*` or an absolute URI).
///
/// After a gap the parser looks for a complete request line with its ` HTTP/1.`; a
/// request whose URI is longer than a segment has no such line in the first
/// segment after the gap, and was skipped with its whole message (found with the
/// corpus: `http/zero-length-bodies-with-drops.pcap` with one more client segment
/// dropped, where tshark still reports the next request). The header parser that
/// takes over confirms it or resynchronises again.
fn starts_long_request_line(rest: &[u8]) -> bool {
    KNOWN_METHODS.iter().any(|m| {
        rest.len() > m.len() + 1
            && rest.starts_with(m)
            && rest[m.len()] == b' '
            && matches!(rest[m.len() + 1], b'/' | b'*' | b'h')
    })
}

/// Finds the start of a line that begins a message of `role` (after lost framing).
fn find_message_start(role: Role, data: &[u8]) -> Option<usize> {
    let starts = std::iter::once(0).chain(
        data.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1),
    );
    for at in starts {
        let rest = &data[at..];
        if rest.is_empty() {
            return None;
        }
        let ok = match role {
            Role::Response => rest.starts_with(b"HTTP/1."),
            Role::Request => match rest.iter().position(|b| *b == b'\n') {
                Some(line_end) => {
                    let line = &rest[..line_end];
                    looks_like_request(line) && line.windows(8).any(|w| w == b" HTTP/1.")
                }
                None => starts_long_request_line(rest),
            },
        };
        if ok {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"0;ext=1"), Some(0));
        assert_eq!(parse_chunk_size(b" 10 "), Some(16));
        assert_eq!(parse_chunk_size(b"10000000000000000"), None);
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_chunk_size(b""), None);
    }

    #[test]
    fn request_start_detection() {
        assert!(looks_like_request(b"GET / HTTP/1.1"));
        assert!(looks_like_request(b"PROPFIND /x"));
        assert!(looks_like_request(b"GE"));
        assert!(!looks_like_request(b"get / HTTP/1.1"));
        assert!(!looks_like_request(b"\x16\x03\x01"));
        assert_eq!(
            find_message_start(Role::Request, b"junk\r\nGET /a HTTP/1.1\r\n"),
            Some(6)
        );
        assert_eq!(
            find_message_start(Role::Response, b"xx\nHTTP/1.1 200 OK"),
            Some(3)
        );
        assert_eq!(find_message_start(Role::Response, b"no start here"), None);
        // A request line cut by the end of the chunk: a known method and a target.
        assert_eq!(
            find_message_start(Role::Request, b"xx\nGET /very-long"),
            Some(3)
        );
        assert_eq!(find_message_start(Role::Request, b"GET http://h/"), Some(0));
        assert_eq!(find_message_start(Role::Request, b"GETS /x"), None);
        assert_eq!(find_message_start(Role::Request, b"GET "), None);
        assert_eq!(find_message_start(Role::Request, b"FOO /x"), None);
    }
}
