//! What both clients' builders collect, turned into an engine [`Config`] in one place.
//!
//! ```
//! use defender_core::settings::Settings;
//! use defender_core::Surface;
//! let env = |k: &str| match k {
//!     "AZURE_TENANT_ID" => Some("contoso".to_owned()),
//!     "AZURE_CLIENT_ID" => Some("app".to_owned()),
//!     "AZURE_CLIENT_SECRET" => Some("s3cr3t".to_owned()),
//!     _ => None,
//! };
//! let config = Settings::new(Surface::Graph).with_env(env).into_config().unwrap();
//! assert_eq!(config.endpoints.api_base, "https://graph.microsoft.com");
//! assert!(!format!("{config:?}").contains("s3cr3t"));
//! ```

use std::time::Duration;

use crate::credential::TokenSource;
use crate::engine::{Auth, Config};
use crate::limits::{Limits, LimitsError};
use crate::surface::{Cloud, Endpoints, Surface};
use crate::token::{ClientCredentials, Secret};

/// The default response body limit of both clients: the service's result size limit
/// (124 MB) and some.
pub const DEFAULT_MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// Builder settings shared by the async and blocking clients.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The API surface.
    pub surface: Surface,
    /// The cloud.
    pub cloud: Cloud,
    /// The tenant.
    pub tenant: Option<String>,
    /// The app's client id.
    pub client_id: Option<String>,
    /// The client secret.
    pub secret: Option<Secret>,
    /// Tokens come from a caller-supplied provider instead of the client secret.
    pub external_tokens: bool,
    /// Overrides the API base URL.
    pub base_url: Option<String>,
    /// Overrides the identity platform base URL.
    pub login_url: Option<String>,
    /// The limits (default: the surface's preset).
    pub limits: Option<Limits>,
    /// The safety margin on every window (with `learn_margin`, its ceiling).
    pub margin: Option<Duration>,
    /// Learn the margin from round trips (see [`Config::learn_margin`]).
    pub learn_margin: Option<bool>,
    /// The longest wait a server may impose (see [`Config::max_server_wait`]).
    pub max_server_wait: Option<Duration>,
    /// How long a shared quota store may take to answer (see [`Config::store_timeout`]).
    pub store_timeout: Option<Duration>,
    /// How long a token fetch may take (see [`Config::token_timeout`]).
    pub token_timeout: Option<Duration>,
    /// Where tokens come from, when not the client secret (see [`TokenSource`]).
    pub credential: Option<TokenSource>,
    /// Extra root certificates (PEM) the HTTP client trusts (an emulator's, a proxy's).
    pub ca_certificates: Vec<Vec<u8>>,
}

/// Why a client could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No tenant was given.
    #[error("no tenant: set one on the builder or in AZURE_TENANT_ID")]
    MissingTenant,
    /// No client id was given.
    #[error("no client id: set one on the builder or in AZURE_CLIENT_ID")]
    MissingClientId,
    /// No secret and no token provider.
    #[error("no client secret: set one on the builder or in AZURE_CLIENT_SECRET, or give a token provider")]
    MissingSecret,
    /// A bad limits spec.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// A URL that would send credentials in the clear.
    #[error(transparent)]
    Insecure(#[from] crate::Error),
    /// A shared quota store names the quota by tenant and app id, and one is missing.
    #[error(
        "a shared quota store needs the tenant and the client (app) id to name the quota: \
         set them on the builder or in AZURE_TENANT_ID and AZURE_CLIENT_ID (also when a token \
         provider supplies the tokens)"
    )]
    SharedQuotaScope,
    /// The HTTP client could not be built (its TLS setup failed: no usable root
    /// certificates or crypto provider on this machine).
    #[error("the HTTP client could not be built: {message}")]
    HttpClient {
        /// The HTTP library's error.
        message: String,
    },
    /// The shared quota store could not be set up (its URL does not parse).
    #[error("the shared quota store could not be set up: {message}")]
    QuotaStore {
        /// The store's error, without credentials.
        message: String,
    },
}

