//! OData `$filter` for the collections the emulator lists: a bounded parser that knows
//! each collection's filterable properties, and a matcher that asks the listed item for
//! the value of a property.
//!
//! One parser serves Defender XDR's and Graph's incidents and Defender for Endpoint's and
//! Graph's alerts; a [`Collection`] names the properties its service documents, and
//! anything else is a 400.

use crate::alerts;
use crate::incidents::{Dialect, SEVERITIES, STATUSES};
use defender_core::timefmt::parse_rfc3339_ms;

/// How much `$filter` the emulator parses before answering 400.
///
/// The real services parse `$filter` with ODataLib, which refuses a filter nested deeper
/// than its recursion limit ("The recursion limit has been exceeded.") and, behind ASP.NET
/// OData, one with more nodes than `MaxNodeCount`. The emulator keeps both bounds so a
/// hostile filter (60,000 `(`, or a million `or`s) is a 400, never a stack overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Parentheses and `not`s nested inside one another (default 100).
    pub max_depth: usize,
    /// Comparisons, `and`s, `or`s and `not`s in one filter (default 1,000).
    pub max_nodes: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            max_depth: 100,
            max_nodes: 1000,
        }
    }
}

/// A collection the emulator lists, and so the properties its `$filter` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// Defender XDR's `/api/incidents` (DD api-list-incidents.md).
    XdrIncidents,
    /// Graph's `/security/incidents` (GD security-list-incidents.md).
    GraphIncidents,
    /// Defender's `/api/alerts` (DD defender-endpoint/api/get-alerts.md).
    MdeAlerts,
    /// Graph's `/security/alerts_v2` (GD security-list-alerts_v2.md).
    GraphAlerts,
}

impl Collection {
    /// The spelling of the collection's service: Defender's (`InProgress`) or Graph's
    /// (`inProgress`).
    pub fn dialect(self) -> Dialect {
        match self {
            Collection::XdrIncidents | Collection::MdeAlerts => Dialect::Xdr,
            Collection::GraphIncidents | Collection::GraphAlerts => Dialect::Graph,
        }
    }

    /// The properties `$filter` may name, in the order of the service's documentation.
    fn properties(self) -> &'static [Property] {
        match self {
            Collection::XdrIncidents => XDR_INCIDENTS,
            Collection::GraphIncidents => GRAPH_INCIDENTS,
            Collection::MdeAlerts => MDE_ALERTS,
            Collection::GraphAlerts => GRAPH_ALERTS,
        }
    }
}

const fn p(name: &'static str, field: Field, kind: Kind) -> Property {
    Property {
        name,
        field,
        kind,
        values: &[],
    }
}

