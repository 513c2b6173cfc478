//! The NFLOG link type (LINKTYPE_NFLOG, 239): what `tcpdump -i nflog:N` writes, the
//! packets an iptables/nftables `NFLOG` rule matched (the way to capture what NAT
//! rules see).
//!
//! A record is a 4-byte header (address family, version 0, resource id) and a list
//! of TLVs, each a 2-byte length (header included), a 2-byte type and the value,
//! padded to a multiple of 4. The IP packet is the value of type 9 (`NFULA_PAYLOAD`).
//! The TLV lengths and types are in the byte order of the host that captured (libpcap
//! writes them as the kernel gave them), which a file does not record: [`payload`]
//! takes the order in which the whole TLV list is consistent, little-endian first
//! (the hosts that run iptables are nearly all little-endian).
//!
//! Contract: [`payload`] returns an error for any bytes it cannot follow, never a
//! panic; the slice it returns lies inside its input.

use super::ViewError;

/// Length of the NFLOG header.
pub const HEADER_LEN: usize = 4;
/// Length of a TLV's header.
const TLV_HEADER_LEN: usize = 4;
/// The TLV type of the logged packet.
pub const NFULA_PAYLOAD: u16 = 9;
/// Highest TLV type the kernel defines (`NFULA_VLAN`, `NFULA_L2HDR` are 19 and 20);
/// a larger one in one byte order means the list is in the other.
const MAX_TLV_TYPE: u16 = 0xff;

/// The address family of an NFLOG record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// AF_INET.
    Ipv4,
    /// AF_INET6.
    Ipv6,
    /// Another family (bridge, ARP).
    Other(u8),
}

/// What an NFLOG record holds for the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NflogRecord<'a> {
    /// Address family from the header.
    pub family: Family,
    /// The logged packet (`NFULA_PAYLOAD`), when the rule logged one: cut to the
    /// bytes the record holds if its length claims more (the snaplen).
    pub payload: Option<&'a [u8]>,
}

/// Reads an NFLOG record: its family and the logged IP packet.
pub fn payload(data: &[u8]) -> Result<NflogRecord<'_>, ViewError> {
    if data.len() < HEADER_LEN {
        return Err(ViewError::Truncated {
            layer: "NFLOG header",
            required: HEADER_LEN,
            len: data.len(),
        });
    }
    if data[1] != 0 {
        return Err(ViewError::Invalid {
            layer: "NFLOG header",
            detail: "version is not 0",
        });
    }
    let family = match data[0] {
        2 => Family::Ipv4,
        10 => Family::Ipv6,
        f => Family::Other(f),
    };
    let tlvs = &data[HEADER_LEN..];
    let payload = match walk(tlvs, u16::from_le_bytes) {
        Ok(p) => p,
        Err(le_err) => walk(tlvs, u16::from_be_bytes).map_err(|_| le_err)?,
    };
    Ok(NflogRecord { family, payload })
}

/// Walks the TLVs with `read` as the byte order; the payload TLV's value if there is
/// one. Fails when a TLV is shorter than its header, has an implausible type, or
/// (other than a last one cut by the snaplen) runs past the end.
fn walk(mut tlvs: &[u8], read: fn([u8; 2]) -> u16) -> Result<Option<&[u8]>, ViewError> {
    let mut found = None;
    while !tlvs.is_empty() {
        if tlvs.len() < TLV_HEADER_LEN {
            return Err(ViewError::Truncated {
                layer: "NFLOG TLV header",
                required: TLV_HEADER_LEN,
                len: tlvs.len(),
            });
        }
        let len = usize::from(read([tlvs[0], tlvs[1]]));
        let kind = read([tlvs[2], tlvs[3]]);
        if len < TLV_HEADER_LEN {
            return Err(ViewError::Invalid {
                layer: "NFLOG TLV",
                detail: "length shorter than the TLV header",
            });
        }
        if kind > MAX_TLV_TYPE {
            return Err(ViewError::Invalid {
                layer: "NFLOG TLV",
                detail: "type beyond those the kernel defines (other byte order?)",
            });
        }
        if len > tlvs.len() {
            // Only the payload, which the kernel puts last, may be cut by the snaplen.
            if kind == NFULA_PAYLOAD {
                return Ok(Some(&tlvs[TLV_HEADER_LEN..]));
            }
            return Err(ViewError::Truncated {
                layer: "NFLOG TLV",
                required: len,
                len: tlvs.len(),
            });
        }
        if kind == NFULA_PAYLOAD && found.is_none() {
            found = Some(&tlvs[TLV_HEADER_LEN..len]);
        }
        let padded = len.div_ceil(4) * 4;
        tlvs = &tlvs[padded.min(tlvs.len())..];
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(le: bool, kind: u16, value: &[u8]) -> Vec<u8> {
        let len = (value.len() + 4) as u16;
        let mut v = if le {
            [len.to_le_bytes(), kind.to_le_bytes()].concat()
        } else {
            [len.to_be_bytes(), kind.to_be_bytes()].concat()
        };
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn record(le: bool, packet: &[u8]) -> Vec<u8> {
        let mut v = vec![2, 0, 0, 5];
        v.extend(tlv(le, 1, &[0x08, 0x00, 1, 0])); // NFULA_PACKET_HDR
        v.extend(tlv(le, 10, b"test-prefix\0")); // NFULA_PREFIX
        v.extend(tlv(le, 9, packet));
        v
    }

    #[test]
    fn payload_in_either_byte_order() {
        let ip = [0x45u8; 41];
        for le in [true, false] {
            let r = record(le, &ip);
            let got = payload(&r).unwrap();
            assert_eq!(got.family, Family::Ipv4);
            assert_eq!(got.payload, Some(&ip[..]), "little-endian: {le}");
        }
    }

    #[test]
    fn without_payload_and_cut_by_snaplen() {
        let mut r = vec![10, 0, 0, 0];
        r.extend(tlv(true, 10, b"p\0"));
        let got = payload(&r).unwrap();
        assert_eq!((got.family, got.payload), (Family::Ipv6, None));
        // The payload TLV claims 100 bytes; 30 were captured.
        let full = record(true, &[0x45u8; 96]);
        let cut = &full[..full.len() - 70];
        assert_eq!(payload(cut).unwrap().payload.map(<[u8]>::len), Some(26));
    }

    #[test]
    fn truncated_and_impossible() {
        assert!(matches!(
            payload(&[2, 0, 0]),
            Err(ViewError::Truncated { required: 4, .. })
        ));
        assert!(payload(&[2, 1, 0, 0]).is_err());
        // A TLV header cut off, a length below 4, a prefix TLV running past the end.
        assert!(payload(&[2, 0, 0, 0, 8, 0]).is_err());
        assert!(payload(&[2, 0, 0, 0, 2, 0, 1, 0]).is_err());
        assert!(payload(&[2, 0, 0, 0, 64, 0, 10, 0, 1, 2, 3, 4]).is_err());
    }
}
