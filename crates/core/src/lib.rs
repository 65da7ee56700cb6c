//! # defender-core
//!
//! The sans-IO core of a quota-exact client for the Microsoft Defender APIs (Defender
//! XDR, Defender for Endpoint, and the Microsoft Graph security API).
//!
//! Nothing here does IO, reads a clock or sleeps: requests, responses, limits, quotas,
//! running-time budgets, tokens and every 429 format are pure state machines and
//! functions with time passed in. The transports (`defender-async`, `defender-blocking`)
//! only move bytes and sleep; every decision is made here or in a [`policy::Policy`].
//!
//! The loop every driver runs (see [`engine`]):
//!
//! ```text
//! engine.submit(call, now)
//! loop {
//!     match engine.poll_output() {
//!         Output::Transmit(t) => send t.request; engine.handle_response(t.id, resp, now, wall_now)
//!                                (or engine.handle_transport_error(t.id, err, now)),
//!         Output::Event(e)    => hand e to the caller (Completed / Failed / Waiting / NeedToken),
//!         Output::Quota(op)   => only with QuotaMode::Shared: run op on the shared store;
//!                                answer an Acquire with engine.handle_admission(id, answer, now),
//!         Output::Wait(Some(t)) => sleep until t; engine.handle_timeout(t),
//!         Output::Wait(None)  => wait for the next input,
//!     }
//! }
//! ```
//!
//! **After every input, drain `poll_output` until it returns `Wait`.**
//!
//! The pieces, each usable alone: [`limits`] (presets and the spec parser), [`quota`]
//! (exact sliding windows), [`runtime`] (the running-time budget), [`throttle`] (429
//! parsing), [`token`], [`hunting`] and [`incidents`] (models and request parts),
//! [`surface`] (endpoints of every cloud), [`timefmt`] (every date and time format of the
//! workspace: RFC 3339, TimeSpan, ISO durations, HTTP-dates, the calendar).

#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod change;
pub mod credential;
pub mod dispatch;
pub mod engine;
pub mod error;
pub mod hunt_state;
pub mod hunting;
pub mod incidents;
pub mod limits;
pub mod margin;
pub mod policy;
pub mod quota;
pub mod range;
pub mod runtime;
pub mod settings;
pub mod stream;
pub mod surface;
pub mod sync;
pub mod telemetry;
pub mod throttle;
pub mod timefmt;
pub mod token;

pub use engine::{
    Auth, Call, CallId, Config, Engine, Event, Output, SendId, Transmit, Value, WaitReason,
};
pub use error::{ApiError, Error, ErrorDetails, InnerError, TransportError, TransportErrorKind};
pub use limits::{ApiGroup, CallLimit, GroupLimits, Limits, Preset, RuntimeLimit};
pub use surface::{Cloud, Endpoints, Surface};
