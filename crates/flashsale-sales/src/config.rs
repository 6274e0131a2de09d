//! A sale's configuration: the request bodies operations send, and their strict validation.
//!
//! Request bodies ([`NewSale`], [`SalePatch`]) keep their fields in wide, raw types (`i64`,
//! `String`) so that a negative stock or a misspelled weekday reaches [`SaleConfig`]'s validation
//! and comes back as a field-level message, instead of a generic deserialisation failure. A
//! [`SaleConfig`] exists only once every rule holds; storage and the rest of the system take it,
//! never the raw body.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use flashsale_core::{Cents, Currency, Units};
use serde::{Deserialize, Serialize};

use crate::schedule::{WeekdayName, WeeklySchedule};

/// Upper bounds that catch typos (an extra zero) rather than express business limits.
pub mod limits {
    /// Units released by one batch.
    pub const MAX_STOCK: i64 = 10_000_000;
    /// Units one buyer may hold or buy in one batch.
    pub const MAX_PER_USER_LIMIT: i64 = 1_000;
    /// Price of one unit, in the currency's minor unit.
    pub const MAX_PRICE_CENTS: i64 = 100_000_000_000;
    /// How long before the opening buyers may queue.
    pub const MAX_PREQUEUE_SECS: i64 = 86_400;
    /// Buyers admitted per second.
    pub const MAX_ADMISSION_RATE: i64 = 1_000_000;
    /// Shortest and longest time an admitted buyer has to reserve.
    pub const ADMISSION_TTL_SECS: (i64, i64) = (5, 3_600);
    /// Shortest and longest payment window.
    pub const PAYMENT_WINDOW_SECS: (i64, i64) = (30, 86_400);
    /// The hardest proof of work a join may cost: 2^28 hashes on average (minutes on a phone).
    pub const MAX_POW_BITS: i64 = 28;
    /// The highest join rate an adaptive proof of work may be tuned to.
    pub const MAX_POW_JOINS_PER_SEC: i64 = 1_000_000;
    /// Shortest and longest time priority units are held for code holders after the opening.
    pub const PRIORITY_HOLD_SECS: (i64, i64) = (60, 86_400);
    /// Shortest and longest batch duration.
    pub const DURATION_SECS: (i64, i64) = (60, 30 * 86_400);
    /// A weekly batch's pre-queue plus duration must leave a day free before the next week's
    /// batch, so two batches of one sale never overlap, whatever daylight saving does.
    pub const WEEKLY_WINDOW_SECS: i64 = 6 * 86_400;
}

/// Defaults for the optional fields of [`NewSale`].
pub mod defaults {
    /// Ten minutes of pre-queue.
    pub const PREQUEUE_SECS: i64 = 600;
    /// A thousand buyers admitted per second.
    pub const ADMISSION_RATE: i64 = 1_000;
    /// Two minutes to reserve once admitted.
    pub const ADMISSION_TTL_SECS: i64 = 120;
    /// Fifteen minutes to pay.
    pub const PAYMENT_WINDOW_SECS: i64 = 900;
    /// An adaptive proof of work rises to at most 2^20 hashes (about a second on a phone).
    pub const POW_MAX_BITS: i64 = 20;
    /// Priority units are held for code holders for the first ten minutes.
    pub const PRIORITY_HOLD_SECS: i64 = 600;
}

