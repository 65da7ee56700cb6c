//! Incremental decoding of the hunting response: rows one at a time, while the body
//! arrives.
//!
//! [`HuntResponse::from_slice`](crate::hunting::HuntResponse::from_slice) holds the whole
//! result at once (and, through `#[serde(flatten)]`, an intermediate tree of the whole
//! document besides). [`RowDecoder`] holds at most one element of the document: bytes go in
//! with [`feed`](RowDecoder::feed) in any chunking, down to one byte at a time, and
//! [`poll`](RowDecoder::poll) hands out the [`Schema`](DecodeEvent::Schema), each
//! [`Row`](DecodeEvent::Row) and the [`Stats`](DecodeEvent::Stats) as soon as each is
//! complete. It reads every surface: Defender XDR (`Stats`, `Schema`, `Results`, in any
//! order), Defender for Endpoint (no `Stats`) and Graph (`schema`/`results`, columns
//! `name`/`type` or `Name`/`Type`). Unknown top-level fields are kept in
//! [`extra`](RowDecoder::extra).
//!
//! Everything the decoder holds is bounded by [`DecodeLimits`]: one element (a row, the
//! schema, the stats) at most `max_element` bytes, and the unknown top-level fields,
//! which are kept, at most `max_extra_fields` of them and `max_extra_bytes` together
//! (names and values as written). An unknown field's name or value is read no further
//! than what is left of that budget: a body such as `{"Schema":[],"x":"<1 GiB>"}`, or a
//! million unknown keys, ends in [`DecodeError::ExtraFields`] with little buffered.
//!
//! A small scanner finds where each element of the document ends (tracking strings,
//! escapes and nesting across chunks); each complete element is handed to `serde_json`
//! on its own bytes, so only one row's values exist at a time. When an element is
//! already whole in the buffer (the common case), `serde_json` parses it in place and
//! the scanner is not run at all.
//!
//! ```
//! use defender_core::stream::{DecodeEvent, RowDecoder};
//! let body = br#"{"Schema":[{"Name":"FileName","Type":"String"}],"Results":[{"FileName":"a.exe"},{"FileName":"b.exe"}],"Stats":{"ExecutionTime":0.5}}"#;
//! let mut dec = RowDecoder::new();
//! let mut rows = 0;
//! for chunk in body.chunks(7) {
//!     dec.feed(chunk);
//!     while let Some(event) = dec.poll().unwrap() {
//!         if let DecodeEvent::Row(row) = event {
//!             assert!(row["FileName"].is_string());
//!             rows += 1;
//!         }
//!     }
//! }
//! dec.finish().unwrap();
//! assert_eq!(rows, 2);
//! ```
//!
//! Differences from `HuntResponse::from_slice`, both on bodies that are rejected anyway
//! or never sent: `serde_json`'s nesting limit (128) counts from the row here, not from
//! the document, so a cell nested 126 deep is accepted; and an error is reported at the
//! first bad element, after the rows before it were handed out.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::hunting::{Column, Row, Stats};

/// The default limit on one element of the document (a row, the schema, the stats, an
/// unknown field): 16 MiB. The decoder never buffers more than this plus one chunk.
pub const DEFAULT_MAX_ELEMENT: usize = 16 * 1024 * 1024;

/// The default limit on the number of unknown top-level fields: 64. A hunting response
/// has three known fields and Graph adds one (`@odata.context`); nothing documented adds
/// more, so this leaves room for the service to grow without holding whatever a body
/// carries.
pub const DEFAULT_MAX_EXTRA_FIELDS: usize = 64;

/// The default limit on the bytes of the unknown top-level fields together, names and
/// values as written: 1 MiB.
pub const DEFAULT_MAX_EXTRA_BYTES: usize = 1024 * 1024;

/// What a decoder holds at most. The defaults are [`DEFAULT_MAX_ELEMENT`],
/// [`DEFAULT_MAX_EXTRA_FIELDS`] and [`DEFAULT_MAX_EXTRA_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest element (a row, the schema, the stats, a field name) in bytes; larger
    /// is [`DecodeError::TooLarge`].
    pub max_element: usize,
    /// The most unknown top-level fields (each occurrence counts, duplicates too); more
    /// is [`DecodeError::ExtraFields`].
    pub max_extra_fields: usize,
    /// The most bytes of unknown top-level fields together, names and values as written;
    /// more is [`DecodeError::ExtraFields`].
    pub max_extra_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> DecodeLimits {
        DecodeLimits {
            max_element: DEFAULT_MAX_ELEMENT,
            max_extra_fields: DEFAULT_MAX_EXTRA_FIELDS,
            max_extra_bytes: DEFAULT_MAX_EXTRA_BYTES,
        }
    }
}

