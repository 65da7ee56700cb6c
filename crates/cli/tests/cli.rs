//! The `defender` binary against the emulator: every command and format, each exit code
//! provoked for real, and piped output free of progress text.

use std::process::{Command, Output};

use defender_core::Limits;
use defender_emulator::{Emulator, EmulatorHandle};

fn defender(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_defender"))
        .args(args)
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("DEFENDER_QUOTA_STORE")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK_SHARE")
        .env_remove("DEFENDER_QUOTA_STORE_CA")
        .env_remove("DEFENDER_QUOTA_STORE_PASSWORD")
        .output()
        .expect("the binary runs")
}

fn with_secret(args: &[&str], secret: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_defender"))
        .args(args)
        .env("AZURE_CLIENT_SECRET", secret)
        .env_remove("DEFENDER_QUOTA_STORE")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK_SHARE")
        .output()
        .expect("the binary runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8")
}

/// An emulator in this process, for runs that need state across invocations.
fn emulator(limits: &str) -> (tokio::runtime::Runtime, EmulatorHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(
            Emulator::builder()
                .limits(Limits::parse(limits).unwrap())
                .rows_per_table(500)
                .spawn(),
        )
        .unwrap();
    (rt, emu)
}

fn remote<'a>(base: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--base-url",
        base,
        "--login-url",
        base,
        "--tenant",
        "emulator",
        "--client-id",
        "emulator-client",
    ];
    v.extend_from_slice(rest);
    v
}

