//! Incremental sync of incidents that loses nothing: windows of `lastUpdateTime` that
//! paging cannot skip, and a checkpoint that moves only past what was delivered.
//!
//! The hazards of a naive "everything updated since the newest time I saw" loop, and how
//! the plan avoids each:
//! - an incident that changes while the pages are read: every window ends at the run's
//!   start minus a settle lag, so a change during the run is stamped after every window
//!   of this run and lands in the next run's first one;
//! - `$skip` paging over a set that changes (items shift across page boundaries): a
//!   window that does not fit one page is split in halves by time and re-listed, never
//!   paged, until each part fits (the range planner's rule for hunts);
//! - a checkpoint set to the newest `lastUpdateTime` seen: the checkpoint is the upper
//!   bound of the last window delivered whole (windows are half-open, `ge from` and
//!   `lt to`, so an incident stamped exactly on a bound belongs to exactly one window);
//! - a crash between writing output and saving the checkpoint: the caller saves the
//!   checkpoint of a window only after flushing that window's output, so at most one
//!   window is delivered twice, never lost.
//!
//! A window narrower than two clock ticks (100 ns, the API's resolution) that still does
//! not fit one page (more incidents changed in the same tick than a page holds) cannot
//! be split: [`Verdict::Page`] says to follow its pages, and
//! [`SyncPlan::unsplittable_windows`] counts such windows (the skip hazard stays there).
//!
//! ```
//! use defender_core::sync::{SyncPlan, Verdict};
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let run_start = t0 + Duration::from_secs(3_600);
//! let mut plan = SyncPlan::new(Some(t0), t0, run_start, Duration::from_secs(5), 100);
//! let w = plan.next_window().unwrap();
//! assert_eq!((w.from, w.to), (t0, run_start - Duration::from_secs(5)));
//! // A full page: the window is split and listed again in halves.
//! assert!(matches!(plan.handle_page(w, 100, true), Verdict::Split));
//! let first = plan.next_window().unwrap();
//! assert_eq!(first.from, t0);
//! // A page that fits: deliver it, then save the checkpoint it gives.
//! let Verdict::Deliver { checkpoint } = plan.handle_page(first, 40, false) else { panic!() };
//! assert_eq!(checkpoint, first.to);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::{Call, Value};
use crate::error::Error;
use crate::incidents::{FilterField, FilterOp, Incident, IncidentFilter, IncidentQuery};
use crate::surface::Surface;
use crate::timefmt::{format_rfc3339, parse_rfc3339};

/// The API's time resolution (a .NET tick): windows are never split below two of them.
pub const TICK: Duration = Duration::from_nanos(100);

/// The version of [`SyncState`]'s document this code writes and reads.
pub const STATE_VERSION: u32 = 1;

/// One window of `lastUpdateTime`: `from` included, `to` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first instant in the window.
    pub from: SystemTime,
    /// The first instant after it.
    pub to: SystemTime,
}

impl Window {
    /// The incidents updated in the window, a page of `top` at a time.
    pub fn query(&self, top: u32) -> IncidentQuery {
        IncidentQuery {
            filter: IncidentFilter::new()
                .time(FilterField::LastUpdateTime, FilterOp::Ge, self.from)
                .time(FilterField::LastUpdateTime, FilterOp::Lt, self.to),
            top: Some(top),
            ..IncidentQuery::default()
        }
    }

    fn span(&self) -> Duration {
        self.to.duration_since(self.from).unwrap_or_default()
    }

    /// The halves, cut at a whole tick; `None` when narrower than two ticks.
    fn halves(&self) -> Option<(Window, Window)> {
        let ticks = self.span().as_nanos() / TICK.as_nanos();
        if ticks < 2 {
            return None;
        }
        let half = Duration::from_nanos(((ticks / 2) * TICK.as_nanos()) as u64);
        let mid = self.from + half;
        Some((
            Window {
                from: self.from,
                to: mid,
            },
            Window {
                from: mid,
                to: self.to,
            },
        ))
    }
}

