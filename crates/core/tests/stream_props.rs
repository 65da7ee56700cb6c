//! The streaming decoder against the reference (`HuntResponse::from_slice`): the same
//! schema, rows, stats and unknown fields for every generated response of every surface,
//! in every chunking; a typed error for every truncated prefix; no panic on any bytes.

use defender_core::hunting::{Column, HuntResponse, Row, Stats};
use defender_core::stream::{
    decode_streaming, decode_streaming_with_limits, DecodeError, DecodeEvent, DecodeLimits,
    RowDecoder,
};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

// ---------------------------------------------------------------------------------------
// Generated responses.

/// Characters that stress a scanner: quotes, backslashes, brackets and braces, commas and
/// colons, control characters, multi-byte and astral characters.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        1 => prop::sample::select(vec![
            '"', '\\', '{', '}', '[', ']', ',', ':', '/', '\n', '\t', '\u{1}', '\u{1f}', 'é',
            '€', '😀', '\u{2028}', '\u{7f}', ' ',
        ]),
        1 => any::<char>(),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn cell() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(Value::Number),
        text(12).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(6), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const KNOWN: [&str; 6] = ["Stats", "stats", "Schema", "schema", "Results", "results"];

/// `ExecutionTime` and the other fields of `Stats`.
type StatsSpec = (Option<f64>, Vec<(String, Value)>);

#[derive(Debug, Clone)]
struct Doc {
    /// `None`: no `Stats`; `Some(None)`: `"Stats": null`.
    stats: Option<Option<StatsSpec>>,
    schema: Option<Vec<(String, Option<String>)>>,
    /// Rows as written, key order and duplicates included.
    results: Option<Vec<Vec<(String, Value)>>>,
    extra: Vec<(String, Value)>,
    /// Drives casing, key order, escapes and whitespace.
    seed: u64,
}

fn doc(max_rows: usize) -> impl Strategy<Value = Doc> {
    let stats = prop::option::of(prop::option::of((
        prop::option::of(0.0f64..1e6),
        prop::collection::vec(
            (
                prop::sample::select(vec!["resource_usage", "dataset_statistics", "x_other"]),
                cell(),
            ),
            0..3,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Vec<_>>()
        }),
    )));
    let schema = prop::collection::vec(
        (
            "[A-Za-z_][A-Za-z0-9_]{0,10}|.{0,4}",
            prop::option::of("String|DateTime|Int64|Double|Boolean|Dynamic|Guid"),
        ),
        0..8,
    );
    (
        stats,
        prop::option::of(schema),
        prop::option::of(prop::collection::vec(
            prop::collection::vec(("[A-Z][a-z]{0,3}|.{0,3}", cell()), 0..8),
            0..max_rows,
        )),
        prop::collection::vec(
            (
                text(8).prop_filter("unknown", |k| !KNOWN.contains(&k.as_str())),
                cell(),
            ),
            0..3,
        ),
        any::<u64>(),
    )
        .prop_map(|(stats, schema, results, extra, seed)| {
            // Unknown top-level keys are unique (the reference keeps the last, as we do,
            // but a duplicate there says nothing about streaming).
            let mut seen = std::collections::BTreeSet::new();
            let extra = extra
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .collect();
            Doc {
                stats,
                schema,
                results,
                extra,
                seed,
            }
        })
}

/// Writes JSON by hand, so that escapes (`\uXXXX`, surrogate pairs, `\/`), number
/// spellings, key order, casing and whitespace all vary.
struct Writer {
    rng: u64,
    out: String,
}

