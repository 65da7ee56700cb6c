//! Hostile input: whatever a request asks for, the emulator answers it with a status and
//! the error envelope and keeps serving. Each test ends with a normal request.

mod common;

use common::*;
use reqwest::StatusCode;

/// The incidents list still answers.
async fn still_lists(env: &Env, token: &str) {
    let (s, v) = json(env.get(token, "/api/incidents?$top=1").await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_filter_nested_tens_of_thousands_deep_is_a_400_not_a_crash() {
    let env = Env::start(small()).await;
    let token = env.token().await;
    for dialect_path in ["/api/incidents", "/v1.0/security/incidents"] {
        // Unencoded, so the URL stays under the 64 KiB a URI may have; tens of
        // thousands of levels were enough to overflow the stack before the limit.
        for hostile in ["(".repeat(40_000), "not(".repeat(12_000)] {
            let url = format!("{}{dialect_path}?$filter={hostile}", env.base);
            let (s, v) = json(env.get_url(&token, &url).await).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
            let m = envelope(&v, "BadRequest");
            assert!(m.contains("The recursion limit has been exceeded."), "{m}");
        }
    }
    // A long flat chain is bounded by the node count instead.
    let chain = vec!["status%20eq%20'Active'"; 1_200].join("%20or%20");
    let (s, v) = json(
        env.get(&token, &format!("/api/incidents?$filter={chain}"))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(envelope(&v, "BadRequest").contains("node count limit"));
    // Nesting within the limit is still fine.
    let ok = format!("{}status%20eq%20'Active'{}", "(".repeat(50), ")".repeat(50));
    let (s, v) = json(
        env.get(&token, &format!("/api/incidents?$filter={ok}"))
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    still_lists(&env, &token).await;
}

#[tokio::test]
async fn filter_limits_are_settable() {
    let env = Env::start(small().filter_limits(defender_emulator::FilterLimits {
        max_depth: 1,
        max_nodes: 10,
    }))
    .await;
    let token = env.token().await;
    let (s, _) = json(
        env.get(&token, "/api/incidents?$filter=(status%20eq%20'Active')")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = json(
        env.get(&token, "/api/incidents?$filter=((status%20eq%20'Active'))")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    still_lists(&env, &token).await;
}

fn roomy() -> defender_emulator::EmulatorBuilder {
    small().limits(
        "2021,hunting.calls=1000/1m,hunting.runtime=none"
            .parse()
            .unwrap(),
    )
}

/// A normal query still answers on every hunting surface.
async fn still_hunts(env: &Env, token: &str) {
    for path in [XDR_HUNT, MDE_HUNT, GRAPH_HUNT] {
        let (s, v) = json(env.hunt(token, path, "AlertInfo | take 3").await).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
}

/// Asserts the service's 400 for a query over its limits on every hunting surface.
async fn preempted(env: &Env, token: &str, query: &str) {
    for path in [XDR_HUNT, MDE_HUNT, GRAPH_HUNT] {
        let (s, v) = json(env.hunt(token, path, query).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(
            envelope(&v, "BadRequest"),
            defender_emulator::PREEMPTED,
            "{path}"
        );
    }
}

#[tokio::test]
async fn deeply_nested_kql_is_a_400_not_a_crash() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for query in [
        format!("AlertInfo | where {}true", "(".repeat(60_000)),
        format!("AlertInfo | extend x = {}1", "strcat(".repeat(30_000)),
        format!("AlertInfo | extend x = {}1", "-".repeat(60_000)),
        format!("let x = {}1; AlertInfo", "(".repeat(60_000)),
    ] {
        let (s, v) = json(env.hunt(&token, GRAPH_HUNT, &query).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(envelope(&v, "BadRequest").contains("nesting exceeds 100 levels"));
    }
    still_hunts(&env, &token).await;
}

#[tokio::test]
async fn exploding_strcat_is_preempted() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    // Each step doubles the string: 16 GiB by the 34th.
    let mut q = String::from("AlertInfo | take 1 | extend s0 = Title");
    for i in 1..40 {
        q.push_str(&format!(" | extend s{i} = strcat(s{p}, s{p})", p = i - 1));
    }
    preempted(&env, &token, &q).await;
    // And over every row of a table.
    preempted(&env, &token, &q.replace("| take 1 ", "")).await;
    still_hunts(&env, &token).await;
}

#[tokio::test]
async fn too_many_columns_or_operators_are_preempted() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let cols: Vec<String> = (0..5_000).map(|i| format!("c{i} = {i}")).collect();
    preempted(
        &env,
        &token,
        &format!("AlertInfo | extend {}", cols.join(", ")),
    )
    .await;
    preempted(
        &env,
        &token,
        &format!("AlertInfo{}", " | take 10".repeat(5_000)),
    )
    .await;
    still_hunts(&env, &token).await;
}

#[tokio::test]
async fn a_query_over_the_time_limit_is_preempted() {
    let env = Env::start(
        roomy()
            .table_rows("DeviceProcessEvents", 100_000)
            .query_limits(defender_emulator::QueryLimits {
                max_run_time: Some(std::time::Duration::from_millis(1)),
                ..defender_emulator::QueryLimits::default()
            }),
    )
    .await;
    let token = env.token().await;
    preempted(
        &env,
        &token,
        "DeviceProcessEvents
         | extend a = strcat(FileName, ProcessCommandLine, FolderPath)
         | where strlen(a) > 3
         | sort by a asc",
    )
    .await;
    still_hunts(&env, &token).await;
}

#[tokio::test]
async fn query_limits_are_settable() {
    let env = Env::start(roomy().query_limits(defender_emulator::QueryLimits {
        max_operators: 1,
        ..defender_emulator::QueryLimits::default()
    }))
    .await;
    let token = env.token().await;
    preempted(&env, &token, "AlertInfo | take 3 | take 2").await;
    still_hunts(&env, &token).await;
}
