//! The Redis keys of one store (`P` is the prefix, `R` a resource's key,
//! `E` an entry's key, `T` a surrogate tag's key, all hexadecimal):
//!
//! - `P:{R}:g`: the resource's generation;
//! - `P:{R}:w`: the ids of the writes to it under way (a set);
//! - `P:{R}:e:E`: an entry (see [`codec`](super::codec)), with `PX` at the
//!   time-to-live;
//! - `P:{tags}:epoch` and `P:{tags}:T`: the surrogate-tag epoch and each
//!   tag's generation;
//! - `P:{dataset}:incarnation` and `P:{dataset}:barrier`: the identity of
//!   the server that last vouched for the dataset, and the time before
//!   which no entry is trusted (see [`link`](super::link)).
//!
//! The keys of one resource share a hash slot (`{R}`), and so do all tag
//! keys (`{tags}`), so every script touches one slot and works on Redis
//! Cluster too.

use crate::cache::hashing::Key;

/// Names the keys under one prefix.
#[derive(Debug)]
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

    pub(super) fn epoch(&self) -> String {
        format!("{}:{{tags}}:epoch", self.prefix)
    }

    pub(super) fn tag(&self, tag: Key) -> String {
        format!("{}:{{tags}}:{tag:016x}", self.prefix)
    }

    pub(super) fn incarnation(&self) -> String {
        format!("{}:{{dataset}}:incarnation", self.prefix)
    }

    pub(super) fn barrier(&self) -> String {
        format!("{}:{{dataset}}:barrier", self.prefix)
    }

    /// Whether `key` (a name under the prefix) is one of the dataset's own
    /// keys rather than a resource's or a tag's.
    pub(super) fn is_dataset(key: &[u8]) -> bool {
        const MARK: &[u8] = b":{dataset}:";
        key.windows(MARK.len()).any(|w| w == MARK)
    }

    /// The `SCAN MATCH` pattern of every key under the prefix.
    pub(super) fn pattern(&self) -> String {
        format!("{}:*", glob_escape(&self.prefix))
    }
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
        assert_eq!(names.epoch(), "app:{tags}:epoch");
        assert_eq!(names.tag(2), "app:{tags}:0000000000000002");
        assert_eq!(names.incarnation(), "app:{dataset}:incarnation");
        assert_eq!(names.barrier(), "app:{dataset}:barrier");
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