/// What the decoder hands out, in the order the body carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeEvent {
    /// The columns (`Schema` or `schema`).
    Schema(Vec<Column>),
    /// One result row.
    Row(Row),
    /// The statistics (Defender XDR only; may come before or after the rows). A `null`
    /// `Stats` yields nothing.
    Stats(Stats),
}

/// Why a body could not be decoded. Every variant says how many rows were handed out
/// before it: those rows are good, nothing already yielded is taken back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ended before the document did.
    #[error("the hunting response ended early, at byte {offset}, after {rows} complete rows")]
    Truncated {
        /// Rows handed out before the end.
        rows: u64,
        /// Bytes the body had.
        offset: u64,
    },
    /// The body is not a hunting response (bad JSON, or the wrong shape).
    #[error("invalid hunting response at byte {offset}, after {rows} rows: {message}")]
    Invalid {
        /// Rows handed out before the error.
        rows: u64,
        /// Where the bad element or token starts.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// One element (a row, the schema, the stats, a field name) is larger than the
    /// decoder's limit.
    #[error("an element of the hunting response at byte {offset} is larger than {limit} bytes (after {rows} rows)")]
    TooLarge {
        /// Rows handed out before it.
        rows: u64,
        /// Where the element starts.
        offset: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The unknown top-level fields (anything but the stats, the schema and the results)
    /// are more, or larger together, than the decoder's limits.
    #[error("the hunting response's unknown top-level fields pass the limit of {max_fields} fields or {max_bytes} bytes, at byte {offset} (after {rows} rows)")]
    ExtraFields {
        /// Rows handed out before it.
        rows: u64,
        /// Where the field (its name, or its value) that passed the limit starts.
        offset: u64,
        /// The limit on their number.
        max_fields: usize,
        /// The limit on their bytes.
        max_bytes: usize,
    },
    /// [`RowDecoder::finish`] was called while [`RowDecoder::poll`] still had events to
    /// hand out; they are still there, poll them and call `finish` again.
    #[error("finish() was called before poll() was drained ({rows} rows handed out so far)")]
    NotDrained {
        /// Rows handed out so far.
        rows: u64,
    },
}

impl DecodeError {
    /// Where in the body the error is (0 for [`DecodeError::NotDrained`]).
    pub fn offset(&self) -> u64 {
        match self {
            DecodeError::Truncated { offset, .. }
            | DecodeError::Invalid { offset, .. }
            | DecodeError::TooLarge { offset, .. }
            | DecodeError::ExtraFields { offset, .. } => *offset,
            DecodeError::NotDrained { .. } => 0,
        }
    }

    /// Rows handed out before the error.
    pub fn rows(&self) -> u64 {
        match self {
            DecodeError::Truncated { rows, .. }
            | DecodeError::Invalid { rows, .. }
            | DecodeError::TooLarge { rows, .. }
            | DecodeError::ExtraFields { rows, .. }
            | DecodeError::NotDrained { rows } => *rows,
        }
    }
}

/// A top-level field the decoder knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Stats,
    Schema,
    Results,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// After `{`: a field name or `}`.
    FirstKey,
    /// After `,`: a field name.
    Key,
    /// After a field name: `:`.
    Colon(Field),
    /// After `:`: the field's value.
    Value(Field),
    /// After a field's value: `,` or `}`.
    AfterValue,
    /// After the `[` of the results: a row or `]`.
    FirstRow,
    /// After `,` in the results: a row.
    Row,
    /// After a row: `,` or `]`.
    AfterRow,
    /// After the closing `}`: only whitespace.
    End,
}

/// Where an element that is not yet whole in the buffer stands.
#[derive(Debug, Clone, Copy)]
struct Scan {
    /// Bytes of the element already scanned.
    off: usize,
    /// Open `{`/`[` (compound elements).
    depth: usize,
    in_str: bool,
    escaped: bool,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Compound,
    Str,
    Scalar,
}

impl Scan {
    fn new(first: u8) -> Scan {
        let kind = match first {
            b'{' | b'[' => Kind::Compound,
            b'"' => Kind::Str,
            _ => Kind::Scalar,
        };
        Scan {
            off: 1,
            depth: usize::from(kind == Kind::Compound),
            in_str: kind == Kind::Str,
            escaped: false,
            kind,
        }
    }

