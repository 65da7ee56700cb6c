//! `defender limits`: the effective limits, which need no credentials; with --emulator
//! also this process's usage, with --quota-store the usage every process of the app
//! shares. As text, or as one JSON document.

use std::io::Write;
use std::time::{Duration, Instant};

use defender_async::Client;
use defender_core::engine::{UsageSource, DEFAULT_MARGIN};
use defender_core::limits::{format_duration, CallLimit, Limits};
use defender_core::{ApiGroup, Surface};
use defender_redis::{AsyncRedisQuotaStore, AsyncSharedQuota, Binding, StoreConfig};
use serde_json::{json, Map, Value};

use crate::output::{Format, OutputArgs};
use crate::Failure;

/// What `defender limits` shows, built as text lines and as JSON in one pass.
struct Report {
    lines: Vec<String>,
    json: Map<String, Value>,
}

impl Report {
    fn line(&mut self, l: String) {
        self.lines.push(l);
    }
}

/// Writes the limits of `surface`; `client` (an emulator's) adds its usage, `shared`
/// (a store and the tenant and app it counts for) the usage shared through the store.
pub(crate) async fn show(
    out: &OutputArgs,
    surface: Surface,
    limits: &Limits,
    client: Option<&Client>,
    shared: Option<(StoreConfig, (String, String))>,
) -> Result<(), Failure> {
    // Text (`-o table`, the default, or `-o text`), or JSON; rows and columns do not fit.
    let format = out.format(Format::Table);
    if matches!(format, Format::Csv | Format::Tsv) {
        return Err(Failure::usage(
            "defender limits writes text (-o table) or JSON (-o json, -o ndjson)",
        ));
    }
    let mut r = Report {
        lines: vec![format!("API: {surface}")],
        json: Map::new(),
    };
    r.json.insert("api".into(), json!(surface.name()));
    let mut groups = Map::new();
    for group in ApiGroup::ALL {
        let g = limits.group(group);
        let calls: Vec<String> = g.calls.iter().map(|c| c.to_string()).collect();
        r.line(format!(
            "{group}: calls {}",
            if calls.is_empty() {
                "unlimited".into()
            } else {
                calls.join(", ")
            }
        ));
        if !g.runtime.is_empty() {
            let rt: Vec<String> = g.runtime.iter().map(|r| r.to_string()).collect();
            r.line(format!("{group}: {}", rt.join(", ")));
        }
        if let Some(rows) = g.rows {
            r.line(format!("{group}: at most {rows} rows per result"));
        }
        if let Some(l) = g.lookback {
            r.line(format!("{group}: data of the last {}", format_duration(l)));
        }
        groups.insert(
            group.to_string(),
            json!({
                "calls": g.calls.iter().map(call_json).collect::<Vec<_>>(),
                "runtime": g.runtime.iter().map(|l| json!({
                    "budget": format_duration(l.budget),
                    "per": format_duration(l.per),
                })).collect::<Vec<_>>(),
                "rows": g.rows,
                "lookback": g.lookback.map(format_duration),
            }),
        );
    }
    r.json.insert("groups".into(), Value::Object(groups));
    r.line(format!("spec: {}", limits.to_spec()));
    r.json.insert("spec".into(), json!(limits.to_spec()));
    if let Some(client) = client {
        let mut usage = Map::new();
        for u in client.quota().await? {
            r.line(format!(
                "usage {}: safety margin {}",
                u.group,
                format_duration(u.margin)
            ));
            let mut windows = Vec::new();
            for w in &u.windows {
                r.line(format!("usage {}: {} of {}", u.group, w.used, w.limit));
                let mut v = call_json(&w.limit);
                v["used"] = json!(w.used);
                windows.push(v);
            }
            usage.insert(u.group.to_string(), Value::Array(windows));
            r.json
                .insert("margin".into(), json!(format_duration(u.margin)));
        }
        r.json.insert("usage".into(), Value::Object(usage));
    }
    if let Some((config, (tenant, app))) = shared {
        shared_usage(&mut r, limits, config, &tenant, &app).await?;
    }
    let (mut w, _) = out.writer()?;
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut w, &r.json).map_err(|e| Failure::output(e.into()))?
        }
        Format::Ndjson => {
            serde_json::to_writer(&mut w, &r.json).map_err(|e| Failure::output(e.into()))?
        }
        _ => {
            for l in &r.lines {
                writeln!(w, "{l}").map_err(Failure::output)?;
            }
        }
    }
    if matches!(format, Format::Json | Format::Ndjson) {
        writeln!(w).map_err(Failure::output)?;
    }
    w.flush().map_err(Failure::output)
}