/// What to do with a window's first page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It did not fit one page: it was split; drop the page (its incidents come again
    /// with the halves) and take the next window.
    Split,
    /// It fits: hand its incidents out, flush them, then save `checkpoint`.
    Deliver {
        /// Every incident updated before this was delivered.
        checkpoint: SystemTime,
    },
    /// It cannot be split and does not fit: hand out this page and follow the window's
    /// next pages; after the last, call [`SyncPlan::window_paged`].
    Page,
}

/// The windows of one sync run, earliest first. Sans-IO: the caller lists each window
/// and reports what came.
#[derive(Debug, Clone)]
pub struct SyncPlan {
    /// Pending windows, the earliest last.
    pending: Vec<Window>,
    page_size: u32,
    checkpoint: SystemTime,
    unsplittable: u32,
}

impl SyncPlan {
    /// The windows from the checkpoint (or `since` on a first run) up to `run_start`
    /// (the server's time, from its `Date` header where there is one) less `lag`,
    /// listed `page_size` at a time (the surface's largest page).
    pub fn new(
        checkpoint: Option<SystemTime>,
        since: SystemTime,
        run_start: SystemTime,
        lag: Duration,
        page_size: u32,
    ) -> SyncPlan {
        let from = checkpoint.unwrap_or(since);
        let upper = run_start.checked_sub(lag).unwrap_or(UNIX_EPOCH);
        let pending = if from < upper {
            vec![Window { from, to: upper }]
        } else {
            Vec::new()
        };
        SyncPlan {
            pending,
            page_size: page_size.max(1),
            checkpoint: from,
            unsplittable: 0,
        }
    }

    /// The next window to list (the same one until it is handled).
    pub fn next_window(&self) -> Option<Window> {
        self.pending.last().copied()
    }

    /// The page size to list with.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The first page of `window` came with `count` incidents, and `more` says whether
    /// the service offered a next page.
    pub fn handle_page(&mut self, window: Window, count: usize, more: bool) -> Verdict {
        if self.pending.last() != Some(&window) {
            // Not the window asked for: nothing moves.
            return Verdict::Split;
        }
        let full = more || count >= self.page_size as usize;
        if !full {
            return self.delivered(window);
        }
        match window.halves() {
            Some((early, late)) => {
                self.pending.pop();
                self.pending.push(late);
                self.pending.push(early);
                Verdict::Split
            }
            None => {
                self.unsplittable += 1;
                Verdict::Page
            }
        }
    }

    /// Every page of an unsplittable window was handed out: its checkpoint.
    pub fn window_paged(&mut self, window: Window) -> SystemTime {
        match self.delivered(window) {
            Verdict::Deliver { checkpoint } => checkpoint,
            _ => self.checkpoint,
        }
    }

    fn delivered(&mut self, window: Window) -> Verdict {
        self.pending.pop();
        self.checkpoint = window.to;
        Verdict::Deliver {
            checkpoint: window.to,
        }
    }

    /// The windows end at `upper` at the latest (the server's clock turned out to be
    /// behind the one the plan was made with). Whether the next window changed (a page
    /// listed for it is then dropped).
    pub fn clip(&mut self, upper: SystemTime) -> bool {
        let before = self.next_window();
        self.pending.retain(|w| w.from < upper);
        for w in &mut self.pending {
            if w.to > upper {
                w.to = upper;
            }
        }
        self.next_window() != before
    }

    /// Every incident updated before this was delivered.
    pub fn checkpoint(&self) -> SystemTime {
        self.checkpoint
    }

    /// Whether every window was delivered.
    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Windows too narrow to split that did not fit a page (followed by paging).
    pub fn unsplittable_windows(&self) -> u32 {
        self.unsplittable
    }
}

/// Incidents of a sync run to hand out; once they are written and flushed, save
/// `checkpoint` ([`SyncState::advance`]). A crash before that repeats this batch, never
/// loses it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncBatch {
    /// The incidents, as the API sent them (unknown fields kept).
    pub incidents: Vec<Incident>,
    /// Every incident updated before this has now been handed out.
    pub checkpoint: SystemTime,
}

