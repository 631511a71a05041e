//! Read-your-writes: the two rules a controller follows between its cache and the store, kept
//! here so that the controller actor (`actors/src/controller.rs`) and the read-your-writes
//! model (`model/src/readwrites.rs`) run the same code.
//!
//! - [`Seen`]: a cache takes an event only if it has nothing as new for that object, and a
//!   deletion leaves a tombstone, so the copy of a write that the watch brings after the
//!   store's answer already did (or an older event) cannot bring an object back or roll it back.
//! - [`WriteLedger`]: a key with writes the store has not answered is not decided again until
//!   it has; its next decision must see what the last one wrote, or the ReplicaSet controller,
//!   still seeing too few pods, creates them a second time.

use std::hash::{Hash, Hasher};

use foldhash::HashMap;

/// The newest resourceVersion a cache took in per live object, and the one each deleted object
/// went at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    versions: HashMap<String, u64>,
    tombstones: HashMap<String, u64>,
}

impl Seen {
    /// Whether an event at `rv` for `key` is newer than anything the cache holds for it.
    pub fn is_new(&self, key: &str, rv: u64) -> bool {
        self.versions
            .get(key)
            .or_else(|| self.tombstones.get(key))
            .is_none_or(|seen| *seen < rv)
    }

    /// Takes an event in if it is new (see [`Seen::is_new`]) and says whether it did: the
    /// caller feeds the controller only the events taken.
    pub fn admit(&mut self, key: &str, rv: u64, deleted: bool) -> bool {
        if deleted {
            if !self.is_new(key, rv) {
                return false;
            }
            self.versions.remove(key);
            self.tombstones.insert(key.to_string(), rv);
        } else if let Some(seen) = self.versions.get_mut(key) {
            // The common case (a live object changed again) copies no key.
            if *seen >= rv {
                return false;
            }
            *seen = rv;
        } else {
            if self.tombstones.get(key).is_some_and(|seen| *seen >= rv) {
                return false;
            }
            self.tombstones.remove(key);
            self.versions.insert(key.to_string(), rv);
        }
        true
    }

    /// Drops the tombstones at or below `watched_up_to` once there are `limit` of them: the
    /// watch is ordered, so no older event for them can still arrive.
    pub fn forget_tombstones(&mut self, watched_up_to: u64, limit: usize) {
        if self.tombstones.len() >= limit {
            self.tombstones.retain(|_, rv| *rv > watched_up_to);
        }
    }

    /// Forgets everything (a full list follows).
    pub fn clear(&mut self) {
        self.versions.clear();
        self.tombstones.clear();
    }
}

/// Hashed in key order, so that equal values hash alike whatever their maps' order (the model
/// checker fingerprints states).
impl Hash for Seen {
    fn hash<H: Hasher>(&self, state: &mut H) {
        sorted(&self.versions).hash(state);
        sorted(&self.tombstones).hash(state);
    }
}

/// The writes a controller has sent and the store has not answered, per key and in all, and
/// the keys held back until theirs are answered, each with the reason it was marked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteLedger {
    /// Batches unanswered, per key.
    batches: HashMap<String, usize>,
    /// Keys marked while they had batches unanswered, with the reason they were marked.
    held: HashMap<String, String>,
    /// Writes unanswered, over all keys.
    writes: usize,
}

impl WriteLedger {
    /// Whether `key` has batches the store has not answered: it must not be decided yet.
    pub fn awaiting(&self, key: &str) -> bool {
        self.batches.contains_key(key)
    }

    /// Keeps `key` (marked for `reason`) until its batches are answered; the first reason
    /// stays.
    pub fn hold(&mut self, key: String, reason: String) {
        self.held.entry(key).or_insert(reason);
    }

    /// A batch of `writes` writes decided for `key` went to the store.
    pub fn sent(&mut self, key: &str, writes: usize) {
        *self.batches.entry(key.to_string()).or_default() += 1;
        self.writes = self.writes.saturating_add(writes);
    }

    /// The store answered a batch of `writes` writes for `key`. When that was the key's last
    /// batch and the key was held, the reason it was held is returned: mark it again.
    pub fn answered(&mut self, key: &str, writes: usize) -> Option<String> {
        self.writes = self.writes.saturating_sub(writes);
        let count = self.batches.get_mut(key)?;
        *count = count.saturating_sub(1);
        if *count > 0 {
            return None;
        }
        self.batches.remove(key);
        self.held.remove(key)
    }

    /// Writes sent and not answered, over all keys.
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// Forgets everything (after a restart, answers to earlier writes are dropped).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Hashed in key order, as [`Seen`] is.
impl Hash for WriteLedger {
    fn hash<H: Hasher>(&self, state: &mut H) {
        sorted(&self.batches).hash(state);
        sorted(&self.held).hash(state);
        self.writes.hash(state);
    }
}

fn sorted<V: Ord>(map: &HashMap<String, V>) -> Vec<(&String, &V)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_takes_only_newer_events_and_a_deletion_is_final_for_older_ones() {
        let mut seen = Seen::default();
        assert!(seen.admit("Pod/a", 5, false));
        assert!(
            !seen.admit("Pod/a", 5, false),
            "the watch's copy of an answer"
        );
        assert!(!seen.admit("Pod/a", 4, false), "an older event");
        assert!(seen.admit("Pod/a", 7, true));
        assert!(
            !seen.admit("Pod/a", 6, false),
            "an older write brings nothing back"
        );
        assert!(!seen.admit("Pod/a", 7, true));
        assert!(seen.admit("Pod/a", 9, false), "created again");
        seen.forget_tombstones(100, 1);
        assert!(seen.admit("Pod/b", 3, true));
        seen.forget_tombstones(2, 1);
        assert!(
            !seen.is_new("Pod/b", 3),
            "a tombstone above the watch is kept"
        );
        seen.forget_tombstones(3, 1);
        assert!(seen.is_new("Pod/b", 3));
    }

    #[test]
    fn a_key_held_while_its_writes_travel_is_given_back_with_the_last_answer() {
        let mut ledger = WriteLedger::default();
        ledger.sent("web", 2);
        ledger.sent("web", 1);
        assert!(ledger.awaiting("web"));
        assert_eq!(ledger.writes(), 3);
        ledger.hold("web".into(), "Pod web-1 added".into());
        ledger.hold("web".into(), "Pod web-2 added".into());
        assert_eq!(ledger.answered("web", 2), None, "one batch still travels");
        assert!(ledger.awaiting("web"));
        assert_eq!(
            ledger.answered("web", 1).as_deref(),
            Some("Pod web-1 added")
        );
        assert!(!ledger.awaiting("web"));
        assert_eq!(ledger.writes(), 0);
        // An answer for a key the ledger forgot (after a restart) changes nothing.
        assert_eq!(ledger.answered("web", 1), None);
        ledger.sent("db", 1);
        assert_eq!(
            ledger.answered("db", 1),
            None,
            "never held: nothing to mark"
        );
    }
}
