//! Bad requests of every kind get a status and the error envelope, and the server keeps
//! serving; the control endpoints.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let env = Env::start(small()).await;
    let token = env.token().await;
    for path in [
        "/",
        "/api",
        "/api/alerts",
        "/v1.0/security/alerts_v2",
        "/_emulator/nope",
    ] {
        let (s, v) = json(env.get(&token, path).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        envelope(&v, "NotFound");
    }
    let r = env.get(&token, XDR_HUNT).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let (_, v) = json(r).await;
    envelope(&v, "MethodNotAllowed");
    let r = env
        .http
        .delete(format!("{}/api/incidents/1000", env.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (_, v) = json(env.post_json(&token, "/api/incidents", &json!({})).await).await;
    envelope(&v, "MethodNotAllowed");
    let (s, _) = json(env.post_json(&token, "/_emulator/stats", &json!({})).await).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let env = Env::start(small().max_request_bytes(1024)).await;
    let token = env.token().await;
    let big = "x".repeat(4096);
    let (s, v) = json(env.hunt(&token, XDR_HUNT, &big).await).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    envelope(&v, "RequestEntityTooLarge");
    // Still serving.
    assert_eq!(
        env.hunt(&token, XDR_HUNT, "AlertInfo | take 1")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn garbage_never_wedges_the_server() {
    let env = Env::start(small().limits("2021,hunting.calls=1000/1m".parse().unwrap())).await;
    let token = env.token().await;
    let bodies: [&[u8]; 6] = [
        b"",
        b"{",
        b"\xff\xfe\x00",
        b"[1,2]",
        b"{\"Query\": 5}",
        b"null",
    ];
    for body in bodies {
        for path in [XDR_HUNT, MDE_HUNT, GRAPH_HUNT] {
            let r = env
                .http
                .post(format!("{}{path}", env.base))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let (s, v) = json(r).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body:?}");
            envelope(&v, "BadRequest");
        }
        let r = env
            .http
            .patch(format!("{}/api/incidents/1000", env.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = env
        .http
        .get(format!("{}/api/incidents?$top=%ZZ&$filter=%", env.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        env.hunt(&token, XDR_HUNT, "AlertInfo | take 1")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn stats_and_reset() {
    let env = Env::start(small().limits("2021,hunting.calls=2/1m".parse().unwrap())).await;
    let token = env.token().await;
    env.hunt(&token, XDR_HUNT, "AlertInfo | take 1").await;
    env.hunt(&token, XDR_HUNT, "AlertInfo | take 1").await;
    assert_eq!(
        env.hunt(&token, XDR_HUNT, "AlertInfo | take 1")
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    env.get(&token, "/api/incidents?$top=1").await;

    let (s, v) = json(
        env.http
            .get(format!("{}/_emulator/stats", env.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["throttled"], 1);
    let keys = v["keys"].as_array().unwrap();
    let hunting = keys.iter().find(|k| k["group"] == "hunting").unwrap();
    assert_eq!(hunting["tenant"], "emulator");
    assert_eq!(hunting["client_id"], "emulator-client");
    assert_eq!(hunting["requests"], 3);
    assert_eq!(hunting["throttled"], 1);
    assert!(hunting["runtime_charged_seconds"].as_f64().unwrap() > 0.0);
    let calls = hunting["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "calls")
        .unwrap();
    assert_eq!(calls["period"], "00:01:00");
    assert_eq!(calls["limit"], 2.0);
    assert_eq!(calls["used"], 2.0);
    assert!(hunting["windows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["kind"] == "runtime" && w["period"] == "01:00:00"));
    let incidents = keys.iter().find(|k| k["group"] == "incidents").unwrap();
    assert_eq!(incidents["requests"], 1);
    // The typed stats agree.
    let typed = env.emu.stats();
    assert_eq!(serde_json::to_value(&typed).unwrap()["throttled"], 1);

    // Reset clears the windows: the next call passes at once.
    let r = env
        .http
        .post(format!("{}/_emulator/reset", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(env.emu.stats().keys.len(), 0);
    assert_eq!(
        env.hunt(&token, XDR_HUNT, "AlertInfo | take 1")
            .await
            .status(),
        StatusCode::OK
    );

    // Reset with incidents restores them.
    let p = env
        .patch(&token, "/api/incidents/1000", &json!({"assignedTo": "x@y"}))
        .await;
    assert_eq!(p.status(), StatusCode::OK);
    env.emu.reset();
    let (_, v) = json(env.get(&token, "/api/incidents/1000").await).await;
    assert_eq!(v["assignedTo"], "x@y");
    let r = env
        .http
        .post(format!("{}/_emulator/reset?incidents=true", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = json(env.get(&token, "/api/incidents/1000").await).await;
    assert_ne!(v["assignedTo"], "x@y");
}

#[tokio::test]
async fn the_manual_clock_can_be_advanced_over_http() {
    let env = Env::start(small()).await;
    let r = env
        .http
        .post(format!("{}/_emulator/clock/advance", env.base))
        .body(r#"{"seconds": 90}"#)
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["elapsed_seconds"], 90.0);
    assert_eq!(env.clock().unix_ms(), START_MS + 90_000);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let env = Env::start(small()).await;
    let base = env.base.clone();
    let http = env.http.clone();
    env.emu.shutdown().await;
    let r = http.get(format!("{base}/_emulator/stats")).send().await;
    assert!(r.is_err());
}
