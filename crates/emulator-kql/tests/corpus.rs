//! A corpus of hunting queries written for the emulator in the style of real hunts
//! (several operators combined, every table used). Every query must run and produce the
//! expected columns; `corpus_runs` prints how many ran, so the figure can be compared
//! across versions of the engine.

use std::sync::OnceLock;

use defender_emulator_kql::{run, Dataset, DatasetConfig, RunOptions};

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600_000;

fn data() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| {
        Dataset::generate(&DatasetConfig {
            seed: 11,
            rows_per_table: 3_000,
            anchor_unix_ms: NOW,
            ..DatasetConfig::default()
        })
    })
}

/// `(query, expected result columns)`.
const CORPUS: &[(&str, &[&str])] = &[
    // 1. Encoded PowerShell, decoded command line pieces.
    (
        r#"DeviceProcessEvents
| where FileName in~ ("powershell.exe", "pwsh.exe")
| where ProcessCommandLine has_any ("-enc", "-encodedcommand", "FromBase64String")
| project Timestamp, DeviceName, AccountName, ProcessCommandLine
| take 50"#,
        &[
            "Timestamp",
            "DeviceName",
            "AccountName",
            "ProcessCommandLine",
        ],
    ),
    // 2. Tabular let + join: devices with an alert that also ran whoami.
    (
        r#"let AlertDevices = AlertEvidence
| where EntityType == "Machine" and isnotempty(DeviceId)
| distinct DeviceId;
DeviceProcessEvents
| where ProcessCommandLine has "whoami"
| join kind=inner AlertDevices on DeviceId
| summarize Runs = count() by DeviceName"#,
        &["DeviceName", "Runs"],
    ),
    // 3. Alerts with their evidence, $left/$right keys and a hint.
    (
        r#"AlertInfo
| where Severity in ("High", "Medium")
| join hint.strategy=shuffle kind=leftouter (AlertEvidence | project AlertId, EntityType, DeviceName) on $left.AlertId == $right.AlertId
| summarize Entities = make_set(EntityType), Devices = dcount(DeviceName) by AlertId, Title
| take 20"#,
        &["AlertId", "Title", "Entities", "Devices"],
    ),
    // 4. MITRE techniques of alerts, expanded from the JSON text column.
    (
        r#"AlertInfo
| extend Techniques = parse_json(AttackTechniques)
| mv-expand Technique = Techniques
| extend Technique = tostring(Technique)
| summarize Alerts = count() by Technique
| sort by Alerts desc"#,
        &["Technique", "Alerts"],
    ),
    // 5. Rare parent/child process pairs.
    (
        r#"DeviceProcessEvents
| summarize Devices = dcount(DeviceId), Seen = count() by InitiatingProcessFileName, FileName
| where Devices < 3
| top 25 by Seen asc"#,
        &["InitiatingProcessFileName", "FileName", "Devices", "Seen"],
    ),
    // 6. Office spawning a shell.
    (
        r#"let Office = dynamic(["winword.exe", "excel.exe", "powerpnt.exe", "outlook.exe"]);
let Shells = dynamic(["cmd.exe", "powershell.exe", "wscript.exe", "cscript.exe", "mshta.exe"]);
DeviceProcessEvents
| where InitiatingProcessFileName in~ (Office) and FileName in~ (Shells)
| project Timestamp, DeviceName, InitiatingProcessFileName, FileName, ProcessCommandLine"#,
        &[
            "Timestamp",
            "DeviceName",
            "InitiatingProcessFileName",
            "FileName",
            "ProcessCommandLine",
        ],
    ),
    // 7. Latest process per device.
    (
        r#"DeviceProcessEvents
| summarize arg_max(Timestamp, FileName, AccountName) by DeviceName"#,
        &["DeviceName", "Timestamp", "FileName", "AccountName"],
    ),
    // 8. First logon per account, every column.
    (
        r#"DeviceLogonEvents
| where ActionType == "LogonSuccess"
| summarize arg_min(Timestamp, *) by AccountName
| project AccountName, Timestamp, DeviceName, LogonType"#,
        &["AccountName", "Timestamp", "DeviceName", "LogonType"],
    ),
    // 9. Brute force: many failures then a success.
    (
        r#"let Failures = DeviceLogonEvents
| where ActionType == "LogonFailed"
| summarize Failed = count() by AccountName, DeviceName
| where Failed > 2;
let Successes = DeviceLogonEvents
| where ActionType == "LogonSuccess"
| summarize LastSuccess = max(Timestamp) by AccountName, DeviceName;
Failures
| join kind=inner Successes on AccountName, DeviceName
| project AccountName, DeviceName, Failed, LastSuccess"#,
        &["AccountName", "DeviceName", "Failed", "LastSuccess"],
    ),
    // 10. Network connections by processes that never run from System32.
    (
        r#"DeviceNetworkEvents
| where RemotePort in (4444, 8080, 8443, 1337)
| where InitiatingProcessFileName !in~ ("svchost.exe", "msedge.exe", "chrome.exe")
| summarize Connections = count(), Ports = make_set(RemotePort) by DeviceName, InitiatingProcessFileName"#,
        &[
            "DeviceName",
            "InitiatingProcessFileName",
            "Connections",
            "Ports",
        ],
    ),
    // 11. Phishing mail recipients that later ran a script host.
    (
        r#"let Recipients = EmailEvents
| where ThreatTypes has "Phish" or DeliveryAction == "Delivered" and Subject has_any ("invoice", "payment")
| extend AccountName = tostring(split(RecipientEmailAddress, "@")[0])
| distinct AccountName;
DeviceProcessEvents
| where FileName in~ ("wscript.exe", "cscript.exe", "mshta.exe", "powershell.exe")
| join kind=leftsemi Recipients on AccountName
| project Timestamp, DeviceName, AccountName, FileName"#,
        &["Timestamp", "DeviceName", "AccountName", "FileName"],
    ),
    // 12. Accounts whose mail was never delivered (anti join).
    (
        r#"IdentityLogonEvents
| where ActionType == "LogonSuccess"
| distinct AccountName
| join kind=leftanti (EmailEvents | extend AccountName = tostring(split(RecipientEmailAddress, "@")[0])) on AccountName"#,
        &["AccountName"],
    ),
    // 13. Same hunt across the process and network tables.
    (
        r#"union withsource=SourceTable DeviceProcessEvents, DeviceNetworkEvents
| where InitiatingProcessFileName =~ "powershell.exe"
| summarize Events = count() by SourceTable"#,
        &["SourceTable", "Events"],
    ),
    // 14. Every Device*Events table at once.
    (
        r#"union Device*Events
| where Timestamp > ago(1d)
| summarize Events = count() by DeviceName
| top 5 by Events"#,
        &["DeviceName", "Events"],
    ),
    // 15. Command-line tokens.
    (
        r#"DeviceProcessEvents
| where FileName =~ "cmd.exe"
| extend Args = split(ProcessCommandLine, " ")
| extend ArgCount = array_length(Args), FirstArg = tostring(Args[1]), LastArg = tostring(Args[-1])
| project DeviceName, ArgCount, FirstArg, LastArg
| take 10"#,
        &["DeviceName", "ArgCount", "FirstArg", "LastArg"],
    ),
    // 16. IPv4 addresses out of command lines.
    (
        r#"DeviceProcessEvents
| extend IP = extract(@"(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})", 1, ProcessCommandLine)
| where isnotempty(IP)
| summarize Seen = count() by IP"#,
        &["IP", "Seen"],
    ),
    // 17. Base64-looking blobs.
    (
        r#"DeviceProcessEvents
| where ProcessCommandLine matches regex @"[A-Za-z0-9+/]{40,}={0,2}"
| project Timestamp, DeviceName, ProcessCommandLine"#,
        &["Timestamp", "DeviceName", "ProcessCommandLine"],
    ),
    // 18. All URLs in command lines.
    (
        r#"DeviceProcessEvents
| extend Urls = extract_all(@"(https?://[^\s""']+)", ProcessCommandLine)
| where array_length(Urls) > 0
| mv-expand Url = Urls to typeof(string)
| summarize Devices = dcount(DeviceName) by Url"#,
        &["Url", "Devices"],
    ),
    // 19. Port classes with case().
    (
        r#"DeviceNetworkEvents
| extend Service = case(RemotePort == 443, "https", RemotePort == 80, "http", RemotePort in (445, 139), "smb", RemotePort == 3389, "rdp", "other")
| summarize Connections = count() by Service"#,
        &["Service", "Connections"],
    ),
    // 20. A user function over the process table.
    (
        r#"let ProcessesOf = (name: string) {
    DeviceProcessEvents | where FileName =~ name
};
ProcessesOf("powershell.exe")
| summarize Runs = count() by DeviceName
| top 10 by Runs"#,
        &["DeviceName", "Runs"],
    ),
    // 21. A scalar user function.
    (
        r#"let IsAdminShare = (path: string) { path has_any ("ADMIN$", "C$", "IPC$") };
DeviceProcessEvents
| extend AdminShare = IsAdminShare(ProcessCommandLine)
| summarize Hits = countif(AdminShare) by DeviceName"#,
        &["DeviceName", "Hits"],
    ),
    // 22. Lateral movement: RDP logons followed by a process on the target.
    (
        r#"DeviceLogonEvents
| where LogonType == "RemoteInteractive" and ActionType == "LogonSuccess"
| project LogonTime = Timestamp, DeviceId, AccountName
| join kind=inner (DeviceProcessEvents | project ProcTime = Timestamp, DeviceId, AccountName, FileName) on DeviceId, AccountName
| where ProcTime between (LogonTime .. 1h)
| summarize Processes = make_set(FileName, 10) by DeviceId, AccountName"#,
        &["DeviceId", "AccountName", "Processes"],
    ),
    // 23. Credential-dump tools with has_all.
    (
        r#"DeviceProcessEvents
| where ProcessCommandLine has_all ("sekurlsa", "logonpasswords") or ProcessCommandLine has_all ("lsass", "dump")
| project Timestamp, DeviceName, AccountName, ProcessCommandLine"#,
        &[
            "Timestamp",
            "DeviceName",
            "AccountName",
            "ProcessCommandLine",
        ],
    ),
    // 24. Parse the sender domain.
    (
        r#"EmailEvents
| parse SenderFromAddress with SenderUser "@" SenderDomain
| summarize Mails = count(), Recipients = dcount(RecipientEmailAddress) by SenderDomain
| top 10 by Mails"#,
        &["SenderDomain", "Mails", "Recipients"],
    ),
    // 25. Parse a version out of a folder path.
    (
        r#"DeviceProcessEvents
| where FolderPath has "Platform"
| parse FolderPath with * @"\Platform\" Version @"\" *
| distinct Version"#,
        &["Version"],
    ),
    // 26. A bag per device and its members.
    (
        r#"DeviceNetworkEvents
| summarize Ports = make_bag(bag_pack(tostring(RemotePort), RemoteUrl)) by DeviceName
| extend Https = Ports["443"]
| project DeviceName, Https"#,
        &["DeviceName", "Https"],
    ),
    // 27. Dynamic literal, member access and indexing.
    (
        r#"let Rules = dynamic({"ports": [22, 23, 3389], "label": "remote admin"});
DeviceNetworkEvents
| where RemotePort in (Rules.ports)
| extend Label = tostring(Rules.label), FirstPort = toint(Rules["ports"][0])
| summarize count() by Label, FirstPort"#,
        &["Label", "FirstPort", "count_"],
    ),
    // 28. pack_array and strcat_array.
    (
        r#"DeviceLogonEvents
| take 5
| extend Who = pack_array(AccountDomain, AccountName)
| extend Joined = strcat_array(Who, "\\")
| project Joined"#,
        &["Joined"],
    ),
    // 29. make_list per device, its length.
    (
        r#"DeviceProcessEvents
| where AccountName != "system"
| summarize Files = make_list(FileName), Accounts = makeset(AccountName) by DeviceName
| extend Distinct = array_length(Accounts)
| project DeviceName, Distinct"#,
        &["DeviceName", "Distinct"],
    ),
    // 30. Right outer join keeps every alert title.
    (
        r#"AlertEvidence
| summarize Evidence = count() by AlertId
| join kind=rightouter (AlertInfo | project AlertId, Title) on AlertId
| project Title, Evidence
| take 30"#,
        &["Title", "Evidence"],
    ),
    // 31. Full outer join of two device summaries.
    (
        r#"let Logons = DeviceLogonEvents | summarize Logons = count() by DeviceName;
let Conns = DeviceNetworkEvents | summarize Conns = count() by DeviceName;
Logons
| join kind=fullouter Conns on DeviceName
| extend Device = iff(isempty(DeviceName), DeviceName1, DeviceName)
| project Device, Logons, Conns"#,
        &["Device", "Logons", "Conns"],
    ),
    // 32. rightanti: alerts without evidence.
    (
        r#"AlertEvidence
| distinct AlertId
| join kind=rightanti AlertInfo on AlertId
| project AlertId, Title"#,
        &["AlertId", "Title"],
    ),
    // 33. rightsemi: alert info of alerts with device evidence.
    (
        r#"AlertEvidence
| where EntityType == "Machine"
| join kind=rightsemi AlertInfo on AlertId
| summarize Alerts = count() by Severity"#,
        &["Severity", "Alerts"],
    ),
    // 34. The default join (innerunique).
    (
        r#"DeviceProcessEvents
| project DeviceId, FileName
| join (DeviceNetworkEvents | project DeviceId, RemoteIP) on DeviceId
| take 10
| project DeviceId, FileName, RemoteIP"#,
        &["DeviceId", "FileName", "RemoteIP"],
    ),
    // 35. Identity sign-ins from many countries.
    (
        r#"IdentityLogonEvents
| where isnotempty(Location)
| summarize Countries = make_set(Location), Logons = count() by AccountUpn
| where array_length(Countries) > 1
| project AccountUpn, Countries, Logons"#,
        &["AccountUpn", "Countries", "Logons"],
    ),
    // 36. Failure reasons per application with iff.
    (
        r#"IdentityLogonEvents
| extend Failed = iff(ActionType == "LogonFailed", 1, 0)
| summarize Attempts = count(), Failures = sum(Failed) by Application
| extend FailureRate = round(100.0 * Failures / Attempts, 1)"#,
        &["Application", "Attempts", "Failures", "FailureRate"],
    ),
    // 37. Mail from external senders with attachments, domain by split.
    (
        r#"EmailEvents
| where EmailDirection == "Inbound" and AttachmentCount > 0
| extend Domain = tostring(split(SenderFromAddress, "@")[-1])
| where Domain !in ("contoso.com", "fabrikam.com")
| summarize Mails = count() by Domain
| top 10 by Mails"#,
        &["Domain", "Mails"],
    ),
    // 38. Scalar let from toscalar over a table.
    (
        r#"let Busiest = toscalar(DeviceProcessEvents | summarize count() by DeviceName | top 1 by count_ | project DeviceName);
DeviceProcessEvents
| where DeviceName == Busiest
| summarize count() by FileName"#,
        &["FileName", "count_"],
    ),
    // 39. in against a tabular let.
    (
        r#"let HighAlertDevices = AlertEvidence | where Severity == "High" | project DeviceName;
DeviceNetworkEvents
| where DeviceName in (HighAlertDevices)
| summarize Remote = dcount(RemoteIP) by DeviceName"#,
        &["DeviceName", "Remote"],
    ),
    // 40. extractjson out of a JSON text column.
    (
        r#"AlertInfo
| extend First = extractjson("$[0]", AttackTechniques)
| summarize count() by First"#,
        &["First", "count_"],
    ),
    // 41. print a computed value.
    (
        r#"print Week = ago(7d) < now(), Name = strcat("a", "b")"#,
        &["Week", "Name"],
    ),
    // 42. A leading zero-width space and a BOM do not matter.
    ("\u{feff}\u{200b}DeviceLogonEvents | count", &["Count"]),
    // 43. Bag member access on a parsed JSON string.
    (
        r#"DeviceProcessEvents
| take 20
| extend Info = parse_json(strcat('{"dev":"', DeviceName, '","pid":', tostring(ProcessId), '}'))
| extend Dev = tostring(Info.dev), Pid = tolong(Info.pid)
| where Dev == DeviceName and Pid == ProcessId
| project Dev, Pid"#,
        &["Dev", "Pid"],
    ),
    // 44. Processes of accounts seen in a credential alert (leftsemi through a let).
    (
        r#"let Suspects = AlertEvidence
| where Categories has "CredentialAccess" and EntityType == "User"
| distinct AccountName;
DeviceProcessEvents
| join kind=leftsemi Suspects on AccountName
| summarize Processes = dcount(FileName) by AccountName"#,
        &["AccountName", "Processes"],
    ),
    // 45. mv-expand over a dynamic literal to fan out indicators.
    (
        r#"let Indicators = dynamic(["whoami", "net user", "nltest", "vssadmin"]);
DeviceProcessEvents
| extend Indicator = Indicators
| mv-expand Indicator to typeof(string)
| where ProcessCommandLine has Indicator
| summarize Hits = count() by Indicator"#,
        &["Indicator", "Hits"],
    ),
    // 46. Device and network table union, renamed source column.
    (
        r#"union withsource=Source (DeviceLogonEvents | where ActionType == "LogonFailed"), (IdentityLogonEvents | where ActionType == "LogonFailed")
| summarize Failures = count() by Source, AccountName
| top 10 by Failures"#,
        &["Source", "AccountName", "Failures"],
    ),
    // 47. Unsupported-but-valid tail operator does not fail: render.
    (
        r#"DeviceProcessEvents
| summarize Runs = count() by bin(Timestamp, 1d)
| render timechart"#,
        &["Timestamp", "Runs"],
    ),
    // 48. Case-insensitive in and not-in over user names.
    (
        r#"DeviceLogonEvents
| where AccountName in~ ("ADMINISTRATOR", "Admin") or AccountName !in ("system", "local service")
| summarize Logons = count() by IsLocalAdmin"#,
        &["IsLocalAdmin", "Logons"],
    ),
];

#[test]
fn corpus_runs() {
    let opts = RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    };
    let mut ran = 0;
    let mut failures = Vec::new();
    for (i, (query, cols)) in CORPUS.iter().enumerate() {
        match run(query, data(), &opts) {
            Ok(out) => {
                ran += 1;
                let got: Vec<&str> = out.schema.iter().map(|c| c.name.as_str()).collect();
                if got != *cols {
                    failures.push(format!("#{}: columns {got:?}, expected {cols:?}", i + 1));
                }
            }
            Err(e) => failures.push(format!("#{}: {e}", i + 1)),
        }
    }
    println!("corpus: {ran} of {} queries run", CORPUS.len());
    assert!(CORPUS.len() >= 40);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
