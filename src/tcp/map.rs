//! The TCP table's hash map, keyed by [`FlowKey`] with the key's hash given by the
//! caller where it is known: a sharded run hashes every segment's key on the front
//! to route it, and the shard's lookup then reuses that hash instead of hashing the
//! key again (the derived hash over the key's 40 bytes was about 2.5 % of a
//! small-packet run's samples, docs/PERFORMANCE.md). hashbrown's `HashTable` is the
//! table behind `std`'s `HashMap` (same layout and capacity rules, so the memory
//! budget's arithmetic is unchanged), with the hash in the caller's hands.

use super::FlowKey;
use hashbrown::HashTable;

pub(super) struct ConnMap<V> {
    table: HashTable<(FlowKey, V)>,
}

impl<V> Default for ConnMap<V> {
    fn default() -> Self {
        ConnMap {
            table: HashTable::new(),
        }
    }
}

fn rehash<V>(entry: &(FlowKey, V)) -> u64 {
    entry.0.hash_value()
}

impl<V> ConnMap<V> {
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub(super) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The entry of `key`, whose hash is `hash` (`key.hash_value()`).
    pub(super) fn get_mut_hashed(&mut self, key: &FlowKey, hash: u64) -> Option<&mut V> {
        debug_assert_eq!(hash, key.hash_value());
        self.table.find_mut(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        self.get_mut_hashed(key, key.hash_value())
    }

    pub(super) fn get(&self, key: &FlowKey) -> Option<&V> {
        self.table
            .find(key.hash_value(), |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub(super) fn contains_key_hashed(&self, key: &FlowKey, hash: u64) -> bool {
        debug_assert_eq!(hash, key.hash_value());
        self.table.find(hash, |(k, _)| k == key).is_some()
    }

    /// Inserts or replaces the entry of `key`.
    pub(super) fn insert(&mut self, key: FlowKey, value: V) {
        let hash = key.hash_value();
        match self.table.find_mut(hash, |(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => {
                self.table.insert_unique(hash, (key, value), rehash);
            }
        }
    }

    pub(super) fn remove(&mut self, key: &FlowKey) -> Option<V> {
        match self.table.find_entry(key.hash_value(), |(k, _)| k == key) {
            Ok(entry) => Some(entry.remove().0 .1),
            Err(_) => None,
        }
    }

    pub(super) fn shrink_to(&mut self, min_capacity: usize) {
        self.table.shrink_to(min_capacity, rehash);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&FlowKey, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&FlowKey, &mut V) -> bool) {
        self.table.retain(|(k, v)| keep(k, v));
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = (FlowKey, V)> + '_ {
        self.table.drain()
    }
}
