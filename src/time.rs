//! Timestamps.

use serde::{Serialize, Serializer};
use std::fmt;

/// A point in time as nanoseconds since the Unix epoch.
///
/// Integer nanoseconds keep pcapng's nanosecond captures exact and make ordering and
/// differences cheap on the per-packet path; JSON shows epoch seconds as a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub i64);

impl Ts {
    /// Builds a timestamp from seconds and nanoseconds.
    pub fn from_parts(secs: i64, nanos: i64) -> Ts {
        Ts(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// Epoch seconds as a float (microsecond precision for current dates).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// `self - earlier` in seconds.
    pub fn secs_since(self, earlier: Ts) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 / 1e9
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000);
        write!(f, "{secs}.{:06}", nanos / 1000)
    }
}

impl Serialize for Ts {
    /// Epoch seconds with microsecond precision, as a JSON number.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Round to the microsecond so the float prints without binary noise.
        let micros = (self.0 as f64 / 1000.0).round();
        s.serialize_f64(micros / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_json() {
        let t = Ts::from_parts(1362692526, 939_527_000);
        assert_eq!(t.to_string(), "1362692526.939527");
        assert_eq!(serde_json::to_string(&t).unwrap(), "1362692526.939527");
    }

    #[test]
    fn negative_display() {
        assert_eq!(Ts(-1).to_string(), "-1.999999");
    }
}
