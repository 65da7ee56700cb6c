//! Seeded, reproducible fault injection (the syntax is documented on [`FaultSpec`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use defender_core::limits::parse_duration;

use crate::rng::mix;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this HTTP status and an error envelope.
    Status(u16),
    /// Drop the connection without a complete response.
    Reset,
    /// Delay the response by this long, then serve the request.
    Slow(Duration),
    /// Serve the request, then cut the body in half under the full Content-Length.
    Truncate,
    /// Serve the request, then answer 200 with invalid JSON.
    Malformed,
    /// Answer 429 in one of the odd variants.
    Odd429,
}

impl FaultKind {
    /// The short name used in stats.
    pub fn name(self) -> String {
        match self {
            FaultKind::Status(s) => s.to_string(),
            FaultKind::Reset => "reset".into(),
            FaultKind::Slow(_) => "slow".into(),
            FaultKind::Truncate => "truncate".into(),
            FaultKind::Malformed => "malformed".into(),
            FaultKind::Odd429 => "odd429".into(),
        }
    }
}

/// The faults to inject: kinds with their shares of requests.
///
/// # Spec syntax
///
/// ```text
/// item[,item...]
/// item:  KIND=SHARE[:ARG]   SHARE is the fraction of requests (0..=1) that get KIND
///        token              also inject faults on the token endpoint
///        seed=N             the fault seed (default: the emulator's seed)
/// KIND:  500, 502, 503, 504, 408 ... any HTTP status 400-599: that status with an error envelope
///        reset              the connection is closed without any response (not even a status line)
///        slow[:DUR]         the response is delayed by DUR (default 2s), then served normally
///        truncate           the request is served, but the body is cut in half under a
///                           Content-Length that declares the whole body
///        malformed          the request is served, then answered 200 with invalid JSON
///        odd429             a 429 in an unusual variant (no body, a text body, an HTTP-date
///                           Retry-After, decimal Retry-After, retry-after-ms,
///                           x-ms-retry-after-ms, a capitalised "Maximum allowed" message,
///                           a day-long TimeSpan)
/// ```
///
/// Example: `500=0.05,503=0.05,reset=0.02,slow=0.02:2s,truncate=0.02,malformed=0.02,odd429=0.02`.
/// The shares must add up to at most 1. Each eligible request takes the next number of a
/// sequence; its fault is a pure function of (seed, number), so the same seed and the same
/// sequence of requests give the same faults. `POST /_emulator/reset` restarts the sequence.
///
/// `500`, `503`, `reset` and `odd429` answer before the request reaches the service: the
/// call is not counted against quotas and has no effect. `slow`, `truncate` and `malformed`
/// serve the request (it is counted, a PATCH is applied) and then spoil the response, so
/// clients must treat retries of updates as possibly applied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSpec {
    /// Each kind with the fraction of requests that get it, in spec order.
    pub faults: Vec<(FaultKind, f64)>,
    /// Also inject faults on the token endpoint.
    pub include_token: bool,
    /// The fault seed; `None` uses the emulator's seed.
    pub seed: Option<u64>,
}

/// A fault spec that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault spec item `{item}`: {reason}")]
pub struct FaultSpecError {
    /// The item as written.
    pub item: String,
    /// What was wrong.
    pub reason: String,
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The kind.
    pub kind: FaultKind,
    /// Which variant (for `odd429`), from the same seeded draw.
    pub variant: u32,
}

/// The number of `odd429` variants.
pub const ODD_429_VARIANTS: u32 = 8;

impl FaultSpec {
    /// No faults.
    pub fn none() -> FaultSpec {
        FaultSpec::default()
    }

