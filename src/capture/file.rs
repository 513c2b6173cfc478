//! Capture files through pcap-parser's streaming readers.

use super::mapped::MappedPcap;
use super::read_ahead::ReadAhead;
use super::{Frame, IfaceId, InterfaceDesc, Interfaces, Linktype};
use crate::anomaly::Stats;
use crate::error::CaptureError;
use crate::time::Ts;
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapBlock, LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Read buffer per file. Must hold the largest block; 256 KiB snaplens fit many times.
const BUFFER_CAPACITY: usize = 4 << 20;
/// The read buffer grows up to this for an oversized block (a hostile length field
/// cannot make it grow further).
const MAX_BUFFER_CAPACITY: usize = 256 << 20;
/// Bytes read up front to recognise the format (and the gzip wrapper).
const SNIFF_LEN: usize = 64 << 10;

type Input = Box<dyn Read + Send>;

/// Counts the bytes read from the underlying file (before any gzip decompression),
/// so progress can be shown against the file size.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

enum Reader {
    Legacy(LegacyPcapReader<Input>),
    Ng(PcapNGReader<Input>),
    /// A regular, uncompressed legacy pcap file, memory-mapped.
    Mapped(MappedPcap),
}

impl Reader {
    fn iter(&mut self) -> &mut dyn PcapReaderIterator {
        match self {
            Reader::Legacy(r) => r,
            Reader::Ng(r) => r,
            Reader::Mapped(r) => r,
        }
    }
}

/// Per-interface decoding state of the current section.
#[derive(Clone, Copy)]
struct IfaceState {
    id: IfaceId,
    link: Linktype,
    /// Timestamp units per second (a power of ten or of two, from `if_tsresol`).
    units: u64,
    offset_secs: i64,
}

/// A problem that ended one file early without aborting the run (a truncated file,
/// a corrupt block). Reported in the summary and JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Warning {
    /// The capture file.
    pub file: String,
    /// What happened, in one line.
    pub message: String,
}

struct FileReader {
    reader: Reader,
    walk: Walk,
    raw_read: Arc<AtomicU64>,
    size: Option<u64>,
}

/// Where a file reader is in its byte stream, apart from the stream itself (so
/// that [`Walk::advance`] can take the reader as a concrete type).
struct Walk {
    state: FileState,
    pending_consume: usize,
    /// The packet block at the head of the buffer, not yet taken.
    head: Option<Head>,
    done: bool,
    buffer_size: usize,
}

/// What a file reader knows besides its byte stream.
struct FileState {
    index: usize,
    name: String,
    ifaces: Vec<IfaceState>,
    last_ts: Ts,
    frames: u64,
    /// A remark about the file to report once (odd but usable header fields).
    note: Option<String>,
    ng: bool,
}

/// Several capture files read as one stream in timestamp order.
pub struct FileSource {
    readers: Vec<FileReader>,
    interfaces: Interfaces,
    warnings: Vec<Warning>,
    /// Index of the reader whose frame was handed out last.
    current: Option<usize>,
}

/// Opens a capture; returns the reader and the file's size (unknown for stdin).
fn open_input(path: &Path, count: Arc<AtomicU64>) -> Result<(Input, Option<u64>), CaptureError> {
    if path.as_os_str() == "-" {
        return Ok((
            Box::new(Counting {
                inner: io::stdin(),
                count,
            }),
            None,
        ));
    }
    let io_err = |source| CaptureError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    Ok((Box::new(Counting { inner: file, count }), Some(size)))
}

/// Reads up to `SNIFF_LEN` bytes so the format can be told from them, and gives back
/// a reader that still yields every byte.
fn sniff(mut input: Input, path: &Path) -> Result<(Vec<u8>, Input), CaptureError> {
    let mut prefix = Vec::with_capacity(SNIFF_LEN);
    (&mut input)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok((prefix.clone(), Box::new(Cursor::new(prefix).chain(input))))
}

