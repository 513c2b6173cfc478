//! VRRP advertisements (RFC 3768 version 2, RFC 5798 version 3), IP protocol 112,
//! and the OpenBSD CARP adverts that share the protocol number.
//!
//! Contract: [`VrrpPacket::new_checked`] verifies the fixed header and that every
//! address the count field announces is present; after it no accessor panics.

use super::ViewError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod field {
    pub const VERSION_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v2: auth type (byte 4) and advert interval in seconds (byte 5);
    /// v3: 4 reserved bits and a 12-bit interval in centiseconds.
    pub const INTERVAL: std::ops::Range<usize> = 4..6;
    pub const ADDRS: usize = 8;
}

/// A checked view of a VRRP advertisement.
#[derive(Debug, Clone, Copy)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
    ipv6: bool,
}

/// CARP adverts are 36 bytes, version 2, with the auth length field (where VRRP keeps
/// its address count) equal to 7.
pub fn is_carp(data: &[u8]) -> bool {
    data.len() == 36 && data[0] >> 4 == 2 && data[3] == 7
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps `buffer`; `ipv6` says which IP version carried it (the address size).
    pub fn new_checked(buffer: T, ipv6: bool) -> Result<Self, ViewError> {
        let b = buffer.as_ref();
        if b.len() < field::ADDRS {
            return Err(ViewError::Truncated {
                layer: "VRRP header",
                required: field::ADDRS,
                len: b.len(),
            });
        }
        let version = b[field::VERSION_TYPE] >> 4;
        let kind = b[field::VERSION_TYPE] & 0x0f;
        if !(version == 2 || version == 3) || kind != 1 || (version == 2 && ipv6) {
            return Err(ViewError::Invalid {
                layer: "VRRP header",
                detail: "version must be 2 (IPv4) or 3, type 1 (advertisement)",
            });
        }
        let addr_len = if ipv6 { 16 } else { 4 };
        let required = field::ADDRS + b[field::COUNT] as usize * addr_len;
        if b.len() < required {
            return Err(ViewError::Truncated {
                layer: "VRRP addresses",
                required,
                len: b.len(),
            });
        }
        Ok(VrrpPacket { buffer, ipv6 })
    }

    /// 2 or 3.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TYPE] >> 4
    }

    /// Virtual router id.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Priority (255 owner, 0 master giving up).
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Advertisement interval in centiseconds.
    pub fn interval_centis(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::INTERVAL];
        if self.version() == 2 {
            u16::from(b[1]) * 100
        } else {
            u16::from_be_bytes([b[0], b[1]]) & 0x0fff
        }
    }

    /// The virtual addresses advertised.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let b = self.buffer.as_ref();
        let n = b[field::COUNT] as usize;
        let ipv6 = self.ipv6;
        (0..n).map(move |i| {
            if ipv6 {
                let s = field::ADDRS + i * 16;
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[s..s + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            } else {
                let s = field::ADDRS + i * 4;
                IpAddr::V4(Ipv4Addr::new(b[s], b[s + 1], b[s + 2], b[s + 3]))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(count: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
        let mut v = vec![0x21, 52, 100, count, 1, 1, 0, 0];
        for a in addrs {
            v.extend_from_slice(a);
        }
        v.extend_from_slice(b"pass\0\0\0\0");
        v
    }

    #[test]
    fn v2_fields() {
        let b = v2(1, &[[198, 18, 1, 231]]);
        let p = VrrpPacket::new_checked(&b[..], false).unwrap();
        assert_eq!((p.version(), p.vrid(), p.priority()), (2, 52, 100));
        assert_eq!(p.interval_centis(), 100);
        assert_eq!(
            p.addresses().collect::<Vec<_>>(),
            vec![IpAddr::V4(Ipv4Addr::new(198, 18, 1, 231))]
        );
    }

    #[test]
    fn v3_interval_and_ipv6() {
        let mut b = vec![0x31, 1, 255, 1, 0x00, 0x64, 0, 0];
        b.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let p = VrrpPacket::new_checked(&b[..], true).unwrap();
        assert_eq!(p.interval_centis(), 100);
        assert_eq!(p.addresses().count(), 1);
    }

    #[test]
    fn truncated_and_impossible() {
        let b = v2(5, &[[1, 2, 3, 4]]);
        assert!(matches!(
            VrrpPacket::new_checked(&b[..], false),
            Err(ViewError::Truncated {
                layer: "VRRP addresses",
                ..
            })
        ));
        for len in 0..8 {
            assert!(VrrpPacket::new_checked(&b[..len], false).is_err());
        }
        let mut bad = v2(1, &[[1, 2, 3, 4]]);
        bad[0] = 0x41;
        assert!(matches!(
            VrrpPacket::new_checked(&bad[..], false),
            Err(ViewError::Invalid { .. })
        ));
    }

    #[test]
    fn carp_is_told_apart() {
        let mut carp = vec![0x21, 1, 0, 7, 0, 1, 0, 0];
        carp.resize(36, 0);
        assert!(is_carp(&carp));
        assert!(!is_carp(&v2(1, &[[1, 2, 3, 4]])));
    }
}
