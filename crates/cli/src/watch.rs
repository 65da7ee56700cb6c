//! `defender quota watch`: the quota as it is spent, redrawn once a second. It reads the
//! shared store (`--quota-store`: every process of the app, and which named process took
//! what) or an emulator (`GET /_emulator/stats`: every app it has seen). On a terminal
//! each frame replaces the last; elsewhere (a pipe, a file) frames are plain lines,
//! one block a second, and `--once` writes one frame and ends.
//!
//! A frame is built as data first ([`Frame`]) and then drawn, so what is shown does not
//! depend on where it goes.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use defender_core::engine::{GroupUsage, UsageSource};
use defender_core::limits::format_duration;
use defender_core::timefmt::{format_rfc3339, parse_timespan};
use defender_emulator::Stats;
use defender_redis::AsyncSharedQuota;

use crate::limits::{left, store_failure};
use crate::Failure;

/// Where the numbers come from.
pub(crate) enum Source {
    /// The shared store, bound to one app.
    Store {
        /// The store.
        quota: Box<AsyncSharedQuota>,
        /// The store's URL (without credentials), tenant and app, for the title.
        title: String,
    },
    /// An emulator's stats.
    Emulator {
        /// An HTTP client for the stats.
        http: reqwest::Client,
        /// The emulator's base URL.
        url: String,
    },
}

/// The width of a bar, in characters.
const BAR: usize = 24;

