//! `flashsale-loadtest`: plays scenarios against a running flashsale server and checks that the
//! invariants held, from the outside, through the public API only.
//!
//! # Layout
//! - `main.rs`: the command line.
//! - [`client`]: a thin JSON client for the API (admin token from `FLASHSALE_ADMIN_TOKEN`, the
//!   same variable the server reads).
//! - [`checks`]: named pass/fail checks and their report; any failure exits with code 1.
//! - [`admin_race`]: operations editing one sale at once.
//! - [`queue_smoke`]: the queue end to end: pre-queue cohort, opening, latecomers, admission.
//! - [`order_bench`]: orders per second through the API next to a naive PostgreSQL purchase.
//! - [`pow_bench`]: what a join's proof of work costs the server and a client, by difficulty.
//! - [`naive`]: that naive purchase (row-lock decrement + insert per transaction), also a
//!   scenario of its own (`baseline-naive`).
//! - [`html`]: the self-contained HTML report (inline SVG charts).
//! - [`latency`]: HDR histograms of every request's latency, per step and per second.
//! - [`progress`]: the live progress line, the harness's own CPU use, the machine's description.
//! - [`wire`]: a lean HTTP/1.1 client for the buyers' requests (millions of them).
//! - [`chaos`]: a sale played while a fault strikes processes the harness starts itself.
//! - [`sale`]: the sale-day scenarios (`smoke`, `tuesday-noon`, `run`): a whole sale played
//!   (queue, orders, payments, cancels, lapses, buyers giving up) with a bounded pool, then
//!   checked against the API and PostgreSQL.

mod admin_race;
mod chaos;
mod checks;
mod client;
mod html;
mod latency;
mod naive;
mod order_bench;
mod pow_bench;
mod progress;
mod queue_smoke;
mod sale;
mod streams;
mod wire;

use std::process::ExitCode;

/// The same allocator as the server: the harness shares the machine and should spend little.
/// (For the same reason it runs on one thread: with two, its threads and the server's fought for
/// the two cores, and the server measured a quarter slower.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};

