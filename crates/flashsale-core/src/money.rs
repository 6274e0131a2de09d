//! Money: an amount in a currency's minor unit, and the currency.
//!
//! Prices and order amounts are whole numbers of the minor unit (cents, fen) in signed 64-bit
//! integers, as PostgreSQL keeps them: no floating point touches money. The currency travels
//! with every amount that leaves a sale (an order copies its sale's), so an amount is never read
//! in the wrong one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Quantity;

/// An amount in a currency's minor unit (cents, fen). Signed: a payment provider may report any
/// amount, and the comparison with the order's must see it as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cents(pub i64);

impl Cents {
    /// The amount.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The price of `quantity` units at this unit price (saturating: a sale's price and limit
    /// are bounded far below an overflow, see the sales crate's limits).
    #[must_use]
    pub fn times(self, quantity: Quantity) -> Cents {
        Cents(self.0.saturating_mul(i64::from(quantity.units().get())))
    }

    /// Reads an amount written as a whole number, `5` or `5.0` (for `deserialize_with`; see
    /// [`crate::whole`]).
    pub fn whole<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cents, D::Error> {
        crate::whole::i64(deserializer).map(Cents)
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ISO 4217 currency code: three capital ASCII letters (`CNY`, `EUR`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

/// Text that is not three capital ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an ISO 4217 code of three capital letters, got {0:?}")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidCurrency;
    fn try_from(code: String) -> Result<Currency, InvalidCurrency> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(code))
        } else {
            Err(InvalidCurrency(code))
        }
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Units;

    #[test]
    fn currencies_are_three_capital_letters() {
        assert_eq!(Currency::try_from("CNY".to_owned()).unwrap().as_str(), "CNY");
        for bad in ["cny", "CN", "CNYY", "C1Y", "ＣNY"] {
            assert_eq!(Currency::try_from(bad.to_owned()), Err(InvalidCurrency(bad.to_owned())), "{bad:?}");
        }
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }

    #[test]
    fn an_amount_is_the_unit_price_times_the_quantity() {
        let two = Quantity::within(2, Units::new(5)).unwrap();
        assert_eq!(Cents(499_900).times(two), Cents(999_800));
        assert_eq!(Cents(i64::MAX).times(two), Cents(i64::MAX));
        assert_eq!(serde_json::to_string(&Cents(5)).unwrap(), "5");
    }
}
