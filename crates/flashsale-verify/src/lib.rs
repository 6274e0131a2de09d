//! Checks a batch's pre-queue draw from what the server published, as any buyer can: the seed
//! against the commitment shown before anyone joined, the cohort against the commitment made at
//! the opening, the order against the seed; and, given a buyer's id and draw receipt, their
//! place and the proof that they are in the cohort. The protocol is
//! [`flashsale_queue::draw`]'s; this crate only reads the published form of it.
//!
//! The binary (`flashsale-verify`) fetches the two public documents; [`verify`] is the check,
//! also run by the server's tests against what the server published.

use flashsale_core::{PrequeueSeed, UserId};
use flashsale_queue::draw::{self, DrawFault, Entry, Leaf, PublishedDraw};

/// Why a draw cannot be verified (yet), or does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The cohort is not recorded yet (the batch has not opened) or the seed not revealed.
    #[error("the draw is not published yet: {0}")]
    NotPublished(&'static str),
    /// The entrants list has a line that is not a 64-digit hex leaf.
    #[error("entrants line {line} is not a leaf")]
    BadEntrant { line: usize },
    /// A published field is not what it should be.
    #[error("{0} is not hex")]
    BadField(&'static str),
    /// The draw does not verify.
    #[error(transparent)]
    Unfair(#[from] DrawFault),
    /// The buyer's id and receipt give a leaf that is not in the cohort.
    #[error("no entrant in the cohort has this buyer's id and receipt")]
    NotInCohort,
}

/// A buyer to look for: their id and their `draw_receipt`.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub user: UserId,
    pub receipt: [u8; 32],
}

impl Buyer {
    /// From the id and the receipt as the queue showed it (hex).
    pub fn new(user: &str, receipt_hex: &str) -> Result<Buyer, VerifyError> {
        let user = UserId::try_from(user.to_owned()).map_err(|_| VerifyError::BadField("buyer id"))?;
        let receipt = flashsale_core::unhex32(receipt_hex.trim()).ok_or(VerifyError::BadField("receipt"))?;
        Ok(Buyer { user, receipt })
    }
}

/// What a verified draw says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Buyers in the cohort.
    pub cohort_size: u64,
    /// The buyer's entry, when one was asked about.
    pub entry: Option<Entry>,
}

/// Reads the entrants document: one hex leaf per line, in drawn order.
pub fn parse_entrants(text: &str) -> Result<Vec<Leaf>, VerifyError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| Leaf::parse(line).ok_or(VerifyError::BadEntrant { line: i + 1 }))
        .collect()
}

/// A published draw that verified: the cohort, ready to look buyers up in.
#[derive(Debug, Clone)]
pub struct Cohort {
    published: PublishedDraw,
    seed: PrequeueSeed,
    root: [u8; 32],
    drawn: Vec<Leaf>,
    places: std::collections::HashMap<Leaf, u64>,
}

impl Cohort {
    /// Checks the published draw and its entrants (the `/draw/entrants` text): the seed against
    /// its commitment, the cohort against its commitment and size, the order against the seed.
    pub fn verify(published: &PublishedDraw, entrants: &str) -> Result<Cohort, VerifyError> {
        let seed = published.prequeue_seed.as_deref().ok_or(VerifyError::NotPublished("the seed"))?;
        let seed = PrequeueSeed::new(flashsale_core::unhex(seed).ok_or(VerifyError::BadField("prequeue_seed"))?);
        let committed =
            published.cohort_commitment.as_deref().ok_or(VerifyError::NotPublished("the cohort commitment"))?;
        let size = published.cohort_size.ok_or(VerifyError::NotPublished("the cohort size"))?;
        let drawn = parse_entrants(entrants)?;
        draw::verify_draw(
            published.sale_id,
            published.batch_no,
            &seed,
            &published.draw_commitment,
            committed,
            size,
            &drawn,
        )?;
        let root = flashsale_core::unhex32(committed).ok_or(VerifyError::BadField("cohort_commitment"))?;
        let places = drawn.iter().zip(1..).map(|(leaf, place)| (*leaf, place)).collect();
        Ok(Cohort { published: published.clone(), seed, root, drawn, places })
    }

    /// Buyers in the cohort.
    pub fn size(&self) -> u64 {
        u64::try_from(self.places.len()).unwrap_or(u64::MAX)
    }

    /// The buyer's leaf in this batch.
    fn leaf(&self, buyer: &Buyer) -> Leaf {
        draw::leaf(self.published.sale_id, self.published.batch_no, &buyer.user, &buyer.receipt)
    }

    /// The buyer's drawn place (1-based), if they are in the cohort. A lookup: cheap enough to
    /// check every buyer of a million.
    pub fn place_of(&self, buyer: &Buyer) -> Option<u64> {
        self.places.get(&self.leaf(buyer)).copied()
    }

    /// The buyer's entry with its inclusion proof, checked against the cohort commitment.
    pub fn entry(&self, buyer: &Buyer) -> Result<Entry, VerifyError> {
        let leaf = self.leaf(buyer);
        let entry = draw::find_entrant(&self.seed, &self.drawn, &leaf).ok_or(VerifyError::NotInCohort)?;
        if !entry.proof.verify(&leaf, &self.root) {
            return Err(VerifyError::NotInCohort);
        }
        Ok(entry)
    }
}

/// Checks the published draw and its entrants (the `/draw/entrants` text), and finds `buyer`'s
/// place with its inclusion proof (checked against the cohort commitment).
pub fn verify(published: &PublishedDraw, entrants: &str, buyer: Option<&Buyer>) -> Result<Verdict, VerifyError> {
    let cohort = Cohort::verify(published, entrants)?;
    let entry = buyer.map(|buyer| cohort.entry(buyer)).transpose()?;
    Ok(Verdict { cohort_size: cohort.size(), entry })
}
