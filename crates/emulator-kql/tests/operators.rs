//! One test (or more) per operator, literal form and error class.

use std::sync::OnceLock;

use defender_emulator_kql::{
    parse_datetime, run, Dataset, DatasetConfig, JsonStyle, KqlError, QueryOutput, RunOptions,
    Value, TICKS_PER_DAY, TICKS_PER_MS,
};

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600_000;

fn data() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| {
        Dataset::generate(&DatasetConfig {
            seed: 7,
            rows_per_table: 4_000,
            anchor_unix_ms: NOW,
            ..DatasetConfig::default()
        })
    })
}

fn opts() -> RunOptions {
    RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    }
}

fn q(query: &str) -> QueryOutput {
    run(query, data(), &opts()).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn err(query: &str) -> String {
    match run(query, data(), &opts()) {
        Ok(_) => panic!("expected an error for {query}"),
        Err(e) => e.to_string(),
    }
}

fn col(out: &QueryOutput, name: &str) -> Vec<Value> {
    let i = out
        .schema
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    out.rows.iter().map(|r| r[i].clone()).collect()
}

fn names(out: &QueryOutput) -> Vec<&str> {
    out.schema.iter().map(|c| c.name.as_str()).collect()
}

fn count(query: &str) -> i64 {
    let out = q(&format!("{query} | count"));
    out.rows[0][0].as_i64().unwrap()
}

/// Rows of a table visible in the default 30-day window.
fn visible(table: &str) -> i64 {
    let cut = (NOW - 30 * 86_400_000) * TICKS_PER_MS;
    data()
        .table(table)
        .unwrap()
        .timestamps()
        .iter()
        .filter(|t| **t >= cut)
        .count() as i64
}

// ---- source, count, take --------------------------------------------------------------

#[test]
fn bare_table_returns_all_visible_rows_and_schema() {
    let out = q("DeviceLogonEvents");
    assert_eq!(out.rows.len() as i64, visible("DeviceLogonEvents"));
    assert_eq!(out.rows_scanned, out.rows.len() as u64);
    assert_eq!(out.operators, 0);
    // The documented columns of DeviceLogonEvents, in their order.
    let n = names(&out);
    assert_eq!(
        n[..16],
        [
            "Timestamp",
            "DeviceId",
            "DeviceName",
            "ActionType",
            "LogonType",
            "AccountDomain",
            "AccountName",
            "AccountSid",
            "Protocol",
            "FailureReason",
            "IsLocalAdmin",
            "LogonId",
            "RemoteDeviceName",
            "RemoteIP",
            "RemoteIPType",
            "RemotePort"
        ]
    );
    assert_eq!(n.len(), 48);
    let types: Vec<&str> = out.schema.iter().map(|c| c.type_name).collect();
    let ty = |c: &str| types[n.iter().position(|x| *x == c).unwrap()];
    assert_eq!(ty("Timestamp"), "DateTime");
    assert_eq!(ty("DeviceId"), "String");
    assert_eq!(ty("IsLocalAdmin"), "Boolean");
    assert_eq!(ty("ReportId"), "Int64");
    assert_eq!(ty("RemotePort"), "Int32");
    assert_eq!(ty("InitiatingProcessCreationTime"), "DateTime");
}

#[test]
fn count_operator() {
    let out = q("EmailEvents | count");
    assert_eq!(names(&out), ["Count"]);
    assert_eq!(out.schema[0].type_name, "Int64");
    assert_eq!(out.rows, vec![vec![Value::Int(visible("EmailEvents"))]]);
    assert_eq!(out.operators, 1);
}

#[test]
fn take_and_limit() {
    assert_eq!(q("AlertInfo | take 5").rows.len(), 5);
    assert_eq!(q("AlertInfo | limit 3").rows.len(), 3);
    assert_eq!(q("AlertInfo | take 0").rows.len(), 0);
    assert_eq!(q("let n = 2; AlertInfo | take n").rows.len(), 2);
    assert!(err("AlertInfo | take -1").contains("non-negative integer"));
    assert!(err("AlertInfo | take 'x'").contains("non-negative integer"));
}

#[test]
fn row_cap_truncates_silently() {
    let o = RunOptions {
        row_cap: 10,
        ..opts()
    };
    let out = run("DeviceNetworkEvents", data(), &o).unwrap();
    assert_eq!(out.rows.len(), 10);
    assert!(out.truncated);
    let out = run("DeviceNetworkEvents | take 10", data(), &o).unwrap();
    assert!(!out.truncated);
    let out = run("DeviceNetworkEvents | take 11", data(), &o).unwrap();
    assert!(out.truncated);
}

// ---- where -----------------------------------------------------------------------------

#[test]
fn where_equality_and_ci_equality() {
    let exact = count("DeviceProcessEvents | where FileName == 'powershell.exe'");
    assert!(exact > 0);
    assert_eq!(
        count("DeviceProcessEvents | where FileName == 'POWERSHELL.EXE'"),
        0
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName =~ 'POWERSHELL.EXE'"),
        exact
    );
    let all = visible("DeviceProcessEvents");
    assert_eq!(
        count("DeviceProcessEvents | where FileName !~ 'PowerShell.exe'"),
        all - exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName != 'powershell.exe'"),
        all - exact
    );
    assert_eq!(
        count("DeviceProcessEvents | where \"powershell.exe\" == FileName"),
        exact
    );
}

#[test]
fn where_string_operators() {
    let out = q("DeviceProcessEvents | where ProcessCommandLine contains 'ENC' | project ProcessCommandLine");
    assert!(!out.rows.is_empty());
    for v in col(&out, "ProcessCommandLine") {
        assert!(v.as_str().unwrap().to_lowercase().contains("enc"));
    }
    assert_eq!(
        count("DeviceProcessEvents | where ProcessCommandLine contains_cs 'ENC'"),
        0
    );
    // has: whole terms only
    assert!(count("DeviceProcessEvents | where ProcessCommandLine has 'whoami'") > 0);
    assert_eq!(
        count("DeviceProcessEvents | where ProcessCommandLine has 'whoam'"),
        0
    );
    let all = visible("DeviceProcessEvents");
    assert_eq!(
        count("DeviceProcessEvents | where ProcessCommandLine has 'whoami'")
            + count("DeviceProcessEvents | where ProcessCommandLine !has 'whoami'"),
        all
    );
    assert_eq!(
        count("DeviceProcessEvents | where FolderPath startswith 'c:\\\\windows'"),
        count("DeviceProcessEvents | where FolderPath startswith @'C:\\Windows'")
    );
    assert!(count("DeviceProcessEvents | where FileName endswith '.EXE'") == all);
    assert_eq!(
        count("DeviceProcessEvents | where FileName !endswith '.exe'"),
        0
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName !contains 'e'"),
        all - count("DeviceProcessEvents | where FileName contains 'e'")
    );
    assert_eq!(
        count("DeviceProcessEvents | where FileName !startswith 'cmd'"),
        all - count("DeviceProcessEvents | where FileName startswith 'CMD'")
    );
}

#[test]
fn where_in_and_not_in() {
    let a = count("DeviceLogonEvents | where LogonType == 'Network'");
    let b = count("DeviceLogonEvents | where LogonType == 'Interactive'");
    assert_eq!(
        count("DeviceLogonEvents | where LogonType in ('Network', 'Interactive')"),
        a + b
    );
    assert_eq!(
        count("DeviceLogonEvents | where LogonType in ('network', 'interactive')"),
        0
    );
    assert_eq!(
        count("DeviceLogonEvents | where LogonType in~ ('network', 'INTERACTIVE')"),
        a + b
    );
    let all = visible("DeviceLogonEvents");
    assert_eq!(
        count("DeviceLogonEvents | where LogonType !in ('Network', 'Interactive')"),
        all - a - b
    );
    assert_eq!(
        count("DeviceLogonEvents | where LogonType !in~ ('NETWORK')"),
        all - a
    );
    let n = count("DeviceNetworkEvents | where RemotePort in (443, 80)");
    assert_eq!(
        n,
        count("DeviceNetworkEvents | where RemotePort == 443 or RemotePort == 80")
    );
}

#[test]
fn where_numeric_comparisons_and_between() {
    let out = q("DeviceNetworkEvents | where RemotePort < 100 | project RemotePort");
    assert!(!out.rows.is_empty());
    assert!(col(&out, "RemotePort")
        .iter()
        .all(|v| v.as_i64().unwrap() < 100));
    assert_eq!(out.schema[0].type_name, "Int32");
    let le = count("DeviceNetworkEvents | where RemotePort <= 443");
    let gt = count("DeviceNetworkEvents | where RemotePort > 443");
    assert_eq!(le + gt, visible("DeviceNetworkEvents"));
    let ge = count("DeviceNetworkEvents | where RemotePort >= 443");
    let lt = count("DeviceNetworkEvents | where 443 > RemotePort");
    assert_eq!(ge + lt, visible("DeviceNetworkEvents"));
    assert_eq!(
        count("DeviceNetworkEvents | where RemotePort between (80 .. 443)"),
        count("DeviceNetworkEvents | where RemotePort >= 80 and RemotePort <= 443")
    );
    assert_eq!(
        count("DeviceNetworkEvents | where RemotePort !between (80 .. 443)"),
        count("DeviceNetworkEvents | where not(RemotePort >= 80 and RemotePort <= 443)")
    );
    // reals compare with ints
    assert_eq!(
        count("DeviceNetworkEvents | where RemotePort > 442.5"),
        count("DeviceNetworkEvents | where RemotePort >= 443")
    );
}

#[test]
fn where_bool_column_and_literals() {
    let admin = count("DeviceLogonEvents | where IsLocalAdmin");
    let admin2 = count("DeviceLogonEvents | where IsLocalAdmin == true");
    let non = count("DeviceLogonEvents | where IsLocalAdmin == false");
    assert!(admin > 0);
    assert_eq!(admin, admin2);
    assert_eq!(admin + non, visible("DeviceLogonEvents"));
    assert_eq!(count("DeviceLogonEvents | where not(IsLocalAdmin)"), non);
    assert_eq!(
        count("DeviceLogonEvents | where true"),
        visible("DeviceLogonEvents")
    );
    assert_eq!(count("DeviceLogonEvents | where false"), 0);
}

#[test]
fn where_and_or_not_and_parentheses() {
    let a = count("DeviceLogonEvents | where ActionType == 'LogonFailed'");
    let b = count("DeviceLogonEvents | where LogonType == 'Network'");
    let ab =
        count("DeviceLogonEvents | where ActionType == 'LogonFailed' and LogonType == 'Network'");
    let a_or_b =
        count("DeviceLogonEvents | where ActionType == 'LogonFailed' or LogonType == 'Network'");
    assert_eq!(a_or_b, a + b - ab);
    // and binds tighter than or
    assert_eq!(
        count("DeviceLogonEvents | where false and true or true"),
        visible("DeviceLogonEvents")
    );
    assert_eq!(
        count("DeviceLogonEvents | where false and (true or true)"),
        0
    );
    assert_eq!(
        count(
            "DeviceLogonEvents | where not(ActionType == 'LogonFailed' and LogonType == 'Network')"
        ),
        visible("DeviceLogonEvents") - ab
    );
    // chained where == and
    assert_eq!(
        count(
            "DeviceLogonEvents | where ActionType == 'LogonFailed' | where LogonType == 'Network'"
        ),
        ab
    );
}

// ---- time literals and functions ---------------------------------------------------------

#[test]
fn datetime_literal_forms() {
    let forms = [
        "datetime(2025-12-25)",
        "datetime(2025-12-25T00:00:00Z)",
        "datetime(2025-12-25 00:00:00)",
        "datetime(2025-12-25T00:00:00.0000000Z)",
        "datetime(2025-12-25T00:00)",
    ];
    let expected = count(&format!(
        "DeviceNetworkEvents | where Timestamp >= {}",
        forms[0]
    ));
    assert!(expected > 0 && expected < visible("DeviceNetworkEvents"));
    for f in forms {
        assert_eq!(
            count(&format!("DeviceNetworkEvents | where Timestamp >= {f}")),
            expected,
            "{f}"
        );
    }
    let out = q("AlertInfo | take 1 | project d = datetime(2024-02-01T08:00:00.1234567Z)");
    assert_eq!(out.schema[0].type_name, "DateTime");
    assert_eq!(
        out.rows[0][0],
        Value::DateTime(parse_datetime("2024-02-01T08:00:00.1234567Z").unwrap())
    );
    assert!(err("AlertInfo | where Timestamp > datetime(2024-13-01)").contains("2024-13-01"));
}

#[test]
fn timespan_literals_ago_now_and_arithmetic() {
    let out = q("AlertInfo | take 1 | project a = 1d, b = 2h, c = 30m, d = 10s, e = 100ms, f = 1.5h, g = timespan(1.02:00:00), n = now(), x = ago(1d), y = now() - 1d, z = now() + 2h - datetime(2025-12-31)");
    let day = TICKS_PER_DAY;
    let hour = day / 24;
    assert_eq!(
        out.rows[0],
        vec![
            Value::TimeSpan(day),
            Value::TimeSpan(2 * hour),
            Value::TimeSpan(hour / 2),
            Value::TimeSpan(10 * 10_000_000),
            Value::TimeSpan(100 * TICKS_PER_MS),
            Value::TimeSpan(3 * hour / 2),
            Value::TimeSpan(day + 2 * hour),
            Value::DateTime(NOW * TICKS_PER_MS),
            Value::DateTime(NOW * TICKS_PER_MS - day),
            Value::DateTime(NOW * TICKS_PER_MS - day),
            Value::TimeSpan(day + 2 * hour),
        ]
    );
    assert_eq!(out.schema[0].type_name, "TimeSpan");
    let last_day = count("DeviceProcessEvents | where Timestamp > ago(1d)");
    assert!(last_day > 0);
    assert_eq!(
        last_day,
        count("DeviceProcessEvents | where Timestamp > now() - 24h")
    );
    assert_eq!(
        last_day,
        count("DeviceProcessEvents | where Timestamp > datetime(2025-12-31T00:00:00Z)")
    );
    assert_eq!(
        count("DeviceProcessEvents | where Timestamp between (ago(2d) .. 1d)"),
        count("DeviceProcessEvents | where Timestamp >= ago(2d) and Timestamp <= ago(1d)")
    );
}

#[test]
fn let_statements() {
    let a = count(
        "let _start = datetime(2025-12-20T00:00:00Z); let _end = datetime(2025-12-27);
         DeviceNetworkEvents | where Timestamp between (_start .. _end)",
    );
    let b = count(
        "DeviceNetworkEvents | where Timestamp >= datetime(2025-12-20) and Timestamp <= datetime(2025-12-27)",
    );
    assert!(a > 0);
    assert_eq!(a, b);
    let out = q(
        "let s = 'cmd.exe'; let n = 1 + 2; let w = 2 * 1h; AlertInfo | take 1 | project s, n, w",
    );
    assert_eq!(
        out.rows[0],
        vec![
            Value::str("cmd.exe"),
            Value::Int(3),
            Value::TimeSpan(2 * TICKS_PER_DAY / 24)
        ]
    );
    // later lets can use earlier ones
    let out = q("let a = 2; let b = a * 10; AlertInfo | take 1 | project b");
    assert_eq!(out.rows[0][0], Value::Int(20));
    assert!(err("let a = Timestamp; AlertInfo").contains("'Timestamp'"));
    // a tabular let (item 4 of issue 18 made it valid)
    assert_eq!(q("let T = AlertInfo | take 1; T").rows.len(), 1);
}

#[test]
fn other_scalar_functions() {
    let out = q("DeviceProcessEvents | take 1 | project l = tolower('AbC'), u = toupper('AbC'), n = strlen('héllo'), e = isempty(''), ne = isnotempty('x'), s = tostring(42), b = bin(datetime(2024-01-01T05:37:00Z), 1h), i = iff(1 > 2, 'a', 'b'), c = strcat('a', 1, true), m = 7 % 3, dv = 7 / 2, r = 7.0 / 2, neg = -5, sd = startofday(datetime(2024-01-01T05:00:00Z))");
    assert_eq!(
        out.rows[0],
        vec![
            Value::str("abc"),
            Value::str("ABC"),
            Value::Int(5),
            Value::Bool(true),
            Value::Bool(true),
            Value::str("42"),
            Value::DateTime(parse_datetime("2024-01-01T05:00:00Z").unwrap()),
            Value::str("b"),
            Value::str("a1true"),
            Value::Int(1),
            Value::Int(3),
            Value::Real(3.5),
            Value::Int(-5),
            Value::DateTime(parse_datetime("2024-01-01").unwrap()),
        ]
    );
    // division by zero is null, not a panic
    let out = q("AlertInfo | take 1 | project z = 1 / 0");
    assert_eq!(out.rows[0][0], Value::Null);
}

// ---- project / extend / project-away / project-rename -------------------------------------

#[test]
fn project_and_extend() {
    let out = q("DeviceNetworkEvents | take 3 | project DeviceName, Port = RemotePort, Next = RemotePort + 1, Timestamp");
    assert_eq!(names(&out), ["DeviceName", "Port", "Next", "Timestamp"]);
    assert_eq!(out.schema[1].type_name, "Int32");
    assert_eq!(out.schema[2].type_name, "Int64");
    for r in &out.rows {
        assert_eq!(r[2].as_i64().unwrap(), r[1].as_i64().unwrap() + 1);
    }
    let out = q("DeviceNetworkEvents | take 2 | extend Remote = strcat(RemoteIP, ':', RemotePort), RemotePort = RemotePort * 2 | project-away DeviceId");
    let n = names(&out);
    assert_eq!(n.last(), Some(&"Remote"));
    assert!(!n.contains(&"DeviceId"));
    let width = data().table("DeviceNetworkEvents").unwrap().schema().len();
    assert_eq!(n.len(), width);
    // extend replaced RemotePort in place
    let rp = n.iter().position(|c| *c == "RemotePort").unwrap();
    assert_eq!(rp, 4);
    assert_eq!(out.schema[rp].type_name, "Int64");
    let out = q("AlertInfo | take 1 | project strlen(Title), 1 + 1");
    assert_eq!(names(&out), ["Column1", "Column2"]);
    let out = q("AlertInfo | take 2 | project-rename Name = Title | project Name, AlertId");
    assert_eq!(names(&out), ["Name", "AlertId"]);
    assert!(err("AlertInfo | project Title, Title").contains("more than once"));
    assert!(err("AlertInfo | project-away Nope").contains("'Nope'"));
    assert!(err("AlertInfo | project Title | where Severity == 'High'").contains("'Severity'"));
}

#[test]
fn where_after_project_uses_computed_columns() {
    let n = count("DeviceNetworkEvents | extend Web = RemotePort in (80, 443) | where Web");
    assert_eq!(
        n,
        count("DeviceNetworkEvents | where RemotePort in (80, 443)")
    );
    let n = count("DeviceNetworkEvents | project P = RemotePort | where P == 53");
    assert_eq!(n, count("DeviceNetworkEvents | where RemotePort == 53"));
}

// ---- sort / order / top ------------------------------------------------------------------

#[test]
fn sort_and_order() {
    let out = q("DeviceNetworkEvents | sort by RemotePort | project RemotePort");
    let v: Vec<i64> = col(&out, "RemotePort")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(v.windows(2).all(|w| w[0] >= w[1]), "default is desc");
    let out = q("DeviceNetworkEvents | order by RemotePort asc, Timestamp desc | project RemotePort, Timestamp");
    for w in out.rows.windows(2) {
        let (a, b) = (w[0][0].as_i64().unwrap(), w[1][0].as_i64().unwrap());
        assert!(a <= b);
        if a == b {
            let (Value::DateTime(x), Value::DateTime(y)) = (&w[0][1], &w[1][1]) else {
                panic!()
            };
            assert!(x >= y);
        }
    }
    let out = q("AlertInfo | sort by Title asc | take 5 | project Title");
    let t: Vec<String> = col(&out, "Title").iter().map(|v| v.to_text()).collect();
    let mut sorted = t.clone();
    sorted.sort();
    assert_eq!(t, sorted);
}

#[test]
fn top_n() {
    let out = q("DeviceProcessEvents | top 5 by ReportId");
    assert_eq!(out.rows.len(), 5);
    let ids: Vec<i64> = col(&out, "ReportId")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let all = q("DeviceProcessEvents | project ReportId");
    let mut every: Vec<i64> = col(&all, "ReportId")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    every.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, every[..5]);
    let out = q("DeviceProcessEvents | top 3 by ReportId asc | project ReportId");
    every.reverse();
    let ids: Vec<i64> = col(&out, "ReportId")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids, every[..3]);
    assert_eq!(q("DeviceProcessEvents | top 0 by ReportId").rows.len(), 0);
    assert!(err("DeviceProcessEvents | top 3 ReportId").contains("expected 'by'"));
}

