//! One call through our async client against the emulator on loopback, beside the same
//! HTTP request made with bare reqwest (same token, same URL), in the same run. The
//! ratio is our overhead: the engine's bookkeeping and the client's locking. After
//! criterion's two measurements, the two calls alternate in blocks and the median ratio
//! is printed (steadier on a shared machine).
//!
//! `cargo bench -p defender-async --bench overhead`

use criterion::{criterion_group, criterion_main, Criterion};
use defender_async::Client;
use defender_core::incidents::IncidentQuery;
use defender_core::Limits;
use defender_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};
use futures_util::StreamExt;

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let limits = Limits::parse("2021,incidents.calls=none,hunting.calls=none").unwrap();
    let emu = rt
        .block_on(
            Emulator::builder()
                .limits(limits.clone())
                .incidents(20)
                .spawn(),
        )
        .unwrap();
    let base = emu.base_url();
    let client = {
        let _g = rt.enter();
        Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret(DEFAULT_SECRET)
            .base_url(&base)
            .login_url(&base)
            .limits_value(limits)
            .build()
            .unwrap()
    };
    let id = rt.block_on(async {
        let mut s = std::pin::pin!(client.incidents().list(IncidentQuery::default()));
        s.next().await.unwrap().unwrap().incident_id.unwrap()
    });
    let http = reqwest::Client::new();
    let token: String = rt.block_on(async {
        let body = format!(
            "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_SECRET}&grant_type=client_credentials&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"
        );
        let r = http
            .post(format!("{base}/{DEFAULT_TENANT}/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    });
    let url = format!("{base}/api/incidents/{id}");

    let mut g = c.benchmark_group("get one incident on loopback");
    g.bench_function("bare reqwest", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(r.status().is_success());
                let body = r.bytes().await.unwrap();
                serde_json::from_slice::<defender_core::incidents::Incident>(&body).unwrap()
            })
        })
    });
    g.bench_function("defender-async", |b| {
        b.iter(|| rt.block_on(client.incidents().get(id.clone())).unwrap())
    });
    g.finish();

    // Criterion measures one function after the other, and on a shared machine the load
    // drifts between them: blocks of calls, alternating, see the same load, so the median
    // of their ratios is the steadier figure. Not in `cargo test`'s quick pass.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bare = || {
        rt.block_on(async {
            let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
            let body = r.bytes().await.unwrap();
            serde_json::from_slice::<defender_core::incidents::Incident>(&body).unwrap()
        })
    };
    let ours = || rt.block_on(client.incidents().get(id.clone())).unwrap();
    let (block, rounds) = (200u32, 40usize);
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        for _ in 0..block {
            f();
        }
        t.elapsed()
    };
    let mut ratios = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let (b, o) = if i % 2 == 0 {
            let b = time(&|| drop(bare()));
            (b, time(&|| drop(ours())))
        } else {
            let o = time(&|| drop(ours()));
            (time(&|| drop(bare())), o)
        };
        ratios.push(o.as_secs_f64() / b.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "alternating blocks of {block} calls, {rounds} rounds: defender-async / bare reqwest, \
         median {:.3} (quartiles {:.3} .. {:.3})",
        ratios[rounds / 2],
        ratios[rounds / 4],
        ratios[rounds * 3 / 4]
    );
}

criterion_group!(benches, overhead);
criterion_main!(benches);