/// `POST /admin/sales`: a new sale.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    /// Shown to buyers; 1–200 characters, not all blank.
    #[schema(example = "Phone X, weekly drop", min_length = 1, max_length = 200)]
    pub name: String,
    /// The product's stock-keeping unit: 1–64 of `A-Z a-z 0-9 . _ -`.
    #[schema(example = "PHONE-X-128-BLK", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    /// Price of one unit in the currency's minor unit (cents, fen), > 0.
    #[schema(example = 499_900, minimum = 1, maximum = 100_000_000_000_i64)]
    #[serde(deserialize_with = "flashsale_core::whole::i64")]
    pub price_cents: i64,
    /// ISO 4217 code, three capital letters.
    #[schema(example = "CNY", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Units released by each batch.
    #[schema(example = 50_000, minimum = 1, maximum = 10_000_000)]
    #[serde(deserialize_with = "flashsale_core::whole::i64")]
    pub stock: i64,
    /// Units one buyer may hold or buy per batch; 1 ≤ limit ≤ stock.
    #[schema(example = 2, minimum = 1, maximum = 1_000)]
    #[serde(deserialize_with = "flashsale_core::whole::i64")]
    pub per_user_limit: i64,
    /// A one-off sale's opening, RFC 3339, in the future. Exactly one of `opens_at` and `weekly`.
    /// (The example the served document shows is an hour from when it was served.)
    #[schema(example = "2026-11-24T12:00:00+08:00", format = DateTime)]
    pub opens_at: Option<String>,
    /// A weekly sale's opening. Exactly one of `opens_at` and `weekly`.
    pub weekly: Option<WeeklyInput>,
    /// Seconds before the opening when buyers may start to queue (default 600, at most 86400).
    #[schema(minimum = 0, maximum = 86_400)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub prequeue_secs: Option<i64>,
    /// Buyers admitted per second at most (default 1000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub admission_rate: Option<i64>,
    /// Seconds an admitted buyer has to reserve (default 120, 5–3600, ≤ `payment_window_secs`).
    #[schema(minimum = 5, maximum = 3_600)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub admission_ttl_secs: Option<i64>,
    /// Seconds a buyer has to pay after reserving (default 900, 30–86400).
    #[schema(minimum = 30, maximum = 86_400)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub payment_window_secs: Option<i64>,
    /// Close each batch this long after its opening even with stock left (60 s – 30 days;
    /// for weekly sales, pre-queue plus duration at most 6 days).
    #[schema(minimum = 60, maximum = 2_592_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub duration_secs: Option<i64>,
    /// Proof of work each join costs, in leading zero bits of a SHA-256 (0 = none, the default;
    /// each bit doubles the work: 16 ≈ 65,000 hashes). With `join_pow_adaptive_rate`, the least.
    #[schema(minimum = 0, maximum = 28)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub join_pow_bits: Option<i64>,
    /// Adaptive proof of work: joins per second (over the last seconds) above which each
    /// doubling of the join rate adds one bit, up to `join_pow_max_bits`. Null: fixed.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub join_pow_adaptive_rate: Option<i64>,
    /// The most bits an adaptive proof of work rises to (default 20, at most 28).
    #[schema(minimum = 0, maximum = 28)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub join_pow_max_bits: Option<i64>,
    /// Units of each batch held back for buyers with a priority code (default 0: codes draw on the
    /// batch's stock like everyone); at most the stock. What code holders have not bought by
    /// `priority_hold_secs` after the opening goes to everyone.
    #[schema(minimum = 0, maximum = 10_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub priority_units: Option<i64>,
    /// Seconds after the opening the priority units are held for code holders (default 600,
    /// 60–86400).
    #[schema(minimum = 60, maximum = 86_400)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub priority_hold_secs: Option<i64>,
}

/// A weekly opening as sent by operations.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeeklyInput {
    /// `mon`, `tue`, … `sun`.
    #[schema(example = "tue", pattern = "^(mon|tue|wed|thu|fri|sat|sun)$")]
    pub weekday: String,
    /// Local wall-clock time `HH:MM`, 24-hour.
    #[schema(example = "12:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub time: String,
    /// IANA time zone name (the served document lists every one accepted).
    #[schema(example = "Asia/Shanghai")]
    pub timezone: String,
}