impl Settings {
    /// Settings for `surface` in the global cloud.
    pub fn new(surface: Surface) -> Settings {
        Settings {
            surface,
            cloud: Cloud::Global,
            tenant: None,
            client_id: None,
            secret: None,
            external_tokens: false,
            base_url: None,
            login_url: None,
            limits: None,
            margin: None,
            learn_margin: None,
            max_server_wait: None,
            store_timeout: None,
            token_timeout: None,
            credential: None,
            ca_certificates: Vec::new(),
        }
    }

    /// Fills what is not set from the Azure SDKs' variables (`AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`), read through `get` so this stays pure.
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> Settings {
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if self.tenant.is_none() {
            self.tenant = nonempty("AZURE_TENANT_ID");
        }
        if self.client_id.is_none() {
            self.client_id = nonempty("AZURE_CLIENT_ID");
        }
        if self.secret.is_none() {
            self.secret = nonempty("AZURE_CLIENT_SECRET").map(Secret::new);
        }
        self
    }

    /// Parses and sets the limits from a preset name or spec.
    pub fn limits_spec(&mut self, spec: &str) -> Result<(), LimitsError> {
        self.limits = Some(Limits::parse(spec)?);
        Ok(())
    }

    /// The tenant and app id that name a shared quota.
    pub fn quota_scope(&self) -> Result<(String, String), BuildError> {
        let (src_tenant, src_app) = self
            .credential
            .as_ref()
            .map_or((None, None), TokenSource::identity);
        let tenant = self.tenant.clone().or(src_tenant.map(str::to_owned));
        let client_id = self.client_id.clone().or(src_app.map(str::to_owned));
        match (&tenant, &client_id) {
            (Some(t), Some(a)) if !t.is_empty() && !a.is_empty() => Ok((t.clone(), a.clone())),
            _ => Err(BuildError::SharedQuotaScope),
        }
    }

    /// The engine configuration.
    pub fn into_config(self) -> Result<Config, BuildError> {
        let auth = if self.external_tokens {
            Auth::External
        } else if let Some(source) = self.credential.clone() {
            Auth::Source(source)
        } else {
            let tenant = self.tenant.clone().ok_or(BuildError::MissingTenant)?;
            let client_id = self.client_id.clone().ok_or(BuildError::MissingClientId)?;
            let secret = self.secret.clone().ok_or(BuildError::MissingSecret)?;
            Auth::ClientCredentials(ClientCredentials::new(tenant, client_id, secret))
        };
        let mut config = Config::new(self.surface, auth);
        let mut endpoints = Endpoints::new(self.surface, self.cloud);
        if let Some(base) = &self.base_url {
            endpoints = endpoints.with_api_base(base);
        }
        if let Some(login) = &self.login_url {
            endpoints = endpoints.with_login_base(login);
        }
        endpoints.check_secure()?;
        config.endpoints = endpoints;
        if let Some(limits) = self.limits {
            config.limits = limits;
        }
        if let Some(margin) = self.margin {
            config.margin = margin;
        }
        if let Some(learn) = self.learn_margin {
            config.learn_margin = learn;
        }
        if let Some(d) = self.max_server_wait {
            config.max_server_wait = d;
        }
        if let Some(d) = self.store_timeout {
            config.store_timeout = d;
        }
        if let Some(d) = self.token_timeout {
            config.token_timeout = d;
        }
        Ok(config)
    }
}

