//! The no-livelock check every model uses: from a state, run the system without further
//! faults, always taking the first enabled step, and see that it settles. stateright's
//! `eventually` cannot see livelock on cycles; this can.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The state after the first of `steps` that `model` can take from `state`: the next state of
/// a deterministic fault-free run (a step may turn out not to be enabled, as a pod that cannot
/// start without its claim).
pub fn first_enabled<M: stateright::Model>(
    model: &M,
    state: &M::State,
    steps: Vec<M::Action>,
) -> Option<M::State> {
    steps
        .into_iter()
        .find_map(|step| model.next_state(state, step))
}

/// Fingerprints of states whose fault-free run is known to converge. The run is deterministic,
/// so every state on a converging run converges: checking each reachable state then costs a
/// few steps instead of a whole run. Shared by the checker's threads.
#[derive(Clone, Debug, Default)]
pub struct Converging(Arc<Mutex<HashSet<u64>>>);

fn fingerprint<S: Hash>(state: &S) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    state.hash(&mut hasher);
    hasher.finish()
}

impl Converging {
    /// Whether the run from `state` reaches a state where `step` offers nothing and
    /// `converged` holds, within `steps` steps. `step` gives the state after the first enabled
    /// fault-free step, or `None` when none is enabled.
    pub fn within<S: Hash + Clone>(
        &self,
        state: &S,
        steps: usize,
        step: impl Fn(&S) -> Option<S>,
        converged: impl Fn(&S) -> bool,
    ) -> bool {
        let mut state = state.clone();
        let mut visited = Vec::new();
        for _ in 0..steps {
            let print = fingerprint(&state);
            if self.known(print) {
                return self.remember(visited);
            }
            visited.push(print);
            match step(&state) {
                Some(next) => state = next,
                None => return converged(&state) && self.remember(visited),
            }
        }
        false
    }

    fn known(&self, print: u64) -> bool {
        self.0
            .lock()
            .map(|set| set.contains(&print))
            .unwrap_or(false)
    }

    fn remember(&self, prints: Vec<u64>) -> bool {
        if let Ok(mut set) = self.0.lock() {
            set.extend(prints);
        }
        true
    }
}