fn call_json(c: &CallLimit) -> Value {
    json!({ "max": c.max, "per": format_duration(c.per) })
}

/// The store `config` names, bound to one app as the clients bind it (with the default
/// margin, which the clients here keep): ask it `usage()` as `Client::quota` would.
pub(crate) fn shared_quota(
    config: StoreConfig,
    limits: &Limits,
    tenant: &str,
    app: &str,
) -> Result<AsyncSharedQuota, Failure> {
    let store = AsyncRedisQuotaStore::open(config).map_err(store_failure)?;
    let binding = Binding::new(tenant, app, limits.clone(), DEFAULT_MARGIN);
    Ok(AsyncSharedQuota::new(store, binding))
}

/// A store that cannot answer: exit 6, as a call failing on it would.
pub(crate) fn store_failure(e: defender_redis::StoreError) -> Failure {
    Failure {
        code: 6,
        message: format!("{e}."),
    }
}

/// How long until `t` from `now` (zero when it is past or none).
pub(crate) fn left(t: Option<Instant>, now: Instant) -> Duration {
    t.map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
}

/// The usage every process of the app shares: the store bound to the app is asked, as a
/// client with that store would ask it (`Client::quota`).
async fn shared_usage(
    r: &mut Report,
    limits: &Limits,
    config: StoreConfig,
    tenant: &str,
    app: &str,
) -> Result<(), Failure> {
    let url = config.redacted_url();
    let quota = shared_quota(config, limits, tenant, app)?;
    r.line(format!("shared quota: {url} (tenant {tenant}, app {app})"));
    // Its margin is the widest the processes published, not this one's.
    let usage = quota.usage().await.map_err(store_failure)?;
    let now = Instant::now();
    let left = |t: Option<Instant>| left(t, now);
    let mut groups = Map::new();
    for u in usage {
        let group = u.group;
        let fallback = u.source == UsageSource::StoreFallback;
        if fallback {
            r.line(format!(
                "shared {group}: the store is unreachable; this process's own count follows"
            ));
        }
        let mut calls = Vec::new();
        for w in &u.windows {
            let next_free_in = left(Some(w.next_free));
            let next = if next_free_in.is_zero() {
                "a slot is free now".to_owned()
            } else {
                format!("next free slot in {}", format_duration(next_free_in))
            };
            r.line(format!(
                "shared {group}: {} of {} ({next})",
                w.used, w.limit
            ));
            let mut v = call_json(&w.limit);
            v["used"] = json!(w.used);
            v["next_free_in"] = json!(format_duration(next_free_in));
            calls.push(v);
        }
        let mut runtime = Vec::new();
        for (limit, charged) in &u.runtime {
            r.line(format!(
                "shared {group}: {} of running time charged in {limit}",
                format_duration(*charged),
            ));
            runtime.push(json!({
                "charged": format_duration(*charged),
                "budget": format_duration(limit.budget),
                "per": format_duration(limit.per),
            }));
        }
        if u.in_flight > 0 {
            r.line(format!(
                "shared {group}: {} queries in flight hold {}",
                u.in_flight,
                format_duration(u.runtime_reserved)
            ));
        }
        // The widest margin a process published while its calls count (zero: none has).
        if !u.margin.is_zero() {
            r.line(format!(
                "shared {group}: windows widened by {} (the widest margin of the processes)",
                format_duration(u.margin)
            ));
        }
        let (server_wait, runtime_wait) = (left(u.blocked_until), left(u.runtime_blocked_until));
        if !server_wait.is_zero() {
            r.line(format!(
                "shared {group}: the server asked to wait {} more",
                format_duration(server_wait)
            ));
        }
        if !runtime_wait.is_zero() {
            r.line(format!(
                "shared {group}: running-time budget spent for {} more",
                format_duration(runtime_wait)
            ));
        }
        let span = |d: Duration| json!(format_duration(d));
        groups.insert(
            group.to_string(),
            json!({
                "store_unreachable": fallback,
                "calls": calls,
                "runtime": runtime,
                "in_flight": u.in_flight,
                "margin": span(u.margin),
                "reserved": span(u.runtime_reserved),
                "server_wait": span(server_wait),
                "runtime_wait": span(runtime_wait),
            }),
        );
    }
    r.json.insert(
        "shared".into(),
        json!({ "store": url, "tenant": tenant, "app": app, "groups": groups }),
    );
    Ok(())
}