const fn one_of(name: &'static str, field: Field, values: &'static [&'static str]) -> Property {
    Property {
        name,
        field,
        kind: Kind::Text,
        values,
    }
}

/// DD defender-xdr/api-list-incidents.md.
const XDR_INCIDENTS: &[Property] = &[
    p("lastUpdateTime", Field::LastUpdate, Kind::Time),
    p("createdTime", Field::Created, Kind::Time),
    one_of("status", Field::Status, &STATUSES),
    p("assignedTo", Field::AssignedTo, Kind::Text),
];

/// GD security-list-incidents.md; Graph compares its enums in its own spelling, and only
/// for equality.
const GRAPH_INCIDENTS: &[Property] = &[
    p("lastUpdateDateTime", Field::LastUpdate, Kind::Time),
    p("createdDateTime", Field::Created, Kind::Time),
    one_of("status", Field::Status, &STATUSES),
    p("assignedTo", Field::AssignedTo, Kind::Text),
    p("severity", Field::Severity, Kind::Enum),
    p("classification", Field::Classification, Kind::Enum),
    p("determination", Field::Determination, Kind::Enum),
];

/// DD defender-endpoint/api/get-alerts.md (which spells two of them `InvestigationId` and
/// `asssignedTo`; names are matched ignoring case).
const MDE_ALERTS: &[Property] = &[
    p("alertCreationTime", Field::Created, Kind::Time),
    p("lastUpdateTime", Field::LastUpdate, Kind::Time),
    p("incidentId", Field::IncidentId, Kind::Number),
    p("id", Field::Id, Kind::Text),
    p("investigationId", Field::InvestigationId, Kind::Number),
    p("assignedTo", Field::AssignedTo, Kind::Text),
    p("detectionSource", Field::DetectionSource, Kind::Text),
    p("lastEventTime", Field::LastEvent, Kind::Time),
    one_of("status", Field::Status, &alerts::STATUSES),
    one_of("severity", Field::Severity, &SEVERITIES),
    p("category", Field::Category, Kind::Text),
];

/// GD security-list-alerts_v2.md.
const GRAPH_ALERTS: &[Property] = &[
    p("assignedTo", Field::AssignedTo, Kind::Text),
    p("classification", Field::Classification, Kind::Enum),
    p("determination", Field::Determination, Kind::Enum),
    p("createdDateTime", Field::Created, Kind::Time),
    p("lastUpdateDateTime", Field::LastUpdate, Kind::Time),
    p("severity", Field::Severity, Kind::Enum),
    p("serviceSource", Field::ServiceSource, Kind::Enum),
    one_of("status", Field::Status, &alerts::STATUSES),
];

/// A property of a listed item that a filter can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `lastUpdateTime` / `lastUpdateDateTime`.
    LastUpdate,
    /// `createdTime` / `createdDateTime` / `alertCreationTime`.
    Created,
    /// `status`.
    Status,
    /// `assignedTo`.
    AssignedTo,
    /// `severity`.
    Severity,
    /// `classification`.
    Classification,
    /// `determination`.
    Determination,
    /// An alert's `incidentId`.
    IncidentId,
    /// An alert's `id`.
    Id,
    /// An alert's `investigationId`.
    InvestigationId,
    /// An alert's `detectionSource`.
    DetectionSource,
    /// An alert's `lastEventTime`.
    LastEvent,
    /// An alert's `category`.
    Category,
    /// An alert's `serviceSource`.
    ServiceSource,
}

/// The value of a [`Field`] of one item, as the item's collection spells it.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A date-time, unix ms.
    Time(i64),
    /// Text (an enum in the collection's spelling); `None` when the item has none.
    Text(Option<String>),
    /// A number; `None` when the item has none.
    Number(Option<i64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Compared as a date-time.
    Time,
    /// Compared as text, ignoring case.
    Text,
    /// An enumeration: `eq` and `ne` only, ignoring case.
    Enum,
    /// Compared as a number; a quoted literal is refused.
    Number,
}

#[derive(Debug)]
struct Property {
    name: &'static str,
    field: Field,
    kind: Kind,
    /// The literals a comparison may use (ignoring case); empty: any.
    values: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Time(i64),
    Num(i64),
    Null,
}

/// A parsed `$filter`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `field op literal`.
    Cmp(FieldCmp),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Negation.
    Not(Box<Filter>),
}

/// One comparison of a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCmp {
    field: Field,
    op: Op,
    lit: Lit,
}

impl Filter {
    /// Parses a `$filter` of `collection` within the default [`FilterLimits`]; the error
    /// is the 400 message.
    #[cfg(test)]
    pub fn parse(s: &str, collection: Collection) -> Result<Filter, String> {
        Filter::parse_within(s, collection, FilterLimits::default())
    }

    /// Parses a `$filter` of `collection`; the error is the 400 message. A filter over
    /// `limits` is refused before any recursion could exhaust the stack.
    pub fn parse_within(
        s: &str,
        collection: Collection,
        limits: FilterLimits,
    ) -> Result<Filter, String> {
        let toks = tokenize(s).map_err(|e| format!("Invalid filter clause: {e}"))?;
        if toks.is_empty() {
            return Err("Invalid filter clause: the filter is empty".into());
        }
        let mut p = Parser {
            toks,
            pos: 0,
            collection,
            limits,
            depth: 0,
            nodes: 0,
        };
        let f = p.or().map_err(|e| {
            if e.starts_with("The query specified") {
                e
            } else {
                format!("Invalid filter clause: {e}")
            }
        })?;
        if p.pos != p.toks.len() {
            return Err(format!(
                "Invalid filter clause: unexpected {:?} after the expression",
                p.toks[p.pos]
            ));
        }
        Ok(f)
    }

