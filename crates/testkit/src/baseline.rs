//! The clients our engine is measured against, as the simulator drives them.
//!
//! Each is what a program typically does when it meets HTTP 429 without knowing the
//! service's limits. None of them reads the 429 body or the `Retry-After` header, and each
//! gives a call up ("loses" it) after a bounded number of retries:
//! - [`BaselineKind::Governor`]: a `governor` GCRA limiter sized to the tightest call
//!   window (the per-minute limit), on a [`FakeRelativeClock`] advanced in virtual time.
//!   Every attempt, first or retry, waits until governor admits it.
//! - [`BaselineKind::Backoff`]: sends at once; on 429, exponential backoff with full
//!   jitter (uniform in `[0, min(cap, base * 2^(retry-1))]`), as `reqwest-retry` does.
//! - [`BaselineKind::Naive`]: sends at once; on 429, sleeps a fixed time and retries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime};

use defender_core::CallLimit;
use defender_policy::SplitMix64;
use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GovernorQuota, RateLimiter};

use crate::sim::{ClientOutput, SimClient};

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineKind {
    /// A `governor` per-minute limiter; retries wait as governor says.
    Governor,
    /// Exponential backoff with full jitter on 429.
    Backoff,
    /// A fixed sleep on 429.
    Naive,
}

/// The baselines' settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineParams {
    /// Retries of one call after a 429; the next 429 loses the call.
    pub max_retries: u32,
    /// The backoff's base.
    pub backoff_base: Duration,
    /// The backoff's cap.
    pub backoff_cap: Duration,
    /// The naive client's sleep.
    pub naive_sleep: Duration,
}

impl Default for BaselineParams {
    /// 10 retries; backoff from 1 s capped at 60 s; a naive sleep of 10 s.
    fn default() -> Self {
        BaselineParams {
            max_retries: 10,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            naive_sleep: Duration::from_secs(10),
        }
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>;

#[derive(Debug)]
struct BCall {
    ready_at: Instant,
    attempts: u32,
    in_flight: bool,
}

/// One process running a baseline client.
pub struct Baseline {
    kind: BaselineKind,
    params: BaselineParams,
    limiter: Option<(Limiter, FakeRelativeClock)>,
    clock_at: Instant,
    calls: BTreeMap<u64, BCall>,
    sends: HashMap<u64, u64>,
    out: VecDeque<ClientOutput>,
    rng: SplitMix64,
    next_call: u64,
    next_send: u64,
    now: Instant,
}

impl fmt::Debug for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Baseline")
            .field("kind", &self.kind)
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl Baseline {
    /// A baseline client; `per_minute` sizes governor's quota (the tightest call window:
    /// `max` calls per `per`, a burst of `max` replenished one every `per / max`).
    pub fn new(
        kind: BaselineKind,
        params: BaselineParams,
        per_minute: CallLimit,
        seed: u64,
        now: Instant,
    ) -> Baseline {
        let limiter = (kind == BaselineKind::Governor).then(|| {
            let clock = FakeRelativeClock::default();
            let max = NonZeroU32::new(per_minute.max.max(1)).expect("at least 1"); // clamped above
            let quota = GovernorQuota::with_period(per_minute.per / max.get())
                .expect("a non-zero period") // limits have non-zero periods
                .allow_burst(max);
            (RateLimiter::direct_with_clock(quota, clock.clone()), clock)
        });
        Baseline {
            kind,
            params,
            limiter,
            clock_at: now,
            calls: BTreeMap::new(),
            sends: HashMap::new(),
            out: VecDeque::new(),
            rng: SplitMix64(seed),
            next_call: 0,
            next_send: 0,
            now,
        }
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if let Some((_, clock)) = &self.limiter {
            let by = self.now.saturating_duration_since(self.clock_at);
            if !by.is_zero() {
                clock.advance(by);
                self.clock_at = self.now;
            }
        }
    }

    fn backoff(&mut self, retry: u32) -> Duration {
        let ceiling = self
            .params
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.params.backoff_cap);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(if nanos == 0 {
            0
        } else {
            self.rng.next() % (nanos + 1)
        })
    }

    fn send_ready(&mut self) {
        let now = self.now;
        let ready: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| !c.in_flight && c.ready_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some((limiter, clock)) = &self.limiter {
                if let Err(not_until) = limiter.check() {
                    let wait = not_until.wait_time_from(clock.now());
                    let call = self.calls.get_mut(&id).expect("listed above"); // ids come from the map
                    call.ready_at = now + wait.max(Duration::from_nanos(1));
                    continue;
                }
            }
            let call = self.calls.get_mut(&id).expect("listed above"); // as above
            call.in_flight = true;
            call.attempts += 1;
            self.next_send += 1;
            self.sends.insert(self.next_send, id);
            self.out.push_back(ClientOutput::Send {
                id: self.next_send,
                token: false,
            });
        }
    }
}

impl SimClient for Baseline {
    fn submit(&mut self, now: Instant) -> u64 {
        self.advance(now);
        self.next_call += 1;
        self.calls.insert(
            self.next_call,
            BCall {
                ready_at: self.now,
                attempts: 0,
                in_flight: false,
            },
        );
        self.next_call
    }

    fn handle_response(
        &mut self,
        send: u64,
        response: http::Response<Vec<u8>>,
        now: Instant,
        _wall: SystemTime,
    ) {
        self.advance(now);
        let Some(id) = self.sends.remove(&send) else {
            return;
        };
        if response.status().is_success() {
            self.calls.remove(&id);
            self.out
                .push_back(ClientOutput::Ended { call: id, ok: true });
            return;
        }
        // Every other status is a 429 in the simulation: retry, ignoring body and headers.
        let attempts = self.calls.get(&id).map_or(0, |c| c.attempts);
        if attempts > self.params.max_retries {
            self.calls.remove(&id);
            self.out.push_back(ClientOutput::Ended {
                call: id,
                ok: false,
            });
            return;
        }
        let wait = match self.kind {
            // Governor decides when the retry goes, at the next poll.
            BaselineKind::Governor => Duration::ZERO,
            BaselineKind::Backoff => self.backoff(attempts),
            BaselineKind::Naive => self.params.naive_sleep,
        };
        let now = self.now;
        if let Some(call) = self.calls.get_mut(&id) {
            call.in_flight = false;
            call.ready_at = now + wait;
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    fn poll(&mut self) -> ClientOutput {
        if self.out.is_empty() {
            self.send_ready();
        }
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let now = self.now;
        ClientOutput::Wait(
            self.calls
                .values()
                .filter(|c| !c.in_flight)
                .map(|c| c.ready_at.max(now + Duration::from_nanos(1)))
                .min(),
        )
    }
}
