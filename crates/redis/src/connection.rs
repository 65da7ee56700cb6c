//! Where the store connects: one Redis (`redis://`, `rediss://`) or a Redis Cluster
//! (`redis+cluster://`, `rediss+cluster://`), with the password and the trusted roots of
//! the configuration.
//!
//! TLS is rustls (the clients' TLS stack) with the system's roots, plus
//! [`StoreConfig::extra_ca`] when given; the server's name is always checked (the redis
//! crate's `#insecure` is not compiled in, so a URL asking for it is refused).

use std::fmt;

use redis::{ConnectionLike, IntoConnectionInfo, RedisError, RedisResult};

use crate::{StoreConfig, StoreError};

/// The schemes of a cluster URL; the nodes follow, comma-separated.
const CLUSTER_SCHEMES: [(&str, &str); 2] =
    [("redis+cluster", "redis"), ("rediss+cluster", "rediss")];

/// How often the cluster client follows a `MOVED`/`ASK` or retries a node that is down
/// within one command, and how long it waits between tries: a failover must end a call
/// in bounded time (the store then backs off and falls back or fails, as configured),
/// never stall it.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 20;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 200;

/// A password or access key, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StorePassword(String);

impl StorePassword {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> StorePassword {
        StorePassword(secret.into())
    }

    /// The secret, to hand to Redis (`AUTH`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StorePassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorePassword(***)")
    }
}

/// A configured target, ready to connect.
pub(crate) enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Single(_) => "Target::Single",
            Target::Cluster(_) => "Target::Cluster",
        })
    }
}

/// A blocking connection to either kind of target.
pub(crate) enum SyncConn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConn {
    pub(crate) fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            SyncConn::Single(c) => c,
            SyncConn::Cluster(c) => c.as_mut(),
        }
    }
}

/// An async connection to either kind of target (both are cheap clones of a
/// multiplexed connection).
#[cfg(feature = "async")]
#[derive(Clone)]
pub(crate) enum AsyncConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

#[cfg(feature = "async")]
impl fmt::Debug for AsyncConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AsyncConn::Single(_) => "AsyncConn::Single",
            AsyncConn::Cluster(_) => "AsyncConn::Cluster",
        })
    }
}

#[cfg(feature = "async")]
impl redis::aio::ConnectionLike for AsyncConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AsyncConn::Single(c) => c.req_packed_command(cmd),
            AsyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AsyncConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            AsyncConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConn::Single(c) => c.get_db(),
            AsyncConn::Cluster(c) => c.get_db(),
        }
    }
}

/// The nodes of a cluster URL, each as a `redis://` or `rediss://` URL carrying the
/// user information; `None` when `url` is no cluster URL.
///
/// `redis+cluster://[user:password@]host:port[,host:port…][/]`: the user information
/// runs to the last `@`, as in [`crate::redact`]; a path other than `/` (a database) is
/// refused, as Redis Cluster has only database 0.
pub(crate) fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, &'static str>> {
    let (scheme, rest) = url.split_once("://")?;
    let (_, node_scheme) = CLUSTER_SCHEMES
        .iter()
        .find(|(s, _)| scheme.eq_ignore_ascii_case(s))?;
    let (userinfo, hosts) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let hosts = match hosts.split_once(['/', '?', '#']) {
        Some((h, tail)) if tail.is_empty() && hosts.ends_with('/') => h,
        Some(_) => {
            return Some(Err(
                "a cluster URL is redis+cluster://[user:password@]host:port[,host:port...] \
                 with no database, path or query (Redis Cluster has only database 0)",
            ))
        }
        None => hosts,
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match userinfo {
            Some(u) => format!("{node_scheme}://{u}@{h}"),
            None => format!("{node_scheme}://{h}"),
        })
        .collect();
    if nodes.is_empty() {
        return Some(Err(
            "a cluster URL names at least one node: redis+cluster://host:port[,host:port...]",
        ));
    }
    Some(Ok(nodes))
}

