//! Priority codes (`priority_codes`): single-use codes that admit their holder without queueing.
//! Codes are drawn here (100 bits from the OS-seeded CSPRNG, Crockford base32, in four groups of
//! five) and stored only as SHA-256: the plain codes exist once, in the answer that generated them.

use chrono::{DateTime, Utc};
use flashsale_core::{BatchNo, SaleId, UserId};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::error::SalesError;

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud or typed is not misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The most codes one request generates.
pub const MAX_PER_REQUEST: u32 = 10_000;

/// A new code, as shown to operations once: `XXXXX-XXXXX-XXXXX-XXXXX` (100 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 20];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    let chars: Vec<char> = bytes.iter().map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect();
    chars.chunks(5).map(|group| group.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// What a code is stored and looked up as: SHA-256 of the code normalised (upper case, without
/// dashes or spaces; Crockford's look-alikes O→0, I and L→1), so a code typed loosely still
/// matches. `None` for text that cannot be a code (not 20 base32 characters).
pub fn code_hash(code: &str) -> Option<[u8; 32]> {
    let normal: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    if normal.len() != 20 || !normal.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    Some(Sha256::digest(normal.as_bytes()).into())
}

/// Stores the hashes of newly generated codes for `sale`.
pub async fn insert_codes(conn: &mut PgConnection, sale: SaleId, hashes: &[[u8; 32]]) -> Result<(), SalesError> {
    let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_vec()).collect();
    sqlx::query("INSERT INTO priority_codes (sale_id, code_hash) SELECT $1, h FROM UNNEST($2::bytea[]) AS h")
        .bind(sale.get())
        .bind(hashes)
        .execute(conn)
        .await?;
    Ok(())
}

/// What redeeming a code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The code is this buyer's now (or was already, in this batch: a retry). `id` numbers it.
    Theirs { id: i64 },
    /// Another buyer (or this one in another batch) spent it.
    Spent,
    /// No such code for this sale (a guess, a typo, another sale's code).
    Unknown,
}

/// Spends `hash` of `sale` for `user` in `batch`, unless another buyer did first. One statement:
/// fifty buyers racing for one code get one `Theirs`.
pub async fn redeem(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: BatchNo,
    hash: &[u8; 32],
    user: &UserId,
) -> Result<Redeemed, SalesError> {
    let claimed: Option<i64> = sqlx::query_scalar(
        "UPDATE priority_codes SET used_by = $4, batch_no = $2, used_at = COALESCE(used_at, now()) \
         WHERE sale_id = $1 AND code_hash = $3 \
           AND (used_at IS NULL OR (used_by = $4 AND batch_no = $2)) RETURNING id",
    )
    .bind(sale.get())
    .bind(batch.get())
    .bind(&hash[..])
    .bind(user.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = claimed {
        return Ok(Redeemed::Theirs { id });
    }
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM priority_codes WHERE sale_id = $1 AND code_hash = $2)")
            .bind(sale.get())
            .bind(&hash[..])
            .fetch_one(conn)
            .await?;
    Ok(if exists { Redeemed::Spent } else { Redeemed::Unknown })
}

/// A sale's priority codes at a glance (operations): generated, redeemed, and the units paid for
/// by buyers admitted through one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct PriorityCodeStats {
    /// Codes generated for the sale.
    pub generated: u64,
    /// Codes redeemed (in the batch, for a batch's figures).
    pub redeemed: u64,
    /// Units paid for by buyers admitted through a code.
    pub units_paid: u64,
}

/// A sale's codes: generated, and redeemed (in `batch` when given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodeStats {
    pub generated: u64,
    pub redeemed: u64,
    pub last_redeemed_at: Option<DateTime<Utc>>,
}

/// How many of the sale's codes exist and how many were redeemed (in `batch`, if given).
pub async fn code_stats(
    conn: &mut PgConnection,
    sale: SaleId,
    batch: Option<BatchNo>,
) -> Result<CodeStats, SalesError> {
    let (generated, redeemed, last): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE used_at IS NOT NULL AND ($2::bigint IS NULL OR batch_no = $2)), \
                max(used_at) FILTER (WHERE $2::bigint IS NULL OR batch_no = $2) \
         FROM priority_codes WHERE sale_id = $1",
    )
    .bind(sale.get())
    .bind(batch.map(BatchNo::get))
    .fetch_one(conn)
    .await?;
    Ok(CodeStats {
        generated: u64::try_from(generated).unwrap_or_default(),
        redeemed: u64::try_from(redeemed).unwrap_or_default(),
        last_redeemed_at: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_four_groups_of_five_and_reads_back_loosely_typed() {
        let code = generate();
        assert_eq!(code.len(), 23);
        assert_eq!(code.split('-').count(), 4);
        let hash = code_hash(&code).unwrap();
        assert_eq!(code_hash(&code.to_lowercase().replace('-', " ")), Some(hash));
        assert_ne!(generate(), code);
        assert_eq!(code_hash("O0000-00000-00000-00000"), code_hash("00000-00000-00000-00000"));
        for bad in ["", "12345", "UUUUU-00000-00000-00000", "00000-00000-00000-0000!"] {
            assert_eq!(code_hash(bad), None, "{bad}");
        }
    }
}
