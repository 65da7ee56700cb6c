//! The documented limits of the Defender APIs, as data.
//!
//! Limits changed over the years (see `API-FACTS.md`), so nothing here is a constant
//! buried in code: [`Limits`] comes from a named [`Preset`] and user overrides written in
//! a compact spec:
//!
//! ```text
//! [PRESET,]group.kind=value[,group.kind=value...]
//!
//! group: hunting | incidents
//! kind:  calls=N/PERIOD      at most N calls in any PERIOD (repeat for several windows)
//!        runtime=DUR/PERIOD  at most DUR of query running time in any PERIOD (hunting)
//!        rows=N              the row cap of one result (hunting)
//!        lookback=DUR        how far back data is kept (hunting)
//!        VALUE may be `none` to clear that kind.
//! durations: 500ms, 10s, 1m, 4h, 30d, or compounds such as 1h30m
//! ```
//!
//! The first time a spec names a `group.kind`, the preset's values for it are replaced;
//! later items with the same key add more windows.
//!
//! ```
//! use defender_core::limits::{Limits, ApiGroup};
//! use std::time::Duration;
//!
//! let limits: Limits = "2021,hunting.calls=45/1m,hunting.calls=1500/1h".parse().unwrap();
//! let hunting = limits.group(ApiGroup::Hunting);
//! assert_eq!(hunting.calls.len(), 2);
//! assert_eq!(hunting.runtime[0].budget, Duration::from_secs(600)); // kept from the preset
//!
//! let err = "hunting.calls=45/1x".parse::<Limits>().unwrap_err();
//! assert!(err.to_string().contains("45/1x"));
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The API groups that Microsoft counts separately.
///
/// Listing, getting and updating incidents share the `incidents` group: the documented
/// limits for them are the same or tighter, so one conservative budget serves all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ApiGroup {
    /// Advanced hunting (`advancedhunting/run`, `advancedqueries/run`, `runHuntingQuery`).
    Hunting,
    /// Incidents: list, get and update.
    Incidents,
    /// Alerts as their own calls: list, get and update (Graph `alerts_v2`, Defender's
    /// `/api/alerts`).
    Alerts,
}

impl ApiGroup {
    /// Every group, in a stable order.
    pub const ALL: [ApiGroup; 3] = [ApiGroup::Hunting, ApiGroup::Incidents, ApiGroup::Alerts];

    /// The name used in limits specs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiGroup::Hunting => "hunting",
            ApiGroup::Incidents => "incidents",
            ApiGroup::Alerts => "alerts",
        }
    }
}

impl fmt::Display for ApiGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiGroup {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "hunting" => Ok(ApiGroup::Hunting),
            "incidents" => Ok(ApiGroup::Incidents),
            "alerts" => Ok(ApiGroup::Alerts),
            _ => Err(()),
        }
    }
}

/// At most `max` calls in any interval of length `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallLimit {
    /// Calls allowed in one window; at least 1.
    pub max: u32,
    /// The window's length; not zero.
    pub per: Duration,
}

impl fmt::Display for CallLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} calls per {}", self.max, format_duration(self.per))
    }
}

/// At most `budget` of query running time in any interval of length `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuntimeLimit {
    /// Running time allowed in one window; not zero.
    pub budget: Duration,
    /// The window's length; not zero.
    pub per: Duration,
}

impl fmt::Display for RuntimeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of running time per {}",
            format_duration(self.budget),
            format_duration(self.per)
        )
    }
}

/// The limits of one API group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupLimits {
    /// Every call window; all are enforced at once.
    pub calls: Vec<CallLimit>,
    /// Every running-time window; all are enforced at once (hunting only).
    pub runtime: Vec<RuntimeLimit>,
    /// The row cap of one result; a result of exactly this many rows was truncated.
    pub rows: Option<u64>,
    /// How far back data is kept.
    pub lookback: Option<Duration>,
}

/// The limits of every API group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Advanced hunting.
    pub hunting: GroupLimits,
    /// Incidents.
    pub incidents: GroupLimits,
    /// Alerts.
    pub alerts: GroupLimits,
}

