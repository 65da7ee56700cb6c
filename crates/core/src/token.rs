//! Client-credential tokens from the Microsoft identity platform (v2 endpoint).
//!
//! [`Secret`] holds the client secret and tokens: its `Debug` and `Display` never show
//! the value, so neither can reach a log or an error by accident.
//!
//! ```
//! use defender_core::token::{ClientCredentials, Secret};
//! let creds = ClientCredentials::new("contoso", "app-id", Secret::new("s3cr3t"));
//! assert!(!format!("{creds:?}").contains("s3cr3t"));
//! let req = creds.token_request("https://login.microsoftonline.com", "https://api.security.microsoft.com/.default");
//! assert_eq!(req.uri(), "https://login.microsoftonline.com/contoso/oauth2/v2.0/token");
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{ApiError, Error};
use crate::incidents::percent_encode;

/// A secret value (client secret, access token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An app registration's client credentials.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// The tenant (directory) id or domain.
    pub tenant: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    pub secret: Secret,
}

impl ClientCredentials {
    /// Credentials for `client_id` in `tenant`.
    pub fn new(tenant: impl Into<String>, client_id: impl Into<String>, secret: Secret) -> Self {
        ClientCredentials {
            tenant: tenant.into(),
            client_id: client_id.into(),
            secret,
        }
    }

    /// The v2 token request: `POST {login}/{tenant}/oauth2/v2.0/token`.
    pub fn token_request(&self, login_base: &str, scope: &str) -> http::Request<Vec<u8>> {
        let body = format!(
            "client_id={}&client_secret={}&grant_type=client_credentials&scope={}",
            percent_encode(&self.client_id),
            percent_encode(self.secret.expose()),
            percent_encode(scope)
        );
        let uri = format!(
            "{}/{}/oauth2/v2.0/token",
            login_base.trim_end_matches('/'),
            percent_encode(&self.tenant)
        );
        http::Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body.into_bytes())
            .unwrap_or_else(|_| http::Request::new(Vec::new())) // only an invalid URI fails; the engine checks URLs first
    }
}

/// A bearer token and when it expires.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// When it expires, on the monotonic clock.
    pub expires_at: Instant,
    /// When it was obtained.
    pub obtained_at: Instant,
}

impl AccessToken {
    /// A token valid until `expires_at`.
    pub fn new(token: Secret, obtained_at: Instant, expires_at: Instant) -> AccessToken {
        AccessToken {
            token,
            expires_at,
            obtained_at,
        }
    }

    /// When to fetch the next one: five minutes before expiry, or at 90% of a shorter
    /// lifetime, so calls never go out with a token about to lapse (every token timing
    /// rule lives in `engine`'s token cache: see
    /// [`TOKEN_REFRESH_AHEAD`](crate::engine::TOKEN_REFRESH_AHEAD)).
    pub fn refresh_at(&self) -> Instant {
        crate::engine::token_refresh_at(self.obtained_at, self.expires_at)
    }

    /// Usable at `now` (not yet at its refresh time).
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Reads the token endpoint's response. A refusal becomes [`Error::Auth`] with the
/// identity platform's code and description; a 5xx becomes [`Error::Server`].
pub fn parse_token_response(status: u16, body: &[u8], now: Instant) -> Result<AccessToken, Error> {
    if (200..300).contains(&status) {
        let parsed: TokenBody = serde_json::from_slice(body).map_err(|e| Error::Decode {
            what: "token",
            len: body.len(),
            message: e.to_string(),
        })?;
        let secs = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(3599)
        .min(86_400 * 7);
        if parsed.access_token.is_empty() {
            return Err(Error::Decode {
                what: "token",
                len: body.len(),
                message: "empty access_token".into(),
            });
        }
        return Ok(AccessToken::new(
            Secret::new(parsed.access_token),
            now,
            now + Duration::from_secs(secs),
        ));
    }
    let error = match serde_json::from_slice::<TokenErrorBody>(body) {
        Ok(TokenErrorBody {
            error: Some(serde_json::Value::String(code)),
            error_description,
        }) => ApiError {
            code,
            message: error_description.unwrap_or_default(),
            target: None,
            ..ApiError::default()
        },
        _ => ApiError::from_body(body).unwrap_or_else(|| ApiError {
            code: status.to_string(),
            message: "the token endpoint refused the request".into(),
            target: None,
            ..ApiError::default()
        }),
    };
    if status >= 500 || status == 429 || status == 408 {
        Err(Error::Server {
            status,
            attempts: 1,
            error,
            retry_after: None,
        })
    } else {
        Err(Error::Auth(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // tests need one real instant to count from
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn request_is_form_encoded() {
        let c = ClientCredentials::new("t", "id", Secret::new("a&b=c"));
        let req = c.token_request("https://login.microsoftonline.com/", "https://x/.default");
        let body = String::from_utf8(req.body().clone()).unwrap();
        assert_eq!(body, "client_id=id&client_secret=a%26b%3Dc&grant_type=client_credentials&scope=https%3A%2F%2Fx%2F.default");
        assert_eq!(req.method(), http::Method::POST);
    }

    #[test]
    fn responses() {
        let now = t0();
        let tok = parse_token_response(
            200,
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":0,"access_token":"eyJ"}"#,
            now,
        )
        .unwrap();
        assert_eq!(tok.expires_at, now + Duration::from_secs(3599));
        assert_eq!(tok.refresh_at(), now + Duration::from_secs(3299));
        assert!(!format!("{tok:?}").contains("eyJ"));
        let short =
            parse_token_response(200, br#"{"expires_in":"60","access_token":"x"}"#, now).unwrap();
        assert_eq!(short.refresh_at(), now + Duration::from_secs(54));
        match parse_token_response(401, br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#, now) {
            Err(Error::Auth(e)) => assert_eq!(e.code, "invalid_client"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_token_response(503, b"", now),
            Err(Error::Server { status: 503, .. })
        ));
        assert!(matches!(
            parse_token_response(200, b"{", now),
            Err(Error::Decode { .. })
        ));
    }
}
