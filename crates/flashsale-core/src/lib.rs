//! Vocabulary shared by every flashsale crate.
//!
//! # Layout
//! - [`ids`]: newtypes for the identifiers that cross crate boundaries ([`SaleId`], [`BatchNo`]).
//! - [`money`]: [`Cents`] and [`Currency`], an amount and the currency it is in.
//! - [`sequence`]: the counters a batch hands out in order ([`Ticket`], [`AdmissionStep`],
//!   [`ReservationId`], [`Epoch`]).
//! - [`units`]: [`Units`], a count of stock, with lossless conversions to the integer types of
//!   PostgreSQL (`BIGINT`) and Redis (signed 64-bit replies); [`Quantity`], the units of one order.
//! - [`whole`]: whole numbers in JSON bodies (`5.0` read as `5`, as JSON Schema counts it).
//! - [`encoding`]: [`hex`], [`unhex`] and [`unhex32`], how digests and seeds are written out and
//!   read back.
//! - [`stats`]: rank statistics for the fairness figures (Spearman's rho).
//! - [`keys`]: the Redis key layout. Every key of one sale carries the hash tag `{sale:ID}`, so all
//!   keys a Lua script touches live in one Redis Cluster slot, and every key is built here, in Rust,
//!   and handed to scripts through `KEYS` (never assembled inside Lua).

pub mod encoding;
pub mod ids;
pub mod keys;
pub mod money;
pub mod sequence;
pub mod stats;
pub mod units;
pub mod whole;

pub use encoding::{hex, unhex, unhex32};
pub use ids::{BatchNo, EntrantKey, PrequeueSeed, SaleId, UserId};
pub use keys::{BatchKeys, KeySpace};
pub use money::{Cents, Currency, InvalidCurrency};
pub use sequence::{AdmissionStep, Epoch, ReservationId, Ticket};
pub use units::{Quantity, Units};
