//! Reading (and gzip decompression) on a thread of its own, ahead of the parser.
//!
//! On a machine with a spare core, the kernel's copy of a plain capture into user
//! memory (about a tenth of a small-packet run; docs/PERFORMANCE.md) and all of the
//! decompression of a `.pcap.gz` leave the thread that decodes, reassembles and
//! parses. What crosses is large byte chunks, recycled, in a bounded channel: the
//! reading thread never runs more than [`CHUNKS_IN_FLIGHT`] chunks ahead, so memory
//! stays bounded whatever the file size.

use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;
/// Chunks read ahead of the parser.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the reading thread sends.
enum Message {
    /// The next bytes (at most [`CHUNK`]).
    Data(Vec<u8>),
    /// The input failed here (after the bytes sent before).
    Failed(io::Error),
    /// The input ended.
    End,
}

/// A reader whose input is read by another thread.
pub(super) struct ReadAhead {
    messages: Receiver<Message>,
    spare: Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts reading `inner` on a new thread. The thread ends at the end of the
    /// input, on its first error (handed on to the reader after the bytes before
    /// it), or when this reader is dropped.
    pub(super) fn new<R: Read + Send + 'static>(mut inner: R) -> io::Result<ReadAhead> {
        let (tx, messages) = sync_channel(CHUNKS_IN_FLIGHT);
        let (spare, spare_rx) = channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("flowtrace-read".into())
            .spawn(move || loop {
                let mut buf = spare_rx.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let (n, failed) = fill(&mut inner, &mut buf);
                buf.truncate(n);
                if n > 0 && tx.send(Message::Data(buf)).is_err() {
                    return;
                }
                if let Some(e) = failed {
                    let _ = tx.send(Message::Failed(e));
                    return;
                }
                if n < CHUNK {
                    let _ = tx.send(Message::End);
                    return;
                }
            })?;
        Ok(ReadAhead {
            messages,
            spare,
            current: Vec::new(),
            at: 0,
            done: false,
        })
    }
}

/// Reads until `buf` is full, the input ends or fails; the bytes read, and the error.
fn fill(inner: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match inner.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.messages.recv() {
                Ok(Message::Data(next)) => {
                    let used = std::mem::replace(&mut self.current, next);
                    let _ = self.spare.send(used);
                    self.at = 0;
                }
                Ok(Message::Failed(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The end, or a reading thread that is gone.
                Ok(Message::End) | Err(_) => self.done = true,
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes in uneven pieces, then fails.
    struct Uneven {
        data: Vec<u8>,
        at: usize,
        fail_at_end: bool,
    }

    impl Read for Uneven {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                if self.fail_at_end {
                    return Err(io::Error::other("disk gone"));
                }
                return Ok(0);
            }
            let n = buf.len().min(7919).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn yields_every_byte_in_order() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let src = data(len);
            let mut r = ReadAhead::new(Uneven {
                data: src.clone(),
                at: 0,
                fail_at_end: false,
            })
            .unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert!(got == src, "length {len}: {} bytes back", got.len());
        }
    }

    #[test]
    fn an_error_reaches_the_reader_after_the_bytes_before_it() {
        let src = data(2 * CHUNK + CHUNK / 2);
        let mut r = ReadAhead::new(Uneven {
            data: src.clone(),
            at: 0,
            fail_at_end: true,
        })
        .unwrap();
        let mut got = vec![0; 2 * CHUNK];
        r.read_exact(&mut got).unwrap();
        assert!(got == src[..2 * CHUNK]);
        // The half chunk read before the failure comes first, then the error.
        let mut rest = vec![0; CHUNK / 2];
        r.read_exact(&mut rest).unwrap();
        assert!(rest == src[2 * CHUNK..]);
        let err = r.read(&mut [0; 16]).unwrap_err();
        assert_eq!(err.to_string(), "disk gone");
    }

    #[test]
    fn dropping_the_reader_stops_the_thread() {
        // An endless input: the thread must stop once the reader is gone, not fill
        // memory (the channel is bounded, and a failed send ends it).
        let endless = io::repeat(7);
        let mut r = ReadAhead::new(endless).unwrap();
        let mut buf = [0; 10];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [7; 10]);
        drop(r);
    }
}
