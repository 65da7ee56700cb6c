//! `defender incidents sync` against an emulator whose incidents churn: killed with
//! SIGKILL at random moments, then run to the end, it loses no incident's final version,
//! a finished run repeats nothing an earlier finished run wrote, and the quota shared on
//! Redis keeps every call clear of a 429. Foreign, corrupt and locked state files are
//! refused with the file named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use defender_core::Limits;
use defender_emulator::{App, Emulator, EmulatorBuilder, EmulatorHandle, ALL_PERMISSIONS};
use serde_json::Value;

/// Tight: the twelve runs and their restarts need more calls than one window allows, so
/// they wait on each other through the shared quota.
const LIMITS: &str = "xdr,incidents.calls=6/5s,hunting.calls=8/5s,hunting.rows=200";
const SECRET: &str = "app-secret";

struct Setup {
    _rt: tokio::runtime::Runtime,
    /// `--api`: xdr or graph.
    api: &'static str,
    emu: EmulatorHandle,
    app: String,
    redis: String,
    dir: PathBuf,
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An emulator with an app of the test's own (so the shared quota keys are its alone).
fn setup(api: &'static str, churn: Option<(f64, Duration)>) -> Option<Setup> {
    setup_with(api, |b| match churn {
        Some((rate, duration)) => b.churn(rate).churn_for(duration),
        None => b,
    })
}

/// An emulator as `configure` makes it, with an app of the test's own.
fn setup_with(
    api: &'static str,
    configure: impl FnOnce(EmulatorBuilder) -> EmulatorBuilder,
) -> Option<Setup> {
    let redis = defender_testkit::redis::require_redis()?;
    let app = unique("sync-test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let builder = configure(
        Emulator::builder()
            .limits(Limits::parse(LIMITS).unwrap())
            .incidents(150)
            .rows_per_table(300)
            .app(App::new("emulator", &app, SECRET, &ALL_PERMISSIONS)),
    );
    let emu = rt.block_on(builder.spawn()).unwrap();
    let dir = std::env::temp_dir().join(unique("defender-sync"));
    std::fs::create_dir_all(&dir).unwrap();
    Some(Setup {
        _rt: rt,
        api,
        emu,
        app,
        redis,
        dir,
    })
}

impl Setup {
    fn command(&self, tenant: &str, rest: &[&str]) -> Command {
        let base = self.emu.base_url();
        let mut c = Command::new(env!("CARGO_BIN_EXE_defender"));
        c.args([
            "--api",
            self.api,
            "--base-url",
            &base,
            "--login-url",
            &base,
            "--tenant",
            tenant,
            "--client-id",
            &self.app,
            "--limits",
            LIMITS,
            "--quota-store",
            &self.redis,
        ])
        .args(rest)
        .env("AZURE_CLIENT_SECRET", SECRET)
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("DEFENDER_QUOTA_STORE")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK_SHARE");
        c
    }