/// The builder setters both clients share, over a builder with a `settings: Settings`
/// and a `policy: Option<Box<dyn Policy>>` field. Used inside `impl ClientBuilder`.
#[doc(hidden)]
#[macro_export]
macro_rules! settings_setters {
    () => {
        /// The API surface (default Defender XDR).
        pub fn surface(mut self, surface: $crate::Surface) -> Self {
            self.settings.surface = surface;
            self
        }

        /// The cloud (default global).
        pub fn cloud(mut self, cloud: $crate::Cloud) -> Self {
            self.settings.cloud = cloud;
            self
        }

        /// The tenant id or domain.
        pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
            self.settings.tenant = Some(tenant.into());
            self
        }

        /// The app's client id.
        pub fn client_id(mut self, id: impl Into<String>) -> Self {
            self.settings.client_id = Some(id.into());
            self
        }

        /// The client secret.
        pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
            self.settings.secret = Some($crate::token::Secret::new(secret));
            self
        }

        /// Fills tenant, client id and secret from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
        /// `AZURE_CLIENT_SECRET` where not set.
        pub fn from_env(mut self) -> Self {
            self.settings = self.settings.with_env(|k| std::env::var(k).ok());
            self
        }

        /// Limits from a preset name or spec (`xdr`, `2021,hunting.calls=45/1m`).
        pub fn limits(mut self, spec: &str) -> Result<Self, $crate::settings::BuildError> {
            self.settings.limits_spec(spec)?;
            Ok(self)
        }

        /// Limits as a value.
        pub fn limits_value(mut self, limits: $crate::Limits) -> Self {
            self.settings.limits = Some(limits);
            self
        }

        /// The safety margin added to every window (default 500 ms); with
        /// [`learn_margin`](Self::learn_margin), the most it may grow to.
        pub fn margin(mut self, margin: std::time::Duration) -> Self {
            self.settings.margin = Some(margin);
            self
        }

        /// Learn the margin from the round trips this client sees (default off): it
        /// comes down from [`margin`](Self::margin) to the spread of latencies, and
        /// doubles at once after a 429. See `defender_core::margin`.
        pub fn learn_margin(mut self, learn: bool) -> Self {
            self.settings.learn_margin = Some(learn);
            self
        }

        /// The longest wait a server may impose (default one day): a longer
        /// `Retry-After` or "again in" is cut to it, and a limit the server names over a
        /// longer period is ignored, so one odd 429 cannot block calls for years.
        pub fn max_server_wait(mut self, wait: std::time::Duration) -> Self {
            self.settings.max_server_wait = Some(wait);
            self
        }

        /// How long a shared quota store may take to answer an admission (default
        /// 10 s); then the call fails with `Error::QuotaStore` and a late answer is
        /// given back.
        pub fn store_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.settings.store_timeout = Some(timeout);
            self
        }

        /// How long a token request, or the token provider, may take (default 30 s);
        /// then the calls waiting for it fail (`Error::TokenUnavailable` for a provider).
        pub fn token_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.settings.token_timeout = Some(timeout);
            self
        }

        /// The policy (default `StandardPolicy::standard()` of `defender-policy`).
        pub fn policy(mut self, policy: impl $crate::policy::Policy + 'static) -> Self {
            self.policy = Some(Box::new(policy));
            self
        }

        /// Sends API calls to another base URL (a proxy, the emulator).
        pub fn base_url(mut self, url: impl Into<String>) -> Self {
            self.settings.base_url = Some(url.into());
            self
        }

        /// Tokens from `source` (a certificate, workload or managed identity, the Azure
        /// CLI, the `auto` chain) instead of the client secret; see
        /// [`TokenSource`]($crate::credential::TokenSource).
        pub fn credential(mut self, source: $crate::credential::TokenSource) -> Self {
            self.settings.credential = Some(source);
            self
        }

        /// Trusts this root certificate (PEM) too, beside the system's: an emulator's
        /// (`defender emulator --tls --tls-cert-out`), a TLS-inspecting proxy's.
        pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.settings.ca_certificates.push(pem.into());
            self
        }

        /// Sends token requests to another identity platform base URL.
        pub fn login_url(mut self, url: impl Into<String>) -> Self {
            self.settings.login_url = Some(url.into());
            self
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_is_missing() {
        let e = Settings::new(Surface::DefenderXdr)
            .into_config()
            .unwrap_err();
        assert!(matches!(e, BuildError::MissingTenant));
        let mut s = Settings::new(Surface::DefenderXdr)
            .with_env(|k| (k != "AZURE_CLIENT_SECRET").then(|| "x".to_owned()));
        assert!(matches!(
            s.clone().into_config(),
            Err(BuildError::MissingSecret)
        ));
        s.external_tokens = true;
        s.base_url = Some("http://10.1.2.3".into());
        assert!(s
            .clone()
            .into_config()
            .unwrap_err()
            .to_string()
            .contains("use https"));
        s.base_url = Some("http://127.0.0.1:9".into());
        assert!(s.limits_spec("2021,hunting.calls=x/1m").is_err());
        assert!(s.into_config().is_ok());
    }
}