fn header_error(path: &Path, format: &'static str, e: PcapError<&[u8]>) -> CaptureError {
    let detail = match e {
        PcapError::Incomplete(_) | PcapError::UnexpectedEof | PcapError::Eof => {
            "file ends inside the header".to_string()
        }
        PcapError::HeaderNotRecognized => "header not recognised".to_string(),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("malformed header ({kind:?})")
        }
        PcapError::BufferTooSmall => "header block larger than the read buffer".to_string(),
        PcapError::ReadError => "read error".to_string(),
    };
    CaptureError::BadHeader {
        path: path.to_owned(),
        format,
        detail,
    }
}

impl FileReader {
    /// Opens `path`, mapped when `map` and it is a plain pcap file (see
    /// [`MappedPcap`]), else buffered (and read ahead on a thread when `read_ahead`).
    fn open(
        index: usize,
        path: &Path,
        read_ahead: bool,
        map: bool,
    ) -> Result<FileReader, CaptureError> {
        let count = Arc::new(AtomicU64::new(0));
        if map && path.as_os_str() != "-" {
            if let Some(mapped) = File::open(path)
                .ok()
                .and_then(|f| MappedPcap::open(&f, count.clone()))
            {
                // Nothing to read ahead: the file is parsed where the page cache has it.
                let size = Some(mapped.len() as u64);
                return Ok(FileReader::new(
                    index,
                    path,
                    Reader::Mapped(mapped),
                    count,
                    size,
                ));
            }
        }
        let (raw, size) = open_input(path, count.clone())?;
        let (mut prefix, mut input) = sniff(raw, path)?;
        if prefix.starts_with(&[0x1f, 0x8b]) {
            input = Box::new(flate2::read::MultiGzDecoder::new(input));
            (prefix, input) = sniff(input, path)?;
        }
        if read_ahead {
            // After the gzip decoder: decompression moves to the reading thread too.
            input = Box::new(ReadAhead::new(input).map_err(|source| CaptureError::Io {
                path: path.to_owned(),
                source,
            })?);
        }
        if prefix.len() < 4 {
            return Err(CaptureError::ShortHeader {
                path: path.to_owned(),
                len: prefix.len(),
            });
        }
        let magic = [prefix[0], prefix[1], prefix[2], prefix[3]];
        let reader = match magic {
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                check_pcapng_version(&prefix, path)?;
                Reader::Ng(
                    PcapNGReader::new(BUFFER_CAPACITY, input)
                        .map_err(|e| header_error(path, "pcapng", e))?,
                )
            }
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x34, 0xcd, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xcd, 0x34] => {
                if prefix.len() < 24 {
                    return Err(CaptureError::ShortHeader {
                        path: path.to_owned(),
                        len: prefix.len(),
                    });
                }
                Reader::Legacy(
                    LegacyPcapReader::new(BUFFER_CAPACITY, input)
                        .map_err(|e| header_error(path, "pcap", e))?,
                )
            }
            _ => {
                return Err(CaptureError::NotACapture {
                    path: path.to_owned(),
                    magic: prefix[..4].iter().map(|b| format!("{b:02x}")).collect(),
                })
            }
        };
        Ok(FileReader::new(index, path, reader, count, size))
    }

    fn new(
        index: usize,
        path: &Path,
        reader: Reader,
        raw_read: Arc<AtomicU64>,
        size: Option<u64>,
    ) -> FileReader {
        let ng = matches!(reader, Reader::Ng(_));
        FileReader {
            reader,
            walk: Walk {
                state: FileState {
                    index,
                    name: path.display().to_string(),
                    ifaces: Vec::new(),
                    last_ts: Ts::default(),
                    frames: 0,
                    note: None,
                    ng,
                },
                pending_consume: 0,
                head: None,
                done: false,
                buffer_size: BUFFER_CAPACITY,
            },
            raw_read,
            size,
        }
    }

    /// Moves to the next packet block, handling the header, section and interface
    /// blocks on the way. Returns its timestamp, or `None` at the end of the file.
    fn advance(
        &mut self,
        interfaces: &mut Interfaces,
        stats: &mut Stats,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Ts>, CaptureError> {
        if let Some(h) = self.walk.head {
            return Ok(Some(h.ts));
        }
        // Dispatched once here, not at every call inside the loop: it runs for every
        // frame, and through `dyn` none of the reader's small methods was inlined.
        let walk = &mut self.walk;
        match &mut self.reader {
            Reader::Mapped(r) => {
                if let Some(head) = walk.mapped_head(r) {
                    walk.head = Some(head);
                    return Ok(Some(head.ts));
                }
                walk.advance(r, interfaces, stats, warnings)
            }
            Reader::Legacy(r) => walk.advance(r, interfaces, stats, warnings),
            Reader::Ng(r) => walk.advance(r, interfaces, stats, warnings),
        }
    }

    /// The next frame of a mapped legacy pcap whose header was read (its data
    /// left to the caller), when the next record parses and no frame is waiting at
    /// the head; `None` leaves the rest (errors, the end) to
    /// [`FileReader::advance`], with the previous record consumed.
    fn next_mapped(&mut self) -> Option<MappedFrame> {
        let Reader::Mapped(reader) = &mut self.reader else {
            return None;
        };
        if self.walk.head.is_some() {
            return None;
        }
        let head = self.walk.mapped_head(reader)?;
        let iface = self.walk.hand_out(&head)?;
        Some(MappedFrame {
            frame: Frame {
                ts: head.ts,
                iface: iface.id,
                link: iface.link,
                orig_len: head.orig_len,
                data: &[],
            },
            start: head.start,
            len: head.len,
        })
    }

    /// Hands out the packet block at the head (after [`FileReader::advance`] found
    /// it), without parsing it again.
    fn take(&mut self) -> Option<Frame<'_>> {
        let head = self.walk.head.take()?;
        let iface = self.walk.hand_out(&head)?;
        let data = self
            .reader
            .iter()
            .data()
            .get(head.start..head.start + head.len)?;
        Some(Frame {
            ts: head.ts,
            iface: iface.id,
            link: iface.link,
            orig_len: head.orig_len,
            data,
        })
    }
}

