//! A `redis-server` of a test's own, for fault tests: started on a free port in a directory of
//! its own, killed (SIGKILL, by its process id, never by name) and restarted from whatever it
//! left on disk, and stopped when the guard is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` started by this test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A TCP port nothing listens on right now (the OS picks it; a race with another process taking
/// it before the server starts is possible but harmless: the start fails loudly).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts `redis-server` on a free port with `noeviction`, its files in a new temporary
    /// directory, and `extra` arguments (`["--appendonly", "yes"]`, …).
    ///
    /// # Panics
    /// When `redis-server` cannot be started or does not answer within 10 s.
    pub fn start(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(), extra)
    }

    /// As [`RedisServer::start`], on `port`.
    ///
    /// # Panics
    /// When `redis-server` cannot be started or does not answer within 10 s.
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("flashsale-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut server = RedisServer { port, dir, extra: extra.iter().map(|s| (*s).to_owned()).collect(), child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--maxmemory-policy", "noeviction", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut conn) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The directory the server keeps its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed) and waits for it to die.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the redis-server this test started");
            child.wait().expect("reap it");
        }
    }

    /// Starts the server again (after [`RedisServer::kill`]) on the same port and directory.
    pub fn restart(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Kills the server and starts it again on the same port and directory, so it loads what it
    /// had written to disk (a new process: a new `run_id`).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