    fn sync(&self, state: &Path, out: &Path) -> Command {
        let mut c = self.command(
            "emulator",
            &[
                "incidents",
                "sync",
                "--state",
                state.to_str().unwrap(),
                "--lag",
                "1s",
                "--out-file",
                out.to_str().unwrap(),
            ],
        );
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn run(&self, mut c: Command) -> Output {
        c.output().expect("the binary runs")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The incidents of an output file. A killed run may have been cut inside its last
/// line: that line alone may be partial.
fn read_lines(path: &Path, killed: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let complete = text.ends_with('\n') || text.is_empty();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(v),
            Err(e) => assert!(
                killed && !complete && i + 1 == lines.len(),
                "{}: line {} is not JSON ({e}): {line}",
                path.display(),
                i + 1
            ),
        }
    }
    out
}

/// An incident's version: its id and last update time (Defender XDR's names, else
/// Graph's).
fn version(v: &Value) -> (i64, String) {
    let id = v["incidentId"]
        .as_i64()
        .or_else(|| v["id"].as_str().and_then(|s| s.parse().ok()))
        .expect("an incident id");
    let time = v["lastUpdateTime"]
        .as_str()
        .or_else(|| v["lastUpdateDateTime"].as_str())
        .expect("a last update time");
    (id, time.to_owned())
}

/// A small seeded generator for the kill times (printed, to replay a failure).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn killed_twelve_times_under_churn_the_sync_loses_nothing_and_is_never_throttled() {
    killed_under_churn("xdr", 12, Duration::from_secs(16));
}

/// The same on Graph (pages of 50, `id` and `lastUpdateDateTime`), shorter.
#[test]
fn killed_under_churn_on_graph_the_sync_loses_nothing() {
    killed_under_churn("graph", 4, Duration::from_secs(6));
}

/// `kills` runs killed at random moments while the incidents churn for `churn_for`,
/// then two runs to the end.
fn killed_under_churn(api: &'static str, kills: usize, churn_for: Duration) {
    let rate = 6.0;
    let Some(s) = setup(api, Some((rate, churn_for))) else {
        return;
    };
    let started = Instant::now();
    let seed = std::env::var("SYNC_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    println!("kill times from SYNC_KILL_SEED={seed}");
    let mut rng = Lcg(seed);
    let state = s.dir.join(format!("{api}.state"));
    // (output file, whether the run was killed)
    let mut runs: Vec<(PathBuf, bool)> = Vec::new();
    let mut killed = 0;
    for i in 0..kills {
        let out = s.dir.join(format!("run-{i:02}.ndjson"));
        let mut child: Child = s.sync(&state, &out).spawn().expect("the binary runs");
        std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        // SIGKILL on Unix; a run that already ended is simply reaped.
        let was_running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        if was_running && o.status.code().is_none() {
            killed += 1;
            runs.push((out, true));
        } else {
            assert_eq!(o.status.code(), Some(0), "run {i}: {}", stderr(&o));
            runs.push((out, false));
        }
    }
    assert!(
        killed >= kills / 3,
        "most runs were cut short: {killed} of {kills}"
    );
    // The churn stops; the runs after it see every change: their windows end 1 s (the
    // lag) before the server's Date, which is cut to the second.
    while s.emu.clock().elapsed() < churn_for + Duration::from_millis(2_500) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in kills..kills + 2 {
        let out = s.dir.join(format!("run-{i:02}.ndjson"));
        let o = s.run(s.sync(&state, &out));
        assert_eq!(o.status.code(), Some(0), "run {i}: {}", stderr(&o));
        assert!(stderr(&o).contains("synced"), "{}", stderr(&o));
        runs.push((out, false));
    }
    let stats = s.emu.stats();
    assert!(
        stats.churn_events as f64 >= rate * churn_for.as_secs_f64() - 1.0,
        "the incidents churned: {}",
        stats.churn_events
    );

    // Every incident as the service has it now (the churn is over).
    let listed = s.run({
        let mut c = s.command(
            "emulator",
            &["incidents", "list", "--all", "--format", "ndjson"],
        );
        c.stderr(Stdio::piped()).stdout(Stdio::piped());
        c
    });
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let finals: Vec<Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        finals.len() > 150,
        "new incidents appeared: {}",
        finals.len()
    );

    let outputs: Vec<(Vec<Value>, bool)> =
        runs.iter().map(|(p, k)| (read_lines(p, *k), *k)).collect();
    let union: BTreeMap<(i64, String), &Value> = outputs
        .iter()
        .flat_map(|(lines, _)| lines.iter().map(|v| (version(v), v)))
        .collect();
    for f in &finals {
        let written = union
            .get(&version(f))
            .unwrap_or_else(|| panic!("the final version {:?} was never written", version(f)));
        assert_eq!(*written, f, "written as the API sent it");
    }
    // A finished run repeats nothing an earlier finished run wrote.
    let mut finished: BTreeSet<(i64, String)> = BTreeSet::new();
    for (i, (lines, was_killed)) in outputs.iter().enumerate() {
        if *was_killed {
            continue;
        }
        for v in lines {
            assert!(
                !finished.contains(&version(v)),
                "run {i} repeated {:?}",
                version(v)
            );
        }
        finished.extend(lines.iter().map(version));
    }
    let last: Vec<_> = outputs.last().unwrap().0.iter().map(version).collect();
    assert!(last.is_empty(), "the last run had nothing new: {last:?}");
    let written: usize = outputs.iter().map(|(l, _)| l.len()).sum();
    println!(
        "{api}: {} incidents, {} churn events, {killed} runs killed, {written} lines written for {} versions, {} requests, {:.1} s",
        finals.len(),
        stats.churn_events,
        union.len(),
        s.emu.stats().requests,
        started.elapsed().as_secs_f64()
    );
    let stats = s.emu.stats();
    assert_eq!(stats.throttled, 0, "no call was throttled: {stats:?}");
    let incidents = stats
        .keys
        .iter()
        .find(|k| k.client_id == s.app && k.group == "incidents")
        .expect("incident calls were counted");
    assert!(
        incidents.requests > 6,
        "the quota bound: {} calls",
        incidents.requests
    );
}

#[test]
fn foreign_corrupt_and_locked_state_files_are_refused_naming_the_file() {
    let Some(s) = setup("xdr", None) else {
        return;
    };
    let state = s.dir.join("state.json");
    let out = s.dir.join("out.ndjson");
    let first = s.run(s.sync(&state, &out));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["tenant"], "emulator");
    assert_eq!(saved["client_id"], s.app.as_str());
    assert_eq!(saved["surface"], "xdr");
    assert!(saved["checkpoint"].is_string(), "{saved}");
    assert_eq!(read_lines(&out, false).len(), 150);