impl Walk {
    /// [`Walk::advance`]'s step from one packet record of a mapped legacy pcap to
    /// the next, when that is all there is to it (the record parses and the file
    /// header was read), as the head it finds; `None` sends the caller down the
    /// general path, with the previous block consumed.
    fn mapped_head(&mut self, reader: &mut MappedPcap) -> Option<Head> {
        if self.done || self.state.ng {
            return None;
        }
        let iface = match self.state.ifaces.as_slice() {
            [iface] => *iface,
            _ => return None,
        };
        let pending = std::mem::take(&mut self.pending_consume);
        let (block_len, b) = reader.next_record(pending)?;
        let p = FileState::legacy_packet(&b, &iface);
        Some(Head::of(p, reader.data(), block_len))
    }

    /// Hands out `head`: the file's position moves past it. Returns its interface.
    fn hand_out(&mut self, head: &Head) -> Option<IfaceState> {
        self.state.last_ts = head.ts;
        self.state.frames += 1;
        self.pending_consume = head.block_len;
        self.state.ifaces.get(head.iface).copied()
    }

    /// [`FileReader::advance`] over one kind of reader.
    fn advance<R: PcapReaderIterator + ?Sized>(
        &mut self,
        reader: &mut R,
        interfaces: &mut Interfaces,
        stats: &mut Stats,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Ts>, CaptureError> {
        loop {
            if self.done {
                return Ok(None);
            }
            // consume_noshift: the plain consume moves half the buffer whenever the
            // read position passes the middle; refill moves only the remainder.
            let pending = std::mem::take(&mut self.pending_consume);
            if pending > 0 {
                reader.consume_noshift(pending);
            }
            let first = reader.consumed() == 0;
            let frames = self.state.frames;
            let mut consume = None;
            let mut block_len = 0;
            // Whether the buffer has room for more of the input (see BufferTooSmall).
            let room = reader.data().len() < self.buffer_size && !reader.reader_exhausted();
            let outcome = match reader.next() {
                Ok((offset, block)) => {
                    let step = self.state.on_block(block, interfaces, stats, first);
                    if matches!(step, Step::Again) {
                        consume = Some(offset);
                    }
                    block_len = offset;
                    step
                }
                Err(PcapError::Eof) => Step::End,
                Err(PcapError::Incomplete(_)) => match reader.refill() {
                    Ok(()) => Step::Again,
                    Err(_) => Step::Stop("read error while refilling".into()),
                },
                Err(PcapError::UnexpectedEof) => Step::Stop(format!(
                    "file is cut off in the middle of a record after {frames} frames; read up to the cut"
                )),
                // A block's length field alone must not grow the buffer: a tiny file
                // claiming a 100 MiB record made it grow to 256 MiB (found by the
                // capture_file fuzzer). Fill it first; if the input ends before,
                // the record is cut off (UnexpectedEof on the next call).
                Err(PcapError::BufferTooSmall) if room => {
                    match reader.refill() {
                        Ok(()) => Step::Again,
                        Err(_) => Step::Stop("read error while refilling".into()),
                    }
                }
                Err(PcapError::BufferTooSmall) => {
                    let size = self.buffer_size * 2;
                    if size <= MAX_BUFFER_CAPACITY && reader.grow(size) {
                        self.buffer_size = size;
                        Step::Again
                    } else {
                        Step::Stop(format!(
                            "a block is larger than the {} MiB read buffer; stopped after {frames} frames",
                            MAX_BUFFER_CAPACITY >> 20
                        ))
                    }
                }
                Err(PcapError::ReadError) => Step::Stop("read error".into()),
                Err(PcapError::HeaderNotRecognized) => Step::Stop("header not recognised".into()),
                Err(PcapError::NomError(_, kind)) | Err(PcapError::OwnedNomError(_, kind))
                    if frames == 0 =>
                {
                    Step::Fatal(format!("malformed block before the first packet ({kind:?})"))
                }
                Err(PcapError::NomError(_, kind)) | Err(PcapError::OwnedNomError(_, kind)) => {
                    Step::Stop(format!(
                        "corrupt block after {frames} frames ({kind:?}); the rest of the file is skipped"
                    ))
                }
            };
            if let Some(offset) = consume {
                reader.consume_noshift(offset);
            }
            if let Some(message) = self.state.note.take() {
                warnings.push(Warning {
                    file: self.state.name.clone(),
                    message,
                });
            }
            match outcome {
                Step::Packet(p) => {
                    self.head = Some(Head::of(p, reader.data(), block_len));
                    return Ok(Some(p.ts));
                }
                Step::Again => {}
                Step::End => self.done = true,
                Step::Fatal(detail) => {
                    return Err(CaptureError::BadHeader {
                        path: PathBuf::from(&self.state.name),
                        format: if self.state.ng { "pcapng" } else { "pcap" },
                        detail,
                    })
                }
                Step::Stop(message) => {
                    warnings.push(Warning {
                        file: self.state.name.clone(),
                        message,
                    });
                    self.done = true;
                }
            }
        }
    }
}

impl FileState {
    /// A legacy pcap record as a packet of the file's one interface.
    fn legacy_packet(b: &LegacyPcapBlock<'_>, iface: &IfaceState) -> PacketRef {
        let sub = if iface.units == 1_000_000 {
            i64::from(b.ts_usec) * 1000
        } else {
            i64::from(b.ts_usec)
        };
        PacketRef {
            ts: Ts::from_parts(i64::from(b.ts_sec), sub),
            addr: b.data.as_ptr() as usize,
            len: b.data.len(),
            orig_len: b.origlen,
            iface: 0,
        }
    }

