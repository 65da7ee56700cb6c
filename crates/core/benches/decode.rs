//! Decoding a 100,000-row, 20-column hunting response (generated here: timestamps,
//! GUID-like ids, hashes, Windows paths and command lines with backslashes and quotes,
//! numbers, booleans, some nulls and nested cells), three ways in the same run:
//!
//! 1. `serde_json::from_slice::<serde_json::Value>`: the baseline, a tree of the whole
//!    document;
//! 2. `HuntResponse::from_slice`: the typed decoder (every row kept);
//! 3. the streaming decoder, handing out one row at a time (each dropped): over the whole
//!    body (`decode_streaming`) and fed 64 KiB at a time, as from a socket (`RowDecoder`).
//!
//! Before the Criterion groups, a report prints the median time, throughput and peak
//! heap of each (peak measured by a counting global allocator, over what each path
//! allocates beyond the body itself) and the ratios against the baseline.
//!
//! `cargo bench -p defender-core --bench decode`

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use defender_core::hunting::HuntResponse;
use defender_core::stream::{decode_streaming, DecodeEvent, RowDecoder};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const ROWS: usize = 100_000;
const CHUNK: usize = 64 * 1024;

/// xorshift64*: a fixed body on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn hex(&mut self, out: &mut String, digits: usize) {
        for _ in 0..digits {
            let d = self.below(16) as u32;
            out.push(char::from_digit(d, 16).unwrap_or('0'));
        }
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

const COLUMNS: [(&str, &str); 20] = [
    ("Timestamp", "DateTime"),
    ("DeviceId", "String"),
    ("DeviceName", "String"),
    ("ActionType", "String"),
    ("FileName", "String"),
    ("FolderPath", "String"),
    ("SHA1", "String"),
    ("SHA256", "String"),
    ("MD5", "String"),
    ("FileSize", "Int64"),
    ("ProcessId", "Int64"),
    ("ProcessCommandLine", "String"),
    ("ProcessCreationTime", "DateTime"),
    ("AccountDomain", "String"),
    ("AccountName", "String"),
    ("AccountSid", "String"),
    ("InitiatingProcessFileName", "String"),
    ("IsProcessRemoteSession", "Boolean"),
    ("AdditionalFields", "Dynamic"),
    ("ReportId", "Int64"),
];

fn timestamp(rng: &mut Rng, out: &mut String) {
    let _ = write!(
        out,
        "\"2024-02-{:02}T{:02}:{:02}:{:02}.{:07}Z\"",
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(10_000_000)
    );
}

