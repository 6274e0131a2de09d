//! The buyer's `Idempotency-Key`, claimed in Redis in the reservation's own step, and the answer
//! a retry gets (see the module above, steps 1 and 3).

use std::sync::{Arc, LazyLock};

use flashsale_core::{BatchNo, SaleId, UserId};
use sqlx::FromRow;

use super::rows::{ORDER_COLUMNS, OrderRow};
use super::{Claim, OrderBook, StoredResponse};
use crate::{Fingerprint, IdempotencyKey, Order, OrderError, creation_body};

/// How long a claim (and so the promise to replay) is kept in Redis, ms: a day.
pub const CLAIM_TTL_MS: i64 = 24 * 3600 * 1000;

static TAKE_OVER_CLAIM: LazyLock<redis::Script> =
    LazyLock::new(|| flashsale_redis::script(include_str!("../../lua/take_over_claim.lua")));

/// Loads the order crate's script into Redis's script cache (an early check that Redis accepts
/// it; a flushed cache is reloaded transparently anyway).
pub async fn load_scripts(redis: &flashsale_redis::Redis) -> Result<(), OrderError> {
    let mut conn = redis.conn().await.map_err(|e| OrderError::NoRedisConnection(Arc::new(e)))?;
    TAKE_OVER_CLAIM.load_async(&mut conn).await?;
    Ok(())
}

impl OrderBook {
    /// The Redis key of `user`'s claim of `key` for an order in `sale`'s `batch` (in the batch's
    /// hash slot, so the reservation script can make the claim in the same step).
    pub fn claim_key(&self, sale: SaleId, batch: BatchNo, user: &UserId, key: &IdempotencyKey) -> String {
        self.keys.batch(sale, batch).idempotency(user.as_str(), key.as_str())
    }

    /// The claim of a request with `fingerprint`, made now (Redis's clock): `fingerprint
    /// claimed_at_ms`.
    pub fn claim_value(&self, fingerprint: &Fingerprint) -> String {
        format!("{} {}", fingerprint.hex(), self.clock.now_ms())
    }

    /// What to answer when `user`'s claim of `key` was already `held`: another request's
    /// ([`Claim::KeyReused`]); this request's finished answer ([`Claim::Replay`]); still running
    /// ([`Claim::InProgress`]); or, when the claim went stale without an answer (its instance
    /// died), taken over by this retry ([`Claim::Acquired`]).
    pub async fn resolve_held(
        &self,
        sale: SaleId,
        batch: BatchNo,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        held: &str,
    ) -> Result<Claim, OrderError> {
        let (claimed, at) = held.split_once(' ').unwrap_or((held, "0"));
        if claimed != fingerprint.hex() {
            return Ok(Claim::KeyReused);
        }
        if let Some(answer) = self.stored_answer(user, key, fingerprint).await? {
            return Ok(answer);
        }
        let age = self.clock.now_ms() - at.parse::<i64>().unwrap_or(0);
        if age < i64::try_from(self.stale_claim.as_millis()).unwrap_or(i64::MAX) {
            return Ok(Claim::InProgress);
        }
        let mut conn = self.redis.conn().await.map_err(|e| OrderError::NoRedisConnection(Arc::new(e)))?;
        let reply: redis::Value = TAKE_OVER_CLAIM
            .key(self.claim_key(sale, batch, user, key))
            .arg(held)
            .arg(self.claim_value(fingerprint))
            .arg(CLAIM_TTL_MS)
            .invoke_async(&mut conn)
            .await?;
        match flashsale_redis::tagged(&reply) {
            Some(("taken", [])) => Ok(Claim::Acquired),
            Some(("changed", [])) => Ok(Claim::InProgress),
            _ => Err(OrderError::MalformedReply { operation: "take_over_claim", reply: format!("{reply:?}") }),
        }
    }

    /// The stored answer to an earlier request with this key, if it finished: the order it
    /// created (as created), or the refusal it got; [`Claim::KeyReused`] if that request was a
    /// different one.
    pub async fn stored_answer(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Claim>, OrderError> {
        #[derive(FromRow)]
        struct Stored {
            #[sqlx(flatten)]
            order: OrderRow,
            fingerprint: Vec<u8>,
        }
        let order: Option<Stored> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS}, fingerprint FROM orders WHERE user_id = $1 AND idempotency_key = $2"
        ))
        .bind(user.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.db)
        .await?;
        if let Some(stored) = order {
            if stored.fingerprint != fingerprint.0 {
                return Ok(Some(Claim::KeyReused));
            }
            let body = creation_body(&Order::try_from(stored.order)?);
            return Ok(Some(Claim::Replay(StoredResponse { status: 201, body })));
        }
        let refusal: Option<(Vec<u8>, i16, String)> = sqlx::query_as(
            "SELECT fingerprint, status_code, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(user.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.db)
        .await?;
        Ok(refusal.map(|(stored, status, body)| {
            if stored == fingerprint.0 {
                Claim::Replay(StoredResponse { status: u16::try_from(status).unwrap_or(500), body })
            } else {
                Claim::KeyReused
            }
        }))
    }

    /// Gives a claimed key up without an answer, so that a retry runs the request again (after a
    /// failure worth retrying: Redis or PostgreSQL unavailable, a batch being rebuilt).
    pub async fn abandon_claim(
        &self,
        sale: SaleId,
        batch: BatchNo,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<(), OrderError> {
        self.abandon_claim_key(&self.claim_key(sale, batch, user, key)).await
    }

    /// Deletes an idempotency claim by its key (as [`Self::claim_key`] named it), so that a
    /// retry runs the request again.
    pub async fn abandon_claim_key(&self, claim_key: &str) -> Result<(), OrderError> {
        let mut conn = self.redis.conn().await.map_err(|e| OrderError::NoRedisConnection(Arc::new(e)))?;
        let _: i64 = redis::cmd("DEL").arg(claim_key).query_async(&mut conn).await?;
        Ok(())
    }
}