/// The named presets: the limits as documented at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// The 2021 terms, the project's founding document: hunting 15 calls per minute,
    /// 10 minutes of running time per hour and 4 hours per day; incidents 50 per minute
    /// and 1,500 per hour; 100,000 rows; 30 days.
    Terms2021,
    /// Defender XDR as documented today: hunting "at least 45 calls per minute per
    /// tenant" (DD defender-xdr/api-advanced-hunting.md). Its CPU quota depends on tenant
    /// size and is not published, so the 2021 running-time windows stand in for it.
    DefenderXdr,
    /// Defender for Endpoint as documented today: 45 calls per minute and 1,500 per hour,
    /// 10 minutes of running time per hour and 3 hours per day
    /// (DD defender-endpoint/api/run-advanced-query-api.md).
    DefenderEndpoint,
    /// Microsoft Graph `runHuntingQuery` and `security/incidents`. Graph's hunting runs on
    /// the same service as Defender XDR's and documents no tighter numbers, so it shares
    /// the Defender XDR values.
    Graph,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [
        Preset::Terms2021,
        Preset::DefenderXdr,
        Preset::DefenderEndpoint,
        Preset::Graph,
    ];

    /// The preset's name in specs (`2021`, `xdr`, `mde`, `graph`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Terms2021 => "2021",
            Preset::DefenderXdr => "xdr",
            Preset::DefenderEndpoint => "mde",
            Preset::Graph => "graph",
        }
    }

    /// The preset with this name, if any.
    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The limits of this preset.
    pub fn limits(self) -> Limits {
        const MIN: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let calls = |max, per| CallLimit { max, per };
        let runtime = |budget, per| RuntimeLimit { budget, per };
        let incidents = GroupLimits {
            // DD defender-xdr/api-list-incidents.md: 50 per minute and 1,500 per hour.
            calls: vec![calls(50, MIN), calls(1500, HOUR)],
            ..GroupLimits::default()
        };
        // DD defender-endpoint/api/get-alerts.md, get-alert-info-by-id.md and
        // update-alert.md: 100 calls per minute and 1,500 per hour. Graph's alerts_v2
        // documents no numbers of its own and fronts the same service.
        let alerts = GroupLimits {
            calls: vec![calls(100, MIN), calls(1500, HOUR)],
            ..GroupLimits::default()
        };
        let hunting =
            |calls_windows: Vec<CallLimit>, runtime_windows: Vec<RuntimeLimit>| GroupLimits {
                calls: calls_windows,
                runtime: runtime_windows,
                rows: Some(100_000),
                lookback: Some(30 * DAY),
            };
        let runtime_2021 = vec![runtime(10 * MIN, HOUR), runtime(4 * HOUR, DAY)];
        match self {
            Preset::Terms2021 => Limits {
                hunting: hunting(vec![calls(15, MIN)], runtime_2021),
                incidents: incidents.clone(),
                alerts: alerts.clone(),
            },
            Preset::DefenderXdr | Preset::Graph => Limits {
                hunting: hunting(vec![calls(45, MIN)], runtime_2021),
                incidents: incidents.clone(),
                alerts: alerts.clone(),
            },
            Preset::DefenderEndpoint => Limits {
                hunting: hunting(
                    vec![calls(45, MIN), calls(1500, HOUR)],
                    vec![runtime(10 * MIN, HOUR), runtime(3 * HOUR, DAY)],
                ),
                incidents: incidents.clone(),
                alerts: alerts.clone(),
            },
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Default for Limits {
    /// The 2021 terms: the tightest documented limits, safe everywhere.
    fn default() -> Self {
        Preset::Terms2021.limits()
    }
}

impl Limits {
    /// The limits of one group.
    pub fn group(&self, group: ApiGroup) -> &GroupLimits {
        match group {
            ApiGroup::Hunting => &self.hunting,
            ApiGroup::Incidents => &self.incidents,
            ApiGroup::Alerts => &self.alerts,
        }
    }

    /// The limits of one group, mutably.
    pub fn group_mut(&mut self, group: ApiGroup) -> &mut GroupLimits {
        match group {
            ApiGroup::Hunting => &mut self.hunting,
            ApiGroup::Incidents => &mut self.incidents,
            ApiGroup::Alerts => &mut self.alerts,
        }
    }

    /// Parses a spec: an optional preset name first, then overrides applied over it
    /// (over the 2021 terms when no preset is named).
    pub fn parse(spec: &str) -> Result<Limits, LimitsError> {
        let mut items = split_items(spec).peekable();
        let mut limits = match items.peek() {
            Some((_, item)) if !item.contains('=') => {
                let (index, item) = items.next().expect("peeked"); // peek returned Some
                Preset::from_name(item)
                    .ok_or_else(|| LimitsError::new(index, item, LimitsErrorKind::UnknownPreset))?
                    .limits()
            }
            _ => Limits::default(),
        };
        limits.apply(items)?;
        Ok(limits)
    }

    /// Applies overrides (a spec without a preset name) to these limits.
    pub fn with_overrides(mut self, spec: &str) -> Result<Limits, LimitsError> {
        self.apply(split_items(spec))?;
        Ok(self)
    }

    fn apply<'a>(
        &mut self,
        items: impl Iterator<Item = (usize, &'a str)>,
    ) -> Result<(), LimitsError> {
        let mut replaced: Vec<(ApiGroup, &'static str)> = Vec::new();
        for (index, item) in items {
            let err = |kind| LimitsError::new(index, item, kind);
            let (key, value) = item.split_once('=').ok_or_else(|| {
                if Preset::from_name(item).is_some() {
                    err(LimitsErrorKind::PresetNotFirst)
                } else {
                    err(LimitsErrorKind::MissingValue)
                }
            })?;
            let (group, kind) = key
                .trim()
                .split_once('.')
                .ok_or_else(|| err(LimitsErrorKind::UnknownKey))?;
            let group: ApiGroup = group
                .trim()
                .parse()
                .map_err(|()| err(LimitsErrorKind::UnknownGroup))?;
            let kind: &'static str = match kind.trim() {
                "calls" => "calls",
                "runtime" => "runtime",
                "rows" => "rows",
                "lookback" => "lookback",
                _ => return Err(err(LimitsErrorKind::UnknownKind)),
            };
            let value = value.trim();
            let first = !replaced.contains(&(group, kind));
            if first {
                replaced.push((group, kind));
            }
            let target = self.group_mut(group);
            let none = value.eq_ignore_ascii_case("none");
            match kind {
                "calls" => {
                    if first {
                        target.calls.clear();
                    }
                    if !none {
                        let (max, per) = value
                            .split_once('/')
                            .ok_or_else(|| err(LimitsErrorKind::ExpectedRate))?;
                        let max: u32 = parse_count(max).map_err(err)?;
                        let per = parse_period(per).map_err(err)?;
                        target.calls.push(CallLimit { max, per });
                    }
                }
                "runtime" => {
                    if first {
                        target.runtime.clear();
                    }
                    if !none {
                        let (budget, per) = value
                            .split_once('/')
                            .ok_or_else(|| err(LimitsErrorKind::ExpectedRate))?;
                        let budget = parse_period(budget).map_err(err)?;
                        let per = parse_period(per).map_err(err)?;
                        target.runtime.push(RuntimeLimit { budget, per });
                    }
                }
                "rows" => {
                    target.rows = if none {
                        None
                    } else {
                        Some(parse_count(value).map_err(err)?)
                    };
                }
                _ => {
                    target.lookback = if none {
                        None
                    } else {
                        Some(parse_period(value).map_err(err)?)
                    };
                }
            }
        }
        Ok(())
    }

    /// Writes these limits as a spec that [`Limits::parse`] reads back to equal limits.
    pub fn to_spec(&self) -> String {
        let mut parts = Vec::new();
        for group in ApiGroup::ALL {
            let g = self.group(group);
            if g.calls.is_empty() {
                parts.push(format!("{group}.calls=none"));
            }
            for c in &g.calls {
                parts.push(format!(
                    "{group}.calls={}/{}",
                    c.max,
                    format_duration(c.per)
                ));
            }
            if g.runtime.is_empty() {
                parts.push(format!("{group}.runtime=none"));
            }
            for r in &g.runtime {
                parts.push(format!(
                    "{group}.runtime={}/{}",
                    format_duration(r.budget),
                    format_duration(r.per)
                ));
            }
            match g.rows {
                Some(rows) => parts.push(format!("{group}.rows={rows}")),
                None => parts.push(format!("{group}.rows=none")),
            }
            match g.lookback {
                Some(d) => parts.push(format!("{group}.lookback={}", format_duration(d))),
                None => parts.push(format!("{group}.lookback=none")),
            }
        }
        parts.join(",")
    }
}

impl FromStr for Limits {
    type Err = LimitsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Limits::parse(s)
    }
}

fn split_items(spec: &str) -> impl Iterator<Item = (usize, &str)> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| (i + 1, s))
}

