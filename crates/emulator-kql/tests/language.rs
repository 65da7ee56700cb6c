//! The language features of issue 18's first slice, each against a hand-computed or
//! brute-force expectation: honest errors, dynamic values, list and regex operators,
//! `let` and user functions, `union`, the new aggregations, `mv-expand`, `parse`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use defender_emulator_kql::{
    run, Dataset, DatasetConfig, JsonStyle, KqlError, QueryOutput, RunOptions, Value, TICKS_PER_MS,
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

fn count(query: &str) -> i64 {
    q(&format!("{query} | count")).rows[0][0].as_i64().unwrap()
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

/// The visible rows of a table (30-day window) as maps of column name to value.
fn rows(table: &str) -> Vec<BTreeMap<String, Value>> {
    let t = data().table(table).unwrap();
    let cut = (NOW - 30 * 86_400_000) * TICKS_PER_MS;
    (0..t.row_count())
        .filter(|i| t.timestamps()[*i] >= cut)
        .map(|i| {
            t.schema()
                .iter()
                .zip(t.row(i))
                .map(|(c, v)| (c.name.clone(), v))
                .collect()
        })
        .collect()
}

fn text(v: &Value) -> String {
    v.to_text()
}

fn json(v: &Value) -> String {
    defender_emulator_kql::value_to_json(v).to_string()
}

// ---- tokens and errors -------------------------------------------------------------------

#[test]
fn invisible_characters_and_sources_that_are_not_tables() {
    let plain = count("DeviceLogonEvents");
    assert_eq!(count("\u{feff}DeviceLogonEvents"), plain);
    assert_eq!(count("\u{200b}\u{feff} DeviceLogonEvents"), plain);
    let out = q("print x = 1, y = 'a'");
    assert_eq!(names(&out), ["x", "y"]);
    assert_eq!(out.rows, vec![vec![Value::Int(1), Value::str("a")]]);
    // find needs its where; search runs (tests/functions.rs); range runs
    // (tests/tabular_ops.rs); a plugin as a source is not run.
    assert_eq!(
        err("find 'x'"),
        "Query could not be parsed at ''x'' on line [1,6] (expected 'where')"
    );
    assert_eq!(
        err("\n  evaluate python(typeof(*), 'x')"),
        "'evaluate' is valid KQL but not supported by this emulator (line [2,3])"
    );
}

#[test]
fn valid_but_unsupported_is_named_and_located() {
    assert_eq!(
        err("DeviceLogonEvents\n| extend x = trim_start(@'\\s', AccountName)"),
        "'trim_start()' is valid KQL but not supported by this emulator (line [2,14])"
    );
    assert_eq!(
        err("DeviceLogonEvents | mv-apply x = y on (take 1)"),
        "'mv-apply' is valid KQL but not supported by this emulator (line [1,21])"
    );
    // A supported function wrapping an unsupported one names the inner one.
    assert!(
        err("DeviceLogonEvents | summarize tostring(stdev(ReportId))")
            .starts_with("'stdev()' is valid KQL but not supported")
    );
    // ... and wrapping a supported aggregation runs.
    let out = q("DeviceLogonEvents | summarize s = tostring(make_set(ActionType))");
    assert!(text(&out.rows[0][0]).starts_with('['));
    // Unknown names stay unknown.
    assert_eq!(
        err("DeviceLogonEvents | extend x = nosuch(1)"),
        "Unknown function: 'nosuch'."
    );
    // Tokens that used to stop the tokenizer reach the parser, which names the place.
    assert_eq!(
        err("DeviceLogonEvents\n| join kind=bogus (AlertInfo) on AlertId"),
        "Query could not be parsed at 'kind=bogus' on line [2,8] (unknown join kind)"
    );
    assert_eq!(
        err("DeviceLogonEvents | where x.y"),
        "'where' operator: Failed to resolve scalar expression named 'x'"
    );
    assert!(err("DeviceLogonEvents | where a : b").starts_with("Query could not be parsed at ':'"));
}

// ---- dynamic values ------------------------------------------------------------------------

#[test]
fn dynamic_literals_member_access_and_indexing() {
    let out = q(
        r#"print d = dynamic({"a": [1, "x", {"b": true}], 'n': null, "k": -2.5})
        | extend one = d.a[1], deep = d["a"][-1].b, missing = d.nope, far = d.a[-9],
                 k = d.k, arr = dynamic([]), n = d.n"#,
    );
    assert_eq!(out.schema[0].type_name, "Object");
    assert_eq!(col(&out, "one"), [Value::str("x")]);
    assert_eq!(col(&out, "deep"), [Value::Bool(true)]);
    assert_eq!(col(&out, "missing"), [Value::Null]);
    assert_eq!(col(&out, "far"), [Value::Null]);
    assert_eq!(col(&out, "k"), [Value::Real(-2.5)]);
    assert_eq!(json(&col(&out, "arr")[0]), "[]");
    assert_eq!(col(&out, "n"), [Value::Null]);
    let body = String::from_utf8(out.to_json_bytes(JsonStyle::Defender)).unwrap();
    assert!(
        body.contains(r#""d":{"a":[1,"x",{"b":true}],"k":-2.5,"n":null}"#),
        "{body}"
    );
    // Indexing anything but a dynamic is a type error.
    assert!(err("DeviceLogonEvents | extend x = AccountName[0]").contains("dynamic"));
}

#[test]
fn json_functions() {
    let out = q(
        r#"print j = parse_json('{"k": 5, "s": "t", "l": [1, 2]}'), bad = parse_json('nope'),
        t = todynamic('[3]'), e = extractjson("$.l[1]", '{"l": [1, 2]}'), e2 = extractjson("$.z", '{}')
        | extend k = tolong(j.k) + 1, s = tostring(j.s), l = array_length(j.l), t0 = t[0]"#,
    );
    assert_eq!(col(&out, "k"), [Value::Int(6)]);
    assert_eq!(col(&out, "s"), [Value::str("t")]);
    assert_eq!(col(&out, "l"), [Value::Int(2)]);
    assert_eq!(col(&out, "bad"), [Value::str("nope")]);
    assert_eq!(col(&out, "t0"), [Value::Int(3)]);
    assert_eq!(col(&out, "e"), [Value::str("2")]);
    assert_eq!(col(&out, "e2"), [Value::Null]);
}

#[test]
fn packing_splitting_and_joining() {
    let out = q(
        r#"print a = pack_array(1, "a", true), b = bag_pack("x", 1, "y", "z"), p = pack("k", 2),
        s = split("a,b,,c", ","), s1 = split("a,b", ",", 1), s9 = split("a,b", ",", 9),
        j = strcat_array(dynamic(["a", 1, "b"]), "-"), n = array_length("not an array")"#,
    );
    assert_eq!(json(&col(&out, "a")[0]), r#"[1,"a",true]"#);
    assert_eq!(json(&col(&out, "b")[0]), r#"{"x":1,"y":"z"}"#);
    assert_eq!(json(&col(&out, "p")[0]), r#"{"k":2}"#);
    assert_eq!(json(&col(&out, "s")[0]), r#"["a","b","","c"]"#);
    assert_eq!(json(&col(&out, "s1")[0]), r#"["b"]"#);
    assert_eq!(json(&col(&out, "s9")[0]), "[]");
    assert_eq!(col(&out, "j"), [Value::str("a-1-b")]);
    assert_eq!(col(&out, "n"), [Value::Null]);
    // split of every account name, indexed, against Rust's split.
    let out = q(
        "DeviceProcessEvents | project FolderPath, Last = tostring(split(FolderPath, '\\\\')[-1])",
    );
    for (p, l) in col(&out, "FolderPath").iter().zip(col(&out, "Last")) {
        assert_eq!(text(&l), text(p).rsplit('\\').next().unwrap());
    }
}

// ---- list and regex operators, case -----------------------------------------------------------

#[test]
fn has_any_has_all_in_ci_and_not_in() {
    let t = "DeviceProcessEvents";
    assert_eq!(
        count(&format!("{t} | where ProcessCommandLine has_any ('whoami', 'net', 'nope')")),
        count(&format!("{t} | where ProcessCommandLine has 'whoami' or ProcessCommandLine has 'net' or ProcessCommandLine has 'nope'"))
    );
    assert_eq!(
        count(&format!(
            "let l = dynamic(['-enc', 'powershell']); {t} | where ProcessCommandLine has_all (l)"
        )),
        count(&format!(
            "{t} | where ProcessCommandLine has '-enc' and ProcessCommandLine has 'powershell'"
        ))
    );
    assert_eq!(
        count(&format!(
            "{t} | where FileName in~ ('CMD.EXE', 'PowerShell.exe')"
        )),
        count(&format!(
            "{t} | where FileName =~ 'cmd.exe' or FileName =~ 'powershell.exe'"
        ))
    );
    assert_eq!(
        count(&format!("{t} | where FileName !in ('cmd.exe')")),
        count(&format!("{t} | where FileName != 'cmd.exe'"))
    );
    // `in` against a table.
    let devices: BTreeSet<String> = rows("AlertEvidence")
        .iter()
        .filter(|r| text(&r["Severity"]) == "High")
        .map(|r| text(&r["DeviceName"]))
        .collect();
    let expected = rows("DeviceLogonEvents")
        .iter()
        .filter(|r| devices.contains(&text(&r["DeviceName"])))
        .count() as i64;
    assert_eq!(
        count("let D = AlertEvidence | where Severity == 'High' | project DeviceName; DeviceLogonEvents | where DeviceName in (D)"),
        expected
    );
    assert_eq!(
        count("DeviceLogonEvents | where DeviceName in (AlertEvidence | where Severity == 'High' | project DeviceName)"),
        expected
    );
}

#[test]
fn matches_regex_and_extract_against_the_regex_crate() {
    let re = regex::Regex::new(r"\\(System32|SysWOW64)\\([a-z]+)\.exe$").unwrap();
    let name_re = regex::Regex::new(r"\\([a-z]+)\.exe$").unwrap();
    let all = rows("DeviceProcessEvents");
    let matching = all
        .iter()
        .filter(|r| re.is_match(&text(&r["FolderPath"])))
        .count() as i64;
    assert!(matching > 0);
    assert_eq!(
        count(
            r#"DeviceProcessEvents | where FolderPath matches regex @"\\(System32|SysWOW64)\\([a-z]+)\.exe$""#
        ),
        matching
    );
    let out = q(
        r#"DeviceProcessEvents | project FolderPath, Dir = extract(@"\\(System32|SysWOW64)\\([a-z]+)\.exe$", 1, FolderPath), Name = extract(@"\\([a-z]+)\.exe$", 1, FolderPath)"#,
    );
    for ((p, d), n) in col(&out, "FolderPath")
        .iter()
        .zip(col(&out, "Dir"))
        .zip(col(&out, "Name"))
    {
        let p = text(p);
        let want = re.captures(&p).map(|c| c[1].to_string());
        assert_eq!(d.as_str().map(str::to_string), want);
        let want = name_re.captures(&p).map(|c| c[1].to_string());
        assert_eq!(n.as_str().map(str::to_string), want);
    }
    let out = q(
        r#"print a = extract_all(@"\d+", "a1b22c333"), g = extract_all(@"([a-z])(\d+)", dynamic([2]), "a1b22"),
        two = extract_all(@"([a-z])(\d+)", "a1b22"), none = extract_all(@"\d", "abc"),
        n = extract(@"(\d+)", 1, "id 42", typeof(long))"#,
    );
    assert_eq!(json(&col(&out, "a")[0]), r#"["1","22","333"]"#);
    assert_eq!(json(&col(&out, "g")[0]), r#"["1","22"]"#);
    assert_eq!(json(&col(&out, "two")[0]), r#"[["a","1"],["b","22"]]"#);
    assert_eq!(col(&out, "none"), [Value::Null]);
    assert_eq!(col(&out, "n"), [Value::Int(42)]);
    assert!(err("print x = 'a' matches regex '('").contains("invalid regular expression"));
    assert!(
        err("DeviceLogonEvents | where AccountName matches regex AccountName").contains("constant")
    );
    // A pattern whose compiled form is huge is refused, not built.
    assert!(err(r"print x = 'a' matches regex @'(\w{1000}){1000}'")
        .contains("invalid regular expression"));
}

#[test]
fn case_and_iff() {
    let out = q("DeviceNetworkEvents | project RemotePort, S = case(RemotePort == 443, 'https', RemotePort < 100, 'low', 'other'), I = iff(RemotePort > 1000, 1, 2.5)");
    for ((p, s), i) in col(&out, "RemotePort")
        .iter()
        .zip(col(&out, "S"))
        .zip(col(&out, "I"))
    {
        let p = p.as_i64().unwrap();
        let want = if p == 443 {
            "https"
        } else if p < 100 {
            "low"
        } else {
            "other"
        };
        assert_eq!(text(&s), want);
        assert_eq!(i, Value::Real(if p > 1000 { 1.0 } else { 2.5 }));
    }
    assert!(err("print x = case(true, 1, false, 2)").contains("odd number"));
    assert!(err("print x = case(1, 1, 2)").contains("bool"));
}

// ---- let and functions -----------------------------------------------------------------------

#[test]
fn scalar_and_tabular_lets_and_user_functions() {
    let direct = count("DeviceProcessEvents | where FileName =~ 'cmd.exe'");
    assert_eq!(
        count("let T = DeviceProcessEvents | where FileName =~ 'cmd.exe'; T"),
        direct
    );
    assert_eq!(
        count("let T = DeviceProcessEvents; T | where FileName =~ 'cmd.exe'"),
        direct
    );
    assert_eq!(
        count("let T = materialize(DeviceProcessEvents | where FileName =~ 'cmd.exe'); T"),
        direct
    );
    assert_eq!(
        count(
            "let f = (name: string) { DeviceProcessEvents | where FileName =~ name }; f('cmd.exe')"
        ),
        direct
    );
    assert_eq!(
        count("let f = (name: string = 'cmd.exe') { DeviceProcessEvents | where FileName =~ name }; f()"),
        direct
    );
    assert_eq!(
        count("let f = (name: string) { let T = DeviceProcessEvents; T | where FileName =~ name }; f('cmd.exe')"),
        direct
    );
    let out =
        q("let twice = (n: long) { n * 2 }; let k = 21; print a = twice(k), b = twice(twice(1))");
    assert_eq!(out.rows[0], vec![Value::Int(42), Value::Int(4)]);
    // A scalar function over columns.
    let out = q("let port = (p: int) { iff(p == 443, 'tls', 'plain') }; DeviceNetworkEvents | project RemotePort, k = port(RemotePort)");
    for (p, k) in col(&out, "RemotePort").iter().zip(col(&out, "k")) {
        assert_eq!(
            text(&k),
            if p.as_i64() == Some(443) {
                "tls"
            } else {
                "plain"
            }
        );
    }
    // A let shadows a table; a function cannot see itself.
    assert_eq!(
        count("let DeviceLogonEvents = AlertInfo | take 3; DeviceLogonEvents"),
        3
    );
    assert!(run("let f = () { f() }; f()", data(), &opts()).is_err());
    assert!(err("let x = 1; x").contains("scalar"));
    // A chain of tabular lets deeper than the nesting limit is refused, not a crash.
    let mut deep = String::from("let t0 = AlertInfo | take 1;\n");
    for i in 1..300 {
        deep.push_str(&format!("let t{i} = t{};\n", i - 1));
    }
    deep.push_str("t299");
    assert!(matches!(
        run(&deep, data(), &opts()),
        Err(KqlError::TooDeep(_))
    ));
}

// ---- union ------------------------------------------------------------------------------------

#[test]
fn union_tables_withsource_wildcards_and_kinds() {
    let n = |t: &str| rows(t).len() as i64;
    assert_eq!(
        count("union DeviceLogonEvents, AlertInfo"),
        n("DeviceLogonEvents") + n("AlertInfo")
    );
    assert_eq!(
        count("DeviceLogonEvents | union AlertInfo"),
        n("DeviceLogonEvents") + n("AlertInfo")
    );
    assert_eq!(
        count("union Device*Events"),
        defender_emulator_kql::TABLE_NAMES
            .iter()
            .filter(|t| t.starts_with("Device") && t.ends_with("Events"))
            .map(|t| n(t))
            .sum::<i64>()
    );
    let out =
        q("union withsource=T Device*Events, (AlertInfo | take 5) | summarize c = count() by T");
    let got: BTreeMap<String, i64> = col(&out, "T")
        .iter()
        .zip(col(&out, "c"))
        .map(|(t, c)| (text(t), c.as_i64().unwrap()))
        .collect();
    assert_eq!(got["DeviceNetworkEvents"], n("DeviceNetworkEvents"));
    let args: Vec<i64> = got
        .iter()
        .filter(|(k, _)| k.starts_with("union_arg"))
        .map(|(_, c)| *c)
        .collect();
    assert_eq!(args, [5]);
    // Columns: the union of the inputs' (outer), their intersection (inner).
    let a = q("DeviceLogonEvents | take 1");
    let b = q("AlertInfo | take 1");
    let outer = q("union DeviceLogonEvents, AlertInfo | take 1");
    let mut want: Vec<&str> = names(&a);
    for c in names(&b) {
        if !want.contains(&c) {
            want.push(c);
        }
    }
    assert_eq!(names(&outer), want);
    let inner = q("union kind=inner DeviceLogonEvents, AlertInfo | take 1");
    let want: Vec<&str> = names(&a)
        .into_iter()
        .filter(|c| names(&b).contains(c))
        .collect();
    assert_eq!(names(&inner), want);
    // The same name with two types becomes name_type.
    let out = q("union (print x = 1), (print x = 'a')");
    assert_eq!(names(&out), ["x_long", "x_string"]);
}

// ---- aggregations ------------------------------------------------------------------------------

#[test]
fn make_set_make_list_and_dcount_by_group() {
    let out = q("DeviceLogonEvents | summarize s = make_set(ActionType), l = make_list(ActionType), os = makeset(ActionType), ol = makelist(ActionType), d = dcount(ActionType), c = count(), one = make_set(ActionType, 1) by DeviceName");
    let mut want: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
    for r in rows("DeviceLogonEvents") {
        let e = want.entry(text(&r["DeviceName"])).or_default();
        e.0.insert(text(&r["ActionType"]));
        e.1 += 1;
    }
    assert_eq!(out.rows.len(), want.len());
    for i in 0..out.rows.len() {
        let dev = text(&col(&out, "DeviceName")[i]);
        let (set, n) = &want[&dev];
        let arr = |c: &str| -> Vec<String> {
            serde_json::from_str::<Vec<String>>(&json(&col(&out, c)[i])).unwrap()
        };
        let s: BTreeSet<String> = arr("s").into_iter().collect();
        assert_eq!(&s, set);
        assert_eq!(arr("s").len(), set.len());
        assert_eq!(arr("os"), arr("s"));
        assert_eq!(arr("l").len(), *n);
        assert_eq!(arr("ol"), arr("l"));
        assert_eq!(arr("one").len(), 1);
        assert_eq!(col(&out, "d")[i], Value::Int(set.len() as i64));
        assert_eq!(col(&out, "c")[i], Value::Int(*n as i64));
    }
    assert_eq!(out.schema[1].type_name, "Object");
    let out = q("DeviceLogonEvents | summarize make_set(ActionType)");
    assert_eq!(names(&out), ["set_ActionType"]);
    let out = q(
        r#"print b = dynamic({"a": 1}) | union (print b = dynamic({"c": 2, "a": 3})) | summarize m = make_bag(b)"#,
    );
    assert_eq!(json(&out.rows[0][0]), r#"{"a":1,"c":2}"#);
}

#[test]
fn arg_max_and_arg_min_against_brute_force() {
    let out = q("DeviceLogonEvents | summarize arg_max(Timestamp, *) by DeviceName");
    assert_eq!(names(&out)[..2], ["DeviceName", "Timestamp"]);
    assert!(names(&out).contains(&"AccountName"));
    assert_eq!(
        names(&out).iter().filter(|c| **c == "DeviceName").count(),
        1
    );
    let out2 =
        q("DeviceLogonEvents | summarize arg_min(Timestamp, AccountName, ReportId) by DeviceName");
    assert_eq!(
        names(&out2),
        ["DeviceName", "Timestamp", "AccountName", "ReportId"]
    );
    let mut max: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut min: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in rows("DeviceLogonEvents") {
        let Value::DateTime(t) = r["Timestamp"] else {
            panic!()
        };
        let id = r["ReportId"].as_i64().unwrap();
        let d = text(&r["DeviceName"]);
        let e = max.entry(d.clone()).or_insert((t, id));
        if t > e.0 {
            *e = (t, id);
        }
        let e = min.entry(d).or_insert((t, id));
        if t < e.0 {
            *e = (t, id);
        }
    }
    for (out, want) in [(&out, &max), (&out2, &min)] {
        assert_eq!(out.rows.len(), want.len());
        for i in 0..out.rows.len() {
            let d = text(&col(out, "DeviceName")[i]);
            assert_eq!(col(out, "Timestamp")[i], Value::DateTime(want[&d].0));
            assert_eq!(col(out, "ReportId")[i], Value::Int(want[&d].1));
        }
    }
}

#[test]
fn expressions_over_aggregates() {
    let out = q("DeviceLogonEvents | summarize Rate = round(100.0 * countif(ActionType == 'LogonFailed') / count(), 2), N = count()");
    let all = rows("DeviceLogonEvents");
    let failed = all
        .iter()
        .filter(|r| text(&r["ActionType"]) == "LogonFailed")
        .count();
    let want = (100.0 * failed as f64 / all.len() as f64 * 100.0).round() / 100.0;
    assert_eq!(
        out.rows[0],
        vec![Value::Real(want), Value::Int(all.len() as i64)]
    );
}

// ---- mv-expand and parse -------------------------------------------------------------------------

#[test]
fn mv_expand_edge_cases() {
    let out = q(r#"print a = dynamic([1, 2, 3]), b = dynamic(["x"]), k = 7 | mv-expand a, b"#);
    assert_eq!(names(&out), ["a", "b", "k"]);
    assert_eq!(
        out.rows,
        vec![
            vec![Value::Int(1), Value::str("x"), Value::Int(7)],
            vec![Value::Int(2), Value::Null, Value::Int(7)],
            vec![Value::Int(3), Value::Null, Value::Int(7)],
        ]
    );
    assert_eq!(q("print a = dynamic([]) | mv-expand a").rows.len(), 0);
    assert_eq!(
        q("print a = dynamic(null) | mv-expand a").rows,
        vec![vec![Value::Null]]
    );
    let out = q(r#"print a = dynamic({"p": 1, "q": "r"}) | mv-expand a"#);
    let got: Vec<String> = col(&out, "a").iter().map(json).collect();
    assert_eq!(got, [r#"{"p":1}"#, r#"{"q":"r"}"#]);
    let out = q(r#"print a = dynamic([1, "2", 3]) | mv-expand x = a to typeof(long) limit 2"#);
    assert_eq!(names(&out), ["a", "x"]);
    assert_eq!(out.schema[1].type_name, "Int64");
    assert_eq!(col(&out, "x"), [Value::Int(1), Value::Null]);
    // Every row of a table, fanned out over its split command line.
    let out = q("DeviceProcessEvents | take 50 | extend p = split(ProcessCommandLine, ' ') | mv-expand p to typeof(string)");
    let want: usize = rows("DeviceProcessEvents")
        .iter()
        .take(50)
        .map(|r| text(&r["ProcessCommandLine"]).split(' ').count())
        .sum();
    assert_eq!(out.rows.len(), want);
}

#[test]
fn parse_edge_cases() {
    let out = q(
        r#"print s = "user=alice id=42 end" | parse s with "user=" User " id=" Id:long " " Rest"#,
    );
    assert_eq!(names(&out), ["s", "User", "Id", "Rest"]);
    assert_eq!(
        out.rows[0][1..],
        [Value::str("alice"), Value::Int(42), Value::str("end")]
    );
    let out = q(r#"print s = "x user=bob id=7" | parse s with * "user=" User " " * "id=" Id:long"#);
    assert_eq!(out.rows[0][1..], [Value::str("bob"), Value::Int(7)]);
    // No match: empty strings and nulls.
    let out = q(r#"print s = "nothing here" | parse s with "user=" User " id=" Id:long"#);
    assert_eq!(out.rows[0][1..], [Value::str(""), Value::Null]);
    // A typed column that does not convert fails the whole match.
    let out = q(r#"print s = "user=a id=x" | parse s with "user=" User " id=" Id:long"#);
    assert_eq!(out.rows[0][1..], [Value::str(""), Value::Null]);
    // Against the table: the domain of every sender.
    let out = q(
        r#"EmailEvents | parse SenderFromAddress with Local "@" Domain | project SenderFromAddress, Local, Domain"#,
    );
    for ((a, l), d) in col(&out, "SenderFromAddress")
        .iter()
        .zip(col(&out, "Local"))
        .zip(col(&out, "Domain"))
    {
        let a = text(a);
        let (wl, wd) = a.split_once('@').unwrap_or(("", ""));
        assert_eq!((text(&l), text(&d)), (wl.to_string(), wd.to_string()));
    }
    assert!(err("print s = 'a' | parse kind=regex s with 'a' x")
        .contains("valid KQL but not supported"));
}
