//! Integration tests: one binary (ripgrep's layout).

mod cli;
mod corpus;
mod correlate;
mod util;
