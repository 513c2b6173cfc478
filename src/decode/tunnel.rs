//! GRE (IP protocol 47) and the mirror-port encapsulations carried in it: ERSPAN
//! types I, II and III, and plain GRE around Ethernet (transparent Ethernet bridging)
//! or IP.
//!
//! Switches and hypervisors send copies of a monitored port's traffic to a collector
//! as ERSPAN inside GRE; a capture there holds every request only inside that
//! wrapping. [`GrePacket`] finds the GRE payload, [`inner`] what it carries; the
//! decoder then decodes the inner frame as if it had been captured directly (its
//! addresses, not the tunnel's, name the connection, as in tshark's innermost `ip`).
//!
//! Contract (smoltcp's): `new_checked` verifies the buffer holds every field the
//! flags announce, after which no accessor panics; [`inner`] returns an error for any
//! layout it cannot follow, never a panic.

use super::ViewError;

mod field {
    use std::ops::Range;
    pub const FLAGS: Range<usize> = 0..2;
    pub const PROTOCOL: Range<usize> = 2..4;
    /// Where the optional fields start.
    pub const OPTIONAL: usize = 4;
}

/// GRE flag: checksum present (4 bytes: checksum and reserved).
const FLAG_CHECKSUM: u16 = 0x8000;
/// GRE flag: routing present (RFC 1701; deprecated by RFC 2784, not followed).
const FLAG_ROUTING: u16 = 0x4000;
/// GRE flag: key present (4 bytes).
const FLAG_KEY: u16 = 0x2000;
/// GRE flag: sequence number present (4 bytes).
const FLAG_SEQUENCE: u16 = 0x1000;
/// GRE version bits (0: GRE; 1: PPTP's enhanced GRE, which carries PPP).
const VERSION_MASK: u16 = 0x0007;

/// GRE protocol type of ERSPAN types I and II.
pub const PROTO_ERSPAN_II: u16 = 0x88be;
/// GRE protocol type of ERSPAN type III.
pub const PROTO_ERSPAN_III: u16 = 0x22eb;
/// GRE protocol type of transparent Ethernet bridging (an Ethernet frame).
pub const PROTO_TEB: u16 = 0x6558;
/// GRE protocol type of IPv4.
pub const PROTO_IPV4: u16 = 0x0800;
/// GRE protocol type of IPv6.
pub const PROTO_IPV6: u16 = 0x86dd;

/// A GRE header (RFC 2784 with RFC 2890's key and sequence number) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
    header_len: usize,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps `buffer` after checking it holds the fixed header and every optional
    /// field the flags announce. Version 1 (PPTP) and the routing flag are refused:
    /// their layouts are not what ERSPAN or bridging send.
    pub fn new_checked(buffer: T) -> Result<Self, ViewError> {
        let b = buffer.as_ref();
        if b.len() < field::OPTIONAL {
            return Err(ViewError::Truncated {
                layer: "GRE header",
                required: field::OPTIONAL,
                len: b.len(),
            });
        }
        let flags = u16::from_be_bytes([b[field::FLAGS.start], b[field::FLAGS.start + 1]]);
        if flags & VERSION_MASK != 0 {
            return Err(ViewError::Invalid {
                layer: "GRE header",
                detail: "version is not 0 (PPTP's enhanced GRE)",
            });
        }
        if flags & FLAG_ROUTING != 0 {
            return Err(ViewError::Invalid {
                layer: "GRE header",
                detail: "routing present (RFC 1701 source routing)",
            });
        }
        let optional = [FLAG_CHECKSUM, FLAG_KEY, FLAG_SEQUENCE]
            .iter()
            .filter(|f| flags & **f != 0)
            .count();
        let header_len = field::OPTIONAL + 4 * optional;
        if b.len() < header_len {
            return Err(ViewError::Truncated {
                layer: "GRE header (optional fields)",
                required: header_len,
                len: b.len(),
            });
        }
        Ok(GrePacket { buffer, header_len })
    }

    /// The protocol type of the payload (an EtherType, or ERSPAN's).
    pub fn protocol(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::PROTOCOL.start], b[field::PROTOCOL.start + 1]])
    }

    /// Whether the sequence number flag is set (it tells ERSPAN type II from type I,
    /// which share the protocol type).
    pub fn has_sequence(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::FLAGS.start] & (FLAG_SEQUENCE >> 8) as u8 != 0
    }

    /// Length of the header with its optional fields.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