impl Writer {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }

    fn ws(&mut self) {
        if self.chance(3) {
            let pick = ["", " ", "\n", "\t", "\r\n", "  ", " \n\t "];
            let i = (self.next() % pick.len() as u64) as usize;
            self.out.push_str(pick[i]);
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' if self.chance(2) => self.out.push_str("\\n"),
                '\t' if self.chance(2) => self.out.push_str("\\t"),
                '/' if self.chance(2) => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || self.chance(5) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        if self.chance(2) {
                            self.out.push_str(&format!("\\u{u:04x}"));
                        } else {
                            self.out.push_str(&format!("\\u{u:04X}"));
                        }
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                let s = n.to_string();
                self.out.push_str(&s);
                if n.is_i64() && self.chance(8) {
                    let exp = if self.chance(2) { "e0" } else { ".0E+0" };
                    self.out.push_str(exp);
                }
            }
            Value::String(s) => self.string(s),
            Value::Array(a) => {
                self.out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ws();
                    self.value(v);
                    self.ws();
                }
                self.out.push(']');
            }
            Value::Object(m) => {
                let entries: Vec<(String, Value)> =
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.object(&entries, true);
            }
        }
    }

    fn object(&mut self, entries: &[(String, Value)], shuffle: bool) {
        let mut order: Vec<usize> = (0..entries.len()).collect();
        if shuffle {
            self.shuffle(&mut order);
        }
        self.out.push('{');
        self.ws();
        for (n, i) in order.into_iter().enumerate() {
            if n > 0 {
                self.out.push(',');
                self.ws();
            }
            self.string(&entries[i].0);
            self.ws();
            self.out.push(':');
            self.ws();
            self.value(&entries[i].1);
            self.ws();
        }
        self.out.push('}');
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The body of `doc`, and where the document's closing `}` ends.
fn render(doc: &Doc) -> (Vec<u8>, usize) {
    let mut w = Writer {
        rng: doc.seed | 1,
        out: String::new(),
    };
    let lower = w.chance(2);
    let mut fields: Vec<(String, Value)> = Vec::new();
    if let Some(stats) = &doc.stats {
        let v = match stats {
            None => Value::Null,
            Some((time, extra)) => {
                let mut m = Map::new();
                if let Some(t) = time {
                    m.insert(
                        "ExecutionTime".into(),
                        Number::from_f64(*t).map_or(Value::Null, Value::Number),
                    );
                }
                for (k, v) in extra {
                    m.insert(k.clone(), v.clone());
                }
                Value::Object(m)
            }
        };
        fields.push((if lower { "stats" } else { "Stats" }.into(), v));
    }
    if let Some(schema) = &doc.schema {
        let cols = schema
            .iter()
            .map(|(name, kind)| {
                let lower_col = w.chance(2);
                let mut m = Map::new();
                m.insert(
                    if lower_col { "name" } else { "Name" }.into(),
                    name.clone().into(),
                );
                if let Some(kind) = kind {
                    m.insert(
                        if lower_col { "type" } else { "Type" }.into(),
                        kind.clone().into(),
                    );
                }
                if w.chance(6) {
                    m.insert("Unknown".into(), Value::Bool(true));
                }
                Value::Object(m)
            })
            .collect();
        fields.push((
            if lower { "schema" } else { "Schema" }.into(),
            Value::Array(cols),
        ));
    }
    for (k, v) in &doc.extra {
        fields.push((k.clone(), v.clone()));
    }
    let mut order: Vec<usize> = (0..fields.len() + usize::from(doc.results.is_some())).collect();
    w.shuffle(&mut order);
    w.ws();
    w.out.push('{');
    w.ws();
    for (n, i) in order.into_iter().enumerate() {
        if n > 0 {
            w.out.push(',');
            w.ws();
        }
        if i < fields.len() {
            let (k, v) = fields[i].clone();
            w.string(&k);
            w.ws();
            w.out.push(':');
            w.ws();
            w.value(&v);
        } else if let Some(rows) = &doc.results {
            w.string(if lower { "results" } else { "Results" });
            w.ws();
            w.out.push(':');
            w.ws();
            w.out.push('[');
            for (r, row) in rows.iter().enumerate() {
                if r > 0 {
                    w.out.push(',');
                }
                w.ws();
                w.object(row, false);
                w.ws();
            }
            w.out.push(']');
        }
        w.ws();
    }
    w.out.push('}');
    let end = w.out.len();
    w.ws();
    (w.out.into_bytes(), end)
}

// ---------------------------------------------------------------------------------------
// Decoding.

#[derive(Debug, Default, PartialEq)]
struct Decoded {
    schemas: Vec<Vec<Column>>,
    rows: Vec<Row>,
    stats: Vec<Stats>,
    extra: Map<String, Value>,
}

/// Feeds `body` in the chunk sizes `chunks` (cycled), polling after each chunk.
fn decode_chunked(body: &[u8], chunks: &[usize]) -> (Decoded, Result<(), DecodeError>) {
    decode_chunked_with(body, chunks, DecodeLimits::default())
}

/// [`decode_chunked`] by a decoder enforcing `limits`.
fn decode_chunked_with(
    body: &[u8],
    chunks: &[usize],
    limits: DecodeLimits,
) -> (Decoded, Result<(), DecodeError>) {
    let mut dec = RowDecoder::with_limits(limits);
    let mut out = Decoded::default();
    let mut at = 0;
    let mut sizes = chunks.iter().copied().cycle();
    let result = loop {
        if at >= body.len() {
            break dec.finish();
        }
        let n = sizes.next().unwrap_or(1).max(1).min(body.len() - at);
        dec.feed(&body[at..at + n]);
        at += n;
        let polled = loop {
            match dec.poll() {
                Ok(Some(DecodeEvent::Schema(s))) => out.schemas.push(s),
                Ok(Some(DecodeEvent::Row(r))) => out.rows.push(r),
                Ok(Some(DecodeEvent::Stats(s))) => out.stats.push(s),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = polled {
            assert_eq!(e.rows(), out.rows.len() as u64, "{e}");
            assert_eq!(dec.poll(), Err(e.clone()), "errors are sticky");
            break Err(e);
        }
    };
    out.extra = dec.take_extra();
    (out, result)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(384)
}

fn chunkings() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        prop::collection::vec(1usize..8, 1..16),
        prop::collection::vec(1usize..200, 1..16),
        Just(vec![usize::MAX]),
    ]
}

proptest! {
    // 384 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Every generated response, in every chunking, decodes to exactly what the reference
    /// decodes.
    #[test]
    fn streams_exactly_what_the_reference_decodes(d in doc(8), chunks in chunkings()) {
        let (body, _) = render(&d);
        let reference = HuntResponse::from_slice(&body)
            .unwrap_or_else(|e| panic!("the generator wrote a bad body ({e}): {}", String::from_utf8_lossy(&body)));
        let (got, end) = decode_chunked(&body, &chunks);
        prop_assert_eq!(end, Ok(()));
        prop_assert!(got.schemas.len() <= 1);
        prop_assert_eq!(got.schemas.first().cloned().unwrap_or_default(), reference.schema.clone());
        prop_assert_eq!(got.schemas.len(), usize::from(d.schema.is_some()));
        prop_assert_eq!(&got.rows, &reference.results);
        prop_assert!(got.stats.len() <= 1);
        prop_assert_eq!(got.stats.first().cloned(), reference.stats.clone());
        prop_assert_eq!(&got.extra, &reference.extra);

        let mut rows = Vec::new();
        let (schema, stats, n) = decode_streaming(&body, |r| rows.push(r)).unwrap();
        prop_assert_eq!(schema, reference.schema);
        prop_assert_eq!(stats, reference.stats);
        prop_assert_eq!(n, reference.results.len() as u64);
        prop_assert_eq!(rows, reference.results);
    }

    /// The limits on unknown top-level fields, in every chunking, against a plain count.
    #[test]
    fn unknown_fields_within_their_limits(d in doc(4), max_fields in 0usize..4, chunks in chunkings()) {
        // The reference is a plain count of the generated unknown fields: room for
        // `max_fields` of them decodes as with no limit when there are no more, and fails
        // with `ExtraFields` when there are; a byte budget of the whole body always
        // suffices, and a budget of nothing fails exactly when there is an unknown field.
        let (body, _) = render(&d);
        let reference = HuntResponse::from_slice(&body).unwrap();
        let n = d.extra.len();
        for (fields, bytes, ok) in [
            (max_fields, usize::MAX, n <= max_fields),
            (usize::MAX, body.len(), true),
            (usize::MAX, 0, n == 0),
        ] {
            let limits = DecodeLimits { max_extra_fields: fields, max_extra_bytes: bytes, ..DecodeLimits::default() };
            let whole = decode_streaming_with_limits(&body, limits, |_| {});
            let (got, end) = decode_chunked_with(&body, &chunks, limits);
            if ok {
                prop_assert!(whole.is_ok(), "{:?}", whole);
                prop_assert!(end.is_ok(), "{:?}", end);
                prop_assert_eq!(&got.extra, &reference.extra);
                prop_assert_eq!(&got.rows, &reference.results);
            } else {
                prop_assert!(matches!(whole, Err(DecodeError::ExtraFields { .. })), "{:?}", whole);
                prop_assert!(matches!(end, Err(DecodeError::ExtraFields { .. })), "{:?}", end);
                prop_assert!(got.extra.len() <= fields);
                // What was handed out before the error is the reference's first rows.
                prop_assert_eq!(&got.rows[..], &reference.results[..got.rows.len()]);
            }
        }
    }

    /// Every truncated prefix of a valid body: `finish` says `Truncated` with the number of
    /// rows handed out, and those rows are the first rows of the whole body.
    #[test]
    fn every_truncated_prefix_is_a_typed_error(d in doc(4), chunks in chunkings()) {
        let (body, end) = render(&d);
        let reference = HuntResponse::from_slice(&body).unwrap();
        for cut in 0..body.len() {
            let prefix = &body[..cut];
            let (got, result) = decode_chunked(prefix, &chunks);
            prop_assert!(reference.results.starts_with(&got.rows));
            if cut >= end {
                prop_assert_eq!(result, Ok(()));
                prop_assert_eq!(&got.rows, &reference.results);
            } else {
                match result {
                    Err(DecodeError::Truncated { rows, offset }) => {
                        prop_assert_eq!(rows, got.rows.len() as u64);
                        prop_assert_eq!(offset, cut as u64);
                    }
                    other => prop_assert!(false, "cut at {}: {:?}", cut, other),
                }
                let streamed = decode_streaming(prefix, |_| {});
                prop_assert!(
                    matches!(streamed, Err(DecodeError::Truncated { .. })),
                    "{:?}", streamed
                );
            }
        }
    }

    /// Any bytes: no panic, and whatever the decoder accepts the reference accepts.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), chunks in chunkings()) {
        let (_, result) = decode_chunked(&body, &chunks);
        let _ = decode_streaming(&body, |_| {});
        if result.is_ok() {
            prop_assert!(HuntResponse::from_slice(&body).is_ok());
        }
    }

    /// Valid bodies with bytes overwritten by JSON's own punctuation (the hard case for a
    /// scanner): no panic, and the decoder agrees with the reference on success.
    #[test]
    fn mutated_bodies_agree_with_the_reference(
        d in doc(4),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(b"{}[]\",:\\ 0-eE.tnul\x00".to_vec())), 1..4),
        chunks in chunkings(),
    ) {
        let (mut body, _) = render(&d);
        if body.is_empty() {
            return Ok(());
        }
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let (got, result) = decode_chunked(&body, &chunks);
        let streamed = decode_streaming(&body, |_| {});
        let reference = HuntResponse::from_slice(&body);
        prop_assert_eq!(result.is_ok(), streamed.is_ok());
        if let Ok(reference) = reference {
            prop_assert_eq!(result, Ok(()));
            prop_assert_eq!(got.rows, reference.results);
            prop_assert_eq!(got.schemas.first().cloned().unwrap_or_default(), reference.schema);
            prop_assert_eq!(got.stats.first().cloned(), reference.stats);
        } else {
            prop_assert!(result.is_err(), "the reference rejects: {}", String::from_utf8_lossy(&body));
        }
    }
}