    // Another tenant's state.
    let mut foreign = saved.clone();
    foreign["tenant"] = "contoso-prod".into();
    let other = s.dir.join("other.json");
    std::fs::write(&other, serde_json::to_vec(&foreign).unwrap()).unwrap();
    let refused = s.run(s.sync(&other, &out));
    assert_eq!(refused.status.code(), Some(10), "{}", stderr(&refused));
    let e = stderr(&refused);
    for part in [
        other.to_str().unwrap(),
        "tenant \"contoso-prod\", not \"emulator\"",
        "its own --state",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }

    // A corrupt one: a clear error, no panic.
    let corrupt = s.dir.join("corrupt.json");
    std::fs::write(&corrupt, b"{\"version\": 1, \"surf").unwrap();
    let refused = s.run(s.sync(&corrupt, &out));
    assert_eq!(refused.status.code(), Some(10), "{}", stderr(&refused));
    let e = stderr(&refused);
    assert!(e.contains(corrupt.to_str().unwrap()), "{e}");
    assert!(e.contains("not a state document"), "{e}");

    // A second sync on a state file in use fails at once, naming the lock.
    let lock_path = s.dir.join("state.json.lock");
    let held = std::fs::File::open(&lock_path).unwrap();
    held.try_lock().expect("the first sync released its lock");
    let t = Instant::now();
    let busy = s.run(s.sync(&state, &out));
    assert_eq!(busy.status.code(), Some(10), "{}", stderr(&busy));
    assert!(t.elapsed() < Duration::from_secs(10), "at once");
    let e = stderr(&busy);
    assert!(e.contains("another sync is running"), "{e}");
    assert!(e.contains(lock_path.to_str().unwrap()), "{e}");
    drop(held);
    let again = s.run(s.sync(&state, &out));
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    // The state file was never half written: it reads back.
    let back: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    // Checkpoints compare as times, not strings ("…01Z" sorts after "…01.5Z").
    let at = |v: &Value| {
        v["checkpoint"]
            .as_str()
            .and_then(defender_core::timefmt::parse_rfc3339)
            .unwrap_or_else(|| panic!("a checkpoint in {v}"))
    };
    assert!(at(&back) >= at(&saved), "{back} after {saved}");
}

