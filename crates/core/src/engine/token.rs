//! The access token: a cache with every timing rule in one place, and what the engine
//! does with its answers.
//!
//! ```text
//!  no usable token, or past refresh_at, calls queued, not held back
//!        │ wants_fetch
//!        ▼
//!  fetching (a Transmit of ours, or NeedToken to the caller's provider, due by
//!  token_timeout) ──answer──► accept: current token, TokenRefreshed
//!        │                    │
//!        │ failure            └─ usable until USE_MARGIN before expiry; refreshed from
//!        ▼                       REFRESH_AHEAD before expiry while calls are active
//!  policy says retry ─► held back until then
//!  policy says stop  ─► a token still usable: held back RETRY_WHILE_USABLE, calls go on;
//!                       none: every queued call fails with the error
//! ```

use super::*;

/// A token is refreshed this long before it expires (or at 90% of a shorter lifetime),
/// so calls never go out with a token about to lapse.
pub const TOKEN_REFRESH_AHEAD: Duration = Duration::from_secs(300);

/// A token is not used in its last 30 s (or its last twentieth of a shorter lifetime): a
/// call must reach the server while its token is still valid.
pub const TOKEN_USE_MARGIN: Duration = Duration::from_secs(30);

/// After a failed refresh while the current token is still usable, the next attempt
/// waits this long (the calls go on with the token they have).
pub const TOKEN_RETRY_WHILE_USABLE: Duration = Duration::from_secs(60);

/// How long a token request, or the caller's token provider, may take by default
/// ([`Config::token_timeout`]).
pub const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// When to fetch the next token: [`TOKEN_REFRESH_AHEAD`] before `expires_at`, or at 90% of
/// a shorter lifetime.
pub(crate) fn refresh_at(obtained_at: Instant, expires_at: Instant) -> Instant {
    let life = expires_at.saturating_duration_since(obtained_at);
    let ahead = TOKEN_REFRESH_AHEAD.min(life / 10);
    expires_at.checked_sub(ahead).unwrap_or(obtained_at)
}

/// What is being done to get a token.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    #[default]
    Idle,
    /// Our own token request is out.
    Request(SendId),
    /// The caller's provider was asked ([`Event::NeedToken`]); its answer is missing
    /// after this instant.
    Provider(Instant),
}

/// The current token and the fetch in progress. Time comes in; no IO.
#[derive(Debug, Default)]
pub(super) struct TokenCache {
    current: Option<AccessToken>,
    fetch: Fetch,
    /// No new fetch before this (a retry's backoff).
    not_before: Option<Instant>,
    /// Attempts of the current fetch.
    attempts: u32,
}

impl TokenCache {
    /// The token a call may use at `now`.
    pub(super) fn usable(&self, now: Instant) -> Option<&AccessToken> {
        self.current.as_ref().filter(|t| {
            let life = t.expires_at.saturating_duration_since(t.obtained_at);
            now + TOKEN_USE_MARGIN.min(life / 20) < t.expires_at
        })
    }

    /// Whether a fetch should start at `now` (with calls waiting): none usable, or past
    /// its refresh time; none in progress; not held back.
    fn wants_fetch(&self, now: Instant) -> bool {
        let stale = self.current.as_ref().is_none_or(|t| !t.is_fresh(now));
        stale && self.fetch == Fetch::Idle && self.not_before.is_none_or(|t| t <= now)
    }

    /// The next instant the cache wants to be looked at, while calls wait.
    pub(super) fn timer(&self) -> Option<Instant> {
        let refresh = match (&self.current, self.fetch) {
            (Some(t), Fetch::Idle) => Some(t.refresh_at()),
            _ => None,
        };
        [self.not_before, refresh].into_iter().flatten().min()
    }

    /// When the caller's provider must have answered by, if it was asked.
    pub(super) fn provider_deadline(&self) -> Option<Instant> {
        match self.fetch {
            Fetch::Provider(by) => Some(by),
            _ => None,
        }
    }

    /// The fetch in progress ended (answered, failed or timed out); its attempts so far.
    fn end_fetch(&mut self) -> u32 {
        self.fetch = Fetch::Idle;
        self.attempts
    }

    /// A new token: it is the one calls use from now on. How long it is good for, and
    /// whether it replaced one.
    fn accept(&mut self, t: AccessToken, now: Instant) -> (Duration, bool) {
        let valid_for = t.expires_at.saturating_duration_since(now);
        let replaced = self.current.replace(t).is_some();
        self.attempts = 0;
        self.not_before = None;
        (valid_for, replaced)
    }

    /// The server refused the token (a 401): it is not used again.
    pub(super) fn forget(&mut self) {
        self.current = None;
    }

    /// The fetch failed and the policy retries it at `at`.
    fn retry_at(&mut self, at: Instant) {
        self.not_before = Some(at);
    }

