//! Property tests: generated predicates against a brute-force reference, arbitrary input
//! never panics, lookback and determinism.

use std::sync::OnceLock;

use defender_emulator_kql::{
    run, Dataset, DatasetConfig, RunOptions, Value, TABLE_NAMES, TICKS_PER_MS,
};
use proptest::prelude::*;

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600_000;
const HOUR_TICKS: i64 = 3_600 * 10_000_000;

fn data() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| {
        Dataset::generate(&DatasetConfig {
            seed: 42,
            rows_per_table: 400,
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

// ---- the reference: a tiny, independent interpreter ------------------------------------

/// The columns the generated predicates use, read once per row.
#[derive(Debug, Clone)]
struct RefRow {
    strs: [String; 3], // ActionType, LogonType, AccountName
    admin: bool,
    report: i64,
    ts: i64,
}

const STR_COLS: [&str; 3] = ["ActionType", "LogonType", "AccountName"];

fn ref_rows() -> &'static [RefRow] {
    static R: OnceLock<Vec<RefRow>> = OnceLock::new();
    R.get_or_init(build_ref_rows)
}

fn build_ref_rows() -> Vec<RefRow> {
    let t = data().table("DeviceLogonEvents").unwrap();
    let idx = |n: &str| t.column_index(n).unwrap();
    (0..t.row_count())
        .map(|r| {
            let s = |n: &str| t.value(r, idx(n)).as_str().unwrap().to_string();
            RefRow {
                strs: [s("ActionType"), s("LogonType"), s("AccountName")],
                admin: t.value(r, idx("IsLocalAdmin")) == Value::Bool(true),
                report: t.value(r, idx("ReportId")).as_i64().unwrap(),
                ts: match t.value(r, 0) {
                    Value::DateTime(x) => x,
                    _ => unreachable!(),
                },
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum SOp {
    Eq,
    Ne,
    EqCi,
    NeCi,
    Contains,
    NotContains,
    ContainsCs,
    Has,
    NotHas,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy)]
enum NOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone)]
enum P {
    Str(usize, SOp, String),
    In(usize, Vec<String>, bool, bool),
    Admin,
    AdminEq(bool),
    Report(NOp, i64),
    Between(i64, i64),
    TsAgo(NOp, i64),
    Lit(bool),
    And(Box<P>, Box<P>),
    Or(Box<P>, Box<P>),
    Not(Box<P>),
}

fn nop_text(o: NOp) -> &'static str {
    match o {
        NOp::Lt => "<",
        NOp::Le => "<=",
        NOp::Gt => ">",
        NOp::Ge => ">=",
        NOp::Eq => "==",
        NOp::Ne => "!=",
    }
}

fn nop_holds(o: NOp, a: i64, b: i64) -> bool {
    match o {
        NOp::Lt => a < b,
        NOp::Le => a <= b,
        NOp::Gt => a > b,
        NOp::Ge => a >= b,
        NOp::Eq => a == b,
        NOp::Ne => a != b,
    }
}

fn render(p: &P) -> String {
    match p {
        P::Str(c, op, s) => {
            let op = match op {
                SOp::Eq => "==",
                SOp::Ne => "!=",
                SOp::EqCi => "=~",
                SOp::NeCi => "!~",
                SOp::Contains => "contains",
                SOp::NotContains => "!contains",
                SOp::ContainsCs => "contains_cs",
                SOp::Has => "has",
                SOp::NotHas => "!has",
                SOp::StartsWith => "startswith",
                SOp::EndsWith => "endswith",
            };
            format!("{} {op} '{s}'", STR_COLS[*c])
        }
        P::In(c, list, neg, ci) => {
            let items: Vec<String> = list.iter().map(|s| format!("\"{s}\"")).collect();
            format!(
                "{} {}in{} ({})",
                STR_COLS[*c],
                if *neg { "!" } else { "" },
                if *ci { "~" } else { "" },
                items.join(", ")
            )
        }
        P::Admin => "IsLocalAdmin".into(),
        P::AdminEq(b) => format!("IsLocalAdmin == {b}"),
        P::Report(op, k) => format!("ReportId {} {k}", nop_text(*op)),
        P::Between(a, b) => format!("ReportId between ({a} .. {b})"),
        P::TsAgo(op, h) => format!("Timestamp {} ago({h}h)", nop_text(*op)),
        P::Lit(b) => b.to_string(),
        P::And(a, b) => format!("({} and {})", render(a), render(b)),
        P::Or(a, b) => format!("({} or {})", render(a), render(b)),
        P::Not(a) => format!("not({})", render(a)),
    }
}

fn reference(p: &P, r: &RefRow) -> bool {
    let low = |s: &str| s.to_lowercase();
    match p {
        P::Str(c, op, s) => {
            let v = &r.strs[*c];
            match op {
                SOp::Eq => v == s,
                SOp::Ne => v != s,
                SOp::EqCi => low(v) == low(s),
                SOp::NeCi => low(v) != low(s),
                SOp::Contains => low(v).contains(&low(s)),
                SOp::NotContains => !low(v).contains(&low(s)),
                SOp::ContainsCs => v.contains(s.as_str()),
                // needles are alphanumeric words: "has" means some whole term equals it
                SOp::Has => v
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|t| low(t) == low(s)),
                SOp::NotHas => !v
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|t| low(t) == low(s)),
                SOp::StartsWith => low(v).starts_with(&low(s)),
                SOp::EndsWith => low(v).ends_with(&low(s)),
            }
        }
        P::In(c, list, neg, ci) => {
            let v = &r.strs[*c];
            let found = list
                .iter()
                .any(|s| if *ci { low(s) == low(v) } else { s == v });
            found != *neg
        }
        P::Admin => r.admin,
        P::AdminEq(b) => r.admin == *b,
        P::Report(op, k) => nop_holds(*op, r.report, *k),
        P::Between(a, b) => *a <= r.report && r.report <= *b,
        P::TsAgo(op, h) => nop_holds(*op, r.ts, NOW * TICKS_PER_MS - h * HOUR_TICKS),
        P::Lit(b) => *b,
        P::And(a, b) => reference(a, r) && reference(b, r),
        P::Or(a, b) => reference(a, r) || reference(b, r),
        P::Not(a) => !reference(a, r),
    }
}

