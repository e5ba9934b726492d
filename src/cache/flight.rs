//! Single flight: concurrent misses for one key share one upstream fetch, and all of them get
//! its outcome, failures included (so a failing upstream is asked once, not once per waiter).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Fetches in progress, by key. A key may be a hash of what is fetched (cheap to hold and
/// compare); each flight is listed with the whole `identity` too, and only a caller with the
/// same identity joins it, so two fetches whose keys collide are never merged.
pub struct SingleFlight<K, I, V> {
    inflight: Mutex<HashMap<K, (I, Flight<V>)>>,
}

/// One fetch's outcome, filled once by whichever of its callers runs the fetch to the end.
/// The same allocation is what every caller gets back: the flight is the shared outcome.
type Flight<V> = Arc<OnceCell<V>>;

/// The outcome of a fetch, shared by every caller that waited for it.
#[derive(Debug)]
pub struct Shared<V>(Flight<V>);

impl<V> Shared<V> {
    /// An outcome that was not shared (a fetch outside any flight).
    pub fn ready(value: V) -> Shared<V> {
        Shared(Arc::new(OnceCell::new_with(Some(value))))
    }
}

impl<V> Clone for Shared<V> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<V> Deref for Shared<V> {
    type Target = V;

    fn deref(&self) -> &V {
        // Made only from a filled cell: `ready`, or a flight its fetch has filled.
        self.0
            .get()
            .expect("a shared outcome is filled before it is handed out")
    }
}

impl<K: Hash + Eq + Copy, I: Eq, V> SingleFlight<K, I, V> {
    pub fn new() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `fetch` for `key` unless a fetch for it is already running, in which case waits
    /// for that one. If the running fetch is cancelled, a waiter takes over. A caller whose
    /// key is taken by a flight of another identity fetches on its own, unshared.
    ///
    /// Joining allocates nothing; leading allocates the flight (which is also the outcome
    /// every caller gets) and the fetch. The fetch (an upstream exchange: kilobytes of state)
    /// is boxed so that it is not part of every caller's future: a caller's task is copied
    /// whole when it is spawned and when it ends, and most callers never run a fetch.
    pub async fn run<F, Fut>(&self, key: K, identity: I, fetch: F) -> Shared<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        // The lock is held for this statement only, never across the fetch.
        let flight = match self.lock().entry(key) {
            Entry::Occupied(taken) if taken.get().0 == identity => Some(taken.get().1.clone()),
            Entry::Occupied(_) => None,
            Entry::Vacant(free) => Some(free.insert((identity, Flight::default())).1.clone()),
        };
        let Some(flight) = flight else {
            return Shared::ready(Box::pin(fetch()).await);
        };
        flight.get_or_init(|| Box::pin(fetch())).await;
        let mut inflight = self.lock();
        if inflight
            .get(&key)
            .is_some_and(|(_, f)| Arc::ptr_eq(f, &flight))
        {
            inflight.remove(&key);
        }
        Shared(flight)
    }

    /// Fetches in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (I, Flight<V>)>> {
        // The map holds no invariant a panicking holder could break halfway.
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Hash + Eq + Copy, I: Eq, V> Default for SingleFlight<K, I, V> {
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
            assert_eq!(*task.await.unwrap(), 42);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(flight.is_empty());
    }

    #[tokio::test]
    async fn a_finished_fetch_is_not_reused() {
        let flight = SingleFlight::<u32, u32, u32>::new();
        assert_eq!(*flight.run(1, 0, || async { 1 }).await, 1);
        assert_eq!(*flight.run(1, 0, || async { 2 }).await, 2);
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
        assert_eq!((*first, *second), ("answer for a", "answer for b"));
        assert!(flight.is_empty());
    }
}
