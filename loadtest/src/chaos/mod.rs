//! `chaos`: a sale played while a fault is injected into processes the harness starts itself,
//! then every invariant checked, and what buyers saw reported.
//!
//! Each scenario is a line of data ([`SCENARIOS`]): the fault, when it strikes (seconds after the
//! sale starts; the sale opens at 3 s), and whether CI runs it. For each, the harness starts a
//! `redis-server` and one or two `flashsale` servers of its own on free ports (a database of its
//! own on the PostgreSQL of `--database-url`), plays the `smoke` sale at a smaller size against it with
//! `outages` on (a buyer whose request gets no answer tries again a second later), strikes at the
//! set moment, and lets the sale finish. The checks are the sale's own (no oversell, no
//! undersell, ledger balanced, Redis = PostgreSQL, per-user limit, one order per key, every buyer
//! reached an outcome, the pre-queue's draw, admission order) plus the server's recovery. The
//! processes are stopped by their own ids and the database dropped, whatever the outcome.
//!
//! - [`procs`]: the `redis-server` and `flashsale` processes.

pub mod procs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::checks::Report;
use crate::client::Client;
use crate::sale::{self, SaleOptions};
use procs::{PostgresProc, RedisProc, ServerProc};

/// A fault a scenario injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The server is killed (SIGKILL) and started again a second later.
    KillServer,
    /// `FLUSHALL`: Redis loses everything, without restarting.
    FlushAll,
    /// Redis shut down without saving and started again empty.
    RedisRestartEmpty,
    /// Redis killed and started again from an append-only file missing its last second of
    /// writes: a stale Redis (as after a failover to a lagging replica).
    RedisStaleAof,
    /// `CLIENT PAUSE … ALL` for three seconds: Redis accepts connections and answers nothing.
    RedisPause,
    /// `SCRIPT FLUSH`: every loaded Lua script forgotten.
    ScriptFlush,
    /// The server frozen (SIGSTOP) for ten seconds, then let go (SIGCONT).
    FreezeServer,
    /// PostgreSQL unreachable for ten seconds: a proxy between the server and PostgreSQL drops
    /// every connection and refuses new ones (what the server sees of a stopped database).
    PostgresDown,
    /// Two hundred connections held open by clients that send nothing or trickle their headers
    /// a byte a second, for fifteen seconds, beside the buyers.
    SlowClients,
    /// The server's machine clock 30 s fast for the whole sale (libfaketime preloaded): every
    /// decision must still be made by Redis's clock.
    ClockSkew,
    /// Two instances behind the buyers; one is killed (SIGKILL) and stays down: the other
    /// finishes the sale, releasing what the dead one left half done.
    KillInstance,
    /// Two instances; Redis is flushed while the harness holds the orders table, so the first
    /// instance to rebuild the batch stops inside its rebuild, holding the batch's row lock; it
    /// is frozen (SIGSTOP) there for ten seconds. PostgreSQL ends the frozen transaction (the
    /// idle-in-transaction bound), the other instance rebuilds, and the frozen one wakes to a
    /// rebuild that is no longer its own.
    FreezeDuringRebuild,
    /// PostgreSQL itself stopped (`-m immediate`: SIGQUIT to the postmaster) for ten seconds and
    /// started again, on a cluster of the scenario's own: every session cut, crash recovery.
    PostgresStopped,
    /// No process breaks: the opening wave's payments land at their orders' deadlines, up to
    /// 400 ms either side, racing the expiry (in PostgreSQL and in Redis).
    PaymentsAtDeadline,
}

impl Fault {
    /// How long the fault is held, for the ones that last (the end is marked on the charts).
    fn lasts_secs(self) -> Option<f64> {
        match self {
            Fault::KillServer => Some(1.0),
            Fault::RedisPause => Some(3.0),
            Fault::FreezeServer | Fault::PostgresDown | Fault::FreezeDuringRebuild | Fault::PostgresStopped => {
                Some(10.0)
            }
            Fault::SlowClients => Some(15.0),
            Fault::FlushAll
            | Fault::RedisRestartEmpty
            | Fault::RedisStaleAof
            | Fault::ScriptFlush
            | Fault::ClockSkew
            | Fault::KillInstance
            | Fault::PaymentsAtDeadline => None,
        }
    }

