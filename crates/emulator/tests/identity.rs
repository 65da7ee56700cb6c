//! Identity as Entra ID speaks it: the credentials given, the v1 and v2 token endpoints
//! and their refusals, the OpenID configuration documents, managed identity (App Service
//! and IMDS), client assertions (certificate and federated token) and TLS.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use defender_emulator::{Emulator, EmulatorError, Tls, DEFAULT_CLIENT_ID, DEFAULT_TENANT};
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const APP_CERT: &str = include_str!("fixtures/app-cert.pem");
const APP_KEY: &str = include_str!("fixtures/app-key.pem");
const OTHER_CERT: &str = include_str!("fixtures/other-cert.pem");
const OTHER_KEY: &str = include_str!("fixtures/other-key.pem");
/// The manual clock's start in seconds.
const NOW: i64 = START_MS / 1000;

/// A fresh path in the temporary directory.
fn temp_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "defender-emulator-identity-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

async fn post_form(env: &Env, path: &str, body: &str) -> (StatusCode, Value) {
    let r = env
        .http
        .post(format!("{}{path}", env.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    json(r).await
}

fn v2(tenant: &str) -> String {
    format!("/{tenant}/oauth2/v2.0/token")
}

fn v1(tenant: &str) -> String {
    format!("/{tenant}/oauth2/token")
}

/// Asserts Entra's error body: `error`, a description that starts with the AADSTS code
/// and carries the ids, `error_codes`, `timestamp`, `trace_id`, `correlation_id`.
fn entra_error(v: &Value, error: &str, code: u32) {
    assert_eq!(v["error"], error, "{v}");
    let d = v["error_description"].as_str().unwrap();
    assert!(d.starts_with(&format!("AADSTS{code}: ")), "{d}");
    assert_eq!(v["error_codes"], json!([code]), "{v}");
    let trace = v["trace_id"].as_str().unwrap();
    let corr = v["correlation_id"].as_str().unwrap();
    assert_eq!(trace.len(), 36);
    assert_ne!(trace, corr);
    assert!(d.contains(&format!("Trace ID: {trace}")), "{d}");
    assert!(d.contains(&format!("Correlation ID: {corr}")), "{d}");
    assert_eq!(v["timestamp"], "2026-01-01 00:00:00Z");
}

fn secret_form(client: &str, secret: &str, what: &str) -> String {
    format!("grant_type=client_credentials&client_id={client}&client_secret={secret}&{what}")
}

const XDR_RESOURCE: &str = "resource=https%3A%2F%2Fapi.security.microsoft.com";
const XDR_DEFAULT: &str = "scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default";

#[tokio::test]
async fn accepts_the_credentials_it_is_given() {
    let env = Env::start(
        small()
            .tenant("t1")
            .client_id("app1")
            .client_secret("s3cret-given"),
    )
    .await;
    assert_eq!(env.emu.tenant(), "t1");
    assert_eq!(env.emu.client_id(), "app1");
    assert!(!env.emu.default_secret());
    let (s, v) = post_form(
        &env,
        &v2("t1"),
        &secret_form("app1", "s3cret-given", XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The token works on the API.
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(
        env.get(token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    // The built-in credentials are gone: their tenant is unknown.
    let (s, v) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &secret_form(DEFAULT_CLIENT_ID, "emulator-secret", XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    entra_error(&v, "invalid_request", 90002);
    // And the default secret is no longer this app's.
    let (s, v) = post_form(
        &env,
        &v2("t1"),
        &secret_form("app1", "emulator-secret", XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    entra_error(&v, "invalid_client", 7000215);
}

#[tokio::test]
async fn reads_the_secret_from_a_file_and_keeps_it_out_of_debug() {
    let path = temp_path("secret");
    std::fs::write(&path, "  from-a-file\n").unwrap();
    let builder = small()
        .client_secret_file(&path)
        .client_secret("x")
        .client_secret_file(&path);
    let shown = format!("{builder:?}");
    assert!(!shown.contains("from-a-file"));
    let given = format!(
        "{:?}",
        small()
            .client_secret("never-shown")
            .identity_header("hdr-never-shown")
    );
    assert!(!given.contains("never-shown"), "{given}");
    let env = Env::start(builder).await;
    let (s, v) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &secret_form(DEFAULT_CLIENT_ID, "from-a-file", XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let _ = std::fs::remove_file(&path);

    // An unreadable file or empty credentials stop the start.
    for builder in [
        small().client_secret_file(temp_path("missing")),
        small().tenant(""),
        small().client_secret(""),
        small().identity_header(""),
    ] {
        let e = builder.spawn().await.unwrap_err();
        assert!(matches!(e, EmulatorError::Config(_)), "{e}");
    }
}

#[tokio::test]
async fn the_v1_endpoint_issues_tokens_for_a_resource() {
    let env = Env::start(small()).await;
    let (s, v) = post_form(
        &env,
        &v1(DEFAULT_TENANT),
        &secret_form(DEFAULT_CLIENT_ID, "emulator-secret", XDR_RESOURCE),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], "3599");
    assert_eq!(v["ext_expires_in"], "3599");
    assert_eq!(v["expires_on"], (NOW + 3599).to_string());
    assert_eq!(v["not_before"], NOW.to_string());
    assert_eq!(v["resource"], "https://api.security.microsoft.com");
    let token = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        env.get(&token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    // A token carries its audience: this one is refused by Graph.
    let r = env
        .http
        .get(format!("{}/v1.0/security/incidents", env.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A Graph resource gives a Graph token.
    let (s, v) = post_form(
        &env,
        &v1(DEFAULT_TENANT),
        &secret_form(
            DEFAULT_CLIENT_ID,
            "emulator-secret",
            "resource=https%3A%2F%2Fgraph.microsoft.com%2F",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let graph = v["access_token"].as_str().unwrap();
    let r = env
        .http
        .get(format!("{}/v1.0/security/incidents?$top=1", env.base))
        .bearer_auth(graph)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn both_endpoints_refuse_like_entra() {
    let env = Env::start(small()).await;
    let me = DEFAULT_CLIENT_ID;
    for (version, what) in [("v1", XDR_RESOURCE), ("v2", XDR_DEFAULT)] {
        let path = |t: &str| if version == "v1" { v1(t) } else { v2(t) };
        let cases: Vec<(String, String, StatusCode, &str, u32)> = vec![
            (
                path("other-tenant"),
                secret_form(me, "emulator-secret", what),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
            ),
            (
                path(DEFAULT_TENANT),
                secret_form("nobody", "emulator-secret", what),
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
            ),
            (
                path(DEFAULT_TENANT),
                secret_form(me, "wrong", what),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
            ),
            (
                path(DEFAULT_TENANT),
                format!("grant_type=client_credentials&client_id={me}&{what}"),
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000216,
            ),
            (
                path(DEFAULT_TENANT),
                format!("grant_type=password&client_id={me}&client_secret=emulator-secret&{what}"),
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
            ),
            (
                path(DEFAULT_TENANT),
                format!("client_id={me}&client_secret=emulator-secret&{what}"),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
            ),
            (
                path(DEFAULT_TENANT),
                format!("grant_type=client_credentials&client_secret=emulator-secret&{what}"),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
            ),
            (
                path(DEFAULT_TENANT),
                "%%%&&&=".into(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
            ),
        ];
        for (path, body, status, error, code) in cases {
            let (s, v) = post_form(&env, &path, &body).await;
            assert_eq!(s, status, "{version} {body}: {v}");
            entra_error(&v, error, code);
        }
    }
    // What each version wants.
    let (s, v) = post_form(
        &env,
        &v1(DEFAULT_TENANT),
        &secret_form(me, "emulator-secret", "scope=x"),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    entra_error(&v, "invalid_request", 900144);
    assert!(v["error_description"]
        .as_str()
        .unwrap()
        .contains("'resource'"));
    let (s, v) = post_form(
        &env,
        &v1(DEFAULT_TENANT),
        &secret_form(
            me,
            "emulator-secret",
            "resource=https%3A%2F%2Fvault.azure.net",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    entra_error(&v, "invalid_resource", 500011);
    let (s, v) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &secret_form(me, "emulator-secret", XDR_RESOURCE),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    entra_error(&v, "invalid_request", 90014);
    // GET is not a token request.
    let r = env
        .http
        .get(format!("{}{}", env.base, v1(DEFAULT_TENANT)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(env.emu.stats().tokens_issued, 0);
}

#[tokio::test]
async fn openid_configuration_points_at_the_emulator() {
    let env = Env::start(small()).await;
    for (path, token_endpoint, issuer) in [
        (
            "/emulator/v2.0/.well-known/openid-configuration",
            "/emulator/oauth2/v2.0/token",
            "/emulator/v2.0",
        ),
        (
            "/emulator/.well-known/openid-configuration",
            "/emulator/oauth2/token",
            "/emulator/",
        ),
    ] {
        let (s, v) = json(
            env.http
                .get(format!("{}{path}", env.base))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(v["token_endpoint"], format!("{}{token_endpoint}", env.base));
        assert_eq!(v["issuer"], format!("{}{issuer}", env.base));
        assert!(v["authorization_endpoint"]
            .as_str()
            .unwrap()
            .starts_with(&env.base));
        assert!(v["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt")));
        // The token endpoint it names issues tokens.
        let what = if token_endpoint.contains("v2.0") {
            XDR_DEFAULT
        } else {
            XDR_RESOURCE
        };
        let r = env
            .http
            .post(v["token_endpoint"].as_str().unwrap())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(secret_form(DEFAULT_CLIENT_ID, "emulator-secret", what))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{token_endpoint}");
        let (s, keys) = json(
            env.http
                .get(v["jwks_uri"].as_str().unwrap())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(keys["keys"], json!([]));
    }
    let (s, v) = json(
        env.http
            .get(format!(
                "{}/nowhere/v2.0/.well-known/openid-configuration",
                env.base
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    entra_error(&v, "invalid_tenant", 90002);
}

#[tokio::test]
async fn app_service_managed_identity() {
    let env = Env::start(small()).await;
    let header = env.emu.identity_header().to_owned();
    assert!(header.len() >= 32, "a generated header is long: {header}");
    let msi = |query: &str, h: Option<&str>| {
        let mut r = env.http.get(format!("{}/msi/token?{query}", env.base));
        if let Some(h) = h {
            r = r.header("X-IDENTITY-HEADER", h);
        }
        r.send()
    };
    let ok = "api-version=2019-08-01&resource=https%3A%2F%2Fapi.security.microsoft.com";
    let (s, v) = json(msi(ok, Some(&header)).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["resource"], "https://api.security.microsoft.com");
    assert_eq!(v["client_id"], DEFAULT_CLIENT_ID);
    assert_eq!(v["expires_on"], (NOW + 3599).to_string());
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(
        env.get(token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    // User-assigned by client id: this identity, or none.
    let (s, _) = json(
        msi(
            &format!("{ok}&client_id={DEFAULT_CLIENT_ID}"),
            Some(&header),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for (query, h, status) in [
        (ok.to_owned(), None, StatusCode::UNAUTHORIZED),
        (ok.to_owned(), Some("wrong"), StatusCode::UNAUTHORIZED),
        (
            ok.replace("2019-08-01", "2017-09-01"),
            Some(header.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "api-version=2019-08-01".to_owned(),
            Some(header.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{ok}&client_id=someone-else"),
            Some(header.as_str()),
            StatusCode::BAD_REQUEST,
        ),
        (
            ok.replace("api.security.microsoft.com", "vault.azure.net"),
            Some(header.as_str()),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = json(msi(&query, h).await.unwrap()).await;
        assert_eq!(s, status, "{query} {h:?}: {v}");
        assert_eq!(v["statusCode"], status.as_u16());
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v.get("access_token").is_none());
    }
    let r = env
        .http
        .post(format!("{}/msi/token?{ok}", env.base))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(env.emu.stats().tokens_issued, 2);

    // A header given on the builder.
    let env = Env::start(small().identity_header("my-header")).await;
    assert_eq!(env.emu.identity_header(), "my-header");
    let r = env
        .http
        .get(format!("{}/msi/token?{ok}", env.base))
        .header("X-IDENTITY-HEADER", "my-header")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn imds_managed_identity() {
    let env = Env::start(small()).await;
    let imds = |query: &str, metadata: Option<&str>| {
        let mut r = env.http.get(format!(
            "{}/metadata/identity/oauth2/token?{query}",
            env.base
        ));
        if let Some(m) = metadata {
            r = r.header("Metadata", m);
        }
        r.send()
    };
    let ok = "api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.com";
    let (s, v) = json(imds(ok, Some("true")).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], "3599");
    assert_eq!(v["expires_on"], (NOW + 3599).to_string());
    assert_eq!(v["not_before"], NOW.to_string());
    assert_eq!(v["resource"], "https://graph.microsoft.com");
    assert_eq!(v["client_id"], DEFAULT_CLIENT_ID);
    let token = v["access_token"].as_str().unwrap();
    let r = env
        .http
        .get(format!("{}/v1.0/security/incidents?$top=1", env.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let (s, v) = json(imds(ok, None).await.unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );
    for (query, metadata, error) in [
        (ok.to_owned(), Some("True"), "invalid_request"),
        (ok.to_owned(), Some("false"), "invalid_request"),
        (
            "resource=https%3A%2F%2Fgraph.microsoft.com".to_owned(),
            Some("true"),
            "invalid_request",
        ),
        (
            ok.replace("2018-02-01", "2017-01-01"),
            Some("true"),
            "invalid_request",
        ),
        (
            "api-version=2018-02-01".to_owned(),
            Some("true"),
            "invalid_request",
        ),
        (
            format!("{ok}&client_id=someone-else"),
            Some("true"),
            "invalid_request",
        ),
        (
            ok.replace("graph.microsoft.com", "vault.azure.net"),
            Some("true"),
            "invalid_resource",
        ),
    ] {
        let (s, v) = json(imds(&query, metadata).await.unwrap()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(v["error"], error, "{query}: {v}");
        assert!(v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(env.emu.stats().tokens_issued, 1);
}

// ---------------------------------------------------------------------------------------
// Client assertions

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT with `claims`, signed with the PEM key by `alg` (RS256 or PS256).
fn jwt(key_pem: &str, alg: &str, claims: &Value) -> String {
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let header = b64url(
        json!({"alg": alg, "typ": "JWT", "x5t#S256": "test"})
            .to_string()
            .as_bytes(),
    );
    let payload = b64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let padding: &'static dyn ring::signature::RsaEncoding = match alg {
        "PS256" => &ring::signature::RSA_PSS_SHA256,
        _ => &ring::signature::RSA_PKCS1_SHA256,
    };
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        padding,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{signed}.{}", b64url(&sig))
}

fn claims(env: &Env, aud_path: &str) -> Value {
    json!({
        "aud": format!("{}{aud_path}", env.base),
        "iss": DEFAULT_CLIENT_ID,
        "sub": DEFAULT_CLIENT_ID,
        "jti": "1",
        "nbf": NOW - 10,
        "exp": NOW + 600,
    })
}

fn assertion_form(assertion: &str, what: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={DEFAULT_CLIENT_ID}&client_assertion_type={}&client_assertion={assertion}&{what}",
        urlenc(JWT_BEARER)
    )
}

#[tokio::test]
async fn certificate_assertions_are_verified() {
    let env = Env::start(small().client_certificate_pem(APP_CERT)).await;
    let tenant = DEFAULT_TENANT;
    // Signed by the registered certificate's key, RS256 or PS256, on either endpoint.
    for alg in ["RS256", "PS256"] {
        let a = jwt(APP_KEY, alg, &claims(&env, &v2(tenant)));
        let (s, v) = post_form(&env, &v2(tenant), &assertion_form(&a, XDR_DEFAULT)).await;
        assert_eq!(s, StatusCode::OK, "{alg}: {v}");
        assert_eq!(
            env.get(v["access_token"].as_str().unwrap(), "/api/incidents?$top=1")
                .await
                .status(),
            StatusCode::OK
        );
    }
    let a = jwt(APP_KEY, "RS256", &claims(&env, &v1(tenant)));
    let (s, v) = post_form(&env, &v1(tenant), &assertion_form(&a, XDR_RESOURCE)).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&env, &v2(tenant));
        f(&mut c);
        c
    };
    let good = claims(&env, &v2(tenant));
    // A payload changed after signing: another subject's claims under the app's signature.
    let signed = jwt(APP_KEY, "RS256", &good);
    let parts: Vec<&str> = signed.split('.').collect();
    let mut changed = good.clone();
    changed["exp"] = json!(NOW + 100_000);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(changed.to_string().as_bytes()),
        parts[2]
    );
    let cases: Vec<(String, StatusCode, &str, u32)> = vec![
        // Signed by another key.
        (
            jwt(OTHER_KEY, "RS256", &good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
        ),
        (
            jwt(OTHER_KEY, "PS256", &good),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
        ),
        // The payload changed after signing.
        (tampered, StatusCode::UNAUTHORIZED, "invalid_client", 700027),
        // No signature algorithm Entra takes.
        (
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none"}"#),
                b64url(good.to_string().as_bytes())
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
        ),
        // Expired, and not yet valid.
        (
            jwt(APP_KEY, "RS256", &with(&|c| c["exp"] = json!(NOW - 1))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
        ),
        (
            jwt(APP_KEY, "RS256", &with(&|c| c["exp"] = json!(NOW))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
        ),
        (
            jwt(APP_KEY, "RS256", &with(&|c| c["nbf"] = json!(NOW + 60))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
        ),
        // Another audience, issuer or subject.
        (
            jwt(
                APP_KEY,
                "RS256",
                &with(&|c| {
                    c["aud"] = json!("https://login.microsoftonline.com/emulator/oauth2/v2.0/token")
                }),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700023,
        ),
        (
            jwt(
                APP_KEY,
                "RS256",
                &with(&|c| c["aud"] = json!(format!("{}/other/oauth2/v2.0/token", env.base))),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700023,
        ),
        (
            jwt(APP_KEY, "RS256", &with(&|c| c["iss"] = json!("someone"))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700021,
        ),
        (
            jwt(APP_KEY, "RS256", &with(&|c| c["sub"] = json!("someone"))),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700021,
        ),
        // No expiry at all.
        (
            jwt(
                APP_KEY,
                "RS256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
        // Not a JWT.
        (
            "abc".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
        (
            "a.b.c".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
        (
            "a.b.c.d".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
        (
            format!("{}.{}.!!", b64url(b"{}"), b64url(b"{}")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
        (
            format!("{}.{}.AA", b64url(b"[1]"), b64url(b"{}")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
        (
            "\u{0}\u{ffff}..".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
        ),
    ];
    for (assertion, status, error, code) in cases {
        let (s, v) = post_form(
            &env,
            &v2(tenant),
            &assertion_form(&urlenc(&assertion), XDR_DEFAULT),
        )
        .await;
        assert_eq!(s, status, "{assertion}: {v}");
        entra_error(&v, error, code);
    }
    // The assertion type must be the JWT bearer one.
    let a = jwt(APP_KEY, "RS256", &good);
    let body = format!("grant_type=client_credentials&client_id={DEFAULT_CLIENT_ID}&client_assertion_type=saml&client_assertion={a}&{XDR_DEFAULT}");
    let (s, v) = post_form(&env, &v2(tenant), &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    entra_error(&v, "invalid_request", 900144);
    // The secret still works beside the certificate.
    let (s, _) = post_form(
        &env,
        &v2(tenant),
        &secret_form(DEFAULT_CLIENT_ID, "emulator-secret", XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn without_a_registered_certificate_no_assertion_is_valid() {
    let env = Env::start(small()).await;
    let a = jwt(APP_KEY, "RS256", &claims(&env, &v2(DEFAULT_TENANT)));
    let (s, v) = post_form(&env, &v2(DEFAULT_TENANT), &assertion_form(&a, XDR_DEFAULT)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    entra_error(&v, "invalid_client", 700027);
    // A certificate that is not PEM stops the start.
    for bad in [
        "not pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        APP_KEY,
    ] {
        let e = small()
            .client_certificate_pem(bad)
            .spawn()
            .await
            .unwrap_err();
        assert!(matches!(e, EmulatorError::Config(_)), "{e}");
        assert!(!e.to_string().contains("PRIVATE"), "{e}");
    }
    // The other fixture is a valid certificate too: registering it moves which key is good.
    let env = Env::start(small().client_certificate_pem(OTHER_CERT)).await;
    let c = claims(&env, &v2(DEFAULT_TENANT));
    let (s, _) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &assertion_form(&jwt(OTHER_KEY, "RS256", &c), XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &assertion_form(&jwt(APP_KEY, "RS256", &c), XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_federated_token_written_is_the_one_accepted() {
    let path = temp_path("federated");
    let env = Env::start(small().federated_token_out(&path)).await;
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT's shape: {token}");
    let (s, v) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &assertion_form(&token, XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = post_form(
        &env,
        &v1(DEFAULT_TENANT),
        &assertion_form(&token, XDR_RESOURCE),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Anything else is not: a changed signature fails the signature check.
    let mut other = token.clone();
    other.push('A');
    let (s, v) = post_form(
        &env,
        &v2(DEFAULT_TENANT),
        &assertion_form(&other, XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    entra_error(&v, "invalid_client", 700027);
    // Each start writes its own token.
    let env2 = Env::start(small().federated_token_out(&path)).await;
    let second = std::fs::read_to_string(&path).unwrap();
    assert_ne!(second, token);
    let (s, _) = post_form(
        &env2,
        &v2(DEFAULT_TENANT),
        &assertion_form(&token, XDR_DEFAULT),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_file(&path);
    // A path that cannot be written stops the start.
    let e = small()
        .federated_token_out(temp_path("no-such-dir").join("token"))
        .spawn()
        .await
        .unwrap_err();
    assert!(matches!(e, EmulatorError::Config(_)), "{e}");
}

// ---------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_serves_tokens_to_clients_that_trust_the_written_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert_out = temp_path("tls.pem");
    let emu = Emulator::builder()
        .rows_per_table(50)
        .incidents(5)
        .tls(Tls::Generated {
            cert_out: Some(cert_out.clone()),
        })
        .spawn()
        .await
        .unwrap();
    let base = emu.base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let pem = std::fs::read(&cert_out).unwrap();
    assert_eq!(emu.tls_certificate_pem().unwrap().as_bytes(), &pem[..]);
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let form = secret_form(DEFAULT_CLIENT_ID, "emulator-secret", XDR_DEFAULT);
    for host in [base.clone(), base.replace("127.0.0.1", "localhost")] {
        let r = trusting
            .post(format!("{host}/emulator/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone())
            .send()
            .await
            .unwrap();
        let (s, v) = json(r).await;
        assert_eq!(s, StatusCode::OK, "{host}: {v}");
        let token = v["access_token"].as_str().unwrap();
        let r = trusting
            .get(format!("{host}/api/incidents?$top=1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // The metadata names the https endpoints.
    let (_, v) = json(
        trusting
            .get(format!(
                "{base}/emulator/v2.0/.well-known/openid-configuration"
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        v["token_endpoint"],
        format!("{base}/emulator/oauth2/v2.0/token")
    );
    // A client that trusts another certificate gets nothing.
    let other = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(APP_CERT.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let e = other
        .post(format!("{base}/emulator/oauth2/v2.0/token"))
        .body(form.clone())
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect() || e.is_request(), "{e}");
    // Nor does plain HTTP.
    let plain = reqwest::Client::new();
    assert!(plain
        .post(format!(
            "{}/emulator/oauth2/v2.0/token",
            base.replace("https", "http")
        ))
        .body(form)
        .send()
        .await
        .is_err());
    emu.shutdown().await;
    let _ = std::fs::remove_file(&cert_out);
}

#[tokio::test]
async fn tls_files_that_do_not_hold_a_certificate_and_key_stop_the_start() {
    let junk = temp_path("junk.pem");
    std::fs::write(&junk, "not a pem").unwrap();
    let app_cert = temp_path("app-cert.pem");
    std::fs::write(&app_cert, APP_CERT).unwrap();
    let other_key = temp_path("other-key.pem");
    std::fs::write(&other_key, OTHER_KEY).unwrap();
    for (cert, key) in [
        (temp_path("missing"), other_key.clone()),
        (junk.clone(), other_key.clone()),
        (app_cert.clone(), junk.clone()),
        // A certificate with another certificate's key.
        (app_cert.clone(), other_key.clone()),
    ] {
        let e = Emulator::builder()
            .rows_per_table(10)
            .incidents(1)
            .tls(Tls::Files { cert, key })
            .spawn()
            .await
            .unwrap_err();
        assert!(matches!(e, EmulatorError::Config(_)), "{e}");
        assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    }
    // The fixture's own pair serves.
    let app_key = temp_path("app-key.pem");
    std::fs::write(&app_key, APP_KEY).unwrap();
    let emu = Emulator::builder()
        .rows_per_table(10)
        .incidents(1)
        .tls(Tls::Files {
            cert: app_cert.clone(),
            key: app_key.clone(),
        })
        .spawn()
        .await
        .unwrap();
    assert!(emu.base_url().starts_with("https://"));
    assert!(emu
        .tls_certificate_pem()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    emu.shutdown().await;
    for p in [junk, app_cert, other_key, app_key] {
        let _ = std::fs::remove_file(p);
    }
}
