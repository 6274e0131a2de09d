//! Whole numbers in JSON request bodies, as JSON Schema defines them: `5` and `5.0` are the same
//! integer. serde reads `5.0` into an `i64` field as an error, so a client (or a schema-driven
//! tool) that writes integers as floats would be refused with a valid body. Fields use
//! `#[serde(deserialize_with = "flashsale_core::whole::i64")]` (or `whole::option_i64`, with
//! `#[serde(default)]`); a fractional or out-of-range number is still refused.

use serde::de::{self, Deserializer, Visitor};

struct Whole;

impl Visitor<'_> for Whole {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Within ±2^53 every whole f64 is exact; beyond it `5e300` is whole but no i64.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            // Whole and within ±2^53: the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            Ok(v as i64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// A whole number, written as an integer or as a float with no fraction.
pub fn i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(Whole)
}

/// An optional whole number (`null` or absent is `None`; absent needs `#[serde(default)]`).
pub fn option_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct Maybe;
    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<i64>, D::Error> {
            i64(deserializer).map(Some)
        }
    }
    deserializer.deserialize_option(Maybe)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::i64")]
        n: i64,
        #[serde(default, deserialize_with = "super::option_i64")]
        m: Option<i64>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integers_and_whole_floats_are_read_alike() {
        assert_eq!(parse(r#"{"n": 5}"#).unwrap().n, 5);
        assert_eq!(parse(r#"{"n": 5.0, "m": -3.0}"#).unwrap().m, Some(-3));
        assert_eq!(parse(r#"{"n": 1, "m": null}"#).unwrap().m, None);
        assert_eq!(parse(r#"{"n": 1}"#).unwrap().m, None);
    }

    #[test]
    fn fractions_strings_and_huge_numbers_are_refused() {
        for body in [r#"{"n": 5.5}"#, r#"{"n": "5"}"#, r#"{"n": 1e300}"#, r#"{"n": 18446744073709551615}"#] {
            assert!(parse(body).is_err(), "{body}");
        }
    }
}
