//! The calls that change something: an incident update or an alert update. They are
//! never resent blindly (see [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown)),
//! and on Graph a comment is a second request; this module holds what the engine needs
//! to know of both, so its update rules are written once.

use std::fmt;
use std::time::SystemTime;

use serde_json::Value;

use crate::alerts::{Alert, AlertId, AlertUpdate};
use crate::engine::Call;
use crate::incidents::{Comment, Incident, IncidentId, IncidentUpdate};
use crate::surface::Surface;
use crate::Error;

/// A change sent to the service: what an [`Error::OutcomeUnknown`] carries.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// `PATCH incidents/{id}` (and Graph's comment POST).
    Incident(IncidentId, IncidentUpdate),
    /// `PATCH alerts/{id}` (and Graph's comment POST).
    Alert(AlertId, AlertUpdate),
}

impl Change {
    /// The change a call makes, if it makes one.
    pub fn of(call: &Call) -> Option<Change> {
        match call {
            Call::UpdateIncident(id, u) => Some(Change::Incident(id.clone(), u.clone())),
            Call::UpdateAlert(id, u) => Some(Change::Alert(id.clone(), u.clone())),
            _ => None,
        }
    }

    /// `incident` or `alert`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Incident(..) => "incident",
            Change::Alert(..) => "alert",
        }
    }

    /// The id of what it changes.
    pub fn id(&self) -> &str {
        match self {
            Change::Incident(id, _) => &id.0,
            Change::Alert(id, _) => &id.0,
        }
    }

    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            Change::Incident(_, u) => u.is_empty(),
            Change::Alert(_, u) => u.is_empty(),
        }
    }

    /// Whether it adds a comment.
    pub(crate) fn has_comment(&self) -> bool {
        match self {
            Change::Incident(_, u) => u.comment.is_some(),
            Change::Alert(_, u) => u.comment.is_some(),
        }
    }

    /// The change without its comment (Graph's PATCH step).
    pub(crate) fn without_comment(&self) -> Change {
        match self {
            Change::Incident(id, u) => Change::Incident(id.clone(), u.without_comment()),
            Change::Alert(id, u) => Change::Alert(id.clone(), u.without_comment()),
        }
    }

    /// Only the change's comment (Graph's comment step).
    pub(crate) fn only_comment(&self) -> Change {
        match self {
            Change::Incident(id, u) => Change::Incident(id.clone(), u.only_comment()),
            Change::Alert(id, u) => Change::Alert(id.clone(), u.only_comment()),
        }
    }

    /// The path of what it changes, `{collection}/{id}`, with the id checked.
    pub(crate) fn path(&self, surface: Surface) -> Result<String, Error> {
        let unsupported = |operation| Error::Unsupported { surface, operation };
        match self {
            Change::Incident(id, _) => {
                let base = surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                Ok(format!("{base}/{}", id.check()?))
            }
            Change::Alert(id, _) => Ok(format!("{}/{}", surface.alerts_path(), id.check()?)),
        }
    }

    /// The PATCH body for `surface`.
    pub(crate) fn patch_body(&self, surface: Surface) -> Value {
        match self {
            Change::Incident(_, u) => u.to_json(surface),
            Change::Alert(_, u) => u.to_json(surface),
        }
    }

    /// The body of Graph's comment POST, when the change adds a comment: an
    /// `alertComment` for incidents and alerts alike.
    pub(crate) fn comment_body(&self) -> Option<Value> {
        let text = match self {
            Change::Incident(_, u) => u.comment.as_deref(),
            Change::Alert(_, u) => u.comment.as_deref(),
        }?;
        Some(crate::incidents::alert_comment_body(text))
    }

    /// The call that reads back what it changes.
    pub(crate) fn read_call(&self) -> Call {
        match self {
            Change::Incident(id, _) => Call::GetIncident(id.clone()),
            Change::Alert(id, _) => Call::GetAlert(id.clone()),
        }
    }

    /// Reads the record an update or a read-back answered.
    pub(crate) fn decode(&self, body: &[u8]) -> Result<Record, Error> {
        let err = |what, e: serde_json::Error| Error::Decode {
            what,
            len: body.len(),
            message: e.to_string(),
        };
        Ok(match self {
            Change::Incident(..) => Record::Incident(Box::new(
                serde_json::from_slice(body).map_err(|e| err("incident", e))?,
            )),
            Change::Alert(..) => Record::Alert(Box::new(
                serde_json::from_slice(body).map_err(|e| err("alert", e))?,
            )),
        })
    }

    /// A record holding only the id, for a change whose record was not read.
    pub(crate) fn bare_record(&self) -> Record {
        match self {
            Change::Incident(id, _) => Record::Incident(Box::new(Incident {
                incident_id: Some(id.clone()),
                ..Incident::default()
            })),
            Change::Alert(id, _) => Record::Alert(Box::new(Alert {
                alert_id: Some(id.0.clone()),
                ..Alert::default()
            })),
        }
    }

    /// Whether `record`, read back, already shows every change.
    pub(crate) fn is_applied(&self, record: &Record, surface: Surface, since: SystemTime) -> bool {
        match (self, record) {
            (Change::Incident(_, u), Record::Incident(i)) => u.is_applied(i, surface, since),
            (Change::Alert(_, u), Record::Alert(a)) => u.is_applied(a, surface, since),
            _ => false,
        }
    }
}

/// `incident 42 (status=Resolved, comment="contained")`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Incident(id, u) => write!(f, "incident {id} ({u})"),
            Change::Alert(id, u) => write!(f, "alert {id} ({u})"),
        }
    }
}

/// What an update answers or a read-back reads.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    Incident(Box<Incident>),
    Alert(Box<Alert>),
}

impl Record {
    /// Graph's comment POST answers the comment collection: it replaces the record's.
    pub(crate) fn set_comments(&mut self, comments: Vec<Comment>) {
        match self {
            Record::Incident(i) => i.comments = comments,
            Record::Alert(a) => a.comments = comments,
        }
    }

    pub(crate) fn into_value(self) -> crate::engine::Value {
        match self {
            Record::Incident(i) => crate::engine::Value::Incident(i),
            Record::Alert(a) => crate::engine::Value::Alert(a),
        }
    }
}