/// Plays scenarios against a running flashsale server and checks the invariants.
#[derive(Debug, Parser)]
#[command(name = "flashsale-loadtest", version)]
struct Cli {
    /// The server's base URL; given several times, instances of one deployment: buyers'
    /// requests go to each in turn, as a load balancer spreads them (not sticky).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: Vec<String>,
    /// Admin bearer token (the server's dev-mode token when unset).
    #[arg(
        long,
        global = true,
        env = "FLASHSALE_ADMIN_TOKEN",
        default_value = "dev-admin-token",
        hide_env_values = true
    )]
    admin_token: String,
    /// HS256 key for the buyers' JWTs (the server's dev-mode key when unset).
    #[arg(
        long,
        global = true,
        env = "FLASHSALE_JWT_SECRET",
        default_value = "dev-jwt-secret-do-not-use-in-production",
        hide_env_values = true
    )]
    jwt_secret: String,
    /// HMAC key of the payment callbacks (the server's dev-mode key when unset).
    #[arg(
        long,
        global = true,
        env = "FLASHSALE_PAYMENT_SECRET",
        default_value = "dev-payment-secret-do-not-use-in-production",
        hide_env_values = true
    )]
    payment_secret: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Many operators edit one sale at once: with a shared If-Match exactly one wins, without
    /// one every edit applies in turn, each is audited, and the ledger stays balanced.
    AdminRace {
        /// Concurrent operators.
        #[arg(long, default_value_t = 50)]
        operators: usize,
    },
    /// The queue end to end: a pre-queue cohort, the opening, latecomers, admission. Needs the
    /// server's per-user rate limit to allow a few requests per buyer (the default does).
    QueueSmoke {
        /// Buyers (half join in the pre-queue, half after the opening).
        #[arg(long, default_value_t = 300)]
        buyers: usize,
        /// Units in the batch.
        #[arg(long, default_value_t = 20)]
        stock: u32,
        /// The server's FLASHSALE_ADMISSION_OVERSUBSCRIPTION, to check admission against.
        #[arg(long, env = "FLASHSALE_ADMISSION_OVERSUBSCRIPTION", default_value_t = 1.2)]
        oversubscription: f64,
    },
    /// Many open event streams on one slowly moving line: what they cost the server (its CPU
    /// from /proc with --server-pid, quiet and then with every stream open). Needs the server's
    /// per-IP rate limit off and `FLASHSALE_EVENT_STREAMS_PER_BUYER` ≥ 1 (the default), and file
    /// descriptors for as many connections on both sides.
    Streams {
        #[arg(long, default_value_t = 5_000)]
        buyers: usize,
        /// Buyers admitted per second while the streams are open (places move, statuses do not).
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        hold: u64,
        /// Seconds measured with the buyers in line and no stream open.
        #[arg(long, default_value_t = 10)]
        quiet: u64,
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// A small sale played whole: a few thousand buyers for a few hundred units, in the
    /// pre-queue and after the opening, admission, orders (some retried on purpose), payments,
    /// cancels and lapses; then the invariants checked against the API and PostgreSQL. Under a
    /// minute; run by CI. Every `run` option applies.
    Smoke(SaleArgs),
    /// The sale the backend exists for: 1,000,000 buyers (most in the last minute before the
    /// opening and the first seconds after it) for 50,000 units. Needs the server's per-IP rate
    /// limit off (FLASHSALE_RATE_LIMIT_PER_IP=0: every buyer comes from this address). Every
    /// `run` option applies.
    TuesdayNoon(SaleArgs),
    /// A sale with every option chosen; the defaults are `smoke`'s.
    Run(SaleArgs),
    /// The naive PostgreSQL-only purchase (one transaction per buyer: row-lock decrement of one
    /// stock row + an insert) for the same buyers and stock, in a scratch database; checks it
    /// sells exactly its stock and reports its rate, to set beside `smoke`'s or `order-bench`'s.
    BaselineNaive {
        #[arg(long, default_value_t = 2_000)]
        buyers: usize,
        #[arg(long, default_value_t = 200)]
        stock: usize,
        /// Transactions in flight at most (PostgreSQL connections: up to 90; keep them and the
        /// server's within the database's `max_connections`, or buyers wait for a connection).
        #[arg(long, default_value_t = 128)]
        connections: usize,
        /// PostgreSQL (the scratch database `flashsale_naive_baseline` is created next to it).
        #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
    },
    /// A sale played while a fault strikes: the harness starts a `redis-server` and a `flashsale`
    /// server of its own (a database of its own on --database-url's PostgreSQL), breaks one at a
    /// set moment, lets the sale finish and checks every invariant. `--url` is not used.
    Chaos {
        /// Play only these scenarios (server-kill, redis-flushall, redis-restart-empty,
        /// redis-stale-aof, redis-pause, script-flush, server-freeze, postgres-down, slow-clients,
        /// clock-skew); default: all.
        #[arg(long)]
        scenario: Vec<String>,
        /// Play the short subset CI runs.
        #[arg(long)]
        ci: bool,
        /// The `flashsale` binary (default: the one beside this harness).
        #[arg(long)]
        server_bin: Option<std::path::PathBuf>,
        /// The `redis-server` binary.
        #[arg(long, default_value = "redis-server")]
        redis_server: String,
        /// PostgreSQL; each scenario creates and drops a database of its own on it.
        #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Write the results (every check and note of every scenario) as JSON here.
        #[arg(long)]
        report: Option<String>,
        /// Write each scenario's HTML report (charts over time, the fault marked) into this
        /// directory.
        #[arg(long)]
        html_dir: Option<std::path::PathBuf>,
    },
    /// What a join's proof of work costs: the server's check, and a client's solve time by
    /// difficulty, measured in Rust on this machine (no server needed).
    PowBench {
        /// Difficulties to measure, in leading zero bits.
        #[arg(long, value_delimiter = ',', default_values_t = [8u8, 12, 16, 18, 20])]
        bits: Vec<u8>,
        /// Challenges solved per difficulty.
        #[arg(long, default_value_t = 40)]
        per_level: u64,
    },
    /// Orders per second end to end at saturation, next to a naive PostgreSQL-only purchase
    /// (row-lock decrement + insert per transaction) run right after. Needs the server's rate
    /// limits off (FLASHSALE_RATE_LIMIT_PER_IP=0).
    OrderBench {
        /// Purchases (and units of stock) for each of the two.
        #[arg(long, default_value_t = 50_000)]
        orders: usize,
        /// Requests (or transactions) in flight at once: buyers who do not wait for each other.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// PostgreSQL for the naive baseline (a scratch database `flashsale_naive_baseline` is
        /// created next to the one named here).
        #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
        /// Measure the API only (for profiling the server).
        #[arg(long)]
        skip_naive: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = cli.url[1..]
        .iter()
        .fold(client::Client::new(&cli.url[0], &cli.admin_token, &cli.jwt_secret), |c, url| c.and_instance(url));
    let report = match cli.scenario {
        Scenario::AdminRace { operators } => admin_race::run(&client, operators).await,
        Scenario::Streams { buyers, rate, hold, quiet, server_pid } => {
            let opts = streams::StreamsOptions { buyers, rate, hold_secs: hold, quiet_secs: quiet, server_pid };
            streams::run(&client, opts).await
        }
        Scenario::QueueSmoke { buyers, stock, oversubscription } => {
            queue_smoke::run(&client, buyers, stock, oversubscription).await
        }
        Scenario::Smoke(args) => sale::run(&client, &args.apply(sale::SaleOptions::smoke(), &cli.payment_secret)).await,
        Scenario::TuesdayNoon(args) => {
            sale::run(&client, &args.apply(sale::SaleOptions::tuesday_noon(), &cli.payment_secret)).await
        }
        Scenario::Run(args) => {
            let base = sale::SaleOptions { scenario: "run", ..sale::SaleOptions::smoke() };
            sale::run(&client, &args.apply(base, &cli.payment_secret)).await
        }
        Scenario::BaselineNaive { buyers, stock, connections, database_url } => {
            naive::run(&database_url, buyers, stock, connections).await
        }
        Scenario::Chaos { scenario, ci, server_bin, redis_server, database_url, seed, report, html_dir } => {
            let opts = chaos::ChaosOptions {
                only: scenario,
                ci,
                server_bin: server_bin.unwrap_or_else(chaos::default_server_bin),
                redis_bin: redis_server,
                database_url,
                admin_token: cli.admin_token.clone(),
                jwt_secret: cli.jwt_secret.clone(),
                payment_secret: cli.payment_secret.clone(),
                seed,
                report_path: report,
                html_dir,
            };
            chaos::run(&opts).await
        }
        Scenario::PowBench { bits, per_level } => pow_bench::run(&bits, per_level),
        Scenario::OrderBench { orders, concurrency, database_url, skip_naive } => {
            let naive = (!skip_naive).then_some(database_url.as_str());
            order_bench::run(&client, &cli.jwt_secret, naive, orders, concurrency).await
        }
    };
    match report {
        Ok(report) => {
            print!("{report}");
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("flashsale-loadtest: scenario aborted: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The options of a sale scenario; each one left out keeps the scenario's own value.
#[derive(Debug, Args)]
struct SaleArgs {
    /// Simulated buyers.
    #[arg(long)]
    buyers: Option<usize>,
    /// Units in the batch.
    #[arg(long)]
    stock: Option<u32>,
    /// Units one buyer may hold.
    #[arg(long)]
    per_user_limit: Option<u32>,
    /// Each buyer asks for 1 to this many units (at most the per-user limit).
    #[arg(long)]
    max_quantity: Option<u32>,
    /// Buyers admitted per second.
    #[arg(long)]
    admission_rate: Option<u32>,
    /// Seconds an admitted buyer has to order.
    #[arg(long)]
    admission_ttl: Option<u32>,
    /// Seconds to pay (30 at least).
    #[arg(long)]
    payment_window: Option<u32>,
    /// Seconds from the start until the sale opens.
    #[arg(long)]
    opens_in: Option<u64>,
    /// How arrivals spread around the opening.
    #[arg(long, value_enum)]
    arrival: Option<sale::Profile>,
    /// Share of buyers arriving in the pre-queue.
    #[arg(long)]
    early: Option<f64>,
    /// Seconds before the opening over which early birds arrive.
    #[arg(long)]
    early_window: Option<u64>,
    /// Seconds after the opening over which the rest arrive.
    #[arg(long)]
    late_window: Option<u64>,
    /// Share of buyers with an order who pay.
    #[arg(long)]
    pay: Option<f64>,
    /// The opening wave's payers pay at their order's deadline, up to this many ms either
    /// side of it (the payment races the expiry); a late one is answered `refund_due`.
    #[arg(long)]
    pay_at_deadline: Option<u32>,
    /// Share who cancel (the rest let the payment window lapse).
    #[arg(long)]
    cancel: Option<f64>,
    /// Share of orders sent twice with the same Idempotency-Key.
    #[arg(long)]
    retry: Option<f64>,
    /// Share of buyers who give up waiting (after a tenth to all of --patience).
    #[arg(long)]
    give_up: Option<f64>,
    /// Seconds the impatient wait at most.
    #[arg(long)]
    patience: Option<u64>,
    /// Share of buyers who follow the queue's event stream (a connection each, outside the pool)
    /// instead of polling.
    #[arg(long)]
    events: Option<f64>,
    /// Requests in flight at most (the harness's connection pool).
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds after which buyers still going count as unfinished (a failed check).
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Also play the same buyers and stock against the naive PostgreSQL-only purchase (in a
    /// scratch database) and report both side by side.
    #[arg(long)]
    naive: bool,
    /// Ask a proof of work of each join, this many leading zero bits (the buyers solve it).
    #[arg(long)]
    join_pow_bits: Option<u8>,
    /// The server's PostgreSQL database, for the checks.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/flashsale")]
    database_url: String,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<String>,
    /// Write a self-contained HTML report (checks, charts over time) here.
    #[arg(long)]
    html: Option<String>,
}

impl SaleArgs {
    /// `base` with every option given here in place of its own.
    fn apply(self, base: sale::SaleOptions, payment_secret: &str) -> sale::SaleOptions {
        sale::SaleOptions {
            buyers: self.buyers.unwrap_or(base.buyers),
            stock: self.stock.unwrap_or(base.stock),
            per_user_limit: self.per_user_limit.unwrap_or(base.per_user_limit),
            max_quantity: self.max_quantity.unwrap_or(base.max_quantity),
            admission_rate: self.admission_rate.unwrap_or(base.admission_rate),
            admission_ttl_secs: self.admission_ttl.unwrap_or(base.admission_ttl_secs),
            payment_window_secs: self.payment_window.unwrap_or(base.payment_window_secs),
            opens_in_secs: self.opens_in.unwrap_or(base.opens_in_secs),
            profile: self.arrival.unwrap_or(base.profile),
            early: self.early.unwrap_or(base.early),
            early_window_secs: self.early_window.unwrap_or(base.early_window_secs),
            late_window_secs: self.late_window.unwrap_or(base.late_window_secs),
            pay: self.pay.unwrap_or(base.pay),
            pay_at_deadline_ms: self.pay_at_deadline.or(base.pay_at_deadline_ms),
            cancel: self.cancel.unwrap_or(base.cancel),
            retry: self.retry.unwrap_or(base.retry),
            give_up: self.give_up.unwrap_or(base.give_up),
            patience_secs: self.patience.unwrap_or(base.patience_secs),
            events: self.events.unwrap_or(base.events),
            connections: self.connections.unwrap_or(base.connections),
            duration_secs: self.duration.unwrap_or(base.duration_secs),
            seed: self.seed.unwrap_or(base.seed),
            naive: self.naive || base.naive,
            join_pow_bits: self.join_pow_bits.unwrap_or(base.join_pow_bits),
            payment_secret: payment_secret.to_owned(),
            database_url: self.database_url,
            report_path: self.report,
            html_path: self.html,
            scenario: base.scenario,
            outages: base.outages,
            marks: base.marks,
        }
    }
}
