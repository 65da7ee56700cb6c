//! Queries over the [`QueryLimits`] fail with `LimitExceeded` (the service's "preempted"
//! message) instead of exhausting memory, stack or time; queries within them still run.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use defender_emulator_kql::{
    run, Dataset, DatasetConfig, KqlError, Limit, QueryLimits, RunOptions, PREEMPTED,
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

fn with(limits: QueryLimits) -> RunOptions {
    RunOptions {
        now_unix_ms: NOW,
        limits,
        ..RunOptions::default()
    }
}

fn opts() -> RunOptions {
    with(QueryLimits::default())
}

fn over(query: &str, o: &RunOptions) -> Limit {
    match run(query, data(), o) {
        Err(KqlError::LimitExceeded(l)) => l,
        other => panic!("expected a limit, got {:?}", other.map(|o| o.rows.len())),
    }
}

/// `let a0 = 'x'; let a1 = strcat(a0, a0); ...`: a string of 2^n bytes.
fn doubling_lets(n: usize) -> String {
    let mut q = String::from("let a0 = 'x';\n");
    for i in 1..=n {
        q.push_str(&format!("let a{i} = strcat(a{p}, a{p});\n", p = i - 1));
    }
    q
}

#[test]
fn the_message_is_the_services() {
    assert_eq!(
        KqlError::LimitExceeded(Limit::Memory).to_string(),
        PREEMPTED
    );
    assert!(PREEMPTED.starts_with(
        "Query execution has exceeded the allowed limits. The query execution was preempted."
    ));
}

#[test]
fn exploding_strcat_is_stopped_at_the_string_limit() {
    // Doubling per extend: 16 GiB by the 34th step, stopped at 1 MiB.
    let mut q = String::from("AlertInfo | take 1 | extend s0 = Title");
    for i in 1..40 {
        q.push_str(&format!(" | extend s{i} = strcat(s{p}, s{p})", p = i - 1));
    }
    assert_eq!(over(&q, &opts()), Limit::StringLength);
    // Over every row, the memory budget trips even before any one string is too long.
    let q = q.replace("| take 1 ", "");
    assert!(matches!(
        over(&q, &opts()),
        Limit::Memory | Limit::StringLength
    ));
    // In let statements (folded once, before any row).
    let q = format!("{}AlertInfo | take 1", doubling_lets(40));
    assert_eq!(over(&q, &opts()), Limit::StringLength);
    // 2^20 bytes is exactly the default limit, and allowed; 2^21 is not.
    let ok = format!(
        "{}AlertInfo | take 1 | extend n = strlen(a20)",
        doubling_lets(20)
    );
    let out = run(&ok, data(), &opts()).unwrap();
    assert_eq!(
        out.rows[0].last(),
        Some(&defender_emulator_kql::Value::Int(1 << 20))
    );
    let q = format!(
        "{}AlertInfo | take 1 | extend n = strlen(a21)",
        doubling_lets(21)
    );
    assert_eq!(over(&q, &opts()), Limit::StringLength);
    // A smaller configured limit.
    let small = with(QueryLimits {
        max_string_bytes: 100,
        ..QueryLimits::default()
    });
    assert_eq!(
        over("AlertInfo | extend s = strcat(Title, Title, Title, Title, Title, Title, Title, Title, Title, Title)", &small),
        Limit::StringLength
    );
    assert_eq!(
        over(
            &format!(
                "{}AlertInfo | take 1 | extend u = toupper(a7)",
                doubling_lets(7)
            ),
            &small
        ),
        Limit::StringLength
    );
}

#[test]
fn materialised_values_are_bounded_by_the_memory_limit() {
    let tight = with(QueryLimits {
        max_memory_bytes: 1024 * 1024,
        ..QueryLimits::default()
    });
    // A 64 KiB constant copied into every row.
    let q = format!(
        "{}DeviceProcessEvents | extend big = a16",
        doubling_lets(16)
    );
    assert_eq!(over(&q, &tight), Limit::Memory);
    let q = format!(
        "{}DeviceProcessEvents | summarize count() by k = strcat(a10, DeviceId, ProcessId)",
        doubling_lets(10)
    );
    assert_eq!(over(&q, &tight), Limit::Memory);
    let q = format!(
        "{}DeviceProcessEvents | summarize dcount(strcat(a10, ProcessId))",
        doubling_lets(10)
    );
    assert_eq!(over(&q, &tight), Limit::Memory);
    // The same queries fit in the default budget.
    assert!(run(
        &format!(
            "{}DeviceProcessEvents | extend big = a10 | take 5",
            doubling_lets(10)
        ),
        data(),
        &opts()
    )
    .is_ok());
}