    /// Scans on through `elem` (the element's bytes so far, from its first byte):
    /// `Some(len)` when the element ends within it.
    fn advance(&mut self, elem: &[u8]) -> Option<usize> {
        let mut i = self.off;
        while i < elem.len() {
            let b = elem[i];
            i += 1;
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                    if self.kind == Kind::Str {
                        self.off = i;
                        return Some(i);
                    }
                }
                continue;
            }
            match self.kind {
                Kind::Scalar => {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        self.off = i - 1;
                        return Some(i - 1);
                    }
                }
                Kind::Compound => match b {
                    b'"' => self.in_str = true,
                    b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            self.off = i;
                            return Some(i);
                        }
                    }
                    _ => {}
                },
                Kind::Str => {}
            }
        }
        self.off = i;
        None
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The state machine, over a byte slice the caller owns.
#[derive(Debug, Clone)]
struct Core {
    state: State,
    scan: Option<Scan>,
    limits: DecodeLimits,
    rows: u64,
    /// Unknown top-level fields read, and their bytes (names and values as written).
    extra_fields: usize,
    extra_bytes: usize,
    seen_stats: bool,
    seen_schema: bool,
    seen_results: bool,
    extra: Map<String, Value>,
    error: Option<DecodeError>,
}

impl Core {
    fn new(limits: DecodeLimits) -> Core {
        Core {
            state: State::Start,
            scan: None,
            limits,
            rows: 0,
            extra_fields: 0,
            extra_bytes: 0,
            seen_stats: false,
            seen_schema: false,
            seen_results: false,
            extra: Map::new(),
            error: None,
        }
    }

