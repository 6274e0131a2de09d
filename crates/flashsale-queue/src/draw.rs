//! The pre-queue draw, and how anyone checks it: commit, seal, reveal, verify.
//!
//! Buyers who join before the opening are equal; at the opening they are put in an order nobody
//! could predict or steer. This module is everything about that order that is not Redis: the
//! server uses it to rank and record, `flashsale-verify` and the tests to check. Nothing here does
//! IO.
//!
//! # The protocol
//! 1. **Commit** (the batch is created): the batch draws a secret 32-byte `seed`; every public
//!    view shows [`seed_commitment`] from then on, so anyone can record it before anyone joins.
//! 2. **Join** (the pre-queue): a buyer's [`Leaf`] binds their id to a [`receipt`] only they are
//!    given (a keyed hash under the batch's secret [`EntrantKey`]), so the published cohort
//!    exposes nobody: a leaf cannot be linked to a guessable id without its receipt. Their
//!    [`rank`] is a keyed hash of the leaf under the seed; the pre-queue is kept sorted by it.
//! 3. **Seal** (the opening): the cohort is closed, its leaves are recorded in PostgreSQL in drawn
//!    order, and [`cohort_root`] (an RFC 6962 Merkle root over the leaves in ascending byte order)
//!    is published with the cohort's size.
//! 4. **Reveal** (as soon as the cohort is recorded): the seed is published. Knowing it then
//!    changes nothing: nobody can join the sealed cohort any more, and every rank is a function of
//!    the seed and a leaf already fixed.
//! 5. **Verify** ([`verify_draw`], [`find_entrant`]): anyone checks the seed against the
//!    commitment, the recorded cohort against its root, and that the recorded order is ascending
//!    rank; a buyer with their id and receipt finds their leaf, its place and its inclusion proof.
//!
//! What this does not prove: that every leaf is a real buyer (the operator could add accounts of
//! its own, as any shop could). What it does prove: the seed was fixed before anyone joined, the
//! cohort was fixed before the seed was known, and the order follows from both alone.

use flashsale_core::{BatchNo, EntrantKey, PrequeueSeed, SaleId, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signing::hmac_sha256;

/// How the order follows from the seed, in words (shown with the published draw).
pub const RANK_RULE: &str = "ascending first 52 bits (big-endian) of HMAC-SHA256(key = seed, message = leaf); leaf = SHA-256(\"flashsale-entrant-v1\" \
     || sale id (8 bytes BE) || batch number (8 bytes BE) || receipt (32 bytes) || user id (UTF-8)); cohort root = \
     RFC 6962 Merkle tree hash over the leaves sorted ascending";

/// One entrant of a pre-queue cohort as published: a hash that names nobody.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Leaf(pub [u8; 32]);

impl Leaf {
    /// The leaf spelled in hex, as the cohort is published.
    pub fn parse(hex: &str) -> Option<Leaf> {
        flashsale_core::unhex32(hex.trim()).map(Leaf)
    }
}

impl std::fmt::Display for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&flashsale_core::hex(&self.0))
    }
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Leaf({self})")
    }
}

/// The public commitment to a batch's draw seed: hex SHA-256 of
/// `"flashsale-draw-v1" || sale id (8 bytes, big-endian) || batch number (8 bytes, big-endian) ||
/// seed`. Shown from the moment the batch exists, long before anyone joins: once the seed is
/// published, anyone can check it is the one committed to, so it cannot have been chosen after
/// the operator saw who joined. The batch's identity is in the hash, so one seed cannot be
/// passed off as another batch's.
pub fn seed_commitment(seed: &PrequeueSeed, sale: SaleId, batch: BatchNo) -> String {
    let mut hash = Sha256::new();
    hash.update(b"flashsale-draw-v1");
    hash.update(sale.get().to_be_bytes());
    hash.update(batch.get().to_be_bytes());
    hash.update(seed.as_bytes());
    flashsale_core::hex(&hash.finalize())
}

