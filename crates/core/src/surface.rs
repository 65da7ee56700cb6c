//! The three API surfaces and the clouds they run in, as data.
//!
//! ```
//! use defender_core::surface::{Cloud, Endpoints, Surface};
//! let e = Endpoints::new(Surface::DefenderXdr, Cloud::GccHigh);
//! assert_eq!(e.api_base, "https://api-gov.security.microsoft.us");
//! assert_eq!(e.login_base, "https://login.microsoftonline.us");
//! assert_eq!(e.scope, "https://api-gov.security.microsoft.us/.default");
//! ```

use std::fmt;
use std::str::FromStr;

/// Which of Microsoft's APIs a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Surface {
    /// Defender XDR (formerly Microsoft 365 Defender): `api.security.microsoft.com`.
    DefenderXdr,
    /// Defender for Endpoint: `api.securitycenter.microsoft.com` (hunting only here).
    DefenderEndpoint,
    /// The Microsoft Graph security API: `graph.microsoft.com/v1.0/security`.
    Graph,
}

impl Surface {
    /// Every surface.
    pub const ALL: [Surface; 3] = [
        Surface::DefenderXdr,
        Surface::DefenderEndpoint,
        Surface::Graph,
    ];

    /// The short name used on the command line (`xdr`, `mde`, `graph`).
    pub fn name(self) -> &'static str {
        match self {
            Surface::DefenderXdr => "xdr",
            Surface::DefenderEndpoint => "mde",
            Surface::Graph => "graph",
        }
    }

    /// The path of the advanced-hunting endpoint.
    pub fn hunting_path(self) -> &'static str {
        match self {
            Surface::DefenderXdr => "/api/advancedhunting/run",
            Surface::DefenderEndpoint => "/api/advancedqueries/run",
            Surface::Graph => "/v1.0/security/runHuntingQuery",
        }
    }

    /// The path of the incidents collection, where the surface has one.
    pub fn incidents_path(self) -> Option<&'static str> {
        match self {
            Surface::DefenderXdr => Some("/api/incidents"),
            Surface::DefenderEndpoint => None,
            Surface::Graph => Some("/v1.0/security/incidents"),
        }
    }

    /// The path of the alerts collection: Graph's `alerts_v2`, Defender's `/api/alerts`
    /// (Defender for Endpoint's API, also served on the Defender XDR host).
    pub fn alerts_path(self) -> &'static str {
        match self {
            Surface::DefenderXdr | Surface::DefenderEndpoint => "/api/alerts",
            Surface::Graph => "/v1.0/security/alerts_v2",
        }
    }

    /// The preset whose limits this surface documents today.
    pub fn preset(self) -> crate::limits::Preset {
        match self {
            Surface::DefenderXdr => crate::limits::Preset::DefenderXdr,
            Surface::DefenderEndpoint => crate::limits::Preset::DefenderEndpoint,
            Surface::Graph => crate::limits::Preset::Graph,
        }
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Surface::DefenderXdr => "Defender XDR",
            Surface::DefenderEndpoint => "Defender for Endpoint",
            Surface::Graph => "Microsoft Graph",
        })
    }
}

impl FromStr for Surface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "xdr" | "defender-xdr" | "m365d" => Ok(Surface::DefenderXdr),
            "mde" | "endpoint" | "defender-endpoint" => Ok(Surface::DefenderEndpoint),
            "graph" => Ok(Surface::Graph),
            _ => Err(format!("unknown API `{s}` (use xdr, mde or graph)")),
        }
    }
}

/// The national clouds (DD defender-xdr/usgov.md, defender-endpoint/gov.md, GD
/// concepts/deployments.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Cloud {
    /// The commercial cloud.
    #[default]
    Global,
    /// US Government Community Cloud.
    Gcc,
    /// US Government Community Cloud High.
    GccHigh,
    /// US Department of Defense.
    Dod,
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "global" | "public" | "commercial" => Ok(Cloud::Global),
            "gcc" => Ok(Cloud::Gcc),
            "gcc-high" | "gcchigh" => Ok(Cloud::GccHigh),
            "dod" => Ok(Cloud::Dod),
            _ => Err(format!(
                "unknown cloud `{s}` (use global, gcc, gcc-high or dod)"
            )),
        }
    }
}

/// Where requests and token requests go for one surface in one cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The API's base URL, without a trailing slash.
    pub api_base: String,
    /// The identity platform's base URL, without a trailing slash.
    pub login_base: String,
    /// The OAuth scope of client-credential tokens for this API.
    pub scope: String,
}

