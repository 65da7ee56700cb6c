//! The key layout.

use defender_core::quota::{normalize_id, QuotaKey};

/// Who shares one running-time budget in the store ([`crate::StoreConfig::runtime_scope`]).
///
/// Microsoft allocates advanced hunting's running time (CPU) per tenant ("Each tenant is
/// allocated CPU resources"; Defender for Endpoint: "limited per tenant"), while call
/// quotas are per application + tenant. So by default the running-time keys (charges,
/// reservations, the running-time block) are the tenant's, shared by all its apps, and
/// the call keys stay per app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum RuntimeScope {
    /// One running-time budget per (tenant, group), shared by every app of the tenant.
    #[default]
    Tenant,
    /// One running-time budget per (tenant, app, group).
    App,
}

/// The Redis keys of one [`QuotaKey`].
///
/// Every key starts with the hash tag `{prefix:tenant}`, so all of a **tenant's** data
/// lands in one cluster slot: a script touches the app's call keys and the tenant's
/// running-time keys together, and Redis Cluster requires every key of one script to
/// be in one slot. (A tag per app for the calls and per tenant for the running time
/// would put one acquire's keys in two slots.) The price is that one tenant's keys live
/// on one node; a tenant's traffic is bounded by its quotas, and tenants still spread
/// over the cluster. After the tag come the app (for the per-app keys) and the group.
/// In each part, `%`, `:`, `{` and `}` are percent-encoded, so distinct keys never
/// collide; a tenant-wide key has one part fewer than an app's, so the two never meet.
///
/// | key | type | holds | bound |
/// |---|---|---|---|
/// | `{prefix:tenant}:app:group:calls` | sorted set | admitted calls: member = ticket (`<hex>.<hex>`, then `/` and the process's `client_name` when it set one: `usage` counts calls per name from it), score = Redis time in µs | trimmed to the longest window on every acquire: at most that window's `max` (36,000 for a day's window at 1,500 calls per hour) |
/// | `{prefix:tenant}:app:group:state` | hash | `b`: calls blocked until (µs); `l<per µs>`: a learned limit's max | a few fields |
/// | `{prefix:tenant}:group:res` | sorted set | reservations of hunting queries in flight: member = `ticket:µs`, score = admission time | lapsed after the lease: at most the calls admitted in one lease |
/// | `{prefix:tenant}:group:charges` | sorted set | running time charged: member = `ticket:µs`, score = completion time | trimmed to the longest running-time window: at most the hunting calls admitted in it |
/// | `{prefix:tenant}:group:rstate` | hash | `rb`: running time blocked until (µs) | one field |
///
/// With [`RuntimeScope::App`] the running-time keys are the app's instead
/// (`{prefix:tenant}:app:group:res`, `…:charges`, and `rb` in the app's `…:state`).
/// Tickets are unique across processes, so reservations and charges of several apps
/// share a set safely.
///
/// Every write sets a `PEXPIRE` of the longest window plus margin (or the lease, a retry
/// time, twice a learned limit's period, whichever is longest), so an idle key
/// disappears by itself. Keys written by a version with the older layout
/// (`{prefix:tenant:app:group}:…`) are no longer read and expire by themselves: the
/// windows start empty once, on upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    /// The sorted set of admitted calls (per app).
    pub calls: String,
    /// The sorted set of reservations (per tenant by default).
    pub reservations: String,
    /// The sorted set of running-time charges (per tenant by default).
    pub charges: String,
    /// The hash of the app's server feedback: the call block and learned limits.
    pub state: String,
    /// The hash holding the running-time block `rb` (per tenant by default; the same key
    /// as [`KeyLayout::state`] with [`RuntimeScope::App`]).
    pub runtime_state: String,
}

impl KeyLayout {
    /// The keys of `key` under `prefix`, running time per tenant ([`RuntimeScope::Tenant`]).
    ///
    /// The tenant and app ids are written as [`QuotaKey::new`] writes them (lower case,
    /// GUIDs hyphenated, see [`normalize_id`]), also for a key built field by field, so
    /// one app never has two budgets in Redis.
    pub fn new(prefix: &str, key: &QuotaKey) -> KeyLayout {
        KeyLayout::scoped(prefix, key, RuntimeScope::Tenant)
    }

    /// The keys of `key` under `prefix`, the running-time keys per `scope`.
    pub fn scoped(prefix: &str, key: &QuotaKey, scope: RuntimeScope) -> KeyLayout {
        let tag = format!(
            "{{{}:{}}}",
            escape(prefix),
            escape(&normalize_id(&key.tenant)),
        );
        let group = key.group.as_str();
        let app = format!("{tag}:{}:{group}", escape(&normalize_id(&key.app)));
        let state = format!("{app}:state");
        let (runtime, runtime_state) = match scope {
            RuntimeScope::Tenant => {
                let t = format!("{tag}:{group}");
                let rs = format!("{t}:rstate");
                (t, rs)
            }
            RuntimeScope::App => (app.clone(), state.clone()),
        };
        KeyLayout {
            calls: format!("{app}:calls"),
            reservations: format!("{runtime}:res"),
            charges: format!("{runtime}:charges"),
            state,
            runtime_state,
        }
    }

    /// Every key (the running-time state twice with [`RuntimeScope::App`]).
    pub fn all(&self) -> [&str; 5] {
        [
            &self.calls,
            &self.reservations,
            &self.charges,
            &self.state,
            &self.runtime_state,
        ]
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
        assert_eq!(k.calls, "{p:t%3A1}:a%7Bb%7D:hunting:calls");
        assert_eq!(k.state, "{p:t%3A1}:a%7Bb%7D:hunting:state");
        assert_eq!(k.charges, "{p:t%3A1}:hunting:charges");
        assert_eq!(k.reservations, "{p:t%3A1}:hunting:res");
        assert_eq!(k.runtime_state, "{p:t%3A1}:hunting:rstate");
        let other = KeyLayout::new("p", &QuotaKey::new("t", "1:a{b}", ApiGroup::Hunting));
        assert_ne!(k.calls, other.calls);
        // Every key of one tenant in one slot: one hash tag.
        for key in k.all() {
            assert!(key.starts_with("{p:t%3A1}:"), "{key}");
        }
        let per_app = KeyLayout::scoped(
            "p",
            &QuotaKey::new("t:1", "a{b}", ApiGroup::Hunting),
            RuntimeScope::App,
        );
        assert_eq!(per_app.calls, k.calls);
        assert_eq!(per_app.charges, "{p:t%3A1}:a%7Bb%7D:hunting:charges");
        assert_eq!(per_app.reservations, "{p:t%3A1}:a%7Bb%7D:hunting:res");
        assert_eq!(per_app.runtime_state, per_app.state);
        let by_hand = QuotaKey {
            tenant: "Contoso.OnMicrosoft.com".into(),
            app: "{72F988BF-86F1-41AF-91AB-2D7CD011DB47}".into(),
            group: ApiGroup::Incidents,
        };
        assert_eq!(
            KeyLayout::new("p", &by_hand).calls,
            "{p:contoso.onmicrosoft.com}:72f988bf-86f1-41af-91ab-2d7cd011db47:incidents:calls"
        );
    }
}
