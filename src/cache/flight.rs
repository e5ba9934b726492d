//! Single flight: concurrent misses for one key share one upstream fetch, and all of them get
//! its outcome, failures included (so a failing upstream is asked once, not once per waiter).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Fetches in progress, by key. A key may be a hash of what is fetched (cheap to hold and
/// compare); each flight carries the whole `identity` too, and only a caller with the same
/// identity joins it, so two fetches whose keys collide are never merged.
pub struct SingleFlight<K, I, V> {
    inflight: Mutex<HashMap<K, Arc<Flight<I, V>>>>,
}

struct Flight<I, V> {
    identity: I,
    outcome: OnceCell<V>,
}

impl<K: Hash + Eq + Copy, I: Eq, V: Clone> SingleFlight<K, I, V> {
    pub fn new() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `fetch` for `key` unless a fetch for it is already running, in which case waits
    /// for that one. If the running fetch is cancelled, a waiter takes over. A caller whose
    /// key is taken by a flight of another identity fetches on its own, unshared.
    ///
    /// Joining allocates nothing; leading allocates the flight and the fetch. The fetch (an
    /// upstream exchange: kilobytes of state) is boxed so that it is not part of every
    /// caller's future: a caller's task is copied whole when it is spawned and when it ends,
    /// and most callers never run a fetch.
    pub async fn run<F, Fut>(&self, key: K, identity: I, fetch: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        // The lock is held for this statement only, never across the fetch.
        let flight = match self.lock().entry(key) {
            Entry::Occupied(taken) if taken.get().identity == identity => Some(taken.get().clone()),
            Entry::Occupied(_) => None,
            Entry::Vacant(free) => Some(
                free.insert(Arc::new(Flight {
                    identity,
                    outcome: OnceCell::new(),
                }))
                .clone(),
            ),
        };
        let Some(flight) = flight else {
            return Box::pin(fetch()).await;
        };
        let value = flight
            .outcome
            .get_or_init(|| Box::pin(fetch()))
            .await
            .clone();
        let mut inflight = self.lock();
        if inflight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            inflight.remove(&key);
        }
        value
    }

    /// Fetches in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<Flight<I, V>>>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Hash + Eq + Copy, I: Eq, V: Clone> Default for SingleFlight<K, I, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let flight = Arc::new(SingleFlight::<u32, u32, u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flight, calls) = (flight.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run(7, 0, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 42);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(flight.is_empty());
    }

    #[tokio::test]
    async fn a_finished_fetch_is_not_reused() {
        let flight = SingleFlight::<u32, u32, u32>::new();
        assert_eq!(flight.run(1, 0, || async { 1 }).await, 1);
        assert_eq!(flight.run(1, 0, || async { 2 }).await, 2);
    }

    /// Two identities under one key (a hash collision) each fetch, and neither gets the
    /// other's outcome.
    #[tokio::test]
    async fn a_colliding_key_of_another_identity_fetches_unshared() {
        let flight = SingleFlight::<u32, &str, &str>::new();
        let (started, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
        let first = flight.run(9, "a.example", || async {
            started.notify_one();
            release.notified().await;
            "answer for a"
        });
        let second = async {
            started.notified().await;
            let value = flight
                .run(9, "b.example", || async { "answer for b" })
                .await;
            release.notify_one();
            value
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!((first, second), ("answer for a", "answer for b"));
        assert!(flight.is_empty());
    }
}
