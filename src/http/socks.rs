//! SOCKS 4, 4a and 5 handshakes in front of HTTP on one TCP connection.
//!
//! A client that goes through a SOCKS proxy opens one connection to the proxy, asks
//! it (in a few binary messages) to connect to a target, and then speaks HTTP on the
//! same connection. flowtrace recognises the handshake at the start of the client's
//! stream, lets it pass in each direction, hands the bytes after it to the HTTP
//! parsers, and records the target the client asked for (the destination the
//! requests meant; the TCP server is the proxy).
//!
//! Messages (RFC 1928, RFC 1929, and the SOCKS 4/4a protocol notes): the client sends
//! SOCKS 4 `04 CD PORT IP USERID 00 [HOST 00]` (4a: IP `0.0.0.x`, then the host name)
//! or SOCKS 5 `05 N METHODS...`, optionally `01 ULEN USER PLEN PASS` (user/password
//! authentication), then `05 CMD 00 ATYP ADDR PORT`. The proxy answers SOCKS 4
//! `00 CD PORT IP` (CD 90 granted) or SOCKS 5 `05 METHOD`, `01 STATUS` after
//! authentication, then `05 REP 00 ATYP ADDR PORT` (REP 0 succeeded).
//!
//! Bounds: a direction's handshake is at most [`MAX_HANDSHAKE`] bytes (the largest
//! valid SOCKS 5 one is 1032); bytes are buffered only while a message is split
//! across segments. Contract: no input panics; what is not a complete, successful
//! CONNECT handshake is reported as [`Step::Refused`] with the reason.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Most bytes one direction's handshake may take.
pub const MAX_HANDSHAKE: usize = 1100;

/// What parsing one direction's handshake from its first byte found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed.
    Incomplete,
    /// The handshake is complete after `len` bytes; for the client's side, with the
    /// target it asked for (`host:port`).
    Done {
        /// Bytes the handshake took.
        len: usize,
        /// The requested target (client side only).
        target: Option<String>,
    },
    /// Not a successful CONNECT: refused by the proxy, another command, malformed.
    Refused(&'static str),
}

/// Whether a client's first bytes start a SOCKS handshake: version 4 with command
/// CONNECT or BIND, version 5 with one to nine methods, or the version byte alone (a
/// handshake sent a byte per segment). No HTTP request starts with these bytes.
pub fn starts_handshake(data: &[u8]) -> bool {
    match data {
        [4 | 5] => true,
        [4, 1 | 2, ..] => true,
        [5, n, ..] => (1..=9).contains(n),
        _ => false,
    }
}

/// The SOCKS version a client's first byte names.
pub fn version(data: &[u8]) -> Option<u8> {
    data.first().copied().filter(|v| *v == 4 || *v == 5)
}

/// Parses the client's side of the handshake from its first byte.
pub fn client(b: &[u8]) -> Step {
    match b.first() {
        None => Step::Incomplete,
        Some(4) => client4(b),
        Some(5) => client5(b),
        Some(_) => Step::Refused("not SOCKS 4 or 5"),
    }
}

