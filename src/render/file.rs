//! An output file that reserves its disk space ahead of what is written.
//!
//! Why: ext4 (and other delayed-allocation filesystems) does per-block work at
//! every buffered `write()` into a new file: it reserves space for each 4 KiB
//! block and records it as a delayed extent, a third of the system time of
//! writing the output (241 MiB in 1 MiB writes: 0.048 s of system time against
//! 0.033 s with the space reserved 32 MiB at a time, docs/PERFORMANCE.md,
//! session 36). Reserved space (`fallocate` with `FALLOC_FL_KEEP_SIZE`) is
//! already allocated, so a write only maps its blocks. The reservation does not
//! move the file's size: a reader, or a run cut short, sees exactly the bytes
//! written; what was reserved past them is given back when the file is dropped
//! (a run killed before that leaves it allocated past the end until the file is
//! truncated or removed, invisible to readers).
//!
//! Anything that cannot reserve (standard output, a pipe, `/dev/null`, a
//! filesystem without `fallocate`, a full disk) is written as it always was: a
//! failed reservation only turns reserving off.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The first reservation; each next one doubles, up to [`MAX_STEP`]: a small
/// output reserves little, a large one reserves rarely.
const FIRST_STEP: u64 = 4 << 20;
/// The largest reservation at a time.
const MAX_STEP: u64 = 64 << 20;

/// A file created for output (truncated if it exists), written through `write`.
pub struct OutputFile {
    file: File,
    /// Bytes written so far: where the next write lands.
    written: u64,
    /// Bytes from the start whose space is reserved.
    reserved: u64,
    /// The next reservation's size.
    step: u64,
    /// Off once a reservation failed, or for what is not a regular file.
    reserving: bool,
}

impl OutputFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> io::Result<OutputFile> {
        let file = File::create(path)?;
        let reserving = cfg!(target_os = "linux") && file.metadata()?.file_type().is_file();
        Ok(OutputFile {
            file,
            written: 0,
            reserved: 0,
            step: FIRST_STEP,
            reserving,
        })
    }

    /// Reserves the next step past what is reserved, or turns reserving off.
    fn reserve(&mut self, want: u64) {
        while self.reserving && self.reserved < want {
            if reserve(&self.file, self.reserved, self.step).is_ok() {
                self.reserved += self.step;
                self.step = (self.step * 2).min(MAX_STEP);
            } else {
                self.reserving = false;
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn reserve(_: &File, _: u64, _: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

impl Write for OutputFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let end = self.written + data.len() as u64;
        if end > self.reserved {
            self.reserve(end);
        }
        let n = self.file.write(data)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for OutputFile {
    /// Gives back the space reserved past the end (truncating to the size the file
    /// has frees the blocks past it).
    fn drop(&mut self) {
        if self.reserved > self.written {
            let _ = self.file.set_len(self.written);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_what_it_is_given_and_gives_back_the_rest() {
        let dir = std::env::temp_dir().join(format!("flowtrace-outfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let mut expected = Vec::new();
        {
            let mut out = OutputFile::create(&path).unwrap();
            for i in 0..5 {
                out.write_all(&chunk[..(1 << 20) - i * 1000]).unwrap();
                expected.extend_from_slice(&chunk[..(1 << 20) - i * 1000]);
            }
            out.write_all(b"tail\n").unwrap();
            expected.extend_from_slice(b"tail\n");
            // While open, the size is what was written, whatever was reserved.
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                expected.len() as u64
            );
            if out.reserving {
                assert!(out.reserved >= expected.len() as u64);
                let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
                assert!(
                    allocated >= out.reserved,
                    "{allocated} bytes allocated, {} reserved",
                    out.reserved
                );
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        // Dropped: no more than the written bytes' blocks (and a few for metadata)
        // stay allocated.
        let blocks = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            blocks <= expected.len() as u64 + (64 << 10),
            "{blocks} bytes allocated for {} written",
            expected.len()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_not_a_regular_file_is_written_without_reserving() {
        let mut out = OutputFile::create(Path::new("/dev/null")).unwrap();
        assert!(!out.reserving);
        out.write_all(&[b'x'; 10_000]).unwrap();
        assert_eq!(out.reserved, 0);
    }
}
