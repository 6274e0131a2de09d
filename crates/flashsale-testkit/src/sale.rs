//! Sales as a test describes them: `SaleBuilder::one_off().stock(20).opening_in(60).body()` is the
//! `POST /admin/sales` body, with every field a test does not care about set to something valid,
//! so a test says only what matters to it.

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

/// The body of a sale to create through the admin API.
#[derive(Debug, Clone)]
pub struct SaleBuilder {
    body: Value,
}

impl SaleBuilder {
    /// A one-off sale of 10 units, one per buyer, opening in an hour after a five-minute
    /// pre-queue, admitting 50 buyers a second for a minute each, with ten minutes to pay.
    pub fn one_off() -> SaleBuilder {
        SaleBuilder {
            body: json!({
                "name": "Phone X launch", "sku": "PHONE-X-LAUNCH", "price_cents": 599900, "currency": "CNY",
                "stock": 10, "per_user_limit": 1,
                "opens_at": (Utc::now() + TimeDelta::hours(1)).to_rfc3339(),
                "prequeue_secs": 300, "admission_rate": 50, "admission_ttl_secs": 60, "payment_window_secs": 600
            }),
        }
    }

    /// A weekly sale of 100 units, two per buyer, every Tuesday at noon in Shanghai.
    pub fn weekly() -> SaleBuilder {
        SaleBuilder {
            body: json!({
                "name": "Phone X", "sku": "PHONE-X-128", "price_cents": 499900, "currency": "CNY",
                "stock": 100, "per_user_limit": 2,
                "weekly": {"weekday": "tue", "time": "12:00", "timezone": "Asia/Shanghai"}
            }),
        }
    }

    /// Units released by each batch.
    #[must_use]
    pub fn stock(self, units: u32) -> SaleBuilder {
        self.set("stock", json!(units))
    }

    /// Units one buyer may buy.
    #[must_use]
    pub fn limit(self, units: u32) -> SaleBuilder {
        self.set("per_user_limit", json!(units))
    }

    /// A one-off sale opening `secs` from now.
    #[must_use]
    pub fn opening_in(self, secs: i64) -> SaleBuilder {
        self.set("opens_at", json!((Utc::now() + TimeDelta::seconds(secs)).to_rfc3339()))
    }

    /// The pre-queue opens this long before the sale.
    #[must_use]
    pub fn prequeue_secs(self, secs: u32) -> SaleBuilder {
        self.set("prequeue_secs", json!(secs))
    }

    /// Buyers admitted per second.
    #[must_use]
    pub fn admission_rate(self, per_second: u32) -> SaleBuilder {
        self.set("admission_rate", json!(per_second))
    }

    /// Any other field of the body, as the API names it.
    #[must_use]
    pub fn set(mut self, field: &str, value: Value) -> SaleBuilder {
        self.body[field] = value;
        self
    }

    /// The request body.
    pub fn body(self) -> Value {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_changes_only_what_it_is_told() {
        let base = SaleBuilder::one_off().body();
        let built = SaleBuilder::one_off().stock(20).limit(3).body();
        assert_eq!((built["stock"].clone(), built["per_user_limit"].clone()), (json!(20), json!(3)));
        assert_eq!(built["admission_rate"], base["admission_rate"]);
        assert!(SaleBuilder::weekly().body().get("opens_at").is_none(), "a weekly sale has no opening date");
    }
}
