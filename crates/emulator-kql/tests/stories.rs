//! The planted attack stories, found the way a hunter would: each query below joins
//! tables on the ids the stories share (devices, accounts, process ids, hashes, message
//! and alert ids) and must find exactly the planted rows, for more than one seed.

use defender_emulator_kql::{
    run, Dataset, DatasetConfig, QueryOutput, RunOptions, Value, ENCODED_POWERSHELL, PHISH_IP,
    QAKBOT_IP,
};

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600_000;

fn world(seed: u64) -> Dataset {
    Dataset::generate(&DatasetConfig {
        seed,
        rows_per_table: 2_000,
        anchor_unix_ms: NOW,
        ..DatasetConfig::default()
    })
}

fn q(d: &Dataset, query: &str) -> QueryOutput {
    let opts = RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    };
    run(query, d, &opts).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn col(out: &QueryOutput, name: &str) -> Vec<Value> {
    let i = out.schema.iter().position(|c| c.name == name).unwrap();
    out.rows.iter().map(|r| r[i].clone()).collect()
}

fn one(out: &QueryOutput, name: &str) -> String {
    assert_eq!(out.rows.len(), 1, "{:?}", out.rows);
    col(out, name)[0].to_text()
}

const SEEDS: [u64; 3] = [1, 11, 4242];

#[test]
fn phishing_macro_powershell_download_scheduled_task() {
    for seed in SEEDS {
        let d = world(seed);
        // Office spawning an encoded PowerShell, and what that PowerShell connected to.
        let out = q(
            &d,
            r#"
            let Encoded = DeviceProcessEvents
                | where InitiatingProcessFileName in~ ("winword.exe", "excel.exe", "powerpnt.exe")
                | where FileName =~ "powershell.exe" and ProcessCommandLine has_any ("-enc", "-encodedcommand")
                | project DeviceId, DeviceName, AccountName, PsPid = ProcessId, Launched = Timestamp;
            Encoded
            | join kind=inner (DeviceNetworkEvents | where ActionType == "ConnectionSuccess") on DeviceId
            | where InitiatingProcessId == PsPid and Timestamp between (Launched .. Launched + 10m)
            | project DeviceName, AccountName, RemoteIP, RemoteUrl"#,
        );
        assert_eq!(one(&out, "RemoteIP"), PHISH_IP, "seed {seed}");
        let device = one(&out, "DeviceName");
        let account = one(&out, "AccountName");
        // The whole chain on that device: Outlook -> Word -> PowerShell -> schtasks.
        let out = q(
            &d,
            &format!(
                r#"
            DeviceProcessEvents
            | where DeviceName == "{device}" and FileName =~ "schtasks.exe" and ProcessCommandLine has "/create"
            | where InitiatingProcessFileName =~ "powershell.exe" and InitiatingProcessParentFileName =~ "winword.exe"
            | project ProcessCommandLine, InitiatingProcessCommandLine"#
            ),
        );
        assert!(one(&out, "ProcessCommandLine").contains("OneDrive Standalone Update"));
        assert_eq!(
            one(&out, "InitiatingProcessCommandLine"),
            ENCODED_POWERSHELL
        );
        // The mail: its attachment's hash is the file Outlook wrote on the device, and
        // its recipient is the account that ran the chain.
        let out = q(
            &d,
            r#"
            EmailAttachmentInfo
            | where ThreatTypes has "Malware" and FileType == "docm"
            | join kind=inner (EmailEvents | where DeliveryAction == "Delivered") on NetworkMessageId
            | join kind=inner (DeviceFileEvents | where InitiatingProcessFileName =~ "outlook.exe") on SHA256
            | project RecipientEmailAddress, DeviceName, Subject"#,
        );
        assert_eq!(one(&out, "DeviceName"), device);
        assert!(one(&out, "RecipientEmailAddress").starts_with(&format!("{account}@")));
        // The user clicked the mail's link, and the mail was purged after delivery.
        let out = q(
            &d,
            r#"
            UrlClickEvents
            | where ActionType == "ClickAllowed" and IsClickedThrough and ThreatTypes has "Phish"
            | join kind=inner EmailPostDeliveryEvents on NetworkMessageId
            | project Url, Action"#,
        );
        assert_eq!(one(&out, "Action"), "Moved to quarantine");
        // The payload was downloaded from the attacker's server and later ran.
        let out = q(
            &d,
            &format!(
                r#"
            DeviceFileEvents
            | where isnotempty(FileOriginUrl) and FileOriginIP == "{PHISH_IP}"
            | join kind=inner (DeviceProcessEvents | project DeviceId, SHA256, Ran = Timestamp) on DeviceId, SHA256
            | project FileName, Ran"#
            ),
        );
        assert_eq!(one(&out, "FileName"), "update.exe");
        // The alert and its evidence name the same device.
        let out = q(
            &d,
            r#"
            AlertInfo
            | where Title == "Suspicious PowerShell command line" and Severity == "High"
            | join kind=inner (AlertEvidence | where EntityType == "Machine") on AlertId
            | project DeviceName"#,
        );
        assert!(col(&out, "DeviceName").contains(&Value::str(&device)));
    }
}

