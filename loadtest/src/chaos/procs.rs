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