/// `PATCH /admin/sales/{id}`: the fields operations may change while a sale runs. Absent fields
/// keep their value. Price, currency, SKU and schedule are fixed once buyers can see the sale.
/// At least one field; the same rules as at creation.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SalePatch {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// New units per batch; applies to the current batch at once (never below its units
    /// reserved + sold) and to every later batch.
    #[schema(minimum = 1, maximum = 10_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub stock: Option<i64>,
    #[schema(minimum = 1, maximum = 1_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub per_user_limit: Option<i64>,
    #[schema(minimum = 0, maximum = 86_400)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub prequeue_secs: Option<i64>,
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub admission_rate: Option<i64>,
    #[schema(minimum = 5, maximum = 3_600)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub admission_ttl_secs: Option<i64>,
    #[schema(minimum = 30, maximum = 86_400)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub payment_window_secs: Option<i64>,
    #[schema(minimum = 60, maximum = 2_592_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub duration_secs: Option<i64>,
    /// Proof of work each join costs, in leading zero bits of a SHA-256 (0 = none, the default;
    /// each bit doubles the work: 16 ≈ 65,000 hashes). With `join_pow_adaptive_rate`, the least.
    #[schema(minimum = 0, maximum = 28)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub join_pow_bits: Option<i64>,
    /// Adaptive proof of work: joins per second above which each doubling of the join rate
    /// adds one bit; 0 makes it fixed again.
    #[schema(minimum = 0, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub join_pow_adaptive_rate: Option<i64>,
    /// The most bits an adaptive proof of work rises to (default 20, at most 28).
    #[schema(minimum = 0, maximum = 28)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub join_pow_max_bits: Option<i64>,
    /// Units of each batch held back for buyers with a priority code (default 0: codes draw on the
    /// batch's stock like everyone); at most the stock. What code holders have not bought by
    /// `priority_hold_secs` after the opening goes to everyone.
    #[schema(minimum = 0, maximum = 10_000_000)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub priority_units: Option<i64>,
    /// Seconds after the opening the priority units are held for code holders (default 600,
    /// 60–86400).
    #[schema(minimum = 60, maximum = 86_400)]
    #[serde(default, deserialize_with = "flashsale_core::whole::option_i64")]
    pub priority_hold_secs: Option<i64>,
}

impl SalePatch {
    /// Whether the patch changes nothing at all (an empty body is refused as a likely mistake).
    pub fn is_empty(&self) -> bool {
        let SalePatch {
            name,
            stock,
            per_user_limit,
            prequeue_secs,
            admission_rate,
            admission_ttl_secs,
            payment_window_secs,
            duration_secs,
            join_pow_bits,
            join_pow_adaptive_rate,
            join_pow_max_bits,
            priority_units,
            priority_hold_secs,
        } = self;
        name.is_none()
            && stock.is_none()
            && per_user_limit.is_none()
            && prequeue_secs.is_none()
            && admission_rate.is_none()
            && admission_ttl_secs.is_none()
            && payment_window_secs.is_none()
            && duration_secs.is_none()
            && join_pow_bits.is_none()
            && join_pow_adaptive_rate.is_none()
            && join_pow_max_bits.is_none()
            && priority_units.is_none()
            && priority_hold_secs.is_none()
    }
}

/// When a sale's batches open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// A single batch opening at this instant.
    Once { opens_at: DateTime<Utc> },
    /// A batch every week.
    Weekly(WeeklySchedule),
}

/// One field that failed validation, and why, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The JSON field, dotted for nested ones (`weekly.timezone`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every problem found in a request body (all of them, not just the first).
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{} invalid field(s)", .0.len())]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError { field: field.to_owned(), message: message.into() });
    }

    /// An error about a single field.
    pub fn single(field: &str, message: impl Into<String>) -> ValidationErrors {
        let mut errors = ValidationErrors::default();
        errors.push(field, message);
        errors
    }

    fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.push(field, message());
        }
    }

    fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }
}