// ---- summarize / distinct ----------------------------------------------------------------

#[test]
fn summarize_count_by() {
    let out = q("DeviceLogonEvents | summarize count() by ActionType");
    assert_eq!(names(&out), ["ActionType", "count_"]);
    assert_eq!(out.schema[1].type_name, "Int64");
    let total: i64 = col(&out, "count_")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(total, visible("DeviceLogonEvents"));
    for r in &out.rows {
        let a = r[0].as_str().unwrap();
        assert_eq!(
            r[1].as_i64().unwrap(),
            count(&format!("DeviceLogonEvents | where ActionType == '{a}'"))
        );
    }
    let out =
        q("DeviceLogonEvents | summarize N = count() by ActionType, LogonType | sort by N desc");
    assert_eq!(names(&out), ["ActionType", "LogonType", "N"]);
    let out = q("DeviceLogonEvents | summarize count()");
    assert_eq!(
        out.rows,
        vec![vec![Value::Int(visible("DeviceLogonEvents"))]]
    );
    let out = q("DeviceLogonEvents | where false | summarize count()");
    assert_eq!(out.rows, vec![vec![Value::Int(0)]]);
    let out = q("DeviceLogonEvents | where false | summarize count() by ActionType");
    assert!(out.rows.is_empty());
}

#[test]
fn summarize_other_aggregates_and_bin() {
    let out = q("DeviceNetworkEvents | summarize c = count(), f = countif(RemotePort == 443), d = dcount(RemotePort), lo = min(RemotePort), hi = max(RemotePort), s = sum(RemotePort), a = avg(RemotePort), first = min(Timestamp)");
    let r = &out.rows[0];
    assert_eq!(
        r[1].as_i64().unwrap(),
        count("DeviceNetworkEvents | where RemotePort == 443")
    );
    assert_eq!(
        r[2],
        Value::Int(q("DeviceNetworkEvents | distinct RemotePort").rows.len() as i64)
    );
    assert_eq!(r[3], Value::Int(22));
    assert_eq!(r[4], Value::Int(8080));
    let Value::Real(avg) = r[6] else { panic!() };
    assert!((avg - r[5].as_i64().unwrap() as f64 / r[0].as_i64().unwrap() as f64).abs() < 1e-9);
    assert_eq!(out.schema[3].type_name, "Int32");
    assert_eq!(out.schema[7].type_name, "DateTime");
    let out = q("DeviceProcessEvents | summarize count() by bin(Timestamp, 1d)");
    assert_eq!(names(&out), ["Timestamp", "count_"]);
    assert!(
        out.rows.len() >= 30 && out.rows.len() <= 31,
        "{}",
        out.rows.len()
    );
    let out = q("DeviceProcessEvents | summarize by DeviceName");
    assert_eq!(names(&out), ["DeviceName"]);
    assert!(err("DeviceProcessEvents | summarize foo()").contains("Unknown function"));
    assert_eq!(
        err("DeviceProcessEvents | summarize stdev(ProcessId)"),
        "'stdev()' is valid KQL but not supported by this emulator (line [1,33])"
    );
    assert!(err("DeviceProcessEvents | where count() > 1").contains("summarize"));
}