/// The buyer's draw receipt for a batch: HMAC-SHA256 under the batch's secret entrant key of
/// `"flashsale-receipt-v1" || sale || batch || user id`. Handed to the buyer with their place;
/// with it (and their id) they can find their leaf in the published cohort, and nobody without
/// it can.
pub fn receipt(key: &EntrantKey, sale: SaleId, batch: BatchNo, user: &UserId) -> [u8; 32] {
    let mut message = Vec::with_capacity(36 + user.as_str().len());
    message.extend_from_slice(b"flashsale-receipt-v1");
    message.extend_from_slice(&sale.get().to_be_bytes());
    message.extend_from_slice(&batch.get().to_be_bytes());
    message.extend_from_slice(user.as_str().as_bytes());
    hmac_sha256(key.as_bytes(), &message)
}

/// The buyer's leaf: SHA-256 of `"flashsale-entrant-v1" || sale || batch || receipt || user id`
/// (the id last: every other part has a fixed length, so no two inputs spell the same bytes).
pub fn leaf(sale: SaleId, batch: BatchNo, user: &UserId, receipt: &[u8; 32]) -> Leaf {
    let mut hash = Sha256::new();
    hash.update(b"flashsale-entrant-v1");
    hash.update(sale.get().to_be_bytes());
    hash.update(batch.get().to_be_bytes());
    hash.update(receipt);
    hash.update(user.as_str().as_bytes());
    Leaf(hash.finalize().into())
}

/// The buyer's leaf, from the batch's secret key (what the server computes at the join).
pub fn entrant(key: &EntrantKey, sale: SaleId, batch: BatchNo, user: &UserId) -> Leaf {
    leaf(sale, batch, user, &receipt(key, sale, batch, user))
}

/// A leaf's rank in the draw: the first 52 bits of HMAC-SHA256(seed, leaf).
///
/// 52 bits fit a Redis sorted-set score (a double) exactly, so Redis orders by the same number
/// anyone can recompute from the published seed and cohort. Without the seed the rank is
/// unpredictable, so arriving at 11:59:59.9 or at 11:50 makes no difference.
pub fn rank(seed: &PrequeueSeed, leaf: &Leaf) -> u64 {
    let mac = hmac_sha256(seed.as_bytes(), &leaf.0);
    let mut first = [0u8; 8];
    first.copy_from_slice(&mac[..8]);
    u64::from_be_bytes(first) >> 12
}

fn leaf_hash(leaf: &Leaf) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update([0x00]);
    hash.update(leaf.0);
    hash.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update([0x01]);
    hash.update(left);
    hash.update(right);
    hash.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2): where RFC 6962 splits a tree.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962's Merkle Tree Hash of `leaves` in the order given.
