//! `lookup`, `make-series`, `evaluate bag_unpack` and the `range` source, each against
//! hand-computed expectations or a brute-force count over the synthetic tables.

use std::sync::OnceLock;

use defender_emulator_kql::{
    parse_datetime, run, Dataset, DatasetConfig, KqlError, Limit, QueryOutput, RunOptions, Value,
    TICKS_PER_DAY,
};
use proptest::prelude::*;
use serde_json::json;

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

fn opts() -> RunOptions {
    RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    }
}

fn q(query: &str) -> QueryOutput {
    run(query, data(), &opts()).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn err(query: &str) -> KqlError {
    match run(query, data(), &opts()) {
        Ok(_) => panic!("expected an error for {query}"),
        Err(e) => e,
    }
}

fn names(out: &QueryOutput) -> Vec<&str> {
    out.schema.iter().map(|c| c.name.as_str()).collect()
}

fn types(out: &QueryOutput) -> Vec<&str> {
    out.schema.iter().map(|c| c.type_name).collect()
}

/// Every row as JSON values (dynamic columns as their JSON, datetimes as their text).
fn rows(out: &QueryOutput) -> Vec<Vec<serde_json::Value>> {
    (0..out.rows.len())
        .map(|i| {
            let r = out.row_json(i);
            out.schema.iter().map(|c| r[&c.name].clone()).collect()
        })
        .collect()
}

fn dt(text: &str) -> String {
    Value::DateTime(parse_datetime(text).unwrap()).to_text()
}

// ---- range -------------------------------------------------------------------------------

#[test]
fn range_counts_up_down_and_over_datetimes() {
    let out = q("range x from 1 to 10 step 3");
    assert_eq!(names(&out), ["x"]);
    assert_eq!(types(&out), ["Int64"]);
    assert_eq!(
        rows(&out),
        [[json!(1)], [json!(4)], [json!(7)], [json!(10)]]
    );

    let out = q("range x from 5 to 1 step -2");
    assert_eq!(rows(&out), [[json!(5)], [json!(3)], [json!(1)]]);
    assert!(q("range x from 1 to 0 step 1").rows.is_empty());

    let out = q("range Day from datetime(2024-02-28) to datetime(2024-03-01) step 1d");
    assert_eq!(types(&out)[0], "DateTime");
    let days: Vec<serde_json::Value> = rows(&out).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        days,
        [dt("2024-02-28"), dt("2024-02-29"), dt("2024-03-01")].map(serde_json::Value::from)
    );

    let out = q("range x from 0.5 to 1.6 step 0.5 | summarize s = sum(x)");
    assert_eq!(rows(&out), [[json!(3.0)]]);
}

#[test]
fn range_refuses_a_zero_step_and_caps_its_rows() {
    assert!(err("range x from 1 to 10 step 0")
        .to_string()
        .contains("step"));
    assert!(matches!(
        err("range x from 1 to 10 step 'a'"),
        KqlError::Semantic(_) | KqlError::Syntax { .. }
    ));
    // Ten billion rows: refused before any is built, with the service's limits message.
    let e = err("range x from 1 to 10000000000 step 1");
    assert_eq!(e, KqlError::LimitExceeded(Limit::Memory));
    assert!(e
        .to_string()
        .starts_with("Query execution has exceeded the allowed limits"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `range` against a loop.
    #[test]
    fn range_matches_a_loop(a in -20i64..20, b in -20i64..20, s in prop_oneof![-7i64..0, 1i64..8]) {
        let out = q(&format!("range x from {a} to {b} step {s}"));
        let got: Vec<i64> = out.rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        let mut want = Vec::new();
        let mut x = a;
        while (s > 0 && x <= b) || (s < 0 && x >= b) {
            want.push(x);
            x += s;
        }
        prop_assert_eq!(got, want);
    }
}

// ---- lookup ------------------------------------------------------------------------------

const PEOPLE: &str = r#"datatable(Name: string, Dept: string, Age: long)[
    "ann", "sec", 30,
    "bob", "ops", 40,
    "cid", "hr", 50,
    "dan", "", 60]"#;
const DEPTS: &str = r#"datatable(Code: string, Floor: long, Age: long)[
    "sec", 3, 1,
    "ops", 2, 2,
    "ops", 9, 3]"#;

