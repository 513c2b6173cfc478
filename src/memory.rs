//! What state costs, for the memory budget (`--memory-budget`, docs/hostile.md):
//! shared by the stages that count their own bytes (fragments, TCP table, segment
//! journal).

/// The buckets of a hash table (hashbrown's, behind `std` and `FxHashMap`) of
/// `capacity`: a table of 8 buckets or more holds at most 7/8 of them, a smaller one
/// one less than it has.
pub(crate) fn hash_table_buckets(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        c if c < 8 => c + 1,
        c => c / 7 * 8,
    }
}

#[cfg(test)]
mod tests {
    use super::hash_table_buckets;

    /// The formula against what `std`'s map reports for the tables it makes.
    #[test]
    fn buckets_follow_the_maps_own_capacity() {
        for wanted in [1usize, 3, 7, 8, 14, 15, 100, 1000] {
            let m: std::collections::HashMap<u64, u64> =
                std::collections::HashMap::with_capacity(wanted);
            let buckets = hash_table_buckets(m.capacity());
            assert!(buckets.is_power_of_two(), "{wanted}: {buckets}");
            assert!(buckets > m.capacity(), "{wanted}: {buckets}");
        }
    }
}
