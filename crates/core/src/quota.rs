//! Exact sliding-window call quotas.
//!
//! A [`Quota`] enforces every call window of one API group at once: a call is admitted
//! only when, for every window of `max` calls per `per`, fewer than `max` admitted calls
//! lie in the last `per + margin`. The safety margin absorbs network jitter: the server
//! sees our calls shifted by their latency, and a margin at least as wide as the spread
//! of latencies keeps every server-side window, sliding or fixed, within its limit.
//!
//! ```
//! use defender_core::quota::Quota;
//! use defender_core::CallLimit;
//! use std::time::{Duration, Instant};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let t0 = Instant::now();
//! let mut q = Quota::new(&[CallLimit { max: 2, per: Duration::from_secs(60) }], Duration::ZERO);
//! assert!(q.try_acquire(t0).is_ok());
//! assert!(q.try_acquire(t0).is_ok());
//! let denied = q.try_acquire(t0).unwrap_err();
//! assert_eq!(denied.retry_at, t0 + Duration::from_secs(60));
//! assert!(q.try_acquire(denied.retry_at).is_ok());
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::limits::CallLimit;

/// The call quota of one (tenant, app, API group).
///
/// Instants are kept as nanoseconds since the first instant the quota saw, so the hot
/// path compares and adds integers.
#[derive(Debug, Clone)]
pub struct Quota {
    windows: Vec<Window>,
    margin: Duration,
    blocked_until: Option<Instant>,
    base: Option<Instant>,
    /// The latest `now` seen, in nanoseconds since `base`.
    last: u64,
}

#[derive(Debug, Clone)]
struct Window {
    limit: CallLimit,
    /// `limit.per + margin`, in nanoseconds: what counts.
    span: u64,
    /// The widest span this window had: entries are kept that long, so a margin that
    /// grows again still counts them.
    keep: u64,
    /// Admitted instants (nanoseconds since `base`), oldest first; entries older than
    /// `keep` are dropped on the next admission.
    log: VecDeque<u64>,
}

/// Proof that a call was admitted; give it back with [`Quota::release`] if the call is
/// never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// When the call was admitted.
    pub at: Instant,
    /// Whether the call was written into any window (a quota without windows logs
    /// nothing, and its tickets must not give back another call's slot later).
    logged: bool,
}

/// A denial: the earliest instant at which the call would be admitted, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The earliest instant that would succeed (absent other calls).
    pub retry_at: Instant,
    /// The window that binds, or `None` when the server's retry time binds.
    pub limit: Option<CallLimit>,
}

/// The usage of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUsage {
    /// The window.
    pub limit: CallLimit,
    /// Calls admitted in it now.
    pub used: u32,
    /// When the next call could go (now, if `used < max`).
    pub next_free: Instant,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl Window {
    fn new(limit: CallLimit, margin: Duration) -> Window {
        let span = nanos(limit.per).saturating_add(nanos(margin));
        Window {
            limit,
            span,
            keep: span,
            log: VecDeque::new(),
        }
    }

    /// Entries still inside the window at `now`: the index of the first live one.
    fn first_live(&self, now: u64) -> usize {
        match now.checked_sub(self.span) {
            // An entry at `t` counts while `t + span > now`, i.e. `t > now - span`.
            Some(cutoff) => self.log.partition_point(|&t| t <= cutoff),
            None => 0,
        }
    }

    /// When a call would next be admitted, given `first` live entries start there.
    fn free_at(&self, first: usize) -> Option<u64> {
        let live = self.log.len() - first;
        let max = self.limit.max as usize;
        // Admitted once the (live - max + 1)-th oldest live entry has left the window.
        (live >= max).then(|| self.log[first + live - max].saturating_add(self.span))
    }
}

impl Quota {
    /// A quota enforcing every window in `limits`, each widened by `margin`.
    pub fn new(limits: &[CallLimit], margin: Duration) -> Quota {
        Quota {
            windows: limits
                .iter()
                .filter(|l| l.max > 0 && !l.per.is_zero())
                .map(|&limit| Window::new(limit, margin))
                .collect(),
            margin,
            blocked_until: None,
            base: None,
            last: 0,
        }
    }

