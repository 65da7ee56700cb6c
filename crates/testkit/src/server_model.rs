//! A naive reference model of the Defender service's limits.
//!
//! Deliberately simple, and written apart from the engine's quota: a log of every
//! admitted call, counted by brute force at each arrival, in either window mode:
//! - sliding: a call at `t` is refused when `max` admitted calls lie in `(t - per, t]`;
//! - fixed: windows are `[origin + k*per, origin + (k+1)*per)`.
//!
//! Running time is charged per query when it completes; hunting is refused while any
//! runtime window's charges reach its budget.

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
            throttled: 0,
        }
    }

    /// Decides on a call of `group` arriving at `at`, and records it when admitted.
    pub fn arrive(&mut self, group: ApiGroup, at: Instant) -> Verdict {
        let log = self.admitted.entry(group).or_default();
        let mut worst: Option<(CallLimit, Duration)> = None;
        for limit in &self.limits.group(group).calls {
            let (count, free_at) = match self.mode {
                WindowMode::Sliding => {
                    let inside: Vec<&Instant> =
                        log.iter().filter(|t| **t + limit.per > at).collect();
                    let free = if inside.len() >= limit.max as usize {
                        *inside[inside.len() - limit.max as usize] + limit.per
                    } else {
                        at
                    };
                    (inside.len(), free)
                }
                WindowMode::Fixed => {
                    let k = window_index(self.origin, at, limit.per);
                    let count = log
                        .iter()
                        .filter(|t| window_index(self.origin, **t, limit.per) == k)
                        .count();
                    (count, self.origin + limit.per * (k as u32 + 1))
                }
            };
            if count >= limit.max as usize {
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
            for limit in &self.limits.hunting.runtime {
                let inside: Vec<&(Instant, Duration)> = self
                    .charges
                    .iter()
                    .filter(|(t, _)| *t + limit.per > at)
                    .collect();
                let mut used: Duration = inside.iter().map(|(_, d)| *d).sum();
                if used >= limit.budget {
                    let mut free = at;
                    for (t, d) in &inside {
                        used = used.saturating_sub(*d);
                        if used < limit.budget {
                            free = *t + limit.per;
                            break;
                        }
                    }
                    self.throttled += 1;
                    return Verdict::RuntimeSpent {
                        wait: free.saturating_duration_since(at),
                    };
                }
            }
        }
        log.push(at);
        Verdict::Admit
    }

    /// Charges a query's running time at `at`.
    pub fn charge(&mut self, at: Instant, running: Duration) {
        self.charges.push((at, running));
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

fn window_index(origin: Instant, at: Instant, per: Duration) -> u64 {
    (at.saturating_duration_since(origin).as_nanos() / per.as_nanos().max(1)) as u64
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
