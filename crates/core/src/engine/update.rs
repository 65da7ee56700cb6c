//! Calls that change something (incident and alert updates): never resent blindly.
//! After an ambiguous failure the next attempt reads the record back; Graph's comment
//! is a second step.

use super::*;

/// The requests of an update (of an incident or an alert). Defender takes everything,
/// comment included, in one PATCH; Graph takes the fields in a PATCH and the comment in a
/// POST to the record's comments, each admitted and retried (or read back) on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpdateStep {
    Patch,
    Comment,
}

impl UpdateStep {
    pub(super) fn first(call: &Call, surface: Surface) -> UpdateStep {
        match Change::of(call) {
            Some(c) if surface == Surface::Graph && c.without_comment().is_empty() => {
                UpdateStep::Comment
            }
            _ => UpdateStep::Patch,
        }
    }
}

impl CallState {
    /// The part of an update the current step sends (and a read-back checks).
    pub(super) fn step_update(&self, surface: Surface) -> Option<Change> {
        let change = Change::of(&self.call)?;
        Some(match (surface, self.step) {
            (Surface::Graph, UpdateStep::Patch) => change.without_comment(),
            (Surface::Graph, UpdateStep::Comment) => change.only_comment(),
            _ => change,
        })
    }

    /// Graph: after the PATCH step, whether a comment is still to be posted.
    pub(super) fn comment_pending(&self, surface: Surface) -> bool {
        surface == Surface::Graph
            && self.step == UpdateStep::Patch
            && Change::of(&self.call).is_some_and(|c| c.has_comment())
    }

    /// Whether the request this call sends next (or has in flight) can be resent
    /// without doing a thing twice: everything but an update (a read-back is a GET).
    pub(super) fn idempotent(&self) -> bool {
        !self.call.is_update() || self.verify
    }
}

impl Engine {
    /// The request of an incident update may have reached the server and its answer is
    /// lost (`error` says how): never resend it as it is. When the policy retries, the
    /// next attempt reads the incident back; when it stops, the call fails with
    /// [`Error::OutcomeUnknown`].
    pub(super) fn ambiguous_update(
        &mut self,
        id: CallId,
        mut state: CallState,
        kind: FailureKind,
        server_wait: Option<Duration>,
        error: Error,
    ) {
        self.maybe_applied(id, &mut state);
        let failure = Failure {
            group: state.group,
            attempt: state.attempts,
            kind,
            server_wait,
            elapsed: self.now.saturating_duration_since(state.submitted),
            idempotent: false,
        };
        self.retry_or_fail(id, state, failure, server_wait, || error);
    }

    /// The read-back of an update whose outcome was unknown: complete with what was
    /// read when the change is there, else send the change again.
    pub(super) fn verified(
        &mut self,
        id: CallId,
        mut state: CallState,
        body: &[u8],
        wall_now: SystemTime,
    ) {
        // Only updates are read back.
        let Some(update) = state.step_update(self.config.surface) else {
            return self.fail(id, Error::InvalidRequest("not an update".into()));
        };
        let record = match update.decode(body) {
            Ok(r) => r,
            Err(e) => return self.fail(id, e),
        };
        // Our clock's reading of when the first maybe-applied request left, less the
        // server's allowed lag behind us.
        let ago = self
            .now
            .saturating_duration_since(state.maybe_applied_since.unwrap_or(self.now));
        let since = wall_now
            .checked_sub(ago + self.config.clock_skew)
            .unwrap_or(std::time::UNIX_EPOCH);
        if update.is_applied(&record, self.config.surface, since) {
            self.unsure.remove(&id);
            return self.step_done(id, state, record);
        }
        // Not there: the server did not apply it, so sending it again does it once.
        self.unsure.remove(&id);
        state.verify = false;
        self.requeue_now(id, state);
    }

    /// The update's request may have been applied: remember it (a failure becomes
    /// `OutcomeUnknown`) and make the next attempt a read-back.
    pub(super) fn maybe_applied(&mut self, id: CallId, state: &mut CallState) {
        if let Some(change) = Change::of(&state.call) {
            self.unsure.insert(id, change);
        }
        state.verify = true;
        state.maybe_applied_since = state.maybe_applied_since.or(state.sent_at);
    }

    /// Puts a call back in the queue to go at once (its next request, or a read-back).
    pub(super) fn requeue_now(&mut self, id: CallId, mut state: CallState) {
        state.phase = Phase::Queued;
        state.queued_since = self.now;
        state.not_before = None;
        self.calls.insert(id, state);
    }

    /// An update's step succeeded with `record` (its answer, or what a read-back saw):
    /// on Graph with a comment still to post, go on to that step; else the call is done.
    pub(super) fn step_done(&mut self, id: CallId, mut state: CallState, record: Record) {
        if state.comment_pending(self.config.surface) {
            state.patched = Some(record);
            state.step = UpdateStep::Comment;
            state.verify = false;
            state.maybe_applied_since = None;
            return self.requeue_now(id, state);
        }
        self.complete(id, record.into_value());
    }

    /// An update's 2xx answer: the record (a PATCH) or Graph's comment collection (a
    /// comment POST, merged into what the PATCH step answered). An answer that does not
    /// decode gives the state back with the error.
    pub(super) fn update_answered(
        &mut self,
        id: CallId,
        mut state: CallState,
        body: &[u8],
    ) -> Result<(), Box<(CallState, Error)>> {
        let Some(change) = Change::of(&state.call) else {
            return Err(Box::new((
                state,
                Error::InvalidRequest("not an update".into()),
            )));
        };
        if state.step == UpdateStep::Comment {
            let comments: CommentCollection = match serde_json::from_slice(body) {
                Ok(c) => c,
                Err(e) => {
                    let error = Error::Decode {
                        what: "comments",
                        len: body.len(),
                        message: e.to_string(),
                    };
                    return Err(Box::new((state, error)));
                }
            };
            let mut record = state.patched.take().unwrap_or_else(|| change.bare_record());
            record.set_comments(comments.value);
            self.complete(id, record.into_value());
            return Ok(());
        }
        match change.decode(body) {
            Ok(record) => {
                self.step_done(id, state, record);
                Ok(())
            }
            Err(e) => Err(Box::new((state, e))),
        }
    }
}
