//! The inventory ledger: each batch's stock in Redis, changed only by atomic Lua scripts.
//!
//! # Layout
//! - [`ledger`]: [`Inventory`], the typed entry point; one method per Lua script, each decoding
//!   the script's reply into an enum and refusing replies it does not recognise.
//! - [`scripts`]: the scripts themselves (`lua/*.lua`, one file per atomic operation, each opening
//!   with its KEYS/ARGV/returns contract), loaded at start-up.
//! - [`error`]: [`InventoryError`], what can go wrong.
//!
//! # The ledger
//! One Redis hash per batch (`BatchKeys::ledger`) holds `total`, `available`, `allotted` (units
//! held back for priority codes, [`Allotment`]), `reserved` and `sold`, with
//! `available + allotted + reserved + sold = total` after every script, plus the flags the hot
//! path checks in the same step (`per_user_limit`, `paused`, `closed`, the window in Unix ms).
//! Scripts receive the hash through `KEYS`, so they run unchanged on Redis Cluster.
//!
//! [`reservation`] holds the per-buyer operations: reserve (consuming the admission ticket,
//! checking the per-user limit and the stock in the same step), commit or release exactly once,
//! and the sweeper's expiry of reservations past their deadline.

pub mod error;
pub mod ledger;
pub mod rebuild;
pub mod reservation;
pub mod scripts;

pub use error::InventoryError;
pub use ledger::{Allotment, Configured, Inventory, LedgerSnapshot, LedgerSpec, Opened, StatusChange, StatusChanged};
pub use rebuild::{BatchState, OpenReservation, QueueMarks, Rebuilt, SettledReservation};
pub use reservation::{
    Expired, RequestClaim, ReservationId, ReserveRequest, Reserved, Settled, Settlement, Unconfirmed,
};
