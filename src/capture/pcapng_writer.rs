//! Writes pcapng: a section header, one interface block per interface (with its name
//! and nanosecond timestamps), and an enhanced packet block per packet. Used by
//! `flowtrace live -w` so a live run can be replayed with `flowtrace pcap`.

use crate::time::Ts;
use std::io::{self, Write};

/// A pcapng file being written.
pub struct PcapngWriter<W: Write> {
    out: W,
    /// Bytes written so far (for `-C`, which starts a new file past a size).
    written: u64,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a file with interfaces `(name, linktype, snaplen)`.
    pub fn new(mut out: W, interfaces: &[(String, i32, u32)]) -> io::Result<PcapngWriter<W>> {
        // Section header block: type, length, byte-order magic, version 1.0, length -1.
        let shb_len: u32 = 28;
        let mut written = u64::from(shb_len);
        out.write_all(&0x0A0D_0D0Au32.to_le_bytes())?;
        out.write_all(&shb_len.to_le_bytes())?;
        out.write_all(&0x1A2B_3C4Du32.to_le_bytes())?;
        out.write_all(&1u16.to_le_bytes())?;
        out.write_all(&0u16.to_le_bytes())?;
        out.write_all(&(-1i64).to_le_bytes())?;
        out.write_all(&shb_len.to_le_bytes())?;
        for (name, link, snaplen) in interfaces {
            let name = name.as_bytes();
            // Options: if_name (2), if_tsresol (9) = 9 (nanoseconds), end (0).
            let opt_len = 4 + name.len() + pad4(name.len()) + 4 + 4 + 4;
            let len = (20 + opt_len) as u32;
            written += u64::from(len);
            out.write_all(&1u32.to_le_bytes())?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&(*link as u16).to_le_bytes())?;
            out.write_all(&0u16.to_le_bytes())?;
            out.write_all(&snaplen.to_le_bytes())?;
            out.write_all(&2u16.to_le_bytes())?;
            out.write_all(&(name.len() as u16).to_le_bytes())?;
            out.write_all(name)?;
            out.write_all(&[0u8; 3][..pad4(name.len())])?;
            out.write_all(&9u16.to_le_bytes())?;
            out.write_all(&1u16.to_le_bytes())?;
            out.write_all(&[9u8, 0, 0, 0])?;
            out.write_all(&0u32.to_le_bytes())?;
            out.write_all(&len.to_le_bytes())?;
        }
        Ok(PcapngWriter { out, written })
    }

    /// Appends a packet captured on interface `iface`.
    pub fn packet(&mut self, iface: u32, ts: Ts, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let len = (32 + data.len() + pad4(data.len())) as u32;
        let t = ts.0.max(0) as u64;
        self.written += u64::from(len);
        self.out.write_all(&6u32.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&iface.to_le_bytes())?;
        self.out.write_all(&((t >> 32) as u32).to_le_bytes())?;
        self.out.write_all(&(t as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(&orig_len.to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&[0u8; 3][..pad4(data.len())])?;
        self.out.write_all(&len.to_le_bytes())?;
        Ok(())
    }

    /// Bytes written so far, headers included.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::Stats;
    use crate::capture::FileSource;

    #[test]
    fn written_files_read_back() {
        let dir = std::env::temp_dir().join(format!("flowtrace-pcapng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.pcapng");
        let mut w = PcapngWriter::new(
            std::fs::File::create(&path).unwrap(),
            &[("eth0".into(), 1, 65535), ("veth-kong".into(), 276, 65535)],
        )
        .unwrap();
        w.packet(0, Ts::from_parts(1_700_000_000, 123_456_789), 3, &[1, 2, 3])
            .unwrap();
        w.packet(1, Ts::from_parts(1_700_000_001, 5), 60, &[9; 5])
            .unwrap();
        // The file is unbuffered here: every byte written is on disk.
        assert_eq!(w.bytes_written(), std::fs::metadata(&path).unwrap().len());
        w.finish().unwrap();
        let mut src = FileSource::open(&[&path]).unwrap();
        let mut stats = Stats::default();
        let (f, ifs) = src.next_frame(&mut stats).unwrap().unwrap();
        assert_eq!(
            (f.ts, f.data, f.orig_len),
            (
                Ts::from_parts(1_700_000_000, 123_456_789),
                &[1u8, 2, 3][..],
                3
            )
        );
        assert_eq!(ifs.get(f.iface).name.as_deref(), Some("eth0"));
        let (f, ifs) = src.next_frame(&mut stats).unwrap().unwrap();
        assert_eq!((f.link.0, f.data.len(), f.orig_len), (276, 5, 60));
        assert_eq!(ifs.get(f.iface).name.as_deref(), Some("veth-kong"));
        assert!(src.next_frame(&mut stats).unwrap().is_none());
        assert!(src.warnings().is_empty());
    }
}
