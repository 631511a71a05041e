//! What every decision returns: the actions to take, and when to look again.

/// The outcome of one decision.
///
/// `requeue_after` exists because watch events can be missed (a lost message, a crash between
/// two writes): a controller must not depend on being woken by them to converge. `None` means
/// "nothing is pending in time; wake me on the next change".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decision<A> {
    /// The actions, in the order to take them.
    pub actions: Vec<A>,
    /// Look again after this many seconds even if nothing changes.
    pub requeue_after: Option<i64>,
}

impl<A> Decision<A> {
    /// No action, no timer.
    pub fn idle() -> Self {
        Self {
            actions: Vec::new(),
            requeue_after: None,
        }
    }

    /// True when there is nothing to do now.
    pub fn is_idle(&self) -> bool {
        self.actions.is_empty()
    }
}

/// A deterministic stream of numbers from a seed (splitmix64): decisions that need "random"
/// names take the seed as an argument, so the model checker can replay them exactly.
#[derive(Clone, Debug)]
pub struct Seeded(u64);

impl Seeded {
    /// Starts the stream.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A name suffix as Kubernetes makes them: five characters from an alphabet without vowels
    /// (so no words) and without look-alike characters.
    pub fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.next_u64();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }
}