    /// The windows enforced, including limits learned from the server.
    pub fn limits(&self) -> impl Iterator<Item = CallLimit> + '_ {
        self.windows.iter().map(|w| w.limit)
    }

    /// The safety margin added to every window.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// Changes the margin (a learned one, see [`crate::margin`]). Admissions already
    /// logged are kept as long as the widest margin ever set asks, so a margin that
    /// narrows and widens again still counts them.
    pub fn set_margin(&mut self, margin: Duration) {
        self.margin = margin;
        for w in &mut self.windows {
            w.span = nanos(w.limit.per).saturating_add(nanos(margin));
            w.keep = w.keep.max(w.span);
        }
    }

    /// The server's retry time, if one was given and not yet passed.
    pub fn blocked_until(&self) -> Option<Instant> {
        self.blocked_until
    }

    /// Nanoseconds since the base for `now`; time never goes backwards inside the quota
    /// (an earlier `now` is read as the latest).
    fn offset(&self, now: Instant) -> u64 {
        match self.base {
            Some(base) => nanos(now.saturating_duration_since(base)).max(self.last),
            None => 0,
        }
    }

    fn instant(&self, offset: u64) -> Instant {
        // `base` is set before any entry exists, so entries have a base to count from.
        self.base
            .map_or_else(unreachable_base, |b| b + Duration::from_nanos(offset))
    }

    /// Checks without admitting.
    pub fn check(&self, now: Instant) -> Result<(), Denied> {
        let at = self.offset(now);
        let now = if self.base.is_some() {
            self.instant(at)
        } else {
            now
        };
        self.check_at(now, at)
    }

    fn check_at(&self, now: Instant, at: u64) -> Result<(), Denied> {
        let mut worst: Option<(u64, Option<CallLimit>)> = None;
        for w in &self.windows {
            if let Some(free) = w.free_at(w.first_live(at)) {
                if worst.is_none_or(|(f, _)| free > f) {
                    worst = Some((free, Some(w.limit)));
                }
            }
        }
        let mut denied = worst.map(|(free, limit)| Denied {
            retry_at: self.instant(free),
            limit,
        });
        if let Some(until) = self.blocked_until.filter(|u| *u > now) {
            if denied.is_none_or(|d| until > d.retry_at) {
                denied = Some(Denied {
                    retry_at: until,
                    limit: None,
                });
            }
        }
        match denied {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Admits a call at `now` if every window allows it; otherwise says when to retry.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Ticket, Denied> {
        let base = *self.base.get_or_insert(now);
        let at = self.offset(now);
        self.last = at;
        // Drop what has left each window for good (what a wider margin would count stays).
        for w in &mut self.windows {
            if let Some(cutoff) = at.checked_sub(w.keep) {
                while w.log.front().is_some_and(|&t| t <= cutoff) {
                    w.log.pop_front();
                }
            }
        }
        if let Some(b) = self.blocked_until {
            if nanos(b.saturating_duration_since(base)) <= at {
                self.blocked_until = None;
            }
        }
        let mut worst: Option<(u64, CallLimit)> = None;
        for w in &self.windows {
            if let Some(free) = w.free_at(w.first_live(at)) {
                if worst.is_none_or(|(f, _)| free > f) {
                    worst = Some((free, w.limit));
                }
            }
        }
        if let Some(until) = self.blocked_until {
            let until_at = nanos(until.saturating_duration_since(base));
            if worst.is_none_or(|(f, _)| until_at > f) {
                return Err(Denied {
                    retry_at: until,
                    limit: None,
                });
            }
        }
        if let Some((free, limit)) = worst {
            return Err(Denied {
                retry_at: base + Duration::from_nanos(free),
                limit: Some(limit),
            });
        }
        for w in &mut self.windows {
            w.log.push_back(at);
        }
        Ok(Ticket {
            at: base + Duration::from_nanos(at),
            logged: !self.windows.is_empty(),
        })
    }

    /// Gives back a ticket whose call was never sent.
    pub fn release(&mut self, ticket: Ticket) {
        let Some(base) = self.base.filter(|_| ticket.logged) else {
            return;
        };
        let at = nanos(ticket.at.saturating_duration_since(base));
        for w in &mut self.windows {
            if let Some(pos) = w.log.iter().rposition(|&t| t == at) {
                w.log.remove(pos);
            }
        }
    }

    /// The server said not to call before `until` (a 429's retry time).
    pub fn handle_retry_at(&mut self, until: Instant) {
        if self.blocked_until.is_none_or(|b| until > b) {
            self.blocked_until = Some(until);
        }
    }

    /// The server named a limit ("maximum allowed 45 per 00:01:00"): adopt it when it is
    /// tighter than ours, or add it when we had no window of that length.
    pub fn handle_learned_limit(&mut self, limit: CallLimit) {
        if limit.max == 0 || limit.per.is_zero() {
            return;
        }
        match self.windows.iter_mut().find(|w| w.limit.per == limit.per) {
            Some(w) if w.limit.max > limit.max => w.limit.max = limit.max,
            Some(_) => {}
            None => {
                // The new window starts with what the longest existing one remembers
                // that falls inside it, so it is exact from the start where it can be.
                let mut w = Window::new(limit, self.margin);
                if let Some(longest) = self.windows.iter().max_by_key(|w| w.span) {
                    w.log = longest.log.clone();
                }
                self.windows.push(w);
            }
        }
    }

    /// Usage of every window at `now`.
    pub fn usage(&self, now: Instant) -> Vec<WindowUsage> {
        let at = self.offset(now);
        let now = self.base.map_or(now, |_| self.instant(at));
        self.windows
            .iter()
            .map(|w| {
                let first = w.first_live(at);
                WindowUsage {
                    limit: w.limit,
                    used: (w.log.len() - first) as u32,
                    next_free: w.free_at(first).map_or(now, |f| self.instant(f)),
                }
            })
            .collect()
    }
}

#[cold]
fn unreachable_base() -> Instant {
    unreachable!("a quota with entries has a base instant")
}

/// Whose quota: Microsoft counts per application and tenant, and per API group.
///
/// Make it with [`QuotaKey::new`], which writes each id one way (see [`normalize_id`]),
/// so one app never gets two budgets, in process or in a shared store, because two
/// workers spell its ids differently.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaKey {
    /// The tenant (normalised).
    pub tenant: String,
    /// The application (client) id (normalised).
    pub app: String,
    /// The API group.
    pub group: crate::limits::ApiGroup,
}

