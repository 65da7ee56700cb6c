//! Call quotas in both window modes, with the real 429 bodies, and the running-time
//! budget, all on the manual clock.

mod common;

use std::time::Duration;

use common::*;
use defender_emulator::{App, CostModel, RuntimeScope, WindowMode};
use reqwest::{Response, StatusCode};
use serde_json::Value;

const Q: &str = "AlertInfo | take 1";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn throttled(r: Response) -> (Option<String>, String, Value) {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let (_, v) = json(r).await;
    let m = envelope(&v, "429");
    (retry, m, v)
}

#[tokio::test]
async fn sliding_windows_admit_exactly_the_limit() {
    let env = Env::start(
        small()
            .limits(
                "2021,hunting.calls=3/1m,hunting.runtime=none"
                    .parse()
                    .unwrap(),
            )
            .window_mode(WindowMode::Sliding),
    )
    .await;
    let token = env.token().await;
    let clock = env.clock();
    for _ in 0..3 {
        assert_eq!(env.hunt(&token, XDR_HUNT, Q).await.status(), StatusCode::OK);
        clock.advance(secs(10));
    }
    // t = 30: calls at 0, 10, 20 fill the window; the one at 0 leaves at 60.
    let (retry, m, v) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert_eq!(
        m,
        "API calls quota exceeded! maximum allowed 3 per 00:01:00 You can send requests again in 30 seconds."
    );
    assert_eq!(retry.as_deref(), Some("30"));
    assert_eq!(v["error"]["target"], "emulator");
    // Throttled calls do not count: hammering changes nothing.
    for _ in 0..5 {
        assert_eq!(
            env.hunt(&token, XDR_HUNT, Q).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    clock.advance(secs(29));
    let (retry, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert!(m.ends_with("again in 1 seconds."), "{m}");
    assert_eq!(retry.as_deref(), Some("1"));
    clock.advance(secs(1)); // t = 60
    assert_eq!(env.hunt(&token, XDR_HUNT, Q).await.status(), StatusCode::OK);
    // t = 61: the window (1, 61] holds the calls at 10, 20 and 60.
    clock.advance(secs(1));
    let (retry, _, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert_eq!(retry.as_deref(), Some("9"));
    // Sub-second waits round up.
    clock.advance(Duration::from_millis(8500));
    let (retry, _, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert_eq!(retry.as_deref(), Some("1"));
    let stats = env.emu.stats();
    let k = stats.keys.iter().find(|k| k.group == "hunting").unwrap();
    assert_eq!(k.throttled, 9);
    assert_eq!(k.requests, 13);
}

#[tokio::test]
async fn fixed_windows_reset_at_the_boundary() {
    let env = Env::start(
        small()
            .limits(
                "2021,hunting.calls=3/1m,hunting.runtime=none"
                    .parse()
                    .unwrap(),
            )
            .window_mode(WindowMode::Fixed),
    )
    .await;
    let token = env.token().await;
    let clock = env.clock();
    for _ in 0..3 {
        assert_eq!(env.hunt(&token, XDR_HUNT, Q).await.status(), StatusCode::OK);
        clock.advance(secs(10));
    }
    let (retry, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert_eq!(
        m,
        "API calls quota exceeded! maximum allowed 3 per 00:01:00 You can send requests again in 30 seconds."
    );
    assert_eq!(retry.as_deref(), Some("30"));
    clock.advance(secs(30)); // t = 60: a fresh window
    for _ in 0..3 {
        assert_eq!(env.hunt(&token, XDR_HUNT, Q).await.status(), StatusCode::OK);
    }
    let (retry, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert!(m.ends_with("again in 60 seconds."), "{m}");
    assert_eq!(retry.as_deref(), Some("60"));
    clock.advance(secs(59));
    assert_eq!(
        env.hunt(&token, XDR_HUNT, Q).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(secs(1));
    assert_eq!(env.hunt(&token, XDR_HUNT, Q).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_window_is_enforced_and_named_as_a_timespan() {
    let env = Env::start(
        small().limits(
            "2021,hunting.calls=2/1m,hunting.calls=3/1h,hunting.runtime=none,incidents.calls=1/1d"
                .parse()
                .unwrap(),
        ),
    )
    .await;
    let token = env.token().await;
    let clock = env.clock();
    env.hunt(&token, XDR_HUNT, Q).await;
    env.hunt(&token, XDR_HUNT, Q).await;
    let (_, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert!(
        m.starts_with("API calls quota exceeded! maximum allowed 2 per 00:01:00"),
        "{m}"
    );
    clock.advance(secs(60));
    assert_eq!(env.hunt(&token, XDR_HUNT, Q).await.status(), StatusCode::OK);
    let (retry, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert_eq!(
        m,
        "API calls quota exceeded! maximum allowed 3 per 01:00:00 You can send requests again in 3540 seconds."
    );
    assert_eq!(retry.as_deref(), Some("3540"));

    assert_eq!(
        env.get(&token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    let (_, m, _) = throttled(env.get(&token, "/api/incidents/1000").await).await;
    assert!(m.starts_with("API calls quota exceeded! maximum allowed 1 per 1.00:00:00 You can send requests again in"), "{m}");
}

#[tokio::test]
async fn quotas_are_per_tenant_app_and_group() {
    let env = Env::start(
        small()
            .limits(
                "2021,hunting.calls=1/1m,incidents.calls=1/1m"
                    .parse()
                    .unwrap(),
            )
            .app(App::new(
                "emulator",
                "second-app",
                "s",
                &["AdvancedHunting.Read.All"],
            ))
            .app(App::new(
                "fabrikam",
                "third-app",
                "s",
                &["AdvancedHunting.Read.All"],
            )),
    )
    .await;
    let one = env.token().await;
    let two = env.token_of("emulator", "second-app", "s").await;
    let three = env.token_of("fabrikam", "third-app", "s").await;
    assert_eq!(env.hunt(&one, XDR_HUNT, Q).await.status(), StatusCode::OK);
    // The hunting group covers all three hunting paths.
    assert_eq!(
        env.hunt(&one, GRAPH_HUNT, Q).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, m, v) = throttled(env.hunt(&one, MDE_HUNT, Q).await).await;
    assert!(m.contains("maximum allowed 1 per 00:01:00"));
    assert_eq!(v["error"]["target"], "emulator");
    // Other apps and other groups have their own budgets.
    assert_eq!(env.hunt(&two, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(env.hunt(&three, XDR_HUNT, Q).await.status(), StatusCode::OK);
    let (_, _, v) = throttled(env.hunt(&three, XDR_HUNT, Q).await).await;
    assert_eq!(v["error"]["target"], "fabrikam");
    assert_eq!(
        env.get(&one, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_retry_signals_can_be_switched_off() {
    let env = Env::start(
        small()
            .limits("2021,hunting.calls=1/1m".parse().unwrap())
            .retry_after_header(false)
            .again_in_sentence(false),
    )
    .await;
    let token = env.token().await;
    env.hunt(&token, XDR_HUNT, Q).await;
    let (retry, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert_eq!(retry, None);
    assert_eq!(
        m,
        "API calls quota exceeded! maximum allowed 1 per 00:01:00"
    );
}

#[tokio::test]
async fn graph_throttles_with_its_own_body() {
    let env = Env::start(
        small().limits(
            "2021,hunting.calls=1/1m,incidents.calls=1/1m"
                .parse()
                .unwrap(),
        ),
    )
    .await;
    let token = env.token().await;
    env.hunt(&token, GRAPH_HUNT, Q).await;
    env.get(&token, "/v1.0/security/incidents?$top=1").await;
    for r in [
        env.hunt(&token, GRAPH_HUNT, Q).await,
        env.get(&token, "/v1.0/security/incidents?$top=1").await,
    ] {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "60");
        let (_, v) = json(r).await;
        assert_eq!(envelope(&v, "TooManyRequests"), "Please retry again later.");
        assert!(v["error"]["innerError"]["date"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T00:00:00"));
        assert!(v["error"]["innerError"]["request-id"].is_string());
    }
}

#[tokio::test]
async fn the_running_time_budget_runs_out_and_comes_back() {
    let env = Env::start(
        small()
            .limits(
                "2021,hunting.calls=1000/1m,hunting.runtime=250s/1h"
                    .parse()
                    .unwrap(),
            )
            .token_lifetime(secs(7 * 86_400))
            .cost_model(CostModel {
                base: secs(100),
                per_row: Duration::ZERO,
                per_operator: Duration::ZERO,
            }),
    )
    .await;
    let token = env.token().await;
    let clock = env.clock();
    for _ in 0..3 {
        let (s, v) = json(env.hunt(&token, XDR_HUNT, Q).await).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["Stats"]["ExecutionTime"], 100.0);
    }
    // 300 s charged of 250 s: the fourth query is refused until the hour has passed.
    let r = env.hunt(&token, XDR_HUNT, Q).await;
    assert_eq!(r.headers()["retry-after"], "3600");
    let (_, m, _) = throttled(r).await;
    assert_eq!(
        m,
        "You have exceeded processing resources allocated to this tenant. You can run queries again in 01:00:00."
    );
    // Incidents are not affected.
    assert_eq!(
        env.get(&token, "/api/incidents?$top=1").await.status(),
        StatusCode::OK
    );
    let stats = env.emu.stats();
    let k = stats.keys.iter().find(|k| k.group == "hunting").unwrap();
    assert_eq!(k.runtime_charged_seconds, 300.0);
    let w = k.windows.iter().find(|w| w.kind == "runtime").unwrap();
    assert_eq!(
        (w.limit, w.used, w.period.as_str()),
        (250.0, 300.0, "01:00:00")
    );

    clock.advance(secs(3599));
    let (_, m, _) = throttled(env.hunt(&token, XDR_HUNT, Q).await).await;
    assert!(m.ends_with("again in 00:00:01."), "{m}");
    clock.advance(secs(1));
    assert_eq!(
        env.hunt(&token, GRAPH_HUNT, Q).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_day_budget_in_fixed_windows() {
    let env = Env::start(
        small()
            .limits(
                "2021,hunting.calls=1000/1m,hunting.runtime=1h/1d"
                    .parse()
                    .unwrap(),
            )
            .window_mode(WindowMode::Fixed)
            .token_lifetime(secs(7 * 86_400))
            .cost_model(CostModel {
                base: secs(1800),
                per_row: Duration::ZERO,
                per_operator: Duration::ZERO,
            }),
    )
    .await;
    let token = env.token().await;
    let clock = env.clock();
    clock.advance(secs(6 * 3600));
    assert_eq!(env.hunt(&token, MDE_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(env.hunt(&token, MDE_HUNT, Q).await.status(), StatusCode::OK);
    let r = env.hunt(&token, MDE_HUNT, Q).await;
    assert_eq!(r.headers()["retry-after"], (18 * 3600).to_string());
    let (_, m, _) = throttled(r).await;
    assert!(m.ends_with("again in 18:00:00."), "{m}");
    clock.advance(secs(18 * 3600));
    assert_eq!(env.hunt(&token, MDE_HUNT, Q).await.status(), StatusCode::OK);
}

/// Two apps of one tenant and one app of another, 100 s per query against 150 s an hour.
fn runtime_env(scope: Option<RuntimeScope>) -> defender_emulator::EmulatorBuilder {
    let mut b = small()
        .limits(
            "2021,hunting.calls=1000/1m,hunting.runtime=150s/1h"
                .parse()
                .unwrap(),
        )
        .token_lifetime(secs(7 * 86_400))
        .cost_model(CostModel {
            base: secs(100),
            per_row: Duration::ZERO,
            per_operator: Duration::ZERO,
        })
        .app(App::new(
            "emulator",
            "second-app",
            "s",
            &["AdvancedHunting.Read.All"],
        ))
        .app(App::new(
            "fabrikam",
            "third-app",
            "s",
            &["AdvancedHunting.Read.All"],
        ));
    if let Some(scope) = scope {
        b = b.runtime_scope(scope);
    }
    b
}

#[tokio::test]
async fn the_apps_of_a_tenant_share_one_running_time_budget() {
    let env = Env::start(runtime_env(None)).await;
    let one = env.token().await;
    let two = env.token_of("emulator", "second-app", "s").await;
    let three = env.token_of("fabrikam", "third-app", "s").await;
    // The first app spends the tenant's budget (200 s of 150 s) ...
    assert_eq!(env.hunt(&one, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(env.hunt(&one, XDR_HUNT, Q).await.status(), StatusCode::OK);
    // ... so the second app of the same tenant is refused with the running-time 429,
    let r = env.hunt(&two, XDR_HUNT, Q).await;
    assert_eq!(r.headers()["retry-after"], "3600");
    let (_, m, v) = throttled(r).await;
    assert_eq!(
        m,
        "You have exceeded processing resources allocated to this tenant. You can run queries again in 01:00:00."
    );
    assert_eq!(v["error"]["target"], "emulator");
    // while another tenant has its own budget.
    assert_eq!(env.hunt(&three, XDR_HUNT, Q).await.status(), StatusCode::OK);
    // Calls are still counted per app; the running time shown is the tenant's.
    let stats = env.emu.stats();
    let second = stats
        .keys
        .iter()
        .find(|k| k.client_id == "second-app" && k.group == "hunting")
        .unwrap();
    assert_eq!((second.requests, second.throttled), (1, 1));
    assert_eq!(second.runtime_charged_seconds, 200.0);
    let w = second.windows.iter().find(|w| w.kind == "calls").unwrap();
    assert_eq!(w.used, 0.0);
    // The budget comes back for both apps together.
    env.clock().advance(secs(3600));
    assert_eq!(env.hunt(&two, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(env.hunt(&two, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(
        env.hunt(&one, XDR_HUNT, Q).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn per_app_running_time_keeps_the_apps_apart() {
    let env = Env::start(runtime_env(Some(RuntimeScope::App))).await;
    let one = env.token().await;
    let two = env.token_of("emulator", "second-app", "s").await;
    assert_eq!(env.hunt(&one, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(env.hunt(&one, XDR_HUNT, Q).await.status(), StatusCode::OK);
    let (_, m, _) = throttled(env.hunt(&one, XDR_HUNT, Q).await).await;
    assert!(
        m.starts_with("You have exceeded processing resources"),
        "{m}"
    );
    // The second app has a budget of its own.
    assert_eq!(env.hunt(&two, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(env.hunt(&two, XDR_HUNT, Q).await.status(), StatusCode::OK);
    assert_eq!(
        env.hunt(&two, XDR_HUNT, Q).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let stats = env.emu.stats();
    let second = stats
        .keys
        .iter()
        .find(|k| k.client_id == "second-app" && k.group == "hunting")
        .unwrap();
    assert_eq!(second.runtime_charged_seconds, 200.0);
}
