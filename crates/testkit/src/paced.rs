//! A one-purpose HTTP/1.1 server for the streaming scenarios: a token endpoint, and a
//! hunting endpoint that writes its body in two parts, so a test can see whether rows
//! reach the caller while the body is still arriving, and what a body broken halfway
//! does. One request per connection (`Connection: close`), plain std threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the hunting endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Writes the schema and `first` rows, then waits (up to 10 s) for
    /// [`PacedServer::release`], then writes `rest` more rows and the end.
    Gate {
        /// Rows in the first part.
        first: usize,
        /// Rows after the gate.
        rest: usize,
    },
    /// The first hunting request gets the schema and `first` rows, then the connection
    /// closes (its `Content-Length` promised `total` rows); later requests get all
    /// `total` rows.
    BreakAfter {
        /// Rows before the break.
        first: usize,
        /// Rows of the whole result.
        total: usize,
    },
}

#[derive(Debug)]
struct State {
    plan: Plan,
    hunts: AtomicUsize,
    released: AtomicBool,
    released_in_time: Mutex<Option<bool>>,
    stop: AtomicBool,
}

/// The server; stops when dropped.
#[derive(Debug)]
pub struct PacedServer {
    base_url: String,
    state: Arc<State>,
}

/// The body of a result of `total` rows (`N` = 0, 1, ...), cut after row `cut`: the two
/// parts.
pub fn body(total: usize, cut: usize) -> (Vec<u8>, Vec<u8>) {
    let head = r#"{"Stats":{"ExecutionTime":0.25},"Schema":[{"Name":"N","Type":"Int64"},{"Name":"Text","Type":"String"}],"Results":["#;
    let row = |i: usize| {
        format!(
            r#"{}{{"N":{i},"Text":"row {i}: {}"}}"#,
            if i == 0 { "" } else { "," },
            "x".repeat(200)
        )
    };
    let mut first = head.as_bytes().to_vec();
    for i in 0..cut.min(total) {
        first.extend_from_slice(row(i).as_bytes());
    }
    let mut rest = Vec::new();
    for i in cut.min(total)..total {
        rest.extend_from_slice(row(i).as_bytes());
    }
    rest.extend_from_slice(b"]}");
    (first, rest)
}

impl PacedServer {
    /// Starts the server on 127.0.0.1.
    pub fn start(plan: Plan) -> PacedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).expect("nonblocking");
        let base_url = format!("http://{}", listener.local_addr().expect("bound"));
        let state = Arc::new(State {
            plan,
            hunts: AtomicUsize::new(0),
            released: AtomicBool::new(false),
            released_in_time: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        PacedServer { base_url, state }
    }

    /// The base URL, for the API and the login endpoint.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Lets a gated body continue.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }

    /// With [`Plan::Gate`]: whether the body continued because of [`PacedServer::release`]
    /// (`Some(true)`) or because the gate timed out (`Some(false)`); `None` before.
    pub fn released_in_time(&self) -> Option<bool> {
        *self
            .state
            .released_in_time
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Hunting requests received.
    pub fn hunts(&self) -> usize {
        self.state.hunts.load(Ordering::SeqCst)
    }
}

impl Drop for PacedServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut request_body = vec![0u8; length];
    reader.read_exact(&mut request_body)?;
    let mut out = conn;
    let head = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        )
    };
    if request_line.contains("/oauth2/v2.0/token") {
        let token = br#"{"token_type":"Bearer","expires_in":3599,"access_token":"paced-token"}"#;
        out.write_all(head(token.len()).as_bytes())?;
        out.write_all(token)?;
        return out.flush();
    }
    let attempt = state.hunts.fetch_add(1, Ordering::SeqCst) + 1;
    match state.plan {
        Plan::Gate { first, rest } => {
            let (a, b) = body(first + rest, first);
            out.write_all(head(a.len() + b.len()).as_bytes())?;
            out.write_all(&a)?;
            out.flush()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !state.released.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            *state
                .released_in_time
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(state.released.load(Ordering::SeqCst));
            out.write_all(&b)?;
            out.flush()
        }
        Plan::BreakAfter { first, total } => {
            let (a, b) = body(total, first);
            out.write_all(head(a.len() + b.len()).as_bytes())?;
            out.write_all(&a)?;
            if attempt > 1 {
                out.write_all(&b)?;
            }
            out.flush()
            // Dropping the connection here cuts the body short on the first attempt.
        }
    }
}