    /// The fetch failed for good: with a token still usable, the next attempt waits
    /// [`TOKEN_RETRY_WHILE_USABLE`] and true is returned (the calls go on).
    fn give_up(&mut self, now: Instant) -> bool {
        self.attempts = 0;
        self.not_before = None;
        if self.usable(now).is_some() {
            self.not_before = Some(now + TOKEN_RETRY_WHILE_USABLE);
            return true;
        }
        false
    }
}

impl Engine {
    /// With [`Auth::External`] (or [`Auth::Source`]): the token fetched, or why not.
    pub fn handle_token(&mut self, token: Result<AccessToken, Error>, now: Instant) {
        self.advance(now);
        self.token.end_fetch();
        match token {
            Ok(t) => self.accept_token(t),
            // A token source's server error or lost answer is retried per policy, as our
            // own token request is; a provider's errors are its own to retry.
            Err(e @ (Error::Server { .. } | Error::Transport { .. }))
                if matches!(self.config.auth, Auth::Source(_)) =>
            {
                self.token_failed(e, Some(FailureKind::Token))
            }
            Err(e) => self.token_failed(e, None),
        }
        self.dirty = true;
    }

    /// A token arrived (fetched by the engine or given by the caller): the caller hears
    /// of it ([`Event::TokenRefreshed`]).
    fn accept_token(&mut self, t: AccessToken) {
        let (valid_for, replaced) = self.token.accept(t, self.now);
        self.events.push_back(Event::TokenRefreshed {
            valid_for,
            replaced,
        });
    }

    /// The token calls may use now.
    pub(super) fn usable_token(&self) -> Option<&AccessToken> {
        self.token.usable(self.now)
    }

    /// Starts a fetch when the cache wants one (calls are waiting).
    pub(super) fn fetch_token_if_needed(&mut self) {
        if !self.token.wants_fetch(self.now) {
            return;
        }
        match &self.config.auth {
            Auth::External | Auth::Source(_) => {
                if matches!(self.config.auth, Auth::Source(_)) {
                    // Counted, so the policy's retry limit applies to a source's fetches.
                    self.token.attempts += 1;
                }
                self.token.fetch = Fetch::Provider(self.now + self.config.token_timeout);
                self.events.push_back(Event::NeedToken);
            }
            Auth::ClientCredentials(creds) => {
                let request = creds.token_request(
                    &self.config.endpoints.login_base,
                    &self.config.endpoints.scope,
                );
                let send = self.next_send_id();
                self.token.fetch = Fetch::Request(send);
                self.token.attempts += 1;
                self.sends.insert(send, SendTarget::Token);
                self.outbox.push_back(Transmit {
                    id: send,
                    purpose: Purpose::Token,
                    attempt: self.token.attempts,
                    request,
                    timeout: self.config.token_timeout,
                    stream: false,
                });
            }
        }
    }

    /// The answer to our token request.
    pub(super) fn token_response(&mut self, status: u16, body: &[u8]) {
        self.token.end_fetch();
        match crate::token::parse_token_response(status, body, self.now) {
            Ok(t) => self.accept_token(t),
            Err(e @ Error::Server { .. }) => self.token_failed(e, Some(FailureKind::Token)),
            Err(e) => self.token_failed(e, None),
        }
    }

    /// Our token request got no answer (or was given up).
    pub(super) fn token_transport_error(&mut self, error: TransportError) {
        let attempts = self.token.end_fetch();
        self.token_failed(
            Error::Transport { attempts, error },
            Some(FailureKind::Token),
        );
    }

    /// The caller's provider did not answer within `token_timeout`: the calls waiting for
    /// it fail (a late answer is still taken).
    pub(super) fn token_provider_overdue(&mut self, now: Instant) {
        if self.token.provider_deadline().is_none_or(|by| by > now) {
            return;
        }
        self.token.end_fetch();
        let message = format!(
            "the token provider did not answer within {} (token_timeout)",
            format_duration(self.config.token_timeout)
        );
        self.token_failed(Error::TokenUnavailable { message }, None);
    }

    /// A token fetch failed: retry per policy when `retry` says it may, else fail every
    /// queued call with the error (a later call starts a new fetch).
    fn token_failed(&mut self, error: Error, retry: Option<FailureKind>) {
        // A stale token still inside its lifetime remains usable meanwhile.
        if let Some(kind) = retry {
            let failure = Failure {
                group: ApiGroup::Incidents,
                attempt: self.token.attempts.max(1),
                kind,
                server_wait: None,
                elapsed: Duration::ZERO,
                idempotent: true,
            };
            if let Retry::After(d) = self.policy.retry(&failure) {
                self.token
                    .retry_at(self.now + d.max(Duration::from_millis(1)));
                return;
            }
        }
        if self.token.give_up(self.now) {
            return;
        }
        let queued: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Queued))
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            self.calls.remove(&id);
            self.fail(id, error.clone());
        }
    }
}