fn client4(b: &[u8]) -> Step {
    if b.len() < 8 {
        return Step::Incomplete;
    }
    if b[1] != 1 {
        return Step::Refused("SOCKS 4 command is not CONNECT");
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
    let Some(user_end) = b[8..].iter().position(|c| *c == 0).map(|p| 8 + p + 1) else {
        return Step::Incomplete;
    };
    let o = ip.octets();
    if o[0..3] == [0, 0, 0] && o[3] != 0 {
        // SOCKS 4a: the host name follows the user id.
        let Some(host_end) = b[user_end..].iter().position(|c| *c == 0) else {
            return Step::Incomplete;
        };
        let host = String::from_utf8_lossy(&b[user_end..user_end + host_end]);
        return Step::Done {
            len: user_end + host_end + 1,
            target: Some(format!("{host}:{port}")),
        };
    }
    Step::Done {
        len: user_end,
        target: Some(format!("{ip}:{port}")),
    }
}

fn client5(b: &[u8]) -> Step {
    let Some(&n) = b.get(1) else {
        return Step::Incomplete;
    };
    let mut at = 2 + usize::from(n);
    // User/password sub-negotiation (RFC 1929) starts with its own version, 1.
    match b.get(at) {
        None => return Step::Incomplete,
        Some(1) => {
            let Some(&ulen) = b.get(at + 1) else {
                return Step::Incomplete;
            };
            let plen_at = at + 2 + usize::from(ulen);
            let Some(&plen) = b.get(plen_at) else {
                return Step::Incomplete;
            };
            at = plen_at + 1 + usize::from(plen);
        }
        Some(5) => {}
        Some(_) => return Step::Refused("SOCKS 5 message after the greeting is unknown"),
    }
    let Some(req) = b.get(at..at + 4) else {
        return Step::Incomplete;
    };
    if req[0] != 5 {
        return Step::Refused("SOCKS 5 request has another version");
    }
    if req[1] != 1 {
        return Step::Refused("SOCKS 5 command is not CONNECT");
    }
    match address(&b[at + 3..]) {
        Addr::Incomplete => Step::Incomplete,
        Addr::Bad => Step::Refused("SOCKS 5 request address type is unknown"),
        Addr::Ok(host, len) => {
            let Some(p) = b.get(at + 3 + len..at + 3 + len + 2) else {
                return Step::Incomplete;
            };
            Step::Done {
                len: at + 3 + len + 2,
                target: Some(format!("{host}:{}", u16::from_be_bytes([p[0], p[1]]))),
            }
        }
    }
}

/// Parses the proxy's side of the handshake, for a client of SOCKS `version`.
pub fn server(version: u8, b: &[u8]) -> Step {
    if version == 4 {
        if b.len() < 8 {
            return Step::Incomplete;
        }
        return match (b[0], b[1]) {
            (0, 90) => Step::Done {
                len: 8,
                target: None,
            },
            (0, _) => Step::Refused("SOCKS 4 request rejected"),
            _ => Step::Refused("SOCKS 4 reply has another version"),
        };
    }
    let Some(sel) = b.get(..2) else {
        return Step::Incomplete;
    };
    if sel[0] != 5 {
        return Step::Refused("SOCKS 5 method selection has another version");
    }
    let mut at = 2;
    match sel[1] {
        0 => {}
        2 => {
            let Some(auth) = b.get(2..4) else {
                return Step::Incomplete;
            };
            if auth[1] != 0 {
                return Step::Refused("SOCKS 5 authentication failed");
            }
            at = 4;
        }
        0xff => return Step::Refused("SOCKS 5 proxy accepted no method"),
        _ => return Step::Refused("SOCKS 5 method flowtrace cannot follow (GSSAPI)"),
    }
    let Some(rep) = b.get(at..at + 4) else {
        return Step::Incomplete;
    };
    if rep[0] != 5 {
        return Step::Refused("SOCKS 5 reply has another version");
    }
    if rep[1] != 0 {
        return Step::Refused("SOCKS 5 connect failed");
    }
    match address(&b[at + 3..]) {
        Addr::Incomplete => Step::Incomplete,
        Addr::Bad => Step::Refused("SOCKS 5 reply address type is unknown"),
        Addr::Ok(_, len) if b.len() < at + 3 + len + 2 => Step::Incomplete,
        Addr::Ok(_, len) => Step::Done {
            len: at + 3 + len + 2,
            target: None,
        },
    }
}

enum Addr {
    Incomplete,
    Bad,
    /// The address as text and the bytes it took (type byte included).
    Ok(String, usize),
}

/// A SOCKS 5 address: its type byte, then 4 bytes (IPv4), a length and a name, or
/// 16 bytes (IPv6).
fn address(b: &[u8]) -> Addr {
    match b.first() {
        None => Addr::Incomplete,
        Some(1) => match b.get(1..5) {
            Some(a) => Addr::Ok(Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(), 5),
            None => Addr::Incomplete,
        },
        Some(3) => {
            let Some(&n) = b.get(1) else {
                return Addr::Incomplete;
            };
            match b.get(2..2 + usize::from(n)) {
                Some(name) => Addr::Ok(String::from_utf8_lossy(name).into_owned(), 2 + name.len()),
                None => Addr::Incomplete,
            }
        }
        Some(4) => match b.get(1..17) {
            Some(a) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                Addr::Ok(format!("[{}]", Ipv6Addr::from(o)), 17)
            }
            None => Addr::Incomplete,
        },
        Some(_) => Addr::Bad,
    }
}

/// One direction's progress through the handshake.
#[derive(Debug, Default)]
pub struct Side {
    /// Bytes of a message split across segments (only then).
    buf: Vec<u8>,
    /// Whether this direction's handshake is over (done, refused or given up).
    pub done: bool,
}

/// What feeding a direction's bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// All bytes were handshake; more are to come.
    Consumed,
    /// The handshake ended; the bytes from this offset of the input are the
    /// application's (HTTP).
    Rest(usize, Option<String>),
    /// Not a successful CONNECT, or over [`MAX_HANDSHAKE`].
    Refused(&'static str),
}

impl Side {
    /// Stops following this direction's handshake (a gap, or the other side failed).
    pub fn give_up(&mut self) {
        self.done = true;
        self.buf = Vec::new();
    }

    /// Feeds in-order bytes of this direction to `parse` (a [`client`] or
    /// [`server`] parse of the handshake from its first byte).
    pub fn feed(&mut self, data: &[u8], parse: impl Fn(&[u8]) -> Step) -> Fed {
        let buffered = self.buf.len();
        let step = if buffered == 0 {
            parse(data)
        } else {
            let room = MAX_HANDSHAKE.saturating_sub(buffered);
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            parse(&self.buf)
        };
        match step {
            Step::Done { len, target } => {
                self.done = true;
                self.buf = Vec::new();
                Fed::Rest(len.saturating_sub(buffered).min(data.len()), target)
            }
            Step::Refused(why) => {
                self.done = true;
                self.buf = Vec::new();
                Fed::Refused(why)
            }
            Step::Incomplete => {
                if buffered == 0 {
                    self.buf
                        .extend_from_slice(&data[..data.len().min(MAX_HANDSHAKE)]);
                }
                if self.buf.len() >= MAX_HANDSHAKE {
                    self.done = true;
                    self.buf = Vec::new();
                    return Fed::Refused("handshake longer than any valid one");
                }
                Fed::Consumed
            }
        }
    }
}

