//! `flashsale-verify`: checks a batch's pre-queue draw against what the server published.
//!
//! ```text
//! flashsale-verify --url https://shop.example --sale 42 --batch 1 [--buyer ID --receipt HEX]
//! flashsale-verify --draw draw.json --entrants entrants.txt [--buyer ID --receipt HEX]
//! ```
//!
//! Exit status 0: the draw verifies (and the buyer is in it, at the place printed); 1: it does
//! not, and why; 2: it could not be checked (not published yet, unreachable, unreadable).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use flashsale_queue::draw::PublishedDraw;
use flashsale_verify::{Buyer, VerifyError, verify};

/// Checks a pre-queue draw: the seed against its commitment, the cohort against its commitment,
/// the order against the seed, and a buyer's place with its inclusion proof.
#[derive(Debug, Parser)]
#[command(name = "flashsale-verify", version)]
struct Args {
    /// The shop's base URL (the draw is read from /sales/{sale}/batches/{batch}/draw[/entrants]).
    #[arg(long, requires_all = ["sale", "batch"], conflicts_with_all = ["draw", "entrants"])]
    url: Option<String>,
    #[arg(long)]
    sale: Option<i64>,
    #[arg(long)]
    batch: Option<i64>,
    /// The draw document, saved (instead of --url).
    #[arg(long, requires = "entrants")]
    draw: Option<std::path::PathBuf>,
    /// The entrants document, saved (instead of --url).
    #[arg(long, requires = "draw")]
    entrants: Option<std::path::PathBuf>,
    /// Your buyer id.
    #[arg(long, requires = "receipt")]
    buyer: Option<String>,
    /// Your `draw_receipt`, as the queue showed it.
    #[arg(long, requires = "buyer")]
    receipt: Option<String>,
}

async fn documents(args: &Args) -> anyhow::Result<(PublishedDraw, String)> {
    if let (Some(draw), Some(entrants)) = (&args.draw, &args.entrants) {
        let draw = std::fs::read_to_string(draw).with_context(|| format!("reading {}", draw.display()))?;
        let entrants = std::fs::read_to_string(entrants).with_context(|| format!("reading {}", entrants.display()))?;
        return Ok((serde_json::from_str(&draw).context("the draw document")?, entrants));
    }
    let (Some(url), Some(sale), Some(batch)) = (&args.url, args.sale, args.batch) else {
        anyhow::bail!("give --url with --sale and --batch, or --draw with --entrants");
    };
    let base = format!("{}/sales/{sale}/batches/{batch}/draw", url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let draw = client.get(&base).send().await?.error_for_status()?.json().await.context("the draw document")?;
    let entrants = client.get(format!("{base}/entrants")).send().await?.error_for_status()?.text().await?;
    Ok((draw, entrants))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (draw, entrants) = match documents(&args).await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("cannot check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let buyer = match (&args.buyer, &args.receipt) {
        (Some(user), Some(receipt)) => match Buyer::new(user, receipt) {
            Ok(buyer) => Some(buyer),
            Err(e) => {
                eprintln!("cannot check: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    match verify(&draw, &entrants, buyer.as_ref()) {
        Ok(verdict) => {
            println!("seed matches the commitment {}", draw.draw_commitment);
            println!(
                "cohort of {} matches the commitment {}",
                verdict.cohort_size,
                draw.cohort_commitment.as_deref().unwrap_or_default()
            );
            println!("order follows the seed: verified");
            if let Some(entry) = verdict.entry {
                println!(
                    "buyer {} is in the cohort at place {} (rank {}, leaf {}, proof of {} hashes verified)",
                    args.buyer.as_deref().unwrap_or_default(),
                    entry.place,
                    entry.rank,
                    entry.leaf,
                    entry.proof.path.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ (VerifyError::NotPublished(_) | VerifyError::BadEntrant { .. } | VerifyError::BadField(_))) => {
            eprintln!("cannot check: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("DOES NOT VERIFY: {e}");
            ExitCode::from(1)
        }
    }
}