    fn on_block(
        &mut self,
        block: PcapBlockOwned<'_>,
        interfaces: &mut Interfaces,
        stats: &mut Stats,
        first: bool,
    ) -> Step {
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                if h.version_major != 2 {
                    return Step::Fatal(format!(
                        "unsupported version {}.{} (only 2.x exists)",
                        h.version_major, h.version_minor
                    ));
                }
                let raw = h.network.0;
                if raw as u32 & 0xffff_0000 != 0 {
                    // The upper bits hold the FCS length and reserved bits; the link
                    // type is the low 16 bits (pcap spec, "LinkType and additional
                    // information").
                    self.note = Some(format!(
                        "link type field 0x{:08x} has its upper bits set; using link type {}",
                        raw as u32,
                        raw & 0xffff
                    ));
                }
                let id = interfaces.push(InterfaceDesc {
                    file: self.index,
                    file_name: self.name.clone(),
                    index_in_file: 0,
                    name: None,
                    linktype: raw & 0xffff,
                });
                self.ifaces = vec![IfaceState {
                    id,
                    link: Linktype(raw & 0xffff),
                    units: if h.is_nanosecond_precision() {
                        1_000_000_000
                    } else {
                        1_000_000
                    },
                    offset_secs: 0,
                }];
                Step::Again
            }
            PcapBlockOwned::Legacy(b) => {
                let Some(iface) = self.ifaces.first().copied() else {
                    return Step::Stop("packet record before the file header".into());
                };
                Step::Packet(FileState::legacy_packet(&b, &iface))
            }
            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                if shb.major_version != 1 {
                    let detail = format!(
                        "unsupported section header version {}.{}",
                        shb.major_version, shb.minor_version
                    );
                    return if first {
                        Step::Fatal(detail)
                    } else {
                        Step::Stop(format!(
                            "{detail} after {} frames; the rest of the file is skipped",
                            self.frames
                        ))
                    };
                }
                self.ifaces.clear();
                Step::Again
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                let units = match idb.if_tsresol {
                    r if r & 0x80 != 0 => 1u64 << (r & 0x7f).min(63),
                    r => 10u64.saturating_pow(u32::from(r)),
                };
                let name = idb.if_name().and_then(|n| n.ok()).map(str::to_owned);
                let linktype = idb.linktype.0;
                let index_in_file = self.ifaces.len() as u32;
                let id = interfaces.push(InterfaceDesc {
                    file: self.index,
                    file_name: self.name.clone(),
                    index_in_file,
                    name,
                    linktype,
                });
                self.ifaces.push(IfaceState {
                    id,
                    link: Linktype(linktype),
                    units: units.max(1),
                    offset_secs: idb.if_tsoffset,
                });
                Step::Again
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let Some(iface) = self.ifaces.get(epb.if_id as usize).copied() else {
                    stats.unknown_linktype += 1;
                    return Step::Again;
                };
                let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                Step::Packet(PacketRef {
                    ts: ng_ts(raw, &iface),
                    addr: epb.data.as_ptr() as usize,
                    len: (epb.caplen as usize).min(epb.data.len()),
                    orig_len: epb.origlen,
                    iface: epb.if_id as usize,
                })
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                if self.ifaces.is_empty() {
                    return Step::Again;
                }
                // Simple packet blocks carry no timestamp: keep the file's order.
                Step::Packet(PacketRef {
                    ts: self.last_ts,
                    addr: spb.data.as_ptr() as usize,
                    len: spb.data.len(),
                    orig_len: spb.origlen,
                    iface: 0,
                })
            }
            PcapBlockOwned::NG(_) => Step::Again,
        }
    }
}

