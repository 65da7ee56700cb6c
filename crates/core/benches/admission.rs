//! One admission decision of our quota (every window of the 2021 incident limits: 50 per
//! minute and 1,500 per hour, checked at once) beside `governor`'s `check()` on a single
//! per-minute quota, in the same run. Time advances by a step that keeps both admitting
//! (one call every 2.4 s fits both windows), so both measure the admit path.
//!
//! `cargo bench -p defender-core --bench admission`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use defender_core::quota::Quota;
use defender_core::Limits;
use governor::clock::FakeRelativeClock;
use governor::{Quota as GQuota, RateLimiter};

fn admission(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("admission");

    group.bench_function("ours: 50/min + 1500/h", |b| {
        let mut q = Quota::new(&limits.incidents.calls, Duration::from_millis(500));
        #[allow(clippy::disallowed_methods)] // a bench needs one real instant to count from
        let mut now = Instant::now();
        let step = Duration::from_millis(2401);
        b.iter(|| {
            now += step;
            black_box(q.try_acquire(black_box(now)).is_ok())
        })
    });

    group.bench_function("governor: 50/min", |b| {
        let clock = FakeRelativeClock::default();
        let lim = RateLimiter::direct_with_clock(
            GQuota::per_minute(NonZeroU32::new(50).unwrap()),
            clock.clone(),
        );
        let step = Duration::from_millis(2401);
        b.iter(|| {
            clock.advance(step);
            black_box(lim.check().is_ok())
        })
    });

    group.bench_function("ours: saturated (denied)", |b| {
        let mut q = Quota::new(&limits.incidents.calls, Duration::from_millis(500));
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        for _ in 0..50 {
            let _ = q.try_acquire(now);
        }
        b.iter(|| black_box(q.try_acquire(black_box(now)).is_err()))
    });

    group.bench_function("governor: saturated (denied)", |b| {
        let clock = FakeRelativeClock::default();
        let lim =
            RateLimiter::direct_with_clock(GQuota::per_minute(NonZeroU32::new(50).unwrap()), clock);
        for _ in 0..50 {
            let _ = lim.check();
        }
        b.iter(|| black_box(lim.check().is_err()))
    });
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
