//! Rows of a streamed hunt, handed out while the body arrives.

use super::*;

/// The transports' side of a streamed hunt: feed it the body's chunks, take its items,
/// and hand its [`StreamEnd`] to [`Engine::handle_stream_end`]. It holds at most one
/// element of the document (see [`RowDecoder`]).
#[derive(Debug, Default)]
pub struct HuntStreamer {
    decoder: RowDecoder,
    schema: Vec<Column>,
    stats: Option<Stats>,
}

impl HuntStreamer {
    /// A streamer.
    pub fn new() -> HuntStreamer {
        HuntStreamer::default()
    }

    /// Adds a chunk of the body; then take items with [`HuntStreamer::next_item`].
    pub fn feed(&mut self, chunk: &[u8]) {
        self.decoder.feed(chunk);
    }

    /// The next item, `Ok(None)` when more bytes are needed. On an error, end the stream
    /// with [`StreamEnd::Decode`].
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, DecodeError> {
        loop {
            match self.decoder.poll()? {
                None => return Ok(None),
                Some(DecodeEvent::Stats(s)) => self.stats = Some(s),
                Some(DecodeEvent::Schema(s)) => {
                    self.schema = s.clone();
                    return Ok(Some(StreamItem::Schema(s)));
                }
                Some(DecodeEvent::Row(r)) => return Ok(Some(StreamItem::Row(r))),
            }
        }
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.decoder.rows()
    }

    /// The body ended: the last items (after `Stats`, or a schema that came late) and
    /// how it ended.
    pub fn finish(mut self) -> (Vec<StreamItem>, StreamEnd) {
        let mut items = Vec::new();
        loop {
            match self.next_item() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, StreamEnd::Decode(e)),
            }
        }
        let end = match self.decoder.finish() {
            Ok(()) => StreamEnd::Complete {
                schema: self.schema,
                stats: self.stats,
                rows: self.decoder.rows(),
            },
            Err(e) => StreamEnd::Decode(e),
        };
        (items, end)
    }

    /// The network failed: how the stream ended.
    pub fn broken(self, error: TransportError) -> StreamEnd {
        StreamEnd::Transport {
            error,
            rows: self.decoder.rows(),
        }
    }
}

impl Engine {
    /// A streamed hunt's body ended (see [`Call::HuntStream`]; only for a transmit with
    /// [`Transmit::stream`] whose status was 2xx). With no row handed out, a network
    /// failure is retried like any other; after rows were handed out nothing is retried
    /// (they would come twice) and the call fails with what broke.
    pub fn handle_stream_end(&mut self, id: SendId, end: StreamEnd, now: Instant) {
        if let StreamEnd::Transport { error, rows: 0 } = end {
            return self.handle_transport_error(id, error, now);
        }
        self.advance(now);
        self.dirty = true;
        let Some(target) = self.sends.remove(&id) else {
            return;
        };
        match target {
            SendTarget::Token => {}
            SendTarget::Orphan {
                group,
                hold,
                sent_at,
            } => {
                let elapsed = self.now.saturating_duration_since(sent_at);
                let running = match &end {
                    StreamEnd::Complete { stats, .. } => running_time(stats.as_ref(), elapsed),
                    _ => elapsed,
                };
                self.settle(group, hold, running);
            }
            SendTarget::Call(call_id) => {
                let Some(mut state) = self.calls.remove(&call_id) else {
                    return;
                };
                let elapsed = self
                    .now
                    .saturating_duration_since(state.sent_at.unwrap_or(self.now));
                let hold = state.hold.take();
                match end {
                    StreamEnd::Complete {
                        schema,
                        stats,
                        rows,
                    } => {
                        self.policy.on_success();
                        let running = running_time(stats.as_ref(), elapsed);
                        self.settle(state.group, hold, running);
                        self.record_runtime(running);
                        let row_cap = self.config.limits.hunting.rows;
                        let truncated = row_cap.is_some_and(|cap| rows >= cap);
                        if let Some(e) = self.refuse_truncated(&state.call, truncated) {
                            return self.fail(call_id, e);
                        }
                        self.events.push_back(Event::Completed {
                            id: call_id,
                            value: Value::HuntStreamed(HuntSummary {
                                schema,
                                rows,
                                stats,
                                running_time: running,
                                truncated,
                                row_cap,
                            }),
                        });
                    }
                    StreamEnd::Transport { error, .. } => {
                        self.settle(state.group, hold, elapsed);
                        self.fail(
                            call_id,
                            Error::Transport {
                                attempts: state.attempts,
                                error,
                            },
                        );
                    }
                    StreamEnd::Decode(e) => {
                        self.settle(state.group, hold, elapsed);
                        self.fail(
                            call_id,
                            Error::Decode {
                                what: "hunting",
                                len: e.offset() as usize,
                                message: e.to_string(),
                            },
                        );
                    }
                }
            }
        }
    }
}
