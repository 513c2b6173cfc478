//! A legacy pcap file read through a memory map, for a regular, uncompressed file.
//!
//! Why: reading a file with `read()` copies every byte from the page cache into the
//! reader's buffer (the kernel's `_copy_to_iter`, about 4 % of a small-packet run,
//! and with `--threads` a second copy out of the read-ahead chunks). Mapped, the
//! records are parsed where the page cache holds them. Standard input, gzip'd
//! captures, pcapng and anything that cannot be mapped keep the buffered reader
//! ([`super::file`]).
//!
//! [`MappedPcap`] speaks pcap-parser's [`PcapReaderIterator`], so the file reader
//! handles its blocks, errors and end exactly as the buffered reader's: the whole
//! file is "in the buffer" from the start, so a record cut off by the end of the file
//! is `UnexpectedEof`, never `Incomplete`.
//!
//! The map covers the file as it was when opened: bytes appended later (a capture
//! still being written) are not read, where `read()` would read up to wherever the
//! writer is at the time. A file truncated or rewritten while it is mapped (a
//! `tcpdump -W` ring overwriting its oldest file) makes the kernel raise SIGBUS at
//! the next read of a page past the new end: [`explain_bus_errors`] turns that into
//! an error message and exit code 2 instead of a bare "Bus error".

use pcap_parser::nom;
use pcap_parser::pcap::{
    parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    LegacyPcapBlock, PcapHeader,
};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};
use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The address ranges of the files mapped now, as (start, length), a start of 0 for
/// a free slot: what the SIGBUS handler reads (atomics, so from a signal handler).
static MAPPED: [(AtomicUsize, AtomicUsize); MAX_MAPPED] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_MAPPED];

/// Files mapped at once; a file past it is read with `read()`.
const MAX_MAPPED: usize = 256;

/// A map's slot in [`MAPPED`], freed when dropped.
struct Registered(usize);

impl Registered {
    /// Registers `bytes`' range and installs the handler; `None` when every slot is
    /// taken.
    fn new(bytes: &[u8]) -> Option<Registered> {
        let (start, len) = (bytes.as_ptr() as usize, bytes.len());
        // A slot is reserved (usize::MAX: no address lies at or past it), then given
        // its length, then its start: the handler never pairs a start with a stale
        // length.
        let slot = MAPPED.iter().position(|(s, _)| {
            s.compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        MAPPED[slot].1.store(len, Ordering::Relaxed);
        MAPPED[slot].0.store(start, Ordering::Release);
        explain_bus_errors();
        Some(Registered(slot))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        MAPPED[self.0].0.store(0, Ordering::Release);
    }
}

/// Installs (once per process) a SIGBUS handler for a mapped capture file cut
/// shorter while it is read: a fault at an address in one of [`MAPPED`] ends the
/// process with exit code 2 and a message saying what happened (there is nothing to
/// resume: the bytes are gone), where the process would die of the signal with no
/// word on which file or why. Any other bus error gets the default action back and
/// happens again as if there were no handler. The handler only reads atomics,
/// writes, resets the action and exits, all async-signal-safe.
#[cfg(unix)]
fn explain_bus_errors() {
    use nix::libc::{c_int, c_void, siginfo_t};
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn on_bus_error(_: c_int, info: *mut siginfo_t, _: *mut c_void) {
        const MESSAGE: &[u8] = b"flowtrace: error: bus error reading a memory-mapped capture \
file: it was truncated or rewritten while being read (a capture ring overwriting it?); \
copy the file first, or give it on standard input\n";
        // SAFETY: the kernel hands a valid siginfo_t to an SA_SIGINFO handler.
        #[allow(unsafe_code)]
        let addr = unsafe { (*info).si_addr() } as usize;
        let in_a_map = MAPPED.iter().any(|(s, l)| {
            let start = s.load(Ordering::Acquire);
            start != 0 && addr >= start && addr - start < l.load(Ordering::Relaxed)
        });
        // SAFETY: write(2), _exit(2) and signal(2) are async-signal-safe; MESSAGE
        // is static.
        #[allow(unsafe_code)]
        unsafe {
            if in_a_map {
                nix::libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
                nix::libc::_exit(2);
            }
            nix::libc::signal(nix::libc::SIGBUS, nix::libc::SIG_DFL);
        }
    }
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let action = SigAction::new(
            SigHandler::SigAction(on_bus_error),
            SaFlags::SA_SIGINFO | SaFlags::SA_ONSTACK,
            SigSet::empty(),
        );
        // SAFETY: the handler calls async-signal-safe functions only. A failure
        // leaves the default action (the process dies of the signal).
        #[allow(unsafe_code)]
        let _ = unsafe { sigaction(Signal::SIGBUS, &action) };
    });
}

#[cfg(not(unix))]
fn explain_bus_errors() {}

/// The smallest page size of the platforms we run on (madvise needs aligned ranges;
/// a larger page size only makes the kernel round).
const PAGE: usize = 4096;

type ParseFn = fn(&[u8]) -> nom::IResult<&[u8], LegacyPcapBlock<'_>, PcapError<&[u8]>>;

