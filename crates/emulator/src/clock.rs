//! The emulator's clock: real or manual, shared.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The emulator's source of time, cheap to clone (clones share one clock).
///
/// Two readings come from it: [`Clock::elapsed`], monotonic time since the clock started
/// (quota windows, token expiry, running-time budgets), and [`Clock::unix_ms`], wall time
/// (the synthetic data's anchor, KQL `now()`, incident timestamps, HTTP-dates). A manual
/// clock moves only when told, so tests of hour- and day-long budgets need not wait:
///
/// ```
/// use defender_emulator::Clock;
/// use std::time::Duration;
/// let clock = Clock::manual(1_704_067_200_000); // 2024-01-01T00:00:00Z
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.elapsed(), Duration::from_secs(90));
/// assert_eq!(clock.unix_ms(), 1_704_067_290_000);
/// ```
#[derive(Debug, Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    Real {
        start: Instant,
        start_unix_ms: i64,
    },
    Manual {
        start_unix_ms: i64,
        elapsed: Mutex<Duration>,
    },
}

impl Default for Clock {
    fn default() -> Self {
        Clock::real()
    }
}

impl Clock {
    /// The real clock: tokio/std time, started now.
    pub fn real() -> Clock {
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock {
            inner: Arc::new(Inner::Real {
                start: Instant::now(),
                start_unix_ms,
            }),
        }
    }

    /// A manual clock whose wall time starts at `start_unix_ms` and which moves only by
    /// [`Clock::advance`] and [`Clock::set`].
    pub fn manual(start_unix_ms: i64) -> Clock {
        Clock {
            inner: Arc::new(Inner::Manual {
                start_unix_ms,
                elapsed: Mutex::new(Duration::ZERO),
            }),
        }
    }

    /// A manual clock starting at the current wall time.
    pub fn manual_now() -> Clock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Clock::manual(now)
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(*self.inner, Inner::Manual { .. })
    }

    /// Monotonic time since the clock started.
    pub fn elapsed(&self) -> Duration {
        match &*self.inner {
            Inner::Real { start, .. } => start.elapsed(),
            Inner::Manual { elapsed, .. } => *elapsed.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The wall time when the clock started, in unix milliseconds.
    pub fn start_unix_ms(&self) -> i64 {
        match &*self.inner {
            Inner::Real { start_unix_ms, .. } | Inner::Manual { start_unix_ms, .. } => {
                *start_unix_ms
            }
        }
    }

    /// The wall time now, in unix milliseconds (start plus [`Clock::elapsed`]).
    pub fn unix_ms(&self) -> i64 {
        self.start_unix_ms() + self.elapsed().as_millis() as i64
    }

    /// Moves a manual clock forward. Panics on a real clock (a test bug).
    pub fn advance(&self, by: Duration) {
        match &*self.inner {
            Inner::Real { .. } => panic!("Clock::advance called on a real clock"),
            Inner::Manual { elapsed, .. } => {
                let mut e = elapsed.lock().unwrap_or_else(|e| e.into_inner());
                *e += by;
            }
        }
    }

    /// Sets a manual clock's elapsed time since its start. Moving it backwards is
    /// allowed but then calls already recorded lie in the future and count in every
    /// window until the clock passes them again. Panics on a real clock.
    pub fn set(&self, since_start: Duration) {
        match &*self.inner {
            Inner::Real { .. } => panic!("Clock::set called on a real clock"),
            Inner::Manual { elapsed, .. } => {
                *elapsed.lock().unwrap_or_else(|e| e.into_inner()) = since_start;
            }
        }
    }
}
