//! A one-purpose HTTP/1.1 server for the streaming scenarios: a token endpoint, and a
//! hunting endpoint whose body is `rows` rows of [`ROW_BYTES`] bytes, written as fast as
//! the socket takes them and counted, so a test can see how far ahead of its consumer a
//! client reads. One request per connection (`Connection: close`), plain std threads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The length of every row of the body, its comma included.
pub const ROW_BYTES: usize = 256;

/// The server; its threads end with the process.
#[derive(Debug)]
pub struct Firehose {
    base_url: String,
    written: Arc<AtomicU64>,
    /// For each hunting request: whether its whole body was written.
    ended: mpsc::Receiver<bool>,
}

impl Firehose {
    /// Starts the server on 127.0.0.1. With `cut_first`, the first hunting body ends
    /// right after the schema (its `Content-Length` promised all rows); later ones are
    /// whole.
    pub fn start(rows: u64, cut_first: bool) -> Firehose {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let base_url = format!("http://{}", listener.local_addr().expect("an address"));
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let (tx, ended) = mpsc::channel();
        let hunts = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (counter, tx, hunts) = (counter.clone(), tx.clone(), hunts.clone());
                std::thread::spawn(move || {
                    let cut = cut_first.then_some(&*hunts);
                    match answer(conn, rows, &counter, cut) {
                        Ok(false) => {}
                        Ok(true) => {
                            let _ = tx.send(true);
                        }
                        Err(_) => {
                            let _ = tx.send(false);
                        }
                    }
                });
            }
        });
        Firehose {
            base_url,
            written,
            ended,
        }
    }

    /// Its base URL (API and login).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The bytes of rows written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Whether the next hunting body to end was written whole (waits up to 60 s for it).
    pub fn next_ended(&self) -> bool {
        self.ended
            .recv_timeout(Duration::from_secs(60))
            .expect("a hunt's answer ended")
    }
}

/// Ok(true) after a whole hunting body, Ok(false) after a token.
fn answer(
    conn: TcpStream,
    rows: u64,
    written: &AtomicU64,
    cut: Option<&AtomicU64>,
) -> std::io::Result<bool> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut request = vec![0; length];
    reader.read_exact(&mut request)?;
    let mut out = conn;
    let head = |len: u64| {
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
    };
    if line.contains("/oauth2/v2.0/token") {
        let token = br#"{"access_token":"firehose","expires_in":3599}"#;
        out.write_all(head(token.len() as u64).as_bytes())?;
        out.write_all(token)?;
        return Ok(false);
    }
    let start =
        br#"{"Schema":[{"Name":"N","Type":"Int64"},{"Name":"Text","Type":"String"}],"Results":["#;
    let end = b"]}";
    // Every row is ROW_BYTES long: `{"N":<i, padded>,"Text":"xx..."}` and a comma.
    let row = |i: u64| {
        let text = "x".repeat(ROW_BYTES - 29);
        let mut r = format!(r#"{{"N":{i:<12},"Text":"{text}"}}"#);
        r.push(if i + 1 == rows { ' ' } else { ',' });
        assert_eq!(r.len(), ROW_BYTES);
        r
    };
    let total = start.len() as u64 + rows * ROW_BYTES as u64 + end.len() as u64;
    out.write_all(head(total).as_bytes())?;
    out.write_all(start)?;
    if cut.is_some_and(|hunts| hunts.fetch_add(1, Ordering::SeqCst) == 0) {
        return Err(std::io::ErrorKind::ConnectionAborted.into());
    }
    for i in 0..rows {
        out.write_all(row(i).as_bytes())?;
        written.fetch_add(ROW_BYTES as u64, Ordering::SeqCst);
    }
    out.write_all(end)?;
    Ok(true)
}