const WORDS: [&str; 22] = [
    "LogonSuccess",
    "LogonFailed",
    "logonfailed",
    "Logon",
    "logon",
    "Success",
    "Network",
    "network",
    "Interactive",
    "RemoteInteractive",
    "remote",
    "Batch",
    "Service",
    "Unlock",
    "system",
    "SYSTEM",
    "local",
    "service",
    "administrator",
    "net",
    "x",
    "e",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WORDS.to_vec()).prop_map(str::to_string),
        // real values of the table, sometimes with the case changed
        (0usize..3, 0usize..400, any::<bool>()).prop_map(|(c, r, upper)| {
            let v = ref_rows()[r].strs[c].clone();
            if upper {
                v.to_uppercase()
            } else {
                v
            }
        }),
    ]
}

fn leaf() -> impl Strategy<Value = P> {
    let sop = prop_oneof![
        Just(SOp::Eq),
        Just(SOp::Ne),
        Just(SOp::EqCi),
        Just(SOp::NeCi),
        Just(SOp::Contains),
        Just(SOp::NotContains),
        Just(SOp::ContainsCs),
        Just(SOp::StartsWith),
        Just(SOp::EndsWith),
    ];
    let nop = || {
        prop_oneof![
            Just(NOp::Lt),
            Just(NOp::Le),
            Just(NOp::Gt),
            Just(NOp::Ge),
            Just(NOp::Eq),
            Just(NOp::Ne),
        ]
    };
    let alnum_word = proptest::sample::select(
        WORDS
            .iter()
            .filter(|w| w.chars().all(char::is_alphanumeric))
            .map(|w| w.to_string())
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        4 => (0usize..3, sop, word()).prop_map(|(c, o, s)| P::Str(c, o, s)),
        2 => (0usize..3, prop_oneof![Just(SOp::Has), Just(SOp::NotHas)], alnum_word)
            .prop_map(|(c, o, s)| P::Str(c, o, s)),
        2 => (0usize..3, proptest::collection::vec(word(), 0..4), any::<bool>(), any::<bool>())
            .prop_map(|(c, l, n, ci)| P::In(c, l, n, ci)),
        1 => Just(P::Admin),
        1 => any::<bool>().prop_map(P::AdminEq),
        2 => (nop(), 9_990i64..13_300).prop_map(|(o, k)| P::Report(o, k)),
        1 => (9_990i64..13_300, 0i64..2_000).prop_map(|(a, d)| P::Between(a, a + d)),
        2 => (nop(), 0i64..(40 * 24)).prop_map(|(o, h)| P::TsAgo(o, h)),
        1 => any::<bool>().prop_map(P::Lit),
    ]
}

