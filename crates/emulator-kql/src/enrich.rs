//! Defender's enrichment functions, answered from the synthetic world: `invoke
//! FileProfile(...)` (what is known of a file hash), `invoke DeviceFromIP(...)` (the
//! device that had an address) and `AssignedIPAddresses(...)` (the addresses a device
//! had), with the columns Microsoft documents for them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::value::{DataType, Value, TICKS_PER_DAY};

/// What `FileProfile()` knows of one file.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub sha1: Arc<str>,
    pub sha256: Arc<str>,
    pub md5: Arc<str>,
    pub size: i64,
    pub prevalence: i64,
    pub first_seen: i64,
    pub signer: Arc<str>,
    pub threat: Arc<str>,
    pub executable: bool,
    pub software: Arc<str>,
}

/// One device's address.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub ip: Arc<str>,
}

/// The enrichment data of a dataset.
#[derive(Debug, Clone, Default)]
pub(crate) struct World {
    pub profiles: Vec<Profile>,
    pub by_hash: HashMap<Arc<str>, usize>,
    pub hosts: Vec<Host>,
    /// "Now" of the dataset, in ticks.
    pub anchor: i64,
}

impl World {
    pub fn new(profiles: Vec<Profile>, hosts: Vec<Host>, anchor: i64) -> World {
        let mut by_hash = HashMap::new();
        for (i, p) in profiles.iter().enumerate() {
            by_hash.entry(p.sha1.clone()).or_insert(i);
            by_hash.entry(p.sha256.clone()).or_insert(i);
        }
        World {
            profiles,
            by_hash,
            hosts,
            anchor,
        }
    }
}

/// The columns `invoke FileProfile()` adds.
pub(crate) const FILE_PROFILE: [(&str, DataType); 18] = [
    ("SHA1", DataType::String),
    ("SHA256", DataType::String),
    ("MD5", DataType::String),
    ("FileSize", DataType::Int),
    ("GlobalPrevalence", DataType::Int),
    ("GlobalFirstSeen", DataType::DateTime),
    ("GlobalLastSeen", DataType::DateTime),
    ("Signer", DataType::String),
    ("Issuer", DataType::String),
    ("SignerHash", DataType::String),
    ("IsCertificateValid", DataType::Bool),
    ("IsRootSignerMicrosoft", DataType::Bool),
    ("SignatureState", DataType::String),
    ("IsExecutable", DataType::Bool),
    ("ThreatName", DataType::String),
    ("Publisher", DataType::String),
    ("SoftwareName", DataType::String),
    ("ProfileAvailability", DataType::String),
];

/// The `FileProfile()` values of `hash` (`None`: not looked up, past the record limit).
pub(crate) fn file_profile(w: &World, hash: Option<&str>) -> Vec<Value> {
    let Some(hash) = hash else {
        let mut v = vec![Value::Null; FILE_PROFILE.len()];
        v[FILE_PROFILE.len() - 1] = Value::str("");
        return v;
    };
    let Some(p) = w.by_hash.get(hash).map(|i| &w.profiles[*i]) else {
        let mut v = vec![Value::Null; FILE_PROFILE.len()];
        v[FILE_PROFILE.len() - 1] = Value::str("Missing");
        return v;
    };
    let signed = !p.signer.is_empty();
    let microsoft = p.signer.starts_with("Microsoft");
    vec![
        Value::Str(p.sha1.clone()),
        Value::Str(p.sha256.clone()),
        Value::Str(p.md5.clone()),
        Value::Int(p.size),
        Value::Int(p.prevalence),
        Value::DateTime(p.first_seen),
        Value::DateTime(w.anchor - TICKS_PER_DAY / 24),
        Value::Str(p.signer.clone()),
        Value::str(if microsoft {
            "Microsoft Windows Production PCA 2011"
        } else if signed {
            "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1"
        } else {
            ""
        }),
        Value::str(if signed { &p.sha1[..32] } else { "" }),
        Value::Bool(signed),
        Value::Bool(microsoft),
        Value::str(if signed { "SignedValid" } else { "Unsigned" }),
        Value::Bool(p.executable),
        Value::Str(p.threat.clone()),
        Value::Str(p.signer.clone()),
        Value::Str(p.software.clone()),
        Value::str("Available"),
    ]
}

/// The device that had `ip` (an id, or empty).
pub(crate) fn device_from_ip(w: &World, ip: &str) -> Value {
    w.hosts
        .iter()
        .find(|h| &*h.ip == ip)
        .map_or_else(|| Value::str(""), |h| Value::Str(h.id.clone()))
}

/// The columns of `AssignedIPAddresses()`.
pub(crate) const ASSIGNED: [(&str, DataType); 5] = [
    ("Timestamp", DataType::DateTime),
    ("IPAddress", DataType::String),
    ("IPType", DataType::String),
    ("NetworkAdapterType", DataType::Int),
    ("ConnectedNetworks", DataType::String),
];

/// The rows of `AssignedIPAddresses(device, at)`: the device's address, seen last at
/// `at` (or now).
pub(crate) fn assigned(w: &World, device: &str, at: Option<i64>) -> Vec<Vec<Value>> {
    let at = at.unwrap_or(w.anchor).min(w.anchor);
    w.hosts
        .iter()
        .filter(|h| &*h.id == device || h.name.eq_ignore_ascii_case(device))
        .map(|h| {
            vec![
                Value::DateTime(at),
                Value::Str(h.ip.clone()),
                Value::str("Private"),
                // System.Net.NetworkInformation.NetworkInterfaceType.Ethernet
                Value::Int(6),
                Value::str(
                    r#"[{"Name":"contoso.local","Description":"contoso.local","IsConnectedToInternet":true,"Category":"Domain"}]"#,
                ),
            ]
        })
        .collect()
}
