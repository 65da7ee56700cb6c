//! Schema-driven generation: every table of `schema.txt`, column by column.
//!
//! Each row of a table gets a [`Ctx`] (its device, account, the process acting and the
//! file acted on, its addresses, the mail or alert it belongs to); every column is then
//! a function of the contexts ([`values`]), so the same device, account, process id,
//! hash or message id shows up in every table that has a column for it. The seven
//! tables the emulator had before keep their hand-tuned generators for the columns they
//! produced; their other documented columns come from here, from contexts derived from
//! those rows.

use std::collections::HashMap;
use std::sync::Arc;

use super::{fnv, ColumnData, Rng, Table, World, PROCESSES};
use crate::value::{DataType, Value, TICKS_PER_DAY, TICKS_PER_SEC};

/// The schema description (see the comment at its top).
pub(crate) const SCHEMA: &str = include_str!("../schema.txt");

/// One table of the schema.
#[derive(Debug, Clone)]
pub(crate) struct TableSpec {
    pub name: String,
    pub cols: Vec<(String, DataType)>,
}

fn type_of(word: &str) -> DataType {
    match word {
        "datetime" => DataType::DateTime,
        "long" => DataType::Long,
        "int" => DataType::Int,
        "bool" | "boolean" => DataType::Bool,
        "dynamic" => DataType::Dynamic,
        "real" | "double" => DataType::Real,
        _ => DataType::String,
    }
}

/// Parses [`SCHEMA`]: tables in file order, blocks expanded.
pub(crate) fn schema() -> Vec<TableSpec> {
    let mut blocks: HashMap<String, Vec<(String, DataType)>> = HashMap::new();
    let mut tables: Vec<TableSpec> = Vec::new();
    let mut current: Option<(String, Vec<(String, DataType)>)> = None;
    let mut finish = |cur: Option<(String, Vec<(String, DataType)>)>,
                      blocks: &mut HashMap<String, Vec<(String, DataType)>>| {
        if let Some((name, cols)) = cur {
            if name.starts_with('@') {
                blocks.insert(name, cols);
            } else {
                tables.push(TableSpec { name, cols });
            }
        }
    };
    for line in SCHEMA.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("==") {
            finish(current.take(), &mut blocks);
            current = Some((name.trim().to_string(), Vec::new()));
        } else if let Some((_, cols)) = current.as_mut() {
            if line.starts_with('@') {
                if let Some(b) = blocks.get(line) {
                    cols.extend(b.iter().cloned());
                }
            } else {
                let mut it = line.split_whitespace();
                if let (Some(n), Some(t)) = (it.next(), it.next()) {
                    cols.push((n.to_string(), type_of(t)));
                }
            }
        }
    }
    finish(current, &mut blocks);
    tables
}

// ---------------------------------------------------------------------------------------
// Images: every executable, library and document the world knows, with stable hashes.

/// (file name, folder)
pub(crate) const IMAGES: &[(&str, &str)] = &[
    ("explorer.exe", r"C:\Windows"),
    ("services.exe", r"C:\Windows\System32"),
    ("wmiprvse.exe", r"C:\Windows\System32\wbem"),
    ("userinit.exe", r"C:\Windows\System32"),
    (
        "Teams.exe",
        r"C:\Users\Public\AppData\Local\Microsoft\Teams\current",
    ),
    (
        "MsSense.exe",
        r"C:\Program Files\Windows Defender Advanced Threat Protection",
    ),
    ("OneDrive.exe", r"C:\Program Files\Microsoft OneDrive"),
    ("lsass.exe", r"C:\Windows\System32"),
    ("procdump64.exe", r"C:\Windows\Temp"),
    ("esentutl.exe", r"C:\Windows\System32"),
    ("msra.exe", r"C:\Windows\System32"),
    ("wscript.exe", r"C:\Windows\System32"),
    ("update.exe", r"C:\Users\Public"),
    ("kernel32.dll", r"C:\Windows\System32"),
    ("ntdll.dll", r"C:\Windows\System32"),
    ("amsi.dll", r"C:\Windows\System32"),
    (
        "clr.dll",
        r"C:\Windows\Microsoft.NET\Framework64\v4.0.30319",
    ),
    (
        "System.Management.Automation.ni.dll",
        r"C:\Windows\assembly\NativeImages_v4.0.30319_64\System.Manaa57fc8cc#",
    ),
    ("vaultcli.dll", r"C:\Windows\System32"),
    ("samlib.dll", r"C:\Windows\System32"),
    ("dbghelp.dll", r"C:\Windows\System32"),
    ("comsvcs.dll", r"C:\Windows\System32"),
    ("wininet.dll", r"C:\Windows\System32"),
    (
        "mso.dll",
        r"C:\Program Files\Microsoft Office\root\vfs\ProgramFilesCommonX64\Microsoft Shared\Office16",
    ),
    (
        "VBE7.DLL",
        r"C:\Program Files\Microsoft Office\root\vfs\ProgramFilesCommonX64\Microsoft Shared\VBA\VBA7.1",
    ),
    ("Quarterly results.xlsx", r"C:\Users\Public\Documents"),
    ("Budget 2024.xlsx", r"C:\Users\Public\Documents"),
    ("notes.txt", r"C:\Users\Public"),
    ("report.pdf", r"C:\Users\Public\Downloads"),
    ("setup.msi", r"C:\Users\Public\Downloads"),
    ("install.ps1", r"C:\Scripts"),
    ("inventory.ps1", r"C:\Scripts"),
    ("backup.bat", r"C:\Scripts"),
    ("Invoice_2024.docm", r"C:\Users\Public\Documents"),
    ("~WRL0001.tmp", r"C:\Users\Public\AppData\Local\Temp"),
    (
        "chrome_installer.log",
        r"C:\Users\Public\AppData\Local\Temp",
    ),
    ("update.dll", r"C:\Users\Public"),
];

/// What the generator knows of a file.
pub(crate) struct Image {
    pub name: Arc<str>,
    /// Full path, as `FolderPath` shows it.
    pub path: Arc<str>,
    pub sha1: Arc<str>,
    pub sha256: Arc<str>,
    pub md5: Arc<str>,
    pub size: i64,
    pub company: Arc<str>,
    pub product: Arc<str>,
    pub version: Arc<str>,
    pub description: Arc<str>,
    pub cmd: Arc<str>,
    pub signed: bool,
}