    /// How many `flashsale` instances the scenario runs (buyers' requests go to each in turn).
    fn instances(self) -> usize {
        match self {
            Fault::KillInstance | Fault::FreezeDuringRebuild => 2,
            _ => 1,
        }
    }
}

/// One scenario: a fault at a moment.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub fault: Fault,
    /// Seconds after the sale starts (it opens at 3 s and sells out within seconds).
    pub at_secs: f64,
    /// Part of the short subset `.ci/run` plays.
    pub in_ci: bool,
}

/// The matrix.
pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "server-kill", fault: Fault::KillServer, at_secs: 4.5, in_ci: true },
    Scenario { name: "redis-flushall", fault: Fault::FlushAll, at_secs: 4.5, in_ci: false },
    Scenario { name: "redis-restart-empty", fault: Fault::RedisRestartEmpty, at_secs: 4.5, in_ci: true },
    Scenario { name: "redis-stale-aof", fault: Fault::RedisStaleAof, at_secs: 5.0, in_ci: true },
    Scenario { name: "redis-pause", fault: Fault::RedisPause, at_secs: 4.5, in_ci: false },
    Scenario { name: "script-flush", fault: Fault::ScriptFlush, at_secs: 4.5, in_ci: false },
    Scenario { name: "server-freeze", fault: Fault::FreezeServer, at_secs: 4.5, in_ci: false },
    Scenario { name: "postgres-down", fault: Fault::PostgresDown, at_secs: 4.5, in_ci: false },
    Scenario { name: "slow-clients", fault: Fault::SlowClients, at_secs: 2.0, in_ci: false },
    Scenario { name: "clock-skew", fault: Fault::ClockSkew, at_secs: 0.0, in_ci: false },
    Scenario { name: "instance-kill", fault: Fault::KillInstance, at_secs: 4.5, in_ci: false },
    Scenario { name: "rebuild-freeze", fault: Fault::FreezeDuringRebuild, at_secs: 4.5, in_ci: false },
    Scenario { name: "postgres-stopped", fault: Fault::PostgresStopped, at_secs: 4.5, in_ci: false },
    // The opening wave orders at about 3–4 s; its 30 s payment windows end about then.
    Scenario { name: "payments-at-deadline", fault: Fault::PaymentsAtDeadline, at_secs: 33.5, in_ci: false },
];

/// How a chaos run is set up.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The scenarios to play (by name); empty: all, or the CI subset with `ci`.
    pub only: Vec<String>,
    pub ci: bool,
    /// The `flashsale` binary (default: beside this harness's own).
    pub server_bin: PathBuf,
    /// The `redis-server` binary.
    pub redis_bin: String,
    /// A PostgreSQL database URL; each scenario creates (and drops) a database of its own on
    /// that server.
    pub database_url: String,
    pub admin_token: String,
    pub jwt_secret: String,
    pub payment_secret: String,
    pub seed: u64,
    /// Write the results as JSON here.
    pub report_path: Option<String>,
    /// Write each scenario's HTML report (charts over time, the fault marked) into this
    /// directory, as `<scenario>.html`.
    pub html_dir: Option<PathBuf>,
}

/// The sale each scenario plays: `smoke`'s, smaller.
fn sale_options(opts: &ChaosOptions, database_url: &str) -> SaleOptions {
    SaleOptions {
        scenario: "chaos",
        buyers: 600,
        stock: 60,
        admission_rate: 100,
        opens_in_secs: 3,
        early_window_secs: 3,
        duration_secs: 180,
        seed: opts.seed,
        payment_secret: opts.payment_secret.clone(),
        database_url: database_url.to_owned(),
        outages: true,
        ..SaleOptions::smoke()
    }
}

