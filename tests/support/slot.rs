//! A counting semaphore bounding how many heavy scenarios (a broker plus client programs or
//! JVMs) of one test binary run at once: the machines have two cores, and `cargo test` runs a
//! binary's tests on several threads.

use std::sync::{Condvar, Mutex};

/// Scenarios of one test binary running at once.
pub const MAX_CONCURRENT: usize = 2;

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Held for the length of one scenario; dropping it lets the next one start.
pub struct Slot;

impl Slot {
    /// Waits until fewer than [`MAX_CONCURRENT`] scenarios of this binary are running.
    pub fn acquire() -> Self {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_CONCURRENT {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        FREED.notify_one();
    }
}
