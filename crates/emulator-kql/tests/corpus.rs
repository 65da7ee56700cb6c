//! A corpus of hunting queries written for the emulator in the style of real hunts
//! (several operators combined, every table used). Every query must run and produce the
//! expected columns, and nine in ten must return rows (from the planted attack stories
//! and the generated noise); `corpus_runs` prints how many ran and which came back empty,
//! so the figures can be compared across versions of the engine.

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
    // 49. Encoded PowerShell launched by an Office application, with the account and device.
    (
        r#"DeviceProcessEvents
| where InitiatingProcessFileName in~ ("winword.exe", "excel.exe", "powerpnt.exe")
| where FileName =~ "powershell.exe" and ProcessCommandLine has "-enc"
| project Timestamp, DeviceName, AccountName, ProcessCommandLine"#,
        &[
            "Timestamp",
            "DeviceName",
            "AccountName",
            "ProcessCommandLine",
        ],
    ),
    // 50. Network connections made by PowerShell started from Office (process id join).
    (
        r#"let OfficePs = DeviceProcessEvents
| where InitiatingProcessFileName =~ "winword.exe" and FileName =~ "powershell.exe"
| project DeviceId, ProcessId;
DeviceNetworkEvents
| join kind=inner OfficePs on DeviceId, $left.InitiatingProcessId == $right.ProcessId
| project Timestamp, DeviceName, RemoteIP, RemotePort, RemoteUrl"#,
        &[
            "Timestamp",
            "DeviceName",
            "RemoteIP",
            "RemotePort",
            "RemoteUrl",
        ],
    ),
    // 51. Scheduled tasks created from a script host or shell.
    (
        r#"DeviceProcessEvents
| where FileName =~ "schtasks.exe" and ProcessCommandLine has "/create"
| where InitiatingProcessFileName in~ ("powershell.exe", "cmd.exe", "wscript.exe")
| project Timestamp, DeviceName, ProcessCommandLine, InitiatingProcessFileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "ProcessCommandLine",
            "InitiatingProcessFileName",
        ],
    ),
    // 52. Scheduled task creations seen by the sensor, task name pulled from AdditionalFields.
    (
        r#"DeviceEvents
| where ActionType == "ScheduledTaskCreated"
| extend Fields = parse_json(AdditionalFields)
| extend TaskName = tostring(Fields.TaskName)
| where isnotempty(TaskName)
| project Timestamp, DeviceName, TaskName"#,
        &["Timestamp", "DeviceName", "TaskName"],
    ),
    // 53. Files downloaded by PowerShell, with their origin.
    (
        r#"DeviceFileEvents
| where InitiatingProcessFileName =~ "powershell.exe" and isnotempty(FileOriginUrl)
| project Timestamp, DeviceName, FileName, FolderPath, FileOriginUrl, FileOriginIP, SHA256"#,
        &[
            "Timestamp",
            "DeviceName",
            "FileName",
            "FolderPath",
            "FileOriginUrl",
            "FileOriginIP",
            "SHA256",
        ],
    ),
    // 54. Executables written to C:\Users\Public.
    (
        r#"DeviceFileEvents
| where ActionType == "FileCreated" and FolderPath startswith @"C:\Users\Public\" and FileName endswith ".exe"
| summarize Writers = make_set(InitiatingProcessFileName), Devices = dcount(DeviceId) by FileName"#,
        &["FileName", "Writers", "Devices"],
    ),
    // 55. Run keys pointing at a public folder.
    (
        r#"DeviceRegistryEvents
| where ActionType == "RegistryValueSet" and RegistryKey has @"CurrentVersion\Run"
| where RegistryValueData has @"\Users\Public\"
| project Timestamp, DeviceName, RegistryValueName, RegistryValueData, InitiatingProcessFileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "RegistryValueName",
            "RegistryValueData",
            "InitiatingProcessFileName",
        ],
    ),
    // 56. Task cache keys created (persistence through the scheduler).
    (
        r#"DeviceRegistryEvents
| where RegistryKey has @"Schedule\TaskCache\Tree"
| extend Task = tostring(split(RegistryKey, @"\")[-1])
| project Timestamp, DeviceName, Task"#,
        &["Timestamp", "DeviceName", "Task"],
    ),
    // 57. Malicious attachments delivered to the inbox.
    (
        r#"EmailAttachmentInfo
| where ThreatTypes has "Malware"
| join kind=inner (EmailEvents | where DeliveryAction == "Delivered") on NetworkMessageId
| project Timestamp, RecipientEmailAddress, SenderFromAddress, Subject, FileName, SHA256"#,
        &[
            "Timestamp",
            "RecipientEmailAddress",
            "SenderFromAddress",
            "Subject",
            "FileName",
            "SHA256",
        ],
    ),
    // 58. Attachments of delivered mail that later appeared on a device.
    (
        r#"let Attachments = EmailAttachmentInfo
| where isnotempty(SHA256)
| project NetworkMessageId, SHA256, AttachmentName = FileName;
DeviceFileEvents
| join kind=inner Attachments on SHA256
| project Timestamp, DeviceName, AttachmentName, FolderPath, NetworkMessageId"#,
        &[
            "Timestamp",
            "DeviceName",
            "AttachmentName",
            "FolderPath",
            "NetworkMessageId",
        ],
    ),
    // 59. Document macros: Office loading the VBA engine.
    (
        r#"DeviceImageLoadEvents
| where FileName =~ "vbe7.dll" and InitiatingProcessFileName in~ ("winword.exe", "excel.exe")
| summarize Loads = count() by DeviceName, InitiatingProcessFileName"#,
        &["DeviceName", "InitiatingProcessFileName", "Loads"],
    ),
    // 60. Clicks let through to a URL later flagged.
    (
        r#"UrlClickEvents
| where ActionType == "ClickAllowed" and IsClickedThrough
| join kind=inner (EmailUrlInfo | project NetworkMessageId, UrlDomain) on NetworkMessageId
| project Timestamp, AccountUpn, Url, UrlDomain"#,
        &["Timestamp", "AccountUpn", "Url", "UrlDomain"],
    ),
    // 61. Blocked clicks per user.
    (
        r#"UrlClickEvents
| where ActionType startswith "ClickBlocked"
| summarize Blocked = count(), Urls = make_set(Url, 5) by AccountUpn
| top 10 by Blocked desc"#,
        &["AccountUpn", "Blocked", "Urls"],
    ),
    // 62. Mail removed after delivery (ZAP), by kind.
    (
        r#"EmailPostDeliveryEvents
| where ActionType in ("Phish ZAP", "Malware ZAP")
| summarize Removed = count() by ActionType, ActionResult"#,
        &["ActionType", "ActionResult", "Removed"],
    ),
    // 63. Delivered mail later quarantined, with the sender.
    (
        r#"EmailPostDeliveryEvents
| where DeliveryLocation == "Quarantine"
| join kind=inner (EmailEvents | project NetworkMessageId, SenderFromAddress, Subject) on NetworkMessageId
| project Timestamp, RecipientEmailAddress, SenderFromAddress, Subject, ActionType"#,
        &[
            "Timestamp",
            "RecipientEmailAddress",
            "SenderFromAddress",
            "Subject",
            "ActionType",
        ],
    ),
    // 64. Senders failing authentication that still reached the inbox.
    (
        r#"EmailEvents
| where DeliveryAction == "Delivered"
| extend Auth = parse_json(AuthenticationDetails)
| where tostring(Auth.DMARC) == "fail" or tostring(Auth.SPF) == "fail"
| project Timestamp, SenderFromAddress, RecipientEmailAddress, Subject"#,
        &[
            "Timestamp",
            "SenderFromAddress",
            "RecipientEmailAddress",
            "Subject",
        ],
    ),
    // 65. Inbound phish per recipient per day.
    (
        r#"EmailEvents
| where EmailDirection == "Inbound" and ThreatTypes has "Phish"
| summarize Phish = count() by RecipientEmailAddress, Day = bin(Timestamp, 1d)
| where Phish >= 1"#,
        &["RecipientEmailAddress", "Day", "Phish"],
    ),
    // 66. URL domains embedded in mail, most common first.
    (
        r#"EmailUrlInfo
| summarize Mails = dcount(NetworkMessageId) by UrlDomain
| sort by Mails desc
| take 10"#,
        &["UrlDomain", "Mails"],
    ),
    // 67. QR-code URLs in mail.
    (
        r#"EmailUrlInfo
| where UrlLocation == "QRCode"
| join kind=inner (EmailEvents | project NetworkMessageId, RecipientEmailAddress) on NetworkMessageId
| project Timestamp, RecipientEmailAddress, Url"#,
        &["Timestamp", "RecipientEmailAddress", "Url"],
    ),
    // 68. Qakbot-style mail collection folders.
    (
        r#"DeviceFileEvents
| where FolderPath has "EmailStorage"
| summarize Files = count(), First = min(Timestamp) by DeviceName, InitiatingProcessFileName"#,
        &["DeviceName", "InitiatingProcessFileName", "Files", "First"],
    ),
    // 69. Browser credential stores copied with esentutl.
    (
        r#"DeviceProcessEvents
| where FileName =~ "esentutl.exe" and ProcessCommandLine has "WebCache"
| project Timestamp, DeviceName, AccountName, ProcessCommandLine, InitiatingProcessFileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "AccountName",
            "ProcessCommandLine",
            "InitiatingProcessFileName",
        ],
    ),
    // 70. Rundll32 loading a DLL from ProgramData.
    (
        r#"DeviceProcessEvents
| where FileName =~ "rundll32.exe" and ProcessCommandLine matches regex @"(?i)\\programdata\\[^\\]+\\[^\\]+\.dll"
| project Timestamp, DeviceName, ProcessCommandLine, InitiatingProcessFileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "ProcessCommandLine",
            "InitiatingProcessFileName",
        ],
    ),
    // 71. Connections to uncommon ports by system binaries.
    (
        r#"DeviceNetworkEvents
| where RemotePort in (2222, 995, 4444) and RemoteIPType == "Public"
| summarize Connections = count(), Ports = make_set(RemotePort) by DeviceName, InitiatingProcessFileName"#,
        &[
            "DeviceName",
            "InitiatingProcessFileName",
            "Connections",
            "Ports",
        ],
    ),
    // 72. Remote threads created in another process.
    (
        r#"DeviceEvents
| where ActionType == "CreateRemoteThreadApiCall"
| project Timestamp, DeviceName, InitiatingProcessFileName, Target = FileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "InitiatingProcessFileName",
            "Target",
        ],
    ),
    // 73. Processes opening lsass.
    (
        r#"DeviceEvents
| where ActionType == "OpenProcessApiCall" and FileName =~ "lsass.exe"
| project Timestamp, DeviceName, InitiatingProcessFileName, InitiatingProcessCommandLine, InitiatingProcessAccountName"#,
        &[
            "Timestamp",
            "DeviceName",
            "InitiatingProcessFileName",
            "InitiatingProcessCommandLine",
            "InitiatingProcessAccountName",
        ],
    ),
    // 74. Minidumps through comsvcs.dll.
    (
        r#"DeviceProcessEvents
| where ProcessCommandLine has_all ("comsvcs", "MiniDump")
| project Timestamp, DeviceName, AccountName, ProcessCommandLine"#,
        &[
            "Timestamp",
            "DeviceName",
            "AccountName",
            "ProcessCommandLine",
        ],
    ),
    // 75. ProcDump against lsass, by its original file name.
    (
        r#"DeviceProcessEvents
| where ProcessVersionInfoOriginalFileName =~ "procdump" or FileName startswith "procdump"
| where ProcessCommandLine has "lsass"
| project Timestamp, DeviceName, FileName, ProcessCommandLine"#,
        &["Timestamp", "DeviceName", "FileName", "ProcessCommandLine"],
    ),
    // 76. Dump files created in Windows\Temp.
    (
        r#"DeviceFileEvents
| where FileName endswith ".dmp" and FolderPath startswith @"C:\Windows\Temp"
| project Timestamp, DeviceName, FileName, InitiatingProcessFileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "FileName",
            "InitiatingProcessFileName",
        ],
    ),
    // 77. Network logons with NTLM from one source to many machines.
    (
        r#"DeviceLogonEvents
| where LogonType == "Network" and Protocol == "NTLM" and ActionType == "LogonSuccess"
| summarize Targets = dcount(DeviceName), Accounts = make_set(AccountName) by RemoteIP
| where Targets >= 5"#,
        &["RemoteIP", "Targets", "Accounts"],
    ),
    // 78. Admin logons after a credential dump on the same source.
    (
        r#"let Dumpers = DeviceEvents
| where ActionType == "OpenProcessApiCall" and FileName =~ "lsass.exe"
| distinct DeviceName;
DeviceLogonEvents
| where RemoteDeviceName in (Dumpers)
| summarize Logons = count() by AccountName, RemoteDeviceName"#,
        &["AccountName", "RemoteDeviceName", "Logons"],
    ),
    // 79. Identity: NTLM resource access by account and source device.
    (
        r#"IdentityLogonEvents
| where Protocol == "Ntlm" and LogonType == "Resource access"
| summarize Targets = dcount(TargetDeviceName) by AccountName, DeviceName
| sort by Targets desc
| take 10"#,
        &["AccountName", "DeviceName", "Targets"],
    ),
    // 80. Identity: SAMR queries for privileged groups.
    (
        r#"IdentityQueryEvents
| where ActionType == "SAMR query" and QueryTarget in ("Domain Admins", "Enterprise Admins")
| project Timestamp, AccountName, DeviceName, QueryTarget"#,
        &["Timestamp", "AccountName", "DeviceName", "QueryTarget"],
    ),
    // 81. Identity: LDAP reconnaissance volume by account.
    (
        r#"IdentityQueryEvents
| where ActionType == "LDAP query"
| summarize Queries = count(), Targets = dcount(QueryTarget) by AccountUpn
| top 10 by Queries desc"#,
        &["AccountUpn", "Queries", "Targets"],
    ),
    // 82. Identity: directory changes to group membership.
    (
        r#"IdentityDirectoryEvents
| where ActionType == "Group Membership changed"
| project Timestamp, AccountUpn, TargetAccountUpn, DestinationDeviceName
| take 20"#,
        &[
            "Timestamp",
            "AccountUpn",
            "TargetAccountUpn",
            "DestinationDeviceName",
        ],
    ),
    // 83. Identity: password changes per day.
    (
        r#"IdentityDirectoryEvents
| where ActionType == "Account Password changed"
| summarize Changes = count() by bin(Timestamp, 1d)
| sort by Timestamp asc"#,
        &["Timestamp", "Changes"],
    ),
    // 84. Identity: accounts at risk with their department.
    (
        r#"IdentityInfo
| where RiskLevel in ("Medium", "High")
| summarize arg_max(Timestamp, Department, JobTitle, RiskLevel) by AccountUpn
| project AccountUpn, Department, JobTitle, RiskLevel"#,
        &["AccountUpn", "Department", "JobTitle", "RiskLevel"],
    ),
    // 85. Identity: failed logons followed by a success, per account.
    (
        r#"IdentityLogonEvents
| summarize Failed = countif(ActionType == "LogonFailed"), Succeeded = countif(ActionType == "LogonSuccess") by AccountUpn
| where Failed > 0 and Succeeded > 0
| extend FailureShare = round(100.0 * Failed / (Failed + Succeeded), 1)
| top 10 by Failed desc"#,
        &["AccountUpn", "Failed", "Succeeded", "FailureShare"],
    ),
    // 86. Cloud: mail items read from an anonymous or foreign address.
    (
        r#"CloudAppEvents
| where ActionType == "MailItemsAccessed" and CountryCode !in ("US", "GB", "DE", "IN", "NL")
| project Timestamp, AccountDisplayName, IPAddress, CountryCode, UserAgent"#,
        &[
            "Timestamp",
            "AccountDisplayName",
            "IPAddress",
            "CountryCode",
            "UserAgent",
        ],
    ),
    // 87. Cloud: inbox rules created.
    (
        r#"CloudAppEvents
| where ActionType == "New-InboxRule"
| project Timestamp, AccountObjectId, IPAddress, Application"#,
        &["Timestamp", "AccountObjectId", "IPAddress", "Application"],
    ),
    // 88. Cloud: mass downloads per account per hour.
    (
        r#"CloudAppEvents
| where ActionType == "FileDownloaded"
| summarize Downloads = count() by AccountObjectId, Hour = bin(Timestamp, 1h)
| where Downloads >= 2"#,
        &["AccountObjectId", "Hour", "Downloads"],
    ),
    // 89. Cloud: operations by script user agents.
    (
        r#"CloudAppEvents
| where UserAgent has "python-requests"
| summarize Events = count(), Actions = make_set(ActionType) by AccountDisplayName"#,
        &["AccountDisplayName", "Events", "Actions"],
    ),
    // 90. Cloud: the operation recorded in the raw event.
    (
        r#"CloudAppEvents
| extend Operation = tostring(RawEventData.Operation)
| where Operation == ActionType
| summarize count() by Operation"#,
        &["Operation", "count_"],
    ),
    // 91. Cloud: activity objects expanded.
    (
        r#"CloudAppEvents
| where ActionType == "FileAccessed"
| mv-expand Obj = ActivityObjects
| extend ObjName = tostring(Obj.Name)
| summarize Accesses = count() by ObjName"#,
        &["ObjName", "Accesses"],
    ),
    // 92. Device inventory: the latest report per device.
    (
        r#"DeviceInfo
| summarize arg_max(Timestamp, OSPlatform, OSBuild, PublicIP) by DeviceId, DeviceName
| project DeviceName, OSPlatform, OSBuild, PublicIP"#,
        &["DeviceName", "OSPlatform", "OSBuild", "PublicIP"],
    ),
    // 93. Device inventory: servers exposed to the internet.
    (
        r#"DeviceInfo
| where DeviceType == "Server" and IsInternetFacing
| distinct DeviceName, OSPlatform"#,
        &["DeviceName", "OSPlatform"],
    ),
    // 94. Device inventory: logged-on users expanded from JSON.
    (
        r#"DeviceInfo
| take 200
| mv-expand User = parse_json(LoggedOnUsers)
| extend UserName = tostring(User.UserName)
| summarize Devices = dcount(DeviceId) by UserName
| top 5 by Devices desc"#,
        &["UserName", "Devices"],
    ),
    // 95. Network adapters and their addresses.
    (
        r#"DeviceNetworkInfo
| where NetworkAdapterStatus == "Up"
| mv-expand Address = parse_json(IPAddresses)
| extend IP = tostring(Address.IPAddress)
| summarize Adapters = dcount(NetworkAdapterName) by DeviceName, IP
| take 20"#,
        &["DeviceName", "IP", "Adapters"],
    ),
    // 96. DNS servers used across the fleet.
    (
        r#"DeviceNetworkInfo
| mv-expand Dns = parse_json(DnsAddresses)
| summarize Devices = dcount(DeviceId) by Dns = tostring(Dns)"#,
        &["Dns", "Devices"],
    ),
    // 97. Unsigned files seen on devices.
    (
        r#"DeviceFileCertificateInfo
| where not(IsSigned)
| summarize Devices = dcount(DeviceId) by SHA1
| take 20"#,
        &["SHA1", "Devices"],
    ),
    // 98. Processes whose image is signed by Microsoft (certificate join).
    (
        r#"DeviceFileCertificateInfo
| where IsRootSignerMicrosoft
| distinct SHA1
| join kind=inner (DeviceProcessEvents | project SHA1, FileName) on SHA1
| summarize Runs = count() by FileName"#,
        &["FileName", "Runs"],
    ),
    // 99. Vulnerable software with a public exploit, per device.
    (
        r#"DeviceTvmSoftwareVulnerabilities
| join kind=inner (DeviceTvmSoftwareVulnerabilitiesKB | where IsExploitAvailable) on CveId
| summarize Cves = make_set(CveId) by DeviceName
| take 20"#,
        &["DeviceName", "Cves"],
    ),
    // 100. Critical CVEs and how many devices have them.
    (
        r#"DeviceTvmSoftwareVulnerabilities
| where VulnerabilitySeverityLevel == "Critical"
| summarize Devices = dcount(DeviceId) by CveId, SoftwareName
| sort by Devices desc"#,
        &["CveId", "SoftwareName", "Devices"],
    ),
    // 101. Software past its end of support.
    (
        r#"DeviceTvmSoftwareInventory
| where EndOfSupportStatus == "EOS Version"
| summarize Devices = dcount(DeviceId) by SoftwareVendor, SoftwareName, SoftwareVersion"#,
        &[
            "SoftwareVendor",
            "SoftwareName",
            "SoftwareVersion",
            "Devices",
        ],
    ),
    // 102. KB: CVSS scores as numbers.
    (
        r#"DeviceTvmSoftwareVulnerabilitiesKB
| extend Score = todouble(CvssScore)
| where Score >= 9.0
| project CveId, Score, VulnerabilitySeverityLevel"#,
        &["CveId", "Score", "VulnerabilitySeverityLevel"],
    ),
    // 103. KB: affected software expanded.
    (
        r#"DeviceTvmSoftwareVulnerabilitiesKB
| mv-expand Affected = AffectedSoftware
| project CveId, Affected = tostring(Affected)"#,
        &["CveId", "Affected"],
    ),
    // 104. Devices with a vulnerable browser that made public connections.
    (
        r#"let Vulnerable = DeviceTvmSoftwareVulnerabilities
| where SoftwareName in ("chrome", "edge_chromium-based")
| distinct DeviceId;
DeviceNetworkEvents
| where DeviceId in (Vulnerable) and RemoteIPType == "Public"
| summarize Connections = count() by DeviceName
| top 10 by Connections desc"#,
        &["DeviceName", "Connections"],
    ),
    // 105. Alerts with their MITRE techniques and evidence counts.
    (
        r#"AlertInfo
| join kind=leftouter (AlertEvidence | summarize Evidence = count() by AlertId) on AlertId
| project Timestamp, Title, Severity, AttackTechniques, Evidence
| take 50"#,
        &[
            "Timestamp",
            "Title",
            "Severity",
            "AttackTechniques",
            "Evidence",
        ],
    ),
    // 106. High-severity alerts per service per day.
    (
        r#"AlertInfo
| where Severity == "High"
| summarize Alerts = count() by ServiceSource, Day = bin(Timestamp, 1d)"#,
        &["ServiceSource", "Day", "Alerts"],
    ),
    // 107. Devices in the evidence of more than one alert category.
    (
        r#"AlertEvidence
| where EntityType == "Machine" and isnotempty(DeviceName)
| summarize Categories = make_set(Categories), Alerts = dcount(AlertId) by DeviceName
| where Alerts > 1"#,
        &["DeviceName", "Categories", "Alerts"],
    ),
    // 108. Malware families named in evidence.
    (
        r#"AlertEvidence
| where isnotempty(ThreatFamily)
| summarize Files = make_set(FileName) by ThreatFamily"#,
        &["ThreatFamily", "Files"],
    ),
    // 109. Processes named in evidence, with their command lines.
    (
        r#"AlertEvidence
| where EntityType == "Process" and isnotempty(ProcessCommandLine)
| project Timestamp, Title, DeviceName, ProcessCommandLine"#,
        &["Timestamp", "Title", "DeviceName", "ProcessCommandLine"],
    ),
    // 110. Alert evidence files that ran on a device.
    (
        r#"AlertEvidence
| where EntityType == "File" and isnotempty(SHA256)
| distinct SHA256, FileName
| join kind=inner (DeviceProcessEvents | project SHA256, DeviceName) on SHA256
| summarize Devices = dcount(DeviceName) by FileName"#,
        &["FileName", "Devices"],
    ),
    // 111. Behaviors and their entities.
    (
        r#"BehaviorInfo
| join kind=inner BehaviorEntities on BehaviorId
| summarize Entities = make_set(EntityType) by BehaviorId, ActionType
| take 20"#,
        &["BehaviorId", "ActionType", "Entities"],
    ),
    // 112. Impossible travel behaviors per account.
    (
        r#"BehaviorInfo
| where ActionType == "ImpossibleTravelActivity"
| summarize Count = count(), Last = max(Timestamp) by AccountUpn
| top 10 by Count desc"#,
        &["AccountUpn", "Count", "Last"],
    ),
    // 113. Behavior entities that are IP addresses.
    (
        r#"BehaviorEntities
| where EntityType == "Ip" and isnotempty(RemoteIP)
| summarize Behaviors = dcount(BehaviorId) by RemoteIP
| take 10"#,
        &["RemoteIP", "Behaviors"],
    ),
    // 114. The same user across endpoint, identity and cloud (union with source).
    (
        r#"union withsource = Source
    (DeviceLogonEvents | where ActionType == "LogonSuccess" | project Timestamp, Upn = strcat(AccountName, "@", AccountDomain, ".com")),
    (IdentityLogonEvents | project Timestamp, Upn = AccountUpn),
    (CloudAppEvents | project Timestamp, Upn = tostring(RawEventData.UserId))
| summarize Sources = dcount(Source) by Upn
| where Sources >= 2
| take 20"#,
        &["Upn", "Sources"],
    ),
    // 115. Account SIDs shared between process and logon events.
    (
        r#"DeviceProcessEvents
| where AccountSid startswith "S-1-5-21"
| distinct AccountSid, AccountName
| join kind=inner (DeviceLogonEvents | distinct AccountSid, DeviceName) on AccountSid
| summarize Devices = dcount(DeviceName) by AccountName
| top 10 by Devices desc"#,
        &["AccountName", "Devices"],
    ),
    // 116. Parent-child-grandchild process chains that are rare.
    (
        r#"DeviceProcessEvents
| summarize Count = count() by InitiatingProcessParentFileName, InitiatingProcessFileName, FileName
| where Count == 1
| take 25"#,
        &[
            "InitiatingProcessParentFileName",
            "InitiatingProcessFileName",
            "FileName",
            "Count",
        ],
    ),
    // 117. Elevated processes by integrity level.
    (
        r#"DeviceProcessEvents
| where ProcessIntegrityLevel in ("High", "System") and ProcessTokenElevation == "TokenElevationTypeFull"
| summarize Runs = count() by FileName
| top 10 by Runs desc"#,
        &["FileName", "Runs"],
    ),
    // 118. Processes whose name does not match the original file name.
    (
        r#"DeviceProcessEvents
| where isnotempty(ProcessVersionInfoOriginalFileName) and ProcessVersionInfoOriginalFileName !~ FileName
| project Timestamp, DeviceName, FileName, ProcessVersionInfoOriginalFileName"#,
        &[
            "Timestamp",
            "DeviceName",
            "FileName",
            "ProcessVersionInfoOriginalFileName",
        ],
    ),
    // 119. Hash prevalence: files seen on few devices.
    (
        r#"DeviceProcessEvents
| summarize Devices = dcount(DeviceId), Runs = count() by SHA1, FileName
| where Devices <= 3
| sort by Runs desc
| take 20"#,
        &["SHA1", "FileName", "Devices", "Runs"],
    ),
    // 120. Command lines decoded from base64.
    (
        r#"DeviceProcessEvents
| where ProcessCommandLine has "-enc "
| extend Encoded = extract(@"-enc\s+([A-Za-z0-9+/=]+)", 1, ProcessCommandLine)
| extend Decoded = base64_decode_tostring(Encoded)
| where isnotempty(Decoded)
| project DeviceName, Encoded, Decoded"#,
        &["DeviceName", "Encoded", "Decoded"],
    ),
    // 121. LOLBins reaching the internet.
    (
        r#"let Lolbins = dynamic(["certutil.exe", "mshta.exe", "regsvr32.exe", "rundll32.exe", "powershell.exe"]);
DeviceNetworkEvents
| where InitiatingProcessFileName in~ (Lolbins) and RemoteIPType == "Public"
| summarize Connections = count(), Urls = make_set(RemoteUrl, 10) by InitiatingProcessFileName"#,
        &["InitiatingProcessFileName", "Connections", "Urls"],
    ),
    // 122. Certutil used to download.
    (
        r#"DeviceProcessEvents
| where FileName =~ "certutil.exe" and ProcessCommandLine has_any ("-urlcache", "-split", "http")
| summarize Runs = count() by DeviceName, ProcessCommandLine"#,
        &["DeviceName", "ProcessCommandLine", "Runs"],
    ),
    // 123. Shadow copies deleted.
    (
        r#"DeviceProcessEvents
| where ProcessCommandLine has "shadowcopy" and ProcessCommandLine has "delete"
| project Timestamp, DeviceName, AccountName, ProcessCommandLine"#,
        &[
            "Timestamp",
            "DeviceName",
            "AccountName",
            "ProcessCommandLine",
        ],
    ),
    // 124. Discovery commands, counted per device per hour.
    (
        r#"DeviceProcessEvents
| where FileName in~ ("whoami.exe", "net.exe", "ipconfig.exe", "nltest.exe") or ProcessCommandLine has_any ("whoami", "net group", "net user")
| summarize Commands = dcount(ProcessCommandLine) by DeviceName, bin(Timestamp, 1h)
| where Commands >= 2"#,
        &["DeviceName", "Timestamp", "Commands"],
    ),
    // 125. PsExec lateral movement.
    (
        r#"DeviceProcessEvents
| where FileName =~ "psexec.exe" or ProcessCommandLine has "psexec"
| extend Target = extract(@"\\\\([^\s]+)", 1, ProcessCommandLine)
| summarize Runs = count() by DeviceName, Target"#,
        &["DeviceName", "Target", "Runs"],
    ),
    // 126. Logon types per device, as columns (case).
    (
        r#"DeviceLogonEvents
| extend Kind = case(LogonType == "Interactive", "local", LogonType == "RemoteInteractive", "rdp", LogonType == "Network", "network", "other")
| summarize Logons = count() by DeviceName, Kind
| take 50"#,
        &["DeviceName", "Kind", "Logons"],
    ),
    // 127. RDP logons from public addresses.
    (
        r#"DeviceLogonEvents
| where LogonType == "RemoteInteractive" and RemoteIPType == "Public"
| project Timestamp, DeviceName, AccountName, RemoteIP"#,
        &["Timestamp", "DeviceName", "AccountName", "RemoteIP"],
    ),
    // 128. Local admin logons per account (iff).
    (
        r#"DeviceLogonEvents
| extend Admin = iff(IsLocalAdmin, "admin", "user")
| summarize Logons = count() by AccountName, Admin
| top 10 by Logons desc"#,
        &["AccountName", "Admin", "Logons"],
    ),
    // 129. Failed logons by reason.
    (
        r#"DeviceLogonEvents
| where ActionType == "LogonFailed"
| summarize Failures = count() by FailureReason"#,
        &["FailureReason", "Failures"],
    ),
    // 130. Connections per remote port, private versus public.
    (
        r#"DeviceNetworkEvents
| summarize Connections = count() by RemotePort, RemoteIPType
| top 15 by Connections desc"#,
        &["RemotePort", "RemoteIPType", "Connections"],
    ),
    // 131. Beaconing: regular connections to the same address.
    (
        r#"DeviceNetworkEvents
| where RemoteIPType == "Public"
| summarize Connections = count(), First = min(Timestamp), Last = max(Timestamp) by DeviceName, RemoteIP
| where Connections >= 3
| extend Span = Last - First
| top 10 by Connections desc"#,
        &[
            "DeviceName",
            "RemoteIP",
            "Connections",
            "First",
            "Last",
            "Span",
        ],
    ),
    // 132. Connections whose command line mentions a download.
    (
        r#"DeviceNetworkEvents
| where InitiatingProcessCommandLine has_any ("DownloadString", "Invoke-WebRequest", "-enc")
| project Timestamp, DeviceName, InitiatingProcessFileName, RemoteIP, RemoteUrl"#,
        &[
            "Timestamp",
            "DeviceName",
            "InitiatingProcessFileName",
            "RemoteIP",
            "RemoteUrl",
        ],
    ),
    // 133. Remote sessions started processes.
    (
        r#"DeviceNetworkEvents
| where IsInitiatingProcessRemoteSession
| summarize count() by InitiatingProcessFileName"#,
        &["InitiatingProcessFileName", "count_"],
    ),
    // 134. DNS queries seen by the sensor.
    (
        r#"DeviceEvents
| where ActionType == "DnsQueryResponse"
| summarize Queries = count() by DeviceName
| top 10 by Queries desc"#,
        &["DeviceName", "Queries"],
    ),
    // 135. Antivirus detections by file.
    (
        r#"DeviceEvents
| where ActionType == "AntivirusDetection"
| summarize Detections = count(), Devices = dcount(DeviceId) by FileName
| sort by Detections desc"#,
        &["FileName", "Detections", "Devices"],
    ),
    // 136. ASR audits of Office child processes.
    (
        r#"DeviceEvents
| where ActionType startswith "AsrOfficeChild"
| project Timestamp, DeviceName, FileName, InitiatingProcessFileName, ProcessCommandLine"#,
        &[
            "Timestamp",
            "DeviceName",
            "FileName",
            "InitiatingProcessFileName",
            "ProcessCommandLine",
        ],
    ),
    // 137. PowerShell commands recorded by the sensor, by command.
    (
        r#"DeviceEvents
| where ActionType == "PowerShellCommand"
| extend Command = tostring(parse_json(AdditionalFields).Command)
| summarize count() by Command"#,
        &["Command", "count_"],
    ),
    // 138. Event types per table across the endpoint (union with source).
    (
        r#"union withsource = Table DeviceFileEvents, DeviceRegistryEvents, DeviceImageLoadEvents
| summarize Events = count() by Table, ActionType"#,
        &["Table", "ActionType", "Events"],
    ),
    // 139. Files renamed, old and new name.
    (
        r#"DeviceFileEvents
| where ActionType == "FileRenamed"
| project Timestamp, DeviceName, PreviousFileName, FileName
| take 20"#,
        &["Timestamp", "DeviceName", "PreviousFileName", "FileName"],
    ),
    // 140. Scripts written by browsers.
    (
        r#"DeviceFileEvents
| where InitiatingProcessFileName in~ ("chrome.exe", "msedge.exe") and FileName endswith_cs ".ps1"
| summarize Files = count() by DeviceName"#,
        &["DeviceName", "Files"],
    ),
    // 141. Sensitivity labels on files touched.
    (
        r#"DeviceFileEvents
| where isnotempty(SensitivityLabel)
| summarize Files = dcount(FileName) by SensitivityLabel"#,
        &["SensitivityLabel", "Files"],
    ),
    // 142. Image loads of credential libraries by unusual processes.
    (
        r#"DeviceImageLoadEvents
| where FileName in~ ("samlib.dll", "vaultcli.dll", "dbghelp.dll")
| summarize Loads = count() by InitiatingProcessFileName, FileName
| top 10 by Loads desc"#,
        &["InitiatingProcessFileName", "FileName", "Loads"],
    ),
    // 143. AMSI loaded by script hosts.
    (
        r#"DeviceImageLoadEvents
| where FileName =~ "amsi.dll"
| summarize Processes = make_set(InitiatingProcessFileName) by DeviceName
| take 10"#,
        &["DeviceName", "Processes"],
    ),
    // 144. Registry changes to Defender policies.
    (
        r#"DeviceRegistryEvents
| where RegistryKey has @"Policies\Microsoft\Windows Defender"
| project Timestamp, DeviceName, RegistryValueName, RegistryValueData, InitiatingProcessFileName
| take 20"#,
        &[
            "Timestamp",
            "DeviceName",
            "RegistryValueName",
            "RegistryValueData",
            "InitiatingProcessFileName",
        ],
    ),
    // 145. Registry writers ranked.
    (
        r#"DeviceRegistryEvents
| summarize Writes = count() by InitiatingProcessFileName, RegistryValueType
| top 10 by Writes desc"#,
        &["InitiatingProcessFileName", "RegistryValueType", "Writes"],
    ),
    // 146. Hours of activity per account (hourofday, dayofweek).
    (
        r#"DeviceProcessEvents
| extend Hour = hourofday(Timestamp), Weekday = dayofweek(Timestamp)
| summarize Runs = count() by Hour
| sort by Hour asc"#,
        &["Hour", "Runs"],
    ),
    // 147. Days since each device was last seen (datetime_diff).
    (
        r#"DeviceInfo
| summarize LastSeen = max(Timestamp) by DeviceName
| extend DaysAgo = datetime_diff("day", now(), LastSeen)
| top 10 by DaysAgo desc"#,
        &["DeviceName", "LastSeen", "DaysAgo"],
    ),
    // 148. Daily report labels (format_datetime).
    (
        r#"AlertInfo
| summarize Alerts = count() by Day = format_datetime(Timestamp, "yyyy-MM-dd")
| sort by Day asc"#,
        &["Day", "Alerts"],
    ),
    // 149. Command lines normalised before counting.
    (
        r#"DeviceProcessEvents
| extend Normalized = replace_string(tolower(ProcessCommandLine), '"', "")
| summarize Runs = count() by Normalized
| top 10 by Runs desc"#,
        &["Normalized", "Runs"],
    ),
    // 150. The folder of each process (substring, indexof).
    (
        r#"DeviceProcessEvents
| take 500
| extend Folder = substring(FolderPath, 0, strlen(FolderPath) - strlen(FileName) - 1)
| summarize Files = dcount(FileName) by Folder
| top 5 by Files desc"#,
        &["Folder", "Files"],
    ),
    // 151. Private and public destinations (ipv4_is_private).
    (
        r#"DeviceNetworkEvents
| summarize Connections = count() by Private = ipv4_is_private(RemoteIP)"#,
        &["Private", "Connections"],
    ),
    // 152. Senders whose display name is missing (coalesce).
    (
        r#"EmailEvents
| extend Shown = coalesce(SenderDisplayName, SenderFromAddress)
| summarize Mails = count() by Shown
| top 10 by Mails desc"#,
        &["Shown", "Mails"],
    ),
    // 153. Devices reordered columns for a report (project-reorder).
    (
        r#"DeviceInfo
| take 5
| project DeviceName, OSPlatform, DeviceId
| project-reorder OSPlatform, DeviceName"#,
        &["OSPlatform", "DeviceName", "DeviceId"],
    ),
    // 154. Keep only the identity columns (project-keep).
    (
        r#"IdentityLogonEvents
| take 5
| project-keep Account*"#,
        &[
            "AccountName",
            "AccountDomain",
            "AccountUpn",
            "AccountSid",
            "AccountObjectId",
            "AccountDisplayName",
        ],
    ),
    // 155. Drop the initiating-process columns (project-away with a pattern).
    (
        r#"DeviceNetworkEvents
| take 1
| project-away Initiating*, *Session*, AppGuardContainerId, AdditionalFields, ReportId, Local*, Remote*, Protocol"#,
        &["Timestamp", "DeviceId", "DeviceName", "ActionType"],
    ),
    // 156. Mail to users who later ran an Office child process (a three-table join).
    (
        r#"let Recipients = EmailEvents
| where ThreatTypes has_any ("Malware", "Phish") and DeliveryAction == "Delivered"
| extend AccountName = tostring(split(RecipientEmailAddress, "@")[0])
| distinct AccountName;
DeviceProcessEvents
| where InitiatingProcessFileName in~ ("winword.exe", "excel.exe")
| join kind=inner Recipients on AccountName
| summarize Children = make_set(FileName) by AccountName, DeviceName"#,
        &["AccountName", "DeviceName", "Children"],
    ),
    // 157. Timeline of one device around a download (toscalar and between).
    (
        r#"let When = toscalar(DeviceFileEvents | where isnotempty(FileOriginUrl) and FileOriginIP == "185.220.101.47" | summarize min(Timestamp));
let Where = toscalar(DeviceFileEvents | where FileOriginIP == "185.220.101.47" | summarize any(DeviceName));
union DeviceProcessEvents, DeviceNetworkEvents, DeviceFileEvents, DeviceRegistryEvents
| where DeviceName == Where and Timestamp between ((When - 10m) .. (When + 10m))
| project Timestamp, ActionType, FileName, InitiatingProcessFileName
| sort by Timestamp asc"#,
        &[
            "Timestamp",
            "ActionType",
            "FileName",
            "InitiatingProcessFileName",
        ],
    ),
    // 158. Alerts joined to the mail that started them (evidence message ids).
    (
        r#"AlertEvidence
| where isnotempty(NetworkMessageId)
| join kind=inner (EmailEvents | project NetworkMessageId, Subject) on NetworkMessageId
| project AlertId, Subject"#,
        &["AlertId", "Subject"],
    ),
    // 159. Users who clicked and then had an alert (rightsemi).
    (
        r#"UrlClickEvents
| where ActionType == "ClickAllowed"
| extend AccountName = tostring(split(AccountUpn, "@")[0])
| join kind=rightsemi (AlertEvidence | where EntityType == "User") on AccountName
| summarize Alerts = dcount(AlertId) by AccountName"#,
        &["AccountName", "Alerts"],
    ),
    // 160. Devices without any alert (leftanti).
    (
        r#"DeviceInfo
| distinct DeviceId, DeviceName
| join kind=leftanti (AlertEvidence | where isnotempty(DeviceId) | distinct DeviceId) on DeviceId
| count"#,
        &["Count"],
    ),
    // 161. Alert titles and their share of all alerts.
    (
        r#"AlertInfo
| summarize Alerts = count() by Title
| extend Share = round(100.0 * Alerts / toscalar(AlertInfo | count), 2)
| top 10 by Alerts desc"#,
        &["Title", "Alerts", "Share"],
    ),
    // 162. Tiers of devices by how many processes ran.
    (
        r#"DeviceProcessEvents
| summarize Runs = count() by DeviceName
| extend Tier = case(Runs >= 40, "busy", Runs >= 15, "normal", "quiet")
| summarize Devices = count() by Tier"#,
        &["Tier", "Devices"],
    ),
    // 163. A user function used twice.
    (
        r#"let Suspicious = (cmd: string) { cmd has_any ("-enc", "DownloadString", "Invoke-WebRequest", "-urlcache") };
DeviceProcessEvents
| where Suspicious(ProcessCommandLine) or Suspicious(InitiatingProcessCommandLine)
| summarize Runs = count() by FileName"#,
        &["FileName", "Runs"],
    ),
    // 164. A tabular function with a parameter.
    (
        r#"let ProcessesOf = (name: string) { DeviceProcessEvents | where FileName =~ name | project DeviceName, ProcessCommandLine };
ProcessesOf("rundll32.exe")
| summarize Commands = dcount(ProcessCommandLine) by DeviceName"#,
        &["DeviceName", "Commands"],
    ),
    // 165. Account discovery through net.exe, grouped by the groups named.
    (
        r#"DeviceProcessEvents
| where FileName =~ "net.exe"
| parse ProcessCommandLine with * 'group "' Group '"' *
| summarize Runs = count() by Group"#,
        &["Group", "Runs"],
    ),
    // 166. Encoded commands per parent and device (dcount over a let).
    (
        r#"let Encoded = DeviceProcessEvents | where ProcessCommandLine has "-enc";
Encoded
| summarize Devices = dcount(DeviceId), Runs = count() by InitiatingProcessFileName"#,
        &["InitiatingProcessFileName", "Devices", "Runs"],
    ),
    // 167. Sign-in locations of users, from identity events.
    (
        r#"IdentityLogonEvents
| where isnotempty(Location)
| summarize Countries = make_set(Location) by AccountUpn
| where array_length(Countries) >= 3
| take 10"#,
        &["AccountUpn", "Countries"],
    ),
    // 168. Inbound mail by language and direction.
    (
        r#"EmailEvents
| summarize Mails = count() by EmailLanguage, EmailDirection"#,
        &["EmailLanguage", "EmailDirection", "Mails"],
    ),
    // 169. Attachment file types by threat.
    (
        r#"EmailAttachmentInfo
| summarize Attachments = count() by FileType, Threat = iff(isempty(ThreatTypes), "none", ThreatTypes)"#,
        &["FileType", "Threat", "Attachments"],
    ),
    // 170. Latest delivery location of mail first delivered to the inbox.
    (
        r#"EmailEvents
| where DeliveryLocation == "Inbox/folder" and LatestDeliveryLocation != DeliveryLocation
| project NetworkMessageId, Subject, LatestDeliveryLocation"#,
        &["NetworkMessageId", "Subject", "LatestDeliveryLocation"],
    ),
    // 171. Cloud apps used, per application and activity type.
    (
        r#"CloudAppEvents
| summarize Events = count() by Application, ActivityType
| top 10 by Events desc"#,
        &["Application", "ActivityType", "Events"],
    ),
    // 172. Admin operations in cloud apps.
    (
        r#"CloudAppEvents
| where IsAdminOperation
| summarize Operations = count() by AccountDisplayName, ActionType
| take 20"#,
        &["AccountDisplayName", "ActionType", "Operations"],
    ),
    // 173. Rare files enriched with their global profile.
    (
        r#"DeviceFileEvents
| where ActionType == "FileCreated" and isnotempty(SHA1)
| project CreatedOn = Timestamp, DeviceName, FileName, SHA1
| invoke FileProfile("SHA1", 1000)
| where GlobalPrevalence < 100
| project CreatedOn, DeviceName, FileName, GlobalPrevalence, ThreatName"#,
        &[
            "CreatedOn",
            "DeviceName",
            "FileName",
            "GlobalPrevalence",
            "ThreatName",
        ],
    ),
    // 174. Unsigned executables run on devices (FileProfile on the process hash).
    (
        r#"DeviceProcessEvents
| summarize Runs = count() by SHA1, FileName
| invoke FileProfile(SHA1, 500)
| where SignatureState == "Unsigned" and IsExecutable
| project FileName, Runs, GlobalPrevalence"#,
        &["FileName", "Runs", "GlobalPrevalence"],
    ),
    // 175. Devices behind local addresses seen in logons (DeviceFromIP).
    (
        r#"DeviceLogonEvents
| where RemoteIPType == "Private" and isnotempty(RemoteIP)
| summarize Logons = count() by IP = RemoteIP
| invoke DeviceFromIP()
| where isnotempty(DeviceId)
| project IP, DeviceId, Logons"#,
        &["IP", "DeviceId", "Logons"],
    ),
    // 176. The addresses of the server where lsass was dumped (AssignedIPAddresses).
    (
        r#"let Server = toscalar(DeviceEvents | where ActionType == "OpenProcessApiCall" and FileName =~ "lsass.exe" | summarize any(DeviceName));
AssignedIPAddresses(Server)
| project IPAddress, IPType"#,
        &["IPAddress", "IPType"],
    ),
    // 177. Connections to the server's address from other devices.
    (
        r#"let Server = toscalar(DeviceEvents | where ActionType == "OpenProcessApiCall" and FileName =~ "lsass.exe" | summarize any(DeviceName));
AssignedIPAddresses(Server)
| project IPAddress
| join kind=inner DeviceLogonEvents on $left.IPAddress == $right.RemoteIP
| summarize Logons = count() by DeviceName"#,
        &["DeviceName", "Logons"],
    ),
    // 178. Known-bad hashes from an inline list (datatable).
    (
        r#"let Iocs = datatable (Sha256: string, Label: string) [
    "00000000000000000000000000000000000000000000000000000000000000aa", "test",
];
DeviceFileEvents
| join kind=leftanti (Iocs | project SHA256 = Sha256) on SHA256
| summarize Files = dcount(SHA256)"#,
        &["Files"],
    ),
    // 179. Indicators from a feed (externaldata, offline) joined to network events.
    (
        r#"let Feed = externaldata (Ip: string, Family: string) [@"https://example.invalid/c2.csv"] with (format="csv");
DeviceNetworkEvents
| join kind=leftouter (Feed | project RemoteIP = Ip, Family) on RemoteIP
| summarize Connections = count() by Known = isnotempty(Family)"#,
        &["Known", "Connections"],
    ),
    // 180. Logon bursts: time between successive logons of the same account (serialize, prev).
    (
        r#"DeviceLogonEvents
| where ActionType == "LogonSuccess"
| sort by AccountName asc, Timestamp asc
| extend Gap = iff(prev(AccountName) == AccountName, Timestamp - prev(Timestamp), timespan(null))
| where isnotnull(Gap) and Gap < 1m
| summarize Bursts = count() by AccountName"#,
        &["AccountName", "Bursts"],
    ),
    // 181. Next process on the same device after Word (next).
    (
        r#"DeviceProcessEvents
| sort by DeviceId asc, Timestamp asc
| extend NextFile = iff(next(DeviceId) == DeviceId, next(FileName), "")
| where FileName =~ "winword.exe" and isnotempty(NextFile)
| summarize Count = count() by NextFile"#,
        &["NextFile", "Count"],
    ),
    // 182. Connection size percentiles per process.
    (
        r#"DeviceNetworkEvents
| summarize percentiles(RemotePort, 50, 95) by InitiatingProcessFileName
| take 10"#,
        &[
            "InitiatingProcessFileName",
            "percentile_RemotePort_50",
            "percentile_RemotePort_95",
        ],
    ),
    // 183. Median logon hour per account (percentile).
    (
        r#"DeviceLogonEvents
| extend Hour = hourofday(Timestamp)
| summarize Median = percentile(Hour, 50), Logons = count() by AccountName
| top 10 by Logons desc"#,
        &["AccountName", "Median", "Logons"],
    ),
    // 184. Alerts within a day of a malicious mail for the same user.
    (
        r#"let Mail = EmailEvents
| where ThreatTypes has_any ("Malware", "Phish") and DeliveryAction == "Delivered"
| project AccountName = tostring(split(RecipientEmailAddress, "@")[0]), MailTime = Timestamp;
AlertEvidence
| where EntityType == "User" and isnotempty(AccountName)
| join kind=inner Mail on AccountName
| where datetime_diff("hour", Timestamp, MailTime) between (0 .. 24)
| summarize Alerts = dcount(AlertId) by AccountName"#,
        &["AccountName", "Alerts"],
    ),
    // 185. Weekday profile of alerts (dayofweek).
    (
        r#"AlertInfo
| extend Weekday = toint(dayofweek(Timestamp) / 1d)
| summarize Alerts = count() by Weekday
| sort by Weekday asc"#,
        &["Weekday", "Alerts"],
    ),
    // 186. Payloads fetched over plain HTTP, by host (indexof, substring).
    (
        r#"DeviceFileEvents
| where FileOriginUrl startswith "http://"
| extend Rest = substring(FileOriginUrl, 7)
| extend Host = substring(Rest, 0, indexof(Rest, "/"))
| summarize Files = count() by Host"#,
        &["Host", "Files"],
    ),
    // 187. Slash-heavy command lines (countof).
    (
        r#"DeviceProcessEvents
| extend Switches = countof(ProcessCommandLine, " /")
| where Switches >= 3
| project DeviceName, FileName, Switches, ProcessCommandLine"#,
        &["DeviceName", "FileName", "Switches", "ProcessCommandLine"],
    ),
    // 188. Devices whose process events name a public address as the initiating session IP.
    (
        r#"DeviceNetworkEvents
| where isnotempty(RemoteIP) and not(ipv4_is_private(RemoteIP))
| summarize Public = dcount(RemoteIP) by DeviceName
| top 10 by Public desc"#,
        &["DeviceName", "Public"],
    ),
    // 189. Report columns for an incident write-up (project-reorder and project-rename).
    (
        r#"DeviceProcessEvents
| where ProcessCommandLine has "schtasks" and ProcessCommandLine has "/create"
| project Timestamp, DeviceName, AccountName, ProcessCommandLine
| project-rename Command = ProcessCommandLine, User = AccountName
| project-reorder DeviceName, User"#,
        &["DeviceName", "User", "Timestamp", "Command"],
    ),
    // 190. Mail to device: the recipient's devices that wrote the attachment (three joins).
    (
        r#"EmailAttachmentInfo
| where ThreatTypes has "Malware"
| join kind=inner (DeviceFileEvents | project SHA256, DeviceId, DeviceName, Written = Timestamp) on SHA256
| join kind=inner (DeviceInfo | summarize arg_max(Timestamp, OSPlatform) by DeviceId) on DeviceId
| project RecipientEmailAddress, DeviceName, OSPlatform, Written"#,
        &[
            "RecipientEmailAddress",
            "DeviceName",
            "OSPlatform",
            "Written",
        ],
    ),
    // 191. Vulnerable devices that ran the phishing payload.
    (
        r#"let Victims = DeviceProcessEvents | where FolderPath =~ @"C:\Users\Public\update.exe" | distinct DeviceId;
DeviceTvmSoftwareVulnerabilities
| where DeviceId in (Victims)
| summarize Cves = dcount(CveId), Worst = max(VulnerabilitySeverityLevel) by DeviceName"#,
        &["DeviceName", "Cves", "Worst"],
    ),
    // 192. Accounts in IdentityInfo with a process on a device today.
    (
        r#"IdentityInfo
| distinct AccountName, Department
| join kind=inner (DeviceProcessEvents | where Timestamp > ago(1d) | distinct AccountName) on AccountName
| summarize Users = dcount(AccountName) by Department"#,
        &["Department", "Users"],
    ),
    // 193. Cloud activity from the Qakbot C2 address.
    (
        r#"CloudAppEvents
| where IPAddress == "45.33.2.77"
| summarize Actions = make_set(ActionType), Objects = make_set(ObjectName) by AccountDisplayName"#,
        &["AccountDisplayName", "Actions", "Objects"],
    ),
    // 194. Cloud downloads whose IP also talked to a device.
    (
        r#"CloudAppEvents
| where ActionType == "FileDownloaded"
| project IPAddress, AccountDisplayName
| join kind=inner (DeviceNetworkEvents | project IPAddress = RemoteIP, DeviceName) on IPAddress
| summarize Devices = dcount(DeviceName) by AccountDisplayName, IPAddress"#,
        &["AccountDisplayName", "IPAddress", "Devices"],
    ),
    // 195. Image loads right after a file was written from the internet (a time-window join).
    (
        r#"DeviceFileEvents
| where isnotempty(FileOriginUrl)
| project DeviceId, FileName, Written = Timestamp
| join kind=inner (DeviceImageLoadEvents | project DeviceId, LoadedFile = FileName, Loaded = Timestamp) on DeviceId
| where LoadedFile == FileName and Loaded between (Written .. Written + 1h)
| project DeviceId, FileName, Written, Loaded"#,
        &["DeviceId", "FileName", "Written", "Loaded"],
    ),
    // 196. Evidence of each story alert, as one row per alert (make_bag).
    (
        r#"AlertEvidence
| where AlertId startswith "da_story"
| summarize Entities = make_bag(bag_pack(EntityType, coalesce(FileName, DeviceName, AccountName, RemoteUrl, RemoteIP))) by AlertId"#,
        &["AlertId", "Entities"],
    ),
    // 197. Hashes of files written and certificate state.
    (
        r#"DeviceFileEvents
| distinct SHA1, FileName
| join kind=leftouter (DeviceFileCertificateInfo | distinct SHA1, IsSigned) on SHA1
| summarize Files = count() by Signed = coalesce(tostring(IsSigned), "unknown")"#,
        &["Signed", "Files"],
    ),
    // 198. Behaviors per day and type.
    (
        r#"BehaviorInfo
| summarize Behaviors = count() by ActionType, Day = bin(Timestamp, 1d)
| top 10 by Behaviors desc"#,
        &["ActionType", "Day", "Behaviors"],
    ),
    // 199. Directory events followed by logons of the same account.
    (
        r#"IdentityDirectoryEvents
| where ActionType == "Account Password changed"
| project AccountUpn, Changed = Timestamp
| join kind=inner (IdentityLogonEvents | project AccountUpn, Logon = Timestamp) on AccountUpn
| where Logon between (Changed .. Changed + 1d)
| summarize Logons = count() by AccountUpn"#,
        &["AccountUpn", "Logons"],
    ),
    // 200. KB entries that affect installed software (mv-expand then join).
    (
        r#"DeviceTvmSoftwareVulnerabilitiesKB
| mv-expand Affected = AffectedSoftware
| extend SoftwareName = tostring(split(tostring(Affected), "-")[1])
| extend SoftwareName = tostring(split(SoftwareName, " ")[0])
| join kind=inner (DeviceTvmSoftwareInventory | distinct SoftwareName) on SoftwareName
| distinct CveId, SoftwareName"#,
        &["CveId", "SoftwareName"],
    ),
    // 201. Monthly exposure trend label (format_datetime).
    (
        r#"DeviceTvmSoftwareVulnerabilitiesKB
| summarize Cves = count() by Month = format_datetime(PublishedDate, "yyyy-MM")
| sort by Month asc"#,
        &["Month", "Cves"],
    ),
    // 202. Logon-failure trend per device, a series of daily counts (make-series).
    (
        r#"DeviceLogonEvents
| where ActionType == "LogonFailed"
| make-series Failures = count() default = 0 on Timestamp from startofday(ago(14d)) to startofday(now()) step 1d by DeviceName
| extend Peak = array_length(Failures)"#,
        &["DeviceName", "Failures", "Timestamp", "Peak"],
    ),
    // 203. Process launches enriched with the device's OS (lookup on a dimension).
    (
        r#"DeviceProcessEvents
| where FileName =~ "powershell.exe"
| project Timestamp, DeviceId, ProcessCommandLine
| lookup kind=leftouter (DeviceInfo | summarize arg_max(Timestamp, OSPlatform) by DeviceId | project DeviceId, OSPlatform) on DeviceId
| summarize Runs = count() by OSPlatform"#,
        &["OSPlatform", "Runs"],
    ),
    // 204. The fields of a JSON column unpacked into columns (evaluate bag_unpack).
    (
        r#"DeviceEvents
| where isnotempty(AdditionalFields)
| take 50
| project ReportId, Fields = parse_json(AdditionalFields)
| evaluate bag_unpack(Fields, "f_")
| project-keep ReportId"#,
        &["ReportId"],
    ),
    // 205. Hours of the last day with no network event at all (range + leftanti join).
    (
        r#"range Hour from bin(ago(1d), 1h) to bin(now(), 1h) step 1h
| join kind=leftanti (DeviceNetworkEvents | where Timestamp > ago(1d) | summarize by Hour = bin(Timestamp, 1h)) on Hour
| count"#,
        &["Count"],
    ),
];