#[test]
fn hunt_in_every_format_and_pipes_stay_clean() {
    let q = "DeviceProcessEvents | project Timestamp, DeviceName, FileName | take 7";
    let table = defender(&["--emulator", "hunt", q]);
    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let lines: Vec<&str> = stdout(&table)
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert!(lines[0].starts_with("Timestamp"));
    assert_eq!(lines.len(), 2 + 7);

    let csv = defender(&["--emulator", "hunt", q, "--format", "csv"]);
    assert_eq!(code(&csv), 0);
    let out = stdout(&csv);
    assert_eq!(out.lines().next(), Some("Timestamp,DeviceName,FileName"));
    assert_eq!(out.lines().count(), 8);
    assert!(
        stderr(&csv).is_empty(),
        "no progress text when not on a terminal: {}",
        stderr(&csv)
    );

    let json = defender(&["--emulator", "hunt", q, "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("one JSON document");
    assert_eq!(doc.as_array().unwrap().len(), 7);
    let first = doc[0].as_object().unwrap();
    assert_eq!(
        first.keys().next().map(String::as_str),
        Some("DeviceName"),
        "serde_json sorts keys when reading"
    );

    let ndjson = defender(&["--emulator", "hunt", q, "--format", "ndjson"]);
    let rows: Vec<serde_json::Value> = stdout(&ndjson)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one object per line"))
        .collect();
    assert_eq!(rows.len(), 7);
    assert!(
        stdout(&ndjson)
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"Timestamp\""),
        "schema order"
    );
}

#[test]
fn output_file_and_stdin_query() {
    let dir = std::env::temp_dir().join(format!("defender-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("out.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args([
            "--emulator",
            "hunt",
            "-",
            "--format",
            "csv",
            "--out-file",
            file.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"AlertInfo | take 4")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0);
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn incidents_list_get_update() {
    let list = defender(&[
        "--emulator",
        "incidents",
        "list",
        "--top",
        "5",
        "--format",
        "ndjson",
    ]);
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let rows: Vec<serde_json::Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    let all = defender(&[
        "--emulator",
        "incidents",
        "list",
        "--all",
        "--top",
        "100",
        "--format",
        "csv",
    ]);
    assert_eq!(
        stdout(&all).lines().count(),
        1 + 300,
        "every page with --all"
    );
    let active = defender(&[
        "--emulator",
        "incidents",
        "list",
        "--all",
        "--status",
        "Active",
        "--format",
        "ndjson",
    ]);
    assert!(stdout(&active)
        .lines()
        .all(|l| l.contains("\"status\":\"Active\"")));

    // Defender XDR's ids are numbers, and stay numbers.
    let id = rows[0]["incidentId"].as_u64().unwrap().to_string();
    let get = defender(&["--emulator", "incidents", "get", &id]);
    assert_eq!(code(&get), 0);
    let inc: serde_json::Value = serde_json::from_str(&stdout(&get)).unwrap();
    assert_eq!(inc["incidentId"].to_string(), id);

    let upd = defender(&[
        "--emulator",
        "incidents",
        "update",
        &id,
        "--status",
        "Resolved",
        "--classification",
        "TruePositive",
        "--determination",
        "Malware",
        "--tag",
        "a",
        "--tag",
        "b",
        "--comment",
        "done",
        "--assigned-to",
        "me@contoso.com",
    ]);
    assert_eq!(code(&upd), 0, "{}", stderr(&upd));
    let inc: serde_json::Value = serde_json::from_str(&stdout(&upd)).unwrap();
    assert_eq!(inc["status"], "Resolved");
    assert_eq!(inc["assignedTo"], "me@contoso.com");

    let missing = defender(&["--emulator", "incidents", "get", "999999999"]);
    assert_eq!(code(&missing), 5);
    let nothing = defender(&["--emulator", "incidents", "update", &id]);
    assert_eq!(code(&nothing), 2);
}

#[test]
fn limits_command() {
    let out = defender(&[
        "--emulator",
        "--limits",
        "2021,hunting.calls=30/1m",
        "limits",
    ]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains("hunting: calls 30 calls per 1m"), "{text}");
    assert!(text.contains("usage incidents"), "{text}");
}

/// `defender limits` needs no credentials (no tenant, no secret, no --emulator): it prints
/// the preset, as text or as JSON.
#[test]
fn limits_need_no_credentials() {
    let text = defender(&["limits"]);
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    assert!(
        stdout(&text).contains("hunting: calls 45 calls per 1m"),
        "{}",
        stdout(&text)
    );
    let json = defender(&[
        "--api",
        "graph",
        "--limits",
        "graph,incidents.calls=7/1m",
        "limits",
        "--format",
        "json",
    ]);
    assert_eq!(code(&json), 0, "{}", stderr(&json));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("one document");
    assert_eq!(doc["api"], "graph");
    assert_eq!(
        doc["groups"]["incidents"]["calls"][0],
        serde_json::json!({"max": 7, "per": "1m"})
    );
    assert_eq!(doc["groups"]["hunting"]["rows"], 100_000);
    assert!(doc["spec"]
        .as_str()
        .unwrap()
        .contains("incidents.calls=7/1m"));
    assert!(
        doc.get("usage").is_none(),
        "no usage without a client: {doc}"
    );
    let usage = defender(&["--emulator", "limits", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&usage)).expect("one document");
    assert_eq!(doc["usage"]["incidents"][0]["used"], 0, "{doc}");
}

/// Help lists the values each enumeration takes; the spellings of before still parse.
#[test]
fn help_lists_the_accepted_values() {
    let help = stdout(&defender(&["--help"]));
    for v in ["xdr", "mde", "graph", "global", "gcc", "gcc-high", "dod"] {
        assert!(help.contains(&format!("- {v}:")), "{v} in {help}");
    }
    let list = stdout(&defender(&["incidents", "list", "--help"]));
    for v in [
        "Active",
        "Resolved",
        "InProgress",
        "Redirected",
        "TruePositive",
        "FalsePositive",
    ] {
        assert!(list.contains(&format!("- {v}")), "{v} in {list}");
    }
    let alerts = stdout(&defender(&["alerts", "update", "--help"]));
    assert!(
        alerts.contains("[possible values: New, InProgress, Resolved]"),
        "{alerts}"
    );
    let hunt = stdout(&defender(&["hunt", "--help"]));
    assert!(
        hunt.contains("- auto:") && hunt.contains("- none:"),
        "{hunt}"
    );
    let bad = defender(&["--emulator", "incidents", "list", "--status", "Closed"]);
    assert_eq!(code(&bad), 2);
    assert!(
        stderr(&bad).contains("[possible values: Active, Resolved, InProgress, Redirected]"),
        "{}",
        stderr(&bad)
    );
    // Any case, the core's aliases, and a duration for --split.
    let ok = defender(&[
        "--emulator",
        "--api",
        "XDR",
        "--cloud",
        "public",
        "incidents",
        "list",
        "--status",
        "inprogress",
        "--top",
        "3",
        "--format",
        "ndjson",
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert!(
        stdout(&ok)
            .lines()
            .all(|l| l.contains("\"status\":\"InProgress\"")),
        "{}",
        stdout(&ok)
    );
    let split = defender(&[
        "--emulator",
        "hunt",
        "AlertInfo | take 2",
        "--timespan",
        "2d",
        "--split",
        "1d",
        "--format",
        "csv",
    ]);
    assert_eq!(code(&split), 0, "{}", stderr(&split));
    let bad_split = defender(&[
        "--emulator",
        "hunt",
        "AlertInfo",
        "--timespan",
        "2d",
        "--split",
        "sometimes",
    ]);
    assert_eq!(code(&bad_split), 2);
}

/// Piped (no terminal), a wait for quota is logged with its reason and until when, as text
/// or as JSON; -q keeps it quiet, and -v logs each HTTP call with its status.
#[test]
fn quota_waits_are_logged_when_piped() {
    // Three pages at two calls per 3 s: the third waits.
    let list = |extra: &[&str]| {
        let mut a = vec!["--emulator", "--limits", "xdr,incidents.calls=2/3s"];
        a.extend_from_slice(extra);
        a.extend([
            "incidents",
            "list",
            "--all",
            "--top",
            "100",
            "--format",
            "csv",
        ]);
        let out = defender(&a);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out).lines().count(), 1 + 300);
        stderr(&out)
    };
    let text = list(&[]);
    let line = text
        .lines()
        .find(|l| l.contains("waiting") && l.contains("incidents quota"))
        .unwrap_or_else(|| panic!("a wait in {text}"));
    assert!(line.contains("until=20"), "until when: {line}");
    assert!(line.contains("reason=2 calls per 3s"), "why: {line}");

    let json = list(&["--log-format", "json"]);
    let event: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
        .find(|e| e["fields"]["group"] == "incidents")
        .unwrap_or_else(|| panic!("a wait in {json}"));
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["reason"], "2 calls per 3s");
    assert!(event["fields"]["until"].as_str().unwrap().ends_with('Z'));
    assert!(event["fields"]["wait_secs"].as_u64().unwrap() >= 1);

    assert_eq!(list(&["-q"]), "", "-q logs errors only");
    let calls = list(&["-v"]);
    assert!(
        calls.contains("group=\"token\"") && calls.contains("status=200"),
        "{calls}"
    );
    assert!(!calls.contains("emulator-secret"), "no secret in the log");
}

/// `defender completions SHELL` prints a script for each shell, naming the subcommands,
/// the options and the values of the enumerations; without credentials.
#[test]
fn completions_generate_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = defender(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["incidents", "csv-raw"] {
            assert!(script.contains(word), "{shell}: {word} in {script}");
        }
        // clap_complete's PowerShell and Elvish scripts complete no values.
        if ["bash", "zsh", "fish"].contains(&shell) {
            for word in ["gcc-high", "InProgress"] {
                assert!(script.contains(word), "{shell}: {word} in {script}");
            }
        }
    }
    assert_eq!(code(&defender(&["completions", "tcsh"])), 2);
}

#[test]
fn exit_codes() {
    // 2: usage.
    assert_eq!(code(&defender(&["--emulator", "hunt"])), 2);
    assert_eq!(
        code(&defender(&[
            "--emulator",
            "--limits",
            "hunting.calls=x",
            "hunt",
            "T"
        ])),
        2
    );
    assert_eq!(code(&defender(&["--bogus"])), 2);
    // 3: no credentials; then a wrong secret against a running emulator.
    let none = defender(&["hunt", "AlertInfo"]);
    assert_eq!(code(&none), 3);
    assert!(stderr(&none).contains("--emulator"));
    let (_rt, emu) = emulator("2021,hunting.calls=1/1h");
    let base = emu.base_url();
    let wrong = with_secret(
        &remote(&base, &["hunt", "AlertInfo | take 1"]),
        "wrong-secret",
    );
    assert_eq!(code(&wrong), 3, "{}", stderr(&wrong));
    assert!(
        !stderr(&wrong).contains("wrong-secret"),
        "the secret is never printed"
    );
    // 4: the server's hour is spent; waiting exceeds --max-wait.
    let first = with_secret(
        &remote(&base, &["hunt", "AlertInfo | take 1"]),
        "emulator-secret",
    );
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let throttled = with_secret(
        &remote(&base, &["--max-wait", "2s", "hunt", "AlertInfo | take 1"]),
        "emulator-secret",
    );
    assert_eq!(code(&throttled), 4, "{}", stderr(&throttled));
    assert!(
        stderr(&throttled).contains("retry"),
        "{}",
        stderr(&throttled)
    );
    // 5: a KQL error, with the server's message.
    let bad = defender(&["--emulator", "hunt", "DeviceProcessEvents | wher x"]);
    assert_eq!(code(&bad), 5);
    assert!(stderr(&bad).contains("wher"));
    // 6: nothing listens there.
    let down = with_secret(
        &[
            "--base-url",
            "http://127.0.0.1:9",
            "--login-url",
            "http://127.0.0.1:9",
            "--tenant",
            "t",
            "--client-id",
            "c",
            "hunt",
            "T",
        ],
        "s",
    );
    assert_eq!(code(&down), 6, "{}", stderr(&down));
    // 7: truncated at the row cap with --split none.
    let cut = defender(&[
        "--emulator",
        "--limits",
        "2021,hunting.rows=5",
        "hunt",
        "DeviceProcessEvents | take 50",
        "--format",
        "csv",
    ]);
    assert_eq!(code(&cut), 7, "{}", stderr(&cut));
    assert_eq!(
        stdout(&cut).lines().count(),
        6,
        "the rows fetched are still written"
    );
}

#[test]
fn split_auto_returns_every_row_past_the_cap() {
    let limits = "2021,hunting.rows=1000,hunting.calls=100/1m";
    let out = defender(&[
        "--emulator",
        "--limits",
        limits,
        "hunt",
        "DeviceProcessEvents | project Timestamp, ReportId",
        "--timespan",
        "29d",
        "--format",
        "csv",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let ids: std::collections::HashSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    let rows = text.lines().count() - 1;
    assert!(rows > 1000, "past the cap: {rows}");
    assert_eq!(ids.len(), rows, "every row once");
    let count = defender(&[
        "--emulator",
        "hunt",
        "DeviceProcessEvents | where Timestamp > ago(29d) | count",
        "--format",
        "csv",
    ]);
    let expected: usize = stdout(&count)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The two runs' "now" differ by well under the time between two rows.
    assert!(
        (rows as i64 - expected as i64).abs() <= 2,
        "{rows} rows, count says {expected}"
    );
}

#[test]
fn emulator_command_serves_until_stopped() {
    use std::io::{BufRead, BufReader};
    let mut server = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args([
            "emulator",
            "--port",
            "0",
            "--rows",
            "300",
            "--limits",
            "2021,hunting.calls=30/1m",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the emulator starts");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let base = first.rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let out = with_secret(
        &remote(&base, &["hunt", "AlertInfo | take 2", "--format", "csv"]),
        "emulator-secret",
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("AZURE_CLIENT_SECRET=emulator-secret")),
        "it says how to connect"
    );
}

#[test]
fn quota_store_counts_every_invocation_once() {
    let Some(url) = defender_testkit::redis::require_redis() else {
        return;
    };
    // A client id of its own, so the shared keys are this test's alone.
    let app = format!(
        "cli-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(
            Emulator::builder()
                .app(defender_emulator::App::new(
                    "emulator",
                    &app,
                    "app-secret",
                    &defender_emulator::ALL_PERMISSIONS,
                ))
                .spawn(),
        )
        .unwrap();
    let base = emu.base_url();
    let args = |rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--base-url",
            &base,
            "--login-url",
            &base,
            "--tenant",
            "emulator",
            "--client-id",
            &app,
            "--quota-store",
            &url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run = |rest: &[&str]| {
        let a = args(rest);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        with_secret(&a, "app-secret")
    };
    let used = |text: &str| -> u32 {
        text.lines()
            .find(|l| l.starts_with("shared incidents:") && l.contains("calls per 1m"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a shared incidents line in {text}"))
    };
    let before = run(&["limits"]);
    assert_eq!(code(&before), 0, "{}", stderr(&before));
    let text = stdout(&before);
    assert!(text.contains(&format!("shared quota: {url}")), "{text}");
    assert_eq!(used(&text), 0, "{text}");
    for _ in 0..2 {
        let get = run(&["incidents", "get", "1000", "--format", "json"]);
        assert_eq!(code(&get), 0, "{}", stderr(&get));
    }
    let after = run(&["limits"]);
    assert_eq!(used(&stdout(&after)), 2, "{}", stdout(&after));

    // An unreachable store: fail (exit 6, nothing sent), or fall back with a warning.
    let dead = "redis://127.0.0.1:1";
    let sent = emu.stats().requests;
    let a = args(&["incidents", "get", "1000"]);
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    let i = a.iter().position(|x| *x == url.as_str()).unwrap();
    a[i] = dead;
    let failed = with_secret(&a, "app-secret");
    assert_eq!(code(&failed), 6, "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("quota store"),
        "{}",
        stderr(&failed)
    );
    assert!(
        emu.stats().requests <= sent + 1,
        "at most the token request went out"
    );
    a.extend(["--quota-store-fallback", "local"]);
    let fell_back = with_secret(&a, "app-secret");
    assert_eq!(code(&fell_back), 0, "{}", stderr(&fell_back));
    assert!(
        stderr(&fell_back).contains("on its own"),
        "a warning: {}",
        stderr(&fell_back)
    );
    drop(rt);
}

/// `--quota-store-fallback-share N`: while the store is unreachable, this process admits
/// 1/N of every limit; a share that is not a whole number of at least one, or one without
/// `--quota-store-fallback local`, is a usage error.
#[test]
fn quota_store_fallback_share_splits_the_quota_while_redis_is_down() {
    let dead = "redis://127.0.0.1:1";
    let spec = "xdr,incidents.calls=4/1m";
    let fallback = |share: &str, rest: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--limits",
            spec,
            "--quota-store",
            dead,
            "--quota-store-fallback",
            "local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(format!("--quota-store-fallback-share={share}"));
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        defender(&a)
    };
    // Usage errors: clap's for the value, ours for the missing `local`.
    for bad in ["0", "-1", "two", "", "1.5"] {
        let mut a = fallback(bad, &["limits"]);
        a.insert(0, "--emulator".into());
        let out = run(a);
        assert_eq!(code(&out), 2, "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--quota-store-fallback-share"),
            "{}",
            stderr(&out)
        );
    }
    let out = defender(&[
        "--emulator",
        "--quota-store",
        dead,
        "--quota-store-fallback-share",
        "2",
        "limits",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--quota-store-fallback local"),
        "{}",
        stderr(&out)
    );
    let help = stdout(&defender(&["--help"]));
    assert!(
        help.contains("--quota-store-fallback-share <N>")
            && help.contains("DEFENDER_QUOTA_STORE_FALLBACK_SHARE"),
        "{help}"
    );
    // `defender limits` shows this process's share of each window.
    let mut a = fallback("2", &["limits"]);
    a.insert(0, "--emulator".into());
    let out = run(a);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("shared incidents: 0 of 2 calls per 1m"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("at 1/2 of each limit"),
        "{}",
        stderr(&out)
    );
    // Listing every page of 300 incidents takes 3 calls: within 4 per minute on its own,
    // but with a share of 2 this process sends 2 and then would wait a minute.
    let pages = |share: &str| {
        let (rt, emu) = emulator(spec);
        let base = emu.base_url();
        let list = fallback(
            share,
            &[
                "--max-wait",
                "3s",
                "incidents",
                "list",
                "--all",
                "--top",
                "100",
                "--format",
                "csv",
            ],
        );
        let mut a: Vec<&str> = remote(&base, &[]);
        a.extend(list.iter().map(String::as_str));
        let out = with_secret(&a, "emulator-secret");
        let sent: u64 = emu
            .stats()
            .keys
            .iter()
            .filter(|k| k.group == "incidents")
            .map(|k| k.requests)
            .sum();
        drop(rt);
        (out, sent)
    };
    let (whole, sent) = pages("1");
    assert_eq!(code(&whole), 0, "{}", stderr(&whole));
    assert_eq!(stdout(&whole).lines().count(), 1 + 300);
    assert!(sent >= 3, "{sent}");
    let (half, sent) = pages("2");
    assert_eq!(code(&half), 4, "{}", stderr(&half));
    assert_eq!(sent, 2, "half of 4 per minute: {}", stderr(&half));
}

#[test]
fn the_emulator_command_offers_remote_control_only_as_an_opt_in() {
    let help = defender(&["emulator", "--help"]);
    assert_eq!(code(&help), 0, "{}", stderr(&help));
    let text = stdout(&help);
    assert!(text.contains("--allow-remote-control"), "{text}");
    assert!(text.contains("X-Emulator-Control: 1"), "{text}");
}

/// Page sizes and filters follow the surface: Graph pages at most 50, and only Graph
/// filters on severity, classification and determination (a usage error elsewhere,
/// before anything is sent).
#[test]
fn page_sizes_and_filters_follow_the_surface() {
    let graph_top = defender(&[
        "--emulator",
        "--api",
        "graph",
        "incidents",
        "list",
        "--top",
        "80",
    ]);
    assert_eq!(code(&graph_top), 2, "{}", stderr(&graph_top));
    assert!(
        stderr(&graph_top).contains("1 to 50"),
        "{}",
        stderr(&graph_top)
    );
    let graph = defender(&[
        "--emulator",
        "--api",
        "graph",
        "incidents",
        "list",
        "--all",
        "--format",
        "ndjson",
    ]);
    assert_eq!(code(&graph), 0, "{}", stderr(&graph));
    assert_eq!(
        stdout(&graph).lines().count(),
        300,
        "every Graph page of 50"
    );
    let xdr = defender(&["--emulator", "incidents", "list", "--severity", "high"]);
    assert_eq!(code(&xdr), 2, "{}", stderr(&xdr));
    assert!(stderr(&xdr).contains("severity"), "{}", stderr(&xdr));
}

/// `defender alerts` on every API: JSON and NDJSON carry each alert as the API sent it
/// (Graph's names on Graph, Defender's on Defender), the CSV a summary; get, update with
/// a comment, and the filters a surface lacks refused before anything is sent.
#[test]
fn alerts_list_get_update_on_every_api() {
    for (api, created) in [
        ("graph", "createdDateTime"),
        ("mde", "alertCreationTime"),
        ("xdr", "alertCreationTime"),
    ] {
        let list = defender(&[
            "--emulator",
            "--api",
            api,
            "alerts",
            "list",
            "--top",
            "5",
            "--format",
            "ndjson",
        ]);
        assert_eq!(code(&list), 0, "{api}: {}", stderr(&list));
        let rows: Vec<serde_json::Value> = stdout(&list)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 5, "{api}");
        for r in &rows {
            assert!(r["id"].is_string(), "{api}: {r}");
            assert!(r[created].is_string(), "{api}: the API's own names: {r}");
            assert!(r.get("alertId").is_none(), "{api}: no summary names: {r}");
        }
        let all = defender(&[
            "--emulator",
            "--api",
            api,
            "alerts",
            "list",
            "--all",
            "--top",
            "20",
            "--format",
            "csv",
        ]);
        assert_eq!(code(&all), 0, "{api}: {}", stderr(&all));
        let lines: Vec<String> = stdout(&all).lines().map(str::to_owned).collect();
        assert_eq!(
            lines[0],
            "id,title,status,severity,incidentId,assignedTo,created"
        );
        assert!(
            lines.len() > 41,
            "{api}: every page with --all: {}",
            lines.len()
        );

        let id = rows[2]["id"].as_str().unwrap().to_owned();
        let get = defender(&["--emulator", "--api", api, "alerts", "get", &id]);
        assert_eq!(code(&get), 0, "{api}: {}", stderr(&get));
        let alert: serde_json::Value = serde_json::from_str(&stdout(&get)).unwrap();
        assert_eq!(alert["id"].as_str(), Some(id.as_str()), "{api}");

        let upd = defender(&[
            "--emulator",
            "--api",
            api,
            "alerts",
            "update",
            &id,
            "--status",
            "Resolved",
            "--classification",
            "FalsePositive",
            "--comment",
            "benign admin tool",
        ]);
        assert_eq!(code(&upd), 0, "{api}: {}", stderr(&upd));
        let alert: serde_json::Value = serde_json::from_str(&stdout(&upd)).unwrap();
        assert!(
            alert["status"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("resolved"),
            "{api}: {alert}"
        );
        let comments = alert["comments"].as_array().expect("comments");
        assert_eq!(
            comments
                .iter()
                .filter(|c| c["comment"] == "benign admin tool")
                .count(),
            1,
            "{api}: {alert}"
        );

        let missing = defender(&[
            "--emulator",
            "--api",
            api,
            "alerts",
            "get",
            "da000000000000000000_404",
        ]);
        assert_eq!(code(&missing), 5, "{api}: {}", stderr(&missing));
        let nothing = defender(&["--emulator", "--api", api, "alerts", "update", &id]);
        assert_eq!(code(&nothing), 2, "{api}");
    }
    let graph_incident = defender(&[
        "--emulator",
        "--api",
        "graph",
        "alerts",
        "list",
        "--incident-id",
        "7",
    ]);
    assert_eq!(code(&graph_incident), 2);
    let mde_source = defender(&[
        "--emulator",
        "--api",
        "mde",
        "alerts",
        "list",
        "--service-source",
        "x",
    ]);
    assert_eq!(code(&mde_source), 2);
    assert!(
        stderr(&mde_source).contains("serviceSource"),
        "{}",
        stderr(&mde_source)
    );
}

/// The service's own JSON for `path`, fetched with a plain HTTP GET and a token of the
/// API's scope.
fn api_json(
    rt: &tokio::runtime::Runtime,
    base: &str,
    path: &str,
    scope: &str,
) -> serde_json::Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let scope = scope.replace(':', "%3A").replace('/', "%2F");
        let token: serde_json::Value = serde_json::from_str(
            &http
                .post(format!(
                    "{base}/{}/oauth2/v2.0/token",
                    defender_emulator::DEFAULT_TENANT
                ))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "client_id={}&client_secret={}&grant_type=client_credentials&scope={scope}",
                    defender_emulator::DEFAULT_CLIENT_ID,
                    defender_emulator::DEFAULT_SECRET
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let token = token["access_token"].as_str().expect("a token").to_owned();
        let body = http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap()
    })
}

/// Asserts `got` is `want`, field by field and with the same JSON types (serde_json's
/// numbers compare their kind: 7 is not 7.0, nor "7").
fn assert_same_json(got: &serde_json::Value, want: &serde_json::Value, what: &str) {
    let (g, w) = (got.as_object().unwrap(), want.as_object().unwrap());
    let gk: Vec<&String> = g.keys().collect();
    let wk: Vec<&String> = w.keys().collect();
    assert_eq!(gk, wk, "{what}: the same fields");
    for (k, v) in w {
        assert_eq!(&g[k], v, "{what}: field {k}");
    }
    assert_eq!(got, want, "{what}");
}

/// `json`, `ndjson` and `get --format json` write each incident exactly as the service
/// sent it: every field (alerts, comments, devices, entities and fields the models do not
/// know), under the service's names and with its types; on Defender XDR and on Graph.
#[test]
fn incidents_are_written_as_the_api_sent_them() {
    let (rt, emu) = emulator("2021");
    let base = emu.base_url();
    for (api, path, scope) in [
        (
            "xdr",
            "/api/incidents",
            "https://api.security.microsoft.com/.default",
        ),
        (
            "graph",
            "/v1.0/security/incidents",
            "https://graph.microsoft.com/.default",
        ),
    ] {
        let run = |rest: &[&str]| {
            let mut a = remote(&base, &["--api", api]);
            a.extend_from_slice(rest);
            let out = with_secret(&a, "emulator-secret");
            assert_eq!(code(&out), 0, "{api} {rest:?}: {}", stderr(&out));
            stdout(&out)
        };
        let first: serde_json::Value = serde_json::from_str(
            run(&["incidents", "list", "--top", "1", "--format", "ndjson"]).trim(),
        )
        .unwrap();
        let id = match api {
            "xdr" => first["incidentId"]
                .as_u64()
                .expect("XDR's id is a number")
                .to_string(),
            _ => first["id"]
                .as_str()
                .expect("Graph's id is a string")
                .to_owned(),
        };
        run(&[
            "incidents",
            "update",
            &id,
            "--comment",
            "seen by the CLI test",
        ]);
        let got = api_json(&rt, &base, &format!("{path}/{id}"), scope);
        // `@odata.context` describes the response, not the incident: `get` keeps it as
        // sent, a listed incident has none.
        let mut want = got.clone();
        want.as_object_mut().unwrap().remove("@odata.context");
        assert!(
            want["comments"].as_array().is_some_and(|c| !c.is_empty()),
            "{api}: {want}"
        );
        if api == "xdr" {
            assert!(
                want["alerts"].as_array().is_some_and(|a| !a.is_empty()),
                "{want}"
            );
        } else {
            assert!(
                want["tenantId"].is_string(),
                "a field the model does not know: {want}"
            );
        }
        let same_id = |v: &serde_json::Value| match api {
            "xdr" => v["incidentId"].as_u64().map(|n| n.to_string()) == Some(id.clone()),
            _ => v["id"].as_str() == Some(id.as_str()),
        };
        let ndjson = run(&["incidents", "list", "--all", "--format", "ndjson"]);
        let line = ndjson
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| same_id(v))
            .expect("the incident is listed");
        assert_same_json(&line, &want, &format!("{api} ndjson"));
        let json: serde_json::Value =
            serde_json::from_str(&run(&["incidents", "list", "--all", "--format", "json"]))
                .unwrap();
        let doc = json
            .as_array()
            .unwrap()
            .iter()
            .find(|v| same_id(v))
            .unwrap();
        assert_same_json(doc, &want, &format!("{api} json"));
        let get: serde_json::Value =
            serde_json::from_str(&run(&["incidents", "get", &id, "--format", "json"])).unwrap();
        assert_same_json(&get, &got, &format!("{api} get"));
    }
    drop(rt);
}

/// `get` and `update` honour `--format` and `--out-file`; `--columns` picks top-level
/// fields for table and CSV, on incidents and alerts alike.
#[test]
fn get_and_update_honour_format_output_and_columns() {
    let dir = std::env::temp_dir().join(format!("defender-cli-get-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("incident.csv");
    let out = defender(&[
        "--emulator",
        "incidents",
        "get",
        "1000",
        "--format",
        "csv",
        "--columns",
        "incidentId,severity,tags",
        "--out-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("incidentId,severity,tags"));
    assert!(lines.next().unwrap().starts_with("1000,"), "{text}");
    assert_eq!(lines.next(), None);

    let upd = defender(&[
        "--emulator",
        "incidents",
        "update",
        "1000",
        "--status",
        "InProgress",
        "--format",
        "ndjson",
    ]);
    assert_eq!(code(&upd), 0, "{}", stderr(&upd));
    assert_eq!(stdout(&upd).lines().count(), 1, "one line");
    let v: serde_json::Value = serde_json::from_str(stdout(&upd).trim()).unwrap();
    assert_eq!(v["status"], "InProgress");

    let table = defender(&[
        "--emulator",
        "incidents",
        "get",
        "1000",
        "--format",
        "table",
    ]);
    assert!(
        stdout(&table).starts_with("incidentId  incidentName"),
        "{}",
        stdout(&table)
    );
    let alerts = defender(&[
        "--emulator",
        "alerts",
        "list",
        "--top",
        "3",
        "--format",
        "csv",
        "--columns",
        "id,category",
    ]);
    assert_eq!(code(&alerts), 0, "{}", stderr(&alerts));
    let text = stdout(&alerts);
    assert_eq!(text.lines().next(), Some("id,category"));
    assert!(text
        .lines()
        .skip(1)
        .all(|l| l.split(',').nth(1).is_some_and(|c| !c.is_empty())));
    let id = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let file = dir.join("alert.json");
    let get = defender(&[
        "--emulator",
        "alerts",
        "get",
        &id,
        "--out-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code(&get), 0, "{}", stderr(&get));
    let alert: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(alert["id"].as_str(), Some(id.as_str()));
    std::fs::remove_dir_all(&dir).ok();
}

/// A hunt whose cells hold newlines, quotes, commas, Unicode and formulas.
const AWKWARD: &str = r#"AlertInfo | take 3 | project Text = "line one\nline \"two\", with a comma", Cjk = "日本語 🦀", Formula = strcat("=", "HYPERLINK(\"http://x\")"), Dash = "-2+3", Plain = "ok""#;

fn read_csv(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_owned).collect())
        .collect()
}

/// CSV is lossless (RFC 4180 through the csv crate's reader) and safe: a cell that a
/// spreadsheet would run as a formula gets a leading `'`, unless `--csv-raw`.
#[test]
fn csv_round_trips_and_defuses_formulas() {
    let json = defender(&["--emulator", "hunt", AWKWARD, "--format", "ndjson"]);
    assert_eq!(code(&json), 0, "{}", stderr(&json));
    let rows: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let columns = ["Text", "Cjk", "Formula", "Dash", "Plain"];
    let expected = |escape: bool| -> Vec<Vec<String>> {
        let mut out = vec![columns.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
        for r in &rows {
            out.push(
                columns
                    .iter()
                    .map(|c| {
                        let s = r[*c].as_str().unwrap().to_owned();
                        if escape && (s.starts_with('=') || s.starts_with('-')) {
                            format!("'{s}")
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
        out
    };
    assert_eq!(rows[0]["Text"], "line one\nline \"two\", with a comma");
    assert_eq!(rows[0]["Formula"], "=HYPERLINK(\"http://x\")");

    let safe = defender(&["--emulator", "hunt", AWKWARD, "--format", "csv"]);
    assert_eq!(code(&safe), 0, "{}", stderr(&safe));
    let read = read_csv(&stdout(&safe));
    assert_eq!(read, expected(true));
    assert_eq!(read[1][2], "'=HYPERLINK(\"http://x\")");

    let raw = defender(&[
        "--emulator",
        "hunt",
        AWKWARD,
        "--format",
        "csv",
        "--csv-raw",
    ]);
    assert_eq!(code(&raw), 0, "{}", stderr(&raw));
    let read = read_csv(&stdout(&raw));
    assert_eq!(read, expected(false));
    assert_eq!(read[1][2], "=HYPERLINK(\"http://x\")");

    let help = stdout(&defender(&["hunt", "--help"]));
    assert!(
        help.contains("--csv-raw") && help.contains("formula"),
        "{help}"
    );
}

/// A table escapes control characters (an ESC cannot reach the terminal) and measures
/// display width, so CJK and emoji cells align with ASCII ones.
#[test]
fn tables_escape_control_characters_and_align_wide_text() {
    let q = "AlertInfo | take 2 | project Name = iff(Severity == \"nope\", \"x\", \"日本語🦀\"), Esc = \"a\u{1b}[2Jb\", Next = \"end\"";
    let out = defender(&["--emulator", "hunt", q]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "no raw ESC: {text:?}");
    assert!(text.contains("a\\u{1b}[2Jb"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    // The column `Esc` starts at the same display column on every line.
    let col = |l: &str, at: &str| {
        let i = l.find(at).unwrap_or_else(|| panic!("{at} in {l}"));
        unicode_display_width(&l[..i])
    };
    assert_eq!(col(lines[0], "Esc"), col(lines[2], "a\\u"), "{text}");
    assert_eq!(col(lines[0], "Next"), col(lines[3], "end"), "{text}");
    assert_eq!(
        col(lines[0], "Esc"),
        8 + 2,
        "日本語🦀 is 8 columns wide: {text}"
    );
}

/// Display width as terminals count it, for the characters the table test uses.
fn unicode_display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '\u{3000}'..='\u{9fff}' | '\u{1f300}'..='\u{1faff}' => 2,
            _ => 1,
        })
        .sum()
}

/// A reader that stops early ends the command quietly (exit 0, nothing on standard
/// error); a local write failure has its own exit code, 9.
#[test]
fn closed_pipes_are_quiet_and_write_failures_exit_9() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args([
            "--emulator",
            "hunt",
            "DeviceProcessEvents | take 1000",
            "--format",
            "csv",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("Timestamp,"), "{first}");
    drop(reader);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "");

    let missing = defender(&[
        "--emulator",
        "hunt",
        "AlertInfo | take 1",
        "--format",
        "csv",
        "--out-file",
        "/nonexistent-dir/x.csv",
    ]);
    assert_eq!(code(&missing), 9, "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("/nonexistent-dir/x.csv"),
        "{}",
        stderr(&missing)
    );
    if std::path::Path::new("/dev/full").exists() {
        let full = defender(&[
            "--emulator",
            "incidents",
            "list",
            "--all",
            "--out-file",
            "/dev/full",
        ]);
        assert_eq!(code(&full), 9, "a full disk: {}", stderr(&full));
        assert!(
            stderr(&full).contains("could not write the output"),
            "{}",
            stderr(&full)
        );
    }
    let help = stdout(&defender(&["--help"]));
    assert!(help.contains("9  could not write the output"), "{help}");
}

/// `-o/--output` names the format as in the Azure CLI and kubectl, before or after the
/// subcommand; `--format` is its alias and gives the same bytes.
#[test]
fn output_names_the_format_and_format_is_its_alias() {
    let q = "AlertInfo | take 5 | project AlertId, Title, Severity";
    let by_o = defender(&["--emulator", "hunt", q, "-o", "json"]);
    assert_eq!(code(&by_o), 0, "{}", stderr(&by_o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&by_o)).expect("JSON");
    assert_eq!(doc.as_array().map(Vec::len), Some(5));
    for other in [
        vec!["--emulator", "hunt", q, "--format", "json"],
        vec!["--emulator", "hunt", q, "--output", "json"],
        vec!["--emulator", "-o", "json", "hunt", q],
    ] {
        let out = defender(&other);
        assert_eq!(code(&out), 0, "{other:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), stdout(&by_o), "{other:?}");
    }
    let get_o = defender(&["--emulator", "incidents", "get", "1000", "-o", "ndjson"]);
    let get_f = defender(&[
        "--emulator",
        "incidents",
        "get",
        "1000",
        "--format",
        "ndjson",
    ]);
    assert_eq!(code(&get_o), 0, "{}", stderr(&get_o));
    assert_eq!(stdout(&get_o).lines().count(), 1);
    // Each run has its own emulator, with its own address and clock: the same record,
    // field for field, if not the same instants.
    let parsed =
        |o: &Output| -> serde_json::Value { serde_json::from_str(stdout(o).trim()).unwrap() };
    let (a, b) = (parsed(&get_o), parsed(&get_f));
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b));
    for field in ["incidentId", "incidentName", "severity", "status"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    assert_eq!(a["incidentId"], 1000);
    let limits_o = defender(&["-o", "json", "limits"]);
    let limits_f = defender(&["limits", "--format", "json"]);
    assert_eq!(code(&limits_o), 0, "{}", stderr(&limits_o));
    assert!(stdout(&limits_o).starts_with('{'));
    assert_eq!(stdout(&limits_o), stdout(&limits_f));
    // -o takes a format now, not a file: a path is refused with the formats listed.
    let path = defender(&["--emulator", "hunt", q, "-o", "/tmp/x.csv"]);
    assert_eq!(code(&path), 2);
    assert!(stderr(&path).contains("tsv"), "{}", stderr(&path));
}

/// `--out-file PATH` writes there (hunts, lists, get and limits), and nothing to stdout.
#[test]
fn out_file_writes_the_file() {
    let dir = std::env::temp_dir().join(format!("defender-cli-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, Vec<&str>, usize); 3] = [
        (
            "hunt.tsv",
            vec!["hunt", "AlertInfo | take 6", "-o", "tsv"],
            7,
        ),
        (
            "incidents.csv",
            vec!["incidents", "list", "--top", "4", "-o", "csv"],
            5,
        ),
        ("limits.json", vec!["limits", "-o", "json"], 0),
    ];
    for (name, args, lines) in cases {
        let file = dir.join(name);
        let mut a = vec!["--emulator", "--out-file", file.to_str().unwrap()];
        a.extend(args);
        let out = defender(&a);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}: {}", stdout(&out));
        let text = std::fs::read_to_string(&file).unwrap();
        if lines > 0 {
            assert_eq!(text.lines().count(), lines, "{name}: {text}");
        } else {
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(doc["api"], "xdr");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// TSV: one line per row, a tab between cells; a tab, newline, carriage return or
/// backslash in a cell is written `\t`, `\n`, `\r`, `\\`, so unescaping gives the value.
#[test]
fn tsv_escapes_tabs_and_newlines() {
    let q = r#"AlertInfo | take 2 | project Tab = "a\tb", Lines = "one\ntwo\r\n", Slash = "C:\\new", Formula = "=1+1", Cjk = "日本語""#;
    let json = defender(&["--emulator", "hunt", q, "-o", "ndjson"]);
    assert_eq!(code(&json), 0, "{}", stderr(&json));
    let rows: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["Tab"], "a\tb");
    assert_eq!(rows[0]["Slash"], "C:\\new");
    let tsv = defender(&["--emulator", "hunt", q, "-o", "tsv"]);
    assert_eq!(code(&tsv), 0, "{}", stderr(&tsv));
    let text = stdout(&tsv);
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(
        lines.len(),
        1 + 2 + 1,
        "header, two rows, a final newline: {text:?}"
    );
    assert_eq!(lines[0], "Tab\tLines\tSlash\tFormula\tCjk");
    assert_eq!(lines[1], "a\\tb\tone\\ntwo\\r\\n\tC:\\\\new\t'=1+1\t日本語");
    let unescape = |c: &str| {
        let mut out = String::new();
        let mut it = c.chars();
        while let Some(ch) = it.next() {
            if ch != '\\' {
                out.push(ch);
                continue;
            }
            out.push(match it.next() {
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('\\') => '\\',
                other => panic!("unknown escape {other:?} in {c}"),
            });
        }
        out
    };
    let columns: Vec<&str> = lines[0].split('\t').collect();
    for (line, row) in lines[1..3].iter().zip(&rows) {
        let cells: Vec<&str> = line.split('\t').collect();
        assert_eq!(cells.len(), columns.len(), "{line}");
        for (c, cell) in columns.iter().zip(cells) {
            let want = row[*c].as_str().unwrap();
            let want = if want.starts_with('=') {
                format!("'{want}")
            } else {
                want.to_owned()
            };
            assert_eq!(unescape(cell), want, "{c}");
        }
    }
    let raw = defender(&["--emulator", "hunt", q, "-o", "tsv", "--csv-raw"]);
    assert!(stdout(&raw).lines().nth(1).unwrap().contains("\t=1+1\t"));
}

/// `--timespan` binds a query to the range with the library's one rule, whether the range
/// is split or not: a query that starts with a comment or `let` statements gets the filter
/// after its table (rows within the day); one that starts with `search` is refused with
/// what to write instead.
#[test]
fn timespan_binds_let_queries_and_refuses_search() {
    use defender_core::timefmt::parse_rfc3339;
    use std::time::{Duration, SystemTime};
    let q = "// the last day's alerts\nlet sev = \"x\";\nAlertInfo | where Severity != sev | project Timestamp";
    let stamps = |extra: &[&str]| -> Vec<SystemTime> {
        let mut a = vec!["--emulator", "hunt", q, "-o", "ndjson"];
        a.extend_from_slice(extra);
        let out = defender(&a);
        assert_eq!(code(&out), 0, "{extra:?}: {}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                parse_rfc3339(v["Timestamp"].as_str().unwrap()).unwrap()
            })
            .collect()
    };
    let all = stamps(&[]);
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    assert!(
        all.iter().any(|t| *t < now - 2 * day),
        "unscoped, the query reaches further back"
    );
    for split in ["auto", "none"] {
        let scoped = stamps(&["--timespan", "1d", "--split", split]);
        assert!(!scoped.is_empty(), "--split {split}: rows of the last day");
        assert!(scoped.len() < all.len(), "--split {split}");
        // A minute of slack for the clocks of this test and the command.
        let from = now - day - Duration::from_secs(60);
        assert!(
            scoped.iter().all(|t| *t >= from),
            "--split {split}: every row within the day"
        );
    }
    for split in ["auto", "none"] {
        let search = defender(&[
            "--emulator",
            "hunt",
            "search \"mimikatz\"",
            "--timespan",
            "1d",
            "--split",
            split,
        ]);
        assert_eq!(code(&search), 2, "--split {split}");
        let err = stderr(&search);
        assert!(
            err.contains("`search`")
                && err.contains("union T1, T2 | search")
                && err.contains("_start"),
            "--split {split}: {err}"
        );
    }
}

/// `--param` values reach the query as KQL literals: a string with `"` and `\` comes back
/// as it was given, a typed long is a number; a name that is not a KQL identifier, or a
/// value that is not of its type, is a usage error. `--query-file` (alias `--file`) reads
/// the query from a file or, with `-`, from standard input.
#[test]
fn params_are_quoted_and_query_files_read() {
    let value = r#"C:\Users\"admin" \n;| take 0"#;
    let q = "AlertInfo | take 1 | extend P = p, N = n + 1 | project P, N";
    let out = defender(&[
        "--emulator",
        "hunt",
        q,
        "--param",
        &format!("p={value}"),
        "--param",
        "n:long=41",
        "-o",
        "ndjson",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let row: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(row["P"], value, "the string round-trips");
    assert_eq!(row["N"], 42, "a typed long is a number");
    for bad in ["a-b=1", "let=1", "1x=1", "n:long=5; AlertInfo", "x:guid=1"] {
        let o = defender(&["--emulator", "hunt", q, "--param", bad]);
        assert_eq!(code(&o), 2, "{bad}");
        assert!(stderr(&o).contains("--param"), "{bad}: {}", stderr(&o));
    }

    let dir = std::env::temp_dir().join(format!("defender-cli-qf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("q.kql");
    std::fs::write(&file, "// long KQL\nAlertInfo\n| take n\n").unwrap();
    for flag in ["--query-file", "--file"] {
        let o = defender(&[
            "--emulator",
            "hunt",
            flag,
            file.to_str().unwrap(),
            "--param",
            "n:long=3",
            "-o",
            "csv",
        ]);
        assert_eq!(code(&o), 0, "{flag}: {}", stderr(&o));
        assert_eq!(stdout(&o).lines().count(), 1 + 3, "{flag}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args(["--emulator", "hunt", "--query-file", "-", "-o", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"AlertInfo | take 2")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0);
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

/// Help groups the global options under headings; the output options are listed with
/// `--format` as an alias of `-o/--output`.
#[test]
fn help_groups_the_global_options() {
    let help = stdout(&defender(&["--help"]));
    let at = |h: &str| {
        help.find(&format!("\n{h}:\n"))
            .unwrap_or_else(|| panic!("heading {h} in {help}"))
    };
    let headings = ["API", "Authentication", "Quota", "Logging", "Output"];
    for pair in headings.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} in order");
    }
    let section = |h: &str| {
        let start = at(h);
        let end = headings
            .iter()
            .map(|o| at(o))
            .filter(|&i| i > start)
            .min()
            .unwrap_or(help.len());
        help[start..end].to_owned()
    };
    assert!(section("Authentication").contains("--client-secret-file"));
    assert!(section("Quota").contains("--quota-store"));
    assert!(section("Logging").contains("--log-format"));
    let output = section("Output");
    for word in [
        "-o, --output <FORMAT>",
        "--format",
        "--out-file <PATH>",
        "tsv",
    ] {
        assert!(output.contains(word), "{word} in {output}");
    }
    let hunt = stdout(&defender(&["hunt", "--help"]));
    assert!(
        hunt.contains("Output:") && hunt.contains("--param") && hunt.contains("--query-file"),
        "{hunt}"
    );
}

/// The man pages generate (what `cargo xtask man` runs): defender.1 names every command,
/// and each subcommand has its own page with its options.
#[test]
fn man_pages_generate() {
    let dir = std::env::temp_dir().join(format!("defender-cli-man-{}", std::process::id()));
    let out = defender(&["man", dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let page = std::fs::read_to_string(dir.join("defender.1")).expect("defender.1");
    assert!(page.contains(".TH defender 1"), "{page}");
    for command in ["hunt", "incidents", "alerts", "limits", "completions"] {
        assert!(
            page.contains(&format!("defender\\-{command}(1)")),
            "{command} in {page}"
        );
    }
    assert!(
        !page.contains("defender\\-man"),
        "the hidden command is left out"
    );
    let hunt = std::fs::read_to_string(dir.join("defender-hunt.1")).expect("defender-hunt.1");
    assert!(hunt.contains("\\-\\-timespan") && hunt.contains("\\-\\-param"));
    assert!(dir.join("defender-incidents-list.1").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `--quota-store-ca PATH`: a usage error without a store, a clear error (exit 2) for a
/// file that cannot be read; the store's password from DEFENDER_QUOTA_STORE_PASSWORD
/// never shows, in the message of an unreachable store or in `--help`.
#[test]
fn quota_store_ca_and_password() {
    let out = defender(&[
        "--emulator",
        "--quota-store-ca",
        "/nonexistent/ca.pem",
        "limits",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--quota-store-ca applies"),
        "{}",
        stderr(&out)
    );

    let out = defender(&[
        "--emulator",
        "--quota-store",
        "rediss://localhost:1",
        "--quota-store-ca",
        "/nonexistent/ca.pem",
        "limits",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("could not be read"),
        "{err}"
    );

    let secret = "Qx4/Access+Key=";
    let out = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args([
            "--emulator",
            "--quota-store",
            "rediss://localhost:1",
            "-vvv",
        ])
        .args(["incidents", "get", "1000"])
        .env("DEFENDER_QUOTA_STORE_PASSWORD", secret)
        .env_remove("DEFENDER_QUOTA_STORE")
        .env_remove("DEFENDER_QUOTA_STORE_FALLBACK")
        .output()
        .expect("the binary runs");
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("quota store"), "{text}");
    assert!(!text.contains("Qx4") && !text.contains("Access"), "{text}");

    let help = Command::new(env!("CARGO_BIN_EXE_defender"))
        .arg("--help")
        .env(
            "DEFENDER_QUOTA_STORE",
            format!("rediss://:{secret}@localhost:6380"),
        )
        .output()
        .expect("the binary runs");
    let help = stdout(&help);
    assert!(help.contains("--quota-store-ca <PATH>"), "{help}");
    assert!(!help.contains("Qx4"), "the env value is hidden: {help}");
}

/// `defender auth` shows the source picked, tenant, app, audience and expiry, never the
/// token: with --emulator, with managed identity from the App Service variables against
/// a running emulator, and with nothing configured (exit 3, every step listed).
#[test]
fn auth_shows_the_source_never_the_token() {
    let ok = defender(&["--emulator", "auth"]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let out = stdout(&ok);
    for part in [
        "source:    client secret",
        "tenant:    emulator",
        "audience:  https://api.security.microsoft.com/.default",
        "expires:   ",
    ] {
        assert!(out.contains(part), "{part} in {out}");
    }
    assert!(!out.contains("eyJ"), "no token: {out}");

    let (_rt, emu) = emulator("2021");
    let base = emu.base_url();
    let mi = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args([
            "--api",
            "graph",
            "--base-url",
            &base,
            "--auth",
            "managed-identity",
        ])
        .args(["-o", "json", "auth"])
        .env("IDENTITY_ENDPOINT", format!("{base}/msi/token"))
        .env("IDENTITY_HEADER", emu.identity_header())
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(code(&mi), 0, "{}", stderr(&mi));
    let v: serde_json::Value = serde_json::from_str(&stdout(&mi)).unwrap();
    assert_eq!(v["source"], "managed identity (App Service)");
    assert_eq!(v["audience"], "https://graph.microsoft.com");
    assert!(v["valid_for_s"].as_u64().unwrap() > 600, "{v}");

    let none = defender(&["auth"]);
    assert_eq!(code(&none), 3);
    let e = stderr(&none);
    for part in [
        "environment secret: AZURE_TENANT_ID is not set",
        "environment certificate: ",
        "workload identity: ",
        "managed identity: ",
        "Azure CLI: ",
        "--emulator",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
}

/// `defender quota watch URL` in a pseudo-terminal (tmux), and piped with `--once`: an
/// emulator whose incidents window the script filled and whose limit one call overran.
#[test]
fn quota_watch_draws_the_emulators_windows_in_a_terminal_and_as_lines() {
    let (_rt, emu) = emulator("xdr,incidents.calls=2/1m");
    let url = emu.base_url();
    // The client believes in more than the server allows: the third call gets a 429
    // and then fails rather than wait a minute.
    let run = || {
        with_secret(
            &[
                "--base-url",
                &url,
                "--login-url",
                &url,
                "--tenant",
                "emulator",
                "--client-id",
                "emulator-client",
                "--limits",
                "xdr,incidents.calls=100/1m",
                "--max-wait",
                "1s",
                "incidents",
                "list",
                "--top",
                "1",
            ],
            "emulator-secret",
        )
    };
    assert_eq!(code(&run()), 0);
    assert_eq!(code(&run()), 0);
    assert_ne!(code(&run()), 0, "the third call in the minute is refused");
    assert_eq!(emu.stats().throttled, 1);

    let piped = defender(&["quota", "watch", &url, "--once"]);
    assert_eq!(code(&piped), 0, "{}", stderr(&piped));
    let text = stdout(&piped);
    assert!(!text.contains('\x1b'), "plain lines when piped: {text:?}");
    let full = format!("calls/1m [{}] 2 of 2", "#".repeat(24));
    assert!(text.contains(&full), "{text}");
    assert!(text.contains("1 since the emulator started"), "{text}");
    assert_eq!(text.matches("emulator: ").count(), 1, "one frame: {text}");

    // In a terminal: frames replace each other in place, once a second.
    let session = format!("watch-{}", std::process::id());
    let bin = env!("CARGO_BIN_EXE_defender");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux runs (.ci/run installs it)")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "110",
        "-y",
        "30",
        &format!("{bin} quota watch {url}"),
    ]);
    assert!(started.status.success(), "{}", stderr(&started));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let screen = tmux(&["capture-pane", "-p", "-t", &session]);
    tmux(&["kill-session", "-t", &session]);
    let screen = stdout(&screen);
    assert!(screen.contains(&full), "{screen}");
    assert!(screen.contains("1 since the emulator started"), "{screen}");
    assert_eq!(
        screen.matches("emulator: ").count(),
        1,
        "after two redraws one frame is on the screen: {screen}"
    );
    assert!(
        screen.starts_with("emulator: "),
        "drawn from the top: {screen}"
    );
}

/// With a shared store, each process's --client-name shows with the calls it took.
#[test]
fn quota_watch_names_the_processes_of_a_shared_store() {
    let redis = "redis://127.0.0.1:6379";
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        assert!(
            std::env::var_os("REDIS_REQUIRED").is_none(),
            "no Redis at {redis}"
        );
        eprintln!("SKIPPED: no Redis at {redis}");
        return;
    }
    // A tenant of its own, so no other run's calls are counted.
    let tenant = format!("watch-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(Emulator::builder().tenant(tenant.clone()).spawn())
        .unwrap();
    let url = emu.base_url();
    let run = |name: &str| {
        with_secret(
            &[
                "--base-url",
                &url,
                "--login-url",
                &url,
                "--tenant",
                &tenant,
                "--client-id",
                "emulator-client",
                "--quota-store",
                redis,
                "--client-name",
                name,
                "incidents",
                "list",
                "--top",
                "1",
            ],
            "emulator-secret",
        )
    };
    for name in ["sync-worker", "sync-worker", "triage"] {
        let o = run(name);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = defender(&[
        "--quota-store",
        redis,
        "--tenant",
        &tenant,
        "--client-id",
        "emulator-client",
        "quota",
        "watch",
        "--once",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("incidents\n"), "{text}");
    assert!(text.contains("sync-worker 2, triage 1"), "{text}");
    assert!(text.contains("] 3 of "), "{text}");
    let no_store = defender(&["quota", "watch", "--once"]);
    assert_eq!(code(&no_store), 2, "{}", stderr(&no_store));
}
