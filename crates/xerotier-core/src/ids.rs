use std::sync::Arc;

use parking_lot::Mutex;

use crate::{SharedClock, SharedEntropy};

/// Kinds of public identifier, each with the prefix operators see (`key_…`, `agt_…`, `jk_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    ApiKey,
    Agent,
    JoinKey,
    Audit,
    Request,
    Event,
    Invocation,
    /// A router replica (`rtr_…`), registered in the store while it runs.
    Replica,
    /// One delivery of a security event to one webhook (`del_…`).
    Delivery,
    /// A fleet-wide operation (`op_…`).
    Operation,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::ApiKey => "key_",
            IdKind::Agent => "agt_",
            IdKind::JoinKey => "jk_",
            IdKind::Audit => "aud_",
            IdKind::Request => "req_",
            IdKind::Event => "evt_",
            IdKind::Invocation => "inv_",
            IdKind::Replica => "rtr_",
            IdKind::Delivery => "del_",
            IdKind::Operation => "op_",
        }
    }
}

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Time-ordered identifiers: 48 bits of milliseconds then 80 random bits, lowercase Crockford
/// base32 (26 characters). Ordering by id is ordering by creation time, which is what cursor
/// pagination (`--after`) relies on: within one generator (and its clones) every id is greater
/// than the one before, even within one millisecond (then the previous id plus one is used).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    clock: SharedClock,
    entropy: SharedEntropy,
    last: Arc<Mutex<u128>>,
}

impl IdGenerator {
    pub fn new(clock: SharedClock, entropy: SharedEntropy) -> Self {
        Self { clock, entropy, last: Arc::default() }
    }

    pub fn next(&self, kind: IdKind) -> String {
        let millis = u128::try_from(self.clock.now_millis().max(0)).unwrap_or(0) & ((1 << 48) - 1);
        let mut random = [0u8; 10];
        self.entropy.fill(&mut random);
        let mut value = millis << 80;
        for (i, byte) in random.iter().enumerate() {
            value |= u128::from(*byte) << (8 * (9 - i));
        }
        {
            let mut last = self.last.lock();
            if value <= *last {
                value = *last + 1;
            }
            *last = value;
        }
        let mut out = String::with_capacity(kind.prefix().len() + 26);
        out.push_str(kind.prefix());
        for i in (0..26).rev() {
            let index = ((value >> (5 * i)) & 0x1f) as usize;
            out.push(char::from(ALPHABET[index]));
        }
        out
    }
}

/// True when `s` has the prefix of `kind` followed by 26 id characters.
pub fn is_valid_id(kind: IdKind, s: &str) -> bool {
    s.strip_prefix(kind.prefix())
        .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, SeededEntropy};

    #[test]
    fn ids_within_one_millisecond_still_increase() {
        let ids =
            IdGenerator::new(Arc::new(ManualClock::new(5_000)), Arc::new(SeededEntropy::new(9)));
        let clone = ids.clone();
        let mut previous = ids.next(IdKind::Audit);
        for i in 0..1_000 {
            let next = if i % 2 == 0 { clone.next(IdKind::Audit) } else { ids.next(IdKind::Audit) };
            assert!(next > previous, "{next} should sort after {previous}");
            previous = next;
        }
    }

    #[test]
    fn ids_are_prefixed_time_ordered_and_valid() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let ids = IdGenerator::new(clock.clone(), Arc::new(SeededEntropy::new(1)));
        let first = ids.next(IdKind::ApiKey);
        clock.advance_millis(1);
        let second = ids.next(IdKind::ApiKey);
        assert!(first.starts_with("key_"));
        assert_eq!(first.len(), 30);
        assert!(first < second, "{first} should sort before {second}");
        assert!(is_valid_id(IdKind::ApiKey, &first));
        assert!(!is_valid_id(IdKind::Agent, &first));
        assert!(!is_valid_id(IdKind::ApiKey, "key_short"));
    }
}