fn ng_ts(raw: u64, iface: &IfaceState) -> Ts {
    let (secs, frac_units) = (raw / iface.units, raw % iface.units);
    let nanos = (u128::from(frac_units) * 1_000_000_000 / u128::from(iface.units)) as i64;
    Ts::from_parts((secs as i64).saturating_add(iface.offset_secs), nanos)
}

/// pcap-parser accepts any section header version; flowtrace refuses all but 1.x, as
/// the pcapng spec and tshark do.
fn check_pcapng_version(prefix: &[u8], path: &Path) -> Result<(), CaptureError> {
    if prefix.len() < 14 {
        return Err(CaptureError::ShortHeader {
            path: path.to_owned(),
            len: prefix.len(),
        });
    }
    let bom = [prefix[8], prefix[9], prefix[10], prefix[11]];
    let major = match bom {
        [0x4d, 0x3c, 0x2b, 0x1a] => {
            u16::from_le_bytes([prefix[12], prefix.get(13).copied().unwrap_or(0)])
        }
        [0x1a, 0x2b, 0x3c, 0x4d] => {
            u16::from_be_bytes([prefix[12], prefix.get(13).copied().unwrap_or(0)])
        }
        _ => {
            return Err(CaptureError::BadHeader {
                path: path.to_owned(),
                format: "pcapng",
                detail: "byte-order magic not recognised".into(),
            })
        }
    };
    if major != 1 {
        return Err(CaptureError::BadHeader {
            path: path.to_owned(),
            format: "pcapng",
            detail: format!("unsupported section header version {major}.x"),
        });
    }
    Ok(())
}

