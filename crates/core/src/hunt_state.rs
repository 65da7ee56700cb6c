//! Scheduled hunts that lose nothing: the same query, each run over the time since the
//! last one, every row once.
//!
//! A run covers `[checkpoint, now - lag)` (on a first run `[since, now - lag)`), which the
//! range planner ([`crate::range`]) runs in windows bisected past the row cap and hands
//! out in time order. After each window's rows are written and flushed, the caller saves
//! [`HuntState::advance`]`(window.end)`: a crash repeats at most that window, a run that
//! finishes repeats nothing, and the next run starts where this one ended. The lag leaves
//! the service time to ingest rows stamped just before the run.
//!
//! ```
//! use defender_core::hunt_state::HuntState;
//! use defender_core::Surface;
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! let mut state = HuntState::new(Surface::DefenderXdr, None, None, "DeviceEvents");
//! let day = Duration::from_secs(86_400);
//! let (from, to) = state.range(now - day, now, Duration::from_secs(60)).unwrap().unwrap();
//! assert_eq!((from, to), (now - day, now - Duration::from_secs(60)));
//! state.advance(to);
//! // The next run, an hour later, starts where this one ended.
//! let later = now + Duration::from_secs(3_600);
//! let (next, _) = state.range(later - day, later, Duration::from_secs(60)).unwrap().unwrap();
//! assert_eq!(next, to);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::surface::Surface;
use crate::sync::{
    check_owner, checkpoint_time, read_state, write_state, StateError, SyncOptions, DEFAULT_SINCE,
    STATE_VERSION,
};
use crate::timefmt::format_rfc3339;

/// What a scheduled hunt keeps between runs: the query, where it got to, and whose it
/// is. It serialises to a small versioned JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntState {
    /// The document's version ([`STATE_VERSION`]).
    pub version: u32,
    /// The surface hunted (as [`Surface::name`] says).
    pub surface: String,
    /// The tenant.
    pub tenant: Option<String>,
    /// The app (client) id.
    pub client_id: Option<String>,
    /// The query: another one over this checkpoint would skip rows.
    pub query: String,
    /// Every row stamped before this (RFC 3339) was delivered; none before a first run
    /// finished a window.
    pub checkpoint: Option<String>,
}

impl HuntState {
    /// A state for a first run of `query`.
    pub fn new(
        surface: Surface,
        tenant: Option<&str>,
        client_id: Option<&str>,
        query: &str,
    ) -> HuntState {
        HuntState {
            version: STATE_VERSION,
            surface: surface.name().to_owned(),
            tenant: tenant.map(str::to_owned),
            client_id: client_id.map(str::to_owned),
            query: query.to_owned(),
            checkpoint: None,
        }
    }

    /// Reads a state document, refusing one of another version or with a bad checkpoint.
    pub fn from_json(bytes: &[u8]) -> Result<HuntState, StateError> {
        let state: HuntState = read_state(bytes)?;
        state.checkpoint_time()?;
        Ok(state)
    }

    /// The document (pretty JSON, ending with a newline).
    pub fn to_json(&self) -> Vec<u8> {
        write_state(self)
    }

    /// Refuses a state written for another surface, tenant, app or query.
    pub fn check(
        &self,
        surface: Surface,
        tenant: Option<&str>,
        client_id: Option<&str>,
        query: &str,
    ) -> Result<(), StateError> {
        check_owner(
            (&self.surface, &self.tenant, &self.client_id),
            surface,
            tenant,
            client_id,
        )?;
        if self.query != query {
            return Err(StateError::Foreign {
                what: "query",
                found: Some(self.query.clone()),
                expected: Some(query.to_owned()),
            });
        }
        Ok(())
    }

    /// The checkpoint as a time.
    pub fn checkpoint_time(&self) -> Result<Option<SystemTime>, StateError> {
        checkpoint_time(self.checkpoint.as_deref())
    }

    /// The range this run covers: from the checkpoint (or `since` on a first run) to
    /// `now` less `lag`; `None` when that is empty (run again later).
    pub fn range(
        &self,
        since: SystemTime,
        now: SystemTime,
        lag: Duration,
    ) -> Result<Option<(SystemTime, SystemTime)>, StateError> {
        let from = self.checkpoint_time()?.unwrap_or(since);
        let to = now.checked_sub(lag).unwrap_or(UNIX_EPOCH);
        Ok((from < to).then_some((from, to)))
    }

    /// The range of a run started at `now` (the local clock) with `options`: since the
    /// checkpoint, or on a first run `options.since` (default [`DEFAULT_SINCE`] before
    /// `now`), up to `now` less `options.lag`. What both clients' `hunt_since` run.
    pub fn run_range(
        &self,
        options: &SyncOptions,
        now: SystemTime,
    ) -> Result<Option<(SystemTime, SystemTime)>, StateError> {
        let since = options
            .since
            .unwrap_or_else(|| now.checked_sub(DEFAULT_SINCE).unwrap_or(UNIX_EPOCH));
        self.range(since, now, options.lag)
    }

    /// Moves the checkpoint (never backwards).
    pub fn advance(&mut self, to: SystemTime) {
        let current = self.checkpoint_time().ok().flatten();
        if current.is_none_or(|c| to > c) {
            self.checkpoint = Some(format_rfc3339(to));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn runs_tile_time_and_the_checkpoint_never_moves_back() {
        let mut s = HuntState::new(Surface::Graph, Some("t"), Some("a"), "DeviceEvents");
        let lag = Duration::from_secs(10);
        assert_eq!(s.range(t(0), t(100), lag).unwrap(), Some((t(0), t(90))));
        s.advance(t(90));
        s.advance(t(50));
        assert_eq!(s.range(t(0), t(95), lag).unwrap(), None, "nothing new yet");
        assert_eq!(s.range(t(0), t(200), lag).unwrap(), Some((t(90), t(190))));
        let back = HuntState::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        let first = HuntState::new(Surface::Graph, None, None, "DeviceEvents");
        let options = SyncOptions::default();
        assert_eq!(
            first.run_range(&options, t(100_000_000)).unwrap(),
            Some((
                t(100_000_000) - DEFAULT_SINCE,
                t(100_000_000) - crate::sync::DEFAULT_LAG
            ))
        );
    }

    #[test]
    fn another_query_tenant_or_surface_is_refused() {
        let s = HuntState::new(Surface::DefenderXdr, Some("t"), Some("a"), "DeviceEvents");
        assert!(s
            .check(Surface::DefenderXdr, Some("t"), Some("a"), "DeviceEvents")
            .is_ok());
        let e = s
            .check(Surface::DefenderXdr, Some("t"), Some("a"), "EmailEvents")
            .unwrap_err();
        assert!(e.to_string().contains("query \"DeviceEvents\""), "{e}");
        assert!(matches!(
            s.check(Surface::DefenderXdr, Some("u"), Some("a"), "DeviceEvents"),
            Err(StateError::Foreign { what: "tenant", .. })
        ));
        assert!(matches!(
            HuntState::from_json(b"[1"),
            Err(StateError::Malformed(_))
        ));
        let bad = br#"{"version":1,"surface":"xdr","tenant":null,"client_id":null,"query":"x","checkpoint":"soon"}"#;
        assert!(matches!(
            HuntState::from_json(bad),
            Err(StateError::Checkpoint(_))
        ));
    }
}
