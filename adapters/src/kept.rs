//! Answers kept a while in a warm container (`Kept`): the one timed, bounded map behind the
//! GitLab client's caches (projects, job lists, merged CI, repository files) and the opened
//! tokens (`seal::KeepOpened`). An entry is served until it is `ttl` old; the map never holds
//! more than `max` entries (stale ones go first, then everything), so keys that come and go
//! (a person's token rotates every two hours) cannot grow a long-lived container's memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Kept<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Kept<K, V> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value kept for `key`, while younger than the `ttl`.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.map.lock().ok()?;
        let (value, at) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Keep `value` for `key` from now.
    pub fn put(&self, key: K, value: V) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= self.max && !map.contains_key(&key) {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (value, Instant::now()));
    }
}

impl<K, V> std::fmt::Debug for Kept<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values (opened tokens are kept here).
        let len = self.map.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Kept")
            .field("ttl", &self.ttl)
            .field("entries", &len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_served_until_their_ttl() {
        let k = Kept::new(Duration::from_millis(50), 8);
        k.put("a", 1);
        assert_eq!(k.get(&"a"), Some(1));
        assert_eq!(k.get(&"b"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(k.get(&"a"), None, "too old");
        k.put("a", 2);
        assert_eq!(k.get(&"a"), Some(2), "kept anew");
    }

    #[test]
    fn the_map_never_holds_more_than_max() {
        let k = Kept::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            k.put(i, i);
            assert_eq!(k.get(&i), Some(i), "the newest is always kept");
        }
        let held = (0..10).filter(|i| k.get(i).is_some()).count();
        assert!(held <= 3, "{held}");
        // Replacing a kept key does not evict the others.
        k.put(9, 90);
        assert_eq!(k.get(&9), Some(90));
        assert!(!format!("{k:?}").contains("90"));
    }
}
