//! Finding the Redis the shared-quota tests run against.
//!
//! Tests read `REDIS_URL` (default `redis://127.0.0.1:6379`). Without a Redis there they
//! print SKIPPED, unless `REDIS_REQUIRED` is set, which makes them fail instead (CI sets
//! it after making sure one answers).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Whether a Redis answers `PING` at `host:port`.
pub fn pings(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The `host:port` of a Redis URL (user, password and database dropped).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// The Redis URL when a Redis answers there; `None` (with a note) when none does and
/// `REDIS_REQUIRED` is not set; a panic when it is.
pub fn require_redis() -> Option<String> {
    let url = redis_url();
    if pings(&host_port(&url)) {
        return Some(url);
    }
    assert!(
        std::env::var_os("REDIS_REQUIRED").is_none(),
        "no Redis answers at {url} and REDIS_REQUIRED is set"
    );
    eprintln!("SKIPPED: no Redis at {url}; set REDIS_REQUIRED=1 to fail instead");
    None
}