/// What a sync run needs next.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncStep {
    /// Make this call and give its value to [`SyncRun::handle`].
    Call(Call),
    /// Hand these out, then save the checkpoint.
    Batch(SyncBatch),
    /// The run is over: everything up to its start (less the lag) was handed out.
    Done,
}

/// The default settle lag: windows end this long before the run's start, so that a
/// change the service stamped just before is visible when its window is listed.
pub const DEFAULT_LAG: Duration = Duration::from_secs(5);

/// How far back a first run starts by default: the 30 days the service keeps.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(30 * 86_400);

/// How a sync run is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOptions {
    /// Where a first run starts (default: [`DEFAULT_SINCE`] before now).
    pub since: Option<SystemTime>,
    /// The settle lag ([`DEFAULT_LAG`]).
    pub lag: Duration,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            since: None,
            lag: DEFAULT_LAG,
        }
    }
}

/// One run of an incident sync, sans IO: [`SyncRun::poll`] says which call to make,
/// [`SyncRun::handle`] takes its value, and batches come out in time order. Both clients
/// drive it the same way (`incidents().sync(...)`).
#[derive(Debug, Clone)]
pub struct SyncRun {
    plan: SyncPlan,
    lag: Duration,
    /// The call made and not yet answered: the window it lists, and for an unsplittable
    /// window being paged the incidents of its pages so far.
    listing: Option<(Window, Option<Vec<Incident>>)>,
    /// The next page of an unsplittable window.
    next_page: Option<Call>,
    ready: Option<SyncBatch>,
    /// Whether the server's clock was seen (the first answer's `Date`).
    clock_checked: bool,
}

impl SyncRun {
    /// A run from `state`'s checkpoint (or `since` on a first run) up to `now` (the local
    /// clock: the first answer's `Date` header lowers it when the server's clock is
    /// behind) less `lag`, listed `page_size` incidents at a time.
    pub fn new(
        state: &SyncState,
        since: SystemTime,
        now: SystemTime,
        lag: Duration,
        page_size: u32,
    ) -> Result<SyncRun, StateError> {
        let checkpoint = state.checkpoint_time()?;
        Ok(SyncRun {
            plan: SyncPlan::new(checkpoint, since, now, lag, page_size),
            lag,
            listing: None,
            next_page: None,
            ready: None,
            clock_checked: false,
        })
    }

    /// A run on `surface` (its largest page) with `options`, from the local clock `now`;
    /// [`Error::SyncState`] when `state` was written for another surface or its
    /// checkpoint is unusable (the tenant and app are the caller's to check, with
    /// [`SyncState::check`]).
    pub fn start(
        state: &SyncState,
        options: &SyncOptions,
        surface: Surface,
        now: SystemTime,
    ) -> Result<SyncRun, Error> {
        if state.surface != surface.name() {
            return Err(StateError::Foreign {
                what: "surface",
                found: Some(state.surface.clone()),
                expected: Some(surface.name().to_owned()),
            }
            .into());
        }
        let since = options
            .since
            .unwrap_or_else(|| now.checked_sub(DEFAULT_SINCE).unwrap_or(UNIX_EPOCH));
        let top = crate::incidents::max_top(surface);
        Ok(SyncRun::new(state, since, now, options.lag, top)?)
    }

    /// What to do next.
    pub fn poll(&mut self) -> SyncStep {
        if let Some(batch) = self.ready.take() {
            return SyncStep::Batch(batch);
        }
        if let Some(call) = self.next_page.take() {
            // `listing` keeps the window and its pages so far.
            return SyncStep::Call(call);
        }
        match self.plan.next_window() {
            Some(w) => {
                self.listing = Some((w, None));
                SyncStep::Call(Call::ListIncidents(w.query(self.plan.page_size())))
            }
            None => SyncStep::Done,
        }
    }

