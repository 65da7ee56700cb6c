//! The window planner: for any range and any history of results (at the cap or not,
//! finishing in any order), the windows tile the range with no gap and no overlap, and
//! the windows handed out tile it too, in order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use defender_core::hunting::{HuntResult, Row};
use defender_core::range::{RangeOptions, RangePlan, Split, MAX_WAITING_PER_SLOT};
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

/// What a window's run answers, in the tests below.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Fewer rows than the cap.
    Rows,
    /// Exactly the row cap: bisect if it can.
    AtCap,
    /// The service's "result too large": bisect if it can.
    TooLarge,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        2 => Just(Answer::Rows),
        5 => Just(Answer::AtCap),
        1 => Just(Answer::TooLarge),
    ]
}

/// Durations from nothing through nanoseconds, microseconds and milliseconds to `max_s`
/// seconds, so sub-millisecond spans are drawn as often as long ones.
fn duration(max_s: u64) -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_millis(1)),
        (1u64..1_000).prop_map(Duration::from_nanos),
        (1u64..1_000_000).prop_map(Duration::from_nanos),
        (1u64..2_000_000_000).prop_map(Duration::from_nanos),
        (1u64..=max_s * 1_000).prop_map(Duration::from_millis),
    ]
}

const ROW_CAP: u64 = 5;

