//! Packet sources: capture files (pcap, pcapng, gzip-compressed either) read as one
//! time-ordered stream of zero-copy [`Frame`]s.
//!
//! A [`Frame`] borrows the reader's buffer: it is valid until the next call to
//! [`FileSource::next_frame`], which is how flowtrace reads gigabytes without copying
//! a packet. Several files are merged by timestamp (typically one per host), and every
//! frame remembers its file and interface through an [`IfaceId`] into the
//! [`Interfaces`] table.

mod file;
#[cfg(feature = "live")]
pub mod live;
mod mapped;
pub mod pcapng_writer;
mod read_ahead;

pub use file::{FileSource, Warning};
pub use pcap_parser::Linktype;

use crate::time::Ts;
use serde::Serialize;

/// Index into [`Interfaces`]: one per (capture file, interface in that file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct IfaceId(pub u32);

/// One packet record as read from a capture.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture timestamp.
    pub ts: Ts,
    /// The interface (and so the file) it was captured on.
    pub iface: IfaceId,
    /// Link type of `data`.
    pub link: Linktype,
    /// Length on the wire; above `data.len()` when the snaplen cut the packet.
    pub orig_len: u32,
    /// Captured bytes.
    pub data: &'a [u8],
}

/// What is known of one capture interface.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceDesc {
    /// Index of the capture file among the inputs.
    pub file: usize,
    /// The capture file as given on the command line.
    pub file_name: String,
    /// Interface number inside the file (pcapng interface id; 0 for pcap).
    pub index_in_file: u32,
    /// The interface name when the file records it (pcapng `if_name`).
    pub name: Option<String>,
    /// Link type number.
    pub linktype: i32,
}

/// Every interface of every input, indexed by [`IfaceId`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct Interfaces(pub Vec<InterfaceDesc>);

impl Interfaces {
    /// The description of `id`.
    pub fn get(&self, id: IfaceId) -> &InterfaceDesc {
        &self.0[id.0 as usize]
    }

    /// Adds an interface.
    pub fn push(&mut self, desc: InterfaceDesc) -> IfaceId {
        self.0.push(desc);
        IfaceId((self.0.len() - 1) as u32)
    }
}