impl Endpoints {
    /// The documented endpoints of `surface` in `cloud`.
    pub fn new(surface: Surface, cloud: Cloud) -> Endpoints {
        let login = match cloud {
            Cloud::Global | Cloud::Gcc => "https://login.microsoftonline.com",
            Cloud::GccHigh | Cloud::Dod => "https://login.microsoftonline.us",
        };
        let api = match (surface, cloud) {
            (Surface::DefenderXdr, Cloud::Global) => "https://api.security.microsoft.com",
            (Surface::DefenderXdr, Cloud::Gcc) => "https://api-gcc.security.microsoft.us",
            (Surface::DefenderXdr, Cloud::GccHigh | Cloud::Dod) => {
                "https://api-gov.security.microsoft.us"
            }
            (Surface::DefenderEndpoint, Cloud::Global) => {
                "https://api.securitycenter.microsoft.com"
            }
            (Surface::DefenderEndpoint, Cloud::Gcc) => {
                "https://api-gcc.securitycenter.microsoft.us"
            }
            (Surface::DefenderEndpoint, Cloud::GccHigh | Cloud::Dod) => {
                "https://api-gov.securitycenter.microsoft.us"
            }
            (Surface::Graph, Cloud::Global | Cloud::Gcc) => "https://graph.microsoft.com",
            (Surface::Graph, Cloud::GccHigh) => "https://graph.microsoft.us",
            (Surface::Graph, Cloud::Dod) => "https://dod-graph.microsoft.us",
        };
        Endpoints {
            api_base: api.to_owned(),
            login_base: login.to_owned(),
            scope: format!("{api}/.default"),
        }
    }

    /// A regional Defender XDR host such as `eu.api.security.microsoft.com`; the token
    /// scope stays the global one.
    pub fn regional(region: &str) -> Endpoints {
        let mut e = Endpoints::new(Surface::DefenderXdr, Cloud::Global);
        e.api_base = format!(
            "https://{}.api.security.microsoft.com",
            region.trim().to_ascii_lowercase()
        );
        e
    }

    /// Points the API at another base URL (a proxy, the emulator), keeping the scope.
    pub fn with_api_base(mut self, base: &str) -> Endpoints {
        self.api_base = base.trim_end_matches('/').to_owned();
        self
    }

    /// Points token requests at another identity platform base URL.
    pub fn with_login_base(mut self, base: &str) -> Endpoints {
        self.login_base = base.trim_end_matches('/').to_owned();
        self
    }

    /// Checks that both URLs are HTTPS, or plain HTTP on a loopback address (for the
    /// emulator), so a token is never sent in the clear over a network.
    pub fn check_secure(&self) -> Result<(), crate::Error> {
        for url in [&self.api_base, &self.login_base] {
            if !is_secure_url(url) {
                return Err(crate::Error::InsecureUrl { url: url.clone() });
            }
        }
        Ok(())
    }
}

/// HTTPS, or plain HTTP to `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_secure_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => uri.host().is_some(),
        Some("http") => match uri.host() {
            Some(host) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .parse::<std::net::IpAddr>()
                        .map(|ip| ip.is_loopback())
                        .unwrap_or(false)
            }
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_surface_in_every_cloud_is_https() {
        for s in Surface::ALL {
            for c in [Cloud::Global, Cloud::Gcc, Cloud::GccHigh, Cloud::Dod] {
                let e = Endpoints::new(s, c);
                assert!(e.check_secure().is_ok());
                assert!(e.scope.ends_with("/.default"));
            }
        }
        assert_eq!(
            Endpoints::new(Surface::Graph, Cloud::Dod).api_base,
            "https://dod-graph.microsoft.us"
        );
        assert_eq!(
            Endpoints::regional("EU").api_base,
            "https://eu.api.security.microsoft.com"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(is_secure_url("http://127.0.0.1:8400"));
        assert!(is_secure_url("http://127.5.0.1"));
        assert!(is_secure_url("http://localhost:1"));
        assert!(is_secure_url("http://[::1]:80"));
        assert!(!is_secure_url("http://10.0.0.1"));
        assert!(!is_secure_url("http://example.com"));
        assert!(!is_secure_url("ftp://127.0.0.1"));
        assert!(!is_secure_url("not a url"));
    }
}