fn parse_count<T: FromStr + Default + PartialEq>(s: &str) -> Result<T, LimitsErrorKind> {
    let s = s.trim();
    let cleaned: String = s.chars().filter(|c| *c != '_').collect();
    let value: T = cleaned
        .parse()
        .map_err(|_| LimitsErrorKind::BadNumber(s.to_owned()))?;
    if value == T::default() {
        return Err(LimitsErrorKind::Zero);
    }
    Ok(value)
}

fn parse_period(s: &str) -> Result<Duration, LimitsErrorKind> {
    let d = parse_duration(s).map_err(LimitsErrorKind::BadDuration)?;
    if d.is_zero() {
        return Err(LimitsErrorKind::Zero);
    }
    Ok(d)
}

/// Parses a duration such as `500ms`, `10s`, `1m`, `4h`, `30d`, `2w` or `1h30m`.
///
/// ```
/// use defender_core::limits::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("10x").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::ExpectedNumber(rest.to_owned()));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::TooLarge)?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(DurationError::MissingUnit(s.to_owned())),
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        let millis = n.checked_mul(millis_per).ok_or(DurationError::TooLarge)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or(DurationError::TooLarge)?;
    }
    Ok(total)
}

/// Formats a duration in the units [`parse_duration`] reads, largest first (`1h30m`,
/// `500ms`, `0s`). Sub-millisecond parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing was given.
    #[error("the duration is empty")]
    Empty,
    /// A unit came where a number was expected.
    #[error("expected a number at `{0}`")]
    ExpectedNumber(String),
    /// A number had no unit.
    #[error("`{0}` has no unit (use ms, s, m, h, d or w)")]
    MissingUnit(String),
    /// The unit is not one of ms, s, m, h, d, w.
    #[error("unknown time unit `{0}` (use ms, s, m, h, d or w)")]
    UnknownUnit(String),
    /// The duration does not fit.
    #[error("the duration is too large")]
    TooLarge,
}

