//! A Redis Cluster of the test's own: three masters (`redis-server` with `cluster-enabled yes`
//! on free ports, no replicas), joined by `redis-cli --cluster create`, stopped (by process id,
//! through [`RedisServer`]'s drop) when the handle is dropped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::RedisServer;

/// A running three-master Redis Cluster.
#[derive(Debug)]
pub struct RedisCluster {
    masters: Vec<RedisServer>,
}

/// A free port whose cluster bus port (10,000 above it) is free too. Below 55,536, or the bus port
/// would not exist (the OS's ephemeral ports often lie above it: `redis-server` then refuses to
/// start).
fn cluster_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    loop {
        let random = RandomState::new().hash_one(std::time::Instant::now());
        let port = 20_000 + u16::try_from(random % 30_000).expect("below 30,000");
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

impl RedisCluster {
    /// Starts three masters and joins them into a cluster covering all 16,384 slots.
    ///
    /// # Panics
    /// When a server cannot start, `redis-cli --cluster create` fails, or the cluster does not
    /// report `cluster_state:ok` on every node within 20 s.
    pub fn start() -> RedisCluster {
        let masters: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        "--appendonly",
                        "no",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> =
            masters.iter().map(|m| m.url().trim_start_matches("redis://").to_owned()).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli is installed");
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stderr));
        let cluster = RedisCluster { masters };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.masters.iter().all(|m| Self::is_ok(&m.url())) {
            assert!(Instant::now() < deadline, "the cluster did not report cluster_state:ok within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn is_ok(url: &str) -> bool {
        let Ok(client) = redis::Client::open(url) else { return false };
        let Ok(mut conn) = client.get_connection() else { return false };
        redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn).is_ok_and(|info| info.contains("cluster_state:ok"))
    }

    /// The masters' URLs (`redis://127.0.0.1:<port>`), any of which seeds a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.masters.iter().map(RedisServer::url).collect()
    }
}
