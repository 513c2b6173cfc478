//! flowtrace turns packet captures into the request paths an operator would otherwise
//! draw by hand.
//!
//! The library is a pipeline of stages, one module each, with dependencies pointing one
//! way down this list:
//!
//! - [`anomaly`]: counters and bounded samples of everything skipped or malformed;
//!   usable by every stage.
//! - [`capture`]: packet sources ([`capture::FileSource`] merges several pcap/pcapng
//!   files by timestamp) yielding zero-copy [`capture::Frame`]s.
//! - [`decode`]: link, network and transport views over a frame ([`decode::Decoded`]),
//!   with checked views for what etherparse lacks (Linux SLL/SLL2, VRRP, BSD loopback).
//! - [`tcp`]: connection table and per-direction reassembly emitting stream events
//!   into a [`tcp::StreamSink`].
//! - [`http`]: HTTP/1.x transactions parsed from reassembled streams.
//! - [`pipeline`]: pushes frames through all stages.
//! - [`remote`]: records an agent publishes from one host, merged by a collector
//!   into the engine (`flowtrace agent` / `flowtrace collect`).
//! - [`correlate`]: joins the transactions of every capture point into request paths
//!   (NAT, proxies, clocks, the VRRP virtual address).
//! - [`render`]: text and JSON output.
//! - [`diagram`]: the seed's diagrams drawn from packets (SVG, DOT, Mermaid).
//! - [`check`]: regression checks of request paths against expectations and rules.
//! - [`score`]: request paths compared with the lab's ground truth.
//!
//! A bad packet never stops a run: it becomes a counted anomaly ([`anomaly::Stats`]).
//! Only an unreadable capture header or a failed output aborts.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod anomaly;
pub mod capture;
pub mod check;
pub mod correlate;
pub mod decode;
pub mod diagram;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod links;
mod memory;
pub mod pipeline;
pub mod remote;
pub mod render;
mod rng;
pub mod score;
pub mod tcp;
pub mod time;

pub use error::Error;