#[test]
fn qakbot_like_mail_theft() {
    for seed in SEEDS {
        let d = world(seed);
        let out = q(
            &d,
            r#"
            DeviceFileEvents
            | where FolderPath has "EmailStorage" and FileName endswith ".eml"
            | summarize Files = count(), Procs = make_set(InitiatingProcessFileName) by DeviceId, DeviceName"#,
        );
        assert_eq!(one(&out, "Files"), "6", "seed {seed}");
        assert_eq!(one(&out, "Procs"), r#"["msra.exe"]"#);
        let device = one(&out, "DeviceName");
        // The process that wrote them was started by rundll32 running a DLL from ProgramData,
        // and it talked to the C2 server on a Qakbot port.
        let out = q(
            &d,
            &format!(
                r#"
            DeviceNetworkEvents
            | where DeviceName == "{device}" and RemoteIP == "{QAKBOT_IP}"
            | summarize Ports = make_set(RemotePort), Parents = make_set(InitiatingProcessParentFileName)"#
            ),
        );
        assert_eq!(one(&out, "Parents"), r#"["rundll32.exe"]"#);
        assert!(one(&out, "Ports").contains("2222"));
        let out = q(
            &d,
            &format!(
                r#"
            DeviceImageLoadEvents
            | where DeviceName == "{device}" and InitiatingProcessFileName =~ "rundll32.exe" and FolderPath startswith @"C:\ProgramData\"
            | project FileName"#
            ),
        );
        assert_eq!(one(&out, "FileName"), "Fvbnmk.dll");
        let out = q(
            &d,
            &format!(
                r#"
            CloudAppEvents
            | where ActionType == "MailItemsAccessed" and IPAddress == "{QAKBOT_IP}"
            | project CountryCode"#
            ),
        );
        assert_eq!(one(&out, "CountryCode"), "RU");
    }
}

#[test]
fn lsass_dump_and_lateral_logons() {
    for seed in SEEDS {
        let d = world(seed);
        let out = q(
            &d,
            r#"
            DeviceEvents
            | where ActionType == "OpenProcessApiCall" and FileName =~ "lsass.exe"
            | summarize By = make_set(InitiatingProcessFileName) by DeviceName"#,
        );
        assert_eq!(
            one(&out, "By"),
            r#"["procdump64.exe","rundll32.exe"]"#,
            "seed {seed}"
        );
        let server = one(&out, "DeviceName");
        let out = q(
            &d,
            r#"
            DeviceProcessEvents
            | where ProcessCommandLine has_all ("comsvcs", "MiniDump") or ProcessCommandLine has "-ma lsass"
            | summarize count() by DeviceName, AccountName"#,
        );
        assert_eq!(one(&out, "DeviceName"), server);
        assert_eq!(one(&out, "AccountName"), "administrator");
        assert_eq!(one(&out, "count_"), "2");
        // Then the administrator logged on with NTLM to six machines from that server.
        let ip = q(
            &d,
            &format!("DeviceInfo | where DeviceName == '{server}' | take 1 | project DeviceId"),
        );
        assert_eq!(ip.rows.len(), 1);
        let out = q(
            &d,
            &format!(
                r#"
            DeviceLogonEvents
            | where LogonType == "Network" and Protocol == "NTLM" and RemoteDeviceName == "{server}"
            | summarize Targets = dcount(DeviceId) by AccountName"#
            ),
        );
        assert_eq!(one(&out, "AccountName"), "administrator");
        assert_eq!(one(&out, "Targets"), "6");
        let out = q(
            &d,
            &format!(
                r#"
            IdentityLogonEvents
            | where Protocol == "Ntlm" and DeviceName == "{server}" and AccountName == "administrator"
            | summarize dcount(TargetDeviceName)"#
            ),
        );
        assert_eq!(out.rows[0][0], Value::Int(6));
    }
}