/// A mapped legacy pcap file, walked block by block.
pub(super) struct MappedPcap {
    /// The map's range, known to the SIGBUS handler while the map lives (dropped
    /// first: fields drop in order).
    _registered: Registered,
    map: memmap2::Mmap,
    header: PcapHeader,
    parse: ParseFn,
    /// Offset of the next block: the bytes consumed, the header included (0 until
    /// the header is handed out).
    pos: usize,
    /// Bytes consumed, for progress (as the buffered reader counts bytes read).
    progress: Arc<AtomicU64>,
    /// The map before this offset is handed back to the kernel ([`RELEASE_STEP`]).
    released: usize,
}

/// Pages walked past are handed back (`MADV_DONTNEED`) this many bytes at a time:
/// mapped pages count in the process's resident set, which would otherwise grow to
/// the size of the file (324 MiB on the small-packet capture, against 46 MiB with
/// `read()`).
const RELEASE_STEP: usize = 8 << 20;

impl MappedPcap {
    /// Maps `file` if it is a regular file holding a legacy pcap header that
    /// pcap-parser reads; `None` otherwise (the caller reads it the buffered way).
    pub(super) fn open(file: &File, progress: Arc<AtomicU64>) -> Option<MappedPcap> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() < 24 {
            return None;
        }
        // SAFETY: the map is read-only and private to this reader; it is undefined
        // behaviour only if another process truncates or rewrites the file while it
        // is mapped. Capture files are written once and appended to (appended bytes
        // are outside the map); a truncation raises SIGBUS, which ends the run with
        // a message ([`explain_bus_errors`]) before anything reads the lost bytes.
        // Measured to pay (docs/PERFORMANCE.md, 2026-12-04 session 27): the kernel's
        // copy into the read buffer was about 4 % of a small-packet run.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
        let registered = Registered::new(&map)?;
        // The kernel reads ahead further for a sequential walk.
        let _ = map.advise(memmap2::Advice::Sequential);
        let (_, header) = parse_pcap_header(&map).ok()?;
        let parse: ParseFn = if header.is_modified_format() {
            parse_pcap_frame_modified
        } else if header.is_bigendian() {
            parse_pcap_frame_be
        } else {
            parse_pcap_frame
        };
        Some(MappedPcap {
            _registered: registered,
            map,
            header,
            parse,
            pos: 0,
            progress,
            released: 0,
        })
    }

    /// The file's length.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    fn advance(&mut self, offset: usize) {
        self.pos = (self.pos + offset).min(self.map.len());
        self.progress.store(self.pos as u64, Ordering::Relaxed);
        // Whole pages before the current block only (the map starts on a page).
        let end = self.pos & !(PAGE - 1);
        if end >= self.released + RELEASE_STEP {
            // SAFETY: nothing borrows the map before `pos`: a block's data is borrowed
            // from `&self` (`data`, `next`), and this runs on `&mut self`, after the
            // previous block was handed out and dropped. The mapping is private and
            // never written, so a page touched again would be read from the file as
            // it was.
            #[allow(unsafe_code)]
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.released,
                    end - self.released,
                )
            };
            self.released = end;
        }
    }
}

impl MappedPcap {
    /// The next packet record after consuming `pending` bytes, parsed straight from
    /// the map: the common step of a walk, without the block enum and the reader
    /// trait's round trip (those were two thirds of reading a small-packet frame).
    /// `None` when the header is still to be handed out, at the end, or when the
    /// record does not parse: the caller then takes the general path, which reports
    /// it.
    pub(super) fn next_record(&mut self, pending: usize) -> Option<(usize, LegacyPcapBlock<'_>)> {
        if pending > 0 {
            self.advance(pending);
        }
        if self.pos == 0 {
            return None;
        }
        let data = &self.map[self.pos..];
        match (self.parse)(data) {
            Ok((rest, block)) => Some((data.len() - rest.len(), block)),
            Err(_) => None,
        }
    }
}

impl PcapReaderIterator for MappedPcap {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        if self.pos == 0 {
            return Ok((
                self.header.size(),
                PcapBlockOwned::from(self.header.clone()),
            ));
        }
        let data = &self.map[self.pos..];
        if data.is_empty() {
            return Err(PcapError::Eof);
        }
        match (self.parse)(data) {
            Ok((rest, block)) => Ok((data.len() - rest.len(), PcapBlockOwned::from(block))),
            Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(e),
            // The whole file is here: what is missing is cut off.
            Err(nom::Err::Incomplete(_)) => Err(PcapError::UnexpectedEof),
        }
    }

    fn consume(&mut self, offset: usize) {
        self.advance(offset);
    }

    fn consume_noshift(&mut self, offset: usize) {
        self.advance(offset);
    }

    fn consumed(&self) -> usize {
        self.pos
    }

    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        Ok(())
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn grow(&mut self, _new_size: usize) -> bool {
        false
    }

    fn data(&self) -> &[u8] {
        &self.map[self.pos..]
    }

    fn reader_exhausted(&self) -> bool {
        true
    }
}