/// Where a packet block's data lies, found by the one parse of the block: the data's
/// address and length (turned into an offset into the reader's buffer once the
/// block's borrow ends), its interface, and the block's length.
#[derive(Clone, Copy)]
struct PacketRef {
    ts: Ts,
    addr: usize,
    len: usize,
    orig_len: u32,
    iface: usize,
}

/// A frame that [`FileReader::next_mapped`] found: its data at `start..start + len`
/// of the reader's data (taken after, so that the reader is borrowed once).
struct MappedFrame {
    frame: Frame<'static>,
    start: usize,
    len: usize,
}

/// A packet block at the head of the buffer, not yet handed out.
#[derive(Clone, Copy)]
struct Head {
    ts: Ts,
    start: usize,
    len: usize,
    orig_len: u32,
    iface: usize,
    block_len: usize,
}

impl Head {
    /// The head of packet `p`, found in `data` (the reader's buffer from the
    /// block's start), its block `block_len` bytes long.
    fn of(p: PacketRef, data: &[u8], block_len: usize) -> Head {
        Head {
            ts: p.ts,
            start: p.addr - data.as_ptr() as usize,
            len: p.len,
            orig_len: p.orig_len,
            iface: p.iface,
            block_len,
        }
    }
}

enum Step {
    Packet(PacketRef),
    Again,
    End,
    Stop(String),
    Fatal(String),
}

