//! File records: which client endpoints hold which file open, learnt from RefreshSession and
//! forgotten on CloseFile or after one expiry without a refresh (reference §10). They live in
//! memory only, as upstream's do; a restarted MDS therefore refuses deletions for one expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client as the MDS identifies it: (clientIP, clientPort).
pub(crate) type Endpoint = (String, u32);

#[derive(Debug)]
pub(crate) struct FileRecords {
    expiry: Duration,
    by_path: Mutex<HashMap<String, HashMap<Endpoint, Instant>>>,
}

impl FileRecords {
    pub(crate) fn new(expiry: Duration) -> Self {
        Self {
            expiry,
            by_path: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, HashMap<Endpoint, Instant>>) -> R) -> R {
        // A panic elsewhere while holding the lock leaves the map consistent (each operation is
        // a single insert/remove), so a poisoned lock is still safe to use.
        let mut guard = match self.by_path.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub(crate) fn refresh(&self, path: &str, endpoint: Endpoint, now: Instant) {
        self.with(|m| {
            m.entry(path.to_owned()).or_default().insert(endpoint, now);
        });
    }

    pub(crate) fn close(&self, path: &str, endpoint: &Endpoint) {
        self.with(|m| {
            if let Some(eps) = m.get_mut(path) {
                eps.remove(endpoint);
                if eps.is_empty() {
                    m.remove(path);
                }
            }
        });
    }

    /// Whether some client refreshed `path` less than one expiry ago; drops stale records.
    pub(crate) fn is_occupied(&self, path: &str, now: Instant) -> bool {
        let expiry = self.expiry;
        self.with(|m| {
            let Some(eps) = m.get_mut(path) else {
                return false;
            };
            eps.retain(|_, last| now.saturating_duration_since(*last) < expiry);
            let live = !eps.is_empty();
            if !live {
                m.remove(path);
            }
            live
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_close_expire() {
        let r = FileRecords::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let a: Endpoint = ("10.0.0.1".into(), 9000);
        let b: Endpoint = ("10.0.0.2".into(), 0);
        assert!(!r.is_occupied("/f", t0));
        r.refresh("/f", a.clone(), t0);
        r.refresh("/f", b.clone(), t0);
        assert!(r.is_occupied("/f", t0 + Duration::from_secs(4)));
        assert!(!r.is_occupied("/g", t0));
        r.close("/f", &a);
        assert!(r.is_occupied("/f", t0));
        r.close("/f", &b);
        assert!(!r.is_occupied("/f", t0));
        r.refresh("/f", a, t0);
        assert!(!r.is_occupied("/f", t0 + Duration::from_secs(5)));
    }
}
