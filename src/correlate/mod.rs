//! Request paths: the HTTP exchanges of every capture point joined into one tree per
//! client request, as a streaming stage ([`Engine`]): transactions go in as the
//! pipeline completes them, each path comes out once it is final.
//!
//! 1. **Same exchange, several capture points** (`record`). NAT rewrites addresses
//!    and ports but not TCP sequence numbers: the sequence number of the request's
//!    first byte and the acknowledgement number it carried name one request wherever
//!    it is seen. Its views, nearest the client first, show each translation (`nat`
//!    hops).
//! 2. **Clocks** ([`clock`]). Each capture gets an offset, estimated from exchanges
//!    two captures saw, refined as the run goes on; `--offset` overrides.
//! 3. **Proxy hops** (`link`, `assign`). An exchange `U` is a candidate child of
//!    `G` when `U`'s client (as first seen) is `G`'s server (as last seen), `U` starts
//!    after `G`'s request and ends before `G`'s response, and the method is the same.
//!    Candidates are weighed by every signal there is and assigned together in a
//!    sliding window (module [`engine`]).
//! 4. **Roles** (`roles`) and **the VIP** ([`vip`]): VRRP advert runs give which
//!    router held each virtual address when.
//! 5. **Summary** ([`summary`]): counts, latency histograms per role, slowest paths.

mod assign;
pub mod clock;
pub mod engine;
pub(crate) mod link;
pub mod names;
pub(crate) mod record;
pub mod report;
pub(crate) mod roles;
pub mod summary;
pub mod vip;
mod workers;

pub use engine::{host_of, Context, Engine, EngineConfig, EngineStats, Tail};
pub use report::*;
