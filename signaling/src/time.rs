//! Time as the room sees it: a point on the caller's monotonic clock, in milliseconds.
//!
//! The room never reads a clock. Every input comes with `now`, which keeps the state
//! machine deterministic and lets tests jump twenty seconds ahead without sleeping. The
//! origin is the caller's choice (the server uses the instant it started); only
//! differences mean anything.

use std::time::Duration;

/// Milliseconds since an origin the caller picks, on a clock that never goes back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(u64);

impl Millis {
    pub const fn from_millis(millis: u64) -> Millis {
        Millis(millis)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + duration`, stopping at the end of time rather than wrapping.
    pub fn saturating_add(self, duration: Duration) -> Millis {
        Millis(self.0.saturating_add(duration_millis(duration)))
    }

    /// How long after `earlier` this is; zero if the clock went backwards, so a caller's
    /// mistake makes timers late, never early.
    pub fn saturating_since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_that_goes_backwards_measures_zero_elapsed() {
        let later = Millis::from_millis(5_000);
        assert_eq!(Millis::from_millis(4_000).saturating_since(later), Duration::ZERO);
    }

    #[test]
    fn adding_past_the_end_of_time_saturates() {
        let end = Millis::from_millis(u64::MAX - 1).saturating_add(Duration::from_secs(10));
        assert_eq!(end.as_millis(), u64::MAX);
    }
}