fn tree_hash(leaves: &[Leaf]) -> [u8; 32] {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => leaf_hash(one),
        _ => {
            let k = split(leaves.len());
            node_hash(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

/// The cohort commitment: the Merkle root (RFC 6962) over the cohort's leaves sorted in ascending
/// byte order, so it depends on who is in the cohort and not on the draw's order.
pub fn cohort_root(leaves: &[Leaf]) -> [u8; 32] {
    let mut sorted = leaves.to_vec();
    sorted.sort_unstable();
    tree_hash(&sorted)
}

/// RFC 6962's audit path for `sorted[index]`: the sibling hashes from the leaf up.
fn audit_path(sorted: &[Leaf], index: usize) -> Vec<[u8; 32]> {
    if sorted.len() <= 1 {
        return Vec::new();
    }
    let k = split(sorted.len());
    if index < k {
        let mut path = audit_path(&sorted[..k], index);
        path.push(tree_hash(&sorted[k..]));
        path
    } else {
        let mut path = audit_path(&sorted[k..], index - k);
        path.push(tree_hash(&sorted[..k]));
        path
    }
}

/// An inclusion proof: that one leaf is at `index` of the sorted cohort of `size` leaves whose
/// root is the published cohort commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The leaf's index in the cohort sorted ascending (0-based).
    pub index: u64,
    /// The cohort's size.
    pub size: u64,
    /// Sibling hashes, hex, from the leaf up (RFC 6962 audit path).
    pub path: Vec<String>,
}

impl InclusionProof {
    /// Whether the proof shows `leaf` in the cohort whose root is `root` (RFC 9162 §2.1.3.2).
    pub fn verify(&self, leaf: &Leaf, root: &[u8; 32]) -> bool {
        if self.index >= self.size {
            return false;
        }
        let (mut index, mut last) = (self.index, self.size - 1);
        let mut hash = leaf_hash(leaf);
        for sibling in &self.path {
            let Some(sibling) = flashsale_core::unhex32(sibling) else {
                return false;
            };
            if last == 0 {
                return false;
            }
            if index & 1 == 1 || index == last {
                hash = node_hash(&sibling, &hash);
                while index & 1 == 0 && index != 0 {
                    index >>= 1;
                    last >>= 1;
                }
            } else {
                hash = node_hash(&hash, &sibling);
            }
            index >>= 1;
            last >>= 1;
        }
        last == 0 && &hash == root
    }
}

/// What is wrong with a published draw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawFault {
    /// The published seed is not the one the batch committed to before anyone joined.
    #[error("the published seed does not match the seed commitment shown before the pre-queue")]
    SeedNotCommitted,
    /// The published cohort is not the one sealed at the opening (a buyer added or removed).
    #[error("the published cohort ({size} entrants) does not match the cohort commitment made at the opening")]
    CohortNotCommitted { size: usize },
    /// The cohort's published size differs from the entrants listed.
    #[error("the cohort commitment counts {committed} entrants but {listed} are listed")]
    SizeMismatch { committed: u64, listed: usize },
    /// One leaf listed twice.
    #[error("entrant {leaf} is listed twice")]
    Duplicate { leaf: Leaf },
    /// The order is not the seed's: the entrant at `place` ranks before the one above it.
    #[error("place {place} ranks before place {}: the order is not the seed's", place - 1)]
    OutOfOrder { place: u64 },
    /// A hex field that is not a digest.
    #[error("{field} is not hex of the right length")]
    Malformed { field: &'static str },
}

/// Checks a published draw: the seed against its commitment, the cohort against its root and
/// size, and that `drawn` (the cohort in drawn order, place 1 first) ascends by rank. Entrants
/// with equal ranks (52 bits: about one pair in a cohort of 70 million) may stand in either order.
pub fn verify_draw(
    sale: SaleId,
    batch: BatchNo,
    seed: &PrequeueSeed,
    committed_seed: &str,
    committed_cohort: &str,
    committed_size: u64,
    drawn: &[Leaf],
) -> Result<(), DrawFault> {
    if seed_commitment(seed, sale, batch) != committed_seed.to_ascii_lowercase() {
        return Err(DrawFault::SeedNotCommitted);
    }
    if u64::try_from(drawn.len()).ok() != Some(committed_size) {
        return Err(DrawFault::SizeMismatch { committed: committed_size, listed: drawn.len() });
    }
    let root = flashsale_core::unhex32(committed_cohort).ok_or(DrawFault::Malformed { field: "cohort_commitment" })?;
    let mut sorted = drawn.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(DrawFault::Duplicate { leaf: pair[0] });
    }
    if tree_hash(&sorted) != root {
        return Err(DrawFault::CohortNotCommitted { size: drawn.len() });
    }
    let ranks: Vec<u64> = drawn.iter().map(|leaf| rank(seed, leaf)).collect();
    if let Some(at) = ranks.windows(2).position(|pair| pair[1] < pair[0]) {
        return Err(DrawFault::OutOfOrder { place: u64::try_from(at).unwrap_or(u64::MAX).saturating_add(2) });
    }
    Ok(())
}

/// Where one buyer stands in a drawn cohort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The buyer's leaf, hex.
    pub leaf: String,
    /// Their place (1-based): the ticket they held at the opening.
    pub place: u64,
    /// Their rank under the seed.
    pub rank: u64,
    /// That the leaf is in the committed cohort.
    pub proof: InclusionProof,
}