#[test]
fn an_element_over_the_limit_is_an_error_not_a_buffer() {
    let big = "x".repeat(10_000);
    let body = format!(r#"{{"Results":[{{"a":1}},{{"a":"{big}"}}]}}"#);
    let mut dec = RowDecoder::with_max_element(1024);
    let mut rows = 0;
    let mut err = None;
    'feed: for chunk in body.as_bytes().chunks(100) {
        dec.feed(chunk);
        loop {
            match dec.poll() {
                Ok(Some(_)) => rows += 1,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break 'feed;
                }
            }
        }
        assert!(dec.buffered() <= 1024 + 100);
    }
    assert_eq!(rows, 1);
    assert!(matches!(
        err,
        Some(DecodeError::TooLarge {
            rows: 1,
            limit: 1024,
            ..
        })
    ));
}

#[test]
fn one_million_rows_hold_one_window() {
    // A million small rows fed in 8 KiB chunks: the buffer never holds more than a chunk
    // and a row, however many rows went through.
    let row = br#"{"Timestamp":"2024-02-01T08:00:00Z","DeviceId":"0a1b","N":12345}"#;
    let mut dec = RowDecoder::new();
    dec.feed(br#"{"Schema":[{"Name":"Timestamp","Type":"DateTime"}],"Results":["#);
    let mut pending = Vec::with_capacity(8192 + row.len() + 1);
    let mut rows = 0u64;
    let mut max_buffered = 0;
    for i in 0..1_000_000u32 {
        if i > 0 {
            pending.push(b',');
        }
        pending.extend_from_slice(row);
        if pending.len() >= 8192 {
            dec.feed(&pending);
            pending.clear();
            while let Some(e) = dec.poll().unwrap() {
                rows += u64::from(matches!(e, DecodeEvent::Row(_)));
            }
            max_buffered = max_buffered.max(dec.buffered());
        }
    }
    pending.extend_from_slice(b"]}");
    dec.feed(&pending);
    while let Some(e) = dec.poll().unwrap() {
        rows += u64::from(matches!(e, DecodeEvent::Row(_)));
    }
    dec.finish().unwrap();
    assert_eq!(rows, 1_000_000);
    assert!(max_buffered < 8192 + row.len(), "{max_buffered}");
}