#[test]
fn lookup_keeps_left_rows_and_drops_the_right_keys() {
    let out = q(&format!(
        "{PEOPLE} | lookup ({DEPTS}) on $left.Dept == $right.Code"
    ));
    // The right key `Code` is not repeated; the right `Age` is renamed as `join` does.
    assert_eq!(names(&out), ["Name", "Dept", "Age", "Floor", "Age1"]);
    assert_eq!(
        rows(&out),
        [
            vec![json!("ann"), json!("sec"), json!(30), json!(3), json!(1)],
            vec![json!("bob"), json!("ops"), json!(40), json!(2), json!(2)],
            vec![json!("bob"), json!("ops"), json!(40), json!(9), json!(3)],
            vec![
                json!("cid"),
                json!("hr"),
                json!(50),
                json!(null),
                json!(null)
            ],
            vec![json!("dan"), json!(""), json!(60), json!(null), json!(null)],
        ]
    );
    let inner = q(&format!(
        "{PEOPLE} | lookup kind=inner ({DEPTS} | project Dept = Code, Floor) on Dept | project Name, Floor"
    ));
    assert_eq!(
        rows(&inner),
        [
            [json!("ann"), json!(3)],
            [json!("bob"), json!(2)],
            [json!("bob"), json!(9)]
        ]
    );
}

#[test]
fn lookup_takes_only_its_two_kinds() {
    let e = err(&format!(
        "{PEOPLE} | lookup kind=fullouter ({DEPTS}) on $left.Dept == $right.Code"
    ));
    assert!(
        e.to_string().contains("expected 'leftouter' or 'inner'"),
        "{e}"
    );
    let e = err(&format!("{PEOPLE} | lookup ({DEPTS}) on Nope"));
    assert!(e.to_string().contains("'Nope'"), "{e}");
}

// ---- make-series -------------------------------------------------------------------------

const PURCHASES: &str = r#"datatable(Supplier: string, Price: real, Purchase: datetime)[
    "A", 1.0, datetime(2016-09-10 00:00),
    "A", 2.0, datetime(2016-09-10 12:00),
    "A", 4.0, datetime(2016-09-12 06:00),
    "B", 8.0, datetime(2016-09-11),
    "B", 16.0, datetime(2016-09-15)]"#;

#[test]
fn make_series_fills_absent_steps_with_the_default() {
    let out = q(&format!(
        "{PURCHASES} | make-series Total = sum(Price) default = -1, n = count() on Purchase from datetime(2016-09-10) to datetime(2016-09-13) step 1d by Supplier"
    ));
    assert_eq!(names(&out), ["Supplier", "Total", "n", "Purchase"]);
    assert_eq!(types(&out), ["String", "Object", "Object", "Object"]);
    let axis = json!([dt("2016-09-10"), dt("2016-09-11"), dt("2016-09-12")]);
    assert_eq!(
        rows(&out),
        [
            vec![
                json!("A"),
                json!([3.0, -1, 4.0]),
                json!([2, 0, 1]),
                axis.clone()
            ],
            // B's purchase of the 15th is past `to` (exclusive).
            vec![json!("B"), json!([-1, 8.0, -1]), json!([0, 1, 0]), axis],
        ]
    );
}

#[test]
fn make_series_without_bounds_spans_the_data_and_accepts_in_range() {
    let out = q(&format!(
        "{PURCHASES} | where Supplier == 'A' | make-series count() on Purchase step 1d"
    ));
    assert_eq!(names(&out), ["count_", "Purchase"]);
    assert_eq!(
        rows(&out),
        [[
            json!([2, 0, 1]),
            json!([dt("2016-09-10"), dt("2016-09-11"), dt("2016-09-12")])
        ]]
    );
    let out = q(&format!(
        "{PURCHASES} | make-series m = max(Price) on Purchase in range(datetime(2016-09-11), datetime(2016-09-16), 2d)"
    ));
    assert_eq!(
        rows(&out),
        [[
            json!([8.0, 0, 16.0]),
            json!([dt("2016-09-11"), dt("2016-09-13"), dt("2016-09-15")])
        ]]
    );
    // No rows: no series, unless kind=nonempty.
    let empty = format!("{PURCHASES} | where Supplier == 'Z' | make-series");
    assert!(q(&format!(
        "{empty} n = count() on Purchase from datetime(2016-09-10) to datetime(2016-09-12) step 1d"
    ))
    .rows
    .is_empty());
    let out = q(&format!("{PURCHASES} | where Supplier == 'Z' | make-series kind=nonempty n = count() on Purchase from datetime(2016-09-10) to datetime(2016-09-12) step 1d"));
    assert_eq!(rows(&out)[0][0], json!([0, 0]));
}