/// The handshake of one connection.
#[derive(Debug)]
pub struct Handshake {
    /// 4 or 5.
    pub version: u8,
    /// Indexed by [`crate::tcp::Dir`].
    pub sides: [Side; 2],
    /// The target the client asked for, once its request was seen.
    pub target: Option<String>,
}

impl Handshake {
    /// A handshake of `version`.
    pub fn new(version: u8) -> Handshake {
        Handshake {
            version,
            sides: [Side::default(), Side::default()],
            target: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks4_and_4a() {
        let mut b = vec![4, 1, 0, 80, 93, 184, 216, 34];
        b.extend_from_slice(b"bob\0GET");
        assert_eq!(
            client(&b),
            Step::Done {
                len: 12,
                target: Some("93.184.216.34:80".into())
            }
        );
        let mut b = vec![4, 1, 0x1f, 0x90, 0, 0, 0, 1, 0];
        b.extend_from_slice(b"example.com\0");
        assert_eq!(
            client(&b),
            Step::Done {
                len: 21,
                target: Some("example.com:8080".into())
            }
        );
        assert_eq!(client(&b[..15]), Step::Incomplete);
        assert_eq!(
            client(&[4, 2, 0, 80, 1, 2, 3, 4, 0]),
            Step::Refused("SOCKS 4 command is not CONNECT")
        );
        assert_eq!(
            server(4, &[0, 90, 0, 0, 0, 0, 0, 0]),
            Step::Done {
                len: 8,
                target: None
            }
        );
        assert!(matches!(
            server(4, &[0, 91, 0, 0, 0, 0, 0, 0]),
            Step::Refused(_)
        ));
    }

    #[test]
    fn socks5_with_and_without_auth() {
        // Greeting, then a CONNECT to a domain name.
        let mut b = vec![5, 1, 0, 5, 1, 0, 3, 7];
        b.extend_from_slice(b"web.lan\x00\x50");
        assert_eq!(
            client(&b),
            Step::Done {
                len: 17,
                target: Some("web.lan:80".into())
            }
        );
        // With user/password, to an IPv6 address.
        let mut b = vec![5, 2, 0, 2, 1, 1, b'u', 2, b'p', b'w', 5, 1, 0, 4];
        b.extend_from_slice(&[
            0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90,
        ]);
        assert_eq!(
            client(&b),
            Step::Done {
                len: 32,
                target: Some("[fd00::1]:8080".into())
            }
        );
        for cut in 0..b.len() {
            assert_eq!(client(&b[..cut]), Step::Incomplete, "cut at {cut}");
        }
        let reply = [5, 2, 1, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0, 80];
        assert_eq!(
            server(5, &reply),
            Step::Done {
                len: 14,
                target: None
            }
        );
        for cut in 0..reply.len() {
            assert_eq!(server(5, &reply[..cut]), Step::Incomplete, "cut at {cut}");
        }
        assert!(matches!(server(5, &[5, 0xff]), Step::Refused(_)));
        assert!(matches!(server(5, &[5, 2, 1, 1]), Step::Refused(_)));
        assert!(matches!(server(5, &[5, 0, 5, 5, 0, 1]), Step::Refused(_)));
        assert!(matches!(client(&[5, 1, 0, 5, 3, 0, 1]), Step::Refused(_)));
        assert!(matches!(
            client(&[5, 1, 0, 5, 1, 0, 9, 0]),
            Step::Refused(_)
        ));
    }

    #[test]
    fn side_buffers_split_messages_and_is_bounded() {
        let mut s = Side::default();
        assert_eq!(s.feed(&[5, 1], client), Fed::Consumed);
        assert_eq!(s.feed(&[0, 5, 1, 0, 1, 10, 0], client), Fed::Consumed);
        assert_eq!(
            s.feed(b"\x00\x01\x00\x50GET /", client),
            Fed::Rest(4, Some("10.0.0.1:80".into()))
        );
        // A SOCKS 4 user id that never ends.
        let mut s = Side::default();
        assert_eq!(s.feed(&[4, 1, 0, 80, 1, 2, 3, 4], client), Fed::Consumed);
        let mut fed = Fed::Consumed;
        for _ in 0..20 {
            fed = s.feed(&[b'a'; 100], client);
            if fed != Fed::Consumed {
                break;
            }
        }
        assert!(matches!(fed, Fed::Refused(_)));
        assert!(s.done && s.buf.capacity() == 0);
    }

    #[test]
    fn detection() {
        assert!(starts_handshake(&[5, 1, 0]));
        assert!(starts_handshake(&[4, 1, 0, 80]));
        assert!(!starts_handshake(b"GET / HTTP/1.1"));
        assert!(!starts_handshake(&[5, 0]));
        assert!(starts_handshake(&[5]));
        assert!(!starts_handshake(&[]));
        assert!(!starts_handshake(&[0x16, 3, 1]));
    }
}