#[test]
fn distinct_operator() {
    let out = q("DeviceLogonEvents | distinct ActionType");
    let mut v: Vec<String> = col(&out, "ActionType")
        .iter()
        .map(|v| v.to_text())
        .collect();
    v.sort();
    assert_eq!(v, ["LogonAttempted", "LogonFailed", "LogonSuccess"]);
    let out = q("DeviceLogonEvents | distinct ActionType, IsLocalAdmin");
    assert_eq!(out.rows.len(), 6);
}

// ---- errors ---------------------------------------------------------------------------------

#[test]
fn syntax_errors_name_the_token_and_position() {
    assert_eq!(
        err("DeviceProcessEvents | wher FileName == 'x'"),
        "Query could not be parsed at 'wher' on line [1,23] (unknown query operator)"
    );
    assert_eq!(
        err("DeviceProcessEvents\n| where FileName = = 'x'"),
        "Query could not be parsed at '=' on line [2,18]"
    );
    assert_eq!(
        err("DeviceProcessEvents | top-nested 3 of DeviceName by count()"),
        "'top-nested' is valid KQL but not supported by this emulator (line [1,23])"
    );
    assert!(err("DeviceProcessEvents | where (FileName == 'x'").contains("expected ')'"));
    assert!(err("DeviceProcessEvents | where").contains("unexpected end of query"));
    assert!(err("DeviceProcessEvents | where x == 'abc").contains("unterminated string"));
    assert!(err("DeviceProcessEvents | where FileName ~= 'x'").contains("'~'"));
    assert!(err("").contains("expected a table name"));
    assert!(err("DeviceProcessEvents | project").contains("could not be parsed"));
    assert!(err("DeviceProcessEvents | sort FileName").contains("expected 'by'"));
    assert!(
        err("DeviceProcessEvents | take 10 | mv-apply x on (take 1)")
            .contains("'mv-apply' is valid KQL but not supported")
    );
}

