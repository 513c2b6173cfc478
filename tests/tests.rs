//! Integration tests: one binary (ripgrep's layout).

mod check;
mod cli;
mod corpus;
mod correlate;
mod diagram;
mod encap;
mod hostile;
mod html;
mod nats;
mod regression;
mod remote;
mod threads;
mod util;