/// Drives a plan through `answers` (then "below the cap" for everything, so it can end),
/// at most `max_steps` results in all. Returns the windows handed out, in order, and
/// whether the plan finished. Checks on every step that what was handed out, followed by
/// what the plan still holds, tiles `[from, to)`, and that the plan's memory stays bounded.
fn drive(
    plan: &mut RangePlan,
    from: SystemTime,
    to: SystemTime,
    concurrency: usize,
    answers: &[(Answer, prop::sample::Index)],
    max_steps: usize,
) -> Result<(Vec<defender_core::range::WindowRows>, bool), TestCaseError> {
    let mut running: Vec<SystemTime> = Vec::new();
    let mut handed = Vec::new();
    let mut answers = answers.iter().copied();
    for _ in 0..max_steps {
        while let Some(w) = plan.poll_window() {
            prop_assert!(
                from <= w.start && w.start < w.end && w.end <= to,
                "window {:?}..{:?} outside {:?}..{:?} or empty",
                w.start,
                w.end,
                from,
                to
            );
            prop_assert!(!running.contains(&w.start), "a window handed out twice");
            running.push(w.start);
        }
        prop_assert!(running.len() <= concurrency.max(1));
        // Bounded memory: the windows cut and not handed out stay few, whatever the split:
        // those running or waiting, and a pending half per level of bisection (at most 64:
        // a window is not split below 100 ns).
        let c = concurrency.max(1);
        prop_assert!(
            plan.windows().len() <= (MAX_WAITING_PER_SLOT + 1) * c + 2 * 64 * c + 1,
            "{} windows held",
            plan.windows().len()
        );
        if running.is_empty() {
            prop_assert!(plan.is_done(), "nothing runs, yet the plan is not done");
            break;
        }
        let (a, pick) = answers
            .next()
            .map_or((Answer::Rows, 0), |(a, i)| (a, i.index(running.len())));
        let start = running.swap_remove(pick);
        let result = match a {
            Answer::Rows => Ok(HuntResult {
                rows: vec![Row::new(); ROW_CAP as usize - 1],
                ..HuntResult::default()
            }),
            Answer::AtCap => Ok(HuntResult {
                rows: vec![Row::new(); ROW_CAP as usize],
                ..HuntResult::default()
            }),
            Answer::TooLarge => Err(defender_core::Error::ResultTooLarge(Default::default())),
        };
        match plan.handle_result(start, result) {
            Ok(()) => {}
            // "Too large" on a window that cannot be split ends the hunt.
            Err(defender_core::Error::ResultTooLarge(_)) => return Ok((handed, false)),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        while let Some(r) = plan.poll_rows() {
            handed.push(r);
        }
        let mut all: Vec<_> = handed.iter().map(|w| (w.start, w.end)).collect();
        all.extend(plan.windows());
        prop_assert!(tiles(&all, from, to).is_ok(), "{:?}", tiles(&all, from, to));
    }
    Ok((handed, plan.is_done()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any range (to the nanosecond), any minimum span (zero, sub-millisecond, hours),
    /// any split and any sequence of "at the cap" answers: the windows whose rows are
    /// handed out cover every instant of the range once, in time order. The reference is
    /// the definition itself: each probed instant lies in exactly one handed-out window,
    /// and the handed-out windows are in order.
    #[test]
    fn handed_out_windows_cover_each_instant_once(
        offset in duration(86_400),
        span in duration(30 * 86_400).prop_filter("a range", |d| !d.is_zero()),
        // Biased to narrow: a minimum span near the range's width allows no bisection.
        min_span in prop_oneof![
            2 => Just(Duration::ZERO),
            2 => (1u64..1_000_000).prop_map(Duration::from_nanos),
            2 => duration(4 * 3_600),
        ],
        split in prop_oneof![
            2 => Just(Split::Auto),
            1 => Just(Split::None),
            3 => duration(40 * 86_400).prop_map(Split::Every),
        ],
        concurrency in 1usize..5,
        answers in prop::collection::vec((answer(), any::<prop::sample::Index>()), 0..300),
        probes in prop::collection::vec(any::<prop::sample::Index>(), 1..20),
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let from = now - Duration::from_secs(31 * 86_400) + offset;
        let to = from + span;
        let opts = RangeOptions {
            split,
            concurrency,
            row_cap: ROW_CAP,
            min_span,
            lookback: Duration::from_secs(400 * 86_400),
            ..RangeOptions::default()
        };
        let (mut plan, _) = RangePlan::new("T", from, to, opts, now).unwrap();
        let (handed, done) = drive(&mut plan, from, to, concurrency, &answers, 3_000)?;
        let got: Vec<_> = handed.iter().map(|w| (w.start, w.end)).collect();
        if done {
            prop_assert!(tiles(&got, from, to).is_ok(), "{:?}", tiles(&got, from, to));
            let nanos = span.as_nanos();
            for p in probes {
                let at = from + Duration::from_nanos((p.index(usize::MAX) as u128 % nanos) as u64);
                let n = got.iter().filter(|(s, e)| *s <= at && at < *e).count();
                prop_assert_eq!(n, 1, "instant {:?} covered {} times", at, n);
            }
        } else if let Some(&(_, end)) = got.last() {
            // Stopped by the step bound: what was handed out is a prefix of the range.
            prop_assert!(tiles(&got, from, end).is_ok(), "{:?}", tiles(&got, from, end));
        }
        for (s, e) in got.windows(2).map(|p| (p[0], p[1])) {
            prop_assert!(s.1 <= e.0, "out of order");
        }
        // A window is handed out truncated only where it could not be bisected.
        for w in &handed {
            let width = w.end.duration_since(w.start).unwrap();
            if w.truncated && split != Split::None {
                prop_assert!(
                    width < min_span.saturating_mul(2) || width < Duration::from_nanos(200),
                    "a {:?} window handed out truncated with min_span {:?}",
                    width,
                    min_span
                );
            }
        }
    }
}

/// The lost-window bug: with a sub-millisecond minimum span, bisecting a 1 ms window put
/// its "second half" at the window's own end, over the next window, which was lost.
#[test]
fn bisecting_a_millisecond_window_loses_nothing() {
    let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let from = now - Duration::from_secs(86_400);
    let to = from + Duration::from_millis(3);
    let opts = RangeOptions {
        split: Split::Every(Duration::from_millis(1)),
        min_span: Duration::ZERO,
        concurrency: 1,
        row_cap: ROW_CAP,
        ..RangeOptions::default()
    };
    let (mut plan, _) = RangePlan::new("T", from, to, opts, now).unwrap();
    let w = plan.poll_window().unwrap();
    assert_eq!(w.end, from + Duration::from_millis(1));
    let at_cap = HuntResult {
        rows: vec![Row::new(); ROW_CAP as usize],
        ..HuntResult::default()
    };
    plan.handle_result(w.start, Ok(at_cap)).unwrap();
    let all = plan.windows();
    assert!(
        tiles(&all, from, to).is_ok(),
        "{:?}: {all:?}",
        tiles(&all, from, to)
    );
    let half = from + Duration::from_micros(500);
    let one = from + Duration::from_millis(1);
    // The two halves of the first window, then the rest, not cut yet.
    assert_eq!(all, [(from, half), (half, one), (one, to)]);
}

/// `Split::Every` cuts windows as they are asked for: a million windows are not planned
/// up front, and neither are the 2.6 billion of 1 ms windows over 30 days.
#[test]
fn fine_splits_are_planned_lazily() {
    let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    for (span, every, count) in [
        (Duration::from_secs(1), Duration::from_micros(1), 1_000_000),
        (
            Duration::from_secs(29 * 86_400),
            Duration::from_millis(1),
            29 * 86_400_000,
        ),
    ] {
        let from = now - span;
        let opts = RangeOptions {
            split: Split::Every(every),
            ..RangeOptions::default()
        };
        let (mut plan, _) = RangePlan::new("T", from, now, opts, now).unwrap();
        assert!(
            plan.windows().len() <= 2,
            "{} windows planned up front",
            plan.windows().len()
        );
        assert_eq!(plan.progress().windows_total, count);
        let w = plan.poll_window().unwrap();
        assert_eq!((w.start, w.end), (from, from + every));
    }
}
