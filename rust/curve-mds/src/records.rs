//! File records: which client endpoints hold which file open, learnt from RefreshSession and
//! forgotten on CloseFile or after one expiry without a refresh (reference §10). They live in
//! memory only, as upstream's do; a restarted MDS therefore refuses deletions for one expiry.
//! Clients that exit without CloseFile (UnInit sends none) leave records behind, so expired
//! ones are swept as upstream's 0.5 s scan does, or memory would only ever grow.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client as the MDS identifies it: (clientIP, clientPort).
pub(crate) type Endpoint = (String, u32);

/// When each endpoint last refreshed, and the clientVersion it gave then.
type ByPath = HashMap<String, HashMap<Endpoint, (Instant, Option<String>)>>;

#[derive(Debug)]
pub(crate) struct FileRecords {
    expiry: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_path: ByPath,
    /// When expired records of every path were last dropped.
    last_sweep: Option<Instant>,
}

/// How often `refresh` drops the expired records of every path (upstream scans every 0.5 s).
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

impl FileRecords {
    pub(crate) fn new(expiry: Duration) -> Self {
        Self {
            expiry,
            state: Mutex::new(State::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic elsewhere while holding the lock leaves the map consistent (each operation is
        // a single insert/remove), so a poisoned lock is still safe to use.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Records a refresh; at most every [`SWEEP_INTERVAL`] also drops every expired record,
    /// so paths nobody asks about again do not keep theirs for ever.
    pub(crate) fn refresh(
        &self,
        path: &str,
        endpoint: Endpoint,
        version: Option<&str>,
        now: Instant,
    ) {
        let expiry = self.expiry;
        self.with(|s| {
            let due = s
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_INTERVAL);
            if due {
                s.by_path.retain(|_, eps| {
                    eps.retain(|_, (last, _)| now.saturating_duration_since(*last) < expiry);
                    !eps.is_empty()
                });
                s.last_sweep = Some(now);
            }
            s.by_path
                .entry(path.to_owned())
                .or_default()
                .insert(endpoint, (now, version.map(str::to_owned)));
        });
    }

    pub(crate) fn close(&self, path: &str, endpoint: &Endpoint) {
        self.with(|s| {
            let m = &mut s.by_path;
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
        self.with(|s| {
            let m = &mut s.by_path;
            let Some(eps) = m.get_mut(path) else {
                return false;
            };
            eps.retain(|_, (last, _)| now.saturating_duration_since(*last) < expiry);
            let live = !eps.is_empty();
            if !live {
                m.remove(path);
            }
            live
        })
    }

    /// The smallest clientVersion (as strings compare, as upstream's
    /// GetMinimumFileClientVersion) among live records of `path` that gave one.
    pub(crate) fn min_version(&self, path: &str, now: Instant) -> Option<String> {
        let expiry = self.expiry;
        self.with(|s| {
            s.by_path.get(path).and_then(|eps| {
                eps.values()
                    .filter(|(last, _)| now.saturating_duration_since(*last) < expiry)
                    .filter_map(|(_, v)| v.clone())
                    .min()
            })
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
        r.refresh("/f", a.clone(), None, t0);
        r.refresh("/f", b.clone(), None, t0);
        assert!(r.is_occupied("/f", t0 + Duration::from_secs(4)));
        assert!(!r.is_occupied("/g", t0));
        r.close("/f", &a);
        assert!(r.is_occupied("/f", t0));
        r.close("/f", &b);
        assert!(!r.is_occupied("/f", t0));
        r.refresh("/f", a, None, t0);
        assert!(!r.is_occupied("/f", t0 + Duration::from_secs(5)));
    }

    #[test]
    fn records_nobody_asks_about_are_swept() {
        let r = FileRecords::new(Duration::from_secs(5));
        let t0 = Instant::now();
        for port in 0..100 {
            r.refresh("/gone", ("10.0.0.1".into(), port), None, t0);
        }
        r.refresh(
            "/live",
            ("10.0.0.2".into(), 0),
            None,
            t0 + Duration::from_secs(4),
        );
        // Nobody deletes or renames "/gone" again; later refreshes of others drop it.
        r.refresh(
            "/other",
            ("10.0.0.3".into(), 0),
            None,
            t0 + Duration::from_secs(6),
        );
        let paths = r.with(|s| {
            let mut paths: Vec<String> = s.by_path.keys().cloned().collect();
            paths.sort();
            paths
        });
        assert_eq!(paths, ["/live", "/other"]);
    }

    #[test]
    fn minimum_version_of_live_records() {
        let r = FileRecords::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(r.min_version("/f", t0), None);
        r.refresh("/f", ("a".into(), 1), Some("curvefs-0.1.0"), t0);
        r.refresh("/f", ("b".into(), 1), Some("0.0.5.2"), t0);
        r.refresh("/f", ("c".into(), 1), None, t0);
        assert_eq!(r.min_version("/f", t0).as_deref(), Some("0.0.5.2"));
        assert_eq!(r.min_version("/f", t0 + Duration::from_secs(5)), None);
    }
}