#[test]
fn resolution_and_type_errors() {
    assert_eq!(
        err("Nope | take 1"),
        "Failed to resolve table or column expression named 'Nope'"
    );
    assert_eq!(
        err("DeviceProcessEvents | where Foo == 1"),
        "'where' operator: Failed to resolve scalar expression named 'Foo'"
    );
    // case-sensitive names
    assert!(err("deviceprocessevents").contains("'deviceprocessevents'"));
    assert!(err("DeviceProcessEvents | where filename == 'x'").contains("'filename'"));
    assert!(err("DeviceProcessEvents | where FileName == 1")
        .contains("Cannot compare values of types string and long"));
    assert!(err("DeviceNetworkEvents | where RemotePort == '443'").contains("Cannot compare"));
    assert!(err("DeviceNetworkEvents | where RemotePort").contains("boolean"));
    assert!(err("DeviceNetworkEvents | where RemotePort and true").contains("boolean"));
    assert!(err("DeviceNetworkEvents | where RemotePort =~ 1").contains("string"));
    assert!(err("DeviceNetworkEvents | extend x = RemoteIP + 1").contains("'+'"));
    assert_eq!(
        err("DeviceNetworkEvents | where parse_jsonx(RemoteIP)"),
        "Unknown function: 'parse_jsonx'."
    );
    assert!(err("DeviceNetworkEvents | where ago('x') > Timestamp").contains("timespan"));
    assert!(err("DeviceNetworkEvents | where RemotePort in (Timestamp)").contains("constant"));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "AlertInfo | where {}true{}",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(matches!(
        run(&deep, data(), &opts()),
        Err(KqlError::TooDeep(_))
    ));
    let long_chain = format!("AlertInfo | where true{}", " and true".repeat(20_000));
    assert!(matches!(
        run(&long_chain, data(), &opts()),
        Err(KqlError::TooDeep(_))
    ));
    let negs = format!("AlertInfo | extend x = {}1", "-".repeat(10_000));
    assert!(run(&negs, data(), &opts()).is_err());
    let nots = format!(
        "AlertInfo | where {}true{}",
        "not(".repeat(3000),
        ")".repeat(3000)
    );
    assert!(run(&nots, data(), &opts()).is_err());
    // moderately nested queries work
    let ok = format!("AlertInfo | where {}true{}", "(".repeat(50), ")".repeat(50));
    assert!(run(&ok, data(), &opts()).is_ok());
}