/// What a GRE packet carries, ready to be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inner<'a> {
    /// An Ethernet frame (ERSPAN, or bridging).
    Ethernet(&'a [u8]),
    /// An IPv4 or IPv6 packet.
    Ip(&'a [u8]),
}

/// Length of the ERSPAN type II header.
const ERSPAN_II_LEN: usize = 8;
/// Length of the ERSPAN type III header without its optional subheader.
const ERSPAN_III_LEN: usize = 12;
/// Length of ERSPAN type III's platform-specific subheader (present with the O bit).
const ERSPAN_III_SUBHEADER_LEN: usize = 8;

/// The frame inside a GRE payload, by its protocol type: ERSPAN type I (0x88BE
/// without sequence number: the frame follows GRE directly), type II (0x88BE with a
/// sequence number: an 8-byte header, version 1), type III (0x22EB: a 12-byte header,
/// version 2, then an 8-byte platform subheader when its O bit is set; frame type 0
/// is Ethernet and 2 an IP packet), transparent Ethernet bridging, IPv4 or IPv6.
pub fn inner<'a>(gre: &GrePacket<&'a [u8]>) -> Result<Inner<'a>, ViewError> {
    let payload: &'a [u8] = &gre.buffer[gre.header_len..];
    match gre.protocol() {
        PROTO_ERSPAN_II if !gre.has_sequence() => Ok(Inner::Ethernet(payload)),
        PROTO_ERSPAN_II => {
            let h = payload.get(..ERSPAN_II_LEN).ok_or(ViewError::Truncated {
                layer: "ERSPAN type II header",
                required: ERSPAN_II_LEN,
                len: payload.len(),
            })?;
            if h[0] >> 4 != 1 {
                return Err(ViewError::Invalid {
                    layer: "ERSPAN type II header",
                    detail: "version is not 1",
                });
            }
            Ok(Inner::Ethernet(&payload[ERSPAN_II_LEN..]))
        }
        PROTO_ERSPAN_III => {
            let h = payload.get(..ERSPAN_III_LEN).ok_or(ViewError::Truncated {
                layer: "ERSPAN type III header",
                required: ERSPAN_III_LEN,
                len: payload.len(),
            })?;
            if h[0] >> 4 != 2 {
                return Err(ViewError::Invalid {
                    layer: "ERSPAN type III header",
                    detail: "version is not 2",
                });
            }
            let frame_type = (h[10] >> 2) & 0x1f;
            let with_subheader = h[11] & 0x01 != 0;
            let len = ERSPAN_III_LEN
                + if with_subheader {
                    ERSPAN_III_SUBHEADER_LEN
                } else {
                    0
                };
            let frame = payload.get(len..).ok_or(ViewError::Truncated {
                layer: "ERSPAN type III platform subheader",
                required: len,
                len: payload.len(),
            })?;
            match frame_type {
                0 => Ok(Inner::Ethernet(frame)),
                2 => Ok(Inner::Ip(frame)),
                _ => Err(ViewError::Invalid {
                    layer: "ERSPAN type III header",
                    detail: "frame type is neither Ethernet (0) nor IP (2)",
                }),
            }
        }
        PROTO_TEB => Ok(Inner::Ethernet(payload)),
        PROTO_IPV4 | PROTO_IPV6 => Ok(Inner::Ip(payload)),
        _ => Err(ViewError::Invalid {
            layer: "GRE header",
            detail: "protocol type carries no Ethernet or IP",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gre(flags: u16, proto: u16, optional: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = flags.to_be_bytes().to_vec();
        v.extend_from_slice(&proto.to_be_bytes());
        v.extend_from_slice(optional);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn erspan_types() {
        let eth = [0xaa; 20];
        // Type I: no sequence number, the frame follows.
        let b = gre(0, PROTO_ERSPAN_II, &[], &eth);
        let g = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(inner(&g), Ok(Inner::Ethernet(&eth[..])));
        // Type II: sequence number, 8-byte header of version 1.
        let mut body = vec![0x10, 0x05, 0x00, 0x07, 0, 0, 0, 1];
        body.extend_from_slice(&eth);
        let b = gre(0x1000, PROTO_ERSPAN_II, &[0, 0, 0, 9], &body);
        let g = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(g.header_len(), 8);
        assert_eq!(inner(&g), Ok(Inner::Ethernet(&eth[..])));
        // Type III with the platform subheader.
        let mut body = vec![0x20, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x01];
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&eth);
        let b = gre(0x1000, PROTO_ERSPAN_III, &[0, 0, 0, 9], &body);
        let g = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(inner(&g), Ok(Inner::Ethernet(&eth[..])));
        // Type III carrying an IP packet (frame type 2).
        let mut body = vec![0x20, 0, 0, 7, 0, 0, 0, 0, 0, 0, 2 << 2, 0];
        body.extend_from_slice(&eth);
        let b = gre(0x1000, PROTO_ERSPAN_III, &[0, 0, 0, 9], &body);
        let g = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(inner(&g), Ok(Inner::Ip(&eth[..])));
    }

    #[test]
    fn optional_fields_are_skipped() {
        let ip = [0x45; 20];
        let b = gre(0xb000, PROTO_IPV4, &[1; 12], &ip);
        let g = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(g.header_len(), 16);
        assert_eq!(inner(&g), Ok(Inner::Ip(&ip[..])));
    }

    #[test]
    fn truncated_and_impossible() {
        assert!(matches!(
            GrePacket::new_checked(&[0u8, 0, 0x88][..]),
            Err(ViewError::Truncated { required: 4, .. })
        ));
        // Sequence flag without the 4 bytes.
        assert!(matches!(
            GrePacket::new_checked(&[0x10u8, 0, 0x88, 0xbe, 0, 0][..]),
            Err(ViewError::Truncated { required: 8, .. })
        ));
        // PPTP's version 1 and RFC 1701 routing are refused.
        assert!(GrePacket::new_checked(&[0x30u8, 1, 0x88, 0x0b, 0, 0, 0, 0][..]).is_err());
        assert!(GrePacket::new_checked(&[0x40u8, 0, 0x08, 0, 0, 0, 0, 0][..]).is_err());
        // ERSPAN II header cut off, wrong versions, unknown frame type and protocol.
        let b = gre(0x1000, PROTO_ERSPAN_II, &[0; 4], &[0x10, 0]);
        assert!(inner(&GrePacket::new_checked(&b[..]).unwrap()).is_err());
        let b = gre(0x1000, PROTO_ERSPAN_II, &[0; 4], &[0x20; 8]);
        assert!(inner(&GrePacket::new_checked(&b[..]).unwrap()).is_err());
        let b = gre(
            0x1000,
            PROTO_ERSPAN_III,
            &[0; 4],
            &[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        assert!(inner(&GrePacket::new_checked(&b[..]).unwrap()).is_err());
        let b = gre(
            0x1000,
            PROTO_ERSPAN_III,
            &[0; 4],
            &[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0],
        );
        assert!(inner(&GrePacket::new_checked(&b[..]).unwrap()).is_err());
        let b = gre(0, 0x880b, &[], &[0; 8]);
        assert!(inner(&GrePacket::new_checked(&b[..]).unwrap()).is_err());
    }
}
