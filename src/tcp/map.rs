//! The TCP table's hash map, keyed by [`FlowKey`] with the key's hash given by the
//! caller where it is known: a sharded run hashes every segment's key on the front
//! to route it, and the shard's lookup then reuses that hash instead of hashing the
//! key again (the derived hash over the key's 40 bytes was about 2.5 % of a
//! small-packet run's samples, docs/PERFORMANCE.md). hashbrown's `HashTable` is the
//! table behind `std`'s `HashMap` (same layout and capacity rules, so the memory
//! budget's arithmetic is unchanged), with the hash in the caller's hands.

use super::FlowKey;
use hashbrown::hash_table::Entry;
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

    /// Inserts or replaces the entry of `key` (one probe of the table either way).
    pub(super) fn insert(&mut self, key: FlowKey, value: V) {
        match self
            .table
            .entry(key.hash_value(), |(k, _)| *k == key, rehash)
        {
            Entry::Occupied(mut entry) => entry.get_mut().1 = value,
            Entry::Vacant(entry) => {
                entry.insert((key, value));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn key(port: u16) -> FlowKey {
        let a: SocketAddr = format!("10.0.0.1:{port}").parse().unwrap();
        let b: SocketAddr = "192.0.2.80:80".parse().unwrap();
        FlowKey::new(0, &b, &a)
    }

    /// Entries are found by a given hash as by the key's own, replaced in place,
    /// removed, kept or dropped by `retain`, and still found after the table shrinks.
    #[test]
    fn finds_by_the_given_hash_and_survives_a_shrink() {
        let mut map = ConnMap::default();
        for port in 1000..3000 {
            map.insert(key(port), u32::from(port));
        }
        map.insert(key(1500), 7);
        assert_eq!(map.len(), 2000);
        let k = key(2999);
        assert_eq!(map.get_mut_hashed(&k, k.hash_value()).copied(), Some(2999));
        assert!(map.contains_key_hashed(&k, k.hash_value()));
        assert_eq!(map.get(&key(1500)), Some(&7));
        assert_eq!(map.remove(&key(1000)), Some(1000));
        assert_eq!(map.remove(&key(1000)), None);
        assert!(map.get(&key(3000)).is_none());
        // The odd values: the odd ports, and 1500's replaced value.
        map.retain(|_, v| *v % 2 == 1);
        assert_eq!(map.len(), 1001);
        map.shrink_to(map.len());
        for port in (1001..3000).step_by(2) {
            let k = key(port);
            assert_eq!(
                map.get_mut_hashed(&k, k.hash_value()).copied(),
                Some(u32::from(port))
            );
        }
        assert_eq!(map.get(&key(1500)), Some(&7));
        assert_eq!(map.values().count(), 1001);
        assert_eq!(map.drain().count(), 1001);
        assert!(map.is_empty());
    }
}