/// Finds the buyer whose id and receipt give `leaf` in the cohort `drawn` (drawn order): their
/// place, rank and inclusion proof, or `None` if they are not in it.
pub fn find_entrant(seed: &PrequeueSeed, drawn: &[Leaf], leaf: &Leaf) -> Option<Entry> {
    let at = drawn.iter().position(|l| l == leaf)?;
    let mut sorted = drawn.to_vec();
    sorted.sort_unstable();
    let index = sorted.binary_search(leaf).ok()?;
    Some(Entry {
        leaf: leaf.to_string(),
        place: u64::try_from(at).ok()? + 1,
        rank: rank(seed, leaf),
        proof: InclusionProof {
            index: u64::try_from(index).ok()?,
            size: u64::try_from(sorted.len()).ok()?,
            path: audit_path(&sorted, index).iter().map(|h| flashsale_core::hex(h)).collect(),
        },
    })
}

/// A batch's draw as published (`GET /sales/{id}/batches/{no}/draw`): what the server shows
/// and what a verifier reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishedDraw {
    pub sale_id: SaleId,
    pub batch_no: BatchNo,
    /// The commitment every view of the batch showed from its creation on: hex SHA-256 of
    /// "flashsale-draw-v1", the sale id and batch number (8 bytes big-endian each) and the seed.
    pub draw_commitment: String,
    /// The cohort commitment, hex, once the pre-queue is sealed and recorded (at the opening):
    /// the RFC 6962 Merkle root over the cohort's leaves sorted ascending. `null` before.
    pub cohort_commitment: Option<String>,
    /// Buyers in the sealed cohort (they hold places 1..cohort_size). `null` before the opening.
    pub cohort_size: Option<u64>,
    /// When the cohort was recorded.
    pub sealed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The seed, hex: revealed once the cohort is recorded (it can no longer steer anything), or
    /// once the batch ended without a draw. `null` before.
    pub prequeue_seed: Option<String>,
    /// How the order follows from the seed and the cohort.
    #[schema(example = "ascending first 52 bits (big-endian) of HMAC-SHA256(key = seed, message = leaf)")]
    pub rank: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (SaleId, BatchNo) {
        (SaleId::try_from(7).unwrap(), BatchNo::FIRST)
    }

    fn cohort(n: usize) -> (PrequeueSeed, Vec<Leaf>) {
        let (sale, batch) = ids();
        let key = EntrantKey::new(vec![9; 32]);
        let seed = PrequeueSeed::new(vec![5; 32]);
        let mut leaves: Vec<Leaf> =
            (0..n).map(|i| entrant(&key, sale, batch, &UserId::try_from(format!("buyer-{i}")).unwrap())).collect();
        leaves.sort_by_key(|l| rank(&seed, l));
        (seed, leaves)
    }

    #[test]
    fn a_seed_commitment_binds_the_seed_and_the_batch() {
        let (sale, batch) = ids();
        let seed = PrequeueSeed::new(vec![1, 2, 3]);
        let commitment = seed_commitment(&seed, sale, batch);
        assert_eq!(commitment.len(), 64);
        assert_eq!(commitment, seed_commitment(&PrequeueSeed::new(vec![1, 2, 3]), sale, batch));
        assert_ne!(commitment, seed_commitment(&PrequeueSeed::new(vec![1, 2, 4]), sale, batch));
        assert_ne!(commitment, seed_commitment(&seed, SaleId::try_from(8).unwrap(), batch));
        assert_ne!(commitment, seed_commitment(&seed, sale, BatchNo::try_from(2).unwrap()));
    }

    #[test]
    fn a_rank_is_52_bits_fixed_by_seed_and_leaf() {
        let (seed, leaves) = cohort(1);
        let r = rank(&seed, &leaves[0]);
        assert!(r < 1 << 52);
        assert_eq!(r, rank(&seed, &leaves[0]));
        assert_ne!(r, rank(&PrequeueSeed::new(vec![6; 32]), &leaves[0]));
    }

    #[test]
    fn a_receipt_is_the_buyers_own_and_the_batchs_own() {
        let (sale, batch) = ids();
        let key = EntrantKey::new(vec![9; 32]);
        let ann = UserId::try_from("ann".to_owned()).unwrap();
        let r = receipt(&key, sale, batch, &ann);
        assert_ne!(r, receipt(&key, sale, batch, &UserId::try_from("bob".to_owned()).unwrap()));
        assert_ne!(r, receipt(&EntrantKey::new(vec![8; 32]), sale, batch, &ann));
        assert_ne!(r, receipt(&key, sale, BatchNo::try_from(2).unwrap(), &ann));
        assert_eq!(entrant(&key, sale, batch, &ann), leaf(sale, batch, &ann, &r));
    }

    #[test]
    fn the_root_follows_rfc_6962() {
        // RFC 6962 §2.1 on small trees, written out by hand.
        let l: Vec<Leaf> = (1..=3u8).map(|b| Leaf([b; 32])).collect();
        let (h0, h1, h2) = (leaf_hash(&l[0]), leaf_hash(&l[1]), leaf_hash(&l[2]));
        assert_eq!(cohort_root(&[]), <[u8; 32]>::from(Sha256::digest([])));
        assert_eq!(cohort_root(&l[..1]), h0);
        assert_eq!(cohort_root(&[l[1], l[0]]), node_hash(&h0, &h1), "sorted before hashing");
        assert_eq!(cohort_root(&l), node_hash(&node_hash(&h0, &h1), &h2));
    }

    #[test]
    fn every_entrant_has_a_proof_and_a_proof_fits_only_its_leaf() {
        for n in [1, 2, 3, 5, 8, 13] {
            let (seed, drawn) = cohort(n);
            let root = cohort_root(&drawn);
            for (place, leaf) in drawn.iter().enumerate() {
                let entry = find_entrant(&seed, &drawn, leaf).unwrap();
                assert_eq!(entry.place, place as u64 + 1);
                assert!(entry.proof.verify(leaf, &root), "n {n} place {place}");
                assert!(!entry.proof.verify(&Leaf([0; 32]), &root));
                let mut moved = entry.proof.clone();
                moved.index = (moved.index + 1) % moved.size;
                assert!(n == 1 || !moved.verify(leaf, &root));
            }
            assert_eq!(find_entrant(&seed, &drawn, &Leaf([0; 32])), None);
        }
    }

    #[test]
    fn a_fair_draw_verifies_and_every_tampering_is_named() {
        let (sale, batch) = ids();
        let (seed, drawn) = cohort(20);
        let committed = seed_commitment(&seed, sale, batch);
        let root = flashsale_core::hex(&cohort_root(&drawn));
        let check = |seed: &PrequeueSeed, drawn: &[Leaf], size: u64| {
            verify_draw(sale, batch, seed, &committed, &root, size, drawn)
        };
        assert_eq!(check(&seed, &drawn, 20), Ok(()));
        assert_eq!(check(&PrequeueSeed::new(vec![6; 32]), &drawn, 20), Err(DrawFault::SeedNotCommitted));

        let mut added = drawn.clone();
        added.push(Leaf([0xff; 32]));
        assert_eq!(check(&seed, &added, 21), Err(DrawFault::CohortNotCommitted { size: 21 }));
        assert_eq!(check(&seed, &drawn[1..], 19), Err(DrawFault::CohortNotCommitted { size: 19 }));
        assert_eq!(check(&seed, &drawn[1..], 20), Err(DrawFault::SizeMismatch { committed: 20, listed: 19 }));

        let mut swapped = drawn.clone();
        swapped.swap(3, 4);
        assert_eq!(check(&seed, &swapped, 20), Err(DrawFault::OutOfOrder { place: 5 }));
        let mut twice = drawn.clone();
        twice[1] = twice[0];
        assert!(matches!(check(&seed, &twice, 20), Err(DrawFault::Duplicate { .. })));
    }

    #[test]
    fn leaves_read_back_from_hex() {
        let leaf = Leaf([0xab; 32]);
        assert_eq!(Leaf::parse(&leaf.to_string()), Some(leaf));
        assert_eq!(Leaf::parse("abcd"), None);
    }
}
