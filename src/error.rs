//! Errors that abort a run. Per-packet problems are not errors: they are counted in
//! [`crate::anomaly::Stats`].

use std::path::PathBuf;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read")]
    Io {
        /// The capture's path (`-` for stdin).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The first bytes are neither a pcap nor a pcapng header.
    #[error("{path}: not a pcap or pcapng file (first bytes {magic})")]
    NotACapture {
        /// The capture's path.
        path: PathBuf,
        /// The first bytes, in hex.
        magic: String,
    },
    /// The file is empty or ends inside its file header.
    #[error("{path}: file ends inside the capture file header ({len} bytes)")]
    ShortHeader {
        /// The capture's path.
        path: PathBuf,
        /// How many bytes there were.
        len: usize,
    },
    /// A live interface could not be opened or read.
    #[error("cannot capture on {interface}: {detail}")]
    Live {
        /// The interface.
        interface: String,
        /// libpcap's message and what to do about it.
        detail: String,
    },
    /// Privileges could not be dropped to a user after opening the interfaces.
    #[error("cannot drop privileges to user {user}: {detail}")]
    Privileges {
        /// The user asked for (`-Z`).
        user: String,
        /// What failed.
        detail: String,
    },
    /// The header was recognised but is unusable (unsupported version, bad lengths).
    #[error("{path}: bad {format} header: {detail}")]
    BadHeader {
        /// The capture's path.
        path: PathBuf,
        /// `pcap` or `pcapng`.
        format: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Why the links sidecar (`ip -j addr` output) could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinksError {
    /// The file could not be read.
    #[error("{path}: cannot read links file")]
    Io {
        /// The sidecar's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the JSON array `ip -j addr` prints.
    #[error("{path}: not `ip -j addr` output: {detail}")]
    Format {
        /// The sidecar's path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// Writing failed.
    #[error("cannot write output")]
    Io(#[from] std::io::Error),
    /// Serialising JSON failed.
    #[error("cannot serialise JSON")]
    Json(#[from] serde_json::Error),
}

/// Any error of the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A capture could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A links sidecar could not be used.
    #[error(transparent)]
    Links(#[from] LinksError),
    /// Output failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}