/// Plays the chosen scenarios one after another; one report for all.
pub async fn run(opts: &ChaosOptions) -> anyhow::Result<Report> {
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| if opts.only.is_empty() { !opts.ci || s.in_ci } else { opts.only.iter().any(|n| n == s.name) })
        .collect();
    anyhow::ensure!(!chosen.is_empty(), "no scenario is called {:?}", opts.only);
    let mut report = Report::new("chaos");
    let mut results = Vec::new();
    for scenario in chosen {
        let started = Instant::now();
        let outcome = play(opts, scenario).await;
        let played = match outcome {
            Ok(played) => played,
            Err(e) => {
                let detail = format!("the scenario could not be played: {e:#}");
                results.push(serde_json::json!({ "scenario": scenario.name, "passed": false, "detail": detail }));
                report.check(scenario.name, false, detail);
                continue;
            }
        };
        results.push(serde_json::json!({
            "scenario": scenario.name,
            "fault": format!("{:?}", scenario.fault),
            "at_secs": scenario.at_secs,
            "passed": played.passed(),
            "checks": played.checks.iter().map(|c| serde_json::json!({ "name": c.name, "passed": c.passed, "detail": c.detail })).collect::<Vec<_>>(),
            "notes": played.notes.iter().map(|(name, value)| (name.to_string(), serde_json::Value::String(value.clone()))).collect::<serde_json::Map<_, _>>(),
        }));
        for (name, value) in played.notes.into_iter().filter(|(name, _)| SHOWN.contains(name)) {
            report.notes.push((name, format!("{}: {value}", scenario.name)));
        }
        let failed: Vec<String> =
            played.checks.iter().filter(|c| !c.passed).map(|c| format!("{} ({})", c.name, c.detail)).collect();
        let detail = if failed.is_empty() {
            format!(
                "{} checks hold after {:?} at {} s ({:.0} s)",
                played.checks.len(),
                scenario.fault,
                scenario.at_secs,
                started.elapsed().as_secs_f64()
            )
        } else {
            format!("failed: {}", failed.join("; "))
        };
        report.check(scenario.name, failed.is_empty(), detail);
    }
    if let Some(path) = &opts.report_path {
        let document = serde_json::json!({ "scenarios": results, "machine": crate::progress::machine() });
        std::fs::write(path, serde_json::to_vec_pretty(&document)?).with_context(|| format!("writing {path}"))?;
    }
    Ok(report)
}

/// The sale's measurements a chaos report shows: what buyers saw, and the recovery.
const SHOWN: &[&str] = &[
    "fault",
    "outcomes",
    "sold_out_at",
    "everyone_told_within",
    "requests_unanswered",
    "answers",
    "last_failure_at",
    "fault_lasted",
    "ready_again_after",
    "server_saw",
    "order",
];

/// The server's own counts of what it detected and repaired (its `/metrics`, since it last
/// started).
async fn server_saw(base: &str) -> String {
    const COUNTED: &[&str] = &[
        "redis_restarts_detected_total",
        "inventory_fences_total",
        "inventory_rebuilds_total",
        "orders_refused_by_database_total",
        "reservations_orphaned_total",
    ];
    let Ok(text) = async { reqwest::get(format!("{base}/metrics")).await?.text().await }.await else {
        return "metrics unavailable".to_owned();
    };
    let total = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mut saw: Vec<String> =
        COUNTED.iter().map(|name| format!("{} {}", name.trim_end_matches("_total"), total(name))).collect();
    // The clock offset is a gauge that may be negative.
    if let Some(offset) = text.lines().find_map(|l| l.strip_prefix("clock_offset_ms ")) {
        saw.push(format!("clock offset {offset} ms"));
    }
    saw.join(", ")
}

/// What a scenario strikes at.
struct Deployment<'a> {
    redis: &'a mut RedisProc,
    servers: &'a mut Vec<ServerProc>,
    /// Between the servers and PostgreSQL.
    proxy: &'a flashsale_testkit::TcpProxy,
    /// The scenario's own PostgreSQL cluster, when it stops PostgreSQL itself.
    postgres: Option<&'a mut PostgresProc>,
    /// The scenario's database, reached directly (not through the proxy).
    database_url: &'a str,
}

/// What one scenario measured, beside the sale's checks.
struct Struck {
    /// What the strike found or did, where it had to look (which instance was frozen).
    detail: Option<String>,
    /// How long the fault lasted (a kill: until the restarted server was up; a freeze or an
    /// outage: its set length; a flush: the command).
    lasted: Duration,
    /// From the fault's end until the server answered `/readyz` 200 again.
    ready_again_after: Duration,
}