impl QuotaKey {
    /// The key of `app` in `tenant` for `group`, both ids normalised by
    /// [`normalize_id`].
    ///
    /// ```
    /// use defender_core::quota::QuotaKey;
    /// use defender_core::ApiGroup;
    ///
    /// assert_eq!(
    ///     QuotaKey::new("Contoso.OnMicrosoft.com", "{72F988BF-86F1-41AF-91AB-2D7CD011DB47}", ApiGroup::Hunting),
    ///     QuotaKey::new("contoso.onmicrosoft.com", "72f988bf-86f1-41af-91ab-2d7cd011db47", ApiGroup::Hunting),
    /// );
    /// ```
    pub fn new(tenant: &str, app: &str, group: crate::limits::ApiGroup) -> QuotaKey {
        QuotaKey {
            tenant: normalize_id(tenant),
            app: normalize_id(app),
            group,
        }
    }
}

/// One spelling of a tenant or app id, as Entra ID compares them: without surrounding
/// whitespace; a GUID (with or without hyphens, in braces or parentheses, any case) as
/// 36 lower-case characters `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`; anything else (a
/// tenant's domain name) in lower case, without the trailing dot of a fully qualified
/// name.
///
/// A tenant's GUID and its domain name stay two spellings: telling that they are one
/// tenant takes a network lookup, so give every process of an app the same form.
pub fn normalize_id(id: &str) -> String {
    let id = id.trim();
    if let Some(guid) = guid(id) {
        return guid;
    }
    let id = id.strip_suffix('.').unwrap_or(id);
    id.to_lowercase()
}

