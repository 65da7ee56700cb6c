//! The Lua scripts, their arguments and their replies.

use std::sync::LazyLock;
use std::time::Duration;

use defender_core::limits::{CallLimit, RuntimeLimit};
use redis::{Script, ScriptInvocation, Value};

use crate::keys::KeyLayout;
use crate::{
    micros, AcquireRequest, Admission, CallWindowUsage, Denied, DenyReason, RuntimeWindowUsage,
    StoreError, Ticket, TicketInner, Usage,
};

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/prelude.lua"),
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

pub(crate) static ACQUIRE: LazyLock<Script> = script!("acquire.lua");
pub(crate) static RELEASE: LazyLock<Script> = script!("release.lua");
pub(crate) static COMPLETE: LazyLock<Script> = script!("complete.lua");
pub(crate) static FEEDBACK: LazyLock<Script> = script!("feedback.lua");
pub(crate) static USAGE: LazyLock<Script> = script!("usage.lua");

/// Every script, for `SCRIPT LOAD` on connect.
pub(crate) fn all() -> [&'static Script; 5] {
    [&ACQUIRE, &RELEASE, &COMPLETE, &FEEDBACK, &USAGE]
}

fn now_arg(now: Option<u64>) -> String {
    now.map_or_else(String::new, |n| n.to_string())
}

fn limits_invocation(
    script: &'static Script,
    keys: &KeyLayout,
    ticket: &str,
    req: &AcquireRequest<'_>,
    lease: Duration,
    cap: Duration,
    now: Option<u64>,
) -> ScriptInvocation<'static> {
    let mut inv = script.prepare_invoke();
    inv.key(&keys.calls)
        .key(&keys.reservations)
        .key(&keys.charges)
        .key(&keys.state)
        .key(&keys.runtime_state)
        .arg(now_arg(now))
        .arg(ticket)
        .arg(micros(req.margin))
        .arg(micros(lease))
        .arg(micros(req.estimate))
        .arg(req.calls.len())
        .arg(req.runtime.len())
        .arg(micros(cap));
    for c in req.calls {
        inv.arg(c.max).arg(micros(c.per));
    }
    for r in req.runtime {
        inv.arg(micros(r.budget)).arg(micros(r.per));
    }
    inv
}

pub(crate) fn acquire(
    keys: &KeyLayout,
    ticket: &str,
    req: &AcquireRequest<'_>,
    lease: Duration,
    cap: Duration,
    now: Option<u64>,
) -> ScriptInvocation<'static> {
    limits_invocation(&ACQUIRE, keys, ticket, req, lease, cap, now)
}

pub(crate) fn usage(
    keys: &KeyLayout,
    req: &AcquireRequest<'_>,
    lease: Duration,
    cap: Duration,
    now: Option<u64>,
) -> ScriptInvocation<'static> {
    limits_invocation(&USAGE, keys, "", req, lease, cap, now)
}

pub(crate) fn release(keys: &KeyLayout, id: &str, reserved_us: u64) -> ScriptInvocation<'static> {
    let mut inv = RELEASE.prepare_invoke();
    inv.key(&keys.calls)
        .key(&keys.reservations)
        .arg(id)
        .arg(reserved_us);
    inv
}

pub(crate) fn complete(
    keys: &KeyLayout,
    id: &str,
    reserved_us: u64,
    ttl_ms: u64,
    actual: Duration,
    now: Option<u64>,
) -> ScriptInvocation<'static> {
    let mut inv = COMPLETE.prepare_invoke();
    inv.key(&keys.reservations)
        .key(&keys.charges)
        .arg(now_arg(now))
        .arg(id)
        .arg(reserved_us)
        .arg(micros(actual))
        .arg(ttl_ms);
    inv
}

pub(crate) fn feedback(
    keys: &KeyLayout,
    retry_after: Option<Duration>,
    learned: Option<CallLimit>,
    runtime: bool,
    cap: Duration,
    now: Option<u64>,
) -> ScriptInvocation<'static> {
    let mut inv = FEEDBACK.prepare_invoke();
    inv.key(&keys.state)
        .key(if runtime {
            &keys.runtime_state
        } else {
            &keys.state
        })
        .arg(now_arg(now))
        .arg(retry_after.map_or_else(String::new, |d| micros(d).to_string()))
        .arg(if runtime { "rb" } else { "b" });
    match learned {
        Some(l) => inv.arg(l.max).arg(micros(l.per)),
        None => inv.arg(0).arg(""),
    };
    inv.arg(micros(cap));
    inv
}

