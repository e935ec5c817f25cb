//! Which of several MDS processes sharing one data folder is the active one.
//!
//! Upstream's MDSes campaign for leadership through etcd; a follower does not open its
//! port until it wins, so clients walk `mds.listen.addr` until they meet the leader. The
//! local cluster's MDSes share one store on one machine, so the campaign here is an
//! exclusive `flock` on `<data_dir>/leader.lock`: whichever process holds it is active,
//! and the kernel releases it the moment that process dies, however it dies. A standby
//! waits on the lock and opens the store (which only one process may hold) after it won.
//!
//! Unlike an etcd lease, the lock does not lapse while its holder is alive: a paused
//! (SIGSTOPped) active MDS keeps its leadership until it is resumed or killed.

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::Error;

/// The lock file inside the MDS's data folder.
pub fn leader_lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("leader.lock")
}

/// Leadership of the MDS data folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct LeaderLock {
    // The lock belongs to this open file description; closing it releases the lock.
    _file: File,
}

impl LeaderLock {
    /// Takes leadership if no other process holds it; `None` if one does.
    pub fn try_acquire(data_dir: &Path) -> Result<Option<Self>, Error> {
        let (path, file) = open(data_dir)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(lock_error(path, e)),
        }
    }

    /// Waits until leadership is free and takes it. The wait runs on a thread of its own
    /// (flock blocks); if this future is dropped first, a lock the thread takes later is
    /// released again at once.
    pub async fn acquire(data_dir: &Path) -> Result<Self, Error> {
        let (path, file) = open(data_dir)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("mds-campaign".into())
            .spawn(move || {
                let taken = flock(&file, FlockOperation::LockExclusive)
                    .map(|()| Self { _file: file })
                    .map_err(|e| lock_error(path, e));
                // A receiver gone means nobody wants it: dropping the lock releases it.
                let _ = tx.send(taken);
            })
            .map_err(|e| Error::Startup(format!("cannot start the MDS campaign: {e}")))?;
        rx.await
            .map_err(|_| Error::Startup("the MDS campaign thread ended".into()))?
    }
}

fn open(data_dir: &Path) -> Result<(PathBuf, File), Error> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = leader_lock_path(data_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::DataDir {
            path: path.clone(),
            source,
        })?;
    Ok((path, file))
}

fn lock_error(path: PathBuf, e: rustix::io::Errno) -> Error {
    Error::Lock {
        path,
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_the_next_takes_over_on_release() {
        let dir = tempfile::tempdir().unwrap();
        // flock belongs to an open file description, so two opens in one process contend
        // as two processes would.
        let first = LeaderLock::try_acquire(dir.path()).unwrap().unwrap();
        assert!(LeaderLock::try_acquire(dir.path()).unwrap().is_none());
        let dir_path = dir.path().to_owned();
        let waiting = tokio::spawn(async move { LeaderLock::acquire(&dir_path).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "took a held lock");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(LeaderLock::try_acquire(dir.path()).unwrap().is_none());
        drop(second);
        assert!(LeaderLock::try_acquire(dir.path()).unwrap().is_some());
    }

    #[tokio::test]
    async fn an_abandoned_wait_does_not_keep_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = LeaderLock::try_acquire(dir.path()).unwrap().unwrap();
        let wait = LeaderLock::acquire(dir.path());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), wait)
                .await
                .is_err()
        );
        drop(first);
        // The abandoned thread may take the lock for an instant; it gives it back.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if LeaderLock::try_acquire(dir.path()).unwrap().is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "lock never released");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
