//! Server-side quota windows: calls and running time, fixed or sliding.
//!
//! Times are the emulator clock's monotonic [`Duration`] since its start.
//!
//! * **Sliding** (exact): a call at `t` counts against the calls in `(t - period, t]`.
//!   A call is admitted when, for every window, fewer than `max` admitted calls lie in
//!   that interval. When refused, the wait is until enough of the oldest calls leave.
//! * **Fixed**: windows are aligned to multiples of the period since the clock's start
//!   (`[k*period, (k+1)*period)`); a refused call waits until the window's end.
//!
//! Refused (throttled) calls are not recorded: only admitted calls count. This matches
//! the documented "N calls per period" reading and is what a client that honours
//! `Retry-After` relies on.

use std::collections::VecDeque;
use std::time::Duration;

use defender_core::limits::{CallLimit, RuntimeLimit};

/// How quota windows are aligned.
///
/// * **Sliding** (exact): a call at `t` counts against the calls in `(t - period, t]`.
///   A call is admitted when, for every window, fewer than `max` admitted calls lie in
///   that interval; when refused, the wait is until enough of the oldest calls leave.
/// * **Fixed**: windows are aligned to multiples of the period since the emulator clock's
///   start (`[k*period, (k+1)*period)`); a refused call waits until the window's end.
///
/// In both modes, refused (throttled) calls are not recorded: only admitted calls count,
/// so a client that honours `Retry-After` is admitted when it comes back. Running-time
/// budgets use the same windows over the charged execution times; a query is admitted
/// while the window has budget left (it may overrun it, as the service charges after the
/// fact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum WindowMode {
    /// Exact sliding windows: a call at `t` counts against calls in `(t - period, t]`.
    #[default]
    Sliding,
    /// Fixed windows aligned to multiples of the period since the clock's start.
    Fixed,
}

impl std::str::FromStr for WindowMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sliding" => Ok(WindowMode::Sliding),
            "fixed" => Ok(WindowMode::Fixed),
            _ => Err(format!("unknown window mode `{s}` (use fixed or sliding)")),
        }
    }
}

fn window_start(mode: WindowMode, per: Duration, now: Duration) -> WindowStart {
    match mode {
        WindowMode::Sliding => WindowStart::After(now.checked_sub(per)),
        WindowMode::Fixed => {
            let per_ns = per.as_nanos().max(1);
            let k = now.as_nanos() / per_ns;
            WindowStart::From(Duration::from_nanos((k * per_ns) as u64))
        }
    }
}

#[derive(Clone, Copy)]
enum WindowStart {
    /// `(t, now]`; `None` means everything up to now.
    After(Option<Duration>),
    /// `[t, now]`.
    From(Duration),
}

impl WindowStart {
    fn contains(self, t: Duration, now: Duration) -> bool {
        t <= now
            && match self {
                WindowStart::After(None) => true,
                WindowStart::After(Some(s)) => t > s,
                WindowStart::From(s) => t >= s,
            }
    }
}

/// A refusal: which limit binds and how long until the call would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDenied {
    /// The limit that binds (the one with the longest wait).
    pub limit: CallLimit,
    /// How long until the call would be admitted.
    pub wait: Duration,
}

/// A running-time refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeDenied {
    /// The budget that is spent (the one with the longest wait).
    pub limit: RuntimeLimit,
    /// How long until queries would be admitted again.
    pub wait: Duration,
}

/// The admitted calls of one (tenant, app, group).
#[derive(Debug, Default, Clone)]
pub struct CallWindows {
    times: VecDeque<Duration>,
}

impl CallWindows {
    fn in_window(&self, mode: WindowMode, per: Duration, now: Duration) -> Vec<Duration> {
        let start = window_start(mode, per, now);
        let mut v: Vec<Duration> = self
            .times
            .iter()
            .copied()
            .filter(|t| start.contains(*t, now))
            .collect();
        v.sort();
        v
    }

    /// Checks every window; `Err` names the binding limit and the wait.
    pub fn check(
        &self,
        limits: &[CallLimit],
        mode: WindowMode,
        now: Duration,
    ) -> Result<(), CallDenied> {
        let mut worst: Option<CallDenied> = None;
        for limit in limits {
            let w = self.in_window(mode, limit.per, now);
            let max = limit.max as usize;
            if w.len() < max {
                continue;
            }
            let wait = match mode {
                WindowMode::Sliding => (w[w.len() - max] + limit.per).saturating_sub(now),
                WindowMode::Fixed => {
                    let per_ns = limit.per.as_nanos().max(1);
                    let end = (now.as_nanos() / per_ns + 1) * per_ns;
                    Duration::from_nanos((end - now.as_nanos()) as u64)
                }
            };
            let wait = wait.max(Duration::from_nanos(1));
            if worst.is_none_or(|d| wait > d.wait) {
                worst = Some(CallDenied {
                    limit: *limit,
                    wait,
                });
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Records an admitted call and forgets calls no window can see any more.
    pub fn record(&mut self, limits: &[CallLimit], now: Duration) {
        self.times.push_back(now);
        let longest = limits.iter().map(|l| l.per).max().unwrap_or_default();
        while let Some(&t) = self.times.front() {
            if t + longest <= now && t <= now {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }

    /// Calls counted in the window of `limit` now.
    pub fn used(&self, limit: &CallLimit, mode: WindowMode, now: Duration) -> usize {
        self.in_window(mode, limit.per, now).len()
    }
}

/// Who shares one running-time budget.
///
/// Microsoft documents advanced hunting's running time (CPU) as allocated per tenant
/// ("Each tenant is allocated CPU resources"; Defender for Endpoint: "limited per
/// tenant"), while call quotas are per application + tenant. So by default every app of
/// a tenant draws on one running-time budget; [`RuntimeScope::App`] gives each
/// (tenant, app) its own, as the emulator did before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum RuntimeScope {
    /// One running-time budget per tenant, shared by all its apps (the documented rule).
    #[default]
    Tenant,
    /// One running-time budget per (tenant, app).
    App,
}

impl std::str::FromStr for RuntimeScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tenant" => Ok(RuntimeScope::Tenant),
            "app" => Ok(RuntimeScope::App),
            _ => Err(format!(
                "unknown running-time scope `{s}` (use tenant or app)"
            )),
        }
    }
}

/// The running time charged to one tenant ([`RuntimeScope::Tenant`], the default) or to
/// one (tenant, app) ([`RuntimeScope::App`]).
#[derive(Debug, Default, Clone)]
pub struct RuntimeWindows {
    charges: VecDeque<(Duration, Duration)>,
    total: Duration,
}

impl RuntimeWindows {
    fn in_window(
        &self,
        mode: WindowMode,
        per: Duration,
        now: Duration,
    ) -> Vec<(Duration, Duration)> {
        let start = window_start(mode, per, now);
        let mut v: Vec<_> = self
            .charges
            .iter()
            .copied()
            .filter(|(t, _)| start.contains(*t, now))
            .collect();
        v.sort();
        v
    }