impl FileSource {
    /// Opens every capture (`-` is stdin). Fails on the first file whose header cannot
    /// be read; problems later in a file become [`Warning`]s.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<FileSource, CaptureError> {
        FileSource::open_with(paths, false)
    }

    /// As [`FileSource::open`], each file read (and decompressed) ahead on a thread
    /// of its own: for a machine with a spare core.
    pub fn open_reading_ahead<P: AsRef<Path>>(paths: &[P]) -> Result<FileSource, CaptureError> {
        FileSource::open_with(paths, true)
    }

    fn open_with<P: AsRef<Path>>(
        paths: &[P],
        read_ahead: bool,
    ) -> Result<FileSource, CaptureError> {
        FileSource::open_mapping(paths, read_ahead, true)
    }

    /// As [`FileSource::open_with`], plain pcap files mapped only when `map`.
    fn open_mapping<P: AsRef<Path>>(
        paths: &[P],
        read_ahead: bool,
        map: bool,
    ) -> Result<FileSource, CaptureError> {
        let readers = paths
            .iter()
            .enumerate()
            .map(|(i, p)| FileReader::open(i, p.as_ref(), read_ahead, map))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FileSource {
            readers,
            interfaces: Interfaces::default(),
            warnings: Vec::new(),
            current: None,
        })
    }

    /// The next frame in timestamp order across all files, with the interface table
    /// that names its interface, or `None` when all are read.
    pub fn next_frame(
        &mut self,
        stats: &mut Stats,
    ) -> Result<Option<(Frame<'_>, &Interfaces)>, CaptureError> {
        // One mapped file: its next record straight to a frame (most runs; the
        // general path below peeks at every file's next frame to merge by time).
        if self.readers.len() == 1 {
            if let Some(frame) = self.readers[0].next_mapped() {
                self.current = Some(0);
                let data = self.readers[0].reader.iter().data();
                let frame = Frame {
                    data: data
                        .get(frame.start..frame.start + frame.len)
                        .unwrap_or_default(),
                    ..frame.frame
                };
                return Ok(Some((frame, &self.interfaces)));
            }
        }
        let mut best: Option<(Ts, usize)> = None;
        for (i, r) in self.readers.iter_mut().enumerate() {
            if let Some(ts) = r.advance(&mut self.interfaces, stats, &mut self.warnings)? {
                // Ties keep input order so one file's frames stay in their own order.
                if best.is_none_or(|(b, _)| ts < b) {
                    best = Some((ts, i));
                }
            }
        }
        let Some((_, i)) = best else {
            self.current = None;
            return Ok(None);
        };
        self.current = Some(i);
        Ok(self.readers[i].take().map(|f| (f, &self.interfaces)))
    }

    /// Every interface seen so far.
    pub fn interfaces(&self) -> &Interfaces {
        &self.interfaces
    }

    /// Files that ended early, and why.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Bytes read from the input files so far (compressed bytes for gzip inputs), and
    /// their total size when every input is a regular file.
    pub fn progress(&self) -> (u64, Option<u64>) {
        let done = self
            .readers
            .iter()
            .map(|r| r.raw_read.load(Ordering::Relaxed))
            .sum();
        let total = self.readers.iter().map(|r| r.size).sum::<Option<u64>>();
        (done, total)
    }

    /// Names of the input files, in input order.
    pub fn file_names(&self) -> Vec<String> {
        self.readers
            .iter()
            .map(|r| r.walk.state.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy pcap (little-endian, microseconds, Ethernet) with one record header
    /// claiming `caplen` bytes and `data` after it.
    fn pcap_claiming(caplen: u32, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&(256u32 << 20).to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&caplen.to_le_bytes());
        p.extend_from_slice(&caplen.to_le_bytes());
        p.extend_from_slice(data);
        p
    }

    /// Reads a capture of `bytes` through the buffered reader.
    fn read_all(name: &str, bytes: &[u8]) -> (FileSource, u64) {
        let (source, frames) = read_frames(name, bytes, false);
        (source, frames.len() as u64)
    }

    /// Reads a capture of `bytes`, mapped when `map` (and it is a plain pcap);
    /// returns every frame's (ts, orig_len, data).
    fn read_frames(name: &str, bytes: &[u8], map: bool) -> (FileSource, Vec<(Ts, u32, Vec<u8>)>) {
        let path =
            std::env::temp_dir().join(format!("flowtrace-{name}-{map}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let mut source = FileSource::open_mapping(&[&path], false, map).unwrap();
        let mut stats = Stats::default();
        let mut frames = Vec::new();
        while let Some((f, _)) = source.next_frame(&mut stats).unwrap() {
            frames.push((f.ts, f.orig_len, f.data.to_vec()));
        }
        std::fs::remove_file(&path).unwrap();
        (source, frames)
    }

    /// A mapped pcap gives the frames, the progress and the warnings of the
    /// buffered reader: whole, cut off in a record, cut off in a record header, and
    /// big-endian with nanoseconds.
    #[test]
    fn mapped_reads_as_buffered() {
        let mut whole = pcap_claiming(60, &[7; 60]);
        for i in 0..1000u32 {
            let len = 40 + i % 100;
            whole.extend_from_slice(&(1_700_000_000 + i).to_le_bytes());
            whole.extend_from_slice(&(i * 3).to_le_bytes());
            whole.extend_from_slice(&len.to_le_bytes());
            whole.extend_from_slice(&(len + 5).to_le_bytes());
            whole.extend((0..len).map(|b| (b + i) as u8));
        }
        let mut big_endian = vec![0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4];
        big_endian.extend_from_slice(&[0; 8]);
        big_endian.extend_from_slice(&65535u32.to_be_bytes());
        big_endian.extend_from_slice(&1u32.to_be_bytes());
        for i in 0..3u32 {
            big_endian.extend_from_slice(&(1_700_000_000 + i).to_be_bytes());
            big_endian.extend_from_slice(&(999_999_999 - i).to_be_bytes());
            big_endian.extend_from_slice(&4u32.to_be_bytes());
            big_endian.extend_from_slice(&4u32.to_be_bytes());
            big_endian.extend_from_slice(&i.to_be_bytes());
        }
        let cases = [
            ("whole", whole.clone()),
            ("cut-in-data", whole[..whole.len() - 10].to_vec()),
            ("cut-in-header", whole[..24 + 16 + 60 + 7].to_vec()),
            ("big-endian", big_endian),
        ];
        for (name, bytes) in cases {
            let (buffered, expected) = read_frames(name, &bytes, false);
            let (mapped, frames) = read_frames(name, &bytes, true);
            assert!(
                matches!(mapped.readers[0].reader, Reader::Mapped(_)),
                "{name}"
            );
            assert!(!frames.is_empty(), "{name}");
            assert_eq!(frames, expected, "{name}");
            let messages = |s: &FileSource| -> Vec<String> {
                s.warnings().iter().map(|w| w.message.clone()).collect()
            };
            assert_eq!(messages(&mapped), messages(&buffered), "{name}");
            assert_eq!(mapped.progress().1, buffered.progress().1, "{name}");
            if !name.starts_with("cut") {
                assert_eq!(mapped.progress().0, buffered.progress().0, "{name}");
            } else {
                assert_eq!(messages(&mapped).len(), 1, "{name}");
            }
        }
    }

    /// Found by the capture_file fuzzer: a small file whose record claims 100 MiB
    /// grew the read buffer to 256 MiB (100 ms and 256 MiB for 1 KiB of input).
    /// The buffer grows only once full; the record is reported cut off.
    #[test]
    fn huge_record_length_in_a_small_file_does_not_grow_the_buffer() {
        let (source, frames) = read_all("huge-caplen", &pcap_claiming(100 << 20, &[0; 900]));
        assert_eq!(frames, 0);
        assert_eq!(source.readers[0].walk.buffer_size, BUFFER_CAPACITY);
        assert_eq!(source.warnings().len(), 1);
        assert!(
            source.warnings()[0].message.contains("cut off"),
            "{:?}",
            source.warnings()
        );
    }

    /// A record larger than the buffer that the file does hold is still read.
    #[test]
    fn record_larger_than_the_buffer_is_read_when_present() {
        let len = BUFFER_CAPACITY as u32 + 1000;
        let (source, frames) = read_all("big-record", &pcap_claiming(len, &vec![0; len as usize]));
        assert_eq!(frames, 1);
        assert_eq!(source.readers[0].walk.buffer_size, 2 * BUFFER_CAPACITY);
        assert!(source.warnings().is_empty(), "{:?}", source.warnings());
    }
}