fn pred() -> impl Strategy<Value = P> {
    leaf().prop_recursive(5, 40, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| P::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| P::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| P::Not(Box::new(a))),
        ]
    })
}

fn report_ids(query: &str) -> Vec<i64> {
    let out = run(query, data(), &opts()).unwrap_or_else(|e| panic!("{query}: {e}"));
    out.rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn where_matches_brute_force(p in pred()) {
        let cut = (NOW - 30 * 86_400_000) * TICKS_PER_MS;
        let expected: Vec<i64> = ref_rows()
            .iter()
            .filter(|r| r.ts >= cut && reference(&p, r))
            .map(|r| r.report)
            .collect();
        let text = render(&p);
        // Fast path: predicates over table columns.
        let got = report_ids(&format!("DeviceLogonEvents | where {text} | project ReportId"));
        prop_assert_eq!(&got, &expected, "query: {}", text);
        // Generic path: the same columns recomputed, so no per-column shortcut applies.
        let got = report_ids(&format!(
            "DeviceLogonEvents
             | extend ActionType = strcat(ActionType, ''), LogonType = strcat(LogonType, ''),
                      AccountName = strcat(AccountName, ''), IsLocalAdmin = IsLocalAdmin == true,
                      ReportId = ReportId + 0, Timestamp = Timestamp + 0s
             | where {text} | project ReportId"
        ));
        prop_assert_eq!(&got, &expected, "query (generic): {}", text);
    }
}

// ---- arbitrary input never panics --------------------------------------------------------

const TOKENS: [&str; 104] = [
    "join",
    "kind=fullouter",
    "on",
    "$left.ReportId",
    "==",
    "$right.ReportId",
    "union",
    "withsource=S",
    "Device*Events",
    "mv-expand",
    "to typeof(long)",
    "parse",
    "with",
    "*",
    "dynamic([1, {\"a\": []}])",
    "{",
    "}",
    "[",
    "]",
    ".",
    ":",
    "let",
    "=",
    ";",
    "has_any",
    "matches regex",
    "extract(\"(a)\", 1, ",
    "make_set(",
    "arg_max(",
    "pack_array(",
    "split(",
    "print",
    "(x: string) {",
    "parse_json(",
    "case(",
    "\u{feff}",
    "9223372036854775807",
    "0",
    "1e308",
    "timespan(-1.00:00:00)",
    "bin(ReportId, 3)",
    "now()",
    "IsLocalAdmin",
    "strcat(",
    "DeviceLogonEvents",
    "AlertInfo",
    "|",
    "where",
    "project",
    "extend",
    "summarize",
    "count",
    "count()",
    "by",
    "take",
    "limit",
    "top",
    "sort",
    "order",
    "asc",
    "desc",
    "distinct",
    "project-away",
    "project-rename",
    "let",
    "=",
    "==",
    "!=",
    "=~",
    "!~",
    "<",
    ">",
    "<=",
    ">=",
    "and",
    "or",
    "not",
    "(",
    ")",
    ",",
    ";",
    "..",
    "between",
    "in",
    "!in",
    "in~",
    "has",
    "!contains",
    "startswith",
    "'x'",
    "\"y\"",
    "1",
    "-",
    "+",
    "*",
    "/",
    "%",
    "1d",
    "ago(1h)",
    "datetime(2024-01-01)",
    "Timestamp",
    "ActionType",
    "ReportId",
    "bin",
];

fn token_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS.to_vec()), 0..30)
        .prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,80}") {
        let _ = run(&s, data(), &opts());
        let _ = run(&format!("DeviceLogonEvents | {s}"), data(), &opts());
    }

    #[test]
    fn token_soup_never_panics(s in token_soup()) {
        let _ = run(&s, data(), &opts());
        let _ = run(&format!("DeviceLogonEvents | {s}"), data(), &opts());
        let _ = run(&format!("DeviceLogonEvents | where {s}"), data(), &opts());
    }

    #[test]
    fn arbitrary_bytes_as_lossy_utf8_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let s = String::from_utf8_lossy(&b);
        let _ = run(&s, data(), &opts());
    }
}

