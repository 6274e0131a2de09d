//! The processes a chaos scenario starts and breaks: a `redis-server` and a `flashsale` server
//! of its own, on free ports. Each is killed by its own process id when the scenario ends (or
//! when the harness drops it: `kill_on_drop`); nothing is ever stopped by name.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `redis-server` of the scenario's own, its data in `dir`.
pub struct RedisProc {
    bin: String,
    pub port: u16,
    dir: PathBuf,
    appendonly: bool,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts `bin` on a free port, append-only persistence on or off (fsync every write when
    /// on, so a truncated file is exactly "the last writes lost").
    pub async fn start(bin: &str, dir: &Path, appendonly: bool) -> anyhow::Result<RedisProc> {
        std::fs::create_dir_all(dir)?;
        let mut redis =
            RedisProc { bin: bin.to_owned(), port: free_port()?, dir: dir.to_owned(), appendonly, child: None };
        redis.spawn().await?;
        Ok(redis)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--save", "", "--maxmemory-policy", "noeviction", "--appendfsync", "always"])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (install redis-server)", self.bin))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(mut conn) = self.connection().await {
                if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("redis-server on port {} did not answer within 15 s", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A fresh connection (faults are injected over it).
    pub async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url())?.get_multiplexed_async_connection().await?)
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port and directory (whatever its files now hold).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }

    /// The append-only file Redis is appending to now (Redis 7 keeps a directory of parts; the
    /// last "incr" part takes the writes).
    pub fn aof_tail(&self) -> Option<PathBuf> {
        let dir = self.dir.join("appendonlydir");
        let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
            .collect();
        parts.sort();
        parts.pop()
    }
}

/// A `flashsale` server of the scenario's own.
pub struct ServerProc {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl ServerProc {
    /// Starts `bin serve` with `env` (its address chosen here) and waits until `/readyz` answers.
    pub async fn start(bin: &Path, env: Vec<(String, String)>, log: &Path) -> anyhow::Result<ServerProc> {
        let mut server = ServerProc { bin: bin.to_owned(), env, log: log.to_owned(), port: free_port()?, child: None };
        server.spawn().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("FLASHSALE_ADDR", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.ready_within(Duration::from_secs(60)).await.map(|_| ())
    }

    /// How long until `/readyz` answers 200 (an error after `limit`).
    pub async fn ready_within(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let url = format!("{}/readyz", self.url());
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("flashsale exited ({status}); its log: {}", self.log.display());
                }
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("flashsale was not ready within {limit:?}; its log: {}", self.log.display())
    }

    /// SIGKILL (a crash), and wait for it to be gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Started and not killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server, by its process id.
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.as_ref().and_then(Child::id).context("the server is not running")?;
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// Starts it again on the same port, as a supervisor would after a crash.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }
}

/// A PostgreSQL cluster of the scenario's own (`initdb` into a directory of its own), on a free
/// port, so that stopping the database server itself breaks nothing else.
pub struct PostgresProc {
    bin_dir: PathBuf,
    dir: PathBuf,
    pub port: u16,
    /// PostgreSQL refuses to run as root: run as root, the cluster runs as the `postgres` user.
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PostgresProc {
    /// `initdb` (trust authentication, superuser `postgres`) into `dir` and start it.
    pub async fn start(dir: &Path) -> anyhow::Result<PostgresProc> {
        let bin_dir = postgres_bin_dir()?;
        std::fs::create_dir_all(dir)?;
        let owner = if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0 {
            let owner = system_user("postgres").context("running as root, the cluster needs a postgres user")?;
            std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1))?;
            Some(owner)
        } else {
            None
        };
        let mut postgres = PostgresProc { bin_dir, dir: dir.to_owned(), port: free_port()?, owner, child: None };
        let mut initdb = postgres.command("initdb");
        initdb.arg("-D").arg(postgres.data()).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        let out = initdb.stdout(Stdio::null()).stderr(Stdio::piped()).output().await?;
        anyhow::ensure!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        postgres.spawn().await?;
        Ok(postgres)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of PostgreSQL's programs, as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("postgres.log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-k")
            .arg(&self.dir)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if <sqlx::PgConnection as sqlx::Connection>::connect(&self.url("postgres")).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("postgres on port {} did not accept connections within 30 s", self.port)
    }

    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// An immediate shutdown (what `pg_ctl stop -m immediate` does: SIGQUIT to the postmaster,
    /// by its process id): every session cut, nothing flushed, crash recovery at the next start.
    pub async fn stop_immediate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = child.id().context("postgres already exited")?;
        let status = Command::new("kill").arg("-QUIT").arg(pid.to_string()).status().await?;
        anyhow::ensure!(status.success(), "kill -QUIT {pid} failed");
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop_immediate().await?;
        self.spawn().await
    }
}

impl Drop for PostgresProc {
    /// An immediate shutdown rather than `kill_on_drop`'s SIGKILL, which would leave the
    /// postmaster's children to notice it gone on their own.
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill").arg("-QUIT").arg(pid.to_string()).status();
        }
    }
}

/// The newest installed PostgreSQL's programs (Debian keeps them under /usr/lib/postgresql).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server programs are not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql")
}

/// A system user's (uid, gid), from /etc/passwd.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}