/// A stable hex digest of `s` (not a real hash function, only stable and well spread).
pub(crate) fn digest(s: &str, salt: u64, len: usize) -> String {
    let mut r = Rng::new(fnv(s) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.hex(len)
}

pub(crate) fn images() -> Vec<Image> {
    let mut all: Vec<(&str, &str)> = PROCESSES.iter().map(|p| (p.0, p.1)).collect();
    for im in IMAGES {
        if !all.iter().any(|(n, _)| n.eq_ignore_ascii_case(im.0)) {
            all.push(*im);
        }
    }
    all.iter()
        .map(|(name, dir)| {
            let microsoft =
                dir.contains(r"\Windows") || dir.contains("Microsoft") || dir.contains("Office");
            let (company, product, version) = if dir.contains("Office") || name.ends_with(".EXE") {
                (
                    "Microsoft Corporation",
                    "Microsoft Office",
                    "16.0.17328.20162",
                )
            } else if dir.contains("Google") {
                ("Google LLC", "Google Chrome", "131.0.6778.86")
            } else if microsoft {
                (
                    "Microsoft Corporation",
                    "Microsoft® Windows® Operating System",
                    "10.0.22621.3527",
                )
            } else {
                ("", "", "")
            };
            let cmd = PROCESSES
                .iter()
                .find(|p| p.0 == *name)
                .and_then(|p| p.2.first().copied())
                .map_or_else(|| format!("\"{name}\""), str::to_string);
            let stem = name.rsplit_once('.').map_or(*name, |(s, _)| s);
            Image {
                name: Arc::from(*name),
                path: Arc::from(format!("{dir}\\{name}").as_str()),
                sha1: Arc::from(digest(name, 1, 40).as_str()),
                sha256: Arc::from(digest(name, 256, 64).as_str()),
                md5: Arc::from(digest(name, 5, 32).as_str()),
                size: 20_000 + (fnv(name) % 4_000_000) as i64,
                company: Arc::from(company),
                product: Arc::from(product),
                version: Arc::from(version),
                description: Arc::from(if company.is_empty() { "" } else { stem }),
                cmd: Arc::from(cmd.as_str()),
                signed: !company.is_empty(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Per-row context.

/// Everything a row is about; columns are functions of it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx {
    pub ts: i64,
    pub row: usize,
    pub dev: Option<usize>,
    pub user: Option<usize>,
    /// The file acted on or the process created (index into the images).
    pub image: Option<usize>,
    /// The process responsible for the event.
    pub parent: usize,
    /// The parent of that process.
    pub grand: usize,
    pub pid: i64,
    pub ppid: i64,
    pub gpid: i64,
    /// Index into the world's remote addresses.
    pub ip: Option<usize>,
    pub port: i64,
    /// A row of a table this one refers to (a message, an alert, a behavior...).
    pub link: Option<usize>,
    /// Random bits for the columns that only need variety.
    pub k: u64,
}

/// What generating a column may look at.
pub(crate) struct Gen<'a> {
    pub w: &'a World,
    pub images: &'a [Image],
    pub image_ix: &'a HashMap<String, usize>,
    pub seed: u64,
    pub table: &'a str,
    /// Tables generated before this one.
    pub built: &'a [Table],
}

impl Gen<'_> {
    pub fn image(&self, name: &str) -> usize {
        self.image_ix
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
    fn built(&self, name: &str) -> Option<&Table> {
        self.built.iter().find(|t| t.name == name)
    }
    /// Column `col` of row `row` of an earlier table.
    pub fn linked_value(&self, table: &str, row: Option<usize>, col: &str) -> Value {
        self.linked(table, row, col)
    }
    /// Column `col` of row `row` of an earlier table.
    fn linked(&self, table: &str, row: Option<usize>, col: &str) -> Value {
        let (Some(t), Some(r)) = (self.built(table), row) else {
            return st("");
        };
        match t.column_index(col) {
            Some(c) if r < t.row_count() => t.value(r, c),
            _ => st(""),
        }
    }
}

/// Action types per table, with weights.
const ACTIONS: &[(&str, &[(&str, u32)])] = &[
    (
        "DeviceFileEvents",
        &[
            ("FileCreated", 60),
            ("FileModified", 25),
            ("FileRenamed", 10),
            ("FileDeleted", 5),
        ],
    ),
    (
        "DeviceEvents",
        &[
            ("AntivirusDetection", 4),
            ("ScheduledTaskCreated", 6),
            ("PowerShellCommand", 20),
            ("DnsQueryResponse", 20),
            ("UsbDriveMounted", 3),
            ("SmartScreenUrlWarning", 3),
            ("OpenProcessApiCall", 8),
            ("CreateRemoteThreadApiCall", 3),
            ("LdapSearch", 6),
            ("NamedPipeEvent", 10),
            ("AsrOfficeChildProcessAudited", 2),
            ("ExploitGuardNetworkProtectionBlocked", 2),
            ("BrowserLaunchedToOpenUrl", 8),
            ("ProcessCreatedUsingWmiQuery", 3),
            ("ServiceInstalled", 2),
        ],
    ),
    ("DeviceImageLoadEvents", &[("ImageLoaded", 1)]),
    (
        "DeviceRegistryEvents",
        &[
            ("RegistryValueSet", 60),
            ("RegistryKeyCreated", 25),
            ("RegistryKeyDeleted", 8),
            ("RegistryValueDeleted", 7),
        ],
    ),
    ("DeviceFileCertificateInfo", &[("", 1)]),
    (
        "EmailPostDeliveryEvents",
        &[
            ("Phish ZAP", 50),
            ("Malware ZAP", 30),
            ("Manual Remediation", 20),
        ],
    ),
    (
        "UrlClickEvents",
        &[
            ("ClickAllowed", 80),
            ("ClickBlocked", 15),
            ("ClickBlockedByTenantPolicy", 5),
        ],
    ),
    (
        "IdentityQueryEvents",
        &[
            ("LDAP query", 45),
            ("DNS query", 35),
            ("SAMR query", 15),
            ("DNS query (failed)", 5),
        ],
    ),
    (
        "IdentityDirectoryEvents",
        &[
            ("Account Password changed", 30),
            ("Group Membership changed", 20),
            ("Account Enabled changed", 10),
            ("Directory Services replication", 5),
            ("Private Data Retrieval", 5),
            ("Potential lateral movement path identified", 10),
            ("SMB file copy", 10),
            ("Service creation", 10),
        ],
    ),
    (
        "CloudAppEvents",
        &[
            ("FileDownloaded", 25),
            ("FileAccessed", 25),
            ("MailItemsAccessed", 20),
            ("FileUploaded", 10),
            ("New-InboxRule", 2),
            ("Set-Mailbox", 2),
            ("Add member to role.", 1),
            ("UserLoggedIn", 10),
            ("Send", 5),
        ],
    ),
    (
        "BehaviorInfo",
        &[
            ("ImpossibleTravelActivity", 30),
            ("MassDownload", 20),
            ("UnusualAdditionOfCredentialsToAnOauthApp", 10),
            ("SuspiciousInboxManipulationRule", 20),
            ("MultipleFailedLoginAttempts", 20),
        ],
    ),
];

/// Values of enumerated columns: (table or `*`, column, values).
const CHOICES: &[(&str, &str, &[&str])] = &[
    ("*", "ProcessIntegrityLevel", &["Medium", "Medium", "High", "System", "Low"]),
    ("*", "InitiatingProcessIntegrityLevel", &["Medium", "Medium", "High", "System"]),
    ("*", "ProcessTokenElevation", &["TokenElevationTypeDefault", "TokenElevationTypeLimited", "TokenElevationTypeFull"]),
    ("*", "InitiatingProcessTokenElevation", &["TokenElevationTypeDefault", "TokenElevationTypeLimited", "TokenElevationTypeFull"]),
    ("*", "InitiatingProcessSignerType", &["OsVendor", "OsVendor", "Microsoft", "ThirdParty"]),
    ("*", "InitiatingProcessSignatureStatus", &["Valid", "Valid", "Valid", "Unsigned"]),
    ("DeviceFileEvents", "RequestProtocol", &["Local", "Local", "Local", "SMB"]),
    ("DeviceFileEvents", "SensitivityLabel", &["", "", "", "", "General", "Confidential"]),
    ("DeviceRegistryEvents", "RegistryValueType", &["String", "Dword", "Binary", "ExpandString"]),
    ("DeviceNetworkInfo", "NetworkAdapterName", &["Ethernet", "Wi-Fi", "vEthernet (WSL)"]),
    ("DeviceNetworkInfo", "NetworkAdapterType", &["Ethernet", "Wireless80211", "Ethernet"]),
    ("DeviceNetworkInfo", "NetworkAdapterStatus", &["Up", "Up", "Up", "Down"]),
    ("DeviceNetworkInfo", "TunnelType", &["None"]),
    ("DeviceNetworkInfo", "NetworkAdapterVendor", &["Intel Corporation", "Realtek", "Microsoft"]),
    ("*", "OSArchitecture", &["64-bit"]),
    ("DeviceInfo", "JoinType", &["Hybrid Azure AD Join", "Azure AD Join", "Domain Joined"]),
    ("DeviceInfo", "MachineGroup", &["UnassignedGroup", "Servers", "Workstations", "Finance"]),
    ("DeviceInfo", "OnboardingStatus", &["Onboarded", "Onboarded", "Onboarded", "Can be onboarded"]),
    ("DeviceInfo", "DeviceCategory", &["Endpoint"]),
    ("DeviceInfo", "SensorHealthState", &["Active", "Active", "Active", "Inactive", "Misconfigured"]),
    ("DeviceInfo", "ExposureLevel", &["Low", "Medium", "Medium", "High"]),
    ("DeviceInfo", "AssetValue", &["Normal", "Normal", "Low", "High"]),
    ("DeviceInfo", "ConnectivityType", &["Streamlined", "Standard"]),
    ("DeviceInfo", "Vendor", &["Dell Inc.", "Lenovo", "HP", "Microsoft Corporation"]),
    ("DeviceInfo", "Model", &["Latitude 7440", "ThinkPad T14", "EliteBook 840", "Virtual Machine"]),
    ("DeviceFileCertificateInfo", "SignatureType", &["Embedded", "Catalog"]),
    ("EmailEvents", "EmailLanguage", &["en", "en", "en", "de", "fr"]),
    ("EmailEvents", "ConfidenceLevel", &["{\"Phish\":\"Low\",\"Spam\":\"1\"}", "{\"Spam\":\"1\"}", "{\"Phish\":\"High\"}"]),
    ("*", "DetectionMethods", &["", "", "{\"Phish\":[\"URL detonation reputation\"]}", "{\"Malware\":[\"File detonation\"]}"]),
    ("EmailUrlInfo", "UrlLocation", &["Body", "Body", "Body", "Attachment", "QRCode"]),
    ("EmailPostDeliveryEvents", "Action", &["Moved to quarantine", "Soft delete", "Moved to junk folder"]),
    ("EmailPostDeliveryEvents", "ActionTrigger", &["SpecialAction", "AdminAction"]),
    ("EmailPostDeliveryEvents", "ActionResult", &["Success", "Success", "Success", "Error"]),
    ("EmailPostDeliveryEvents", "DeliveryLocation", &["Quarantine", "Junk folder", "Deleted items"]),
    ("UrlClickEvents", "Workload", &["Email", "Email", "Office", "Teams"]),
    ("*", "DeviceType", &["Workstation", "Workstation", "Server", "Mobile"]),
    ("*", "OSPlatform", &["Windows11", "Windows10", "WindowsServer2022", "iOS"]),
    ("IdentityQueryEvents", "QueryType", &["AllGroupsInDomain", "QueryUser", "EnumerateUsers", "QueryGroup", "AllDomains"]),
    ("*", "Location", &["", "US", "US", "GB", "DE", "IN", "NL"]),
    ("*", "Isp", &["Contoso Networks", "Comcast", "Deutsche Telekom", "Microsoft Corporation"]),
    ("*", "ISP", &["Contoso Networks", "Comcast", "Deutsche Telekom", "Microsoft Corporation"]),
    ("IdentityInfo", "Department", &["Finance", "Engineering", "Sales", "HR", "IT"]),
    ("IdentityInfo", "JobTitle", &["Analyst", "Engineer", "Manager", "Administrator", "Consultant"]),
    ("IdentityInfo", "City", &["Seattle", "London", "Munich", "Bangalore", "Amsterdam"]),
    ("IdentityInfo", "Country", &["US", "GB", "DE", "IN", "NL"]),
    ("IdentityInfo", "Type", &["User", "User", "User", "ServiceAccount"]),
    ("IdentityInfo", "RiskLevel", &["", "", "Low", "Medium", "High"]),
    ("IdentityInfo", "RiskStatus", &["None", "None", "AtRisk", "Remediated"]),
    ("IdentityInfo", "BlastRadius", &["Low", "Low", "Medium", "High"]),
    ("IdentityInfo", "TenantMembershipType", &["Member", "Member", "Member", "Guest"]),
    ("IdentityInfo", "IdentityEnvironment", &["Hybrid", "CloudOnly", "On-premises"]),
    ("IdentityInfo", "SourceSystem", &["AzureActiveDirectory", "ActiveDirectory"]),
    ("IdentityInfo", "ChangeSource", &["System-UserPersistence", "AzureActiveDirectory"]),
    ("CloudAppEvents", "CountryCode", &["US", "US", "GB", "DE", "IN", "NL", "RU"]),
    ("CloudAppEvents", "City", &["Seattle", "London", "Munich", "Bangalore", "Amsterdam", "Moscow"]),
    ("CloudAppEvents", "UserAgent", &[
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
        "python-requests/2.31.0",
    ]),
    ("CloudAppEvents", "AccountType", &["Regular", "Regular", "Regular", "Admin", "Application"]),
    ("CloudAppEvents", "IPCategory", &["Corporate", "Corporate", "", "Hosting"]),
    ("CloudAppEvents", "AuditSource", &["Defender for Cloud Apps app connector"]),
    ("CloudAppEvents", "ObjectType", &["File", "File", "Folder", "Mailbox"]),
    ("*", "EvidenceDirection", &["", "", "Source", "Destination"]),
    ("*", "EntityRole", &["Impacted", "Related"]),
    ("*", "DetailedEntityRole", &["", "Source", "Destination", "Target"]),
    ("*", "ThreatFamily", &["", "", "", "Qakbot", "Emotet", "Mimikatz"]),
    ("*", "DataSources", &["[\"Microsoft Defender for Cloud Apps\"]", "[\"Microsoft Entra ID\"]"]),
];

/// (key, value name, value data)
const REGISTRY: &[(&str, &str, &str)] = &[
    (
        r"HKEY_CURRENT_USER\S-1-5-21-1004336348-1177238915-682003330-1001\Software\Microsoft\Windows\CurrentVersion\Run",
        "OneDrive",
        r#""C:\Program Files\Microsoft OneDrive\OneDrive.exe" /background"#,
    ),
    (
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows Defender\Features",
        "TamperProtection",
        "5",
    ),
    (
        r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\bam\State\UserSettings",
        "Version",
        "1",
    ),
    (
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows Defender",
        "DisableAntiSpyware",
        "0",
    ),
    (
        r"HKEY_CURRENT_USER\Software\Microsoft\Office\16.0\Word\Security\Trusted Documents\TrustRecords",
        "%USERPROFILE%/Documents/Budget 2024.xlsx",
        "0x01",
    ),
    (
        r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Control\Lsa",
        "RunAsPPL",
        "1",
    ),
    (
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon",
        "Shell",
        "explorer.exe",
    ),
    (
        r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\W32Time\Parameters",
        "NtpServer",
        "time.windows.com,0x9",
    ),
];

/// (vendor, name, version, end-of-support status)
pub(crate) const SOFTWARE: &[(&str, &str, &str, &str)] = &[
    ("microsoft", "windows_11", "10.0.22621.3527", ""),
    ("microsoft", "edge_chromium-based", "131.0.2903.70", ""),
    ("google", "chrome", "120.0.6099.130", ""),
    ("microsoft", "office", "16.0.17328.20162", ""),
    ("oracle", "jre", "1.8.0.361", "EOS Version"),
    ("7-zip", "7-zip", "19.00", "EOS Version"),
    ("adobe", "acrobat_reader_dc", "23.006.20360", ""),
    ("putty", "putty", "0.76", ""),
    ("notepad++", "notepad++", "8.4.2", ""),
    ("microsoft", "teams", "1.6.00.4472", "Upcoming EOS Version"),
];

/// (CVE, software index, severity, CVSS, exploit available)
pub(crate) const CVES: &[(&str, usize, &str, &str, bool)] = &[
    ("CVE-2024-21412", 0, "High", "8.1", true),
    ("CVE-2024-30051", 0, "High", "7.8", true),
    ("CVE-2024-38063", 0, "Critical", "9.8", false),
    ("CVE-2024-7971", 1, "High", "8.8", true),
    ("CVE-2023-7024", 2, "Critical", "8.8", true),
    ("CVE-2023-6345", 2, "High", "9.6", true),
    ("CVE-2024-21413", 3, "Critical", "9.8", true),
    ("CVE-2023-21930", 4, "High", "7.4", false),
    ("CVE-2022-29072", 5, "High", "7.8", true),
    ("CVE-2023-26369", 6, "High", "7.8", true),
    ("CVE-2024-31497", 7, "Medium", "5.9", true),
    ("CVE-2023-40031", 8, "Medium", "6.5", false),
];

fn weighted_pick<'l>(list: &'l [(&'l str, u32)], k: u64) -> &'l str {
    let total: u64 = list.iter().map(|x| u64::from(x.1)).sum::<u64>().max(1);
    let mut r = k % total;
    for (s, w) in list {
        if r < u64::from(*w) {
            return s;
        }
        r -= u64::from(*w);
    }
    list.last().map_or("", |x| x.0)
}

fn mix(k: u64, salt: &str) -> u64 {
    let mut z = k ^ fnv(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn choice(table: &str, col: &str) -> Option<&'static [&'static str]> {
    CHOICES
        .iter()
        .find(|(t, c, _)| *c == col && *t == table)
        .or_else(|| CHOICES.iter().find(|(t, c, _)| *c == col && *t == "*"))
        .map(|x| x.2)
}

pub(crate) fn action_types(table: &str) -> Option<&'static [(&'static str, u32)]> {
    ACTIONS.iter().find(|(t, _)| *t == table).map(|x| x.1)
}

/// An id of row `k` of a generated table: the same from every table that refers to it.
pub(crate) fn row_guid(seed: u64, table: &str, k: usize) -> String {
    let mut r = Rng::new(seed ^ fnv(table) ^ (k as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    r.guid()
}

thread_local! {
    static STATIC_STRS: std::cell::RefCell<HashMap<usize, Arc<str>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// A string value of a `'static` text, its `Arc` shared by every row (generating a
/// column then costs no allocation per row, and its dictionary finds it by address).
fn st(text: &'static str) -> Value {
    let key = text.as_ptr() as usize ^ (text.len() << 48);
    STATIC_STRS.with(|m| {
        Value::Str(
            m.borrow_mut()
                .entry(key)
                .or_insert_with(|| Arc::from(text))
                .clone(),
        )
    })
}

/// A string value of text computed for one row.
fn dyn_str(text: &str) -> Value {
    Value::Str(Arc::from(text))
}

fn s(x: &Arc<str>) -> Value {
    Value::Str(x.clone())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).map_or(Value::Null, |v| Value::Dynamic(Arc::new(v)))
}

/// Values of column `col` (of type `ty`) of table `g.table` for rows with contexts `ctxs`.
pub(crate) fn values(g: &Gen<'_>, col: &str, ty: DataType, ctxs: &[Ctx]) -> Vec<Value> {
    let w = g.w;
    let t = g.table;
    let im = |i: Option<usize>| i.and_then(|i| g.images.get(i));
    let empty = st("");
    let each = |f: &dyn Fn(&Ctx) -> Value| ctxs.iter().map(f).collect::<Vec<_>>();
    let dev_s = |c: &Ctx, v: &[Arc<str>]| c.dev.map_or_else(|| st(""), |d| s(&v[d]));
    let user_s = |c: &Ctx, v: &[Arc<str>]| c.user.map_or_else(|| st(""), |u| s(&v[u]));
    let img = |c: &Ctx, f: &dyn Fn(&Image) -> Value| im(c.image).map_or_else(|| empty.clone(), f);
    let par = |c: &Ctx, f: &dyn Fn(&Image) -> Value| {
        g.images.get(c.parent).map_or_else(|| empty.clone(), f)
    };
    let mail = |c: &Ctx, col: &str| g.linked("EmailEvents", c.link, col);
    match col {
        "Timestamp" => each(&|c| Value::DateTime(c.ts)),
        "DeviceId" => each(&|c| dev_s(c, &w.device_ids)),
        "DeviceName"
            if t.starts_with("Device") || t.starts_with("Alert") || t.starts_with("Behavior") =>
        {
            each(&|c| dev_s(c, &w.device_names))
        }
        "DeviceName" | "TargetDeviceName" => each(&|c| dev_s(c, &w.device_names)),
        "DestinationDeviceName" => {
            each(&|c| Value::Str(w.device_names[(c.k % 3) as usize].clone()))
        }
        "DestinationIPAddress" => each(&|c| Value::Str(w.device_ips[(c.k % 3) as usize].clone())),
        "ActionType" if t == "BehaviorEntities" => each(&|c| g.linked("BehaviorInfo", c.link, col)),
        "ActionType" => match action_types(t) {
            Some(list) => each(&|c| st(weighted_pick(list, mix(c.k, "ActionType")))),
            None => each(&|_| st("")),
        },
        "FileName" => each(&|c| img(c, &|i| s(&i.name))),
        "FolderPath" => each(&|c| img(c, &|i| s(&i.path))),
        "SHA1" => each(&|c| img(c, &|i| s(&i.sha1))),
        "SHA256" => each(&|c| img(c, &|i| s(&i.sha256))),
        "MD5" => each(&|c| img(c, &|i| s(&i.md5))),
        "FileSize" => each(&|c| im(c.image).map_or(Value::Int(0), |i| Value::Int(i.size))),
        "FileType" => each(&|c| img(c, &|i| dyn_str(i.name.rsplit('.').next().unwrap_or("")))),
        "ProcessVersionInfoCompanyName" => each(&|c| img(c, &|i| s(&i.company))),
        "ProcessVersionInfoProductName" => each(&|c| img(c, &|i| s(&i.product))),
        "ProcessVersionInfoProductVersion" => each(&|c| img(c, &|i| s(&i.version))),
        "ProcessVersionInfoInternalFileName" | "ProcessVersionInfoOriginalFileName" => {
            each(&|c| img(c, &|i| s(&i.name)))
        }
        "ProcessVersionInfoFileDescription" => each(&|c| img(c, &|i| s(&i.description))),
        "ProcessId" => each(&|c| Value::Int(c.pid)),
        "ProcessCommandLine" => each(&|c| img(c, &|i| s(&i.cmd))),
        "ProcessCreationTime" => each(&|c| Value::DateTime(c.ts)),
        "AccountName" => each(&|c| user_s(c, &w.user_names)),
        "AccountDomain" => each(&|c| user_s(c, &w.user_domains)),
        "AccountSid" | "InitiatingProcessAccountSid" | "OnPremSid" => {
            each(&|c| user_s(c, &w.user_sids))
        }
        "AccountUpn" | "InitiatingProcessAccountUpn" | "EmailAddress" => {
            each(&|c| user_s(c, &w.user_upns))
        }
        "AccountObjectId" | "InitiatingProcessAccountObjectId" | "AccountId" => {
            each(&|c| user_s(c, &w.user_oids))
        }
        "AccountDisplayName" => each(&|c| user_s(c, &w.user_display)),
        "GivenName" => each(&|c| user_s(c, &w.user_given)),
        "Surname" => each(&|c| user_s(c, &w.user_surname)),
        "InitiatingProcessAccountName" => each(&|c| user_s(c, &w.user_names)),
        "InitiatingProcessAccountDomain" => each(&|c| user_s(c, &w.user_domains)),
        "LogonId" | "InitiatingProcessLogonId" => each(&|c| {
            Value::Int(0x3e7 + (c.dev.unwrap_or(0) * 31 + c.user.unwrap_or(0) * 7) as i64 % 100_000)
        }),
        "InitiatingProcessSHA1" => each(&|c| par(c, &|i| s(&i.sha1))),
        "InitiatingProcessSHA256" => each(&|c| par(c, &|i| s(&i.sha256))),
        "InitiatingProcessMD5" => each(&|c| par(c, &|i| s(&i.md5))),
        "InitiatingProcessFileName" => each(&|c| par(c, &|i| s(&i.name))),
        "InitiatingProcessFileSize" => each(&|c| {
            g.images
                .get(c.parent)
                .map_or(Value::Int(0), |i| Value::Int(i.size))
        }),
        "InitiatingProcessVersionInfoCompanyName" => each(&|c| par(c, &|i| s(&i.company))),
        "InitiatingProcessVersionInfoProductName" => each(&|c| par(c, &|i| s(&i.product))),
        "InitiatingProcessVersionInfoProductVersion" => each(&|c| par(c, &|i| s(&i.version))),
        "InitiatingProcessVersionInfoInternalFileName"
        | "InitiatingProcessVersionInfoOriginalFileName" => each(&|c| par(c, &|i| s(&i.name))),
        "InitiatingProcessVersionInfoFileDescription" => each(&|c| par(c, &|i| s(&i.description))),
        "InitiatingProcessId" => each(&|c| Value::Int(c.ppid)),
        "InitiatingProcessCommandLine" => each(&|c| par(c, &|i| s(&i.cmd))),
        "InitiatingProcessCreationTime" => {
            each(&|c| Value::DateTime(c.ts - (c.k % 3_600) as i64 * TICKS_PER_SEC))
        }
        "InitiatingProcessFolderPath" => each(&|c| par(c, &|i| s(&i.path))),
        "InitiatingProcessParentId" => each(&|c| Value::Int(c.gpid)),
        "InitiatingProcessParentFileName" => each(&|c| {
            g.images
                .get(c.grand)
                .map_or_else(|| empty.clone(), |i| s(&i.name))
        }),
        "InitiatingProcessParentCreationTime" => {
            each(&|c| Value::DateTime(c.ts - (3_600 + c.k % 86_400) as i64 * TICKS_PER_SEC))
        }
        "InitiatingProcessSessionId" | "CreatedProcessSessionId" => {
            each(&|c| Value::Int(i64::from(c.user.is_some_and(|u| u >= 4)) + (c.k % 2) as i64))
        }
        "IsInitiatingProcessRemoteSession" | "IsProcessRemoteSession" => {
            each(&|c| Value::Bool(c.k % 23 == 0))
        }
        "RemoteIP"
        | "FileOriginIP"
        | "RequestSourceIP"
        | "InitiatingProcessRemoteSessionIP"
        | "ProcessRemoteSessionIP" => {
            if col != "RemoteIP" && t != "DeviceFileEvents" {
                each(&|_| empty.clone())
            } else {
                each(&|c| c.ip.map_or_else(|| empty.clone(), |i| s(&w.remote_ips[i])))
            }
        }
        "RemoteUrl" | "FileOriginUrl" => {
            each(&|c| c.ip.map_or_else(|| empty.clone(), |i| s(&w.remote_urls[i])))
        }
        "FileOriginReferrerUrl" => each(&|_| empty.clone()),
        "RemotePort" | "Port" => each(&|c| Value::Int(c.port)),
        "LocalIP" | "IPv4Dhcp" => each(&|c| dev_s(c, &w.device_ips)),
        "LocalPort" | "RequestSourcePort" => each(&|c| Value::Int(49_152 + (c.k % 16_000) as i64)),
        "LocalIPType" => each(&|_| st("Private")),
        "RemoteIPType" => each(&|c| {
            st(match c.ip {
                Some(i) if i < w.public_ips.len() => "Public",
                Some(_) => "Private",
                None => "",
            })
        }),
        "IPAddress" => each(&|c| match (c.dev, c.ip) {
            (_, Some(i)) => s(&w.remote_ips[i]),
            (Some(d), None) => s(&w.device_ips[d]),
            _ => empty.clone(),
        }),
        "PublicIP" => each(&|c| s(&w.public_ips[c.dev.unwrap_or(0) % w.public_ips.len()])),
        "Protocol" => each(&|c| {
            st(match t {
                "DeviceNetworkEvents" => ["Tcp", "Tcp", "Tcp", "Udp"][(c.k % 4) as usize],
                "DeviceLogonEvents" => ["Negotiate", "Kerberos", "NTLM"][(c.k % 3) as usize],
                _ => ["Kerberos", "Ntlm", "Ldap", "Dns"][(c.k % 4) as usize],
            })
        }),
        "ReportId" => match ty {
            DataType::Long | DataType::Int => {
                each(&|c| Value::Int(10_000 + c.row as i64 * 8 + (c.k % 8) as i64))
            }
            _ => each(&|c| dyn_str(&format!("{}-{}", digest(t, c.k, 16), c.row))),
        },
        "AdditionalFields" if ty == DataType::Dynamic => {
            let v = json("{}");
            each(&|_| v.clone())
        }
        "AdditionalFields" => each(&|_| st("{}")),
        "RegistryKey" | "RegistryValueName" | "RegistryValueData"
            if t == "DeviceRegistryEvents" =>
        {
            each(&|c| {
                let r = REGISTRY[(c.k % REGISTRY.len() as u64) as usize];
                st(match col {
                    "RegistryKey" => r.0,
                    "RegistryValueName" => r.1,
                    _ => r.2,
                })
            })
        }
        "MacAddress" => {
            each(&|c| dyn_str(&digest(&format!("mac{}", c.dev.unwrap_or(0)), 3, 12).to_uppercase()))
        }
        "ConnectedNetworks" => each(&|_| {
            st(
                r#"[{"Name":"contoso.local","Description":"contoso.local","IsConnectedToInternet":true,"Category":"Domain"}]"#,
            )
        }),
        "DnsAddresses" => each(&|_| st(r#"["10.1.0.10","10.1.0.11"]"#)),
        "DefaultGateways" => each(&|_| st(r#"["10.1.0.1"]"#)),
        "IPAddresses" => each(&|c| {
            let ip = c.dev.map_or("", |d| &w.device_ips[d]);
            dyn_str(&format!(
                r#"[{{"IPAddress":"{ip}","SubnetPrefix":16,"AddressType":"Private"}}]"#
            ))
        }),
        "ClientVersion" => each(&|_| st("10.8760.22621.3527")),
        "OSPlatform" if t.starts_with("Device") => each(&|c| st(w.device_os(c.dev))),
        "OSVersion" => each(&|c| {
            st(if w.device_os(c.dev).starts_with("WindowsServer") {
                "10.0.20348"
            } else {
                "10.0.22621"
            })
        }),
        "OSBuild" => each(&|c| {
            Value::Int(if w.device_os(c.dev).starts_with("WindowsServer") {
                20348
            } else {
                22621
            })
        }),
        "DeviceType" if t == "DeviceInfo" => each(&|c| {
            st(if w.device_os(c.dev).starts_with("WindowsServer") {
                "Server"
            } else {
                "Workstation"
            })
        }),
        "IsAzureADJoined" => each(&|c| Value::Bool(c.dev.is_some_and(|d| d % 3 != 0))),
        "AadDeviceId" => each(&|c| dyn_str(&digest(&format!("aad{}", c.dev.unwrap_or(0)), 9, 32))),
        "LoggedOnUsers" => each(&|c| {
            let u = c.user.unwrap_or(4);
            dyn_str(&format!(
                r#"[{{"UserName":"{}","DomainName":"{}","Sid":"{}"}}]"#,
                w.user_names[u],
                w.user_domains[u].to_uppercase(),
                w.user_sids[u]
            ))
        }),
        "IsInternetFacing" => each(&|c| Value::Bool(c.dev.is_some_and(|d| d % 17 == 0))),
        "DeviceManualTags" | "DeviceDynamicTags" => each(&|_| st("[]")),
        "IsSigned" | "IsTrusted" => each(&|c| Value::Bool(im(c.image).is_some_and(|i| i.signed))),
        "IsRootSignerMicrosoft" => {
            each(&|c| Value::Bool(im(c.image).is_some_and(|i| i.company.starts_with("Microsoft"))))
        }
        "Signer" => each(&|c| img(c, &|i| s(&i.company))),
        "Issuer" => each(&|c| {
            img(c, &|i| {
                if i.signed {
                    st("Microsoft Windows Production PCA 2011")
                } else {
                    empty.clone()
                }
            })
        }),
        "SignerHash" | "IssuerHash" | "CertificateSerialNumber" => each(&|c| {
            img(c, &|i| {
                if i.signed {
                    dyn_str(&digest(&i.company, fnv(col), 40))
                } else {
                    empty.clone()
                }
            })
        }),
        "CrlDistributionPointUrls" => each(&|_| {
            st(r#"["http://www.microsoft.com/pkiops/crl/MicWinProPCA2011_2011-10-19.crl"]"#)
        }),
        "CertificateCreationTime" => each(&|c| Value::DateTime(c.ts - 400 * TICKS_PER_DAY)),
        "CertificateExpirationTime" => each(&|c| Value::DateTime(c.ts + 300 * TICKS_PER_DAY)),
        "CertificateCountersignatureTime" => each(&|c| Value::DateTime(c.ts - 200 * TICKS_PER_DAY)),
        // Software and vulnerabilities: `link` is the software, `port` the CVE.
        "SoftwareVendor" => each(&|c| st(SOFTWARE[c.link.unwrap_or(0) % SOFTWARE.len()].0)),
        "SoftwareName" => each(&|c| st(SOFTWARE[c.link.unwrap_or(0) % SOFTWARE.len()].1)),
        "SoftwareVersion" => each(&|c| st(SOFTWARE[c.link.unwrap_or(0) % SOFTWARE.len()].2)),
        "EndOfSupportStatus" => each(&|c| st(SOFTWARE[c.link.unwrap_or(0) % SOFTWARE.len()].3)),
        "EndOfSupportDate" => each(&|c| {
            if SOFTWARE[c.link.unwrap_or(0) % SOFTWARE.len()].3.is_empty() {
                Value::Null
            } else {
                Value::DateTime(c.ts - 200 * TICKS_PER_DAY)
            }
        }),
        "ProductCodeCpe" => each(&|c| {
            let sw = SOFTWARE[c.link.unwrap_or(0) % SOFTWARE.len()];
            dyn_str(&format!(
                "cpe:2.3:a:{}:{}:{}:*:*:*:*:*:*:*",
                sw.0, sw.1, sw.2
            ))
        }),
        "CveId" => each(&|c| st(CVES[c.port as usize % CVES.len()].0)),
        "VulnerabilitySeverityLevel" => each(&|c| st(CVES[c.port as usize % CVES.len()].2)),
        "CvssScore" => each(&|c| st(CVES[c.port as usize % CVES.len()].3)),
        "IsExploitAvailable" => each(&|c| Value::Bool(CVES[c.port as usize % CVES.len()].4)),
        "RecommendedSecurityUpdate" => each(&|c| {
            dyn_str(&format!(
                "Update {}",
                SOFTWARE[CVES[c.port as usize % CVES.len()].1].1
            ))
        }),
        "RecommendedSecurityUpdateId" => each(&|c| {
            dyn_str(&format!(
                "KB50{:05}",
                fnv(CVES[c.port as usize % CVES.len()].0) % 100_000
            ))
        }),
        "CveTags" => each(&|c| {
            json(if CVES[c.port as usize % CVES.len()].4 {
                r#"["ExploitAvailable"]"#
            } else {
                "[]"
            })
        }),
        "LastModifiedTime" | "PublishedDate" => each(&|c| {
            Value::DateTime(
                c.ts - (30 + (fnv(CVES[c.port as usize % CVES.len()].0) % 300) as i64)
                    * TICKS_PER_DAY,
            )
        }),
        "VulnerabilityDescription" => each(&|c| {
            let cve = CVES[c.port as usize % CVES.len()];
            dyn_str(&format!(
                "A vulnerability in {} could allow remote code execution.",
                SOFTWARE[cve.1].1
            ))
        }),
        "AffectedSoftware" => each(&|c| {
            let cve = CVES[c.port as usize % CVES.len()];
            let sw = SOFTWARE[cve.1];
            json(&format!(r#"["{}-{} {}"]"#, sw.0, sw.1, sw.2))
        }),
        // Mail: `link` is the EmailEvents row.
        "NetworkMessageId" if t == "EmailEvents" => {
            each(&|c| dyn_str(&row_guid(g.seed, "EmailEvents", c.row)))
        }
        "NetworkMessageId" if t == "UrlClickEvents" => {
            each(&|c| g.linked("EmailUrlInfo", c.link, "NetworkMessageId"))
        }
        "Url" | "UrlDomain" if t == "UrlClickEvents" => {
            each(&|c| g.linked("EmailUrlInfo", c.link, col))
        }
        "NetworkMessageId"
        | "InternetMessageId"
        | "SenderFromAddress"
        | "SenderDisplayName"
        | "SenderObjectId"
        | "RecipientEmailAddress"
        | "RecipientObjectId"
            if t.starts_with("Email") && t != "EmailEvents" =>
        {
            each(&|c| mail(c, col))
        }
        "ThreatTypes" | "DetectionMethods"
            if t == "EmailPostDeliveryEvents" || t == "UrlClickEvents" =>
        {
            each(&|c| {
                if t == "UrlClickEvents" {
                    let id = g.linked("EmailUrlInfo", c.link, "NetworkMessageId");
                    let _ = id;
                    st(["", "", "", "Phish"][(c.k % 4) as usize])
                } else {
                    mail(c, col)
                }
            })
        }
        "InternetMessageId" => each(&|c| {
            dyn_str(&format!(
                "<{}@{}.prod.outlook.com>",
                digest("imid", c.row as u64 ^ g.seed, 24),
                "contoso"
            ))
        }),
        "SenderMailFromAddress" => each(&|c| mail_same(g, c, "SenderFromAddress")),
        "SenderFromDomain" | "SenderMailFromDomain" => each(&|c| {
            let v = mail_same(g, c, "SenderFromAddress");
            dyn_str(
                v.as_str()
                    .and_then(|a| a.split_once('@'))
                    .map_or("", |x| x.1),
            )
        }),
        "SenderDisplayName" => each(&|c| {
            let v = mail_same(g, c, "SenderFromAddress");
            dyn_str(
                v.as_str()
                    .and_then(|a| a.split_once('@'))
                    .map_or("", |x| x.0),
            )
        }),
        "SenderObjectId" | "RecipientObjectId" => each(&|c| dyn_str(&digest(col, c.k, 32))),
        "SenderIPv4" => each(&|c| s(&w.public_ips[(c.k % w.public_ips.len() as u64) as usize])),
        "SenderIPv6"
        | "Connectors"
        | "OrgLevelAction"
        | "OrgLevelPolicy"
        | "UserLevelAction"
        | "UserLevelPolicy"
        | "EmailActionPolicyGuid"
        | "ThreatNames"
        | "EmailAction"
        | "EmailActionPolicy" => each(&|_| empty.clone()),
        "EmailClusterId" => each(&|c| Value::Int((c.k % 5_000) as i64 + 1_000_000)),
        "BulkComplaintLevel" => each(&|c| Value::Int((c.k % 4) as i64)),
        "UrlCount" => each(&|c| Value::Int((c.k % 3) as i64)),
        "AttachmentCount" => each(&|c| Value::Int((c.k % 2) as i64)),
        "AuthenticationDetails" => {
            each(&|_| st(r#"{"SPF":"pass","DKIM":"pass","DMARC":"pass","CompAuth":"pass"}"#))
        }
        "LatestDeliveryLocation" => each(&|c| mail_same(g, c, "DeliveryLocation")),
        "LatestDeliveryAction" => each(&|c| mail_same(g, c, "DeliveryAction")),
        "Url" => each(&|c| {
            let host = c.ip.map_or("contoso.sharepoint.com", |i| &w.remote_urls[i]);
            let host = if host.is_empty() {
                "contoso.sharepoint.com"
            } else {
                host
            };
            dyn_str(&format!("https://{host}/{}", digest("url", c.k, 8)))
        }),
        "UrlDomain" => each(&|c| match c.ip.map(|i| &w.remote_urls[i]) {
            Some(host) if !host.is_empty() => s(host),
            _ => st("contoso.sharepoint.com"),
        }),
        "UrlChain" => each(&|_| empty.clone()),
        // Identity
        "Application" => each(&|c| {
            st(match t {
                "CloudAppEvents" => [
                    "Microsoft Exchange Online",
                    "Microsoft SharePoint Online",
                    "Microsoft OneDrive for Business",
                    "Microsoft Teams",
                ][(c.k % 4) as usize],
                t if t.starts_with("Identity") => "Active Directory",
                _ => "",
            })
        }),
        "ApplicationId" => each(&|c| {
            Value::Int(if t == "CloudAppEvents" {
                [20893, 20892, 15600, 11161][(c.k % 4) as usize]
            } else {
                0
            })
        }),
        "AppInstanceId" => each(&|_| Value::Int(0)),
        "DestinationPort" => each(&|c| Value::Int([88, 389, 445, 53][(c.k % 4) as usize])),
        "TargetAccountUpn" => each(&|c| {
            Value::Str(w.user_upns[4 + (c.k % (w.user_upns.len() as u64 - 4)) as usize].clone())
        }),
        "TargetAccountDisplayName" => each(&|c| {
            Value::Str(
                w.user_display[4 + (c.k % (w.user_display.len() as u64 - 4)) as usize].clone(),
            )
        }),
        "QueryTarget" => each(&|c| {
            st([
                "Domain Admins",
                "Enterprise Admins",
                "administrator",
                "krbtgt",
                "dc01.contoso.local",
            ][(c.k % 5) as usize])
        }),
        "Query" => each(&|c| {
            st([
                "(&(objectClass=group)(cn=Domain Admins))",
                "(&(objectCategory=person)(samAccountName=*))",
                "_ldap._tcp.dc._msdcs.contoso.local",
                "(servicePrincipalName=*)",
            ][(c.k % 4) as usize])
        }),
        "FailureReason" => each(&|_| empty.clone()),
        "CriticalityLevel" => each(&|c| Value::Int(i64::from(c.user.is_some_and(|u| u < 8)) * 4)),
        "DistinguishedName" => each(&|c| {
            let u = c.user.unwrap_or(4);
            dyn_str(&format!(
                "CN={},OU=Users,DC={},DC=com",
                w.user_display[u], w.user_domains[u]
            ))
        }),
        "IsAccountEnabled" => each(&|c| Value::Bool(c.k % 29 != 0)),
        "CreatedDateTime" => {
            each(&|c| Value::DateTime(c.ts - (100 + (c.k % 900) as i64) * TICKS_PER_DAY))
        }
        "DeletedDateTime" => each(&|_| Value::Null),
        "TenantId" => each(&|_| st("4b2462a4-bbee-495a-a0e1-f23ae524cc9c")),
        "CloudSid" | "OnPremObjectId" | "SipProxyAddress" | "Address" | "Manager" | "Phone"
        | "CompanyName" | "EmployeeId" | "RiskLevelDetails" | "State" | "UserAccountControl"
        | "ObjectId" => each(&|_| empty.clone()),
        "OtherMailAddresses"
        | "Tags"
        | "AssignedRoles"
        | "PrivilegedEntraPimRoles"
        | "IPTags"
        | "UserAgentTags"
        | "UncommonForUser" => {
            let v = json("[]");
            each(&|_| v.clone())
        }
        "SourceProviders" => {
            let v = json(r#"["ActiveDirectory","EntraID"]"#);
            each(&|_| v.clone())
        }
        "GroupMembership" => each(&|c| {
            json(if c.user.is_some_and(|u| u == 3) {
                r#"["Domain Admins","IT"]"#
            } else {
                r#"["All Users"]"#
            })
        }),
        // Cloud apps
        "IsAdminOperation" => each(&|c| Value::Bool(c.k % 19 == 0)),
        "IsAnonymousProxy" => each(&|c| Value::Bool(c.k % 97 == 0)),
        "IsExternalUser" | "IsImpersonated" => each(&|_| Value::Bool(false)),
        "ActivityType" => each(&|c| {
            st([
                "Download", "Read", "Read", "Upload", "Create", "Edit", "Login", "Send",
            ][(c.k % 8) as usize])
        }),
        "ObjectName" => each(&|c| img(c, &|i| s(&i.name))),
        "ActivityObjects" => each(&|c| {
            let name = im(c.image).map_or("", |i| &i.name);
            json(&format!(
                r#"[{{"Type":"File","Name":"{}","Role":"Target object"}}]"#,
                name.replace('\\', "\\\\")
            ))
        }),
        "RawEventData" => each(&|c| {
            let u = c.user.unwrap_or(4);
            let op = values_one(g, "ActionType", c);
            json(&format!(
                r#"{{"Operation":"{}","UserId":"{}","Workload":"Exchange","ClientIPAddress":"{}"}}"#,
                op.as_str().unwrap_or(""),
                w.user_upns[u],
                c.ip.map_or("", |i| &w.remote_ips[i])
            ))
        }),
        "LastSeenForUser" => {
            let v = json(r#"{"ActionType":"0","ISP":"3"}"#);
            each(&|_| v.clone())
        }
        "SessionData" => {
            let v = json("{}");
            each(&|_| v.clone())
        }
        "OAuthAppId" | "OAuthApplicationId" => each(&|_| empty.clone()),
        // Alerts and behaviors
        "BehaviorId" if t == "BehaviorInfo" => {
            each(&|c| dyn_str(&format!("ba{}", digest("beh", c.row as u64 ^ g.seed, 24))))
        }
        "BehaviorId" | "Categories" | "ServiceSource" | "DetectionSource" | "DataSources"
        | "AttackTechniques"
            if t == "BehaviorEntities" =>
        {
            each(&|c| g.linked("BehaviorInfo", c.link, col))
        }
        "Description" => each(&|c| {
            dyn_str(&format!(
                "{} for {}",
                values_one(g, "ActionType", c).as_str().unwrap_or(""),
                c.user.map_or("", |u| &w.user_upns[u])
            ))
        }),
        "Title" if t == "BehaviorInfo" => each(&|c| values_one(g, "ActionType", c)),
        "Categories" if t == "BehaviorInfo" => each(&|_| st(r#"["InitialAccess"]"#)),
        "AttackTechniques" if t == "BehaviorInfo" => each(&|_| st(r#"["Valid Accounts (T1078)"]"#)),
        "ServiceSource" => each(&|_| st("Microsoft Defender for Cloud Apps")),
        "DetectionSource" => each(&|_| st("Microsoft Defender for Cloud Apps")),
        "StartTime" => each(&|c| Value::DateTime(c.ts - 2 * 3_600 * TICKS_PER_SEC)),
        "EndTime" => each(&|c| Value::DateTime(c.ts)),
        "EntityType" => each(&|c| st(if c.user.is_some() { "User" } else { "Ip" })),
        "EmailSubject" => each(&|_| empty.clone()),
        _ => {
            if let Some(list) = choice(t, col) {
                return ctxs
                    .iter()
                    .map(|c| st(list[(mix(c.k, col) % list.len() as u64) as usize]))
                    .collect();
            }
            let v = match ty {
                DataType::Bool => Value::Bool(false),
                DataType::Int | DataType::Long => Value::Int(0),
                DataType::Real => Value::Real(0.0),
                DataType::DateTime | DataType::TimeSpan => Value::Null,
                DataType::Dynamic => json("{}"),
                DataType::String => st(""),
            };
            vec![v; ctxs.len()]
        }
    }
}

/// A column of the same row, computed for one context.
fn values_one(g: &Gen<'_>, col: &str, c: &Ctx) -> Value {
    values(g, col, DataType::String, std::slice::from_ref(c))
        .pop()
        .unwrap_or(Value::Null)
}

/// For EmailEvents itself, the sender etc. are not linked but computed like the legacy
/// generator's; the columns that follow from them are derived from a deterministic
/// sender chosen from the row's bits.
fn mail_same(g: &Gen<'_>, c: &Ctx, col: &str) -> Value {
    if g.table == "EmailEvents" {
        // Filled in after the legacy columns exist (see `derive_from_table`).
        return st(match col {
            "DeliveryLocation" => "Inbox/folder",
            "DeliveryAction" => "Delivered",
            _ => "",
        });
    }
    g.linked("EmailEvents", c.link, col)
}

/// Columns computed from other columns of the same table once those exist: the
/// derived mail columns of EmailEvents, AlertEvidence's `Categories`.
pub(crate) fn derive_from_table(
    table: &str,
    col: &str,
    cols: &[(String, DataType, ColumnData)],
) -> Option<ColumnData> {
    let find = |n: &str| cols.iter().find(|c| c.0 == n).map(|c| &c.2);
    let map_dict = |src: &ColumnData, f: &dyn Fn(&str) -> String| match src {
        ColumnData::Str { dict, codes } => Some(ColumnData::Str {
            dict: dict.iter().map(|d| Arc::from(f(d).as_str())).collect(),
            codes: codes.clone(),
        }),
        _ => None,
    };
    match (table, col) {
        ("EmailEvents", "SenderMailFromAddress") => find("SenderFromAddress").cloned(),
        ("EmailEvents", "SenderFromDomain" | "SenderMailFromDomain") => {
            map_dict(find("SenderFromAddress")?, &|a| {
                a.split_once('@').map_or("", |x| x.1).to_string()
            })
        }
        ("EmailEvents", "SenderDisplayName") => map_dict(find("SenderFromAddress")?, &|a| {
            a.split_once('@').map_or("", |x| x.0).to_string()
        }),
        ("EmailEvents", "LatestDeliveryLocation") => find("DeliveryLocation").cloned(),
        ("EmailEvents", "LatestDeliveryAction") => find("DeliveryAction").cloned(),
        ("AlertEvidence", "Categories") => map_dict(find("Category")?, &|c| format!("[\"{c}\"]")),
        _ => None,
    }
}