    /// The value of the call [`SyncRun::poll`] asked for.
    pub fn handle(&mut self, value: Value) -> Result<(), Error> {
        let (page, next) = value.into_incidents()?;
        let Some((window, paged)) = self.listing.take() else {
            return Ok(());
        };
        if !self.clock_checked {
            self.clock_checked = true;
            if let Some(date) = page.server_date {
                if self
                    .plan
                    .clip(date.checked_sub(self.lag).unwrap_or(UNIX_EPOCH))
                {
                    // The window listed reached past the server's clock: list again.
                    return Ok(());
                }
            }
        }
        if let Some(mut so_far) = paged {
            // A later page of an unsplittable window.
            so_far.extend(page.value);
            return self.paged(window, so_far, next);
        }
        match self
            .plan
            .handle_page(window, page.value.len(), next.is_some())
        {
            Verdict::Split => {}
            Verdict::Deliver { checkpoint } => {
                self.ready = Some(SyncBatch {
                    incidents: page.value,
                    checkpoint,
                });
            }
            Verdict::Page => return self.paged(window, page.value, next),
        }
        Ok(())
    }

    /// An unsplittable window's pages: follow them, then deliver them all.
    fn paged(
        &mut self,
        window: Window,
        so_far: Vec<Incident>,
        next: Option<Call>,
    ) -> Result<(), Error> {
        match next {
            Some(call) => {
                self.listing = Some((window, Some(so_far)));
                self.next_page = Some(call);
            }
            None => {
                let checkpoint = self.plan.window_paged(window);
                self.ready = Some(SyncBatch {
                    incidents: so_far,
                    checkpoint,
                });
            }
        }
        Ok(())
    }

    /// Windows that had to be paged (more incidents changed in one tick than a page
    /// holds): for a report.
    pub fn unsplittable_windows(&self) -> u32 {
        self.plan.unsplittable_windows()
    }
}

/// What a sync keeps between runs: where it got to, and whose it is. It serialises to a
/// small versioned JSON document ([`SyncState::to_json`], [`SyncState::from_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The document's version ([`STATE_VERSION`]).
    pub version: u32,
    /// The surface synced (`defender-xdr`, `mde`, `graph`, as [`Surface::name`] says).
    pub surface: String,
    /// The tenant.
    pub tenant: Option<String>,
    /// The app (client) id.
    pub client_id: Option<String>,
    /// Every incident updated before this (RFC 3339) was delivered; none before a first
    /// run finished a window.
    pub checkpoint: Option<String>,
}

/// Why a state document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Not a state document (bad JSON, missing fields).
    #[error("the sync state is not a state document: {0}")]
    Malformed(String),
    /// Written by another version of this code.
    #[error("the sync state has version {found}; this version reads {STATE_VERSION}")]
    Version {
        /// The document's version.
        found: u32,
    },
    /// Written for another surface, tenant or app: using it would skip or repeat
    /// incidents.
    #[error(
        "the sync state belongs to {what} {}, not {}: use another state file for this {what}",
        named(found),
        named(expected)
    )]
    Foreign {
        /// Which field differs (`surface`, `tenant`, `client id`).
        what: &'static str,
        /// What the document says.
        found: Option<String>,
        /// What this sync is.
        expected: Option<String>,
    },
    /// The checkpoint is not a time.
    #[error("the sync state's checkpoint {0:?} is not an RFC 3339 time")]
    Checkpoint(String),
}

/// A tenant, app or surface as an error names it: quoted, or `none`.
fn named(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "none".to_owned(),
    }
}

impl SyncState {
    /// A state for a first run.
    pub fn new(surface: Surface, tenant: Option<&str>, client_id: Option<&str>) -> SyncState {
        SyncState {
            version: STATE_VERSION,
            surface: surface.name().to_owned(),
            tenant: tenant.map(str::to_owned),
            client_id: client_id.map(str::to_owned),
            checkpoint: None,
        }
    }

    /// Reads a state document, refusing one of another version.
    pub fn from_json(bytes: &[u8]) -> Result<SyncState, StateError> {
        let state: SyncState = read_state(bytes)?;
        state.checkpoint_time()?;
        Ok(state)
    }

    /// The document (pretty JSON, ending with a newline).
    pub fn to_json(&self) -> Vec<u8> {
        write_state(self)
    }

