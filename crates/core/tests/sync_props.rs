//! Model-based property test of the sync plan (virtual time): a service whose incidents
//! are created and changed at random while a sync lists its windows page by page, in an
//! order of the service's choosing, with runs cut off at random points (a crash: the
//! checkpoint saved is the last one whose window was delivered whole) and resumed.
//! After the churn stops and two more runs finish:
//! - the final version of every incident was delivered (by some run);
//! - no two finished runs delivered the same version (a finished run repeats nothing);
//! - the checkpoint never moved backwards and never past a run's start less its lag.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use defender_core::sync::{SyncPlan, Verdict, Window};
use proptest::prelude::*;

/// One incident's current version, as the service holds it.
#[derive(Debug, Clone)]
struct Incident {
    id: u32,
    version: u32,
    updated: SystemTime,
}

#[derive(Debug, Clone)]
enum Step {
    /// Time passes (ms).
    Wait(u16),
    /// A new incident.
    Create,
    /// An incident changes (by index among those that exist).
    Update(usize),
    /// A sync run that lists `pages` pages at most before it crashes (none: it finishes),
    /// with churn between its pages.
    Run {
        crash_after: Option<u8>,
        churn: Vec<Churn>,
    },
}

#[derive(Debug, Clone)]
enum Churn {
    Create,
    Update(usize),
    Wait(u16),
}

fn churn() -> impl Strategy<Value = Churn> {
    prop_oneof![
        Just(Churn::Create),
        any::<usize>().prop_map(Churn::Update),
        (1u16..500).prop_map(Churn::Wait),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1u16..2_000).prop_map(Step::Wait),
        3 => Just(Step::Create),
        3 => any::<usize>().prop_map(Step::Update),
        2 => (proptest::option::of(0u8..12), prop::collection::vec(churn(), 0..12))
            .prop_map(|(crash_after, churn)| Step::Run { crash_after, churn }),
    ]
}

struct Service {
    now: SystemTime,
    incidents: Vec<Incident>,
    next_id: u32,
    /// Listing order: newest created first, or by update time.
    newest_first: bool,
}

impl Service {
    /// Every change is stamped with the service's clock, which moves at least a tick.
    fn tick(&mut self, ms: u16) {
        self.now += Duration::from_millis(u64::from(ms)) + Duration::from_micros(1);
    }

    fn create(&mut self) {
        self.tick(0);
        self.next_id += 1;
        self.incidents.push(Incident {
            id: self.next_id,
            version: 1,
            updated: self.now,
        });
    }

    fn update(&mut self, i: usize) {
        if self.incidents.is_empty() {
            return;
        }
        self.tick(0);
        let k = i % self.incidents.len();
        let now = self.now;
        let inc = &mut self.incidents[k];
        inc.version += 1;
        inc.updated = now;
    }

    fn apply(&mut self, c: &Churn) {
        match c {
            Churn::Create => self.create(),
            Churn::Update(i) => self.update(*i),
            Churn::Wait(ms) => self.tick(*ms),
        }
    }

    /// The first page of a window: `top` incidents and whether there are more.
    fn list(&self, w: Window, top: u32) -> (Vec<Incident>, bool) {
        let mut hits: Vec<Incident> = self
            .incidents
            .iter()
            .filter(|i| i.updated >= w.from && i.updated < w.to)
            .cloned()
            .collect();
        if self.newest_first {
            hits.sort_by_key(|i| std::cmp::Reverse(i.id));
        } else {
            hits.sort_by_key(|i| i.updated);
        }
        let more = hits.len() > top as usize;
        hits.truncate(top as usize);
        (hits, more)
    }
}

/// One run: what it delivered, and whether it finished.
fn run(
    svc: &mut Service,
    checkpoint: &mut Option<SystemTime>,
    since: SystemTime,
    lag: Duration,
    top: u32,
    crash_after: Option<u8>,
    churn: &[Churn],
) -> Result<(Vec<(u32, u32)>, bool), TestCaseError> {
    let run_start = svc.now;
    let mut plan = SyncPlan::new(*checkpoint, since, run_start, lag, top);
    let mut delivered = Vec::new();
    let mut pages = 0u32;
    let mut churn = churn.iter();
    while let Some(w) = plan.next_window() {
        if crash_after.is_some_and(|n| pages >= u32::from(n)) {
            return Ok((delivered, false));
        }
        // The service changes between our requests.
        if let Some(c) = churn.next() {
            svc.apply(c);
        }
        let (page, more) = svc.list(w, plan.page_size());
        pages += 1;
        prop_assert!(pages < 100_000, "the plan does not end");
        match plan.handle_page(w, page.len(), more) {
            Verdict::Split => {}
            Verdict::Deliver { checkpoint: cp } => {
                delivered.extend(page.iter().map(|i| (i.id, i.version)));
                if let Some(old) = *checkpoint {
                    prop_assert!(cp >= old, "the checkpoint moved backwards");
                }
                prop_assert!(
                    cp <= run_start - lag,
                    "the checkpoint passed the run's start"
                );
                // Output flushed, then the checkpoint saved.
                *checkpoint = Some(cp);
            }
            Verdict::Page => {
                return Err(TestCaseError::fail(
                    "distinct stamps always split: no window should need paging",
                ))
            }
        }
    }
    Ok((delivered, true))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_sync_delivers_every_final_version_and_finished_runs_repeat_nothing(
        steps in prop::collection::vec(step(), 1..60),
        top in 1u32..6,
        lag_ms in prop_oneof![Just(0u64), 1u64..3_000],
        newest_first in any::<bool>(),
    ) {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut svc = Service { now: start, incidents: Vec::new(), next_id: 0, newest_first };
        let lag = Duration::from_millis(lag_ms);
        let top = top.max(2);
        let mut checkpoint = None;
        let mut all: HashSet<(u32, u32)> = HashSet::new();
        let mut finished: Vec<Vec<(u32, u32)>> = Vec::new();
        for s in &steps {
            match s {
                Step::Wait(ms) => svc.tick(*ms),
                Step::Create => svc.create(),
                Step::Update(i) => svc.update(*i),
                Step::Run { crash_after, churn } => {
                    let (got, done) = run(&mut svc, &mut checkpoint, start, lag, top, *crash_after, churn)?;
                    all.extend(got.iter().copied());
                    if done {
                        finished.push(got);
                    }
                }
            }
        }
        // The churn stops; time passes beyond the lag; two more runs finish.
        for _ in 0..2 {
            svc.tick(u16::try_from(lag_ms + 1).unwrap_or(u16::MAX));
            svc.tick(u16::try_from(lag_ms + 1).unwrap_or(u16::MAX));
            let (got, done) = run(&mut svc, &mut checkpoint, start, lag, top, None, &[])?;
            prop_assert!(done);
            all.extend(got.iter().copied());
            finished.push(got);
        }
        prop_assert!(finished.last().is_some_and(Vec::is_empty), "the last run found changes that were already synced");
        for inc in &svc.incidents {
            prop_assert!(all.contains(&(inc.id, inc.version)), "incident {} version {} was never delivered", inc.id, inc.version);
        }
        let mut seen: HashMap<(u32, u32), usize> = HashMap::new();
        for (run, got) in finished.iter().enumerate() {
            for v in got {
                if let Some(first) = seen.insert(*v, run) {
                    prop_assert!(first == run, "finished runs {first} and {run} both delivered {v:?}");
                    prop_assert!(false, "run {run} delivered {v:?} twice");
                }
            }
        }
    }
}
