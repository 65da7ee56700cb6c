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
