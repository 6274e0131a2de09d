//! Identifier newtypes.
//!
//! Ids are plain positive integers in PostgreSQL (`BIGSERIAL`) and in URLs. Wrapping them keeps a
//! sale id from being passed where a batch number is expected, which the compiler would otherwise
//! accept silently.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string or integer is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Ids start at 1; zero and negative numbers never name anything.
    #[error("identifier must be a positive integer")]
    NotPositive,
    /// The text is not a decimal integer.
    #[error("identifier must be a decimal integer")]
    NotANumber,
}

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "i64", into = "i64")]
        #[schema(value_type = i64, example = 1)]
        pub struct $name(i64);

        impl $name {
            /// The id as stored in PostgreSQL.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = IdError;
            fn try_from(value: i64) -> Result<Self, IdError> {
                if value >= 1 { Ok(Self(value)) } else { Err(IdError::NotPositive) }
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                // Only plain decimal digits: "+5", " 5" or "05x" are not ids.
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdError::NotANumber);
                }
                let value: i64 = s.parse().map_err(|_| IdError::NotANumber)?;
                Self::try_from(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id! {
    /// A sale: one product offered in one or more batches (`sales.id`).
    SaleId
}

positive_id! {
    /// The number of a batch within its sale, counting from 1 (`sale_batches.batch_no`).
    ///
    /// A weekly sale gets batch 1 for its first week, 2 for the next, and so on; a one-off sale has
    /// only batch 1. The pair (`SaleId`, `BatchNo`) names a batch everywhere, including its Redis keys.
    BatchNo
}

impl BatchNo {
    /// The first batch of every sale.
    pub const FIRST: BatchNo = BatchNo(1);

    /// The batch after this one.
    #[must_use]
    pub fn next(self) -> BatchNo {
        BatchNo(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_positive_decimal_integers() {
        assert_eq!("42".parse::<SaleId>().unwrap().get(), 42);
        assert_eq!("0".parse::<SaleId>(), Err(IdError::NotPositive));
        for bad in ["", "-1", "+1", " 1", "1.0", "abc", "99999999999999999999"] {
            assert_eq!(bad.parse::<SaleId>(), Err(IdError::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn ids_refuse_non_positive_json() {
        assert!(serde_json::from_str::<SaleId>("0").is_err());
        assert_eq!(serde_json::from_str::<BatchNo>("3").unwrap().next().get(), 4);
    }
}

/// A buyer, as named by the `sub` claim of their identity provider's JWT: 1–64 characters, no
/// control characters. Opaque to flashsale: it is compared, hashed and stored, never parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "user-42")]
pub struct UserId(String);

/// A `sub` claim that cannot name a buyer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a user id must be 1–64 characters without control characters")]
pub struct InvalidUserId;

impl UserId {
    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = InvalidUserId;
    fn try_from(value: String) -> Result<UserId, InvalidUserId> {
        let chars = value.chars().count();
        if (1..=64).contains(&chars) && !value.chars().any(char::is_control) {
            Ok(UserId(value))
        } else {
            Err(InvalidUserId)
        }
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod user_tests {
    use super::*;

    #[test]
    fn user_ids_are_one_to_sixty_four_characters_without_controls() {
        assert!(UserId::try_from("u".repeat(64)).is_ok());
        assert!(UserId::try_from("用户".to_owned()).is_ok());
        for bad in [String::new(), "u".repeat(65), "a\nb".to_owned()] {
            assert_eq!(UserId::try_from(bad), Err(InvalidUserId));
        }
    }
}

/// The secret seed of a batch's pre-queue draw (see the queue crate). Kept out of `Debug`: while
/// the batch runs, knowing it would let a buyer predict the draw.
#[derive(Clone, PartialEq, Eq)]
pub struct PrequeueSeed(Vec<u8>);

impl PrequeueSeed {
    /// Wraps stored bytes.
    pub fn new(bytes: Vec<u8>) -> PrequeueSeed {
        PrequeueSeed(bytes)
    }

    /// The seed's bytes (for storing it, hashing with it, or publishing it after the batch).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrequeueSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrequeueSeed(***)")
    }
}

/// The secret key a batch derives its entrants' draw receipts from (see the queue crate's
/// `draw` module). Unlike the seed it is never published: with it, anyone could recompute the
/// receipt of a guessable buyer id and tell from the published cohort whether that buyer joined.
#[derive(Clone, PartialEq, Eq)]
pub struct EntrantKey(Vec<u8>);

impl EntrantKey {
    /// Wraps stored bytes.
    pub fn new(bytes: Vec<u8>) -> EntrantKey {
        EntrantKey(bytes)
    }

    /// The key's bytes (for storing it or keying the receipt's HMAC).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for EntrantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EntrantKey(***)")
    }
}
