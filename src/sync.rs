//! The one way promd's drivers take a `std::sync::Mutex`.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, taking a poisoned lock as it is. promd holds these locks only over plain
/// updates of maps, counters and slots that cannot panic midway, so a poisoned lock still
/// holds whole data, and giving up on it would drop a job result, a kill or a renewal.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