// ---- lookback and determinism --------------------------------------------------------------

#[test]
fn rows_older_than_30_days_are_never_returned() {
    let cut = (NOW - 30 * 86_400_000) * TICKS_PER_MS;
    for t in TABLE_NAMES {
        let all = data().table(t).unwrap().timestamps();
        if all.is_empty() {
            // A snapshot table (no Timestamp): every row is visible.
            let out = run(&format!("{t} | count"), data(), &opts()).unwrap();
            let n = data().table(t).unwrap().row_count() as i64;
            assert_eq!(out.rows[0][0], Value::Int(n), "{t}");
            continue;
        }
        assert!(all[0] < cut, "{t}: the generator must produce old data");
        let visible = all.iter().filter(|x| **x >= cut).count();
        let out = run(&format!("{t} | project Timestamp"), data(), &opts()).unwrap();
        assert_eq!(out.rows.len(), visible, "{t}");
        assert_eq!(out.rows_scanned, visible as u64);
        assert!(out
            .rows
            .iter()
            .all(|r| matches!(r[0], Value::DateTime(x) if x >= cut)));
        let old = run(
            &format!("{t} | where Timestamp < ago(30d)"),
            data(),
            &opts(),
        )
        .unwrap();
        assert!(old.rows.is_empty(), "{t}");
        let old = run(
            &format!("{t} | where Timestamp < datetime(2025-11-01) | count"),
            data(),
            &opts(),
        )
        .unwrap();
        assert_eq!(old.rows[0][0], Value::Int(0));
    }
    // A shorter window and no window.
    let o = RunOptions {
        lookback_ms: Some(86_400_000),
        ..opts()
    };
    let out = run("AlertInfo | project Timestamp", data(), &o).unwrap();
    let day_cut = (NOW - 86_400_000) * TICKS_PER_MS;
    assert!(out
        .rows
        .iter()
        .all(|r| matches!(r[0], Value::DateTime(x) if x >= day_cut)));
    assert!(!out.rows.is_empty());
    let o = RunOptions {
        lookback_ms: None,
        ..opts()
    };
    let out = run("AlertInfo | count", data(), &o).unwrap();
    assert_eq!(out.rows[0][0], Value::Int(400));
    // "now" moving forward hides more rows
    let later = RunOptions {
        now_unix_ms: NOW + 5 * 86_400_000,
        ..opts()
    };
    let a = run("AlertInfo | count", data(), &opts()).unwrap().rows[0][0].clone();
    let b = run("AlertInfo | count", data(), &later).unwrap().rows[0][0].clone();
    assert!(b.as_i64() < a.as_i64());
}

fn all_rows(d: &Dataset) -> Vec<Vec<Value>> {
    d.tables()
        .iter()
        .flat_map(|t| (0..t.row_count()).map(move |r| t.row(r)))
        .collect()
}

#[test]
fn same_seed_same_data() {
    let cfg = DatasetConfig {
        seed: 99,
        rows_per_table: 500,
        anchor_unix_ms: NOW,
        ..DatasetConfig::default()
    }
    .with_table_rows("EmailEvents", 50);
    let a = Dataset::generate(&cfg);
    let b = Dataset::generate(&cfg);
    assert_eq!(all_rows(&a), all_rows(&b));
    assert_eq!(a.table("EmailEvents").unwrap().row_count(), 50);
    assert_eq!(a.row_counts()[0], ("DeviceProcessEvents", 500));
    assert_eq!(a.table_names(), TABLE_NAMES.to_vec());
    let c = Dataset::generate(&DatasetConfig {
        seed: 100,
        ..cfg.clone()
    });
    assert_ne!(all_rows(&a), all_rows(&c));
    // A table's content does not depend on the other tables' sizes.
    let d = Dataset::generate(&cfg.clone().with_table_rows("AlertInfo", 7));
    let rows = |d: &Dataset| {
        let t = d.table("DeviceNetworkEvents").unwrap();
        (0..t.row_count()).map(|r| t.row(r)).collect::<Vec<_>>()
    };
    assert_eq!(rows(&a), rows(&d));
    // Query results are deterministic too.
    let q =
        "DeviceProcessEvents | summarize count() by FileName | sort by count_ desc, FileName asc";
    let o = opts();
    assert_eq!(run(q, &a, &o).unwrap(), run(q, &b, &o).unwrap());
}

