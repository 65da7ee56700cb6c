//! The dashboard (`GET /`, `/_emulator/`, `/_emulator/dashboard`) and the stats it draws
//! from: the ring of recent requests, the 429 marks and the admitted calls' times.
//!
//! `the_dashboard_shows_what_stats_says_in_a_real_browser` loads the page in headless
//! Chromium (installed by `.ci/run`) while quotas are saturated, reads the DOM after the
//! page's script ran, and checks every number it shows against `GET /_emulator/stats`
//! read at the same moment (the emulator's clock is manual and nothing else calls it, so
//! the numbers cannot move in between). It writes `dashboard.png` under the target
//! directory. Where no Chromium is found it prints why and checks nothing else.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use defender_emulator::{App, FaultSpec, Stats, ALL_PERMISSIONS};
use reqwest::StatusCode;

const PLAYBOOK_TENANT: &str = "contoso";
const PLAYBOOK_CLIENT: &str = "soc-playbook";
const PLAYBOOK_SECRET: &str = "playbook-secret";

async fn stats(env: &Env) -> Stats {
    let r = env
        .http
        .get(format!("{}/_emulator/stats", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn page(env: &Env, path: &str) -> (StatusCode, String, String) {
    let r = env
        .http
        .get(format!("{}{path}", env.base))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn the_dashboard_is_one_offline_page_and_counts_as_no_request() {
    let env = Env::start(small()).await;
    let mut bodies = Vec::new();
    for path in ["/", "/_emulator", "/_emulator/", "/_emulator/dashboard"] {
        let r = env
            .http
            .get(format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        // The browser is told to load nothing from elsewhere.
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        bodies.push(r.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let html = &bodies[0];
    assert!(html.contains("fetch(\"/_emulator/stats\""));
    // No external asset: every src/href is inline (data:) and no URL has a scheme.
    for needle in [
        "http://", "https://", "src=\"/", "href=\"/", "//cdn", "@import",
    ] {
        let ok = html
            .match_indices(needle)
            .all(|(i, _)| html[i..].starts_with("http://www.w3.org/2000/svg"));
        assert!(ok, "the page refers to something outside it: {needle}");
    }
    // The dashboard does not count: it is not an API request.
    assert_eq!(stats(&env).await.requests, 0);
    assert!(stats(&env).await.recent.is_empty());

    // Only GET: anything else at the root stays the API's 404, and counts.
    let r = env
        .http
        .post(format!("{}/", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = env
        .http
        .post(format!("{}/_emulator/dashboard", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let s = stats(&env).await;
    assert_eq!(s.requests, 1);
    assert_eq!(s.recent.len(), 1);
    assert_eq!(
        (s.recent[0].method.as_str(), s.recent[0].path.as_str()),
        ("POST", "/")
    );
    assert_eq!(s.recent[0].status, 404);
    assert_eq!(s.recent[0].group, None);
    let (status, ct, _) = page(&env, "/_emulator/nothing").await;
    assert_eq!(
        (status, ct.as_str()),
        (StatusCode::NOT_FOUND, "application/json; charset=utf-8")
    );
}

#[tokio::test]
async fn the_stats_keep_the_last_requests_the_hours_429s_and_the_admitted_calls() {
    let env = Env::start(
        small()
            .limits("2021,incidents.calls=3/1m".parse().unwrap())
            .faults(FaultSpec::parse("500=0.25,seed=3").unwrap()),
    )
    .await;
    let token = env.token().await;
    let clock = env.clock();
    let mut statuses = Vec::new();
    for _ in 0..230 {
        let r = env.get(&token, "/api/incidents?$top=1").await;
        statuses.push(r.status().as_u16());
        clock.advance(Duration::from_secs(5));
    }
    let s = stats(&env).await;
    // 230 calls and the token request; the ring keeps the last 200, oldest first.
    assert_eq!(s.requests, 231);
    assert_eq!(s.recent.len(), 200);
    let kept: Vec<u16> = s.recent.iter().map(|r| r.status).collect();
    assert_eq!(kept, statuses[30..]);
    assert!(s.recent.iter().all(|r| r.method == "GET"
        && r.path == "/api/incidents"
        && r.group.as_deref() == Some("incidents")
        && r.latency_ms >= 0.0));
    assert!(s
        .recent
        .windows(2)
        .all(|w| w[0].at_unix_ms + 5000 == w[1].at_unix_ms));
    assert_eq!(s.recent.last().unwrap().at_unix_ms, s.now_unix_ms - 5000);
    // Every fault is in the ring with its kind, and only faults are.
    let faulted = s.recent.iter().filter(|r| r.fault.is_some()).count() as u64;
    assert!(faulted > 0);
    assert!(s
        .recent
        .iter()
        .all(|r| (r.fault.as_deref() == Some("500")) == (r.status == 500)));
    assert_eq!(
        s.faults,
        statuses.iter().filter(|&&c| c == 500).count() as u64
    );

    // The 429 marks: one per throttled call, for the key, within the last hour.
    assert!(s.throttled > 0);
    assert_eq!(s.throttles.len() as u64, s.throttled);
    assert!(s.throttles.iter().all(|m| m.tenant == "emulator"
        && m.client_id == "emulator-client"
        && m.group == "incidents"
        && m.kind == "calls"));
    let marked: Vec<i64> = s.throttles.iter().map(|m| m.at_unix_ms).collect();
    let from_ring: Vec<i64> = s
        .recent
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.at_unix_ms)
        .collect();
    assert!(marked.ends_with(&from_ring), "{marked:?} / {from_ring:?}");

    // The admitted calls' times give the window's usage now, as the emulator counts it.
    let key = &s.keys[0];
    let admitted = &key.admitted_unix_ms;
    let per_minute = key.windows.iter().find(|w| w.period == "00:01:00").unwrap();
    assert_eq!(
        admitted.len(),
        statuses.iter().filter(|&&c| c == 200).count()
    );
    let minute = admitted
        .iter()
        .filter(|&&t| t > s.now_unix_ms - 60_000 && t <= s.now_unix_ms)
        .count();
    assert_eq!(per_minute.used, minute as f64);
    assert_eq!(per_minute.limit, 3.0);

    // An hour later the marks are gone; the counters stay.
    clock.advance(Duration::from_secs(3600));
    let later = stats(&env).await;
    assert!(later.throttles.is_empty());
    assert_eq!(later.throttled, s.throttled);

    // A reset forgets the ring and the marks too.
    assert_eq!(
        env.control("/_emulator/reset", "").await.status(),
        StatusCode::OK
    );
    let after = stats(&env).await;
    assert!(after.recent.is_empty());
    assert!(after.throttles.is_empty());
    assert!(after.keys.is_empty());
}

#[tokio::test]
async fn the_admitted_calls_kept_are_the_last_thousand() {
    let env = Env::start(small().limits("incidents.calls=100000/1h".parse().unwrap())).await;
    let token = env.token().await;
    let clock = env.clock();
    for _ in 0..1005 {
        let r = env.get(&token, "/api/incidents?$top=1").await;
        assert_eq!(r.status(), StatusCode::OK);
        clock.advance(Duration::from_millis(10));
    }
    let s = stats(&env).await;
    let admitted = &s.keys[0].admitted_unix_ms;
    assert_eq!(admitted.len(), 1000);
    // The oldest five went; the newest is the last call.
    assert_eq!(admitted[0], START_MS + 5 * 10);
    assert_eq!(*admitted.last().unwrap(), START_MS + 1004 * 10);
    let hour = s.keys[0].windows.iter().find(|w| w.period == "01:00:00");
    assert_eq!(hour.unwrap().used, 1005.0);
}

// ---------------------------------------------------------------------------------------
// The browser

/// The Chromium to drive: `$CHROMIUM`, else the first of the usual names on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs headless Chromium with `args` and a private profile, and returns its stdout;
/// kills it after `limit`.
fn run_chromium(bin: &Path, profile: &Path, args: &[String], limit: Duration) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium can be waited for") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    let err = errors.join().unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {err}");
    out
}

/// A start tag of the dumped DOM: where it is, its name and attributes.
#[derive(Debug)]
struct Tag {
    at: usize,
    name: String,
    attrs: BTreeMap<String, String>,
    /// The text up to the next tag.
    text: String,
}

impl Tag {
    fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).map_or_else(
            || panic!("<{}> has no {name}: {self:?}", self.name),
            String::as_str,
        )
    }

    fn has_class(&self, class: &str) -> bool {
        self.attrs
            .get("class")
            .is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }

    fn num(&self, name: &str) -> f64 {
        let v = self.attr(name);
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The start tags of serialised HTML (as Chromium's `--dump-dom` writes it: attribute
/// values in double quotes, `"` and `&` escaped). Enough for the page we wrote.
fn tags(html: &str) -> Vec<Tag> {
    let mut out = Vec::new();
    let b = html.as_bytes();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let at = i + off;
        i = at + 1;
        if !b.get(i).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-') {
            j += 1;
        }
        let name = html[i..j].to_ascii_lowercase();
        let mut attrs = BTreeMap::new();
        loop {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= b.len() || b[j] == b'>' || b[j] == b'/' {
                break;
            }
            let k = j;
            while j < b.len() && !b"= >/".contains(&b[j]) && !b[j].is_ascii_whitespace() {
                j += 1;
            }
            let key = html[k..j].to_ascii_lowercase();
            let mut value = String::new();
            if b.get(j) == Some(&b'=') && b.get(j + 1) == Some(&b'"') {
                let end = html[j + 2..].find('"').expect("a closed attribute") + j + 2;
                value = unescape(&html[j + 2..end]);
                j = end + 1;
            }
            attrs.insert(key, value);
        }
        let close = html[j..].find('>').map_or(html.len(), |c| j + c + 1);
        let next = html[close..].find('<').map_or(html.len(), |c| close + c);
        out.push(Tag {
            at,
            name,
            attrs,
            text: unescape(&html[close..next]),
        });
        i = close;
    }
    out
}

fn by_id<'a>(tags: &'a [Tag], id: &str) -> &'a Tag {
    tags.iter()
        .find(|t| t.attrs.get("id").is_some_and(|v| v == id))
        .unwrap_or_else(|| panic!("no element #{id} in the page"))
}

/// Drives a saturating workload: the built-in app reads incidents twice and hunts once
/// every 10 s, with a burst of hunts every half minute; a playbook app of another tenant
/// reads alerts, with a burst in the fifth minute. Seeded 500s fall on a few calls.
async fn saturate(env: &Env) {
    let token = env.token().await;
    let playbook = env
        .token_of(PLAYBOOK_TENANT, PLAYBOOK_CLIENT, PLAYBOOK_SECRET)
        .await;
    let clock = env.clock();
    for step in 0..48 {
        for _ in 0..2 {
            env.get(&token, "/api/incidents?$top=1").await;
        }
        let hunts = if step % 3 == 0 { 4 } else { 1 };
        for _ in 0..hunts {
            env.hunt(&token, XDR_HUNT, "DeviceProcessEvents | take 5")
                .await;
        }
        let alerts = if step == 30 { 14 } else { 1 };
        for _ in 0..alerts {
            env.get(&playbook, "/api/alerts?$top=1").await;
        }
        clock.advance(Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_stats_says_in_a_real_browser() {
    let Some(bin) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium found (set CHROMIUM or install Debian's chromium; .ci/run does)"
        );
        return;
    };
    let env = Env::start(
        small()
            .limits(
                "2021,incidents.calls=10/1m,hunting.calls=5/1m,alerts.calls=8/1m"
                    .parse()
                    .unwrap(),
            )
            .faults(FaultSpec::parse("500=0.04,seed=11").unwrap())
            .app(App::new(
                PLAYBOOK_TENANT,
                PLAYBOOK_CLIENT,
                PLAYBOOK_SECRET,
                &ALL_PERMISSIONS,
            )),
    )
    .await;
    saturate(&env).await;

    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = target.join(format!("dashboard-chromium-{}", std::process::id()));
    let url = format!("{}/", env.base);
    let dump_args = vec![
        "--virtual-time-budget=3000".to_owned(),
        "--window-size=1280,1600".to_owned(),
        "--dump-dom".to_owned(),
        url.clone(),
    ];
    let (b, p) = (bin.clone(), profile.clone());
    let dom = tokio::task::spawn_blocking(move || {
        run_chromium(&b, &p, &dump_args, Duration::from_secs(120))
    })
    .await
    .unwrap();
    // The clock is frozen and nothing else calls the emulator: these are the numbers the
    // page read.
    let s = stats(&env).await;

    assert!(s.throttled > 0, "the workload must hit the quotas");
    let t = tags(&dom);
    let body = t.iter().find(|t| t.name == "body").expect("a body");
    assert_eq!(body.attr("data-ready"), "1", "the page never drew: {dom}");
    assert!(body.num("data-polls") >= 1.0);
    assert_eq!(by_id(&t, "clock").num("data-now") as i64, s.now_unix_ms);

    for (id, attr, want) in [
        ("total-requests", "data-requests", s.requests),
        ("total-throttled", "data-throttled", s.throttled),
        ("total-faults", "data-faults", s.faults),
        ("total-tokens", "data-tokens", s.tokens_issued),
    ] {
        let e = by_id(&t, id);
        assert_eq!(e.num(attr) as u64, want, "#{id}");
        assert_eq!(e.text, want.to_string(), "#{id} shows");
    }

    // A chart per (tenant, app, group), with its counters, its windows and its 429s.
    let sections: Vec<&Tag> = t.iter().filter(|t| t.has_class("key")).collect();
    assert_eq!(sections.len(), s.keys.len());
    assert_eq!(s.keys.len(), 3, "{:?}", s.keys);
    for k in &s.keys {
        let i = sections
            .iter()
            .position(|e| {
                e.attr("data-tenant") == k.tenant
                    && e.attr("data-client") == k.client_id
                    && e.attr("data-group") == k.group
            })
            .unwrap_or_else(|| panic!("no chart for {} {} {}", k.tenant, k.client_id, k.group));
        let sec = sections[i];
        let end = sections.get(i + 1).map_or(usize::MAX, |n| n.at);
        let inside: Vec<&Tag> = t.iter().filter(|e| e.at > sec.at && e.at < end).collect();
        assert_eq!(sec.num("data-requests") as u64, k.requests);
        assert_eq!(sec.num("data-throttled") as u64, k.throttled);
        assert_eq!(sec.num("data-faults") as u64, k.faults);
        // Every 429 of the hour is a mark, and all of them fall in the chart's span.
        let marks = inside.iter().filter(|e| e.has_class("mark-429")).count();
        assert_eq!(sec.num("data-marks") as u64, k.throttled);
        assert_eq!(marks as u64, k.throttled, "{} marks", k.group);
        assert!(k.throttled > 0, "{} was not saturated", k.group);
        // The gauges: every window, as used and limit, in attributes and in the text.
        let gauges: Vec<&&Tag> = inside.iter().filter(|e| e.has_class("window")).collect();
        let texts: Vec<&&Tag> = inside.iter().filter(|e| e.has_class("used")).collect();
        assert_eq!(gauges.len(), k.windows.len());
        assert_eq!(texts.len(), k.windows.len());
        for ((g, text), w) in gauges.iter().zip(&texts).zip(&k.windows) {
            assert_eq!(g.attr("data-kind"), w.kind);
            assert_eq!(g.attr("data-period"), w.period);
            assert_eq!(g.num("data-used"), w.used);
            assert_eq!(g.num("data-limit"), w.limit);
            let shown: Vec<&str> = text.text.split_whitespace().collect();
            assert_eq!(
                shown[0].parse::<f64>().unwrap(),
                (w.used * 10.0).round() / 10.0
            );
            assert_eq!(shown[1], "/");
            assert_eq!(shown[2].parse::<f64>().unwrap(), w.limit);
        }
        // The curve drawn from the admitted calls ends at the server's count now, and
        // the limit line is the shortest call window's.
        let shortest = k
            .windows
            .iter()
            .filter(|w| w.kind == "calls")
            .min_by_key(|w| w.period.clone())
            .unwrap();
        let usage = inside
            .iter()
            .find(|e| e.has_class("usage"))
            .expect("a curve");
        assert_eq!(usage.num("data-now"), shortest.used);
        let limit = inside
            .iter()
            .find(|e| e.has_class("limit"))
            .expect("a limit line");
        assert_eq!(limit.num("data-limit"), shortest.limit);
    }

    // The faults table.
    let faults: Vec<&Tag> = t.iter().filter(|t| t.has_class("fault")).collect();
    assert_eq!(faults.len(), s.faults_by_kind.len());
    assert!(s.faults > 0);
    for f in faults {
        assert_eq!(
            f.num("data-count") as u64,
            s.faults_by_kind[f.attr("data-kind")]
        );
    }

    // The last requests, newest first.
    let rows: Vec<&Tag> = t.iter().filter(|t| t.has_class("req")).collect();
    assert_eq!(rows.len(), s.recent.len());
    assert_eq!(
        by_id(&t, "recent-count").num("data-count") as usize,
        s.recent.len()
    );
    for (row, r) in rows.iter().zip(s.recent.iter().rev()) {
        assert_eq!(row.num("data-status") as u16, r.status);
        assert_eq!(row.attr("data-method"), r.method);
        assert_eq!(row.attr("data-path"), r.path);
        assert_eq!(row.attr("data-group"), r.group.as_deref().unwrap_or(""));
        assert_eq!(row.attr("data-fault"), r.fault.as_deref().unwrap_or(""));
        assert_eq!(row.num("data-at") as i64, r.at_unix_ms);
    }

    // A picture for people (docs/dashboard.png is a copy of one).
    let shot = target.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let shot_args = vec![
        "--virtual-time-budget=3000".to_owned(),
        "--window-size=1280,1100".to_owned(),
        format!("--screenshot={}", shot.display()),
        url,
    ];
    let p = profile.clone();
    tokio::task::spawn_blocking(move || {
        run_chromium(&bin, &p, &shot_args, Duration::from_secs(120))
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    eprintln!("dashboard screenshot: {}", shot.display());
    let _ = std::fs::remove_dir_all(&profile);
    // The page is read only: loading it twice changed nothing.
    assert_eq!(stats(&env).await, s);
}
