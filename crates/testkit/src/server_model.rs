//! A naive reference model of the Defender service's limits.
//!
//! Deliberately simple, and written apart from the engine's quota: a log of every
//! admitted call, counted by brute force at each arrival, in either window mode:
//! - sliding: a call at `t` is refused when `max` admitted calls lie in `(t - per, t]`;
//! - fixed: windows are `[origin + k*per, origin + (k+1)*per)`.
//!
//! Running time is charged per query when it completes; hunting is refused while any
//! runtime window's charges reach its budget (windows counted in the same mode). A query
//! admitted while the budget is not yet spent runs to its end, so a client with queries in
//! flight can overdraw a window by what they run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use defender_core::{ApiGroup, CallLimit, Limits};

/// How the server counts calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowMode {
    /// Exact sliding windows.
    Sliding,
    /// Windows aligned to the server's origin.
    Fixed,
}

/// The model's verdict on one arriving call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted.
    Admit,
    /// Refused by a call window: the limit and the wait until it would admit.
    Throttled {
        /// The window.
        limit: CallLimit,
        /// Until admission.
        wait: Duration,
    },
    /// Refused by the running-time budget.
    RuntimeSpent {
        /// Until admission.
        wait: Duration,
    },
}

/// The reference server model.
#[derive(Debug, Clone)]
pub struct ServerModel {
    mode: WindowMode,
    limits: Limits,
    origin: Instant,
    admitted: BTreeMap<ApiGroup, Vec<Instant>>,
    charges: Vec<(Instant, Duration)>,
    charged_total: Duration,
    /// Calls refused so far.
    pub throttled: u64,
}

impl ServerModel {
    /// A model enforcing `limits` in `mode`, its fixed windows counted from `origin`.
    pub fn new(limits: Limits, mode: WindowMode, origin: Instant) -> ServerModel {
        ServerModel {
            mode,
            limits,
            origin,
            admitted: BTreeMap::new(),
            charges: Vec::new(),
            charged_total: Duration::ZERO,
            throttled: 0,
        }
    }

    /// Decides on a call of `group` arriving at `at`, and records it when admitted.
    /// Calls arrive in time order (the log is kept sorted and counted by bisection).
    pub fn arrive(&mut self, group: ApiGroup, at: Instant) -> Verdict {
        let log = self.admitted.entry(group).or_default();
        let mut worst: Option<(CallLimit, Duration)> = None;
        for limit in &self.limits.group(group).calls {
            let max = limit.max as usize;
            let (count, free_at) = match self.mode {
                WindowMode::Sliding => {
                    // Calls at `t` with `t + per > at` are inside.
                    let first = log.partition_point(|t| *t + limit.per <= at);
                    let inside = log.len() - first;
                    let free = if inside >= max {
                        log[log.len() - max] + limit.per
                    } else {
                        at
                    };
                    (inside, free)
                }
                WindowMode::Fixed => {
                    let start = window_start(self.origin, at, limit.per);
                    let end = start + limit.per;
                    let count =
                        log.partition_point(|t| *t < end) - log.partition_point(|t| *t < start);
                    (count, end)
                }
            };
            if count >= max {
                let wait = free_at.saturating_duration_since(at);
                if worst.is_none_or(|(_, w)| wait > w) {
                    worst = Some((*limit, wait));
                }
            }
        }
        if let Some((limit, wait)) = worst {
            self.throttled += 1;
            return Verdict::Throttled { limit, wait };
        }
        if group == ApiGroup::Hunting {
            let mut spent: Option<Duration> = None;
            for limit in &self.limits.hunting.runtime {
                let free = match self.mode {
                    WindowMode::Sliding => {
                        let first = self.charges.partition_point(|(t, _)| *t + limit.per <= at);
                        let inside = &self.charges[first..];
                        let mut used: Duration = inside.iter().map(|(_, d)| *d).sum();
                        if used < limit.budget {
                            continue;
                        }
                        // The budget frees when enough of the oldest charges have left.
                        let mut free = at;
                        for (t, d) in inside {
                            used = used.saturating_sub(*d);
                            if used < limit.budget {
                                free = *t + limit.per;
                                break;
                            }
                        }
                        free
                    }
                    WindowMode::Fixed => {
                        let start = window_start(self.origin, at, limit.per);
                        let first = self.charges.partition_point(|(t, _)| *t < start);
                        let used: Duration = self.charges[first..].iter().map(|(_, d)| *d).sum();
                        if used < limit.budget {
                            continue;
                        }
                        start + limit.per
                    }
                };
                let wait = free.saturating_duration_since(at);
                spent = Some(spent.map_or(wait, |w| w.max(wait)));
            }
            if let Some(wait) = spent {
                self.throttled += 1;
                return Verdict::RuntimeSpent { wait };
            }
        }
        let pos = log.partition_point(|t| *t <= at);
        log.insert(pos, at);
        Verdict::Admit
    }