fn bad(what: &str, v: &Value) -> StoreError {
    StoreError::Reply(format!("{what}: {v:?}"))
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("expected an integer", v)),
        Value::SimpleString(s) => s.parse().map_err(|_| bad("expected an integer", v)),
        _ => Err(bad("expected an integer", v)),
    }
}

fn uint(v: &Value) -> Result<u64, StoreError> {
    int(v).map(|i| i.max(0) as u64)
}

fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(a) => Ok(a),
        v => Err(bad("expected an array", &v)),
    }
}

fn us(v: u64) -> Duration {
    Duration::from_micros(v)
}

fn get(a: &[Value], i: usize) -> Result<&Value, StoreError> {
    a.get(i)
        .ok_or_else(|| StoreError::Reply(format!("reply too short: {a:?}")))
}

pub(crate) fn parse_acquire(v: Value, ticket: String) -> Result<Admission, StoreError> {
    let a = array(v)?;
    if int(get(&a, 0)?)? == 1 {
        return Ok(Admission::Admitted(Ticket {
            inner: TicketInner::Redis {
                id: ticket,
                at_us: uint(get(&a, 1)?)?,
                reserved_us: uint(get(&a, 2)?)?,
                ttl_ms: uint(get(&a, 3)?)?,
            },
        }));
    }
    let retry_at = uint(get(&a, 1)?)?;
    let now = uint(get(&a, 2)?)?;
    let (x, y) = (uint(get(&a, 4)?)?, uint(get(&a, 5)?)?);
    let reason = match int(get(&a, 3)?)? {
        1 => DenyReason::CallWindow(CallLimit {
            max: x.min(u32::MAX as u64) as u32,
            per: us(y),
        }),
        2 => DenyReason::RetryAfter,
        3 => DenyReason::RuntimeWindow(RuntimeLimit {
            budget: us(x),
            per: us(y),
        }),
        4 => DenyReason::RuntimeExhausted,
        5 => DenyReason::RuntimeInFlight(RuntimeLimit {
            budget: us(x),
            per: us(y),
        }),
        _ => return Err(StoreError::Reply(format!("unknown denial: {a:?}"))),
    };
    Ok(Admission::Denied(Denied {
        retry_after: us(retry_at.saturating_sub(now)),
        reason,
    }))
}

pub(crate) fn parse_usage(v: Value) -> Result<Usage, StoreError> {
    let a = array(v)?;
    let now = uint(get(&a, 0)?)?;
    let mut usage = Usage {
        calls: Vec::new(),
        runtime: Vec::new(),
        blocked_for: us(uint(get(&a, 1)?)?.saturating_sub(now)),
        runtime_blocked_for: us(uint(get(&a, 2)?)?.saturating_sub(now)),
        reserved: us(uint(get(&a, 3)?)?),
        in_flight: uint(get(&a, 4)?)? as u32,
        local: false,
        clients: Vec::new(),
        margin: Duration::ZERO,
    };
    let n = uint(get(&a, 5)?)? as usize;
    let mut i = 6;
    for _ in 0..n {
        usage.calls.push(CallWindowUsage {
            limit: CallLimit {
                max: uint(get(&a, i)?)? as u32,
                per: us(uint(get(&a, i + 1)?)?),
            },
            used: uint(get(&a, i + 2)?)? as u32,
            next_free_in: us(uint(get(&a, i + 3)?)?.saturating_sub(now)),
        });
        i += 4;
    }
    let n = uint(get(&a, i)?)? as usize;
    i += 1;
    for _ in 0..n {
        usage.runtime.push(RuntimeWindowUsage {
            limit: RuntimeLimit {
                budget: us(uint(get(&a, i)?)?),
                per: us(uint(get(&a, i + 1)?)?),
            },
            charged: us(uint(get(&a, i + 2)?)?),
        });
        i += 3;
    }
    usage.margin = us(uint(get(&a, i)?)?);
    i += 1;
    let n = uint(get(&a, i)?)? as usize;
    i += 1;
    for _ in 0..n {
        let name = match get(&a, i)? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            v => return Err(bad("expected a client name", v)),
        };
        usage.clients.push((name, uint(get(&a, i + 1)?)? as u32));
        i += 2;
    }
    // Most calls first; a name breaks ties, so the order does not depend on the script's.
    usage
        .clients
        .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(usage)
}