/// One scenario, start to cleanup.
async fn play(opts: &ChaosOptions, scenario: &Scenario) -> anyhow::Result<Report> {
    let work = std::env::temp_dir().join(format!("flashsale-chaos-{}-{}", std::process::id(), scenario.name));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let database = format!("flashsale_chaos_{}_{}", std::process::id(), scenario.name.replace('-', "_"));
    // A scenario that stops PostgreSQL itself gets a cluster of its own.
    let mut own_postgres = match scenario.fault {
        Fault::PostgresStopped => Some(PostgresProc::start(&work.join("postgres")).await?),
        _ => None,
    };
    let postgres_base = own_postgres.as_ref().map_or_else(|| opts.database_url.clone(), |p| p.url("postgres"));
    let database_url = with_database(&postgres_base, &database)?;
    let result = async {
        let appendonly = scenario.fault == Fault::RedisStaleAof;
        let mut redis = RedisProc::start(&opts.redis_bin, &work.join("redis"), appendonly).await?;
        // The server reaches PostgreSQL through a proxy the scenario can cut; the checks do not.
        let postgres = postgres_addr(&database_url).await?;
        let proxy = flashsale_testkit::TcpProxy::start(postgres).await;
        let server_database_url = through(&database_url, proxy.addr())?;
        // The secrets come from the environment the server inherits, as the harness's own do
        // (unset: both in dev mode, with the same well-known values).
        let env = vec![
            ("REDIS_URL".to_owned(), redis.url()),
            ("FLASHSALE_REDIS_PREFIX".to_owned(), "chaos".to_owned()),
            ("FLASHSALE_RATE_LIMIT_PER_IP".to_owned(), "0".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        let mut env = env;
        if scenario.fault == Fault::ClockSkew {
            // libfaketime preloaded into the server itself (not the `faketime` wrapper, which
            // would leave the server a grandchild no kill by process id reaches).
            env.push(("LD_PRELOAD".to_owned(), libfaketime()?));
            env.push(("FAKETIME".to_owned(), "+30s".to_owned()));
        }
        // One after another: the first creates the database and migrates it.
        let mut servers = Vec::new();
        for n in 0..scenario.fault.instances() {
            let mut env = env.clone();
            // Named, so the scenario can tell the instances' sessions apart in PostgreSQL.
            env.push(("DATABASE_URL".to_owned(), named(&server_database_url, &format!("chaos-{n}"))?));
            servers.push(ServerProc::start(&opts.server_bin, env, &work.join(format!("flashsale-{n}.log"))).await?);
        }
        let client = servers[1..]
            .iter()
            .fold(Client::new(&servers[0].url(), &opts.admin_token, &opts.jwt_secret), |client, server| {
                client.and_instance(&server.url())
            });
        let mut sale_opts = sale_options(opts, &database_url);
        if scenario.fault == Fault::PaymentsAtDeadline {
            sale_opts.pay_at_deadline_ms = Some(400);
        }
        sale_opts.marks.push((scenario.at_secs, format!("{} strikes", scenario.name)));
        if let Some(lasts) = scenario.fault.lasts_secs() {
            sale_opts.marks.push((scenario.at_secs + lasts, "ends".to_owned()));
        }
        if let Some(dir) = &opts.html_dir {
            std::fs::create_dir_all(dir)?;
            sale_opts.html_path = Some(dir.join(format!("{}.html", scenario.name)).display().to_string());
        }
        let sale_started = Instant::now();
        let (sale, struck) = tokio::join!(sale::run(&client, &sale_opts), async {
            let at = sale_started + Duration::from_secs_f64(scenario.at_secs);
            let mut deployment = Deployment {
                redis: &mut redis,
                servers: &mut servers,
                proxy: &proxy,
                postgres: own_postgres.as_mut(),
                database_url: &database_url,
            };
            strike(scenario.fault, at, &mut deployment).await
        });
        let mut report = sale?;
        let struck = struck?;
        let mut saw = Vec::new();
        for (n, server) in servers.iter().enumerate().filter(|(_, s)| s.is_running()) {
            let seen = server_saw(&server.url()).await;
            saw.push(if servers.len() > 1 { format!("instance {n}: {seen}") } else { seen });
        }
        report.note("server_saw", saw.join("; "));
        report.note("fault_lasted", format!("{} ms", struck.lasted.as_millis()));
        report.note("ready_again_after", format!("{} ms after the fault ended", struck.ready_again_after.as_millis()));
        if let Some(what) = struck.detail {
            report.note("fault", what);
        }
        for server in &mut servers {
            server.kill().await?;
        }
        redis.kill().await?;
        Ok(report)
    }
    .await;
    match own_postgres.as_mut() {
        Some(postgres) => postgres.stop_immediate().await?,
        None => drop_database(&opts.database_url, &database).await,
    }
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Waits until `at`, injects `fault`, and measures how long the server takes to be ready again.
async fn strike(fault: Fault, at: Instant, deployment: &mut Deployment<'_>) -> anyhow::Result<Struck> {
    let Deployment { redis, servers, proxy, postgres, database_url } = deployment;
    let mut detail = None;
    // For a stale restart: the append-only file's size a second before the fault.
    let mut sizes: Vec<(Instant, u64)> = Vec::new();
    while Instant::now() < at {
        if fault == Fault::RedisStaleAof {
            if let Some(size) = redis.aof_tail().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len()) {
                sizes.push((Instant::now(), size));
            }
        }
        tokio::time::sleep(Duration::from_millis(100).min(at.saturating_duration_since(Instant::now()))).await;
    }
    let struck_at = Instant::now();
    match fault {
        Fault::KillServer => {
            servers[0].kill().await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            servers[0].restart().await?;
        }
        Fault::KillInstance => servers[1].kill().await?,
        Fault::FreezeDuringRebuild => detail = Some(freeze_during_rebuild(redis, servers, database_url).await?),
        Fault::FlushAll => {
            let () = redis::cmd("FLUSHALL").query_async(&mut redis.connection().await?).await?;
        }
        Fault::RedisRestartEmpty => {
            let _: Result<(), _> =
                redis::cmd("SHUTDOWN").arg("NOSAVE").query_async(&mut redis.connection().await?).await;
            redis.restart().await?;
        }
        Fault::RedisStaleAof => {
            let tail = redis.aof_tail().context("Redis has no append-only file")?;
            let second_ago = struck_at - Duration::from_secs(1);
            let size = sizes.iter().rev().find(|(t, _)| *t <= second_ago).map_or(0, |(_, size)| *size);
            redis.kill().await?;
            let file = std::fs::OpenOptions::new().write(true).open(&tail)?;
            file.set_len(size.min(file.metadata()?.len()))?;
            redis.restart().await?;
        }
        Fault::RedisPause => {
            let () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(3_000)
                .arg("ALL")
                .query_async(&mut redis.connection().await?)
                .await?;
        }
        Fault::ScriptFlush => {
            let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut redis.connection().await?).await?;
        }
        Fault::FreezeServer => {
            servers[0].signal("STOP").await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            servers[0].signal("CONT").await?;
        }
        Fault::PostgresDown => {
            proxy.cut();
            tokio::time::sleep(Duration::from_secs(10)).await;
            proxy.restore();
        }
        Fault::PostgresStopped => {
            let postgres = postgres.as_mut().context("the scenario has no PostgreSQL of its own")?;
            postgres.stop_immediate().await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            postgres.restart().await?;
        }
        // The sale's buyers are the fault: nothing to do but mark the moment.
        Fault::PaymentsAtDeadline => {}
        Fault::SlowClients => slow_clients(servers[0].port, 200, Duration::from_secs(15)).await,
        // Struck at the start, by the wrapper the server runs under.
        Fault::ClockSkew => {}
    }
    let lasted = struck_at.elapsed();
    // The instances still running (a killed instance that stays down is not waited for).
    let mut ready_again_after = Duration::ZERO;
    for server in servers.iter_mut().filter(|s| s.is_running()) {
        ready_again_after = ready_again_after.max(server.ready_within(Duration::from_secs(60)).await?);
    }
    Ok(Struck { detail, lasted, ready_again_after })
}

/// [`Fault::FreezeDuringRebuild`]: holds the orders table, flushes Redis, waits for an instance's
/// rebuild to stop on the table (it holds the batch's row lock by then), freezes that instance,
/// lets the table go, and lets the instance go ten seconds later. Returns which instance froze.
async fn freeze_during_rebuild(
    redis: &RedisProc,
    servers: &[ServerProc],
    database_url: &str,
) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    // Watched from a connection of its own: inside a transaction, pg_stat_activity is a
    // snapshot taken at its first read.
    let mut watch = sqlx::PgConnection::connect(database_url).await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '10s'").execute(&mut *tx).await?;
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await?;
    let () = redis::cmd("FLUSHALL").query_async(&mut redis.connection().await?).await?;
    // The rebuild's read of the batch's orders (flashsale_order::OrderBook::batch_orders), waiting
    // on the table: the instance holds the batch's row lock and has bumped its epoch.
    let deadline = Instant::now() + Duration::from_secs(20);
    let instance = loop {
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND application_name LIKE 'chaos-%' \
             AND query LIKE 'SELECT reservation_id, user_id, quantity, status, expires_at, ticket FROM orders%' LIMIT 1",
        )
        .fetch_optional(&mut watch)
        .await?;
        if let Some(name) = waiting {
            break name.trim_start_matches("chaos-").parse::<usize>()?;
        }
        anyhow::ensure!(Instant::now() < deadline, "no instance started rebuilding within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let frozen = servers.get(instance).context("a session of an instance the scenario did not start")?;
    frozen.signal("STOP").await?;
    tx.commit().await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    frozen.signal("CONT").await?;
    Ok(format!("instance {instance} frozen inside its rebuild, holding the batch's row lock"))
}

/// `clients` connections to the server on `port` held for `hold`: half send nothing, half send
/// a request head a byte a second; each one the server closes is opened again.
async fn slow_clients(port: u16, clients: usize, hold: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let until = Instant::now() + hold;
    let one = |trickle: bool| async move {
        while Instant::now() < until {
            let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let head =
                b"GET /healthz HTTP/1.1\r\nHost: chaos\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            for byte in head.iter().cycle() {
                if Instant::now() >= until {
                    return;
                }
                if trickle && stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                // A second's wait, watching for the server closing the connection.
                let mut buf = [0u8; 512];
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    break;
                }
            }
        }
    };
    futures::future::join_all((0..clients).map(|i| one(i % 2 == 0))).await;
}

