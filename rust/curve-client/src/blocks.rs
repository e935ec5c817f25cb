//! Locks over block ranges of one open file, so that a read-modify-write of a partial
//! block cannot interleave with another write to that block and lose it.
//!
//! A read-modify-write conflicts with every write overlapping its blocks; an aligned write
//! conflicts only with read-modify-writes (two aligned writes that overlap need no order
//! here: the chunkserver applies each whole). An aligned write pays one uncontended mutex
//! and a scan of the (usually empty) list of held ranges.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::lock;

struct Held {
    id: u64,
    /// Blocks [start, end) in bytes, aligned.
    start: u64,
    end: u64,
    rmw: bool,
}

#[derive(Default)]
pub(crate) struct BlockLocks {
    held: Mutex<Vec<Held>>,
    released: Notify,
    next_id: AtomicU64,
}

/// Holds a range until dropped (also when the IO's future is dropped mid-way).
pub(crate) struct BlockGuard<'a> {
    locks: &'a BlockLocks,
    id: u64,
}

impl Drop for BlockGuard<'_> {
    fn drop(&mut self) {
        lock(&self.locks.held).retain(|h| h.id != self.id);
        self.locks.released.notify_waiters();
    }
}

impl BlockLocks {
    /// Waits until no conflicting range is held, then holds [start, end).
    pub async fn lock(&self, start: u64, end: u64, rmw: bool) -> BlockGuard<'_> {
        loop {
            // Registered before the check, so a release between the check and the wait
            // is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut held = lock(&self.held);
                let conflict = held
                    .iter()
                    .any(|h| h.start < end && start < h.end && (h.rmw || rmw));
                if !conflict {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    held.push(Held {
                        id,
                        start,
                        end,
                        rmw,
                    });
                    return BlockGuard { locks: self, id };
                }
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn rmw_waits_for_overlapping_writes_and_aligned_writes_do_not_wait_for_each_other() {
        let locks = BlockLocks::default();
        let a = locks.lock(0, 8192, false).await;
        // Another aligned write over the same blocks: no wait.
        let b = tokio::time::timeout(Duration::from_millis(100), locks.lock(4096, 12288, false))
            .await
            .expect("aligned writes do not wait for each other");
        // A read-modify-write of block 1 waits for both.
        let rmw = locks.lock(4096, 8192, true);
        tokio::pin!(rmw);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), rmw.as_mut())
                .await
                .is_err()
        );
        drop(a);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), rmw.as_mut())
                .await
                .is_err()
        );
        drop(b);
        let held = tokio::time::timeout(Duration::from_millis(100), rmw)
            .await
            .expect("released");
        // A disjoint range goes ahead even while it is held.
        let other =
            tokio::time::timeout(Duration::from_millis(100), locks.lock(16384, 20480, true))
                .await
                .expect("disjoint");
        drop(other);
        drop(held);
        assert!(lock(&locks.held).is_empty());
    }
}
