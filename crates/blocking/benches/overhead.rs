//! One call through our blocking client against the emulator on loopback, beside the
//! same HTTP request made with bare ureq (same token, same URL), in the same run. After
//! criterion's two measurements, the two calls alternate in blocks and the median ratio
//! is printed (steadier on a shared machine).
//!
//! `cargo bench -p defender-blocking --bench overhead`

use criterion::{criterion_group, criterion_main, Criterion};
use defender_blocking::Client;
use defender_core::incidents::IncidentQuery;
use defender_core::Limits;
use defender_emulator::{Emulator, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};

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
    let client = Client::builder()
        .tenant(DEFAULT_TENANT)
        .client_id(DEFAULT_CLIENT_ID)
        .client_secret(DEFAULT_SECRET)
        .base_url(&base)
        .login_url(&base)
        .limits_value(limits)
        .build()
        .unwrap();
    let id = client
        .incidents()
        .list(IncidentQuery::default())
        .next()
        .unwrap()
        .unwrap()
        .incident_id
        .unwrap();
    let agent = defender_blocking::default_agent();
    let body = format!(
        "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_SECRET}&grant_type=client_credentials&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"
    );
    let mut r = agent
        .post(format!("{base}/{DEFAULT_TENANT}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap();
    let token = v["access_token"].as_str().unwrap().to_owned();
    let url = format!("{base}/api/incidents/{id}");

    let mut g = c.benchmark_group("get one incident on loopback (blocking)");
    g.bench_function("bare ureq", |b| {
        b.iter(|| {
            let mut r = agent
                .get(&url)
                .header("authorization", format!("Bearer {token}"))
                .call()
                .unwrap();
            assert!(r.status().is_success());
            let body = r.body_mut().read_to_vec().unwrap();
            serde_json::from_slice::<defender_core::incidents::Incident>(&body).unwrap()
        })
    });
    g.bench_function("defender-blocking", |b| {
        b.iter(|| client.incidents().get(id.clone()).unwrap())
    });
    g.finish();

    // As in defender-async's bench: alternating blocks see the same machine load.
    if std::env::args().any(|a| a == "--bench") {
        let bare = || {
            let mut r = agent
                .get(&url)
                .header("authorization", format!("Bearer {token}"))
                .call()
                .unwrap();
            let body = r.body_mut().read_to_vec().unwrap();
            drop(serde_json::from_slice::<defender_core::incidents::Incident>(&body).unwrap());
        };
        let ours = || drop(client.incidents().get(id.clone()).unwrap());
        let (block, rounds) = (200u32, 40usize);
        let time = |f: &dyn Fn()| {
            let t = std::time::Instant::now();
            (0..block).for_each(|_| f());
            t.elapsed().as_secs_f64()
        };
        let mut ratios: Vec<f64> = (0..rounds)
            .map(|i| {
                if i % 2 == 0 {
                    let b = time(&bare);
                    time(&ours) / b
                } else {
                    let o = time(&ours);
                    o / time(&bare)
                }
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "alternating blocks of {block} calls, {rounds} rounds: defender-blocking / bare ureq, \
             median {:.3} (quartiles {:.3} .. {:.3})",
            ratios[rounds / 2],
            ratios[rounds / 4],
            ratios[rounds * 3 / 4]
        );
    }
    rt.block_on(emu.shutdown());
}

criterion_group!(benches, overhead);
criterion_main!(benches);
