//! Sale batches: what operations configure, when each batch opens, and where it is stored.
//!
//! # Layout
//! - [`config`]: the admin request bodies and [`SaleConfig`], the configuration once every rule
//!   holds (positive stock, limit ≥ 1, admission TTL ≤ payment window, …).
//! - [`schedule`]: [`WeeklySchedule`], the next opening of "Tuesdays 12:00 Asia/Shanghai" from any
//!   instant, correct across daylight saving in every IANA zone.
//! - [`batch`]: [`Sale`] and [`Batch`] as stored and a batch's [`BatchStatus`] at an instant.
//! - [`store`]: PostgreSQL queries, composable inside one transaction.
//! - [`draws`]: each batch's pre-queue cohort as recorded at its opening (written once).
//! - [`codes`]: priority codes (stored hashed), their generation and single-use redemption.
//! - [`activity`]: each batch's per-second counts (admissions, joins, refusals), summed over
//!   instances: its sale report's timeline.
//!
//! This crate knows nothing of Redis: live stock lives in the inventory crate's ledger, and the
//! server combines the two.

pub mod activity;
pub mod batch;
pub mod codes;
pub mod config;
pub mod draws;
pub mod error;
pub mod schedule;
pub mod store;

pub use batch::{Batch, BatchStatus, Sale, Stock};
pub use config::{
    AdaptivePow, FieldError, JoinPow, NewSale, PriorityAllotment, SaleConfig, SalePatch, Schedule, ValidationErrors,
    WeeklyInput,
};
pub use error::SalesError;
pub use schedule::{WeekdayName, WeeklySchedule, time_zone_names};
