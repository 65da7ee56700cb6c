//! The key layout.

use defender_core::quota::{normalize_id, QuotaKey};

/// The Redis keys of one [`QuotaKey`].
///
/// Every key starts with the hash tag `{prefix:tenant:app:group}`, so all of a quota key's
/// data lands in one cluster slot and one script can touch it atomically. In each part,
/// `%`, `:`, `{` and `}` are percent-encoded, so distinct keys never collide.
///
/// | key | type | holds | bound |
/// |---|---|---|---|
/// | `…:calls` | sorted set | admitted calls: member = ticket, score = Redis time in µs | trimmed to the longest window on every acquire: at most that window's `max` (36,000 for a day's window at 1,500 calls per hour) |
/// | `…:res` | sorted set | reservations of hunting queries in flight: member = `ticket:µs`, score = admission time | lapsed after the lease: at most the calls admitted in one lease |
/// | `…:charges` | sorted set | running time charged: member = `ticket:µs`, score = completion time | trimmed to the longest running-time window: at most the hunting calls admitted in it |
/// | `…:state` | hash | `b` / `rb`: calls / running time blocked until (µs); `l<per µs>`: a learned limit's max; `s`: the ticket sequence | a few fields |
///
/// Every write sets a `PEXPIRE` of the longest window plus margin (or the lease, a retry
/// time, twice a learned limit's period, whichever is longest), so an idle key
/// disappears by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    /// The sorted set of admitted calls.
    pub calls: String,
    /// The sorted set of reservations.
    pub reservations: String,
    /// The sorted set of running-time charges.
    pub charges: String,
    /// The hash of server feedback and the ticket sequence.
    pub state: String,
}

impl KeyLayout {
    /// The keys of `key` under `prefix`.
    ///
    /// The tenant and app ids are written as [`QuotaKey::new`] writes them (lower case,
    /// GUIDs hyphenated, see [`normalize_id`]), also for a key built field by field, so
    /// one app never has two budgets in Redis.
    pub fn new(prefix: &str, key: &QuotaKey) -> KeyLayout {
        let tag = format!(
            "{{{}:{}:{}:{}}}",
            escape(prefix),
            escape(&normalize_id(&key.tenant)),
            escape(&normalize_id(&key.app)),
            key.group.as_str()
        );
        KeyLayout {
            calls: format!("{tag}:calls"),
            reservations: format!("{tag}:res"),
            charges: format!("{tag}:charges"),
            state: format!("{tag}:state"),
        }
    }

    /// All four keys.
    pub fn all(&self) -> [&str; 4] {
        [&self.calls, &self.reservations, &self.charges, &self.state]
    }
}

fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use defender_core::limits::ApiGroup;

    #[test]
    fn layout_is_tagged_and_escaped() {
        let k = KeyLayout::new("p", &QuotaKey::new("t:1", "a{b}", ApiGroup::Hunting));
        assert_eq!(k.calls, "{p:t%3A1:a%7Bb%7D:hunting}:calls");
        assert_eq!(k.state, "{p:t%3A1:a%7Bb%7D:hunting}:state");
        let other = KeyLayout::new("p", &QuotaKey::new("t", "1:a{b}", ApiGroup::Hunting));
        assert_ne!(k.calls, other.calls);
        let by_hand = QuotaKey {
            tenant: "Contoso.OnMicrosoft.com".into(),
            app: "{72F988BF-86F1-41AF-91AB-2D7CD011DB47}".into(),
            group: ApiGroup::Incidents,
        };
        assert_eq!(
            KeyLayout::new("p", &by_hand).calls,
            "{p:contoso.onmicrosoft.com:72f988bf-86f1-41af-91ab-2d7cd011db47:incidents}:calls"
        );
    }
}
