//! The enumerations the command line accepts, as clap `ValueEnum`s so that help and shell
//! completions list them. Each parser hands out the core's own type; the values are
//! matched without regard to case, and the core's spellings stay accepted as aliases.

use std::ffi::OsStr;

use clap::builder::{EnumValueParser, PossibleValue, StringValueParser, TypedValueParser};
use clap::ValueEnum;
use defender_core::alerts::AlertStatus;
use defender_core::incidents::{Classification, IncidentStatus};
use defender_core::range::Split;
use defender_core::{Cloud, Surface};

/// `--api`.
pub(crate) fn api() -> impl TypedValueParser<Value = Surface> {
    EnumValueParser::<Api>::new().map(|a| match a {
        Api::Xdr => Surface::DefenderXdr,
        Api::Mde => Surface::DefenderEndpoint,
        Api::Graph => Surface::Graph,
    })
}

/// `--cloud`.
pub(crate) fn cloud() -> impl TypedValueParser<Value = Cloud> {
    EnumValueParser::<CloudArg>::new().map(|c| match c {
        CloudArg::Global => Cloud::Global,
        CloudArg::Gcc => Cloud::Gcc,
        CloudArg::GccHigh => Cloud::GccHigh,
        CloudArg::Dod => Cloud::Dod,
    })
}

/// An incident's `--status`.
pub(crate) fn incident_status() -> impl TypedValueParser<Value = IncidentStatus> {
    EnumValueParser::<IncidentStatusArg>::new().map(|s| match s {
        IncidentStatusArg::Active => IncidentStatus::Active,
        IncidentStatusArg::Resolved => IncidentStatus::Resolved,
        IncidentStatusArg::InProgress => IncidentStatus::InProgress,
        IncidentStatusArg::Redirected => IncidentStatus::Redirected,
    })
}

/// An alert's `--status`.
pub(crate) fn alert_status() -> impl TypedValueParser<Value = AlertStatus> {
    EnumValueParser::<AlertStatusArg>::new().map(|s| match s {
        AlertStatusArg::New => AlertStatus::New,
        AlertStatusArg::InProgress => AlertStatus::InProgress,
        AlertStatusArg::Resolved => AlertStatus::Resolved,
    })
}

/// `--classification`.
pub(crate) fn classification() -> impl TypedValueParser<Value = Classification> {
    EnumValueParser::<ClassificationArg>::new().map(|c| match c {
        ClassificationArg::TruePositive => Classification::TruePositive,
        ClassificationArg::InformationalExpectedActivity => {
            Classification::InformationalExpectedActivity
        }
        ClassificationArg::FalsePositive => Classification::FalsePositive,
        ClassificationArg::Unknown => Classification::Unknown,
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Api {
    /// Defender XDR (api.security.microsoft.com).
    #[value(alias = "defender-xdr", alias = "m365d")]
    Xdr,
    /// Defender for Endpoint (api.securitycenter.microsoft.com).
    #[value(alias = "endpoint", alias = "defender-endpoint")]
    Mde,
    /// The Microsoft Graph security API.
    Graph,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CloudArg {
    /// The commercial cloud.
    #[value(alias = "public", alias = "commercial")]
    Global,
    /// US Government Community Cloud.
    Gcc,
    /// US Government Community Cloud High.
    #[value(alias = "gcchigh")]
    GccHigh,
    /// US Department of Defense.
    Dod,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum IncidentStatusArg {
    #[value(name = "Active")]
    Active,
    #[value(name = "Resolved")]
    Resolved,
    #[value(name = "InProgress", alias = "in-progress", alias = "in_progress")]
    InProgress,
    /// Merged into another incident.
    #[value(name = "Redirected")]
    Redirected,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AlertStatusArg {
    #[value(name = "New")]
    New,
    #[value(name = "InProgress", alias = "in-progress", alias = "in_progress")]
    InProgress,
    #[value(name = "Resolved")]
    Resolved,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClassificationArg {
    #[value(name = "TruePositive", alias = "tp", alias = "true-positive")]
    TruePositive,
    #[value(
        name = "InformationalExpectedActivity",
        alias = "benign-positive",
        alias = "BenignPositive"
    )]
    InformationalExpectedActivity,
    #[value(name = "FalsePositive", alias = "fp", alias = "false-positive")]
    FalsePositive,
    /// Not yet classified (a filter only).
    #[value(name = "Unknown")]
    Unknown,
}

/// `--split`: auto, none, or a duration such as 1d; help and completions list the two
/// words (clap checks nothing against them: the parser below accepts a duration too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitParser;

impl TypedValueParser for SplitParser {
    type Value = Split;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Split, clap::Error> {
        StringValueParser::new()
            .try_map(|s| s.parse::<Split>())
            .parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            [
                PossibleValue::new("auto").help("bisect the windows that reach the row cap"),
                PossibleValue::new("none").help("one query, never split"),
            ]
            .into_iter(),
        ))
    }
}