    /// Running time charged in the window of `limit` now.
    pub fn used(&self, limit: &RuntimeLimit, mode: WindowMode, now: Duration) -> Duration {
        self.in_window(mode, limit.per, now)
            .iter()
            .map(|(_, c)| *c)
            .sum()
    }

    /// Everything ever charged (since the last reset).
    pub fn total(&self) -> Duration {
        self.total
    }

    /// A query is admitted while every budget has time left (it may then overrun it,
    /// as on the real service, which charges after the fact).
    pub fn check(
        &self,
        limits: &[RuntimeLimit],
        mode: WindowMode,
        now: Duration,
    ) -> Result<(), RuntimeDenied> {
        let mut worst: Option<RuntimeDenied> = None;
        for limit in limits {
            let w = self.in_window(mode, limit.per, now);
            let mut sum: Duration = w.iter().map(|(_, c)| *c).sum();
            if sum < limit.budget {
                continue;
            }
            let wait = match mode {
                WindowMode::Sliding => {
                    let mut wait = limit.per;
                    for (t, c) in &w {
                        sum = sum.saturating_sub(*c);
                        if sum < limit.budget {
                            wait = (*t + limit.per).saturating_sub(now);
                            break;
                        }
                    }
                    wait
                }
                WindowMode::Fixed => {
                    let per_ns = limit.per.as_nanos().max(1);
                    let end = (now.as_nanos() / per_ns + 1) * per_ns;
                    Duration::from_nanos((end - now.as_nanos()) as u64)
                }
            };
            let wait = wait.max(Duration::from_nanos(1));
            if worst.is_none_or(|d| wait > d.wait) {
                worst = Some(RuntimeDenied {
                    limit: *limit,
                    wait,
                });
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Charges a query's running time at `now`.
    pub fn charge(&mut self, limits: &[RuntimeLimit], now: Duration, cost: Duration) {
        self.charges.push_back((now, cost));
        self.total += cost;
        let longest = limits.iter().map(|l| l.per).max().unwrap_or_default();
        while let Some(&(t, _)) = self.charges.front() {
            if t + longest <= now && t <= now {
                self.charges.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn sliding_is_exact() {
        let limits = [CallLimit { max: 3, per: MIN }];
        let mut w = CallWindows::default();
        for t in [0, 10, 20] {
            assert!(w.check(&limits, WindowMode::Sliding, s(t)).is_ok());
            w.record(&limits, s(t));
        }
        let d = w.check(&limits, WindowMode::Sliding, s(30)).unwrap_err();
        assert_eq!(d.wait, s(30)); // the call at 0 leaves the window at 60
        assert!(w.check(&limits, WindowMode::Sliding, s(59)).is_err());
        assert!(w.check(&limits, WindowMode::Sliding, s(60)).is_ok());
    }

    #[test]
    fn fixed_waits_for_the_window_end() {
        let limits = [CallLimit { max: 2, per: MIN }];
        let mut w = CallWindows::default();
        w.record(&limits, s(50));
        w.record(&limits, s(55));
        let d = w.check(&limits, WindowMode::Fixed, s(58)).unwrap_err();
        assert_eq!(d.wait, s(2));
        assert!(w.check(&limits, WindowMode::Fixed, s(60)).is_ok());
    }

    #[test]
    fn the_longest_wait_binds() {
        let limits = [
            CallLimit { max: 2, per: MIN },
            CallLimit {
                max: 3,
                per: s(3600),
            },
        ];
        let mut w = CallWindows::default();
        for t in [0, 1, 100] {
            w.record(&limits, s(t));
        }
        let d = w.check(&limits, WindowMode::Sliding, s(101)).unwrap_err();
        assert_eq!(d.limit.max, 3);
        assert_eq!(d.wait, s(3600 - 101));
    }

    #[test]
    fn runtime_budget() {
        let limits = [RuntimeLimit {
            budget: s(10),
            per: MIN,
        }];
        let mut r = RuntimeWindows::default();
        assert!(r.check(&limits, WindowMode::Sliding, s(0)).is_ok());
        r.charge(&limits, s(0), s(6));
        assert!(r.check(&limits, WindowMode::Sliding, s(1)).is_ok());
        r.charge(&limits, s(5), s(6));
        let d = r.check(&limits, WindowMode::Sliding, s(6)).unwrap_err();
        assert_eq!(d.wait, s(54));
        assert!(r.check(&limits, WindowMode::Sliding, s(60)).is_ok());
        assert_eq!(r.total(), s(12));
    }
}