#[test]
fn make_series_counts_agree_with_summarize() {
    // Per device, the series of daily counts over the last week adds up to the rows a
    // plain filter counts, and each element to the count of its bin.
    let series = q("DeviceProcessEvents | make-series n = count() on Timestamp from startofday(ago(7d)) to startofday(now()) step 1d by DeviceName");
    let bins = q("DeviceProcessEvents | where Timestamp >= startofday(ago(7d)) and Timestamp < startofday(now()) | summarize n = count() by DeviceName, Day = bin(Timestamp, 1d)");
    assert!(!series.rows.is_empty());
    let start = (NOW * 10_000 - 7 * TICKS_PER_DAY).div_euclid(TICKS_PER_DAY) * TICKS_PER_DAY;
    let mut want = std::collections::HashMap::new();
    for r in &bins.rows {
        let Value::DateTime(day) = r[1] else {
            panic!("{r:?}")
        };
        let i = ((day - start) / TICKS_PER_DAY) as usize;
        want.entry(r[0].to_text()).or_insert(vec![0i64; 7])[i] = r[2].as_i64().unwrap();
    }
    assert_eq!(series.rows.len(), want.len());
    for r in &series.rows {
        let Value::Dynamic(arr) = &r[1] else {
            panic!("{r:?}")
        };
        let got: Vec<i64> = arr
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(got, want[&r[0].to_text()], "{}", r[0].to_text());
    }
}

#[test]
fn make_series_refuses_bad_axes_and_steps() {
    let bad_step = format!("{PURCHASES} | make-series count() on Purchase step 0d");
    assert!(err(&bad_step).to_string().contains("step must be positive"));
    let string_axis = format!("{PURCHASES} | make-series count() on Supplier step 1");
    assert!(matches!(err(&string_axis), KqlError::Semantic(_)));
    // A step of 100 ms over a year is more points than the memory allows.
    let huge = format!("{PURCHASES} | make-series count() on Purchase from datetime(2016-01-01) to datetime(2017-01-01) step 100ms");
    assert_eq!(err(&huge), KqlError::LimitExceeded(Limit::Memory));
}

// ---- evaluate ----------------------------------------------------------------------------

const BAGS: &str = r#"datatable(Id: long, d: dynamic)[
    1, dynamic({"Name": "a", "Age": 20}),
    2, dynamic({"Name": "b", "Admin": true, "Age": 2.5}),
    3, dynamic(null),
    4, dynamic([1, 2])]"#;

#[test]
fn bag_unpack_makes_a_column_per_key() {
    let out = q(&format!("{BAGS} | evaluate bag_unpack(d)"));
    assert_eq!(names(&out), ["Id", "Admin", "Age", "Name"]);
    assert_eq!(types(&out), ["Int64", "Boolean", "Double", "String"]);
    assert_eq!(
        rows(&out),
        [
            vec![json!(1), json!(null), json!(20.0), json!("a")],
            vec![json!(2), json!(true), json!(2.5), json!("b")],
            vec![json!(3), json!(null), json!(null), json!(null)],
            vec![json!(4), json!(null), json!(null), json!(null)],
        ]
    );
    let out = q(&format!(
        "{BAGS} | evaluate bag_unpack(d, 'p_') | project p_Name"
    ));
    assert_eq!(names(&out), ["p_Name"]);
}

#[test]
fn bag_unpack_conflicts_and_other_plugins_are_typed_errors() {
    let e = err(&format!(
        "{BAGS} | extend Name = 'x' | evaluate bag_unpack(d)"
    ));
    assert!(e.to_string().contains("'Name' already exists"), "{e}");
    assert!(matches!(
        err(&format!("{BAGS} | evaluate bag_unpack(Id)")),
        KqlError::Semantic(_)
    ));
    let e = err("DeviceProcessEvents | evaluate autocluster()");
    assert!(
        matches!(&e, KqlError::NotSupported { feature, .. } if feature == "evaluate autocluster()"),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("is valid KQL but not supported by this emulator"));
}
