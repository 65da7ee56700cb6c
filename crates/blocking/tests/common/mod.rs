//! Helpers shared by the integration tests: an emulator on its own runtime, clients
//! configured for it, and a server that holds a request.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use defender_blocking::{Client, ClientBuilder};
use defender_core::Limits;
use defender_emulator::{
    Emulator, EmulatorHandle, WindowMode, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT,
};

/// An emulator on its own runtime.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub emulator: EmulatorHandle,
}

impl Env {
    /// An emulator enforcing `limits` in `mode`.
    pub fn start(limits: Limits, mode: WindowMode) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let emulator = rt
            .block_on(
                Emulator::builder()
                    .limits(limits)
                    .window_mode(mode)
                    .incidents(20)
                    .seed(7)
                    .spawn(),
            )
            .expect("the emulator starts");
        Env { rt, emulator }
    }

    /// A builder for a client of the emulator's built-in app.
    pub fn builder(&self, limits: Limits) -> ClientBuilder {
        let base = self.emulator.base_url();
        Client::builder()
            .tenant(DEFAULT_TENANT)
            .client_id(DEFAULT_CLIENT_ID)
            .client_secret(DEFAULT_SECRET)
            .base_url(&base)
            .login_url(&base)
            .limits_value(limits)
    }

    /// API requests the emulator answered (tokens not counted).
    pub fn api_requests(&self) -> u64 {
        self.emulator.stats().keys.iter().map(|k| k.requests).sum()
    }
}

/// A server that holds the first incident request until a second one has been answered:
/// the first caller sits inside HTTP while the second must be sent by its own timer.
pub struct HoldServer {
    pub base: String,
    /// Incident ids, in the order their requests arrived.
    pub arrived: mpsc::Receiver<String>,
}

#[derive(Default)]
struct Hold {
    second_answered: Mutex<bool>,
    released: Condvar,
}

impl HoldServer {
    pub fn start() -> HoldServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a local port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let (tx, arrived) = mpsc::channel();
        let hold = Arc::new(Hold::default());
        let seen = Arc::new(AtomicU32::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, hold, seen) = (tx.clone(), hold.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, &tx, &hold, &seen));
            }
        });
        HoldServer { base, arrived }
    }
}

fn serve(stream: TcpStream, arrived: &mpsc::Sender<String>, hold: &Hold, seen: &AtomicU32) {
    let mut reader = BufReader::new(stream.try_clone().expect("a stream"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("a request line");
    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("a header");
        if header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    let (status, answer) = if path.ends_with("/oauth2/v2.0/token") {
        (
            200,
            r#"{"access_token":"held","expires_in":3599}"#.to_owned(),
        )
    } else {
        let id = path.rsplit('/').next().unwrap_or_default().to_owned();
        let _ = arrived.send(id.clone());
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            // The first: wait for the second to be answered (or give up, failing the test).
            let answered = hold.second_answered.lock().unwrap();
            let (answered, _) = hold
                .released
                .wait_timeout_while(answered, Duration::from_secs(20), |a| !*a)
                .unwrap();
            if *answered {
                (200, format!(r#"{{"incidentId":{id}}}"#))
            } else {
                (400, r#"{"error":{"code":"Held","message":"the second call never came while the first was held"}}"#.to_owned())
            }
        } else {
            (200, format!(r#"{{"incidentId":{id}}}"#))
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.flush();
    if status == 200 && seen.load(Ordering::SeqCst) >= 2 && !path.ends_with("/token") {
        *hold.second_answered.lock().unwrap() = true;
        hold.released.notify_all();
    }
}
