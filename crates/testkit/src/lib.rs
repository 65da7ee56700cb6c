//! # defender-testkit
//!
//! What the project tests itself with, and what users can test their own automation
//! with: a naive reference model of the service's limits ([`server_model`]) and a
//! deterministic virtual-time simulator of the engine against it ([`sim`]).
//!
//! ```
//! use defender_testkit::server_model::WindowMode;
//! use defender_testkit::sim::{run_engine, SimConfig, Workload};
//! use std::time::Duration;
//!
//! let mut cfg = SimConfig::day_2021(Workload::Incidents, WindowMode::Fixed);
//! cfg.duration = Duration::from_secs(2 * 3600);
//! let report = run_engine(&cfg);
//! assert_eq!(report.throttled, 0);
//! assert_eq!(report.lost, 0);
//! assert!(report.share() > 0.99, "{report:?}");
//! ```

#![forbid(unsafe_code)]

pub mod baseline;
pub mod conformance;
pub mod firehose;
pub mod paced;
pub mod plot;
pub mod redis;
pub mod server_model;
pub mod sim;