#[test]
fn too_many_columns() {
    let extend = |n: usize| {
        let cols: Vec<String> = (0..n).map(|i| format!("c{i} = {i}")).collect();
        format!("AlertInfo | take 3 | extend {}", cols.join(", "))
    };
    // AlertInfo has a handful of columns of its own.
    assert!(run(&extend(900), data(), &opts()).is_ok());
    assert_eq!(over(&extend(1_000), &opts()), Limit::Columns);
    assert_eq!(over(&extend(50_000), &opts()), Limit::Columns);
    let few = with(QueryLimits {
        max_columns: 3,
        ..QueryLimits::default()
    });
    assert_eq!(over("AlertInfo | take 1", &few), Limit::Columns);
    assert!(run("AlertInfo | project Title, Severity", data(), &few).is_ok());
    assert_eq!(
        over(
            "AlertInfo | summarize a = count(), b = count(), c = count() by Title",
            &few
        ),
        Limit::Columns
    );
}

#[test]
fn too_many_operators() {
    let q = |n: usize| format!("AlertInfo{}", " | take 1".repeat(n));
    assert!(run(&q(200), data(), &opts()).is_ok());
    assert_eq!(over(&q(201), &opts()), Limit::Operators);
    assert_eq!(over(&q(100_000), &opts()), Limit::Operators);
}

#[test]
fn nesting_is_configurable() {
    let shallow = with(QueryLimits {
        max_nesting: 5,
        ..QueryLimits::default()
    });
    assert!(run("AlertInfo | where ((true))", data(), &shallow).is_ok());
    assert!(matches!(
        run("AlertInfo | where ((((((true))))))", data(), &shallow),
        Err(KqlError::TooDeep(5))
    ));
}

#[test]
fn a_query_that_runs_too_long_is_preempted() {
    static BIG: OnceLock<Dataset> = OnceLock::new();
    let big = BIG.get_or_init(|| {
        Dataset::generate(&DatasetConfig {
            seed: 3,
            rows_per_table: 10,
            table_rows: vec![("DeviceProcessEvents".into(), 100_000)],
            anchor_unix_ms: NOW,
            ..DatasetConfig::default()
        })
    });
    let q = "DeviceProcessEvents
        | extend a = strcat(FileName, ProcessCommandLine, FolderPath)
        | where a contains 'zzz-not-there' or strlen(a) > 3
        | sort by a asc";
    let quick = with(QueryLimits {
        max_run_time: Some(Duration::from_millis(1)),
        ..QueryLimits::default()
    });
    let t = Instant::now();
    assert!(matches!(
        run(q, big, &quick),
        Err(KqlError::LimitExceeded(Limit::RunTime))
    ));
    let preempted_after = t.elapsed();
    // Without a limit the same query runs to the end, and takes longer than the
    // preempted one did.
    let unlimited = with(QueryLimits {
        max_run_time: None,
        ..QueryLimits::default()
    });
    let t = Instant::now();
    assert!(run(q, big, &unlimited).is_ok());
    assert!(t.elapsed() > preempted_after);
}

#[test]
fn a_long_needle_is_searched_in_linear_time() {
    // A 1 MiB haystack of `x` and a 256 KiB needle that almost matches everywhere:
    // comparing every window would take minutes.
    let q = format!(
        "{}let n = strcat(a18, 'y');\nAlertInfo | take 1 | where strcat(a19, a19) contains n | count",
        doubling_lets(19)
    );
    let t = Instant::now();
    let out = run(&q, data(), &opts()).unwrap();
    assert_eq!(out.rows[0][0], defender_emulator_kql::Value::Int(0));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_join_that_explodes_is_stopped_at_the_memory_limit() {
    let small = with(QueryLimits {
        max_memory_bytes: 16 * 1024 * 1024,
        ..QueryLimits::default()
    });
    // Every row matches every row: ~3,000 x 3,000 pairs of 30 columns.
    let q = "DeviceProcessEvents | extend k = 1 | join kind=inner (DeviceProcessEvents | extend k = 1) on k";
    assert_eq!(over(q, &small), Limit::Memory);
    // The same join on a selective key runs.
    let out = run(
        "DeviceProcessEvents | join kind=inner (DeviceProcessEvents) on ReportId | count",
        data(),
        &small,
    )
    .unwrap();
    assert!(out.rows[0][0].as_i64().unwrap() > 0);
}

#[test]
fn an_mv_expand_that_explodes_is_stopped() {
    let small = with(QueryLimits {
        max_memory_bytes: 16 * 1024 * 1024,
        ..QueryLimits::default()
    });
    let q = "DeviceProcessEvents | summarize l = make_list(ReportId) | extend r = l | mv-expand l | mv-expand r";
    assert_eq!(over(q, &small), Limit::Memory);
    // make_list itself is charged: a list of every string of a large table.
    let tiny = with(QueryLimits {
        max_memory_bytes: 64 * 1024,
        ..QueryLimits::default()
    });
    assert_eq!(
        over(
            "DeviceProcessEvents | summarize make_list(ProcessCommandLine)",
            &tiny
        ),
        Limit::Memory
    );
}