/// `s` as a lower-case hyphenated GUID, if it is one in any of .NET's formats N, D, B, P.
fn guid(s: &str) -> Option<String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| s.strip_prefix('(').and_then(|r| r.strip_suffix(')')))
        .unwrap_or(s)
        .trim();
    let b = inner.as_bytes();
    let hex: Vec<u8> = match b.len() {
        36 if [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') => b
            .iter()
            .enumerate()
            .filter(|(i, _)| ![8, 13, 18, 23].contains(i))
            .map(|(_, c)| *c)
            .collect(),
        32 => b.to_vec(),
        _ => return None,
    };
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, c) in hex.iter().enumerate() {
        if [8, 12, 16, 20].contains(&i) {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase() as char);
    }
    Some(out)
}

/// A quota per [`QuotaKey`], made on first use from the limits given.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    margin: Duration,
    quotas: std::collections::HashMap<QuotaKey, Quota>,
}

impl Quotas {
    /// An empty set whose quotas use `margin`.
    pub fn new(margin: Duration) -> Quotas {
        Quotas {
            margin,
            quotas: Default::default(),
        }
    }

    /// The quota of `key`, made from `limits` if it does not exist yet.
    pub fn get_or_insert(&mut self, key: &QuotaKey, limits: &[CallLimit]) -> &mut Quota {
        let margin = self.margin;
        self.quotas
            .entry(key.clone())
            .or_insert_with(|| Quota::new(limits, margin))
    }

    /// Admits a call of `key` at `now` when all its windows allow it.
    pub fn try_acquire(
        &mut self,
        key: &QuotaKey,
        limits: &[CallLimit],
        now: Instant,
    ) -> Result<Ticket, Denied> {
        self.get_or_insert(key, limits).try_acquire(now)
    }