#[test]
fn json_to_a_file_is_one_new_document_and_the_state_moves_after_it() {
    let Some(s) = setup("xdr", None) else {
        return;
    };
    let state = s.dir.join("json.state");
    let json_run = |out: &Path| {
        let mut c = s.sync(&state, out);
        c.args(["--format", "json"]);
        s.run(c)
    };
    let first = s.dir.join("first.json");
    let o = json_run(&first);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    let items = doc.as_array().expect("one array");
    assert_eq!(items.len(), 150);
    assert!(items.iter().all(|i| i["alerts"].is_array()), "every field");
    assert!(!s.dir.join("first.json.partial").exists());
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(saved["checkpoint"].is_string(), "{saved}");
    // An existing file is never overwritten (its incidents would be lost).
    let again = json_run(&first);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    let after: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(after, saved, "a refused run leaves the state");
    let second = s.dir.join("second.json");
    let o = json_run(&second);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(doc, serde_json::json!([]), "nothing changed since");
    // Table, CSV and TSV are for people: a sync writes records as sent.
    let mut c = s.sync(&state, &s.dir.join("x.csv"));
    c.args(["--format", "csv"]);
    let o = s.run(c);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A scheduled hunt over a table that grows (its rows run a minute past the emulator's
/// start, about 3.5 a second): killed at random moments, then run to the end, every
/// row of the time covered comes out, and the finished runs never repeat a row, past a
/// row cap of 200 that the first run's hundreds of rows exceed.
#[test]
fn a_scheduled_hunt_over_a_growing_table_writes_every_row_once() {
    let Some(s) = setup_with("xdr", |b| {
        b.table_rows("DeviceEvents", 300_000)
            .span_days(1)
            .data_ahead(Duration::from_secs(60))
    }) else {
        return;
    };
    let query = "DeviceEvents | project Timestamp, ReportId, DeviceName, ActionType";
    let from = defender_core::timefmt::format_rfc3339(SystemTime::now() - Duration::from_secs(300));
    let state = s.dir.join("hunt.state");
    let hunt = |out: &Path| {
        let mut c = s.command(
            "emulator",
            &[
                "hunt",
                query,
                "--state",
                state.to_str().unwrap(),
                "--from",
                &from,
                "--lag",
                "1s",
                "--out-file",
                out.to_str().unwrap(),
            ],
        );
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let mut rng = Lcg(7);
    let mut runs: Vec<(PathBuf, bool)> = Vec::new();
    for i in 0..4 {
        let out = s.dir.join(format!("hunt-{i}.ndjson"));
        let mut child = hunt(&out).spawn().expect("the binary runs");
        std::thread::sleep(Duration::from_millis(50 + rng.below(1_000)));
        let was_running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        let killed = was_running && o.status.code().is_none();
        if !killed {
            assert_eq!(o.status.code(), Some(0), "run {i}: {}", stderr(&o));
        }
        runs.push((out, killed));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    for i in 4..6 {
        if i == 5 {
            // The table grows by about 3.5 rows a second: ten or so for the last run.
            std::thread::sleep(Duration::from_secs(3));
        }
        let out = s.dir.join(format!("hunt-{i}.ndjson"));
        let o = s.run(hunt(&out));
        assert_eq!(o.status.code(), Some(0), "run {i}: {}", stderr(&o));
        assert!(stderr(&o).contains("hunted"), "{}", stderr(&o));
        runs.push((out, false));
    }
    // Every row of the time the runs covered, in one ranged hunt.
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["query"], query);
    let to = saved["checkpoint"].as_str().unwrap().to_owned();
    let reference = s.run({
        let mut c = s.command(
            "emulator",
            &["hunt", query, "--from", &from, "--to", &to, "-o", "ndjson"],
        );
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    });
    assert_eq!(reference.status.code(), Some(0), "{}", stderr(&reference));
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8(reference.stdout).unwrap().lines() {
        // Re-serialised, as the runs' rows are below (keys sorted).
        let row: Value = serde_json::from_str(line).unwrap();
        *want.entry(row.to_string()).or_default() += 1;
    }
    let total: usize = want.values().sum();
    assert!(total > 400, "past the row cap of 200: {total} rows");
    let mut union: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_rows = 0;
    for (path, killed) in &runs {
        let rows = read_lines(path, *killed);
        last_rows = rows.len();
        for r in rows {
            let line = r.to_string();
            assert!(want.contains_key(&line), "a row the range has: {line}");
            union.insert(line.clone());
            if !killed {
                *finished.entry(line).or_default() += 1;
            }
        }
    }
    for row in want.keys() {
        assert!(union.contains(row), "the row {row} was never written");
    }
    for (row, n) in &finished {
        assert!(*n <= want[row], "finished runs repeated {row}");
    }
    assert!(last_rows > 0, "the table grew between the last two runs");
    println!(
        "hunt: {total} rows over {} runs ({} killed), the last run {last_rows} new rows",
        runs.len(),
        runs.iter().filter(|(_, k)| *k).count()
    );
    assert_eq!(s.emu.stats().throttled, 0);
    // Another query over this state would skip rows: refused, naming the file.
    let other = s.run({
        let mut c = s.command(
            "emulator",
            &[
                "hunt",
                "DeviceEvents | take 1",
                "--state",
                state.to_str().unwrap(),
            ],
        );
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    });
    assert_eq!(other.status.code(), Some(10), "{}", stderr(&other));
    let e = stderr(&other);
    assert!(
        e.contains(state.to_str().unwrap()) && e.contains("belongs to query"),
        "{e}"
    );
}
