//! An IO's piece futures run side by side under the per-file in-flight limit
//! (`global.fileMaxInFlightRPCNum`): what open files and read-only files share.

use futures::StreamExt;

use crate::error::Result;

/// The piece futures of one IO, at most `max_in_flight` polled at once. They are made as
/// room frees up, not all up front: a future holds its whole state machine from birth
/// (a few KiB), and a 64 MiB IO has 1,024 pieces, so a `preadinto` into a preallocated
/// buffer allocated in proportion to its size (bench_compare's memory probe).
pub(crate) enum Running<F> {
    /// One piece (QD1): awaited as it is, with no stream machinery in between.
    One(Option<F>),
    Many {
        set: futures::stream::FuturesUnordered<F>,
        max: usize,
    },
}

impl<F: std::future::Future<Output = Result<()>>> Running<F> {
    pub(crate) fn new(pieces: usize, max_in_flight: usize) -> Self {
        if pieces == 1 {
            Running::One(None)
        } else {
            Running::Many {
                set: futures::stream::FuturesUnordered::new(),
                max: max_in_flight.max(1),
            }
        }
    }

    fn has_room(&self) -> bool {
        match self {
            Running::One(f) => f.is_none(),
            Running::Many { set, max } => set.len() < *max,
        }
    }

    fn push(&mut self, job: F) {
        match self {
            Running::One(f) => *f = Some(job),
            Running::Many { set, .. } => set.push(job),
        }
    }

    /// Runs the pieces `jobs` makes, each made only once there is room for it; the first
    /// error, in making a piece or in running one, ends the IO.
    pub(crate) async fn drive(mut self, mut jobs: impl Iterator<Item = Result<F>>) -> Result<()> {
        loop {
            while self.has_room() {
                let Some(job) = jobs.next() else {
                    break;
                };
                self.push(job?);
            }
            if !self.next_done().await? {
                return Ok(());
            }
        }
    }

    /// Waits for one piece: `Ok(false)` once none is left; the first error ends the IO
    /// (the pieces still running are dropped with it, as before).
    async fn next_done(&mut self) -> Result<bool> {
        match self {
            Running::One(f) => match f.take() {
                Some(job) => job.await.map(|()| true),
                None => Ok(false),
            },
            Running::Many { set, .. } => match set.next().await {
                Some(r) => r.map(|()| true),
                None => Ok(false),
            },
        }
    }
}