/// A sale configuration in which every rule holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleConfig {
    pub name: String,
    pub sku: String,
    /// Price of one unit.
    pub price_cents: Cents,
    pub currency: Currency,
    /// Units released by each batch.
    pub stock: Units,
    pub per_user_limit: Units,
    pub schedule: Schedule,
    pub prequeue_secs: u32,
    pub admission_rate: u32,
    pub admission_ttl_secs: u32,
    pub payment_window_secs: u32,
    pub duration_secs: Option<u32>,
    /// What a join costs in proof of work.
    pub join_pow: JoinPow,
    /// Units held back for priority codes.
    pub priority: PriorityAllotment,
}

/// Units of each batch held back for buyers with a priority code, for a while after the opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityAllotment {
    /// Units per batch (zero: none; codes draw on the stock like everyone).
    pub units: Units,
    /// How long after the opening they are held; then what is left goes to everyone.
    pub hold_secs: u32,
}

impl PriorityAllotment {
    /// When what is left of a batch's allotment goes to everyone, for a batch opening at `opens_at`.
    pub fn released_at(&self, opens_at: DateTime<Utc>) -> DateTime<Utc> {
        opens_at + TimeDelta::seconds(i64::from(self.hold_secs))
    }
}

/// The proof of work a sale asks of each join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoinPow {
    /// Leading zero bits asked (0: no proof of work); the least, when adaptive.
    pub bits: u8,
    /// Rising with the join rate, if set.
    pub adaptive: Option<AdaptivePow>,
}

/// An adaptive proof of work: one more bit for each doubling of the join rate above `joins_per_sec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePow {
    pub joins_per_sec: u32,
    pub max_bits: u8,
}

impl JoinPow {
    /// Whether joins carry a proof of work at all.
    pub fn is_on(&self) -> bool {
        self.bits > 0 || self.adaptive.is_some()
    }

    /// The bits asked while buyers join at `joins_per_sec`: the fixed bits, or for an adaptive
    /// proof, one more for each doubling of the rate above its threshold, up to its most.
    pub fn bits_at(&self, joins_per_sec: f64) -> u8 {
        let Some(adaptive) = self.adaptive else { return self.bits };
        let over = joins_per_sec / f64::from(adaptive.joins_per_sec.max(1));
        if over <= 1.0 {
            return self.bits;
        }
        let extra = over.log2().floor().min(64.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "floor of a log2 in 0..=64")]
        let extra = extra as u8;
        self.bits.saturating_add(extra).min(adaptive.max_bits.max(self.bits))
    }
}

/// Range-checks `value` and narrows it; records an error and returns `None` otherwise.
fn bounded<T: TryFrom<i64>>(errors: &mut ValidationErrors, field: &str, value: i64, min: i64, max: i64) -> Option<T> {
    if (min..=max).contains(&value) {
        T::try_from(value).ok()
    } else {
        errors.push(field, format!("must be between {min} and {max}, got {value}"));
        None
    }
}

