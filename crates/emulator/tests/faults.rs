//! Seeded faults: reproducible from the seed, each kind as documented.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::*;
use defender_core::throttle::Throttle;
use defender_emulator::FaultSpec;
use reqwest::StatusCode;

fn with_faults(spec: &str) -> defender_emulator::EmulatorBuilder {
    small()
        .limits(
            "2021,hunting.calls=100000/1m,incidents.calls=100000/1m"
                .parse()
                .unwrap(),
        )
        .faults(FaultSpec::parse(spec).unwrap())
}

/// What a client saw: a status and whether the body was complete JSON, or a broken
/// connection.
async fn outcome(env: &Env, token: &str, path: &str) -> String {
    let token = env.for_path(token, path).await;
    match env
        .http
        .get(format!("{}{path}", env.base))
        .bearer_auth(token)
        .send()
        .await
    {
        Err(_) => "broken".into(),
        Ok(r) => {
            let s = r.status().as_u16();
            match r.bytes().await {
                Err(_) => format!("{s}-cut"),
                Ok(b) if serde_json::from_slice::<serde_json::Value>(&b).is_ok() => s.to_string(),
                Ok(_) => format!("{s}-notjson"),
            }
        }
    }
}

async fn run(seed: u64, n: usize) -> (Vec<String>, defender_emulator::Stats) {
    let env = Env::start(
        with_faults(
            "500=0.12,503=0.1,reset=0.1,truncate=0.1,malformed=0.1,odd429=0.12,slow=0.05:10ms",
        )
        .seed(seed),
    )
    .await;
    let token = env.token().await;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(outcome(&env, &token, "/api/incidents?$top=1").await);
    }
    (v, env.emu.stats())
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults() {
    let (a, stats) = run(7, 80).await;
    let (b, _) = run(7, 80).await;
    let (c, _) = run(8, 80).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let kinds: BTreeSet<&str> = a.iter().map(String::as_str).collect();
    for k in [
        "200",
        "500",
        "503",
        "429",
        "200-notjson",
        "200-cut",
        "broken",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    assert!(kinds.contains("broken"), "{kinds:?}");
    assert!(stats.faults > 20, "{stats:?}");
    assert_eq!(stats.faults, stats.faults_by_kind.values().sum::<u64>());
    let k = stats.keys.iter().find(|k| k.group == "incidents").unwrap();
    assert_eq!(k.faults, stats.faults);
}

#[tokio::test]
async fn status_faults_carry_the_envelope() {
    let env = Env::start(with_faults("500=1")).await;
    // The token endpoint and the control endpoints are spared.
    let token = env.token().await;
    let (s, v) = json(env.get(&token, "/api/incidents").await).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    envelope(&v, "InternalServerError");
    let (s, v) = json(
        env.http
            .get(format!("{}/_emulator/stats", env.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["faults_by_kind"]["500"], 1);
    // Faults answer before the service: the call was not counted against the quota.
    assert_eq!(v["keys"][0]["requests"], 0);
}

#[tokio::test]
async fn the_token_endpoint_only_when_asked() {
    let env = Env::start(with_faults("503=1,token")).await;
    let r = env
        .token_for("emulator", "emulator-client", "emulator-secret")
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn resets_and_truncations_break_the_response() {
    let env = Env::start(with_faults("reset=1")).await;
    let token = env.token().await;
    for _ in 0..3 {
        let o = outcome(&env, &token, "/api/incidents?$top=1").await;
        assert_eq!(
            o, "broken",
            "a reset sends nothing, not even the status line"
        );
    }
    let env = Env::start(with_faults("truncate=1")).await;
    let token = env.token().await;
    for path in ["/api/incidents?$top=3", "/v1.0/security/incidents/1000"] {
        assert_eq!(outcome(&env, &token, path).await, "200-cut");
    }
    let env = Env::start(with_faults("malformed=1")).await;
    let token = env.token().await;
    assert_eq!(
        outcome(&env, &token, "/api/incidents?$top=3").await,
        "200-notjson"
    );
}

#[tokio::test]
async fn slow_responses_are_late_but_whole() {
    let env = Env::start(with_faults("slow=1:300ms")).await;
    let token = env.token().await;
    let t = Instant::now();
    assert_eq!(outcome(&env, &token, "/api/incidents?$top=1").await, "200");
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn odd_429s_come_in_every_variant_and_core_reads_them() {
    let env = Env::start(with_faults("odd429=1")).await;
    let token = env.token().await;
    let mut seen = BTreeSet::new();
    for _ in 0..80 {
        let r = env.get(&token, "/api/incidents?$top=1").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        let variant = if body.is_empty() {
            "empty"
        } else if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            "text"
        } else if text.contains("1.00:00:00") {
            "day"
        } else if text.contains("Maximum allowed") {
            "capitalised"
        } else if headers.contains_key("retry-after-ms") {
            "retry-after-ms"
        } else if headers.contains_key("x-ms-retry-after-ms") {
            "x-ms-retry-after-ms"
        } else if headers["retry-after"].to_str().unwrap().contains("GMT") {
            "http-date"
        } else if headers["retry-after"].to_str().unwrap().contains('.') {
            "decimal"
        } else {
            "other"
        };
        seen.insert(variant);
        // The emulator's wall clock is START_MS; core reads every variant's wait.
        let wall = UNIX_EPOCH + Duration::from_millis(START_MS as u64);
        let t = Throttle::parse(&headers, &body, wall);
        assert!(
            t.retry_after.is_some() || t.limit.is_some(),
            "{variant}: {headers:?} {text}"
        );
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert!(!seen.contains("other"));
}
