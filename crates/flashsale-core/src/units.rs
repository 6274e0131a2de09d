//! Units of stock.

use serde::{Deserialize, Serialize};

/// A number of units of stock (a batch's size, units held, units sold).
///
/// Stored as `u32`: no batch comes near four billion units, and an unsigned type makes "minus three
/// units available" unrepresentable in Rust. PostgreSQL and Redis speak signed 64-bit integers, so
/// the conversions are explicit: widening is lossless, narrowing is checked and fails loudly instead
/// of wrapping (the workspace denies lossy `as` casts for exactly this reason).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Units(u32);

/// A signed integer from PostgreSQL or Redis that is not a valid number of units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a valid number of units (0 ..= {max})", max = u32::MAX)]
pub struct UnitsOutOfRange(pub i64);

impl Units {
    /// No units.
    pub const ZERO: Units = Units(0);

    /// Wraps a count.
    pub const fn new(units: u32) -> Units {
        Units(units)
    }

    /// The count.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The count as PostgreSQL `BIGINT` / Redis integer.
    pub fn to_i64(self) -> i64 {
        i64::from(self.0)
    }

    /// `self - other`, or `None` when that would be negative.
    pub fn checked_sub(self, other: Units) -> Option<Units> {
        self.0.checked_sub(other.0).map(Units)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Units) -> Option<Units> {
        self.0.checked_add(other.0).map(Units)
    }
}

impl TryFrom<i64> for Units {
    type Error = UnitsOutOfRange;
    fn try_from(value: i64) -> Result<Units, UnitsOutOfRange> {
        u32::try_from(value).map(Units).map_err(|_| UnitsOutOfRange(value))
    }
}

impl std::fmt::Display for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The units of one order: at least 1 and at most the sale's per-user limit. Only
/// [`Quantity::within`] makes one, so an order of 0 units, or of more than one buyer may hold,
/// cannot be written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(Units);

impl Quantity {
    /// `requested` units if that is 1 to `limit`, else `None`.
    pub fn within(requested: i64, limit: Units) -> Option<Quantity> {
        Units::try_from(requested).ok().filter(|u| (Units::new(1)..=limit).contains(u)).map(Quantity)
    }

    /// The units.
    pub const fn units(self) -> Units {
        self.0
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_refuse_negative_and_oversized_integers() {
        assert_eq!(Units::try_from(7).unwrap(), Units::new(7));
        assert_eq!(Units::try_from(-1), Err(UnitsOutOfRange(-1)));
        assert!(Units::try_from(i64::from(u32::MAX) + 1).is_err());
        assert_eq!(Units::new(3).checked_sub(Units::new(4)), None);
        assert_eq!(Quantity::within(2, Units::new(2)).map(Quantity::units), Some(Units::new(2)));
        for refused in [0, -1, 3, i64::MAX] {
            assert_eq!(Quantity::within(refused, Units::new(2)), None, "{refused}");
        }
    }
}
