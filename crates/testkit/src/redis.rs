//! Finding the Redis the shared-quota tests run against.
//!
//! Tests read `REDIS_URL` (default `redis://127.0.0.1:6379`). Without a Redis there they
//! print SKIPPED, unless `REDIS_REQUIRED` is set, which makes them fail instead (CI sets
//! it after making sure one answers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// A free TCP port on 127.0.0.1; with `bus`, one whose cluster bus port (+10000) is free
/// too.
pub fn free_port(bus: bool) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !bus || (port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()) {
            return port;
        }
    }
    panic!("no free port with a free cluster bus port");
}

/// A directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory.
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "defender-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a server certificate it signed, made with the `openssl` command (installed
/// by `.ci/redis`).
#[derive(Debug)]
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// A fresh CA, and a certificate for `names` (DNS names, or IP addresses) signed by it.
    pub fn generate(names: &[&str]) -> TestCerts {
        let dir = TempDir::new("certs");
        let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
        let san = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(
            dir.path().join("ext.cnf"),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n"
            ),
        )
        .expect("ext.cnf");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("the openssl command runs (.ci/redis installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=defender-test-ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=defender-test-server",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("server.crt"),
        ]);
        TestCerts { dir }
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server's key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// How to start a [`RedisServer`].
#[derive(Debug, Default, Clone)]
pub struct ServerOptions<'a> {
    /// Serve TLS only (the plain port off), with these certificates.
    pub tls: Option<&'a TestCerts>,
    /// `requirepass`.
    pub password: Option<&'a str>,
    /// A cluster node, its state in this directory.
    pub cluster_dir: Option<&'a Path>,
    /// The port (default a free one).
    pub port: Option<u16>,
}

/// A private `redis-server` on a port of 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// Its port (the TLS port with TLS).
    pub port: u16,
}

impl RedisServer {
    /// Starts one and waits until it accepts connections; `None` (with a note) when
    /// `redis-server` is not installed and `REDIS_REQUIRED` is not set.
    pub fn start(opts: &ServerOptions<'_>) -> Option<RedisServer> {
        let port = opts
            .port
            .unwrap_or_else(|| free_port(opts.cluster_dir.is_some()));
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match opts.tls {
            Some(certs) => {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(certs.cert())
                    .arg("--tls-key-file")
                    .arg(certs.key())
                    .arg("--tls-ca-cert-file")
                    .arg(certs.ca())
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.args(["--port", &port.to_string()]);
            }
        }
        if let Some(pw) = opts.password {
            cmd.args(["--requirepass", pw]);
        }
        if let Some(dir) = opts.cluster_dir {
            if opts.tls.is_some() {
                cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
            }
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(dir);
        }
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("REDIS_REQUIRED").is_none(),
                    "redis-server could not start ({e}) and REDIS_REQUIRED is set"
                );
                eprintln!("SKIPPED: redis-server could not start: {e}");
                return None;
            }
        };
        // Drain its log so it never blocks on a full pipe.
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
        }
        let server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = format!("127.0.0.1:{port}");
        loop {
            let up = if opts.tls.is_some() || opts.password.is_some() {
                TcpStream::connect(&addr).is_ok()
            } else {
                pings(&addr)
            };
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server on {port} starts");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it was not stopped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills it and waits until the port is closed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of private servers on 127.0.0.1: `primaries` primaries, each with
/// `replicas` replicas, made with `redis-cli --cluster create`; killed on drop.
#[derive(Debug)]
pub struct TestCluster {
    /// Every node.
    pub nodes: Vec<RedisServer>,
    /// The CA of the nodes' certificates, with TLS (clients, replication and the bus).
    ca: Option<PathBuf>,
    _dir: TempDir,
}

impl TestCluster {
    /// Starts the nodes, creates the cluster, and waits until every node says
    /// `cluster_state:ok`. `None` as [`RedisServer::start`].
    pub fn start(primaries: usize, replicas: usize) -> Option<TestCluster> {
        TestCluster::start_with(primaries, replicas, None)
    }

    /// [`TestCluster::start`], with TLS only when `tls` is given (its certificate must
    /// name 127.0.0.1: the nodes announce that address).
    pub fn start_with(
        primaries: usize,
        replicas: usize,
        tls: Option<&TestCerts>,
    ) -> Option<TestCluster> {
        let dir = TempDir::new("cluster");
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(RedisServer::start(&ServerOptions {
                cluster_dir: Some(dir.path()),
                tls,
                ..Default::default()
            })?);
        }
        let mut cli = Command::new("redis-cli");
        if let Some(certs) = tls {
            cli.arg("--tls").arg("--cacert").arg(certs.ca());
        }
        let mut child = cli
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        // It waits for the nodes to join; with a bus that cannot connect, for ever.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-cli --cluster create did not end within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut log);
        }
        assert!(status.success(), "redis-cli --cluster create: {log}");
        let cluster = TestCluster {
            nodes,
            ca: tls.map(TestCerts::ca),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &cluster.nodes {
            while !cluster
                .query(n.port, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster becomes ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Every node knows every replica (so a failover can be asked of any of them).
        let want = primaries * replicas;
        for n in &cluster.nodes {
            while cluster
                .query(n.port, &["CLUSTER", "NODES"])
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|flags| flags.contains("slave"))
                })
                .count()
                < want
            {
                assert!(Instant::now() < deadline, "every node sees every replica");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(cluster)
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` (every node).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", nodes.join(","))
    }

    /// One command to the node on `port` (not following redirects), its reply as text.
    pub fn query(&self, port: u16, args: &[&str]) -> String {
        let run = || -> defender_redis::redis::RedisResult<String> {
            use defender_redis::redis::{Client, TlsCertificates};
            let client = match &self.ca {
                Some(ca) => Client::build_with_tls(
                    format!("rediss://127.0.0.1:{port}"),
                    TlsCertificates {
                        client_tls: None,
                        root_cert: Some(std::fs::read(ca)?),
                    },
                )?,
                None => Client::open(format!("redis://127.0.0.1:{port}"))?,
            };
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut cmd = defender_redis::redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            let v: defender_redis::redis::Value = cmd.query(&mut conn)?;
            Ok(text(&v))
        };
        run().unwrap_or_else(|e| format!("error: {e}"))
    }

    /// The port of the first node still running.
    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a node runs")
            .port
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        let port = self.live_port();
        self.query(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The port of the primary serving `slot`, and of one of its replicas, from
    /// `CLUSTER NODES`.
    pub fn owner(&self, slot: u16) -> (u16, Option<u16>) {
        let nodes = self.query(self.live_port(), &["CLUSTER", "NODES"]);
        let port_of = |addr: &str| -> u16 {
            addr.split(['@', ','])
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .expect("a node address")
        };
        let mut primary = None;
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") {
                continue;
            }
            let serves = f[8..].iter().any(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                primary = Some((f[0].to_owned(), port_of(f[1])));
            }
        }
        let (id, port) = primary.expect("a primary serves the slot");
        let replica = nodes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].contains("slave") && f[3] == id)
            .map(|f| port_of(f[1]));
        (port, replica)
    }
}

/// A reply as text: bulk strings joined by newlines, numbers as digits.
fn text(v: &defender_redis::redis::Value) -> String {
    use defender_redis::redis::Value;
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}