#[test]
fn corpus_runs() {
    let opts = RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    };
    let mut ran = 0;
    let mut with_rows = 0;
    let mut failures = Vec::new();
    let mut empty = Vec::new();
    for (i, (query, cols)) in CORPUS.iter().enumerate() {
        match run(query, data(), &opts) {
            Ok(out) => {
                ran += 1;
                if !out.rows.is_empty() {
                    with_rows += 1;
                } else {
                    empty.push(i + 1);
                }
                let got: Vec<&str> = out.schema.iter().map(|c| c.name.as_str()).collect();
                if got != *cols {
                    failures.push(format!("#{}: columns {got:?}, expected {cols:?}", i + 1));
                }
            }
            Err(e) => failures.push(format!("#{}: {e}", i + 1)),
        }
    }
    println!(
        "corpus: {ran} of {} queries run, {with_rows} return rows (empty: {empty:?})",
        CORPUS.len()
    );
    assert!(CORPUS.len() >= 200);
    // Most hunts find something: the planted stories and the generated noise.
    assert!(
        with_rows * 10 >= CORPUS.len() * 9,
        "only {with_rows} return rows"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where a prefix of `text` may end: every character boundary (`all_chars`), or the
/// boundaries
/// between a word or number and anything else (every token's start and end), which
/// covers the parser's states at a fraction of the cost.
fn prefix_ends(text: &str, all_chars: bool) -> Vec<usize> {
    let mut ends: Vec<usize> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let word = |c: char| c.is_alphanumeric() || c == '_';
        if all_chars || prev.is_none_or(|p| word(p) != word(c) || !word(c)) {
            ends.push(i);
        }
        prev = Some(c);
    }
    ends.push(text.len());
    ends
}

