//! Checked views for link layers etherparse lacks: Linux cooked captures v1 (SLL,
//! link type 113) and v2 (SLL2, 276, what `tcpdump -i any` writes), and BSD loopback
//! (NULL, 0, and OpenBSD LOOP, 108).
//!
//! Contract (smoltcp's): `new_checked` verifies the buffer is long enough for every
//! fixed field, after which no accessor panics.

use super::ViewError;

mod sll_field {
    use std::ops::Range;
    pub const PKTTYPE: Range<usize> = 0..2;
    pub const HATYPE: Range<usize> = 2..4;
    pub const ADDR_LEN: Range<usize> = 4..6;
    pub const ADDR: Range<usize> = 6..14;
    pub const PROTOCOL: Range<usize> = 14..16;
    pub const PAYLOAD: usize = 16;
}

mod sll2_field {
    use std::ops::Range;
    pub const PROTOCOL: Range<usize> = 0..2;
    pub const IFINDEX: Range<usize> = 4..8;
    pub const HATYPE: Range<usize> = 8..10;
    pub const PKTTYPE: usize = 10;
    pub const ADDR_LEN: usize = 11;
    pub const ADDR: Range<usize> = 12..20;
    pub const PAYLOAD: usize = 20;
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// Source link address of a cooked header: at most 8 bytes are stored whatever the
/// length field claims (an oversized claim is clamped, not trusted).
fn link_addr(addr: &[u8], claimed: usize) -> Option<[u8; 6]> {
    (claimed == 6).then(|| [addr[0], addr[1], addr[2], addr[3], addr[4], addr[5]])
}

/// A Linux cooked capture v1 header (16 bytes) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct SllPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SllPacket<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = sll_field::PAYLOAD;

    /// Wraps `buffer` after checking it holds the whole header.
    pub fn new_checked(buffer: T) -> Result<Self, ViewError> {
        let len = buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(ViewError::Truncated {
                layer: "Linux SLL header",
                required: Self::HEADER_LEN,
                len,
            });
        }
        Ok(SllPacket { buffer })
    }

    /// Packet type (0 to us, 4 outgoing, ...).
    pub fn packet_type(&self) -> u16 {
        be16(self.buffer.as_ref(), sll_field::PKTTYPE)
    }

    /// ARPHRD_ type of the interface (1 Ethernet, 772 loopback, ...).
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), sll_field::HATYPE)
    }

    /// The sender's link address when it is 6 bytes long.
    pub fn source_mac(&self) -> Option<[u8; 6]> {
        let b = self.buffer.as_ref();
        link_addr(&b[sll_field::ADDR], be16(b, sll_field::ADDR_LEN) as usize)
    }

    /// Protocol: an EtherType for values >= 0x600.
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), sll_field::PROTOCOL)
    }

    /// Bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[sll_field::PAYLOAD..]
    }
}

/// A Linux cooked capture v2 header (20 bytes) and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Sll2Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sll2Packet<T> {
    /// Length of the header.
    pub const HEADER_LEN: usize = sll2_field::PAYLOAD;

    /// Wraps `buffer` after checking it holds the whole header.
    pub fn new_checked(buffer: T) -> Result<Self, ViewError> {
        let len = buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(ViewError::Truncated {
                layer: "Linux SLL2 header",
                required: Self::HEADER_LEN,
                len,
            });
        }
        Ok(Sll2Packet { buffer })
    }

    /// Protocol: an EtherType for values >= 0x600.
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), sll2_field::PROTOCOL)
    }

    /// Index of the interface the packet was captured on, in the capturing host's
    /// (or network namespace's) numbering.
    pub fn ifindex(&self) -> u32 {
        let b = &self.buffer.as_ref()[sll2_field::IFINDEX];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// ARPHRD_ type of the interface.
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), sll2_field::HATYPE)
    }

    /// Packet type (0 to us, 1 broadcast, 2 multicast, 3 to someone else, 4 outgoing).
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[sll2_field::PKTTYPE]
    }

    /// The sender's link address when it is 6 bytes long.
    pub fn source_mac(&self) -> Option<[u8; 6]> {
        let b = self.buffer.as_ref();
        link_addr(&b[sll2_field::ADDR], b[sll2_field::ADDR_LEN] as usize)
    }

    /// Bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[sll2_field::PAYLOAD..]
    }
}

/// What follows a BSD loopback header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopbackFamily {
    /// AF_INET.
    Ipv4,
    /// AF_INET6 (24, 28 or 30 depending on the BSD).
    Ipv6,
    /// Anything else.
    Other(u32),
}

/// Reads the 4-byte address family of a NULL (host byte order of the writer, so either)
/// or LOOP (always big-endian) header.
pub fn loopback_family(data: &[u8], always_big_endian: bool) -> Result<LoopbackFamily, ViewError> {
    let Some(b) = data.get(..4) else {
        return Err(ViewError::Truncated {
            layer: "loopback header",
            required: 4,
            len: data.len(),
        });
    };
    let be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let family = if always_big_endian || be <= 0xffff {
        be
    } else {
        le
    };
    Ok(match family {
        2 => LoopbackFamily::Ipv4,
        24 | 28 | 30 => LoopbackFamily::Ipv6,
        f => LoopbackFamily::Other(f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sll2(protocol: u16, ifindex: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&protocol.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&ifindex.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        v.push(4);
        v.push(6);
        v.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn sll2_fields() {
        let b = sll2(0x0800, 7, &[0x45]);
        let p = Sll2Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.protocol(), 0x0800);
        assert_eq!(p.ifindex(), 7);
        assert_eq!(p.packet_type(), 4);
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.source_mac(), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.payload(), &[0x45]);
    }

    #[test]
    fn sll2_truncated() {
        let b = sll2(0x0800, 7, &[]);
        for len in 0..Sll2Packet::<&[u8]>::HEADER_LEN {
            assert!(matches!(
                Sll2Packet::new_checked(&b[..len]),
                Err(ViewError::Truncated { required: 20, .. })
            ));
        }
        assert!(Sll2Packet::new_checked(&b[..20])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn sll_oversized_address_is_clamped() {
        let mut b = vec![0, 0, 0, 1, 0, 200];
        b.extend_from_slice(&[1; 8]);
        b.extend_from_slice(&0x0806u16.to_be_bytes());
        let p = SllPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.source_mac(), None);
        assert_eq!(p.protocol(), 0x0806);
        assert!(SllPacket::new_checked(&b[..15]).is_err());
    }

    #[test]
    fn loopback_both_orders() {
        assert_eq!(
            loopback_family(&[2, 0, 0, 0], false).unwrap(),
            LoopbackFamily::Ipv4
        );
        assert_eq!(
            loopback_family(&[0, 0, 0, 30], false).unwrap(),
            LoopbackFamily::Ipv6
        );
        assert_eq!(
            loopback_family(&[0, 0, 0, 2], true).unwrap(),
            LoopbackFamily::Ipv4
        );
        assert!(loopback_family(&[2, 0], false).is_err());
    }
}
