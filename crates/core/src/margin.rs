//! The safety margin, learned from the round trips the client sees.
//!
//! Every call window is widened by a margin so that latency jitter never lets the server
//! see more calls in a window than it allows: two calls admitted `per` apart reach the
//! server up to the spread of one-way latencies closer together. That spread is what the
//! margin must cover, and no more. A [`MarginLearner`] estimates it from observed round
//! trips (a round trip's spread bounds the one-way spread from above): the spread between
//! a high and a low quantile of the latest round trips, times a safety factor, held
//! between a floor and the configured ceiling.
//!
//! It starts at the ceiling and comes down once a few round trips were seen (the token
//! exchange counts, so a fresh command-line process benefits too); it shrinks gradually
//! (at most halving per round trip) and grows at once. A 429 on a window the quota
//! thought had room means the margin was too small: [`MarginLearner::handle_throttled`]
//! doubles it at once (up to the ceiling).
//!
//! ```
//! use defender_core::margin::MarginLearner;
//! use std::time::Duration;
//! let ms = Duration::from_millis;
//! let mut m = MarginLearner::new(ms(500));
//! assert_eq!(m.margin(), ms(500));
//! for rtt in [40, 42, 45, 41, 44, 43, 40, 42, 41, 45] {
//!     m.observe(ms(rtt));
//! }
//! assert_eq!(m.margin(), ms(20)); // a 5 ms spread: the floor
//! m.handle_throttled();
//! assert_eq!(m.margin(), ms(40));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

/// The narrowest margin a learner allows (clock granularity and scheduling noise).
pub const MARGIN_FLOOR: Duration = Duration::from_millis(20);

/// How many recent round trips the estimate looks at.
pub const MARGIN_SAMPLES: usize = 32;

/// How many round trips are needed before the margin leaves the ceiling.
pub const MARGIN_MIN_SAMPLES: usize = 3;

/// The estimate is the observed spread times this (in percent): a round trip's spread
/// already exceeds the one-way spread, and a few samples understate the tails.
const SAFETY_PERCENT: u32 = 150;

/// A margin learned from observed round trips. See the module docs.
#[derive(Debug, Clone)]
pub struct MarginLearner {
    floor: Duration,
    ceiling: Duration,
    samples: VecDeque<Duration>,
    current: Duration,
    throttled: u32,
}

impl MarginLearner {
    /// A learner that never goes above `ceiling` (nor below [`MARGIN_FLOOR`], or the
    /// ceiling when that is lower). It starts at the ceiling.
    pub fn new(ceiling: Duration) -> MarginLearner {
        MarginLearner {
            floor: MARGIN_FLOOR.min(ceiling),
            ceiling,
            samples: VecDeque::with_capacity(MARGIN_SAMPLES),
            current: ceiling,
            throttled: 0,
        }
    }

    /// The margin now.
    pub fn margin(&self) -> Duration {
        self.current
    }

    /// The ceiling (the configured margin).
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// How many times a 429 widened the margin.
    pub fn throttled(&self) -> u32 {
        self.throttled
    }

    /// The margin the samples alone call for: the spread between the 95th and the 5th
    /// percentile (nearest rank), times the safety factor, within floor and ceiling.
    /// `None` until [`MARGIN_MIN_SAMPLES`] were seen.
    pub fn target(&self) -> Option<Duration> {
        if self.samples.len() < MARGIN_MIN_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let n = sorted.len();
        let rank = |p: usize| (p * n).div_ceil(100).clamp(1, n) - 1;
        let spread = sorted[rank(95)].saturating_sub(sorted[rank(5)]);
        let wanted = spread * SAFETY_PERCENT / 100;
        Some(wanted.clamp(self.floor, self.ceiling))
    }

    /// A round trip was observed (the time the server itself spent working, when known,
    /// taken out). Returns the margin when it changed.
    pub fn observe(&mut self, rtt: Duration) -> Option<Duration> {
        if self.samples.len() == MARGIN_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
        let target = self.target()?;
        let next = if target >= self.current {
            // Grows at once.
            target
        } else {
            // Shrinks gradually: at most halving per round trip.
            target.max(self.current / 2)
        };
        self.set(next)
    }

    /// A 429 came on a window the quota thought had room: the margin was too small.
    /// Doubles it at once (up to the ceiling) and returns it when it changed.
    pub fn handle_throttled(&mut self) -> Option<Duration> {
        self.throttled += 1;
        let next = (self.current * 2).clamp(self.floor, self.ceiling);
        self.set(next)
    }

    fn set(&mut self, next: Duration) -> Option<Duration> {
        (next != self.current).then(|| {
            self.current = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_the_ceiling_and_comes_down_within_a_few_round_trips() {
        let mut m = MarginLearner::new(ms(500));
        m.observe(ms(30));
        m.observe(ms(31));
        assert_eq!(m.margin(), ms(500), "two samples say nothing yet");
        let mut trips = 2;
        while m.margin() > MARGIN_FLOOR {
            m.observe(ms(30));
            trips += 1;
            assert!(trips < 12, "came down within a handful of round trips");
        }
    }

    #[test]
    fn grows_at_once_and_shrinks_by_halves() {
        let mut m = MarginLearner::new(ms(500));
        for _ in 0..20 {
            m.observe(ms(30));
        }
        assert_eq!(m.margin(), MARGIN_FLOOR);
        // One slow round trip among 21 is an outlier the 95th percentile ignores; a
        // second moves it, and the margin jumps at once.
        m.observe(ms(330));
        assert_eq!(m.margin(), MARGIN_FLOOR);
        m.observe(ms(330));
        assert_eq!(m.margin(), ms(450));
        // Then it comes down, at most halving per round trip, once the outlier is gone.
        let mut last = m.margin();
        for _ in 0..2 * MARGIN_SAMPLES {
            m.observe(ms(30));
            assert!(m.margin() >= last / 2, "{:?} after {last:?}", m.margin());
            last = m.margin();
        }
        assert_eq!(m.margin(), MARGIN_FLOOR);
    }

    #[test]
    fn a_throttle_doubles_up_to_the_ceiling() {
        let mut m = MarginLearner::new(ms(100));
        for _ in 0..10 {
            m.observe(ms(5));
        }
        assert_eq!(m.margin(), ms(20));
        assert_eq!(m.handle_throttled(), Some(ms(40)));
        assert_eq!(m.handle_throttled(), Some(ms(80)));
        assert_eq!(m.handle_throttled(), Some(ms(100)));
        assert_eq!(m.handle_throttled(), None);
        assert_eq!(m.throttled(), 4);
    }

    #[test]
    fn a_ceiling_below_the_floor_is_kept() {
        let mut m = MarginLearner::new(ms(5));
        for _ in 0..10 {
            m.observe(ms(1));
        }
        assert_eq!(m.margin(), ms(5));
        let mut zero = MarginLearner::new(Duration::ZERO);
        zero.observe(ms(1));
        zero.handle_throttled();
        assert_eq!(zero.margin(), Duration::ZERO);
    }
}