/// No prefix of any corpus query crashes, hangs or panics: each is an answer or a typed
/// error, within the engine's own time and memory caps. Token boundaries for every
/// query, every character boundary for one query in four (deterministic).
#[test]
fn every_prefix_of_the_corpus_is_an_answer_or_a_typed_error() {
    let small = Dataset::generate(&DatasetConfig {
        seed: 11,
        rows_per_table: 150,
        anchor_unix_ms: NOW,
        ..DatasetConfig::default()
    });
    let o = RunOptions {
        now_unix_ms: NOW,
        ..RunOptions::default()
    };
    let (mut runs, mut answers) = (0usize, 0usize);
    let mut panics = Vec::new();
    for (k, (query, _)) in CORPUS.iter().enumerate() {
        for end in prefix_ends(query, k % 4 == 3) {
            let prefix = &query[..end];
            runs += 1;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(prefix, &small, &o)))
            {
                Ok(Ok(_)) => answers += 1,
                Ok(Err(e)) => assert!(!e.to_string().is_empty(), "{prefix}"),
                Err(_) => panics.push(prefix.to_string()),
            }
        }
    }
    assert!(
        panics.is_empty(),
        "{} prefixes panicked, first: {:?}",
        panics.len(),
        panics[0]
    );
    // The whole queries are among the prefixes, and they all run.
    assert!(answers >= CORPUS.len(), "{answers} answers of {runs} runs");
    println!(
        "{runs} prefixes of {} queries: {answers} answers, the rest typed errors",
        CORPUS.len()
    );
}