fn is_sku(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn check_name(errors: &mut ValidationErrors, name: &str) {
    let chars = name.chars().count();
    errors.check(!name.trim().is_empty() && chars <= 200 && !name.chars().any(char::is_control), "name", || {
        "must be 1–200 characters, not blank, without control characters".to_owned()
    });
}

impl WeeklyInput {
    fn parse(&self, errors: &mut ValidationErrors) -> Option<WeeklySchedule> {
        let weekday = self.weekday.parse::<WeekdayName>().ok();
        errors.check(weekday.is_some(), "weekly.weekday", || {
            format!("must be one of mon, tue, wed, thu, fri, sat, sun, got {:?}", self.weekday)
        });
        let time = (self.time.len() == 5).then(|| NaiveTime::parse_from_str(&self.time, "%H:%M").ok()).flatten();
        errors.check(time.is_some(), "weekly.time", || format!("must be HH:MM (00:00–23:59), got {:?}", self.time));
        let timezone = self.timezone.parse::<Tz>().ok();
        errors.check(timezone.is_some(), "weekly.timezone", || {
            format!("must be an IANA time zone such as Asia/Shanghai, got {:?}", self.timezone)
        });
        Some(WeeklySchedule { weekday: weekday?.into(), time: time?, timezone: timezone? })
    }
}

impl NewSale {
    /// Validates the body against every rule, as of `now` (a one-off opening must be later).
    pub fn validate(&self, now: DateTime<Utc>) -> Result<SaleConfig, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let schedule = match (&self.opens_at, &self.weekly) {
            (Some(opens_at), None) => match DateTime::parse_from_rfc3339(opens_at) {
                Ok(t) if t.with_timezone(&Utc) > now => Some(Schedule::Once { opens_at: t.with_timezone(&Utc) }),
                Ok(_) => {
                    errors.push("opens_at", "must be in the future");
                    None
                }
                Err(_) => {
                    errors.push("opens_at", "must be an RFC 3339 timestamp such as 2026-11-24T12:00:00+08:00");
                    None
                }
            },
            (None, Some(weekly)) => weekly.parse(&mut errors).map(Schedule::Weekly),
            (Some(_), Some(_)) => {
                errors.push("opens_at", "give either opens_at (one-off) or weekly (recurring), not both");
                None
            }
            (None, None) => {
                errors.push("opens_at", "give either opens_at (one-off) or weekly (recurring)");
                None
            }
        };
        let raw = RawConfig {
            name: self.name.clone(),
            sku: self.sku.clone(),
            price_cents: self.price_cents,
            currency: self.currency.clone(),
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            prequeue_secs: self.prequeue_secs.unwrap_or(defaults::PREQUEUE_SECS),
            admission_rate: self.admission_rate.unwrap_or(defaults::ADMISSION_RATE),
            admission_ttl_secs: self.admission_ttl_secs.unwrap_or(defaults::ADMISSION_TTL_SECS),
            payment_window_secs: self.payment_window_secs.unwrap_or(defaults::PAYMENT_WINDOW_SECS),
            duration_secs: self.duration_secs,
            join_pow_bits: self.join_pow_bits.unwrap_or(0),
            join_pow_adaptive_rate: self.join_pow_adaptive_rate,
            join_pow_max_bits: self.join_pow_max_bits.unwrap_or(defaults::POW_MAX_BITS),
            priority_units: self.priority_units.unwrap_or(0),
            priority_hold_secs: self.priority_hold_secs.unwrap_or(defaults::PRIORITY_HOLD_SECS),
        };
        raw.validate(schedule, errors)
    }
}

impl SaleConfig {
    /// The configuration with `patch` applied, validated as a whole (a patch may break a rule
    /// that involves a field it does not touch, such as `admission_ttl_secs ≤ payment_window_secs`).
    pub fn patched(&self, patch: &SalePatch) -> Result<SaleConfig, ValidationErrors> {
        let raw = RawConfig {
            name: patch.name.clone().unwrap_or_else(|| self.name.clone()),
            sku: self.sku.clone(),
            price_cents: self.price_cents.get(),
            currency: self.currency.to_string(),
            stock: patch.stock.unwrap_or(self.stock.to_i64()),
            per_user_limit: patch.per_user_limit.unwrap_or(self.per_user_limit.to_i64()),
            prequeue_secs: patch.prequeue_secs.unwrap_or(i64::from(self.prequeue_secs)),
            admission_rate: patch.admission_rate.unwrap_or(i64::from(self.admission_rate)),
            admission_ttl_secs: patch.admission_ttl_secs.unwrap_or(i64::from(self.admission_ttl_secs)),
            payment_window_secs: patch.payment_window_secs.unwrap_or(i64::from(self.payment_window_secs)),
            duration_secs: patch.duration_secs.or(self.duration_secs.map(i64::from)),
            join_pow_bits: patch.join_pow_bits.unwrap_or(i64::from(self.join_pow.bits)),
            // 0 turns an adaptive proof of work back into a fixed one.
            join_pow_adaptive_rate: match patch.join_pow_adaptive_rate {
                Some(0) => None,
                Some(rate) => Some(rate),
                None => self.join_pow.adaptive.map(|a| i64::from(a.joins_per_sec)),
            },
            join_pow_max_bits: patch
                .join_pow_max_bits
                .unwrap_or(self.join_pow.adaptive.map_or(defaults::POW_MAX_BITS, |a| i64::from(a.max_bits))),
            priority_units: patch.priority_units.unwrap_or(self.priority.units.to_i64()),
            priority_hold_secs: patch.priority_hold_secs.unwrap_or(i64::from(self.priority.hold_secs)),
        };
        raw.validate(Some(self.schedule), ValidationErrors::default())
    }

