//! Wall-clock instants passed in by the caller.
//!
//! lifeline-crypto never reads a clock itself: whoever drives it (the daemon,
//! the CLI, the simulator) says what time it is, so that the same code runs
//! deterministically under simulated time.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An instant as milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// Converts a system time; instants before the epoch become the epoch and
    /// instants beyond `u64::MAX` milliseconds saturate.
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self(millis)
    }

    /// This instant moved forward by `by`, saturating at the end of time.
    pub fn saturating_add(self, by: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(by)))
    }

    /// This instant moved back by `by`, saturating at the epoch.
    pub fn saturating_sub(self, by: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(by)))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let end = Timestamp::from_unix_millis(u64::MAX - 1);
        assert_eq!(
            end.saturating_add(Duration::from_secs(1)).as_unix_millis(),
            u64::MAX
        );
        let start = Timestamp::from_unix_millis(5);
        assert_eq!(
            start
                .saturating_sub(Duration::from_secs(1))
                .as_unix_millis(),
            0
        );
        assert_eq!(start.saturating_duration_since(end), Duration::ZERO);
        assert_eq!(
            end.saturating_duration_since(start),
            Duration::from_millis(u64::MAX - 6)
        );
    }

    #[test]
    fn system_time_before_epoch_is_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(Timestamp::from_system_time(before).as_unix_millis(), 0);
        let after = UNIX_EPOCH + Duration::from_millis(1234);
        assert_eq!(Timestamp::from_system_time(after).as_unix_millis(), 1234);
    }
}
