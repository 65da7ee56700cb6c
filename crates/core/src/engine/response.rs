//! Classifying an answer (status, headers, body) and decoding a success into its value.

use super::*;

impl Engine {
    pub(super) fn call_response(
        &mut self,
        call_id: CallId,
        response: http::Response<Vec<u8>>,
        wall_now: SystemTime,
    ) {
        let Some(mut state) = self.calls.remove(&call_id) else {
            return;
        };
        let status = response.status().as_u16();
        let body = response.body();
        let elapsed_call = self
            .now
            .saturating_duration_since(state.sent_at.unwrap_or(self.now));

        if response.status().is_success() {
            self.policy.on_success();
            if state.verify {
                return self.verified(call_id, state, body, wall_now);
            }
            let result = if state.call.is_update() {
                match self.update_answered(call_id, state, body) {
                    Ok(()) => return,
                    Err(back) => {
                        let (s, e) = *back;
                        state = s;
                        Err(e)
                    }
                }
            } else {
                let date = response
                    .headers()
                    .get(http::header::DATE)
                    .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
                self.decode_success(&mut state, body, elapsed_call)
                    .map(|v| match v {
                        Value::Incidents { mut page, next } => {
                            page.server_date = date;
                            Value::Incidents { page, next }
                        }
                        other => other,
                    })
            };
            match result {
                Ok(value) => self.complete(call_id, value),
                Err(_) if !state.idempotent() => {
                    // Applied (2xx) but unreadable: read the incident back for the caller.
                    self.maybe_applied(call_id, &mut state);
                    self.requeue_now(call_id, state);
                }
                Err(e) => self.fail(call_id, e),
            }
            return;
        }
        // Not a success: the query did not run to a result; nothing is charged.
        let hold = state.hold.take();
        self.settle(state.group, hold, Duration::ZERO);
        let api_error = || ApiError::from_response(status, response.headers(), body);
        match status {
            429 => {
                let throttle = Throttle::parse(response.headers(), body, wall_now);
                let group = state.group;
                let server_wait = self.apply_throttle(group, &throttle);
                let failure = Failure {
                    group,
                    attempt: state.attempts,
                    kind: FailureKind::Throttled,
                    server_wait,
                    elapsed: self.now.saturating_duration_since(state.submitted),
                    // A 429 was refused before anything was applied.
                    idempotent: true,
                };
                let message = throttle.message();
                self.retry_or_fail(call_id, state, failure, server_wait, || Error::Throttled {
                    group,
                    retry_after: server_wait,
                    message,
                });
            }
            401 if !state.token_retried => {
                // The token may have been revoked or expired early: fetch a new one, once.
                self.token.forget();
                state.token_retried = true;
                state.phase = Phase::Queued;
                state.queued_since = self.now;
                self.calls.insert(call_id, state);
            }
            401 => self.fail(call_id, Error::Auth(api_error())),
            403 => self.fail(call_id, Error::Forbidden(api_error())),
            404 => self.fail(call_id, Error::NotFound(api_error())),
            408 | 500..=599 => {
                let wait = crate::throttle::retry_after_from_headers(response.headers(), wall_now);
                let wait = self.cap_server_wait(wait);
                let attempts = state.attempts;
                let error = Error::Server {
                    status,
                    attempts,
                    error: api_error(),
                    retry_after: wait,
                };
                if !state.idempotent() {
                    // A server error says nothing of whether the update was applied.
                    let kind = FailureKind::Server(status);
                    return self.ambiguous_update(call_id, state, kind, wait, error);
                }
                let failure = Failure {
                    group: state.group,
                    attempt: state.attempts,
                    kind: FailureKind::Server(status),
                    server_wait: wait,
                    elapsed: self.now.saturating_duration_since(state.submitted),
                    idempotent: true,
                };
                self.retry_or_fail(call_id, state, failure, wait, || error);
            }
            _ => {
                let error = api_error();
                let lower = error.message.to_ascii_lowercase();
                if status == 400 && lower.contains("allowed result size") {
                    self.fail(call_id, Error::ResultTooLarge(error));
                } else if status == 400 && lower.contains("preempted") {
                    // Graph: "Query execution has exceeded the allowed limits. The query
                    // execution was preempted…": too much work at once, not a bad query.
                    self.fail(call_id, Error::Preempted(error));
                } else {
                    self.fail(call_id, Error::Rejected { status, error });
                }
            }
        }
    }

    /// What a 429 says about the limits: a learned window, a retry time for the group's
    /// quota or for the running-time budget.
    ///
    /// Nothing the server says can block for longer than [`Config::max_server_wait`]: a
    /// longer wait is cut to it and a limit over a longer period is ignored (each with a
    /// warning). A spent running-time budget without a retry time blocks for
    /// [`Config::runtime_exhausted_wait`]. Returns the wait the call itself honours.
    pub(super) fn apply_throttle(
        &mut self,
        group: ApiGroup,
        throttle: &Throttle,
    ) -> Option<Duration> {
        let mut retry_after = self.cap_server_wait(throttle.retry_after);
        let mut limit = throttle.limit;
        if let Some(l) = limit.filter(|l| l.per > self.config.max_server_wait) {
            self.warn(format!(
                "ignoring the limit the server named ({l}): its period is longer than {} (max_server_wait)",
                format_duration(self.config.max_server_wait)
            ));
            limit = None;
        }
        if throttle.runtime_exhausted && retry_after.is_none() {
            retry_after = Some(self.config.runtime_exhausted_wait);
        }
        if limit.is_some() || retry_after.is_some() {
            self.quota_op(QuotaOp::Feedback {
                group,
                retry_after,
                limit,
                runtime_exhausted: throttle.runtime_exhausted,
            });
        }
        retry_after
    }

