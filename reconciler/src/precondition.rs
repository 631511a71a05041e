//! The store's preconditions: what a write must still find for it to happen.
//!
//! Every decision carries the resourceVersion or uid it was decided on, so a decision made on a
//! stale view is refused instead of applied. The store checks a write with [`Precondition::check`]
//! and the models in `model/` refuse their writes with the very same function, so what the models
//! prove about stale decisions is what the store enforces.

use std::fmt;

/// What a write must find before it may happen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Precondition {
    /// The object is still at this resourceVersion.
    ResourceVersion(u64),
    /// The object is still this incarnation (same uid).
    Uid(String),
}

/// Why a write was refused: the object moved on since the decision read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It was decided on one resourceVersion and the object is at another.
    ResourceVersion {
        /// The resourceVersion decided on.
        expected: u64,
        /// The object's resourceVersion now.
        actual: u64,
    },
    /// It was decided on one incarnation and the object is another (deleted and recreated).
    Uid {
        /// The uid decided on.
        expected: String,
        /// The object's uid now.
        actual: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ResourceVersion { expected, actual } => write!(
                f,
                "decided on resourceVersion {expected}, the object is at {actual}"
            ),
            Refusal::Uid { expected, actual } => {
                write!(f, "decided on uid {expected}, the object is now {actual}")
            }
        }
    }
}

impl std::error::Error for Refusal {}

impl Precondition {
    /// Whether an object now at `resource_version` with `uid` still satisfies this
    /// precondition; the refusal says what moved.
    pub fn check(&self, resource_version: u64, uid: &str) -> Result<(), Refusal> {
        match self {
            Precondition::ResourceVersion(expected) if *expected == resource_version => Ok(()),
            Precondition::ResourceVersion(expected) => Err(Refusal::ResourceVersion {
                expected: *expected,
                actual: resource_version,
            }),
            Precondition::Uid(expected) if expected == uid => Ok(()),
            Precondition::Uid(expected) => Err(Refusal::Uid {
                expected: expected.clone(),
                actual: uid.to_string(),
            }),
        }
    }

    /// Whether the write may happen (for callers that need no reason: the models).
    pub fn holds(&self, resource_version: u64, uid: &str) -> bool {
        self.check(resource_version, uid).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_holds_only_on_the_version_and_incarnation_it_was_decided_on() {
        let rv = Precondition::ResourceVersion(7);
        assert_eq!(rv.check(7, "a"), Ok(()));
        assert_eq!(
            rv.check(8, "a"),
            Err(Refusal::ResourceVersion {
                expected: 7,
                actual: 8
            })
        );
        let uid = Precondition::Uid("a".into());
        assert!(uid.holds(99, "a"), "a uid precondition ignores the version");
        let refused = uid.check(1, "b").map_err(|r| r.to_string());
        assert_eq!(refused, Err("decided on uid a, the object is now b".into()));
    }
}