/// A limits spec that did not parse; names the item and says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits spec item {index} `{item}`: {kind}")]
pub struct LimitsError {
    /// The item's position in the spec, from 1.
    pub index: usize,
    /// The item as written.
    pub item: String,
    /// What was wrong with it.
    pub kind: LimitsErrorKind,
}

impl LimitsError {
    fn new(index: usize, item: &str, kind: LimitsErrorKind) -> Self {
        LimitsError {
            index,
            item: item.to_owned(),
            kind,
        }
    }
}

/// What was wrong with a limits spec item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsErrorKind {
    /// The first item named no preset.
    #[error("unknown preset (use 2021, xdr, mde or graph)")]
    UnknownPreset,
    /// A preset name came after an override.
    #[error("a preset name may only come first")]
    PresetNotFirst,
    /// The item has no `=`.
    #[error("expected `group.kind=value`")]
    MissingValue,
    /// The key is not `group.kind`.
    #[error("expected a key such as `hunting.calls`")]
    UnknownKey,
    /// The group is not one of the API groups.
    #[error("unknown group (use hunting, incidents or alerts)")]
    UnknownGroup,
    /// The kind is not one of calls, runtime, rows, lookback.
    #[error("unknown kind (use calls, runtime, rows or lookback)")]
    UnknownKind,
    /// A rate was expected.
    #[error("expected `AMOUNT/PERIOD`, such as 45/1m or 10m/1h")]
    ExpectedRate,
    /// A count did not parse.
    #[error("`{0}` is not a whole number")]
    BadNumber(String),
    /// A duration did not parse.
    #[error("{0}")]
    BadDuration(DurationError),
    /// A count or period of zero.
    #[error("zero is not a limit (use `none` to remove one)")]
    Zero,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_documented_numbers() {
        let l = Preset::Terms2021.limits();
        assert_eq!(
            l.hunting.calls,
            vec![CallLimit {
                max: 15,
                per: Duration::from_secs(60)
            }]
        );
        assert_eq!(l.hunting.runtime.len(), 2);
        assert_eq!(l.hunting.rows, Some(100_000));
        assert_eq!(l.hunting.lookback, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            l.incidents.calls[1],
            CallLimit {
                max: 1500,
                per: Duration::from_secs(3600)
            }
        );
        let mde = Preset::DefenderEndpoint.limits();
        assert_eq!(mde.hunting.runtime[1].budget, Duration::from_secs(3 * 3600));
        for preset in Preset::ALL {
            assert_eq!(
                preset.limits().alerts.calls,
                vec![
                    CallLimit {
                        max: 100,
                        per: Duration::from_secs(60)
                    },
                    CallLimit {
                        max: 1500,
                        per: Duration::from_secs(3600)
                    }
                ],
                "{preset}"
            );
        }
        let l = Limits::parse("graph,alerts.calls=10/1m").unwrap();
        assert_eq!(l.alerts.calls.len(), 1);
        assert_eq!(l.incidents, Preset::Graph.limits().incidents);
    }

    #[test]
    fn the_issue_spec_parses() {
        let l = Limits::parse("hunting.calls=45/1m,hunting.calls=1500/1h,hunting.runtime=10m/1h,hunting.runtime=4h/1d,incidents.calls=50/1m,hunting.rows=100000,hunting.lookback=30d").unwrap();
        assert_eq!(l.hunting.calls.len(), 2);
        assert_eq!(l.hunting.calls[0].max, 45);
        assert_eq!(
            l.incidents.calls,
            vec![CallLimit {
                max: 50,
                per: Duration::from_secs(60)
            }]
        );
        assert_eq!(
            l.hunting.runtime[1],
            RuntimeLimit {
                budget: Duration::from_secs(4 * 3600),
                per: Duration::from_secs(86_400)
            }
        );
    }

    #[test]
    fn errors_name_the_bad_item() {
        for (spec, index, needle) in [
            ("bogus", 1, "unknown preset"),
            ("hunting.calls=45/1m,xdr", 2, "only come first"),
            ("hunting.calls=45", 1, "AMOUNT/PERIOD"),
            ("hunting.calls=0/1m", 1, "zero"),
            ("hunting.calls=abc/1m", 1, "whole number"),
            ("hunting.calls=4/1x", 1, "unknown time unit `x`"),
            ("hunting.call=4/1m", 1, "unknown kind"),
            ("machines.calls=4/1m", 1, "unknown group"),
            ("xdr,hunting", 2, "group.kind=value"),
            ("hunting.rows=99999999999999999999999", 1, "whole number"),
        ] {
            let err = Limits::parse(spec).unwrap_err();
            assert_eq!(err.index, index, "{spec}");
            assert!(err.to_string().contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn none_clears() {
        let l = Limits::parse("mde,hunting.runtime=none,hunting.rows=none").unwrap();
        assert!(l.hunting.runtime.is_empty());
        assert_eq!(l.hunting.rows, None);
        assert_eq!(l.hunting.calls.len(), 2);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("999999999999999d").is_err());
    }
}
