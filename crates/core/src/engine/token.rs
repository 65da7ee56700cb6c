//! The access token: when to fetch one, when it is usable, what its answer means.

use super::*;

#[derive(Debug, Default)]
pub(super) struct TokenState {
    pub(super) current: Option<AccessToken>,
    pub(super) fetching: bool,
    /// With [`Auth::External`]: when the provider's answer counts as missing.
    pub(super) fetch_deadline: Option<Instant>,
    pub(super) fetch_send: Option<SendId>,
    pub(super) not_before: Option<Instant>,
    pub(super) attempts: u32,
}

/// Tokens are not used in their last seconds (30 s, or a twentieth of a shorter
/// lifetime): a call must reach the server while its token is still valid.
pub(super) const TOKEN_USE_MARGIN: Duration = Duration::from_secs(30);

impl Engine {
    /// With [`Auth::External`]: the token the caller fetched, or why it could not.
    pub fn handle_token(&mut self, token: Result<AccessToken, Error>, now: Instant) {
        self.advance(now);
        self.token.fetching = false;
        self.token.fetch_deadline = None;
        match token {
            Ok(t) => self.accept_token(t),
            Err(e) => self.token_failed(e, None),
        }
        self.dirty = true;
    }

    /// A token arrived (fetched by the engine or given by the caller): it is the one
    /// calls use from now on, and the caller hears of it ([`Event::TokenRefreshed`]).
    fn accept_token(&mut self, t: AccessToken) {
        let valid_for = t.expires_at.saturating_duration_since(self.now);
        let replaced = self.token.current.replace(t).is_some();
        self.token.attempts = 0;
        self.token.not_before = None;
        self.events.push_back(Event::TokenRefreshed {
            valid_for,
            replaced,
        });
    }

    pub(super) fn usable_token(&self) -> Option<&AccessToken> {
        self.token.current.as_ref().filter(|t| {
            let life = t.expires_at.saturating_duration_since(t.obtained_at);
            self.now + TOKEN_USE_MARGIN.min(life / 20) < t.expires_at
        })
    }

    pub(super) fn start_token_fetch(&mut self) {
        match &self.config.auth {
            Auth::External => {
                self.token.fetching = true;
                self.token.fetch_deadline = Some(self.now + self.config.token_timeout);
                self.events.push_back(Event::NeedToken);
            }
            Auth::ClientCredentials(creds) => {
                let request = creds.token_request(
                    &self.config.endpoints.login_base,
                    &self.config.endpoints.scope,
                );
                let send = self.next_send_id();
                self.token.fetching = true;
                self.token.fetch_send = Some(send);
                self.token.attempts += 1;
                self.sends.insert(send, SendTarget::Token);
                self.outbox.push_back(Transmit {
                    id: send,
                    call: None,
                    group: None,
                    attempt: self.token.attempts,
                    request,
                    timeout: self.config.token_timeout,
                    stream: false,
                });
            }
        }
    }

    pub(super) fn token_response(&mut self, status: u16, body: &[u8]) {
        self.token.fetching = false;
        self.token.fetch_send = None;
        match crate::token::parse_token_response(status, body, self.now) {
            Ok(t) => self.accept_token(t),
            Err(e @ Error::Server { .. }) => self.token_failed(e, Some(FailureKind::Token)),
            Err(e) => self.token_failed(e, None),
        }
    }

    /// A token fetch failed: retry per policy when `retry` says it may, else fail every
    /// queued call with the error (a later call starts a new fetch).
    pub(super) fn token_failed(&mut self, error: Error, retry: Option<FailureKind>) {
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
                self.token.not_before = Some(self.now + d.max(Duration::from_millis(1)));
                return;
            }
        }
        self.token.attempts = 0;
        self.token.not_before = None;
        if self.usable_token().is_some() {
            // Keep using the token we have; try for a new one a minute later, not at once.
            self.token.not_before = Some(self.now + Duration::from_secs(60));
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