/// A Defender XDR response of `rows` rows, Stats first.
fn body(rows: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let files = [
        "conhost.exe",
        "powershell.exe",
        "svchost.exe",
        "chrome.exe",
        "7z.exe",
        "rundll32.exe",
    ];
    let actions = [
        "ProcessCreated",
        "FileCreated",
        "ConnectionSuccess",
        "RegistryValueSet",
    ];
    let mut out = String::with_capacity(rows * 1100 + 4096);
    out.push_str(
        r#"{"Stats":{"ExecutionTime":4.621215,"resource_usage":{"cache":{"memory":{"hits":0,"misses":0,"total":0},"disk":{}},"cpu":{"user":"00:00:19.0468750","kernel":"00:00:00.0156250","total cpu":"00:00:19.0625000"},"memory":{"peak_per_node":236822432}},"dataset_statistics":[{"table_row_count":100000,"table_size":102}]},"Schema":["#,
    );
    for (i, (name, kind)) in COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"Name":"{name}","Type":"{kind}"}}"#);
    }
    out.push_str(r#"],"Results":["#);
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        let file = rng.pick(&files);
        out.push_str(r#"{"Timestamp":"#);
        timestamp(&mut rng, &mut out);
        out.push_str(r#","DeviceId":""#);
        rng.hex(&mut out, 40);
        let _ = write!(
            out,
            r#"","DeviceName":"ws-{:05}.corp.contoso.com","ActionType":"{}","FileName":"{file}","FolderPath":"#,
            rng.below(100_000),
            rng.pick(&actions)
        );
        if rng.below(2) == 0 {
            let _ = write!(out, r#""C:\\Windows\\System32\\{file}""#);
        } else {
            let _ = write!(
                out,
                r#""C:\\Users\\user{}\\AppData\\Local\\Temp\\{{{:08X}}}\\{file}""#,
                rng.below(500),
                rng.next() as u32
            );
        }
        out.push_str(r#","SHA1":""#);
        rng.hex(&mut out, 40);
        out.push_str(r#"","SHA256":"#);
        if rng.below(10) == 0 {
            out.push_str("null");
        } else {
            out.push('"');
            rng.hex(&mut out, 64);
            out.push('"');
        }
        out.push_str(r#","MD5":""#);
        rng.hex(&mut out, 32);
        let _ = write!(
            out,
            r#"","FileSize":{},"ProcessId":{},"ProcessCommandLine":"\"{file}\" -NoProfile -Command \"Get-Item 'C:\\Temp\\x{}' | Out-File \\\"C:\\Temp\\{}.log\\\"\"","ProcessCreationTime":"#,
            rng.below(100_000_000),
            rng.below(65_536),
            rng.below(1000),
            rng.below(1000)
        );
        timestamp(&mut rng, &mut out);
        let _ = write!(
            out,
            r#","AccountDomain":"contoso","AccountName":"user{}","AccountSid":"S-1-5-21-{}-{}-{}-{}","InitiatingProcessFileName":"#,
            rng.below(500),
            rng.below(4_000_000_000),
            rng.below(4_000_000_000),
            rng.below(4_000_000_000),
            1000 + rng.below(9000)
        );
        if rng.below(5) == 0 {
            out.push_str("null");
        } else {
            let _ = write!(out, r#""{}""#, rng.pick(&files));
        }
        let _ = write!(
            out,
            r#","IsProcessRemoteSession":{},"AdditionalFields":"#,
            rng.below(2) == 0
        );
        if rng.below(3) == 0 {
            let _ = write!(
                out,
                r#"{{"Command":"Invoke-WebRequest","Count":{},"Tags":["a","b"]}}"#,
                rng.below(100)
            );
        } else {
            out.push_str("null");
        }
        let _ = write!(out, r#","ReportId":{}}}"#, rng.below(1_000_000));
    }
    out.push_str("]}");
    out.into_bytes()
}

fn value_path(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(body).expect("valid body")
}

fn typed_path(body: &[u8]) -> HuntResponse {
    HuntResponse::from_slice(body).expect("valid body")
}

fn stream_whole(body: &[u8]) -> u64 {
    let (_, _, rows) = decode_streaming(body, |row| drop(black_box(row))).expect("valid body");
    rows
}

fn stream_chunked(body: &[u8]) -> u64 {
    let mut dec = RowDecoder::new();
    let mut rows = 0;
    for chunk in body.chunks(CHUNK) {
        dec.feed(chunk);
        while let Some(event) = dec.poll().expect("valid body") {
            if let DecodeEvent::Row(row) = event {
                drop(black_box(row));
                rows += 1;
            }
        }
    }
    dec.finish().expect("complete body");
    rows
}

type Path = (&'static str, fn(&[u8]));

const PATHS: [Path; 4] = [
    ("serde_json::Value (baseline)", |b| {
        drop(black_box(value_path(b)))
    }),
    ("HuntResponse::from_slice", |b| {
        drop(black_box(typed_path(b)))
    }),
    ("stream: decode_streaming", |b| {
        black_box(stream_whole(b));
    }),
    ("stream: RowDecoder, 64 KiB chunks", |b| {
        black_box(stream_chunked(b));
    }),
];

/// Peak heap allocated by `f` beyond what was live before it.
fn peak_of(f: impl FnOnce()) -> usize {
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    f();
    ALLOC.peak_usage().saturating_sub(before)
}

#[allow(clippy::disallowed_methods)] // a bench times with the real clock
fn time_of(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Median times (interleaved rounds), peaks and ratios, printed as a table.
fn report(body: &[u8], rounds: usize) {
    let mb = body.len() as f64 / 1e6;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); PATHS.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in PATHS.iter().enumerate() {
            times[i].push(time_of(|| f(body)));
        }
    }
    let peaks: Vec<usize> = PATHS.iter().map(|(_, f)| peak_of(|| f(body))).collect();
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    println!(
        "\ndecoding a {}-row, {}-column response: {:.1} MB, median of {rounds} interleaved rounds",
        body_rows(body),
        COLUMNS.len(),
        mb
    );
    println!(
        "| path | median | throughput | vs baseline | peak heap | vs baseline |\n|---|---|---|---|---|---|"
    );
    for (i, (name, _)) in PATHS.iter().enumerate() {
        let secs = medians[i].as_secs_f64();
        println!(
            "| {name} | {:.0} ms | {:.0} MB/s | {:.2}x | {:.2} MiB | {:.4}x (1/{:.0}) |",
            secs * 1e3,
            mb / secs,
            medians[0].as_secs_f64() / secs,
            peaks[i] as f64 / (1024.0 * 1024.0),
            peaks[i] as f64 / peaks[0] as f64,
            peaks[0] as f64 / peaks[i].max(1) as f64,
        );
    }
    println!();
}

fn body_rows(body: &[u8]) -> u64 {
    stream_whole(body)
}

fn benches(c: &mut Criterion, body: &[u8]) {
    let mut group = c.benchmark_group("decode 100k rows");
    group
        .throughput(Throughput::Bytes(body.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (name, f) in PATHS {
        group.bench_function(name, |b| b.iter(|| f(black_box(body))));
    }
    group.finish();
}

fn main() {
    // `cargo test --benches` / `--all-targets` runs this with `--test`: a small body, once.
    let test_mode = std::env::args().any(|a| a == "--test");
    let body = body(if test_mode { 1_000 } else { ROWS });
    report(&body, if test_mode { 1 } else { 7 });
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &body);
    c.final_summary();
}
