//! Deterministic fault injection for tests: a fraction of storage requests fail, are
//! delayed, or are "cut" (a write that reaches the backend but whose answer is lost).
//!
//! Faults are injected above OpenDAL's retry layer, so an injected failure stands for a
//! request whose retries ran out: the caller must fail with a clear error or cope, and must
//! never record a backup that cannot be restored. Which request is hit depends only on the
//! seed, the operation, the object path and how often that (operation, path) was asked
//! before, not on timing, so a failing seed replays the same faults.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// Which fraction of requests (in parts per thousand) gets which fault.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultPlan {
    pub seed: u64,
    /// Requests that fail before reaching the backend.
    pub fail_per_mille: u32,
    /// Writes that reach the backend but report an error (the answer was lost).
    pub cut_per_mille: u32,
    /// Requests delayed by `delay` before they run.
    pub delay_per_mille: u32,
    pub delay: Duration,
}

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    Fail,
    Cut,
}

pub(super) struct Faults {
    plan: FaultPlan,
    seen: Mutex<HashMap<(&'static str, String), u64>>,
}

impl Faults {
    pub(super) fn new(plan: FaultPlan) -> Faults {
        Faults { plan, seen: Mutex::new(HashMap::new()) }
    }

    /// Decides (and applies a delay for) one request; `Fail` and `Cut` are left to the caller.
    pub(super) async fn next(&self, op: &'static str, path: &str) -> Fault {
        let nth = {
            let Ok(mut seen) = self.seen.lock() else { return Fault::None };
            let n = seen.entry((op, path.to_string())).or_insert(0);
            *n += 1;
            *n
        };
        let mut h = blake3::Hasher::new();
        h.update(&self.plan.seed.to_le_bytes());
        h.update(op.as_bytes());
        h.update(&[0]);
        h.update(path.as_bytes());
        h.update(&nth.to_le_bytes());
        let digest = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest.as_bytes()[..8]);
        let roll = u32::try_from(u64::from_le_bytes(b) % 1000).unwrap_or(0);
        let p = &self.plan;
        if roll < p.delay_per_mille {
            tokio::time::sleep(p.delay).await;
        }
        // Separate ranges from the top so delays and failures are independent fractions.
        if roll >= 1000 - p.fail_per_mille.min(1000) {
            Fault::Fail
        } else if roll >= 1000 - (p.fail_per_mille + p.cut_per_mille).min(1000) {
            Fault::Cut
        } else {
            Fault::None
        }
    }
}

/// The error an injected fault surfaces as: a storage error naming the request.
pub(super) fn injected(display: &str, op: &str, path: &str, cut: bool) -> Error {
    let what = if cut { "the answer was lost after the backend took it" } else { "request failed" };
    Error::new(
        ErrorKind::Storage,
        format!("{op} {path} in {display}: injected fault ({what}); retries exhausted"),
    )
}