#[test]
fn empty_and_tiny_tables_work() {
    let d = Dataset::generate(
        &DatasetConfig {
            rows_per_table: 0,
            anchor_unix_ms: NOW,
            ..DatasetConfig::default()
        }
        .with_table_rows("AlertInfo", 1),
    );
    for t in TABLE_NAMES {
        if d.table(t).unwrap().timestamps().is_empty() {
            assert_eq!(d.table(t).unwrap().row_count(), 0, "{t}");
            continue;
        }
        let out = run(&format!("{t} | where Timestamp > ago(40d) | summarize count() by bin(Timestamp, 1h) | sort by Timestamp"), &d, &opts()).unwrap();
        assert!(out.rows.len() <= 1);
    }
}

// ---- join against a nested-loop reference --------------------------------------------------

const JOIN_KINDS: [&str; 9] = [
    "innerunique",
    "inner",
    "leftouter",
    "rightouter",
    "fullouter",
    "leftanti",
    "rightanti",
    "leftsemi",
    "rightsemi",
];

/// `(id, key)` rows of a query that projects `Id` and `K` (a null key as `None`).
fn id_key_rows(query: &str) -> Vec<(i64, Option<i64>)> {
    let out = run(query, data(), &opts()).unwrap_or_else(|e| panic!("{query}: {e}"));
    out.rows
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64()))
        .collect()
}