    /// Charges a query's running time at `at`.
    pub fn charge(&mut self, at: Instant, running: Duration) {
        let pos = self.charges.partition_point(|(t, _)| *t <= at);
        self.charges.insert(pos, (at, running));
        self.charged_total += running;
    }

    /// Running time charged since the model started.
    pub fn charged(&self) -> Duration {
        self.charged_total
    }

    /// Every admitted call of `group`, in arrival order.
    pub fn admitted(&self, group: ApiGroup) -> &[Instant] {
        self.admitted.get(&group).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Drops admitted calls and charges older than `horizon` before `now` (keeps long
    /// simulations fast; `horizon` must exceed every window).
    pub fn forget_before(&mut self, now: Instant, horizon: Duration) {
        let cutoff = now.checked_sub(horizon);
        if let Some(cutoff) = cutoff {
            for log in self.admitted.values_mut() {
                let keep = log.partition_point(|t| *t < cutoff);
                log.drain(..keep);
            }
            self.charges.retain(|(t, _)| *t >= cutoff);
        }
    }
}

/// The start of the fixed window of length `per` holding `at`.
fn window_start(origin: Instant, at: Instant, per: Duration) -> Instant {
    let per = per.as_nanos().max(1);
    let k = at.saturating_duration_since(origin).as_nanos() / per;
    origin + Duration::from_nanos((k * per).min(u64::MAX as u128) as u64)
}

/// The most calls any client could make in `span` under `limits` for `group`, counting
/// call windows only: every window of length `per` holds at most `max`, so a span
/// holds at most `max * ceil(span / per)` for each window, and the tightest one binds.
pub fn theoretical_max(limits: &Limits, group: ApiGroup, span: Duration) -> u64 {
    limits
        .group(group)
        .calls
        .iter()
        .map(|l| {
            let windows = span.as_nanos().div_ceil(l.per.as_nanos().max(1)) as u64;
            l.max as u64 * windows
        })
        .min()
        .unwrap_or(u64::MAX)
}

/// The most hunting queries `span` allows when their running time averages `mean`:
/// each running-time window of `per` lets `budget` run, so a span holds
/// `budget / mean * ceil(span / per)` queries for each window; the tightest one binds,
/// and so do the call windows ([`theoretical_max`]). It is an expectation, not a hard
/// bound: the server admits a query while the window is not yet spent and charges it on
/// completion, so a client with queries in flight overdraws a window by what they run,
/// and realised running times scatter around their mean.
pub fn runtime_max(limits: &Limits, span: Duration, mean: Duration) -> u64 {
    let calls = theoretical_max(limits, ApiGroup::Hunting, span);
    if mean.is_zero() {
        return calls;
    }
    limits
        .hunting
        .runtime
        .iter()
        .map(|l| {
            let windows = span.as_nanos().div_ceil(l.per.as_nanos().max(1));
            (l.budget.as_nanos() * windows / mean.as_nanos()) as u64
        })
        .min()
        .map_or(calls, |r| r.min(calls))
}

/// Checks a log of instants against a window: the largest number of them in any
/// half-open interval of length `per` (brute force).
pub fn max_in_any_window(log: &[Instant], per: Duration) -> usize {
    let mut sorted = log.to_vec();
    sorted.sort();
    let (mut best, mut end) = (0, 0);
    for (i, start) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < *start + per {
            end += 1;
        }
        best = best.max(end - i);
    }
    best
}

/// The 429 body the Defender service sends for a call window.
pub fn defender_429_body(limit: CallLimit, wait: Duration, target: &str) -> Vec<u8> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    serde_json::json!({"error": {
        "code": "429",
        "message": format!(
            "API calls quota exceeded! maximum allowed {} per {}. You can send requests again in {} seconds.",
            limit.max, timespan(limit.per), secs.max(1)
        ),
        "target": target,
    }})
    .to_string()
    .into_bytes()
}

/// Formats a duration as a .NET TimeSpan (`00:01:00`, `1.00:00:00`).
pub fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    if days > 0 {
        format!("{days}.{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}
