//! The three hunting surfaces: shapes, validation, limits and KQL errors.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn roomy() -> defender_emulator::EmulatorBuilder {
    small().limits(
        "2021,hunting.calls=1000/1m,hunting.runtime=none"
            .parse()
            .unwrap(),
    )
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn defender_xdr_shape() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(
        env.hunt(&token, XDR_HUNT, "DeviceProcessEvents | take 5")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys(&v), ["Results", "Schema", "Stats"]);
    let stats = &v["Stats"];
    assert!(stats["ExecutionTime"].as_f64().unwrap() > 0.0);
    assert!(stats["resource_usage"]["cpu"]["total cpu"].is_string());
    assert!(stats["resource_usage"]["memory"]["peak_per_node"].is_number());
    assert_eq!(stats["dataset_statistics"][0]["table_row_count"], 5);
    assert!(
        stats["dataset_statistics"][0]["table_size"]
            .as_u64()
            .unwrap()
            > 0
    );
    let schema = v["Schema"].as_array().unwrap();
    assert!(schema
        .iter()
        .any(|c| c["Name"] == "Timestamp" && c["Type"] == "DateTime"));
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert!(results[0]["Timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn defender_for_endpoint_and_graph_shapes() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let (s, v) = json(env.hunt(&token, MDE_HUNT, "AlertInfo | take 2").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys(&v), ["Results", "Schema"]);
    assert_eq!(v["Results"].as_array().unwrap().len(), 2);

    let (s, v) = json(env.hunt(&token, GRAPH_HUNT, "AlertInfo | take 2").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys(&v), ["@odata.context", "results", "schema"]);
    assert!(v["schema"][0]["name"].is_string());
    assert!(v["schema"][0]["type"].is_string());
    assert_eq!(v["results"].as_array().unwrap().len(), 2);

    // Lower-case keys are accepted on Defender XDR and Graph; Defender for Endpoint's
    // body is case-sensitive (see `mde_hunting_body_is_case_sensitive`).
    for path in [XDR_HUNT, GRAPH_HUNT] {
        let (s, _) = json(
            env.post_json(&token, path, &json!({"query": "AlertInfo | take 1"}))
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
}

async fn count(env: &Env, token: &str, body: Value) -> i64 {
    let (s, v) = json(env.post_json(token, GRAPH_HUNT, &body).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["results"][0]["Count"].as_i64().unwrap()
}

#[tokio::test]
async fn graph_timespan_filters_the_data() {
    let env = Env::start(roomy().rows_per_table(2000)).await;
    let token = env.token().await;
    let q = "DeviceProcessEvents | count";
    let all = count(&env, &token, json!({"Query": q})).await;
    let thirty = count(&env, &token, json!({"Query": q, "Timespan": "P30D"})).await;
    let week = count(&env, &token, json!({"Query": q, "Timespan": "P7D"})).await;
    let day = count(&env, &token, json!({"query": q, "timespan": "P1D"})).await;
    assert_eq!(all, thirty, "the default is 30 days");
    assert!(
        day > 0 && day < week && week < thirty,
        "{day} {week} {thirty}"
    );
    // More than the lookback is still cut at 30 days.
    assert_eq!(
        count(&env, &token, json!({"Query": q, "Timespan": "P60D"})).await,
        thirty
    );
    // An interval that ends in the past drops rows after its end.
    let (s, v) = json(
        env.post_json(
            &token,
            GRAPH_HUNT,
            &json!({"Query": "DeviceProcessEvents | project Timestamp", "Timespan": "2025-12-20T00:00:00Z/2025-12-25T00:00:00Z"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let rows = v["results"].as_array().unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let t = r["Timestamp"].as_str().unwrap();
        assert!(
            ("2025-12-20"..="2025-12-25T00:00:00.0000000Z").contains(&t),
            "{t}"
        );
    }
    let (s, v) = json(
        env.post_json(
            &token,
            GRAPH_HUNT,
            &json!({"Query": q, "Timespan": "last week"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(envelope(&v, "BadRequest").contains("Timespan"));
}

#[tokio::test]
async fn requests_must_be_json_with_a_query() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut r = env
            .http
            .post(format!("{}{XDR_HUNT}", env.base))
            .bearer_auth(&token)
            .body(r#"{"Query":"AlertInfo"}"#);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let (s, v) = json(r.send().await.unwrap()).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        envelope(&v, "UnsupportedMediaType");
    }
    let graph_token = env.for_path(&token, GRAPH_HUNT).await;
    let r = env
        .http
        .post(format!("{}{GRAPH_HUNT}", env.base))
        .bearer_auth(&graph_token)
        .header("content-type", "Application/JSON; charset=UTF-8")
        .body(r#"{"Query":"AlertInfo | take 1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for body in [
        json!({}),
        json!({"Query": ""}),
        json!({"Query": 1}),
        json!({"Other": "x"}),
    ] {
        let (s, v) = json(env.post_json(&token, XDR_HUNT, &body).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        envelope(&v, "BadRequest");
    }
}

#[tokio::test]
async fn kql_errors_are_400_bad_request() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    for path in [XDR_HUNT, MDE_HUNT, GRAPH_HUNT] {
        let (s, v) = json(env.hunt(&token, path, "DeviceProcessEvents | wher x").await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let m = envelope(&v, "BadRequest");
        assert!(m.contains("Query could not be parsed"), "{m}");
        let (s, v) = json(env.hunt(&token, path, "NoSuchTable | take 1").await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(envelope(&v, "BadRequest").contains("NoSuchTable"));
    }
}

#[tokio::test]
async fn rows_are_cut_silently_at_the_cap() {
    let env =
        Env::start(small().limits("2021,hunting.calls=100/1m,hunting.rows=7".parse().unwrap()))
            .await;
    let token = env.token().await;
    let (s, v) = json(env.hunt(&token, XDR_HUNT, "DeviceProcessEvents").await).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["Results"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn old_rows_are_never_visible() {
    let env = Env::start(
        small().limits(
            "2021,hunting.calls=100/1m,hunting.lookback=2d"
                .parse()
                .unwrap(),
        ),
    )
    .await;
    let token = env.token().await;
    let (s, v) = json(
        env.hunt(
            &token,
            XDR_HUNT,
            "DeviceProcessEvents | summarize Oldest = min(Timestamp), N = count()",
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let oldest = v["Results"][0]["Oldest"].as_str().unwrap();
    assert!(oldest >= "2025-12-30", "{oldest}");
    assert!(v["Results"][0]["N"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn results_over_the_size_cap_are_refused() {
    let env = Env::start(roomy().max_result_bytes(2_000)).await;
    let token = env.token().await;
    let (s, v) = json(
        env.hunt(&token, XDR_HUNT, "DeviceProcessEvents | take 100")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        envelope(&v, "BadRequest"),
        "Query execution has exceeded the allowed result size. Optimize your query by limiting the number of results and try again"
    );
    assert_eq!(
        // One row of the 61 documented columns is over 2,000 bytes; a few columns fit.
        env.hunt(
            &token,
            XDR_HUNT,
            "DeviceProcessEvents | take 1 | project Timestamp, DeviceName, FileName"
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn data_is_deterministic_and_now_follows_the_clock() {
    let a = Env::start(roomy().seed(42)).await;
    let b = Env::start(roomy().seed(42)).await;
    let q = "DeviceNetworkEvents | project Timestamp, DeviceName, RemoteIP | take 20";
    let (ta, tb) = (a.token().await, b.token().await);
    let (_, va) = json(a.hunt(&ta, MDE_HUNT, q).await).await;
    let (_, vb) = json(b.hunt(&tb, MDE_HUNT, q).await).await;
    assert_eq!(va, vb);

    let recent = "DeviceProcessEvents | where Timestamp > ago(1d) | count";
    let (_, v) = json(a.hunt(&ta, MDE_HUNT, recent).await).await;
    assert!(v["Results"][0]["Count"].as_i64().unwrap() > 0);
    a.clock().advance(Duration::from_secs(86_400));
    let ta = a.token().await;
    let (_, v) = json(a.hunt(&ta, MDE_HUNT, recent).await).await;
    assert_eq!(
        v["Results"][0]["Count"], 0,
        "the data ends where the clock started"
    );
}

#[tokio::test]
async fn execution_time_follows_the_cost_model() {
    let env = Env::start(roomy().cost_model(defender_emulator::CostModel {
        base: Duration::from_millis(50),
        per_row: Duration::from_millis(1),
        per_operator: Duration::from_millis(10),
    }))
    .await;
    let token = env.token().await;
    let (_, v) = json(
        env.hunt(&token, XDR_HUNT, "AlertInfo | take 1 | project Timestamp")
            .await,
    )
    .await;
    // 0.05 s + rows scanned (those of the 300 inside 30 days) * 1 ms + 2 operators * 10 ms.
    let t = v["Stats"]["ExecutionTime"].as_f64().unwrap();
    let rows = (t - 0.07) / 0.001;
    assert!((rows - rows.round()).abs() < 1e-6, "{t}");
    assert!((150.0..=300.0).contains(&rows), "{rows}");
}

#[tokio::test]
async fn engine_warnings_travel_in_a_header_not_the_body() {
    let env = Env::start(roomy()).await;
    let token = env.token().await;
    let offline =
        "externaldata (Ip: string) [@'https://example.com/ips.csv'] with (format='csv') | take 5";
    for (path, body_keys) in [
        (XDR_HUNT, vec!["Results", "Schema", "Stats"]),
        (MDE_HUNT, vec!["Results", "Schema"]),
        (GRAPH_HUNT, vec!["@odata.context", "results", "schema"]),
    ] {
        let r = env.hunt(&token, path, offline).await;
        let warning = r
            .headers()
            .get(defender_emulator::WARNING_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let (s, v) = json(r).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(keys(&v), body_keys, "{path}");
        let warning = warning.unwrap_or_else(|| panic!("{path}: no warning header"));
        assert!(warning.contains("externaldata"), "{path}: {warning}");
        // The declared schema, no rows.
        let rows = if path == GRAPH_HUNT {
            &v["results"]
        } else {
            &v["Results"]
        };
        assert_eq!(rows.as_array().unwrap().len(), 0, "{path}");

        let r = env.hunt(&token, path, "AlertInfo | take 1").await;
        assert!(
            r.headers().get(defender_emulator::WARNING_HEADER).is_none(),
            "{path}"
        );
    }
}