/// Debian's libfaketime (package `faketime`).
fn libfaketime() -> anyhow::Result<String> {
    let candidates =
        ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| (*p).to_owned())
        .context("libfaketime is not installed (apt-get install faketime)")
}

/// The address PostgreSQL listens on, from a database URL.
async fn postgres_addr(database_url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let url = reqwest::Url::parse(database_url)?;
    let host = url.host_str().context("the database URL names no host")?.to_owned();
    let port = url.port().unwrap_or(5432);
    tokio::net::lookup_host((host, port)).await?.next().context("the database host does not resolve")
}

/// `database_url` reaching PostgreSQL through `proxy` instead.
fn through(database_url: &str, proxy: std::net::SocketAddr) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(database_url)?;
    url.set_host(Some(&proxy.ip().to_string()))?;
    url.set_port(Some(proxy.port())).map_err(|()| anyhow::anyhow!("cannot set the proxy's port"))?;
    Ok(url.to_string())
}

/// `database_url` with the sessions it opens named `name` (PostgreSQL's `application_name`).
fn named(database_url: &str, name: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(database_url)?;
    url.query_pairs_mut().append_pair("application_name", name);
    Ok(url.to_string())
}

/// `base` (a PostgreSQL URL) naming `database` instead.
fn with_database(base: &str, database: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(base).context("--database-url is not a URL")?;
    url.set_path(database);
    Ok(url.to_string())
}

/// Drops the scenario's database (the server created it); errors are only reported.
async fn drop_database(base: &str, database: &str) {
    use sqlx::Connection;
    let dropped = async {
        let mut conn = sqlx::PgConnection::connect(&with_database(base, "postgres")?).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).execute(&mut conn).await?;
        anyhow::Ok(())
    };
    if let Err(e) = dropped.await {
        eprintln!("chaos: could not drop database {database}: {e:#}");
    }
}

/// The `flashsale` binary next to this one (both are built into the same target directory).
pub fn default_server_bin() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default().join("flashsale")
}