    fn invalid(&self, offset: u64, message: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            rows: self.rows,
            offset,
            message: message.into(),
        }
    }

    /// The next event from `data[*pos..]`; `base` is the body offset of `data[0]`.
    /// Errors are sticky.
    fn poll(
        &mut self,
        data: &[u8],
        pos: &mut usize,
        base: u64,
    ) -> Result<Option<DecodeEvent>, DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.step(data, pos, base);
        if let Err(e) = &r {
            self.error = Some(e.clone());
        }
        r
    }

    fn step(
        &mut self,
        data: &[u8],
        pos: &mut usize,
        base: u64,
    ) -> Result<Option<DecodeEvent>, DecodeError> {
        loop {
            if self.scan.is_none() {
                while *pos < data.len() && is_ws(data[*pos]) {
                    *pos += 1;
                }
            }
            let Some(&b) = data.get(*pos) else {
                return Ok(None);
            };
            let at = base + *pos as u64;
            match &self.state {
                State::Start => {
                    if b != b'{' {
                        return Err(self.invalid(at, "expected `{` to open the response"));
                    }
                    *pos += 1;
                    self.state = State::FirstKey;
                }
                State::FirstKey if b == b'}' => {
                    *pos += 1;
                    self.state = State::End;
                }
                State::FirstKey | State::Key => {
                    if b != b'"' {
                        return Err(self.invalid(at, "expected a field name"));
                    }
                    // A known name is at most 44 bytes however it is escaped; a longer
                    // one is unknown and must fit what is left of their budget.
                    let left = self.extra_left().max(64);
                    let Some(name) = self.bounded::<String>(data, pos, base, left)? else {
                        return Ok(None);
                    };
                    let known = match name.as_str() {
                        "Stats" | "stats" => Some(Field::Stats),
                        "Schema" | "schema" => Some(Field::Schema),
                        "Results" | "results" => Some(Field::Results),
                        _ => None,
                    };
                    let field = match known {
                        Some(field) => {
                            let seen = match field {
                                Field::Stats => &mut self.seen_stats,
                                Field::Schema => &mut self.seen_schema,
                                _ => &mut self.seen_results,
                            };
                            if std::mem::replace(seen, true) {
                                return Err(self.invalid(at, format!("duplicate field `{name}`")));
                            }
                            field
                        }
                        None => {
                            self.extra_fields += 1;
                            self.extra_bytes += (base + *pos as u64 - at) as usize;
                            if self.extra_fields > self.limits.max_extra_fields
                                || self.extra_bytes > self.limits.max_extra_bytes
                            {
                                return Err(self.extra_error(at));
                            }
                            Field::Other(name)
                        }
                    };
                    self.state = State::Colon(field);
                }
                State::Colon(_) => {
                    if b != b':' {
                        return Err(self.invalid(at, "expected `:` after a field name"));
                    }
                    *pos += 1;
                    if let State::Colon(field) = std::mem::replace(&mut self.state, State::End) {
                        self.state = State::Value(field);
                    }
                }
                State::Value(Field::Results) => {
                    if b != b'[' {
                        return Err(self.invalid(at, "`Results` is not an array"));
                    }
                    *pos += 1;
                    self.state = State::FirstRow;
                }
                State::Value(Field::Schema) => {
                    let Some(schema) =
                        self.element::<Vec<Column>>(data, pos, base, self.limits.max_element)?
                    else {
                        return Ok(None);
                    };
                    self.state = State::AfterValue;
                    return Ok(Some(DecodeEvent::Schema(schema)));
                }
                State::Value(Field::Stats) => {
                    let Some(stats) =
                        self.element::<Option<Stats>>(data, pos, base, self.limits.max_element)?
                    else {
                        return Ok(None);
                    };
                    self.state = State::AfterValue;
                    if let Some(stats) = stats {
                        return Ok(Some(DecodeEvent::Stats(stats)));
                    }
                }
                State::Value(Field::Other(_)) => {
                    let Some(value) = self.bounded::<Value>(data, pos, base, self.extra_left())?
                    else {
                        return Ok(None);
                    };
                    self.extra_bytes += (base + *pos as u64 - at) as usize;
                    if let State::Value(Field::Other(name)) =
                        std::mem::replace(&mut self.state, State::AfterValue)
                    {
                        self.extra.insert(name, value);
                    }
                }
                State::AfterValue => {
                    *pos += 1;
                    match b {
                        b',' => self.state = State::Key,
                        b'}' => self.state = State::End,
                        _ => {
                            return Err(self.invalid(at, "expected `,` or `}` after a field"));
                        }
                    }
                }
                State::FirstRow if b == b']' => {
                    *pos += 1;
                    self.state = State::AfterValue;
                }
                State::FirstRow | State::Row => {
                    let Some(row) =
                        self.element::<Row>(data, pos, base, self.limits.max_element)?
                    else {
                        return Ok(None);
                    };
                    self.rows += 1;
                    self.state = State::AfterRow;
                    return Ok(Some(DecodeEvent::Row(row)));
                }
                State::AfterRow => {
                    *pos += 1;
                    match b {
                        b',' => self.state = State::Row,
                        b']' => self.state = State::AfterValue,
                        _ => return Err(self.invalid(at, "expected `,` or `]` after a row")),
                    }
                }
                State::End => {
                    return Err(self.invalid(at, "trailing characters after the response"));
                }
            }
        }
    }

    /// Bytes of unknown fields still allowed.
    fn extra_left(&self) -> usize {
        self.limits.max_extra_bytes.saturating_sub(self.extra_bytes)
    }

    fn extra_error(&self, offset: u64) -> DecodeError {
        DecodeError::ExtraFields {
            rows: self.rows,
            offset,
            max_fields: self.limits.max_extra_fields,
            max_bytes: self.limits.max_extra_bytes,
        }
    }

    /// [`Core::element`] no larger than `budget` (of the unknown fields) either: passing
    /// the budget is [`DecodeError::ExtraFields`], passing the element limit `TooLarge`.
    fn bounded<T: DeserializeOwned>(
        &mut self,
        data: &[u8],
        pos: &mut usize,
        base: u64,
        budget: usize,
    ) -> Result<Option<T>, DecodeError> {
        if budget >= self.limits.max_element {
            return self.element(data, pos, base, self.limits.max_element);
        }
        self.element(data, pos, base, budget).map_err(|e| match e {
            DecodeError::TooLarge { offset, .. } => self.extra_error(offset),
            e => e,
        })
    }

    /// One element starting at `data[*pos]` (never whitespace), of at most `max` bytes:
    /// `None` while it is not whole yet. `*pos` moves past it only when it is returned.
    /// Elements are read with the element limit unless [`Core::bounded`] says less.
    fn element<T: DeserializeOwned>(
        &mut self,
        data: &[u8],
        pos: &mut usize,
        base: u64,
        max: usize,
    ) -> Result<Option<T>, DecodeError> {
        let start = *pos;
        let avail = &data[start..];
        let at = base + start as u64;
        let Some(&first) = avail.first() else {
            return Ok(None);
        };
        if self.scan.is_none() {
            // Fast path: parse in place; the scanner runs only when the element is cut.
            let mut it = serde_json::Deserializer::from_slice(avail).into_iter::<T>();
            match it.next() {
                Some(Ok(value)) => {
                    let len = it.byte_offset();
                    // A number at the very end may go on in the next chunk.
                    let open = len >= avail.len() && matches!(first, b'-' | b'0'..=b'9');
                    if !open {
                        if len > max {
                            return Err(self.too_large(at, max));
                        }
                        *pos = start + len;
                        return Ok(Some(value));
                    }
                }
                Some(Err(e)) if e.is_eof() => {}
                Some(Err(e)) => return Err(self.invalid(at, e.to_string())),
                None => return Ok(None),
            }
            self.scan = Some(Scan::new(first));
        }
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        match scan.advance(avail) {
            Some(len) => {
                self.scan = None;
                if len > max {
                    return Err(self.too_large(at, max));
                }
                match serde_json::from_slice::<T>(&avail[..len]) {
                    Ok(value) => {
                        *pos = start + len;
                        Ok(Some(value))
                    }
                    Err(e) => Err(self.invalid(at, e.to_string())),
                }
            }
            None if avail.len() > max => Err(self.too_large(at, max)),
            None => Ok(None),
        }
    }

    fn too_large(&self, offset: u64, limit: usize) -> DecodeError {
        DecodeError::TooLarge {
            rows: self.rows,
            offset,
            limit,
        }
    }

    /// The body has ended at `data[*pos..]` (all events polled).
    fn finish(&mut self, data: &[u8], pos: &mut usize, base: u64) -> Result<(), DecodeError> {
        match self.poll(data, pos, base)? {
            Some(_) if self.error.is_none() => {
                // Unreachable through the public API (the caller's event is kept by it).
                Err(DecodeError::NotDrained { rows: self.rows })
            }
            _ if self.state == State::End => Ok(()),
            _ => {
                let e = DecodeError::Truncated {
                    rows: self.rows,
                    offset: base + data.len() as u64,
                };
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// The incremental decoder of a hunting response.
///
/// Feed it what arrived, then poll until `Ok(None)`; at the end of the body call
/// [`finish`](RowDecoder::finish). It buffers only what it has not yet handed out: at
/// most one incomplete element plus the last chunk fed; and it keeps the unknown
/// top-level fields, within its [`DecodeLimits`].
#[derive(Debug, Clone)]
pub struct RowDecoder {
    core: Core,
    buf: Vec<u8>,
    pos: usize,
    /// Body bytes dropped from the front of `buf`.
    base: u64,
    /// An event `finish` found undrained, handed out by the next `poll`.
    held: Option<DecodeEvent>,
}

impl Default for RowDecoder {
    fn default() -> RowDecoder {
        RowDecoder::new()
    }
}

impl RowDecoder {
    /// A decoder with the default limits ([`DecodeLimits::default`]).
    pub fn new() -> RowDecoder {
        RowDecoder::with_limits(DecodeLimits::default())
    }

    /// A decoder that rejects any element (a row, the schema, the stats, a field name)
    /// larger than `max_element` bytes with [`DecodeError::TooLarge`]; the limits on
    /// unknown fields are the defaults.
    pub fn with_max_element(max_element: usize) -> RowDecoder {
        RowDecoder::with_limits(DecodeLimits {
            max_element,
            ..DecodeLimits::default()
        })
    }

    /// A decoder enforcing `limits`.
    pub fn with_limits(limits: DecodeLimits) -> RowDecoder {
        RowDecoder {
            core: Core::new(limits),
            buf: Vec::new(),
            pos: 0,
            base: 0,
            held: None,
        }
    }

    /// Adds bytes of the body, in any chunking.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            self.base += self.pos as u64;
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && (self.pos >= 4096 || self.pos * 2 >= self.buf.len()) {
            // Drop what was handed out; what is left is at most one element.
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next event, `Ok(None)` when more bytes are needed (or the document is
    /// complete). After an error, every call returns the same error.
    pub fn poll(&mut self) -> Result<Option<DecodeEvent>, DecodeError> {
        if let Some(event) = self.held.take() {
            return Ok(Some(event));
        }
        self.core.poll(&self.buf, &mut self.pos, self.base)
    }

    /// The body has ended: `Ok` when the document was complete, otherwise
    /// [`DecodeError::Truncated`] (or the error met on the way) with the number of rows
    /// handed out. Call it after `poll` returned `Ok(None)`; if events were left,
    /// [`DecodeError::NotDrained`] says so and they stay available to `poll`.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if self.held.is_some() {
            return Err(DecodeError::NotDrained {
                rows: self.core.rows,
            });
        }
        if self.core.error.is_none() {
            if let Some(event) = self.core.poll(&self.buf, &mut self.pos, self.base)? {
                self.held = Some(event);
                return Err(DecodeError::NotDrained {
                    rows: self.core.rows,
                });
            }
        }
        self.core.finish(&self.buf, &mut self.pos, self.base)
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.core.rows
    }

    /// The closing `}` has been read.
    pub fn is_done(&self) -> bool {
        self.core.state == State::End
    }

    /// Top-level fields other than `Stats`, `Schema` and `Results` read so far (such as
    /// Graph's `@odata.context`); bounded by the decoder's [`DecodeLimits`].
    pub fn extra(&self) -> &Map<String, Value> {
        &self.core.extra
    }

    /// Takes the unknown top-level fields read so far.
    pub fn take_extra(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.core.extra)
    }

    /// Bytes buffered and not yet consumed (at most one element plus the last chunk).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Decodes a whole body without copying it, handing each row to `on_row` as it is
/// parsed (only one row exists at a time). Returns the columns (empty when the body has
/// none), the statistics and the number of rows.
///
/// ```
/// use defender_core::stream::decode_streaming;
/// let body = br#"{"schema":[{"name":"A","type":"Int64"}],"results":[{"A":1},{"A":2}]}"#;
/// let mut sum = 0;
/// let (schema, stats, rows) =
///     decode_streaming(body, |row| sum += row["A"].as_i64().unwrap()).unwrap();
/// assert_eq!((schema[0].name.as_str(), stats, rows, sum), ("A", None, 2, 3));
/// ```
pub fn decode_streaming(
    body: &[u8],
    on_row: impl FnMut(Row),
) -> Result<(Vec<Column>, Option<Stats>, u64), DecodeError> {
    decode_streaming_with_limits(body, DecodeLimits::default(), on_row)
}

/// [`decode_streaming`] with an element limit (see [`RowDecoder::with_max_element`]).
pub fn decode_streaming_with_limit(
    body: &[u8],
    max_element: usize,
    on_row: impl FnMut(Row),
) -> Result<(Vec<Column>, Option<Stats>, u64), DecodeError> {
    let limits = DecodeLimits {
        max_element,
        ..DecodeLimits::default()
    };
    decode_streaming_with_limits(body, limits, on_row)
}

/// [`decode_streaming`] enforcing `limits` (see [`RowDecoder::with_limits`]). Unknown
/// top-level fields are counted against the limits and not returned.
pub fn decode_streaming_with_limits(
    body: &[u8],
    limits: DecodeLimits,
    mut on_row: impl FnMut(Row),
) -> Result<(Vec<Column>, Option<Stats>, u64), DecodeError> {
    let mut core = Core::new(limits);
    let mut pos = 0;
    let mut schema = Vec::new();
    let mut stats = None;
    while let Some(event) = core.poll(body, &mut pos, 0)? {
        match event {
            DecodeEvent::Schema(s) => schema = s,
            DecodeEvent::Row(row) => on_row(row),
            DecodeEvent::Stats(s) => stats = Some(s),
        }
    }
    core.finish(body, &mut pos, 0)?;
    Ok((schema, stats, core.rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hunting::HuntResponse;

    const XDR: &[u8] = br#"{"Stats": {"ExecutionTime": 4.621215,
           "resource_usage": {"cache": {"memory": {"hits": 0, "misses": 0, "total": 0}, "disk": {}},
                              "cpu": {"user": "00:00:19.0468750"}, "memory": {"peak_per_node": 236822432}},
           "dataset_statistics": [{"table_row_count": 2, "table_size": 102}]},
 "Schema": [{"Name": "Timestamp", "Type": "DateTime"}, {"Name": "FileName", "Type": "String"}],
 "Results": [{"Timestamp": "2020-08-30T06:38:35.7664356Z", "FileName": "conhost.exe"},
             {"Timestamp": "2020-08-30T06:38:36Z", "FileName": "C:\\Windows\\\"x\"}]{["}]}"#;

    fn events(body: &[u8], chunk: usize) -> (Vec<DecodeEvent>, Result<(), DecodeError>) {
        let mut dec = RowDecoder::new();
        let mut out = Vec::new();
        for c in body.chunks(chunk.max(1)) {
            dec.feed(c);
            loop {
                match dec.poll() {
                    Ok(Some(e)) => out.push(e),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        let end = dec.finish();
        (out, end)
    }

    #[test]
    fn the_documented_xdr_response_in_every_chunking() {
        let reference = HuntResponse::from_slice(XDR).unwrap();
        for chunk in [1, 2, 3, 7, 64, XDR.len()] {
            let (evs, end) = events(XDR, chunk);
            end.unwrap();
            assert_eq!(evs.len(), 4, "chunk {chunk}");
            assert_eq!(evs[0], DecodeEvent::Stats(reference.stats.clone().unwrap()));
            assert_eq!(evs[1], DecodeEvent::Schema(reference.schema.clone()));
            assert_eq!(evs[2], DecodeEvent::Row(reference.results[0].clone()));
            assert_eq!(evs[3], DecodeEvent::Row(reference.results[1].clone()));
        }
    }

    #[test]
    fn graph_casing_stats_last_and_unknown_fields() {
        let body = br#"{"@odata.context":"x","results":[{"a":-1.5e3},{"a":12}],"schema":[{"name":"a","type":"Double"}],"stats":null,"n":123}"#;
        let mut dec = RowDecoder::new();
        for b in body.iter() {
            dec.feed(std::slice::from_ref(b));
            while dec.poll().unwrap().is_some() {}
        }
        dec.finish().unwrap();
        assert_eq!(dec.rows(), 2);
        let reference = HuntResponse::from_slice(body).unwrap();
        assert_eq!(dec.extra(), &reference.extra);
        let (schema, stats, rows) = decode_streaming(body, |_| {}).unwrap();
        assert_eq!((schema, stats, rows), (reference.schema, None, 2));
    }

    #[test]
    fn truncation_says_how_many_rows() {
        let cut = &XDR[..XDR.len() - 2];
        let (evs, end) = events(cut, 5);
        assert_eq!(evs.len(), 4);
        assert_eq!(
            end,
            Err(DecodeError::Truncated {
                rows: 2,
                offset: cut.len() as u64
            })
        );
        let err = decode_streaming(cut, |_| {}).unwrap_err();
        assert_eq!(err.rows(), 2);
    }

    #[test]
    fn finish_before_draining_keeps_the_events() {
        let body = br#"{"Results":[{"a":1}]}"#;
        let mut dec = RowDecoder::new();
        dec.feed(body);
        assert_eq!(dec.finish(), Err(DecodeError::NotDrained { rows: 1 }));
        assert!(matches!(dec.poll(), Ok(Some(DecodeEvent::Row(_)))));
        assert_eq!(dec.poll(), Ok(None));
        dec.finish().unwrap();
        assert!(dec.is_done());
    }

    #[test]
    fn errors() {
        let bad: &[&[u8]] = &[
            b"[]",
            br#"{"Results":{}}"#,
            br#"{"Results":[1]}"#,
            br#"{"Results":[],"Results":[]}"#,
            br#"{"Results":[],"results":[]}"#,
            br#"{"Schema":null}"#,
            br#"{"Results":[{"a":1}}"#,
            br#"{"Results":[{"a":1},]}"#,
            br#"{} x"#,
            br#"{"a" 1}"#,
            br#"{"a":1,}"#,
        ];
        for body in bad {
            assert!(HuntResponse::from_slice(body).is_err());
            assert!(decode_streaming(body, |_| {}).is_err(), "{body:?}");
            for chunk in [1, 3] {
                let (_, end) = events(body, chunk);
                assert!(end.is_err(), "{body:?}");
            }
        }
    }

    #[test]
    fn the_element_limit() {
        let body =
            br#"{"Results":[{"a":"0123456789"},{"a":"0123456789012345678901234567890123456789"}]}"#;
        let err = decode_streaming_with_limit(body, 32, |_| {}).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLarge { rows: 1, .. }),
            "{err}"
        );
        let mut dec = RowDecoder::with_max_element(32);
        let mut err = None;
        for b in body.iter() {
            dec.feed(std::slice::from_ref(b));
            match dec.poll() {
                Err(e) => {
                    err = Some(e);
                    break;
                }
                Ok(_) => assert!(dec.buffered() <= 34),
            }
        }
        assert!(matches!(err, Some(DecodeError::TooLarge { rows: 1, .. })));
    }

    /// A million unknown top-level keys: the decoder stops at the 65th, whole body or
    /// fed a chunk at a time, instead of keeping a million fields.
    #[test]
    fn unknown_fields_are_bounded_in_number() {
        let mut body = br#"{"Schema":[{"Name":"a","Type":"Int64"}]"#.to_vec();
        for i in 0..1_000_000 {
            body.extend_from_slice(format!(r#","k{i}":0"#).as_bytes());
        }
        body.extend_from_slice(br#","Results":[]}"#);
        let err = decode_streaming(&body, |_| {}).unwrap_err();
        assert!(
            matches!(err, DecodeError::ExtraFields { max_fields: DEFAULT_MAX_EXTRA_FIELDS, offset, .. } if offset < 4096),
            "{err}"
        );
        let mut dec = RowDecoder::new();
        let mut fed = 0;
        let err = body
            .chunks(64 * 1024)
            .find_map(|c| {
                dec.feed(c);
                fed += c.len();
                loop {
                    match dec.poll() {
                        Ok(Some(_)) => {}
                        Ok(None) => return None,
                        Err(e) => return Some(e),
                    }
                }
            })
            .expect("an error");
        assert!(matches!(err, DecodeError::ExtraFields { .. }), "{err}");
        assert_eq!(fed, 64 * 1024, "stopped in the first chunk");
        assert_eq!(dec.extra().len(), DEFAULT_MAX_EXTRA_FIELDS);
    }

    /// `{"Schema":[],"x1":"<1 GiB>"...}` fed 64 KiB at a time: the decoder gives up once
    /// the value passes the unknown fields' byte budget (1 MiB), not at the element
    /// limit (16 MiB), and never buffers more than the budget and a chunk.
    #[test]
    fn an_unknown_field_is_read_no_further_than_its_budget() {
        const CHUNK: usize = 64 * 1024;
        let mut dec = RowDecoder::new();
        dec.feed(br#"{"Schema":[{"Name":"a","Type":"Int64"}],"x1":""#);
        let filler = vec![b'a'; CHUNK];
        let mut fed = 0usize;
        let err = loop {
            assert!(fed < 1 << 30, "read the whole GiB");
            dec.feed(&filler);
            fed += CHUNK;
            assert!(dec.buffered() <= DEFAULT_MAX_EXTRA_BYTES + 2 * CHUNK);
            match dec.poll() {
                Ok(Some(DecodeEvent::Schema(_))) | Ok(None) => {}
                Ok(Some(other)) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(
                err,
                DecodeError::ExtraFields {
                    max_bytes: DEFAULT_MAX_EXTRA_BYTES,
                    ..
                }
            ),
            "{err}"
        );
        assert!(fed <= DEFAULT_MAX_EXTRA_BYTES + CHUNK, "{fed} bytes read");
        // A long unknown name is bounded the same way.
        let mut name = br#"{""#.to_vec();
        name.extend(std::iter::repeat_n(b'n', 2 * DEFAULT_MAX_EXTRA_BYTES));
        name.extend_from_slice(br#"":1}"#);
        let err = decode_streaming(&name, |_| {}).unwrap_err();
        assert!(
            matches!(err, DecodeError::ExtraFields { offset: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_limits_on_unknown_fields_are_data() {
        let body = br#"{"@odata.context":"x","results":[{"a":1}],"n":123}"#;
        let limits = |fields, bytes| DecodeLimits {
            max_extra_fields: fields,
            max_extra_bytes: bytes,
            ..DecodeLimits::default()
        };
        // `"@odata.context":"x"` and `"n":123`, as written: 16 + 3 + 3 + 3 bytes.
        assert!(decode_streaming_with_limits(body, limits(2, 25), |_| {}).is_ok());
        for (fields, bytes) in [(1, 25), (2, 24), (0, 1000)] {
            let err = decode_streaming_with_limits(body, limits(fields, bytes), |_| {});
            assert!(
                matches!(err, Err(DecodeError::ExtraFields { max_fields, max_bytes, .. })
                    if (max_fields, max_bytes) == (fields, bytes)),
                "{fields} fields, {bytes} bytes: {err:?}"
            );
        }
        let mut dec = RowDecoder::with_limits(limits(1, 1000));
        dec.feed(body);
        let mut rows = 0;
        let err = loop {
            match dec.poll() {
                Ok(Some(DecodeEvent::Row(_))) => rows += 1,
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        // The row before the second unknown field was handed out; the error says so.
        assert_eq!((rows, err.rows()), (1, 1));
        assert_eq!(dec.extra().len(), 1);
    }
}
