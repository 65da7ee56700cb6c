//! Issue 18's cheaper functions and operators, each against a brute-force expectation
//! over the generated rows: `project-reorder`, `project-keep` and `*` patterns in
//! `project-away`; `datetime_diff`, `format_datetime`, `dayofweek`, `hourofday`,
//! `coalesce`, `replace_string`, `substring`, `indexof`, `countof`, `ipv4_is_private`,
//! `base64_decode_tostring`.

use std::sync::OnceLock;

use defender_emulator_kql::{
    format_datetime, run, Dataset, DatasetConfig, QueryOutput, RunOptions, Value, TICKS_PER_DAY,
    TICKS_PER_MS,
};

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600_000;

fn data() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| {
        Dataset::generate(&DatasetConfig {
            seed: 5,
            rows_per_table: 1_500,
            anchor_unix_ms: NOW,
            ..DatasetConfig::default()
        })
    })
}

fn q(query: &str) -> QueryOutput {
    let opts = RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    };
    run(query, data(), &opts).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn names(out: &QueryOutput) -> Vec<String> {
    out.schema.iter().map(|c| c.name.clone()).collect()
}

fn table_cols(t: &str) -> Vec<String> {
    data()
        .table(t)
        .unwrap()
        .schema()
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn project_reorder_keep_and_away_patterns() {
    let all = table_cols("DeviceNetworkEvents");
    let out = q("DeviceNetworkEvents | take 3 | project-reorder RemoteUrl, Local* desc");
    let mut want = vec!["RemoteUrl".to_string()];
    want.extend(all.iter().filter(|c| c.starts_with("Local")).cloned());
    let rest: Vec<String> = all.iter().filter(|c| !want.contains(c)).cloned().collect();
    want.extend(rest);
    assert_eq!(names(&out), want);
    assert_eq!(out.rows.len(), 3);
    // The values moved with their names.
    let full = q("DeviceNetworkEvents | take 3");
    let ix = |o: &QueryOutput, n: &str| o.schema.iter().position(|c| c.name == n).unwrap();
    for (a, b) in out.rows.iter().zip(&full.rows) {
        assert_eq!(a[0], b[ix(&full, "RemoteUrl")]);
    }
    let out = q("DeviceNetworkEvents | take 1 | project-keep *Port, DeviceName");
    let want: Vec<String> = all
        .iter()
        .filter(|c| c.ends_with("Port") || *c == "DeviceName")
        .cloned()
        .collect();
    assert_eq!(names(&out), want);
    let out = q("DeviceNetworkEvents | take 1 | project-away Initiating*, *Session*");
    let want: Vec<String> = all
        .iter()
        .filter(|c| !c.starts_with("Initiating") && !c.contains("Session"))
        .cloned()
        .collect();
    assert_eq!(names(&out), want);
    let e = run(
        "AlertInfo | project-reorder Nope",
        data(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("'Nope'"), "{e}");
}

#[test]
fn calendar_functions_against_tick_arithmetic() {
    let out = q("DeviceLogonEvents | take 200 | project Timestamp, \
                 d = datetime_diff('day', now(), Timestamp), \
                 h = datetime_diff('hour', now(), Timestamp), \
                 f = format_datetime(Timestamp, 'yyyy-MM-dd HH:mm:ss'), \
                 w = dayofweek(Timestamp), hod = hourofday(Timestamp)");
    let now = NOW * TICKS_PER_MS;
    let hour = TICKS_PER_DAY / 24;
    for r in &out.rows {
        let Value::DateTime(t) = r[0] else { panic!() };
        assert_eq!(
            r[1],
            Value::Int(now.div_euclid(TICKS_PER_DAY) - t.div_euclid(TICKS_PER_DAY))
        );
        assert_eq!(r[2], Value::Int(now.div_euclid(hour) - t.div_euclid(hour)));
        let mut iso = String::new();
        format_datetime(t, &mut iso);
        assert_eq!(s(&r[3]), iso[..19].replace('T', " "));
        // 1970-01-01 was a Thursday (day 4 counting from Sunday).
        let dow = (t.div_euclid(TICKS_PER_DAY) + 4).rem_euclid(7);
        assert_eq!(r[4], Value::TimeSpan(dow * TICKS_PER_DAY));
        assert_eq!(r[5], Value::Int(t.rem_euclid(TICKS_PER_DAY) / hour));
    }
    let out = q(
        "print m = datetime_diff('month', datetime(2024-03-01), datetime(2023-12-31)), \
                 y = datetime_diff('year', datetime(2024-01-01), datetime(2023-12-31 23:59:59))",
    );
    assert_eq!(out.rows[0], vec![Value::Int(3), Value::Int(1)]);
}

#[test]
fn string_functions_against_brute_force() {
    let out = q(
        "DeviceProcessEvents | take 300 | project ProcessCommandLine, \
                 r = replace_string(ProcessCommandLine, '.exe', '.EXE'), \
                 sub = substring(ProcessCommandLine, 3, 5), \
                 ix = indexof(ProcessCommandLine, ' '), \
                 c = countof(ProcessCommandLine, 'e'), \
                 co = coalesce(AppGuardContainerId, FileName)",
    );
    let files = q("DeviceProcessEvents | take 300 | project FileName");
    for (r, f) in out.rows.iter().zip(&files.rows) {
        let cmd = s(&r[0]);
        assert_eq!(s(&r[1]), cmd.replace(".exe", ".EXE"));
        assert_eq!(s(&r[2]), cmd.chars().skip(3).take(5).collect::<String>());
        let ix = cmd
            .find(' ')
            .map_or(-1, |b| cmd[..b].chars().count() as i64);
        assert_eq!(r[3], Value::Int(ix));
        assert_eq!(r[4], Value::Int(cmd.matches('e').count() as i64));
        // AppGuardContainerId is empty: coalesce falls through to FileName.
        assert_eq!(r[5], f[0]);
    }
    let out = q("DeviceNetworkEvents | take 300 | project RemoteIP, p = ipv4_is_private(RemoteIP)");
    for r in &out.rows {
        let ip = s(&r[0]);
        let o: Vec<u32> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        let private =
            o[0] == 10 || (o[0] == 172 && (16..32).contains(&o[1])) || (o[0] == 192 && o[1] == 168);
        assert_eq!(r[1], Value::Bool(private), "{ip}");
    }
    let out = q(
        "print a = base64_decode_tostring('SW52b2tlLVdlYlJlcXVlc3Q='), \
                 b = base64_decode_tostring('%%%'), c = coalesce(tolong('x'), 7)",
    );
    assert_eq!(out.rows[0][0], Value::str("Invoke-WebRequest"));
    assert_eq!(out.rows[0][1], Value::Null);
    assert_eq!(out.rows[0][2], Value::Int(7));
}

/// The nearest-rank percentile: the smallest value with at least `p`% at or below it.
fn nearest_rank(sorted: &[i64], p: f64) -> i64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn percentile_and_percentiles_by_nearest_rank() {
    let out = q(
        "DeviceNetworkEvents | summarize p = percentile(LocalPort, 50), \
                 percentiles(RemotePort, 5, 50, 99.5) by Protocol",
    );
    assert_eq!(
        names(&out),
        [
            "Protocol",
            "p",
            "percentile_RemotePort_5",
            "percentile_RemotePort_50",
            "percentile_RemotePort_99_5"
        ]
    );
    assert_eq!(out.schema[1].type_name, "Int32");
    let rows = q("DeviceNetworkEvents | project Protocol, LocalPort, RemotePort");
    for r in &out.rows {
        let group: Vec<&Vec<Value>> = rows.rows.iter().filter(|x| x[0] == r[0]).collect();
        let mut local: Vec<i64> = group.iter().map(|x| x[1].as_i64().unwrap()).collect();
        let mut remote: Vec<i64> = group.iter().map(|x| x[2].as_i64().unwrap()).collect();
        local.sort_unstable();
        remote.sort_unstable();
        assert_eq!(r[1], Value::Int(nearest_rank(&local, 50.0)));
        assert_eq!(r[2], Value::Int(nearest_rank(&remote, 5.0)));
        assert_eq!(r[3], Value::Int(nearest_rank(&remote, 50.0)));
        assert_eq!(r[4], Value::Int(nearest_rank(&remote, 99.5)));
    }
    // Inside an expression, and over datetimes.
    let out = q("DeviceLogonEvents | summarize Spread = max(Timestamp) - percentile(Timestamp, 0)");
    let all = q("DeviceLogonEvents | summarize max(Timestamp) - min(Timestamp)");
    assert_eq!(out.rows[0][0], all.rows[0][0]);
    let e = run(
        "DeviceLogonEvents | summarize percentile(ReportId, 101)",
        data(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("between 0 and 100"), "{e}");
}

#[test]
fn prev_and_next_over_a_serialized_input() {
    let out = q("DeviceLogonEvents | sort by Timestamp asc | take 300 \
                 | extend P = prev(ReportId), N = next(ReportId, 2, -1), Gap = Timestamp - prev(Timestamp) \
                 | project ReportId, P, N, Gap, Timestamp");
    let ids: Vec<Value> = out.rows.iter().map(|r| r[0].clone()).collect();
    for (i, r) in out.rows.iter().enumerate() {
        let want_p = if i == 0 {
            Value::Null
        } else {
            ids[i - 1].clone()
        };
        assert_eq!(r[1], want_p, "row {i}");
        let want_n = ids.get(i + 2).cloned().unwrap_or(Value::Int(-1));
        assert_eq!(r[2], want_n, "row {i}");
        if i > 0 {
            let (Value::DateTime(a), Value::DateTime(b)) = (&r[4], &out.rows[i - 1][4]) else {
                panic!()
            };
            assert_eq!(r[3], Value::TimeSpan(a - b));
        }
    }
    // In a filter: rows whose account repeats the previous row's.
    let all = q("DeviceLogonEvents | serialize | project AccountName");
    let want = all.rows.windows(2).filter(|w| w[0][0] == w[1][0]).count() as i64;
    let got = q("DeviceLogonEvents | serialize | where AccountName == prev(AccountName) | count");
    assert_eq!(got.rows[0][0], Value::Int(want));
}

#[test]
fn datatable_and_externaldata() {
    let out = q(
        r#"let Iocs = datatable (Sha: string, Family: string, Score: long) [
            "aa", "Qakbot", 90,
            "bb", "Emotet", 70,
        ];
        Iocs | where Score > 80 | project Family, Score"#,
    );
    assert_eq!(names(&out), ["Family", "Score"]);
    assert_eq!(out.rows, vec![vec![Value::str("Qakbot"), Value::Int(90)]]);
    assert!(out.warnings.is_empty());
    // A datatable joined to generated rows: the file names of two known hashes.
    let hashes = q("DeviceProcessEvents | distinct SHA256, FileName | take 2");
    let text = hashes
        .rows
        .iter()
        .map(|r| format!("'{}'", s(&r[0])))
        .collect::<Vec<_>>()
        .join(", ");
    let out = q(&format!(
        "datatable (SHA256: string) [{text}] | join kind=inner (DeviceProcessEvents | distinct SHA256, FileName) on SHA256 | project FileName"
    ));
    let mut got: Vec<Value> = out.rows.iter().map(|r| r[0].clone()).collect();
    let mut want: Vec<Value> = hashes.rows.iter().map(|r| r[1].clone()).collect();
    got.sort_by_key(s);
    want.sort_by_key(s);
    assert_eq!(got, want);
    // externaldata: the declared schema, no rows, and a warning that says why.
    let out = q(
        r#"externaldata (Indicator: string, Added: datetime) [@"https://example.invalid/iocs.csv"] with (format="csv", ignoreFirstRecord=true)
        | where isnotempty(Indicator)"#,
    );
    assert_eq!(names(&out), ["Indicator", "Added"]);
    assert_eq!(out.schema[1].type_name, "DateTime");
    assert!(out.rows.is_empty());
    assert_eq!(out.warnings.len(), 1);
    assert!(out.warnings[0].contains("offline"), "{:?}", out.warnings);
    // Malformed ones are errors, not panics.
    for bad in [
        "datatable (a: string) [1, 2",
        "datatable (a: nosuchtype) ['x']",
        "datatable (a: string, b: long) ['x']",
        "datatable (a: string) [strcat(Nope, 'x')]",
        "externaldata (a: string) ['u'] with (format='csv'",
    ] {
        assert!(run(bad, data(), &RunOptions::default()).is_err(), "{bad}");
    }
}

#[test]
fn enrichment_functions_answer_from_the_world() {
    // The phishing story's payload: rare, unsigned, detected.
    let out = q(&format!(
        "DeviceFileEvents | where FileOriginIP == '{}' | project SHA1 | invoke FileProfile() \
         | project GlobalPrevalence, ThreatName, SignatureState, IsExecutable, ProfileAvailability",
        defender_emulator_kql::PHISH_IP
    ));
    assert_eq!(
        out.rows,
        vec![vec![
            Value::Int(3),
            Value::str("Trojan:Win32/Ymacco.AA"),
            Value::str("Unsigned"),
            Value::Bool(true),
            Value::str("Available")
        ]]
    );
    // Common files are known and widespread; only the first `limit` rows are looked up.
    let out = q(
        "DeviceProcessEvents | take 30 | project SHA1, FileName | invoke FileProfile(\"SHA1\", 10)",
    );
    let n = names(&out);
    assert_eq!(n.len(), 2 + 17, "{n:?}");
    let ix = |c: &str| n.iter().position(|x| x == c).unwrap();
    for (i, r) in out.rows.iter().enumerate() {
        let avail = s(&r[ix("ProfileAvailability")]);
        if i < 10 {
            assert_eq!(avail, "Available", "row {i}");
            assert!(r[ix("GlobalPrevalence")].as_i64().unwrap() >= 1_000_000);
            assert!(!s(&r[ix("SHA256")]).is_empty());
        } else {
            assert_eq!(avail, "");
            assert_eq!(r[ix("GlobalPrevalence")], Value::Null);
        }
    }
    let out = q("print SHA1 = 'not-a-known-hash' | invoke FileProfile()");
    assert_eq!(out.rows[0].last().unwrap(), &Value::str("Missing"));
    // DeviceFromIP maps a device's address back to it.
    let out = q("DeviceNetworkEvents | take 100 | project IP = LocalIP, Dev = DeviceId | invoke DeviceFromIP()");
    assert_eq!(names(&out), ["IP", "Dev", "DeviceId"]);
    assert!(out.rows.iter().all(|r| r[1] == r[2]));
    // AssignedIPAddresses names the address the device used.
    let dev = q("DeviceNetworkEvents | take 1 | project DeviceName, LocalIP");
    let out = q(&format!(
        "AssignedIPAddresses('{}', ago(1d)) | project IPAddress, IPType",
        s(&dev.rows[0][0])
    ));
    assert_eq!(
        out.rows,
        vec![vec![dev.rows[0][1].clone(), Value::str("Private")]]
    );
    let out = q("AssignedIPAddresses('no-such-device')");
    assert_eq!(
        names(&out),
        [
            "Timestamp",
            "IPAddress",
            "IPType",
            "NetworkAdapterType",
            "ConnectedNetworks"
        ]
    );
    assert!(out.rows.is_empty());
    // Errors, not panics.
    for bad in [
        "DeviceFileEvents | invoke FileProfile(NoSuchColumn)",
        "DeviceFileEvents | invoke FileProfile(SHA1, -1)",
        "DeviceFileEvents | invoke NoSuchFunction()",
        "DeviceFileEvents | invoke",
        "AssignedIPAddresses(42)",
    ] {
        assert!(run(bad, data(), &RunOptions::default()).is_err(), "{bad}");
    }
}

#[test]
fn typed_null_time_literals() {
    let out = q("print t = timespan(null), d = datetime(null), x = iff(true, timespan(null), 1h)");
    assert_eq!(out.rows[0], vec![Value::Null, Value::Null, Value::Null]);
    assert_eq!(out.schema[0].type_name, "TimeSpan");
    assert_eq!(out.schema[1].type_name, "DateTime");
    assert_eq!(out.schema[2].type_name, "TimeSpan");
}

/// Whether `text` has `term` as a whole token (the `has` operator, case-insensitive).
fn has_token(text: &str, term: &str) -> bool {
    let (t, w) = (text.to_lowercase(), term.to_lowercase());
    t.match_indices(&w).any(|(i, _)| {
        let before = t[..i].chars().next_back();
        let after = t[i + w.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[test]
fn search_and_find_over_many_tables() {
    let term = "procdump64.exe";
    let out = q(&format!(
        "search \"{term}\" | summarize n = count() by ['$table']"
    ));
    let got: std::collections::BTreeMap<String, i64> = out
        .rows
        .iter()
        .map(|r| (s(&r[0]), r[1].as_i64().unwrap()))
        .collect();
    let cut = (NOW - 30 * 86_400_000) * TICKS_PER_MS;
    let mut want = std::collections::BTreeMap::new();
    for t in data().tables() {
        let ts = t.timestamps();
        let n = (0..t.row_count())
            .filter(|i| ts.is_empty() || ts[*i] >= cut)
            .filter(|i| {
                t.row(*i)
                    .iter()
                    .any(|v| v.as_str().is_some_and(|x| has_token(x, term)))
            })
            .count() as i64;
        if n > 0 {
            want.insert(t.name().to_string(), n);
        }
    }
    assert!(want.len() >= 3, "{want:?}");
    assert_eq!(got, want);
    // A column predicate, in named tables: a table without the column is left out.
    let out = q("search in (DeviceProcessEvents, DeviceEvents, EmailEvents) FileName =~ 'lsass.exe' | summarize count() by ['$table']");
    assert_eq!(out.rows.len(), 1);
    assert_eq!(out.rows[0][0], Value::str("DeviceEvents"));
    assert_eq!(out.rows[0][1], Value::Int(2));
    // find ... where ... project: the source table and the columns asked for.
    let out = q("find in (DeviceEvents, DeviceFileEvents) where InitiatingProcessFileName =~ 'procdump64.exe' project FileName");
    assert_eq!(names(&out), ["source_", "FileName"]);
    let mut rows: Vec<(String, String)> = out.rows.iter().map(|r| (s(&r[0]), s(&r[1]))).collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("DeviceEvents".to_string(), "lsass.exe".to_string()),
            ("DeviceFileEvents".to_string(), "lsass.dmp".to_string())
        ]
    );
    let out = q(
        "find withsource = T where RegistryValueName == 'OneDriveUpdate' project RegistryValueData",
    );
    assert_eq!(names(&out), ["T", "RegistryValueData"]);
    assert_eq!(out.rows.len(), 1);
    assert_eq!(out.rows[0][0], Value::str("DeviceRegistryEvents"));
    for bad in [
        "search",
        "search in (",
        "find where",
        "find in (DeviceEvents) FileName == 'x'",
    ] {
        assert!(run(bad, data(), &RunOptions::default()).is_err(), "{bad}");
    }
}

#[test]
fn regex_replace_countof_and_old_spellings() {
    let out = q(
        r##"DeviceProcessEvents | take 200 | project ProcessCommandLine,
        a = replace_regex(ProcessCommandLine, @"(\w+)\.exe", @"<\1>"),
        b = replace(@"\d", "#", ProcessCommandLine),
        c = countof(ProcessCommandLine, @"[A-Z]", "regex"),
        d = countof(ProcessCommandLine, "e", "normal")"##,
    );
    let exe = regex::Regex::new(r"(\w+)\.exe").unwrap();
    let digit = regex::Regex::new(r"\d").unwrap();
    let upper = regex::Regex::new(r"[A-Z]").unwrap();
    for r in &out.rows {
        let cmd = s(&r[0]);
        assert_eq!(s(&r[1]), exe.replace_all(&cmd, "<${1}>"));
        assert_eq!(s(&r[2]), digit.replace_all(&cmd, "#"));
        assert_eq!(r[3], Value::Int(upper.find_iter(&cmd).count() as i64));
        assert_eq!(r[4], Value::Int(cmd.matches('e').count() as i64));
    }
    let out = q(
        "print a = now(1d) - now(), b = datetime_add('month', 1, datetime(2024-01-31)), \
                 c = base64_decodestring('aGk='), d = replace_regex('a$b', 'a', '$x'), \
                 e = tostring(parsejson('[1]')[0])",
    );
    assert_eq!(
        out.rows[0],
        vec![
            Value::TimeSpan(TICKS_PER_DAY),
            Value::DateTime(defender_emulator_kql::parse_datetime("2024-02-29").unwrap()),
            Value::str("hi"),
            Value::str("$x$b"),
            Value::str("1"),
        ]
    );
    // mvexpand, the old spelling of mv-expand.
    let a = q("print x = dynamic([1, 2, 3]) | mvexpand x | count");
    assert_eq!(a.rows[0][0], Value::Int(3));
    let e = run(
        "print countof('a', 'a', 'fuzzy')",
        data(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("regex"), "{e}");
}
