//! The Redis keys of one store (`P` is the prefix, `R` a resource's key,
//! `E` an entry's key, `T` a surrogate tag's key, all hexadecimal):
//!
//! - `P:{R}:g`: the resource's generation;
//! - `P:{R}:w`: the ids of the writes to it under way (a set);
//! - `P:{R}:e:E`: an entry (see [`codec`](super::codec)), with `PX` at the
//!   time-to-live;
//! - `P:{T}:t`: a surrogate tag's generation;
//! - `P:{dataset}:incarnation` and `P:{dataset}:barrier`: the identity of
//!   the server that last vouched for the dataset, and the time before
//!   which no entry is trusted (see [`link`](super::link)). On a Redis
//!   Cluster each primary has its own pair, `P:{dataset-N}:…`, with `N`
//!   chosen so that the pair is in the first slot the primary serves.
//!
//! The keys of one resource share a hash slot (`{R}`), and each tag has its
//! own, so every script touches one slot, and on a Redis Cluster the
//! resources and the tags spread over every shard: no key is read by every
//! request.

use crate::cache::hashing::Key;

/// Names the keys under one prefix.
#[derive(Clone, Debug)]
pub(super) struct KeyNames {
    prefix: String,
}

impl KeyNames {
    pub(super) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn generation(&self, resource: Key) -> String {
        format!("{}:{{{resource:016x}}}:g", self.prefix)
    }

    pub(super) fn writes(&self, resource: Key) -> String {
        format!("{}:{{{resource:016x}}}:w", self.prefix)
    }

    pub(super) fn entry(&self, resource: Key, key: Key) -> String {
        format!("{}:{{{resource:016x}}}:e:{key:016x}", self.prefix)
    }

    pub(super) fn tag(&self, tag: Key) -> String {
        format!("{}:{{{tag:016x}}}:t", self.prefix)
    }

    /// The dataset's keys on a single server: its incarnation and its
    /// barrier.
    pub(super) fn dataset(&self) -> (String, String) {
        self.dataset_named("dataset")
    }

    /// The dataset's keys of the cluster primary whose first slot is
    /// `slot`: a hash tag `dataset-N` in that slot.
    pub(super) fn dataset_in_slot(&self, slot: u16) -> (String, String) {
        let tag = (0u64..)
            .map(|n| format!("dataset-{n}"))
            .find(|tag| slot_of(tag.as_bytes()) == slot)
            .expect("every slot has a tag of this form");
        self.dataset_named(&tag)
    }

    fn dataset_named(&self, tag: &str) -> (String, String) {
        (
            format!("{}:{{{tag}}}:incarnation", self.prefix),
            format!("{}:{{{tag}}}:barrier", self.prefix),
        )
    }

    /// Whether `key` (a name under the prefix) is one of the dataset's own
    /// keys rather than a resource's or a tag's.
    pub(super) fn is_dataset(key: &[u8]) -> bool {
        const MARK: &[u8] = b":{dataset";
        key.windows(MARK.len()).any(|w| w == MARK)
    }

    /// The `SCAN MATCH` pattern of every key under the prefix.
    pub(super) fn pattern(&self) -> String {
        format!("{}:*", glob_escape(&self.prefix))
    }
}

/// How many hash slots a Redis Cluster has.
pub(super) const SLOTS: usize = 16_384;

/// The hash slot of the keys named after `key` (a resource or a tag): its
/// hash tag is the key in hexadecimal.
pub(super) fn slot(key: Key) -> u16 {
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        let nibble = (key >> (60 - 4 * i)) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    slot_of(&hex)
}

/// The hash slot of a hash tag, as Redis Cluster computes it: CRC16/XMODEM
/// modulo the number of slots.
pub(super) fn slot_of(tag: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS as u16
}

/// `prefix` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_resource_share_a_hash_slot_and_tags_share_another() {
        let names = KeyNames::new("app".to_owned());
        assert_eq!(names.generation(0xab), "app:{00000000000000ab}:g");
        assert_eq!(names.writes(0xab), "app:{00000000000000ab}:w");
        assert_eq!(
            names.entry(0xab, 1),
            "app:{00000000000000ab}:e:0000000000000001"
        );
        assert_eq!(names.tag(2), "app:{0000000000000002}:t");
        assert_eq!(
            names.dataset(),
            (
                "app:{dataset}:incarnation".to_owned(),
                "app:{dataset}:barrier".to_owned()
            )
        );
        assert!(KeyNames::is_dataset(b"app:{dataset}:barrier"));
        assert!(KeyNames::is_dataset(b"app:{dataset-17}:barrier"));
        assert!(!KeyNames::is_dataset(b"app:{00000000000000ab}:g"));
    }

    #[test]
    fn slots_are_the_ones_redis_cluster_computes() {
        // `CLUSTER KEYSLOT` on Redis 7.0: `foo` 12182, `{user1000}.following`
        // 3443, and a resource key.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"user1000"), 3443);
        assert_eq!(slot(0xab), 2250);
        // Each primary's dataset keys land in the slot asked for.
        let names = KeyNames::new("app".to_owned());
        for wanted in [0, 5460, 5461, 10922, 10923, 16383] {
            let (incarnation, barrier) = names.dataset_in_slot(wanted);
            let tag = |key: &str| {
                let open = key.find('{').unwrap();
                let close = key.find('}').unwrap();
                slot_of(&key.as_bytes()[open + 1..close])
            };
            assert_eq!(tag(&incarnation), wanted);
            assert_eq!(tag(&barrier), wanted);
        }
    }

    #[test]
    fn the_scan_pattern_escapes_glob_characters() {
        assert_eq!(
            KeyNames::new("a*b?[c]\\".to_owned()).pattern(),
            "a\\*b\\?\\[c\\]\\\\:*"
        );
        assert_eq!(KeyNames::new("plain".to_owned()).pattern(), "plain:*");
    }
}