    /// The quota of `key`, if it was used.
    pub fn get(&self, key: &QuotaKey) -> Option<&Quota> {
        self.quotas.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // tests need one real instant to count from
    fn t0() -> Instant {
        Instant::now()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn every_window_binds() {
        let t = t0();
        let mut q = Quota::new(
            &[
                CallLimit { max: 3, per: MIN },
                CallLimit {
                    max: 4,
                    per: 10 * MIN,
                },
            ],
            Duration::ZERO,
        );
        for _ in 0..3 {
            q.try_acquire(t).unwrap();
        }
        let d = q.try_acquire(t).unwrap_err();
        assert_eq!(d.retry_at, t + MIN);
        q.try_acquire(t + MIN).unwrap();
        let d = q.try_acquire(t + MIN).unwrap_err();
        assert_eq!(d.retry_at, t + 10 * MIN);
        assert_eq!(d.limit.unwrap().max, 4);
    }

    #[test]
    fn margin_widens_windows() {
        let t = t0();
        let mut q = Quota::new(
            &[CallLimit { max: 1, per: MIN }],
            Duration::from_millis(500),
        );
        q.try_acquire(t).unwrap();
        assert_eq!(
            q.try_acquire(t + MIN).unwrap_err().retry_at,
            t + MIN + Duration::from_millis(500)
        );
    }

    #[test]
    fn release_and_feedback() {
        let t = t0();
        let mut q = Quota::new(&[CallLimit { max: 1, per: MIN }], Duration::ZERO);
        let ticket = q.try_acquire(t).unwrap();
        q.release(ticket);
        q.try_acquire(t).unwrap();
        q.handle_retry_at(t + 5 * MIN);
        assert_eq!(
            q.try_acquire(t + 2 * MIN).unwrap_err(),
            Denied {
                retry_at: t + 5 * MIN,
                limit: None
            }
        );
        q.handle_learned_limit(CallLimit {
            max: 2,
            per: Duration::from_secs(1),
        });
        assert_eq!(q.limits().count(), 2);
        q.handle_learned_limit(CallLimit { max: 1, per: MIN });
        q.handle_learned_limit(CallLimit { max: 10, per: MIN });
        assert_eq!(q.limits().next().unwrap().max, 1);
    }

    #[test]
    fn a_ticket_from_before_any_window_gives_back_nothing() {
        let t = t0();
        let mut q = Quota::new(&[], Duration::ZERO);
        let early = q.try_acquire(t).unwrap();
        q.handle_learned_limit(CallLimit { max: 1, per: MIN });
        q.try_acquire(t).unwrap();
        q.release(early);
        assert!(
            q.try_acquire(t).is_err(),
            "the second call's slot is still taken"
        );
    }

    #[test]
    fn one_app_has_one_key_however_its_ids_are_spelled() {
        use crate::limits::ApiGroup::Incidents;
        let app = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        for spelling in [
            "72F988BF-86F1-41AF-91AB-2D7CD011DB47",
            "  72f988bf-86f1-41af-91ab-2d7cd011db47\n",
            "{72F988BF-86F1-41AF-91AB-2D7CD011DB47}",
            " { 72f988bf-86f1-41af-91ab-2d7cd011db47 } ",
            "(72f988bf-86f1-41af-91ab-2d7cd011db47)",
            "72F988BF86F141AF91AB2D7CD011DB47",
        ] {
            assert_eq!(normalize_id(spelling), app, "{spelling:?}");
        }
        for spelling in [
            "Contoso.OnMicrosoft.com",
            " contoso.onmicrosoft.com ",
            "CONTOSO.ONMICROSOFT.COM.",
        ] {
            assert_eq!(normalize_id(spelling), "contoso.onmicrosoft.com");
        }
        // Not GUIDs: left alone but for case and whitespace.
        for (id, want) in [
            (
                "72f988bf-86f1-41af-91ab-2d7cd011db4",
                "72f988bf-86f1-41af-91ab-2d7cd011db4",
            ),
            ("{not-a-guid}", "{not-a-guid}"),
            (
                "72f988bf_86f1_41af_91ab_2d7cd011db47",
                "72f988bf_86f1_41af_91ab_2d7cd011db47",
            ),
            ("", ""),
        ] {
            assert_eq!(normalize_id(id), want);
        }
        assert_ne!(normalize_id("contoso.com"), normalize_id("contoso.co"));
        assert_eq!(
            QuotaKey::new(
                "Contoso.OnMicrosoft.com",
                "{72F988BF-86F1-41AF-91AB-2D7CD011DB47}",
                Incidents
            ),
            QuotaKey::new("contoso.onmicrosoft.com", app, Incidents),
        );
        // The in-process quotas agree: one budget for both spellings.
        let t = t0();
        let mut quotas = Quotas::new(Duration::ZERO);
        let limits = [CallLimit { max: 1, per: MIN }];
        let upper = QuotaKey::new("CONTOSO.onmicrosoft.com", &app.to_uppercase(), Incidents);
        quotas.try_acquire(&upper, &limits, t).unwrap();
        let lower = QuotaKey::new("contoso.onmicrosoft.com", app, Incidents);
        assert!(quotas.try_acquire(&lower, &limits, t).is_err());
    }

    #[test]
    fn usage_reports_next_free() {
        let t = t0();
        let mut q = Quota::new(&[CallLimit { max: 2, per: MIN }], Duration::ZERO);
        q.try_acquire(t).unwrap();
        q.try_acquire(t + Duration::from_secs(10)).unwrap();
        let u = q.usage(t + Duration::from_secs(20));
        assert_eq!(u[0].used, 2);
        assert_eq!(u[0].next_free, t + MIN);
    }
}
