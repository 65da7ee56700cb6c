//! The window planner: for any range and any history of results (at the cap or not,
//! finishing in any order), the windows tile the range with no gap and no overlap, and
//! the windows handed out tile it too, in order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use defender_core::hunting::{HuntResult, Row};
use defender_core::range::{RangeOptions, RangePlan, Split};
use proptest::prelude::*;

fn tiles(
    windows: &[(SystemTime, SystemTime)],
    from: SystemTime,
    to: SystemTime,
) -> Result<(), String> {
    let mut at = from;
    for (s, e) in windows {
        if *s != at {
            return Err(format!("gap or overlap at {s:?} (expected {at:?})"));
        }
        if e <= s {
            return Err("an empty window".into());
        }
        at = *e;
    }
    if at != to {
        return Err(format!("ends at {at:?}, not {to:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn windows_tile_the_range(
        start_s in 0u64..1_000_000,
        span_s in 1u64..5_000_000,
        every in proptest::option::of(1u64..60),
        concurrency in 1usize..5,
        outcomes in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..200),
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let from = now - Duration::from_secs(20 * 86_400) + Duration::from_secs(start_s);
        let to = from + Duration::from_secs(span_s);
        let split = every.map_or(Split::Auto, |e| Split::Every(Duration::from_secs((span_s / e).max(1))));
        // The minimum span bounds how deep bisection goes (and so the test's work).
        let min_span = Duration::from_secs((span_s / 50).max(1));
        let opts = RangeOptions { split, concurrency, row_cap: 5, min_span, lookback: Duration::from_secs(400 * 86_400), ..RangeOptions::default() };
        let (mut plan, _) = RangePlan::new("T", from, to, opts, now).unwrap();
        let mut running = Vec::new();
        let mut handed = Vec::new();
        let mut outcomes = outcomes.into_iter().cycle();
        while !plan.is_done() {
            while let Some(w) = plan.poll_window() {
                prop_assert!(w.start >= from && w.end <= to);
                running.push(w.start);
            }
            let (at_cap, pick) = outcomes.next().unwrap();
            if running.is_empty() {
                prop_assert!(plan.poll_rows().is_some() || plan.is_done());
            } else {
                let i = pick.index(running.len());
                let start = running.swap_remove(i);
                let n = if at_cap { 5 } else { 2 };
                plan.handle_result(start, Ok(HuntResult { rows: vec![Row::new(); n], ..HuntResult::default() })).unwrap();
            }
            while let Some(r) = plan.poll_rows() {
                handed.push(r);
            }
            let mut all: Vec<_> = handed.iter().map(|w: &defender_core::range::WindowRows| (w.start, w.end)).collect();
            all.extend(plan.windows());
            // Handed-out windows followed by the plan's windows tile the range at every step.
            prop_assert!(tiles(&all, from, to).is_ok(), "{:?}", tiles(&all, from, to));
        }
        let done: Vec<_> = handed.iter().map(|w| (w.start, w.end)).collect();
        prop_assert!(tiles(&done, from, to).is_ok(), "{:?}", tiles(&done, from, to));
        // Only windows below twice the minimum span may come back truncated.
        for w in &handed {
            if w.truncated {
                prop_assert!(w.end.duration_since(w.start).unwrap() < min_span * 2);
            }
        }
    }
}
