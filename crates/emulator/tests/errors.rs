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
    // (GET / is the dashboard; tests/dashboard.rs checks that other methods there are 404.)
    for path in [
        "/api",
        "/api/machines",
        // The legacy Graph alerts (v1), which alerts_v2 replaced.
        "/v1.0/security/alerts",
        "/v1.0/security/alerts_v2/x/y",
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
            let token = env.for_path(&token, path).await;
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
    let r = env.control("/_emulator/reset", "").await;
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
    let r = env.control("/_emulator/reset?incidents=true", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, v) = json(env.get(&token, "/api/incidents/1000").await).await;
    assert_ne!(v["assignedTo"], "x@y");
}

#[tokio::test]
async fn the_manual_clock_can_be_advanced_over_http() {
    let env = Env::start(small()).await;
    let r = env
        .control("/_emulator/clock/advance", r#"{"seconds": 90}"#)
        .await;
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

/// A state-changing control request with the given header value and token.
async fn control_with(
    env: &Env,
    base: &str,
    path: &str,
    header: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = env
        .http
        .post(format!("{base}{path}"))
        .body(r#"{"seconds": 60}"#);
    if let Some(h) = header {
        req = req.header(defender_emulator::CONTROL_HEADER, h);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn control_requests_need_the_header_and_a_token() {
    let env = Env::start(small()).await;
    let token = env.token().await;
    for path in ["/_emulator/reset", "/_emulator/clock/advance"] {
        // What a cross-site form post can send: no custom header, no token.
        let (s, v) = json(control_with(&env, &env.base, path, None, None).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(envelope(&v, "Forbidden").contains("X-Emulator-Control"));
        // A token alone is not enough, nor another header value.
        let (s, _) = json(control_with(&env, &env.base, path, None, Some(&token)).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        let (s, _) = json(control_with(&env, &env.base, path, Some("0"), Some(&token)).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        // The header without a token, or with one the emulator did not issue.
        let r = control_with(&env, &env.base, path, Some("1"), None).await;
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let (s, v) = json(r).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        envelope(&v, "Unauthorized");
        let (s, _) =
            json(control_with(&env, &env.base, path, Some("1"), Some("emu.forged")).await).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Nothing above moved the clock.
    assert_eq!(env.clock().unix_ms(), START_MS);
    // Header and token: served.
    let (s, v) = json(
        control_with(
            &env,
            &env.base,
            "/_emulator/clock/advance",
            Some("1"),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(env.clock().unix_ms(), START_MS + 60_000);
    let (s, _) =
        json(control_with(&env, &env.base, "/_emulator/reset", Some("1"), Some(&token)).await)
            .await;
    assert_eq!(s, StatusCode::OK);
    // Reads stay open.
    for path in ["/_emulator/stats", "/_emulator/clock"] {
        let r = env
            .http
            .get(format!("{}{path}", env.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
}

/// A token fetched through `local` (the `Env` helpers would use the 0.0.0.0 base URL).
async fn local_token(env: &Env, local: &str) -> String {
    let r = env
        .http
        .post(format!("{local}/emulator/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=emulator-client&client_secret=emulator-secret&grant_type=client_credentials&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default")
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn control_requests_are_refused_off_loopback_unless_allowed() {
    // Listening on every interface; the test still only talks to 127.0.0.1.
    let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let env = Env::start(small().addr(any)).await;
    let local = format!("http://127.0.0.1:{}", env.emu.addr().port());
    let token = local_token(&env, &local).await;
    for path in ["/_emulator/reset", "/_emulator/clock/advance"] {
        let (s, v) = json(control_with(&env, &local, path, Some("1"), Some(&token)).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(envelope(&v, "Forbidden").contains("--allow-remote-control"));
    }
    assert_eq!(env.clock().unix_ms(), START_MS);

    let env = Env::start(small().addr(any).allow_remote_control(true)).await;
    let local = format!("http://127.0.0.1:{}", env.emu.addr().port());
    let token = local_token(&env, &local).await;
    let (s, _) =
        json(control_with(&env, &local, "/_emulator/clock/advance", None, Some(&token)).await)
            .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the header is still required");
    let (s, v) = json(
        control_with(
            &env,
            &local,
            "/_emulator/clock/advance",
            Some("1"),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(env.clock().unix_ms(), START_MS + 60_000);
}
