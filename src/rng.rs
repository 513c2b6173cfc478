//! A small deterministic generator (xorshift64*), for choices that need only be
//! uniform and the same on every run, so that output depends on nothing but the
//! input: the probe's reservoir sampling (`remote::Samples`), the worker-order
//! learning's random starts and splits (`correlate::workers`). Not for anything that
//! must be unpredictable.

/// xorshift64* state; never 0 (which it would keep forever).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is taken as the default seed).
    pub(crate) const fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new(0)
    }
}