    /// When buyers may start to queue for a batch opening at `opens_at`.
    pub fn prequeue_opens_at(&self, opens_at: DateTime<Utc>) -> DateTime<Utc> {
        opens_at - TimeDelta::seconds(i64::from(self.prequeue_secs))
    }

    /// The opening of the sale's first batch, for a sale created at `now`.
    pub fn first_opening(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.schedule {
            Schedule::Once { opens_at } => opens_at,
            Schedule::Weekly(weekly) => weekly.next_after(now),
        }
    }

    /// When a batch opening at `opens_at` ends on its own: after `duration_secs` if set; for a
    /// weekly sale without a duration, when the next week's pre-queue starts; a one-off sale
    /// without a duration runs until it sells out or operations close it (`None`).
    pub fn batch_closes_at(&self, opens_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match (self.duration_secs, self.schedule) {
            (Some(duration), _) => Some(opens_at + TimeDelta::seconds(i64::from(duration))),
            (None, Schedule::Weekly(weekly)) => Some(self.prequeue_opens_at(weekly.next_after(opens_at))),
            (None, Schedule::Once { .. }) => None,
        }
    }
}

/// A configuration's fields in raw form, shared by creation and patching so both apply the same
/// rules.
struct RawConfig {
    name: String,
    sku: String,
    price_cents: i64,
    currency: String,
    stock: i64,
    per_user_limit: i64,
    prequeue_secs: i64,
    admission_rate: i64,
    admission_ttl_secs: i64,
    payment_window_secs: i64,
    duration_secs: Option<i64>,
    join_pow_bits: i64,
    join_pow_adaptive_rate: Option<i64>,
    join_pow_max_bits: i64,
    priority_units: i64,
    priority_hold_secs: i64,
}