// ---- JSON ---------------------------------------------------------------------------------

#[test]
fn json_writers_agree_and_use_the_service_shapes() {
    let out = q("DeviceNetworkEvents | take 20 | extend r = RemotePort / 3.0, t = 90m, q = 'a\"b\\\\c\\n', nul = 1 / 0, ok = true");
    for style in [JsonStyle::Defender, JsonStyle::Graph] {
        let bytes = out.to_json_bytes(style);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, out.to_json(style));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.to_json_bytes(JsonStyle::Defender)).unwrap();
    assert_eq!(
        v["Schema"][0],
        serde_json::json!({"Name": "Timestamp", "Type": "DateTime"})
    );
    let ts = v["Results"][0]["Timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() >= 20 && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    assert_eq!(v["Results"][0]["t"], "01:30:00");
    assert_eq!(v["Results"][0]["q"], "a\"b\\c\n");
    assert_eq!(v["Results"][0]["nul"], serde_json::Value::Null);
    let g: serde_json::Value =
        serde_json::from_slice(&out.to_json_bytes(JsonStyle::Graph)).unwrap();
    assert_eq!(
        g["schema"][1],
        serde_json::json!({"name": "DeviceId", "type": "String"})
    );
    assert_eq!(g["results"].as_array().unwrap().len(), 20);
    assert_eq!(out.row_json(0)["ok"], serde_json::Value::Bool(true));
}

#[test]
fn comments_and_whitespace() {
    let n = count("// a comment\nDeviceLogonEvents // trailing\n\t|  where   IsLocalAdmin // c\n");
    assert_eq!(n, count("DeviceLogonEvents | where IsLocalAdmin"));
    assert_eq!(q("DeviceLogonEvents | take 3;").rows.len(), 3);
}
