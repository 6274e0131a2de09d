//! Reservations per second through the crate's API at saturation.
//!
//! `cargo run --release -p flashsale-inventory --example reserve_bench -- [concurrency] [seconds] [shared|pool] [queue|codes]`
//!
//! Opens a batch of 100,000,000 units under a fresh key prefix, then `concurrency` tasks reserve
//! one unit each, as distinct buyers with distinct admission tickets, until the time is up. Prints
//! reservations per second. `codes`: every buyer holds a priority code (tickets from
//! `Ticket::FIRST_PRIORITY`) and the whole stock is the codes' allotment, so each call takes the
//! allotment's path through `reserve.lua`; `scripts/bench-reserve.sh` runs it next to `redis-benchmark` driving
//! the same Lua script, so the two numbers come from one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flashsale_core::{BatchNo, KeySpace, SaleId, Units, UserId};
use flashsale_inventory::{Inventory, LedgerSpec, ReserveRequest, Reserved};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let concurrency: usize = args.get(1).map_or(Ok(64), |a| a.parse())?;
    let seconds: u64 = args.get(2).map_or(Ok(10), |a| a.parse())?;
    let mode = args.get(3).cloned().unwrap_or_else(|| "shared".to_owned());
    let codes = args.get(4).is_some_and(|t| t == "codes");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());

    let mut config = deadpool_redis::Config::from_url(&url);
    config.pool = Some(deadpool_redis::PoolConfig::new(concurrency));
    let pool = config.create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    flashsale_inventory::scripts::load_all(&flashsale_redis::Redis::pooled(pool.clone())).await?;
    let redis = match mode.as_str() {
        "pool" => flashsale_redis::Redis::pooled(pool.clone()),
        _ => flashsale_redis::Redis::shared(pool.clone(), &url, Duration::from_secs(5)).await?,
    };
    let prefix = format!("bench-reserve-{}", std::process::id());
    let inventory = Inventory::new(redis, KeySpace::new(prefix.clone()));
    let (sale, batch) = (SaleId::try_from(1)?, BatchNo::FIRST);
    let total = Units::new(100_000_000);
    let allotment = if codes {
        flashsale_inventory::Allotment { units: total, until_ms: i64::MAX / 2 }
    } else {
        flashsale_inventory::Allotment::NONE
    };
    let spec = LedgerSpec {
        total,
        per_user_limit: Units::new(5),
        opens_at_ms: 0,
        closes_at_ms: None,
        paused: false,
        closed: false,
        epoch: flashsale_core::Epoch::FIRST,
        allotment,
    };
    inventory.open_batch(sale, batch, spec).await?;

    let first_ticket = if codes { flashsale_core::Ticket::FIRST_PRIORITY.get() } else { 1 };
    let next_ticket = Arc::new(AtomicU64::new(first_ticket));
    let reserved = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (inventory, next_ticket, reserved) = (inventory.clone(), next_ticket.clone(), reserved.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
                    let user = UserId::try_from(format!("u{ticket}")).expect("short id");
                    let request = ReserveRequest {
                        user: &user,
                        units: Units::new(1),
                        ticket: flashsale_core::Ticket(ticket),
                        step: flashsale_core::AdmissionStep(0),
                        window_ms: 600_000,
                        claim: None,
                    };
                    match inventory.reserve(sale, batch, request).await {
                        Ok(Reserved::Reserved { .. }) => {
                            reserved.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected outcome {other:?}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = reserved.load(Ordering::Relaxed);
    let snapshot = inventory.snapshot(sale, batch).await?.ok_or("ledger vanished")?;
    assert!(snapshot.balances() && snapshot.reserved.get() == u32::try_from(count)?, "{snapshot:?}");
    println!(
        "mode={mode} tickets={} concurrency={concurrency} reservations={count} seconds={elapsed:.2} per_second={:.0}",
        if codes { "codes" } else { "queue" },
        count as f64 / elapsed
    );

    // Remove the bench's keys.
    let mut conn = pool.get().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
    }
    Ok(())
}
