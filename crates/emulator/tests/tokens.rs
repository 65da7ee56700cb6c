//! The token endpoint, authentication and permissions.

mod common;

use std::time::Duration;

use common::*;
use defender_emulator::{App, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use reqwest::StatusCode;

#[tokio::test]
async fn issues_tokens_in_the_identity_platform_shape() {
    let env = Env::start(small().token_lifetime(Duration::from_secs(600))).await;
    let (s, v) = json(
        env.token_for(DEFAULT_TENANT, DEFAULT_CLIENT_ID, DEFAULT_SECRET)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 600);
    assert_eq!(v["ext_expires_in"], 600);
    let a = v["access_token"].as_str().unwrap().to_owned();
    let b = env.token().await;
    assert!(a.len() > 30);
    assert_ne!(a, b, "tokens are random");
    assert_eq!(env.emu.stats().tokens_issued, 2);
}

#[tokio::test]
async fn the_default_lifetime_is_3599_seconds() {
    let env = Env::start(small()).await;
    let (_, v) = json(
        env.token_for(DEFAULT_TENANT, DEFAULT_CLIENT_ID, DEFAULT_SECRET)
            .await,
    )
    .await;
    assert_eq!(v["expires_in"], 3599);
}

#[tokio::test]
async fn refuses_bad_credentials_like_the_identity_platform() {
    let env = Env::start(small()).await;
    let (s, v) = json(
        env.token_for(DEFAULT_TENANT, DEFAULT_CLIENT_ID, "wrong")
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"], "invalid_client");
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215: Invalid client secret provided"));

    let (s, v) = json(
        env.token_for(DEFAULT_TENANT, "nobody", DEFAULT_SECRET)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "unauthorized_client");

    let (s, v) = json(
        env.token_for("other-tenant", DEFAULT_CLIENT_ID, DEFAULT_SECRET)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_request");
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("AADSTS90002"));

    for (body, error) in [
        ("client_id=emulator-client&client_secret=emulator-secret&grant_type=password&scope=x%2F.default", "unsupported_grant_type"),
        ("client_id=emulator-client&client_secret=emulator-secret&grant_type=client_credentials", "invalid_request"),
        ("client_id=emulator-client&client_secret=emulator-secret&grant_type=client_credentials&scope=User.Read", "invalid_scope"),
        ("", "invalid_request"),
    ] {
        let r = env
            .http
            .post(format!("{}/{DEFAULT_TENANT}/oauth2/v2.0/token", env.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let (s, v) = json(r).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["error"], error, "{body}");
    }
    let r = env
        .http
        .get(format!("{}/{DEFAULT_TENANT}/oauth2/v2.0/token", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn apis_need_a_valid_bearer() {
    let env = Env::start(small()).await;
    // No token.
    let r = env
        .http
        .get(format!("{}/api/incidents", env.base))
        .send()
        .await
        .unwrap();
    let (s, v) = json(r).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    envelope(&v, "Unauthorized");
    assert!(v["error"]["target"].is_string());
    // A made-up token, on every surface.
    for path in [
        "/api/incidents",
        "/v1.0/security/incidents",
        "/api/incidents/1000",
    ] {
        let (s, v) = json(env.get("made-up", path).await).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        envelope(&v, unauthorized_code(path));
    }
    for path in [XDR_HUNT, MDE_HUNT, GRAPH_HUNT] {
        let (s, v) = json(env.hunt("made-up", path, "AlertInfo | take 1").await).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        envelope(&v, unauthorized_code(path));
    }
    // Basic auth is not a bearer.
    let r = env
        .http
        .get(format!("{}/api/incidents", env.base))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_expire_on_the_manual_clock() {
    let env = Env::start(small().token_lifetime(Duration::from_secs(3599))).await;
    let token = env.token().await;
    assert_eq!(
        env.get(&token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    env.clock().advance(Duration::from_secs(3598));
    assert_eq!(
        env.get(&token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    env.clock().advance(Duration::from_secs(1));
    let (s, v) = json(env.get(&token, "/api/incidents?$top=1").await).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(envelope(&v, "Unauthorized").contains("expired"));
    // A fresh token works.
    let fresh = env.token().await;
    assert_eq!(
        env.get(&fresh, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn permissions_are_checked_per_api() {
    let env = Env::start(
        small()
            .app(App::new(
                "contoso",
                "hunter",
                "s1",
                &["AdvancedHunting.Read.All"],
            ))
            .app(App::new(
                "contoso",
                "reader",
                "s2",
                &["Incident.Read.All", "SecurityIncident.Read.All"],
            )),
    )
    .await;
    let hunter = env.token_of("contoso", "hunter", "s1").await;
    let reader = env.token_of("contoso", "reader", "s2").await;

    assert_eq!(
        env.hunt(&hunter, XDR_HUNT, "AlertInfo | take 1")
            .await
            .status(),
        StatusCode::OK
    );
    for path in [MDE_HUNT, GRAPH_HUNT] {
        let (s, v) = json(env.hunt(&hunter, path, "AlertInfo | take 1").await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(envelope(&v, "Forbidden").contains("permissions"));
    }
    let (s, _) = json(env.get(&hunter, "/api/incidents").await).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    assert_eq!(
        env.get(&reader, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        env.get(&reader, "/v1.0/security/incidents?$top=1")
            .await
            .status(),
        StatusCode::OK
    );
    let body = serde_json::json!({"status": "Resolved"});
    let (s, v) = json(env.patch(&reader, "/api/incidents/1000", &body).await).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(envelope(&v, "Forbidden").contains("Incident.ReadWrite.All"));
    let (s, _) = json(
        env.patch(&reader, "/v1.0/security/incidents/1000", &body)
            .await,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = json(env.hunt(&reader, XDR_HUNT, "AlertInfo").await).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// The 401 code of the service behind `path`: Graph's, or Defender's.
fn unauthorized_code(path: &str) -> &'static str {
    if path.starts_with("/v1.0/") {
        "InvalidAuthenticationToken"
    } else {
        "Unauthorized"
    }
}