    /// Whether the item whose fields `value` gives matches.
    pub fn matches(&self, value: &impl Fn(Field) -> FieldValue) -> bool {
        match self {
            Filter::And(a, b) => a.matches(value) && b.matches(value),
            Filter::Or(a, b) => a.matches(value) || b.matches(value),
            Filter::Not(a) => !a.matches(value),
            Filter::Cmp(c) => c.matches(&value(c.field)),
        }
    }
}

impl FieldCmp {
    fn matches(&self, value: &FieldValue) -> bool {
        use std::cmp::Ordering;
        let present = !matches!(value, FieldValue::Text(None) | FieldValue::Number(None));
        let ord: Option<Ordering> = match (value, &self.lit) {
            // `eq null` matches an item without the value, `ne null` one with it.
            (_, Lit::Null) => {
                return match self.op {
                    Op::Eq => !present,
                    Op::Ne => present,
                    _ => false,
                }
            }
            (FieldValue::Time(t), Lit::Time(l)) => Some(t.cmp(l)),
            (FieldValue::Text(Some(t)), Lit::Str(s)) => {
                Some(t.to_ascii_lowercase().cmp(&s.to_ascii_lowercase()))
            }
            (FieldValue::Number(Some(n)), Lit::Num(l)) => Some(n.cmp(l)),
            _ => None,
        };
        match ord {
            // No value to compare: only `ne` holds.
            None => self.op == Op::Ne,
            Some(o) => match self.op {
                Op::Eq => o == Ordering::Equal,
                Op::Ne => o != Ordering::Equal,
                Op::Gt => o == Ordering::Greater,
                Op::Ge => o != Ordering::Less,
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push(Tok::LParen);
            i += 1;
        } else if c == ')' {
            out.push(Tok::RParen);
            i += 1;
        } else if c == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        v.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"()'".contains(chars[i]) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    collection: Collection,
    limits: FilterLimits,
    depth: usize,
    nodes: usize,
}

/// A filter over one of the [`FilterLimits`]; its text is the whole 400 message.
pub(crate) const TOO_DEEP: &str =
    "The query specified in the URI is not valid. The recursion limit has been exceeded.";

impl Parser {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// Counts one node of the tree (and checks [`FilterLimits::max_nodes`]).
    fn node(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(format!(
                "The query specified in the URI is not valid. The node count limit of '{}' has been exceeded.",
                self.limits.max_nodes
            ));
        }
        Ok(())
    }

    /// Enters one level of nesting (and checks [`FilterLimits::max_depth`]); the caller
    /// leaves it with `self.depth -= 1`.
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(TOO_DEEP.into());
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word().as_deref() == Some("or") {
            self.pos += 1;
            self.node()?;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word().as_deref() == Some("and") {
            self.pos += 1;
            self.node()?;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_word().as_deref() == Some("not") {
            self.pos += 1;
            self.node()?;
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            self.enter()?;
            let inner = self.or();
            self.depth -= 1;
            let inner = inner?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err("expected `)`".into());
            }
            self.pos += 1;
            return Ok(inner);
        }
        self.node()?;
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Filter, String> {
        let name = match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => w.clone(),
            Some(t) => return Err(format!("expected a property name, found {t:?}")),
            None => return Err("expected a property name, found the end".into()),
        };
        self.pos += 1;
        let properties = self.collection.properties();
        let Some(property) = properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(&name))
        else {
            let allowed: Vec<&str> = properties.iter().map(|p| p.name).collect();
            return Err(format!(
                "Could not find a property named '{name}' that can be filtered on (filterable: {})",
                allowed.join(", ")
            ));
        };
        let op = match self.peek_word().as_deref() {
            Some("eq") => Op::Eq,
            Some("ne") => Op::Ne,
            Some("gt") => Op::Gt,
            Some("ge") => Op::Ge,
            Some("lt") => Op::Lt,
            Some("le") => Op::Le,
            _ => return Err(format!("expected eq, ne, gt, ge, lt or le after `{name}`")),
        };
        self.pos += 1;
        let lit = match self.toks.get(self.pos) {
            Some(Tok::Str(s)) => Lit::Str(s.clone()),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Some(Tok::Word(w)) => match (w.parse::<i64>(), parse_rfc3339_ms(w)) {
                (Ok(n), _) => Lit::Num(n),
                (_, Some(ms)) => Lit::Time(ms),
                _ => return Err(format!("`{w}` is not a literal (quote strings: 'value')")),
            },
            _ => return Err(format!("expected a value after `{name}`")),
        };
        self.pos += 1;
        let lit = match (property.kind, lit) {
            (_, Lit::Null) => Lit::Null,
            (Kind::Time, Lit::Time(t)) => Lit::Time(t),
            (Kind::Time, Lit::Str(s)) => match parse_rfc3339_ms(&s) {
                Some(ms) => Lit::Time(ms),
                None => return Err(format!("`{s}` is not a date-time for `{name}`")),
            },
            (Kind::Time, Lit::Num(_)) => return Err(format!("`{name}` takes a date-time")),
            (Kind::Text | Kind::Enum, Lit::Str(s)) => Lit::Str(s),
            (Kind::Text | Kind::Enum, _) => {
                return Err(format!("`{name}` takes a string literal"));
            }
            // ODataLib refuses to compare an Edm.Int64 with an Edm.String.
            (Kind::Number, Lit::Num(n)) => Lit::Num(n),
            (Kind::Number, _) => return Err(format!("`{name}` takes a number")),
        };
        if property.kind == Kind::Enum && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!(
                "`{name}` is an enumeration: compare it with eq or ne"
            ));
        }
        if let Lit::Str(s) = &lit {
            if !property.values.is_empty()
                && !property.values.iter().any(|v| v.eq_ignore_ascii_case(s))
            {
                return Err(format!("`{s}` is not a valid {}", property.name));
            }
        }
        Ok(Filter::Cmp(FieldCmp {
            field: property.field,
            op,
            lit,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::generate;
    use defender_core::timefmt::format_rfc3339_ms;

    #[test]
    fn incident_filters() {
        let inc = &generate(3, 1, 1_704_067_200_000)[0];
        let t = format_rfc3339_ms(inc.created_ms);
        let xdr = Collection::XdrIncidents;
        let ok = |f: &str| {
            Filter::parse(f, xdr)
                .unwrap()
                .matches(&|field| inc.filter_value(field, Dialect::Xdr))
        };
        assert!(ok(&format!("createdTime ge {t}")));
        assert!(!ok(&format!("createdTime gt {t}")));
        assert!(ok(&format!("createdTime le '{t}'")));
        assert!(ok(&format!(
            "(status eq '{}' or assignedTo eq 'o''brien@x.com') and createdTime eq {t}",
            inc.status.to_ascii_lowercase()
        )));
        assert!(!ok("assignedTo eq 'o''brien@x.com'"));
        assert!(Filter::parse("status eq 'Nope'", xdr).is_err());
        assert!(Filter::parse("severity eq 'High'", xdr).is_err());
        assert!(Filter::parse("lastUpdateDateTime ge 2024-01-01T00:00:00Z", xdr).is_err());
        assert!(Filter::parse(
            "lastUpdateDateTime ge 2024-01-01T00:00:00Z",
            Collection::GraphIncidents
        )
        .is_ok());
        assert!(Filter::parse("status eq 'Active", xdr).is_err());
        assert!(Filter::parse("(status eq 'Active'", xdr).is_err());
        assert!(Filter::parse("status eq Active", xdr).is_err());
        assert!(Filter::parse("status eq 'Active' extra", xdr).is_err());
        assert!(Filter::parse("assignedTo eq 'o''brien@x.com'", xdr).is_ok());
    }

    #[test]
    fn alert_filters_know_their_collection() {
        let mde = Collection::MdeAlerts;
        for ok in [
            "incidentId eq 1000",
            "investigationId eq null",
            "InvestigationId gt 5",
            "id eq 'da1_1'",
            "alertCreationTime ge 2024-01-01T00:00:00Z",
            "lastEventTime lt '2024-01-01T00:00:00Z'",
            "status eq 'InProgress' and severity eq 'high' and category eq 'Execution'",
            "detectionSource eq 'WindowsDefenderAtp' or assignedTo eq null",
        ] {
            assert!(Filter::parse(ok, mde).is_ok(), "{ok}");
        }
        for bad in [
            "incidentId eq '1000'",
            "id eq 5",
            "createdDateTime ge 2024-01-01T00:00:00Z",
            "status eq 'Active'",
            "severity eq 'dire'",
            "alertCreationTime ge 12",
            "serviceSource eq 'microsoftDefenderForEndpoint'",
        ] {
            assert!(Filter::parse(bad, mde).is_err(), "{bad}");
        }
        let graph = Collection::GraphAlerts;
        for ok in [
            "serviceSource eq 'microsoftDefenderForEndpoint'",
            "status eq 'inProgress' and classification ne 'unknown'",
            "createdDateTime ge 2024-01-01T00:00:00Z and determination eq 'malware'",
        ] {
            assert!(Filter::parse(ok, graph).is_ok(), "{ok}");
        }
        for bad in [
            "severity gt 'low'",
            "category eq 'Execution'",
            "incidentId eq 1",
            "status eq 'active'",
        ] {
            assert!(Filter::parse(bad, graph).is_err(), "{bad}");
        }
        let e = Filter::parse("title eq 'x'", graph).unwrap_err();
        assert!(e.contains("(filterable: assignedTo, classification, determination, createdDateTime, lastUpdateDateTime, severity, serviceSource, status)"), "{e}");
    }

    #[test]
    fn comparisons() {
        let f = |s: &str, v: FieldValue| {
            Filter::parse(s, Collection::MdeAlerts)
                .unwrap()
                .matches(&|_| v.clone())
        };
        assert!(f("incidentId eq 7", FieldValue::Number(Some(7))));
        assert!(f("incidentId ge 7", FieldValue::Number(Some(8))));
        assert!(!f("incidentId lt 7", FieldValue::Number(Some(8))));
        assert!(f("investigationId eq null", FieldValue::Number(None)));
        assert!(!f("investigationId gt 0", FieldValue::Number(None)));
        assert!(f("investigationId ne 3", FieldValue::Number(None)));
        assert!(f("id eq 'DA1'", FieldValue::Text(Some("da1".into()))));
        assert!(f("assignedTo ne 'x'", FieldValue::Text(None)));
        assert!(!f("assignedTo eq 'x'", FieldValue::Text(None)));
    }

    #[test]
    fn filter_limits_refuse_deep_and_large_filters() {
        let xdr = Collection::XdrIncidents;
        let limits = FilterLimits::default();
        let nested = |n: usize| format!("{}status eq 'Active'{}", "(".repeat(n), ")".repeat(n));
        assert!(Filter::parse(&nested(limits.max_depth), xdr).is_ok());
        assert_eq!(
            Filter::parse(&nested(limits.max_depth + 1), xdr),
            Err(TOO_DEEP.to_owned())
        );
        // Far past any stack: refused at the limit, long before the end of the text.
        assert_eq!(
            Filter::parse(&"(".repeat(60_000), xdr),
            Err(TOO_DEEP.to_owned())
        );
        assert_eq!(
            Filter::parse(&"not ".repeat(60_000), Collection::MdeAlerts),
            Err(TOO_DEEP.to_owned())
        );
        let chain = |n: usize| vec!["status eq 'Active'"; n].join(" or ");
        assert!(Filter::parse(&chain(500), Collection::GraphIncidents).is_ok());
        let e = Filter::parse(&chain(20_000), Collection::GraphIncidents).unwrap_err();
        assert!(e.contains("node count limit of '1000'"), "{e}");
        let tight = FilterLimits {
            max_depth: 2,
            max_nodes: 3,
        };
        assert!(Filter::parse_within("((status eq 'Active'))", xdr, tight).is_ok());
        assert!(Filter::parse_within("(((status eq 'Active')))", xdr, tight).is_err());
        assert!(Filter::parse_within(&chain(2), xdr, tight).is_ok());
        assert!(Filter::parse_within(&chain(3), xdr, tight).is_err());
    }
}