    /// Refuses a state written for another surface, tenant or app.
    pub fn check(
        &self,
        surface: Surface,
        tenant: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<(), StateError> {
        check_owner(
            (&self.surface, &self.tenant, &self.client_id),
            surface,
            tenant,
            client_id,
        )
    }

    /// The checkpoint as a time.
    pub fn checkpoint_time(&self) -> Result<Option<SystemTime>, StateError> {
        checkpoint_time(self.checkpoint.as_deref())
    }

    /// Moves the checkpoint (never backwards).
    pub fn advance(&mut self, to: SystemTime) {
        let current = self.checkpoint_time().ok().flatten();
        if current.is_none_or(|c| to > c) {
            self.checkpoint = Some(format_rfc3339(to));
        }
    }
}

/// Reads a state document of either kind (a sync's, a scheduled hunt's): refuses a
/// document that does not parse and one of another version.
pub(crate) fn read_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(STATE_VERSION) => {}
        Some(v) => {
            return Err(StateError::Version {
                found: u32::try_from(v).unwrap_or(u32::MAX),
            })
        }
        None => return Err(StateError::Malformed("no version".into())),
    }
    serde_json::from_value(value).map_err(|e| StateError::Malformed(e.to_string()))
}

/// A state document's checkpoint (RFC 3339) as a time; `None` before the first run.
pub(crate) fn checkpoint_time(checkpoint: Option<&str>) -> Result<Option<SystemTime>, StateError> {
    match checkpoint {
        None => Ok(None),
        Some(s) => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| StateError::Checkpoint(s.to_owned())),
    }
}