/// Runs the view until Ctrl-C, or draws one frame with `once`.
pub(crate) async fn run(source: Source, once: bool) -> Result<(), Failure> {
    let terminal = std::io::stdout().is_terminal() && !once;
    let mut throttled = Throttled::default();
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    loop {
        let frame = match &source {
            Source::Store { quota, title } => {
                let usage = quota.usage().await.map_err(store_failure)?;
                store_frame(title, &usage, Instant::now(), SystemTime::now())
            }
            Source::Emulator { http, url } => {
                let stats = emulator_stats(http, url).await?;
                throttled.sample(&stats, Instant::now());
                emulator_frame(
                    url,
                    &stats,
                    &throttled,
                    started.elapsed(),
                    SystemTime::now(),
                )
            }
        };
        let text = frame.draw();
        let written = if terminal {
            // Home, each line over the last frame's (erasing what is left of it), then
            // everything below: no blank flash between frames.
            let mut screen = String::from("\x1b[H");
            for line in text.lines() {
                screen.push_str(line);
                screen.push_str("\x1b[K\n");
            }
            screen.push_str("\x1b[J");
            out.write_all(screen.as_bytes())
        } else {
            out.write_all(text.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        };
        written
            .and_then(|()| out.flush())
            .map_err(Failure::output)?;
        if once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn emulator_stats(http: &reqwest::Client, url: &str) -> Result<Stats, Failure> {
    let stats_url = format!("{}/_emulator/stats", url.trim_end_matches('/'));
    let failure = |what: String| Failure {
        code: 6,
        message: format!("could not read {stats_url}: {what}."),
    };
    let resp = http
        .get(&stats_url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| failure(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(failure(format!("status {}", resp.status())));
    }
    let body = resp.bytes().await.map_err(|e| failure(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| failure(format!("not the emulator's stats ({e})")))
}

/// One screen: a title and a block per group.
#[derive(Debug, PartialEq)]
pub(crate) struct Frame {
    title: String,
    at: SystemTime,
    blocks: Vec<Block>,
}

/// One group (of one app, for an emulator that saw several).
#[derive(Debug, PartialEq)]
struct Block {
    name: String,
    bars: Vec<Bar>,
    lines: Vec<String>,
}

/// A window's use against its limit.
#[derive(Debug, PartialEq)]
struct Bar {
    label: String,
    used: f64,
    limit: f64,
    text: String,
}

impl Frame {
    /// The frame as lines of text.
    pub(crate) fn draw(&self) -> String {
        let mut s = format!("{}    {}\n", self.title, clock(self.at));
        if self.blocks.is_empty() {
            s.push_str("nothing counted yet\n");
        }
        for b in &self.blocks {
            s.push_str(&b.name);
            s.push('\n');
            let width = b.bars.iter().map(|x| x.label.len()).max().unwrap_or(0);
            for bar in &b.bars {
                s.push_str(&format!(
                    "  {:<width$} [{}] {}\n",
                    bar.label,
                    fill(bar.used, bar.limit),
                    bar.text
                ));
            }
            for l in &b.lines {
                s.push_str("  ");
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// A bar of [`BAR`] characters: `#` for the part used, `.` for the rest; a window used
/// past its limit (a server that counts differently) is full.
fn fill(used: f64, limit: f64) -> String {
    let share = if limit > 0.0 {
        (used / limit).clamp(0.0, 1.0)
    } else {
        1.0
    };
    // Any use at all shows at least one mark.
    let mut n = (share * BAR as f64).round() as usize;
    if used > 0.0 && n == 0 {
        n = 1;
    }
    format!("{}{}", "#".repeat(n), ".".repeat(BAR - n))
}

/// `HH:MM:SS UTC`.
fn clock(t: SystemTime) -> String {
    let s = format_rfc3339(t);
    match s.get(11..19) {
        Some(hms) => format!("{hms} UTC"),
        None => s,
    }
}

/// `HH:MM:SS UTC (in 12s)`.
fn until(now: SystemTime, wait: Duration) -> String {
    let wait = Duration::from_millis(wait.as_millis().div_ceil(1000) as u64 * 1000);
    format!("{} (in {})", clock(now + wait), format_duration(wait))
}

/// A frame of the shared store's usage (`now` and `wall` read together).
pub(crate) fn store_frame(
    title: &str,
    usage: &[GroupUsage],
    now: Instant,
    wall: SystemTime,
) -> Frame {
    let blocks = usage
        .iter()
        .filter(|u| !u.windows.is_empty() || !u.runtime.is_empty())
        .map(|u| {
            let mut bars = Vec::new();
            let mut lines = Vec::new();
            let mut full: Option<Duration> = None;
            for w in &u.windows {
                bars.push(Bar {
                    label: format!("calls/{}", format_duration(w.limit.per)),
                    used: f64::from(w.used),
                    limit: f64::from(w.limit.max),
                    text: format!("{} of {}", w.used, w.limit.max),
                });
                let wait = left(Some(w.next_free), now);
                if w.used >= w.limit.max && !wait.is_zero() {
                    full = Some(full.map_or(wait, |f| f.max(wait)));
                }
            }
            for (limit, charged) in &u.runtime {
                bars.push(Bar {
                    label: format!("runtime/{}", format_duration(limit.per)),
                    used: charged.as_secs_f64(),
                    limit: limit.budget.as_secs_f64(),
                    text: format!(
                        "{} of {}",
                        format_duration(*charged),
                        format_duration(limit.budget)
                    ),
                });
            }
            let server = left(u.blocked_until, now);
            let runtime = left(u.runtime_blocked_until, now);
            let mut waits = Vec::new();
            if let Some(wait) = full {
                waits.push(format!(
                    "a window is full: calls wait until {}",
                    until(wall, wait)
                ));
            }
            if !server.is_zero() {
                waits.push(format!(
                    "the server's retry time: until {}",
                    until(wall, server)
                ));
            }
            if !runtime.is_zero() {
                waits.push(format!(
                    "running time spent (the server said): until {}",
                    until(wall, runtime)
                ));
            }
            if waits.is_empty() {
                lines.push("waiting: no, a call may go now".to_owned());
            } else {
                lines.extend(waits.into_iter().map(|w| format!("waiting: {w}")));
            }
            if u.in_flight > 0 {
                lines.push(format!(
                    "in flight: {} queries hold {} of running time",
                    u.in_flight,
                    format_duration(u.runtime_reserved)
                ));
            }
            if !u.clients.is_empty() {
                let longest = u
                    .windows
                    .iter()
                    .map(|w| w.limit.per)
                    .max()
                    .unwrap_or_default();
                let who: Vec<String> = u
                    .clients
                    .iter()
                    .map(|(name, calls)| format!("{name} {calls}"))
                    .collect();
                lines.push(format!(
                    "by process (last {}): {}",
                    format_duration(longest),
                    who.join(", ")
                ));
            }
            if u.source == UsageSource::StoreFallback {
                lines
                    .push("the store is unreachable: this process's own fallback count".to_owned());
            }
            Block {
                name: u.group.to_string(),
                bars,
                lines,
            }
        })
        .collect();
    Frame {
        title: format!("shared quota: {title}"),
        at: wall,
        blocks,
    }
}

/// The 429s an emulator answered, sampled once a frame, per (tenant, app, group).
#[derive(Debug, Default)]
pub(crate) struct Throttled {
    samples: HashMap<(String, String, String), VecDeque<(Instant, u64)>>,
}

impl Throttled {
    /// Takes the counters of `stats` at `now`; samples older than an hour go (one just
    /// older stays, as the hour's baseline).
    pub(crate) fn sample(&mut self, stats: &Stats, now: Instant) {
        for k in &stats.keys {
            let s = self
                .samples
                .entry((k.tenant.clone(), k.client_id.clone(), k.group.clone()))
                .or_default();
            s.push_back((now, k.throttled));
            while s.len() > 1 && now.saturating_duration_since(s[1].0) >= HOUR {
                s.pop_front();
            }
        }
    }

    /// 429s of a key within the last hour of watching.
    fn last_hour(&self, key: &(String, String, String)) -> u64 {
        match self.samples.get(key) {
            Some(s) => match (s.front(), s.back()) {
                (Some(first), Some(last)) => last.1.saturating_sub(first.1),
                _ => 0,
            },
            None => 0,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// A frame of an emulator's stats; `watched` is how long this view has been sampling.
pub(crate) fn emulator_frame(
    url: &str,
    stats: &Stats,
    throttled: &Throttled,
    watched: Duration,
    wall: SystemTime,
) -> Frame {
    let apps: std::collections::BTreeSet<(&str, &str)> = stats
        .keys
        .iter()
        .map(|k| (k.tenant.as_str(), k.client_id.as_str()))
        .collect();
    let blocks = stats
        .keys
        .iter()
        .map(|k| {
            let mut bars = Vec::new();
            for w in &k.windows {
                let per = parse_timespan(&w.period).map_or(w.period.clone(), format_duration);
                let (label, text) = if w.kind == "runtime" {
                    (
                        format!("runtime/{per}"),
                        format!(
                            "{} of {}",
                            format_duration(Duration::from_secs_f64(w.used.max(0.0))),
                            format_duration(Duration::from_secs_f64(w.limit.max(0.0)))
                        ),
                    )
                } else {
                    (format!("calls/{per}"), format!("{} of {}", w.used, w.limit))
                };
                bars.push(Bar {
                    label,
                    used: w.used,
                    limit: w.limit,
                    text,
                });
            }
            let key = (k.tenant.clone(), k.client_id.clone(), k.group.clone());
            let hour = throttled.last_hour(&key);
            let span = if watched >= HOUR {
                "in the last hour".to_owned()
            } else {
                format!(
                    "in the last {} (watched so far)",
                    format_duration(Duration::from_secs(watched.as_secs().max(1)))
                )
            };
            let lines = vec![
                format!("requests: {}, faults injected: {}", k.requests, k.faults),
                format!(
                    "429s: {hour} {span}, {} since the emulator started",
                    k.throttled
                ),
            ];
            let name = if apps.len() > 1 {
                format!("{} (tenant {}, app {})", k.group, k.tenant, k.client_id)
            } else {
                k.group.clone()
            };
            Block { name, bars, lines }
        })
        .collect();
    Frame {
        title: format!("emulator: {url} ({} tokens issued)", stats.tokens_issued),
        at: wall,
        blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_core::limits::{ApiGroup, CallLimit};
    use defender_core::quota::WindowUsage;
    use defender_emulator::{KeyStats, WindowStats};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn bars_fill_by_share_and_show_any_use() {
        assert_eq!(fill(0.0, 10.0), ".".repeat(BAR));
        assert_eq!(fill(10.0, 10.0), "#".repeat(BAR));
        assert_eq!(fill(12.0, 10.0), "#".repeat(BAR));
        assert_eq!(
            fill(5.0, 10.0),
            format!("{}{}", "#".repeat(12), ".".repeat(12))
        );
        assert_eq!(fill(1.0, 1000.0).matches('#').count(), 1);
    }

    #[test]
    fn a_store_frame_shows_windows_waits_and_processes() {
        let now = Instant::now();
        let usage = GroupUsage {
            group: ApiGroup::Incidents,
            windows: vec![
                WindowUsage {
                    limit: CallLimit {
                        max: 5,
                        per: Duration::from_secs(60),
                    },
                    used: 5,
                    next_free: now + Duration::from_millis(11_200),
                },
                WindowUsage {
                    limit: CallLimit {
                        max: 100,
                        per: Duration::from_secs(3600),
                    },
                    used: 7,
                    next_free: now,
                },
            ],
            blocked_until: None,
            runtime: Vec::new(),
            runtime_reserved: Duration::ZERO,
            runtime_blocked_until: None,
            in_flight: 0,
            margin: Duration::from_millis(500),
            active_calls: 0,
            clients: vec![("sync".into(), 4), ("triage".into(), 3)],
            source: UsageSource::Store,
        };
        let text = store_frame("redis://h", &[usage], now, at(3600 * 10)).draw();
        let expected = format!(
            "shared quota: redis://h    10:00:00 UTC\n\
             incidents\n  \
             calls/1m [{}] 5 of 5\n  \
             calls/1h [{}] 7 of 100\n  \
             waiting: a window is full: calls wait until 10:00:12 UTC (in 12s)\n  \
             by process (last 1h): sync 4, triage 3\n",
            "#".repeat(BAR),
            "#".repeat(2) + &".".repeat(BAR - 2),
        );
        assert_eq!(text, expected);
    }

    fn stats(throttled: u64) -> Stats {
        Stats {
            tokens_issued: 1,
            keys: vec![KeyStats {
                tenant: "t".into(),
                client_id: "a".into(),
                group: "hunting".into(),
                requests: 9,
                throttled,
                windows: vec![
                    WindowStats {
                        kind: "calls".into(),
                        period: "00:01:00".into(),
                        limit: 4.0,
                        used: 2.0,
                    },
                    WindowStats {
                        kind: "runtime".into(),
                        period: "01:00:00".into(),
                        limit: 600.0,
                        used: 61.5,
                    },
                ],
                ..KeyStats::default()
            }],
            ..Stats::default()
        }
    }

    #[test]
    fn an_emulator_frame_counts_429s_over_the_hour_watched() {
        let t0 = Instant::now();
        let mut th = Throttled::default();
        th.sample(&stats(3), t0);
        th.sample(&stats(5), t0 + Duration::from_secs(1800));
        th.sample(&stats(9), t0 + Duration::from_secs(3600 + 1800));
        // The hour before the last sample: 9 - 5.
        let frame = emulator_frame("http://e", &stats(9), &th, HOUR * 2, at(0));
        let text = frame.draw();
        assert!(
            text.contains("429s: 4 in the last hour, 9 since the emulator started"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "calls/1m   [{}{}] 2 of 4",
                "#".repeat(12),
                ".".repeat(12)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("runtime/1h [##{}]", ".".repeat(BAR - 2)))
                && text.contains(" 1m1s500ms of 10m"),
            "{text}"
        );
        let early = emulator_frame("http://e", &stats(9), &th, Duration::from_secs(90), at(0));
        assert!(early.draw().contains("in the last 1m30s (watched so far)"));
    }
}