    /// A server-given wait, cut to [`Config::max_server_wait`] (with a warning).
    pub(super) fn cap_server_wait(&mut self, wait: Option<Duration>) -> Option<Duration> {
        let cap = self.config.max_server_wait;
        match wait {
            Some(w) if w > cap => {
                self.warn(format!(
                    "the server asked to wait {}; waiting at most {} (max_server_wait)",
                    format_duration(w),
                    format_duration(cap)
                ));
                Some(cap)
            }
            w => w,
        }
    }

    pub(super) fn decode_success(
        &mut self,
        state: &mut CallState,
        body: &[u8],
        elapsed: Duration,
    ) -> Result<Value, Error> {
        let decode_err = |what: &'static str, e: serde_json::Error| Error::Decode {
            what,
            len: body.len(),
            message: e.to_string(),
        };
        match &state.call {
            Call::Hunt(_) | Call::HuntWindow(_) | Call::HuntStream(_) => {
                // The streaming decoder reads row by row: no tree of the whole document.
                let mut rows = Vec::new();
                let parsed = crate::stream::decode_streaming(body, |row| rows.push(row)).map(
                    |(schema, stats, _)| HuntResponse {
                        stats,
                        schema,
                        results: rows,
                        ..HuntResponse::default()
                    },
                );
                let stats = parsed.as_ref().ok().and_then(|h| h.stats.as_ref());
                let running = running_time(stats, elapsed);
                self.settle(state.group, state.hold.take(), running);
                self.record_runtime(running);
                let resp = parsed.map_err(|e| Error::Decode {
                    what: "hunting",
                    len: body.len(),
                    message: e.to_string(),
                })?;
                let result =
                    HuntResult::from_response(resp, self.config.limits.hunting.rows, running);
                if let Some(e) = self.refuse_truncated(&state.call, result.truncated) {
                    return Err(e);
                }
                Ok(Value::Hunt(result))
            }
            Call::ListIncidents(_) | Call::NextIncidents(_) => {
                let page: IncidentPage =
                    serde_json::from_slice(body).map_err(|e| decode_err("incidents", e))?;
                let next = self.next_page(&state.call, &page);
                Ok(Value::Incidents { page, next })
            }
            Call::GetIncident(_) | Call::UpdateIncident(..) => {
                let inc: Incident =
                    serde_json::from_slice(body).map_err(|e| decode_err("incident", e))?;
                Ok(Value::Incident(Box::new(inc)))
            }
            Call::ListAlerts(_) | Call::NextAlerts(_) => {
                let page: AlertPage =
                    serde_json::from_slice(body).map_err(|e| decode_err("alerts", e))?;
                let next = self.next_alerts(&state.call, &page);
                Ok(Value::Alerts { page, next })
            }
            Call::GetAlert(_) | Call::UpdateAlert(..) => {
                let alert: Alert =
                    serde_json::from_slice(body).map_err(|e| decode_err("alert", e))?;
                Ok(Value::Alert(Box::new(alert)))
            }
        }
    }

    pub(super) fn next_alerts(&self, call: &Call, page: &AlertPage) -> Option<Call> {
        if let Some(link) = &page.next_link {
            return Some(Call::NextAlerts(link.clone()));
        }
        // Defender documents no nextLink for alerts: a full page means there may be more.
        match call {
            Call::ListAlerts(q) if self.config.surface != Surface::Graph => {
                let max = alerts::max_top(self.config.surface);
                let top = q.top.unwrap_or(max).clamp(1, max);
                (page.value.len() as u32 >= top).then(|| {
                    let mut next = q.clone();
                    next.top = Some(top);
                    next.skip = Some(q.skip.unwrap_or(0) + top);
                    Call::ListAlerts(next)
                })
            }
            _ => None,
        }
    }

    pub(super) fn next_page(&self, call: &Call, page: &IncidentPage) -> Option<Call> {
        if let Some(link) = &page.next_link {
            return Some(Call::NextIncidents(link.clone()));
        }
        // Defender XDR documents no nextLink: a full page means there may be more.
        match call {
            Call::ListIncidents(q) if self.config.surface != Surface::Graph => {
                let max = max_top(self.config.surface);
                let top = q.top.unwrap_or(max).clamp(1, max);
                (page.value.len() as u32 >= top).then(|| {
                    let mut next = q.clone();
                    next.top = Some(top);
                    next.skip = Some(q.skip.unwrap_or(0) + top);
                    Call::ListIncidents(next)
                })
            }
            _ => None,
        }
    }

    /// A result at the row cap fails its call only where the policy says so, and never a
    /// window of a ranged hunt (the planner bisects it).
    pub(super) fn refuse_truncated(&self, call: &Call, truncated: bool) -> Option<Error> {
        let refused = truncated
            && !matches!(call, Call::HuntWindow(_))
            && self.policy.truncation() == Truncation::Error;
        refused.then(|| Error::Truncated {
            cap: self.config.limits.hunting.rows.unwrap_or_default(),
        })
    }
}

/// The running time a hunting answer charges: its `ExecutionTime`, else how long the call
/// took (Defender for Endpoint reports none).
pub(super) fn running_time(stats: Option<&Stats>, elapsed: Duration) -> Duration {
    stats
        .and_then(|s| s.execution_duration())
        .unwrap_or(elapsed)
}