/// A state document: pretty JSON, ending with a newline.
pub(crate) fn write_state<T: Serialize>(state: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(state).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Refuses a state whose recorded (surface, tenant, client id) is not this run's.
pub(crate) fn check_owner(
    (recorded_surface, recorded_tenant, recorded_client): (&str, &Option<String>, &Option<String>),
    surface: Surface,
    tenant: Option<&str>,
    client_id: Option<&str>,
) -> Result<(), StateError> {
    let foreign = |what, found: Option<&str>, expected: Option<&str>| StateError::Foreign {
        what,
        found: found.map(str::to_owned),
        expected: expected.map(str::to_owned),
    };
    if recorded_surface != surface.name() {
        return Err(foreign(
            "surface",
            Some(recorded_surface),
            Some(surface.name()),
        ));
    }
    if recorded_tenant.as_deref() != tenant {
        return Err(foreign("tenant", recorded_tenant.as_deref(), tenant));
    }
    if recorded_client.as_deref() != client_id {
        return Err(foreign("client id", recorded_client.as_deref(), client_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn windows_split_at_whole_ticks_down_to_two_ticks() {
        let w = Window {
            from: t(0),
            to: t(0) + TICK * 3,
        };
        let (a, b) = w.halves().unwrap();
        assert_eq!((a.to, b.from), (t(0) + TICK, t(0) + TICK));
        let narrow = Window {
            from: t(0),
            to: t(0) + TICK + Duration::from_nanos(99),
        };
        assert_eq!(narrow.halves(), None);
    }

    #[test]
    fn a_run_with_nothing_new_plans_nothing() {
        let plan = SyncPlan::new(Some(t(100)), t(0), t(103), Duration::from_secs(5), 50);
        assert!(plan.is_done());
        assert_eq!(plan.checkpoint(), t(100));
    }

    #[test]
    fn an_unsplittable_full_window_is_paged() {
        let mut plan = SyncPlan::new(None, t(0), t(0) + TICK, Duration::ZERO, 2);
        let w = plan.next_window().unwrap();
        assert_eq!(plan.handle_page(w, 2, true), Verdict::Page);
        assert_eq!(plan.unsplittable_windows(), 1);
        assert_eq!(plan.window_paged(w), t(0) + TICK);
        assert!(plan.is_done());
    }

    #[test]
    fn state_documents_round_trip_and_foreign_ones_are_refused() {
        let mut s = SyncState::new(Surface::DefenderXdr, Some("t1"), Some("app"));
        s.advance(t(10));
        s.advance(t(5));
        let back = SyncState::from_json(&s.to_json()).unwrap();
        assert_eq!(back.checkpoint_time().unwrap(), Some(t(10)));
        assert!(back
            .check(Surface::DefenderXdr, Some("t1"), Some("app"))
            .is_ok());
        let e = back
            .check(Surface::DefenderXdr, Some("t2"), Some("app"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the sync state belongs to tenant \"t1\", not \"t2\": use another state file for this tenant"
        );
        assert!(matches!(
            back.check(Surface::Graph, Some("t1"), Some("app")),
            Err(StateError::Foreign {
                what: "surface",
                ..
            })
        ));
        assert!(matches!(
            SyncState::from_json(br#"{"version":9}"#),
            Err(StateError::Version { found: 9 })
        ));
        assert!(matches!(
            SyncState::from_json(b"{not json"),
            Err(StateError::Malformed(_))
        ));
        let bad = br#"{"version":1,"surface":"defender-xdr","tenant":null,"client_id":null,"checkpoint":"yesterday"}"#;
        assert!(matches!(
            SyncState::from_json(bad),
            Err(StateError::Checkpoint(_))
        ));
    }

    fn page(ids: &[u64], next: bool, date: Option<SystemTime>) -> Value {
        let mut page: crate::incidents::IncidentPage = serde_json::from_value(serde_json::json!({
            "value": ids.iter().map(|i| serde_json::json!({"incidentId": i})).collect::<Vec<_>>()
        }))
        .unwrap();
        page.server_date = date;
        let next = next.then(|| {
            Call::NextIncidents("https://api.security.microsoft.com/api/incidents?$skip=2".into())
        });
        Value::Incidents { page, next }
    }

    #[test]
    fn a_run_splits_pages_and_follows_an_unsplittable_window() {
        let state = SyncState::new(Surface::DefenderXdr, None, None);
        let mut run = SyncRun::new(&state, t(0), t(0) + TICK * 3, Duration::ZERO, 2).unwrap();
        // [0, 3 ticks) is full: split into [0, 1) and [1, 3).
        assert!(matches!(run.poll(), SyncStep::Call(Call::ListIncidents(_))));
        run.handle(page(&[1, 2], true, None)).unwrap();
        assert!(matches!(run.poll(), SyncStep::Call(Call::ListIncidents(_))));
        // [0, 1 tick) is full and cannot be split: its pages are followed.
        run.handle(page(&[1, 2], true, None)).unwrap();
        assert!(matches!(run.poll(), SyncStep::Call(Call::NextIncidents(_))));
        run.handle(page(&[3], false, None)).unwrap();
        let SyncStep::Batch(b) = run.poll() else {
            panic!()
        };
        assert_eq!(b.incidents.len(), 3);
        assert_eq!(b.checkpoint, t(0) + TICK);
        assert_eq!(run.unsplittable_windows(), 1);
        assert!(matches!(run.poll(), SyncStep::Call(Call::ListIncidents(_))));
        run.handle(page(&[4], false, None)).unwrap();
        let SyncStep::Batch(b) = run.poll() else {
            panic!()
        };
        assert_eq!((b.incidents.len(), b.checkpoint), (1, t(0) + TICK * 3));
        assert_eq!(run.poll(), SyncStep::Done);
    }

    #[test]
    fn a_server_clock_behind_ours_lowers_the_run_and_the_page_is_listed_again() {
        let state = SyncState::new(Surface::DefenderXdr, None, None);
        let lag = Duration::from_secs(5);
        let mut run = SyncRun::new(&state, t(0), t(100), lag, 50).unwrap();
        let SyncStep::Call(Call::ListIncidents(q)) = run.poll() else {
            panic!()
        };
        assert!(q
            .filter
            .render(Surface::DefenderXdr)
            .unwrap()
            .contains("lastUpdateTime lt"));
        // The server says it is 60 s earlier than we thought: the window shrinks.
        run.handle(page(&[1], false, Some(t(40)))).unwrap();
        assert!(matches!(run.poll(), SyncStep::Call(Call::ListIncidents(_))));
        run.handle(page(&[1], false, Some(t(41)))).unwrap();
        let SyncStep::Batch(b) = run.poll() else {
            panic!()
        };
        assert_eq!(b.checkpoint, t(35));
        assert_eq!(run.poll(), SyncStep::Done);
    }
}