    /// Parses a spec (see the module docs).
    pub fn parse(spec: &str) -> Result<FaultSpec, FaultSpecError> {
        let mut out = FaultSpec::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let err = |reason: &str| FaultSpecError {
                item: item.to_owned(),
                reason: reason.to_owned(),
            };
            if item.eq_ignore_ascii_case("token") {
                out.include_token = true;
                continue;
            }
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| err("expected KIND=SHARE, such as 500=0.05"))?;
            let key = key.trim().to_ascii_lowercase();
            if key == "seed" {
                out.seed = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| err("the seed must be a whole number"))?,
                );
                continue;
            }
            if key == "token" {
                out.include_token = matches!(value.trim(), "1" | "true" | "on" | "yes");
                continue;
            }
            let (share, arg) = match value.split_once(':') {
                Some((s, a)) => (s.trim(), Some(a.trim())),
                None => (value.trim(), None),
            };
            let share: f64 = share
                .parse()
                .map_err(|_| err("the share must be a number between 0 and 1"))?;
            if !(0.0..=1.0).contains(&share) || !share.is_finite() {
                return Err(err("the share must be between 0 and 1"));
            }
            let kind = match key.as_str() {
                "reset" => FaultKind::Reset,
                "slow" => FaultKind::Slow(match arg {
                    Some(a) => parse_duration(a).map_err(|e| err(&e.to_string()))?,
                    None => Duration::from_secs(2),
                }),
                "truncate" => FaultKind::Truncate,
                "malformed" => FaultKind::Malformed,
                "odd429" => FaultKind::Odd429,
                k => match k.parse::<u16>() {
                    Ok(s) if (400..=599).contains(&s) => FaultKind::Status(s),
                    _ => {
                        return Err(err(
                        "unknown fault (use an HTTP status 400-599, reset, slow, truncate, malformed or odd429)",
                    ))
                    }
                },
            };
            if arg.is_some() && !matches!(kind, FaultKind::Slow(_)) {
                return Err(err("only slow takes an argument (slow=0.02:2s)"));
            }
            out.faults.push((kind, share));
        }
        let total: f64 = out.faults.iter().map(|(_, s)| s).sum();
        if total > 1.0 + 1e-9 {
            return Err(FaultSpecError {
                item: spec.to_owned(),
                reason: format!("the shares add up to {total}, more than 1"),
            });
        }
        Ok(out)
    }

    /// Whether any fault is configured.
    pub fn is_empty(&self) -> bool {
        self.faults.iter().all(|(_, s)| *s <= 0.0)
    }

    /// The fault of the request numbered `n` (from 0), if any: a pure function of the
    /// seed and `n`.
    pub fn decide(&self, seed: u64, n: u64) -> Option<Fault> {
        if self.is_empty() {
            return None;
        }
        let h = mix(mix(seed ^ 0xFA01_7FA0_17FA_017F) ^ n);
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        let variant = (mix(h) % u64::from(ODD_429_VARIANTS)) as u32;
        let mut acc = 0.0;
        for (kind, share) in &self.faults {
            acc += share;
            if u < acc {
                return Some(Fault {
                    kind: *kind,
                    variant,
                });
            }
        }
        None
    }
}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultSpec::parse(s)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .faults
            .iter()
            .map(|(k, s)| match k {
                FaultKind::Slow(d) => {
                    format!("slow={s}:{}", defender_core::limits::format_duration(*d))
                }
                k => format!("{}={s}", k.name()),
            })
            .collect();
        if self.include_token {
            parts.push("token".into());
        }
        if let Some(seed) = self.seed {
            parts.push(format!("seed={seed}"));
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_spec() {
        let f = FaultSpec::parse(
            "500=0.05,503=0.05,reset=0.02,slow=0.02:2s,truncate=0.02,malformed=0.02,odd429=0.02",
        )
        .unwrap();
        assert_eq!(f.faults.len(), 7);
        assert_eq!(f.faults[3].0, FaultKind::Slow(Duration::from_secs(2)));
        assert_eq!(FaultSpec::parse(&f.to_string()).unwrap(), f);
        assert!(FaultSpec::parse("500=0.7,503=0.7").is_err());
        assert!(FaultSpec::parse("boom=0.1").is_err());
        assert!(FaultSpec::parse("200=0.1").is_err());
        assert!(FaultSpec::parse("500=x").is_err());
        assert!(FaultSpec::parse("500").is_err());
        assert!(FaultSpec::parse("500=0.1:2s").is_err());
        let t = FaultSpec::parse("token,seed=9,reset=1").unwrap();
        assert!(t.include_token);
        assert_eq!(t.seed, Some(9));
    }

    #[test]
    fn decisions_are_reproducible_and_follow_the_shares() {
        let f = FaultSpec::parse("500=0.25,reset=0.25").unwrap();
        let a: Vec<_> = (0..1000).map(|n| f.decide(7, n)).collect();
        let b: Vec<_> = (0..1000).map(|n| f.decide(7, n)).collect();
        assert_eq!(a, b);
        let c: Vec<_> = (0..1000).map(|n| f.decide(8, n)).collect();
        assert_ne!(a, c);
        let faults = a.iter().filter(|x| x.is_some()).count();
        assert!((400..600).contains(&faults), "{faults}");
        assert_eq!(FaultSpec::none().decide(1, 1), None);
    }
}