impl Target {
    /// Parses the configuration's URL, reads the extra CA; connects nothing.
    pub(crate) fn open(config: &StoreConfig) -> Result<Target, StoreError> {
        let invalid = |source: RedisError| StoreError::InvalidUrl {
            url: config.redacted_url(),
            source: crate::scrub(&config.url, source),
        };
        let no_tls = |scheme: &str| StoreError::Tls {
            url: config.redacted_url(),
            reason: format!("a CA was given but the URL has no TLS: use {scheme}"),
        };
        let password = config.password.as_ref().map(StorePassword::expose);
        if let Some(nodes) = cluster_nodes(&config.url) {
            let nodes = nodes.map_err(|msg| {
                invalid(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    msg,
                )))
            })?;
            let tls = nodes.first().is_some_and(|n| n.starts_with("rediss://"));
            if config.extra_ca.is_some() && !tls {
                return Err(no_tls("rediss+cluster://"));
            }
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS);
            // One command, with its redirects and retries, ends within this (async; the
            // blocking connection bounds each try by the response timeout).
            #[cfg(feature = "async")]
            {
                let overall = config.response_timeout * (CLUSTER_RETRIES + 1)
                    + std::time::Duration::from_millis(CLUSTER_MAX_RETRY_WAIT_MS) * CLUSTER_RETRIES;
                builder = builder.overall_response_timeout(Some(overall));
            }
            if let Some(pw) = password {
                builder = builder.password(pw);
            }
            if let Some(certs) = config.tls_certificates()? {
                builder = builder.certs(certs);
            }
            if tls {
                install_crypto_provider();
            }
            return builder
                .build()
                .map(|c| Target::Cluster(Box::new(c)))
                .map_err(invalid);
        }
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(invalid)?;
        if let Some(pw) = password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let tls = match info.addr() {
            redis::ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(invalid(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "#insecure (no certificate check) is not supported: trust the server's \
                     CA with --quota-store-ca / StoreConfig::extra_ca instead",
                ))))
            }
            redis::ConnectionAddr::TcpTls { .. } => true,
            _ => false,
        };
        if config.extra_ca.is_some() && !tls {
            return Err(no_tls("rediss://"));
        }
        if tls {
            install_crypto_provider();
        }
        let client = match config.tls_certificates()? {
            Some(certs) => {
                redis::Client::build_with_tls(info, certs).map_err(|e| StoreError::Tls {
                    url: config.redacted_url(),
                    reason: format!(
                        "the CA file could not be used ({}); give PEM certificates",
                        crate::scrub(&config.url, e)
                    ),
                })?
            }
            None => redis::Client::open(info).map_err(invalid)?,
        };
        Ok(Target::Single(Box::new(client)))
    }

    /// A blocking connection, with the configuration's timeouts.
    pub(crate) fn connect(&self, config: &StoreConfig) -> RedisResult<SyncConn> {
        match self {
            Target::Single(client) => {
                let conn = client.get_connection_with_timeout(config.connect_timeout)?;
                conn.set_read_timeout(Some(config.response_timeout))?;
                conn.set_write_timeout(Some(config.response_timeout))?;
                Ok(SyncConn::Single(conn))
            }
            Target::Cluster(client) => {
                let conn = client.get_connection()?;
                conn.set_read_timeout(Some(config.response_timeout))?;
                conn.set_write_timeout(Some(config.response_timeout))?;
                Ok(SyncConn::Cluster(Box::new(conn)))
            }
        }
    }

    /// An async connection, with the configuration's timeouts.
    #[cfg(feature = "async")]
    pub(crate) async fn connect_async(&self, config: &StoreConfig) -> RedisResult<AsyncConn> {
        match self {
            Target::Single(client) => client
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(config.connect_timeout))
                        .set_response_timeout(Some(config.response_timeout)),
                )
                .await
                .map(AsyncConn::Single),
            Target::Cluster(client) => client.get_async_connection().await.map(AsyncConn::Cluster),
        }
    }
}

/// rustls needs a process-wide crypto provider; the clients use ring, so install ring
/// unless the application installed one already (never a panic when a build enables
/// two providers).
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An Err means another thread installed one meanwhile: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The system's roots (as rustls-native-certs finds them) in PEM: the redis crate trusts
/// only the given roots when some are given, and an extra CA should add to the system's.
pub(crate) fn system_roots_pem() -> String {
    let found = rustls_native_certs::load_native_certs();
    let mut out = String::new();
    for cert in found.certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64(cert.as_ref());
        for line in b64.as_bytes().chunks(64) {
            // Base64 is ASCII.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `e` is a TLS handshake refused for the server's certificate (untrusted, or
/// for another name): a configuration error, not an outage.
pub(crate) fn is_certificate_error(e: &RedisError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)
                    | rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate)
            );
        }
        source = s.source();
    }
    let text = e.to_string();
    text.contains("invalid peer certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert_eq!(cluster_nodes("redis://h:1"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:1,b:2/").unwrap().unwrap(),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://:p@w@a:1, b:2")
                .unwrap()
                .unwrap(),
            ["rediss://:p@w@a:1", "rediss://:p@w@b:2"]
        );
        assert!(cluster_nodes("redis+cluster://a:1/2").unwrap().is_err());
        assert!(cluster_nodes("redis+cluster://,").unwrap().is_err());
        assert!(cluster_nodes("REDIS+CLUSTER://a:1").unwrap().is_ok());
    }

    #[test]
    fn base64_is_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn passwords_never_print() {
        let p = StorePassword::new("hunter2-key");
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
