//! [`TtlCache`]: a small per-instance cache for values that may be a few milliseconds stale.
//!
//! Hot read paths (public sale views, the queue's serving counter) would otherwise cost a round
//! trip to PostgreSQL or Redis per request. Each entry is a `OnceCell`, so when an entry expires
//! under load one request reloads it and the others wait for that result instead of all hitting
//! the store at once; failed loads are not cached.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// Entries beyond which expired ones are swept on insert, so requests for many distinct keys
/// (including keys that name nothing) cannot grow the map without bound.
const SWEEP_THRESHOLD: usize = 4096;

/// Values of type `V` by key `K`, each kept for `ttl` after it was first asked for.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, Entry<V>>>,
}

#[derive(Debug)]
struct Entry<V> {
    born: Instant,
    cell: Arc<OnceCell<Arc<V>>>,
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    /// A cache whose entries live for `ttl` (zero: every call loads).
    pub fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The cached value for `key`, or the result of `load` (shared with concurrent callers).
    pub async fn get_or_load<E, F, Fut>(&self, key: K, load: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<V>, E>>,
    {
        let cell = {
            // A std mutex: held for a map lookup only, never across an await.
            let mut entries = self.entries.lock().expect("cache lock is never poisoned");
            match entries.get(&key) {
                Some(entry) if entry.born.elapsed() < self.ttl => entry.cell.clone(),
                _ => {
                    if entries.len() >= SWEEP_THRESHOLD {
                        entries.retain(|_, e| e.born.elapsed() < self.ttl);
                    }
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(key, Entry { born: Instant::now(), cell: cell.clone() });
                    cell
                }
            }
        };
        // Boxed: the load (a database query, a Redis round trip) is the cold path, and its large
        // future would otherwise be part of every caller's future, copied around on every poll.
        cell.get_or_try_init(|| Box::pin(load())).await.cloned()
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        self.entries.lock().expect("cache lock is never poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_misses_load_once_and_failures_are_not_kept() {
        let cache: TtlCache<u8, u32> = TtlCache::new(Duration::from_secs(60));
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<_, ()>(Arc::new(7))
        };
        let results = futures::future::join_all((0..50).map(|_| cache.get_or_load(1, load))).await;
        assert!(results.iter().all(|r| **r.as_ref().unwrap() == 7));
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        assert!(cache.get_or_load(2, || async { Err::<Arc<u32>, _>("down") }).await.is_err());
        assert_eq!(*cache.get_or_load(2, || async { Ok::<_, ()>(Arc::new(9)) }).await.unwrap(), 9);
        cache.remove(&1);
        cache.get_or_load(1, load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }
}