/// The `(left id, right id)` pairs a join of `kind` must produce: a nested loop.
fn nested_loop(
    kind: &str,
    left: &[(i64, Option<i64>)],
    right: &[(i64, Option<i64>)],
) -> Vec<(Option<i64>, Option<i64>)> {
    let eq = |a: Option<i64>, b: Option<i64>| a.is_some() && a == b;
    let left: Vec<(i64, Option<i64>)> = if kind == "innerunique" {
        // One left row per key, the first; a null key joins nothing.
        let mut seen = Vec::new();
        left.iter()
            .filter(|(_, k)| {
                k.is_some() && !seen.contains(k) && {
                    seen.push(*k);
                    true
                }
            })
            .copied()
            .collect()
    } else {
        left.to_vec()
    };
    let mut out = Vec::new();
    let inner = |out: &mut Vec<_>| {
        for l in &left {
            for r in right {
                if eq(l.1, r.1) {
                    out.push((Some(l.0), Some(r.0)));
                }
            }
        }
    };
    let lonely_left = |out: &mut Vec<_>, want_match: bool| {
        for l in &left {
            if right.iter().any(|r| eq(l.1, r.1)) == want_match {
                out.push((Some(l.0), None));
            }
        }
    };
    let lonely_right = |out: &mut Vec<_>, want_match: bool| {
        for r in right {
            if left.iter().any(|l| eq(l.1, r.1)) == want_match {
                out.push((None, Some(r.0)));
            }
        }
    };
    match kind {
        "innerunique" | "inner" => inner(&mut out),
        "leftouter" => {
            inner(&mut out);
            lonely_left(&mut out, false);
        }
        "rightouter" => {
            inner(&mut out);
            lonely_right(&mut out, false);
        }
        "fullouter" => {
            inner(&mut out);
            lonely_left(&mut out, false);
            lonely_right(&mut out, false);
        }
        "leftanti" => lonely_left(&mut out, false),
        "leftsemi" => lonely_left(&mut out, true),
        "rightanti" => lonely_right(&mut out, false),
        _ => lonely_right(&mut out, true),
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random small tables (rows of two tables, keys modulo a small number, some null)
    /// joined by every kind, both `on` forms, with and without a hint.
    #[test]
    fn join_matches_a_nested_loop(
        kind in proptest::sample::select(JOIN_KINDS.to_vec()),
        ln in 0usize..25, rn in 0usize..25,
        lm in 1i64..6, rm in 1i64..6, null_every in 3i64..9,
        dollar in any::<bool>(), hint in any::<bool>(),
    ) {
        let left = format!(
            "DeviceLogonEvents | take {ln} | project Id = ReportId, K = iff(ReportId % {null_every} == 0, tolong(''), ReportId % {lm})"
        );
        let right_key = if dollar { "K2" } else { "K" };
        let right = format!(
            "DeviceNetworkEvents | take {rn} | project Id = ReportId, {right_key} = iff(ReportId % {null_every} == 1, tolong(''), ReportId % {rm})"
        );
        let on = if dollar { "$left.K == $right.K2" } else { "K" };
        let hint = if hint { "hint.strategy=shuffle " } else { "" };
        let joined = format!("{left} | join {hint}kind={kind} ({right}) on {on}");
        let out = run(&joined, data(), &opts()).unwrap_or_else(|e| panic!("{joined}: {e}"));
        let names: Vec<&str> = out.schema.iter().map(|c| c.name.as_str()).collect();
        let (li, ri) = match kind {
            "leftanti" | "leftsemi" => {
                prop_assert_eq!(&names, &["Id", "K"]);
                (Some(0), None)
            }
            "rightanti" | "rightsemi" => {
                prop_assert_eq!(&names, &["Id", right_key]);
                (None, Some(0))
            }
            _ => {
                prop_assert_eq!(&names, &["Id", "K", "Id1", if dollar { "K2" } else { "K1" }]);
                (Some(0), Some(2))
            }
        };
        let mut got: Vec<(Option<i64>, Option<i64>)> = out
            .rows
            .iter()
            .map(|r| (li.and_then(|i| r[i].as_i64()), ri.and_then(|i| r[i].as_i64())))
            .collect();
        got.sort();
        let want = nested_loop(kind, &id_key_rows(&left), &id_key_rows(&right));
        prop_assert_eq!(got, want, "{}", joined);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `lookup` is the `leftouter` (its default) or `inner` join of the same random
    /// tables, checked against the nested loop, without the right side's key column.
    #[test]
    fn lookup_matches_a_nested_loop(
        kind in proptest::sample::select(vec!["", "leftouter", "inner"]),
        ln in 0usize..25, rn in 0usize..25,
        lm in 1i64..6, rm in 1i64..6, null_every in 3i64..9,
        dollar in any::<bool>(),
    ) {
        let left = format!(
            "DeviceLogonEvents | take {ln} | project Id = ReportId, K = iff(ReportId % {null_every} == 0, tolong(''), ReportId % {lm})"
        );
        let right_key = if dollar { "K2" } else { "K" };
        let right = format!(
            "DeviceNetworkEvents | take {rn} | project Id = ReportId, {right_key} = iff(ReportId % {null_every} == 1, tolong(''), ReportId % {rm})"
        );
        let on = if dollar { "$left.K == $right.K2" } else { "K" };
        let kind_param = if kind.is_empty() { String::new() } else { format!("kind={kind} ") };
        let looked = format!("{left} | lookup {kind_param}({right}) on {on}");
        let out = run(&looked, data(), &opts()).unwrap_or_else(|e| panic!("{looked}: {e}"));
        let names: Vec<&str> = out.schema.iter().map(|c| c.name.as_str()).collect();
        prop_assert_eq!(&names, &["Id", "K", "Id1"]);
        let mut got: Vec<(Option<i64>, Option<i64>)> = out
            .rows
            .iter()
            .map(|r| (r[0].as_i64(), r[2].as_i64()))
            .collect();
        got.sort();
        let reference = if kind == "inner" { "inner" } else { "leftouter" };
        let want = nested_loop(reference, &id_key_rows(&left), &id_key_rows(&right));
        prop_assert_eq!(got, want, "{}", looked);
    }
}

/// No prefix of a query that uses the new language features panics.
#[test]
fn every_prefix_of_rich_queries_is_an_answer_not_a_panic() {
    let queries = [
        r#"let T = (AlertEvidence | where EntityType == "Machine" | distinct DeviceId); DeviceProcessEvents | join kind=leftouter hint.strategy=broadcast T on $left.DeviceId == $right.DeviceId | summarize arg_max(Timestamp, *), make_set(FileName, 5) by DeviceName"#,
        r#"let f = (n: string = "x") { print a = dynamic({"k": [1, 2]}).k[-1], b = n }; union withsource=S f(), (f("y") | mv-expand c = pack_array(1, 2) to typeof(long)) | parse b with * "x" rest"#,
        r#"DeviceProcessEvents | where ProcessCommandLine has_any ("a", "b") and FolderPath matches regex @"\\w+" | extend e = extract_all(@"(\d)", ProcessCommandLine), c = case(true, 1, 2) | render table"#,
    ];
    for q in queries {
        for (i, _) in q.char_indices() {
            let _ = run(&q[..i], data(), &opts());
        }
    }
}
