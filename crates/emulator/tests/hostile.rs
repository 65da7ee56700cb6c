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