impl RawConfig {
    fn validate(
        self,
        schedule: Option<Schedule>,
        mut errors: ValidationErrors,
    ) -> Result<SaleConfig, ValidationErrors> {
        use limits::*;
        check_name(&mut errors, &self.name);
        errors.check(is_sku(&self.sku), "sku", || "must be 1–64 of A-Z a-z 0-9 . _ -".to_owned());
        errors.check((1..=MAX_PRICE_CENTS).contains(&self.price_cents), "price_cents", || {
            format!("must be between 1 and {MAX_PRICE_CENTS}, got {}", self.price_cents)
        });
        let currency = Currency::try_from(self.currency).map_err(|e| errors.push("currency", e.to_string())).ok();
        let stock: Option<u32> = bounded(&mut errors, "stock", self.stock, 1, MAX_STOCK);
        let max_limit = self.stock.clamp(1, MAX_PER_USER_LIMIT);
        let per_user_limit: Option<u32> = if (1..=max_limit).contains(&self.per_user_limit) {
            u32::try_from(self.per_user_limit).ok()
        } else {
            errors.push(
                "per_user_limit",
                format!(
                    "must be at least 1 and at most the stock and {MAX_PER_USER_LIMIT}, got {}",
                    self.per_user_limit
                ),
            );
            None
        };
        let prequeue_secs = bounded(&mut errors, "prequeue_secs", self.prequeue_secs, 0, MAX_PREQUEUE_SECS);
        let admission_rate = bounded(&mut errors, "admission_rate", self.admission_rate, 1, MAX_ADMISSION_RATE);
        let (ttl_min, ttl_max) = ADMISSION_TTL_SECS;
        let admission_ttl_secs = bounded(&mut errors, "admission_ttl_secs", self.admission_ttl_secs, ttl_min, ttl_max);
        let (window_min, window_max) = PAYMENT_WINDOW_SECS;
        let payment_window_secs =
            bounded(&mut errors, "payment_window_secs", self.payment_window_secs, window_min, window_max);
        errors.check(self.admission_ttl_secs <= self.payment_window_secs, "admission_ttl_secs", || {
            "must not exceed payment_window_secs: an admission never outlives the reservation it leads to".to_owned()
        });
        let (duration_min, duration_max) = DURATION_SECS;
        let duration_secs = match self.duration_secs {
            None => Some(None),
            Some(d) => bounded(&mut errors, "duration_secs", d, duration_min, duration_max).map(Some),
        };
        if let Some(Schedule::Weekly(_)) = schedule {
            let window = self.prequeue_secs + self.duration_secs.unwrap_or(0);
            errors.check(window <= WEEKLY_WINDOW_SECS, "duration_secs", || {
                format!(
                    "prequeue_secs + duration_secs must be at most {WEEKLY_WINDOW_SECS} for a weekly sale, got {window}"
                )
            });
        }
        let pow_bits: Option<u8> = bounded(&mut errors, "join_pow_bits", self.join_pow_bits, 0, MAX_POW_BITS);
        let adaptive = match self.join_pow_adaptive_rate {
            None => {
                // Kept for when it is made adaptive: still within bounds.
                bounded::<u8>(&mut errors, "join_pow_max_bits", self.join_pow_max_bits, 0, MAX_POW_BITS);
                Some(None)
            }
            Some(rate) => {
                let rate: Option<u32> = bounded(&mut errors, "join_pow_adaptive_rate", rate, 1, MAX_POW_JOINS_PER_SEC);
                let max_bits: Option<u8> =
                    bounded(&mut errors, "join_pow_max_bits", self.join_pow_max_bits, self.join_pow_bits, MAX_POW_BITS);
                rate.zip(max_bits).map(|(joins_per_sec, max_bits)| Some(AdaptivePow { joins_per_sec, max_bits }))
            }
        };
        let priority_units: Option<u32> =
            bounded(&mut errors, "priority_units", self.priority_units, 0, self.stock.clamp(0, MAX_STOCK));
        let (hold_min, hold_max) = PRIORITY_HOLD_SECS;
        let priority_hold_secs =
            bounded(&mut errors, "priority_hold_secs", self.priority_hold_secs, hold_min, hold_max);
        if let (true, Some(duration)) = (self.priority_units > 0, self.duration_secs) {
            errors.check(self.priority_hold_secs < duration, "priority_hold_secs", || {
                format!(
                    "must be shorter than duration_secs ({duration}), so what code holders leave reaches everyone \
                     before the batch ends, got {}",
                    self.priority_hold_secs
                )
            });
        }
        let config = (|| {
            Some(SaleConfig {
                name: self.name.trim().to_owned(),
                sku: self.sku,
                price_cents: Cents(self.price_cents),
                currency: currency?,
                stock: Units::new(stock?),
                per_user_limit: Units::new(per_user_limit?),
                schedule: schedule?,
                prequeue_secs: prequeue_secs?,
                admission_rate: admission_rate?,
                admission_ttl_secs: admission_ttl_secs?,
                payment_window_secs: payment_window_secs?,
                duration_secs: duration_secs?,
                join_pow: JoinPow { bits: pow_bits?, adaptive: adaptive? },
                priority: PriorityAllotment { units: Units::new(priority_units?), hold_secs: priority_hold_secs? },
            })
        })();
        match config {
            Some(config) => errors.into_result(config),
            None => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn weekly_sale() -> NewSale {
        serde_json::from_value(serde_json::json!({
            "name": "Phone X", "sku": "PHONE-X", "price_cents": 499900, "currency": "CNY",
            "stock": 50000, "per_user_limit": 2,
            "weekly": {"weekday": "tue", "time": "12:00", "timezone": "Asia/Shanghai"}
        }))
        .unwrap()
    }

    fn fields(result: Result<SaleConfig, ValidationErrors>) -> Vec<String> {
        result.unwrap_err().0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn an_adaptive_proof_of_work_adds_a_bit_per_doubling_of_the_join_rate_up_to_its_most() {
        let fixed = JoinPow { bits: 10, adaptive: None };
        assert_eq!(fixed.bits_at(1e9), 10);
        let adaptive = JoinPow { bits: 4, adaptive: Some(AdaptivePow { joins_per_sec: 100, max_bits: 9 }) };
        assert!(adaptive.is_on() && !JoinPow::default().is_on());
        assert_eq!(adaptive.bits_at(0.0), 4);
        assert_eq!(adaptive.bits_at(199.0), 4);
        assert_eq!(adaptive.bits_at(200.0), 5);
        assert_eq!(adaptive.bits_at(1_600.0), 8);
        assert_eq!(adaptive.bits_at(1e12), 9, "capped");
    }

    #[test]
    fn a_weekly_sale_with_defaults_is_valid() {
        let config = weekly_sale().validate(now()).unwrap();
        assert_eq!(config.stock, Units::new(50_000));
        assert_eq!(config.prequeue_secs, 600);
        let opens = config.first_opening(now());
        assert_eq!(opens.to_rfc3339(), "2026-11-24T04:00:00+00:00");
        // Without a duration the batch runs until the next week's pre-queue.
        assert_eq!(config.batch_closes_at(opens).unwrap().to_rfc3339(), "2026-12-01T03:50:00+00:00");
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let mut sale = weekly_sale();
        sale.stock = 0;
        sale.per_user_limit = 0;
        sale.currency = "cny".into();
        sale.weekly =
            Some(WeeklyInput { weekday: "tuesday".into(), time: "24:00".into(), timezone: "Mars/Base".into() });
        let got = fields(sale.validate(now()));
        for field in ["stock", "per_user_limit", "currency", "weekly.weekday", "weekly.time", "weekly.timezone"] {
            assert!(got.iter().any(|f| f == field), "{field} missing from {got:?}");
        }
    }

    #[test]
    fn admission_may_not_outlive_the_payment_window() {
        let mut sale = weekly_sale();
        sale.admission_ttl_secs = Some(600);
        sale.payment_window_secs = Some(300);
        assert_eq!(fields(sale.validate(now())), ["admission_ttl_secs"]);
    }

    #[test]
    fn a_one_off_opening_must_be_in_the_future_and_alone() {
        let mut sale = weekly_sale();
        sale.weekly = None;
        sale.opens_at = Some("2026-11-21T12:00:00+08:00".into());
        assert_eq!(fields(sale.validate(now())), ["opens_at"]);
        sale.opens_at = Some("next tuesday".into());
        assert_eq!(fields(sale.validate(now())), ["opens_at"]);
        sale.opens_at = Some("2026-11-24T12:00:00+08:00".into());
        let config = sale.validate(now()).unwrap();
        assert_eq!(config.batch_closes_at(config.first_opening(now())), None);
    }

    #[test]
    fn a_patch_is_validated_with_the_fields_it_keeps() {
        let config = weekly_sale().validate(now()).unwrap();
        let patch = SalePatch { payment_window_secs: Some(60), ..SalePatch::default() };
        assert_eq!(fields(config.patched(&patch)), ["admission_ttl_secs"]);
        let patch = SalePatch { stock: Some(1), ..SalePatch::default() };
        assert_eq!(fields(config.patched(&patch)), ["per_user_limit"]);
        let patch = SalePatch { stock: Some(10), per_user_limit: Some(1), ..SalePatch::default() };
        assert_eq!(config.patched(&patch).unwrap().stock, Units::new(10));
    }

    #[test]
    fn weekly_windows_may_not_overlap() {
        let mut sale = weekly_sale();
        sale.duration_secs = Some(6 * 86_400);
        assert_eq!(fields(sale.validate(now())), ["duration_secs"]);
    }
}
