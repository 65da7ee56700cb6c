//! Churn: incidents that change and appear while clients read them, so that the hazards
//! of an incremental sync (a change while pages are read, items shifting across pages,
//! a checkpoint at the newest time seen) happen in tests.
//!
//! Event `k` (from 1) happens `k / rate` seconds after the emulator's clock started, up
//! to `duration` when one is given. Events are applied lazily, in order, before any
//! incidents or alerts route reads the incidents, each stamped with its own time: a
//! request at `t` sees exactly the events up to `t`, as if a background task had applied
//! each at its time. What each event does is drawn from one generator seeded by the
//! emulator's seed, so a seed and a clock give one history, whatever the requests.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::incidents::{self, Comment, Incident, FIRST_INCIDENT_ID, SEVERITIES};
use crate::rng::Rng;

/// How incidents churn ([`crate::EmulatorBuilder::churn`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// Events per second: an incident changed or a new one created.
    pub rate: f64,
    /// Events stop this long after the clock started; `None`: never.
    pub duration: Option<Duration>,
}

/// The share of events that create an incident; the rest change one.
const NEW_SHARE: f64 = 0.25;

const ANALYSTS: [&str; 3] = [
    "alice@contoso.com",
    "bob@contoso.com",
    "secops-automation@contoso.com",
];
const CYCLE: [&str; 3] = ["Active", "InProgress", "Resolved"];

/// Where the churn got to.
#[derive(Debug, Clone)]
pub(crate) struct ChurnState {
    /// Events applied so far.
    pub(crate) applied: u64,
    rng: Rng,
}

impl ChurnState {
    /// No event applied yet.
    pub(crate) fn new(seed: u64) -> ChurnState {
        ChurnState {
            applied: 0,
            rng: Rng::new(seed, "churn"),
        }
    }

    /// Applies every event due by `elapsed` (the clock's, started at `start_unix_ms`).
    pub(crate) fn catch_up(
        &mut self,
        churn: &Churn,
        start_unix_ms: i64,
        elapsed: Duration,
        incidents: &mut BTreeMap<i64, Incident>,
    ) {
        if churn.rate.is_nan() || churn.rate <= 0.0 {
            return;
        }
        loop {
            let at = Duration::from_secs_f64((self.applied + 1) as f64 / churn.rate);
            if at > elapsed || churn.duration.is_some_and(|d| at > d) {
                return;
            }
            self.applied += 1;
            let stamp = start_unix_ms + at.as_millis() as i64;
            self.event(stamp, incidents);
        }
    }

    /// One event at `stamp` (unix ms).
    fn event(&mut self, stamp: i64, incidents: &mut BTreeMap<i64, Incident>) {
        let rng = &mut self.rng;
        if incidents.is_empty() || rng.chance(NEW_SHARE) {
            // Ids grow with creation time, so the newest-created-first order holds.
            let id = incidents
                .keys()
                .next_back()
                .map_or(FIRST_INCIDENT_ID, |last| last + 1);
            incidents.insert(id, incidents::build(rng, id, stamp, stamp));
            return;
        }
        let nth = rng.below(incidents.len() as u64) as usize;
        let Some(incident) = incidents.values_mut().nth(nth) else {
            return;
        };
        match rng.below(4) {
            0 => {
                let i = CYCLE.iter().position(|s| *s == incident.status);
                incident.status = CYCLE[i.map_or(0, |i| (i + 1) % CYCLE.len())].to_owned();
            }
            1 => incident.assigned_to = Some((*rng.pick(&ANALYSTS)).to_owned()),
            2 => incident.severity = (*rng.pick(&SEVERITIES[1..])).to_owned(),
            _ => incident.comments.push(Comment {
                comment: format!("Automated enrichment {}", self.applied),
                created_by: "secops-automation@contoso.com".to_owned(),
                created_ms: stamp,
            }),
        }
        incident.last_update_ms = stamp.max(incident.last_update_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, duration: Option<Duration>, steps: &[u64]) -> (u64, BTreeMap<i64, Incident>) {
        let anchor = 1_704_067_200_000;
        let mut incidents: BTreeMap<i64, Incident> = incidents::generate(1, 20, anchor)
            .into_iter()
            .map(|i| (i.id, i))
            .collect();
        let mut state = ChurnState::new(7);
        let churn = Churn { rate, duration };
        for ms in steps {
            state.catch_up(&churn, anchor, Duration::from_millis(*ms), &mut incidents);
        }
        (state.applied, incidents)
    }

    #[test]
    fn the_history_depends_on_the_seed_and_the_clock_not_on_the_requests() {
        let (n, a) = run(10.0, None, &[5_000]);
        let (m, b) = run(10.0, None, &[1, 730, 2_000, 2_001, 4_999, 5_000]);
        assert_eq!((n, m), (50, 50));
        assert_eq!(a, b);
        let created = a.len() - 20;
        assert!(
            (5..=25).contains(&created),
            "about a quarter are new: {created}"
        );
        let changed = a
            .values()
            .filter(|i| i.id < FIRST_INCIDENT_ID + 20 && i.last_update_ms > 1_704_067_200_000)
            .count();
        assert!(changed > 10, "{changed}");
    }

    #[test]
    fn events_are_stamped_at_their_time_and_stop_after_the_duration() {
        let anchor = 1_704_067_200_000;
        let (n, incidents) = run(4.0, Some(Duration::from_secs(2)), &[10_000]);
        assert_eq!(n, 8, "4 per second for 2 seconds");
        let newest = incidents.values().map(|i| i.last_update_ms).max().unwrap();
        assert!(newest <= anchor + 2_000, "{newest}");
        // New incidents are newer than every older id: creation order is id order.
        let created: Vec<i64> = incidents.values().map(|i| i.created_ms).collect();
        assert!(created.windows(2).all(|w| w[0] <= w[1]));
        assert!(incidents.values().all(|i| i.last_update_ms >= i.created_ms));
    }
}
