//! The workers' clock: CLOCK_MONOTONIC (the clock `Instant` reads, and the one the preemption
//! timer is armed on) as nanoseconds in a `u64`. A request computes and compares several
//! deadlines; with `Instant` every sum and difference normalises a (seconds, nanoseconds) pair
//! (15 to 40 instructions each), here each is one addition or subtraction, and a handler's
//! preemption deadline is the value itself. 2^64 ns is 584 years of uptime.

use std::ops::Add;
use std::time::{Duration, Instant};

/// A point in time on CLOCK_MONOTONIC, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Tick(u64);

impl Tick {
    pub(crate) fn now() -> Tick {
        Tick(crate::sys::monotonic_ns())
    }

    /// Nanoseconds of CLOCK_MONOTONIC (what the preemption timer is armed with).
    pub(crate) fn ns(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`; zero when `earlier` is later.
    pub(crate) fn saturating_duration_since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// As [`Tick::saturating_duration_since`], in nanoseconds.
    pub(crate) fn nanos_since(self, earlier: Tick) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The tick of `instant`, through the current time (one read of each clock): for the rare
    /// deadline that comes as an `Instant` (a handler's timed wait).
    pub(crate) fn of_instant(instant: Instant) -> Tick {
        let (now, tick) = (Instant::now(), Tick::now());
        match instant.checked_duration_since(now) {
            Some(ahead) => tick + ahead,
            None => Tick(tick.0.saturating_sub(nanos(now.duration_since(instant)))),
        }
    }
}

impl Add<Duration> for Tick {
    type Output = Tick;

    /// Saturates (a deadline past the end of time never comes).
    fn add(self, duration: Duration) -> Tick {
        Tick(self.0.saturating_add(nanos(duration)))
    }
}

/// `duration` in nanoseconds, saturating.
fn nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_add_and_subtract_like_instants_and_saturate() {
        let start = Tick::now();
        let later = start + Duration::from_millis(1500);
        assert_eq!(later.nanos_since(start), 1_500_000_000);
        assert_eq!(later.saturating_duration_since(start), Duration::from_millis(1500));
        assert_eq!(start.saturating_duration_since(later), Duration::ZERO);
        assert_eq!((start + Duration::MAX).ns(), u64::MAX);
        assert!(start < later && Tick::now() >= start);
    }

    #[test]
    fn an_instant_maps_to_the_tick_of_the_same_moment() {
        let now = Instant::now();
        let tick = Tick::now();
        let ahead = Tick::of_instant(now + Duration::from_secs(2));
        let behind = Tick::of_instant(now - Duration::from_millis(5));
        // Both clocks are CLOCK_MONOTONIC; the reads lie microseconds apart.
        let slack = 500_000_000;
        assert!(ahead.nanos_since(tick).abs_diff(2_000_000_000) < slack, "{ahead:?} {tick:?}");
        assert!(tick.nanos_since(behind).abs_diff(5_000_000) < slack, "{behind:?} {tick:?}");
    }
}
