//! The one tokio runtime every `CBDClient` of the process shares.
//!
//! Built on first use so that `CURVEFS_RUNTIME_THREADS` can be set after import. tokio is not
//! fork-safe: a child forked after the runtime started has its memory but none of its
//! threads, so any wait on it would hang forever. We record the pid that built it and refuse
//! to run in another one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// Worker threads when `CURVEFS_RUNTIME_THREADS` is unset: the client's IO is driven on the
/// calling thread by `block_on`; the workers only run the connections' background tasks, and
/// on a 2-vCPU box more would compete with the application and the local cluster.
const DEFAULT_THREADS: usize = 2;

pub const THREADS_ENV: &str = "CURVEFS_RUNTIME_THREADS";

struct Built {
    runtime: Runtime,
    pid: u32,
    /// Whether `mark_forked` runs in every child forked from now on; if not, each call
    /// compares pids instead (a system call per call).
    fork_noted: bool,
}

/// Set in a child forked after the runtime was built (by `mark_forked`).
static FORKED: AtomicBool = AtomicBool::new(false);

/// The `pthread_atfork` child handler: runs in the child right after `fork`.
extern "C" fn mark_forked() {
    FORKED.store(true, Ordering::Relaxed);
}

static RUNTIME: OnceLock<Result<Built, String>> = OnceLock::new();

/// Worker threads asked for through `set_threads` before the runtime was built (0: none).
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sizes the runtime before its first use (`curvefs.set_runtime_threads`); refused once
/// it runs, because tokio cannot resize a running runtime.
pub fn set_threads(n: usize) -> PyResult<()> {
    if !(1..=1024).contains(&n) {
        return Err(PyValueError::new_err(format!(
            "threads must be from 1 to 1024, not {n}"
        )));
    }
    if RUNTIME.get().is_some() {
        return Err(PyRuntimeError::new_err(
            "the curvefs runtime is already running; set its size before the first call",
        ));
    }
    REQUESTED_THREADS.store(n, Ordering::Release);
    Ok(())
}

fn threads() -> Result<usize, String> {
    let requested = REQUESTED_THREADS.load(Ordering::Acquire);
    if requested > 0 {
        return Ok(requested);
    }
    match std::env::var(THREADS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_THREADS),
        Err(e) => Err(format!("{THREADS_ENV}: {e}")),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "{THREADS_ENV} must be an integer from 1 to 1024, not {v:?}"
            )),
        },
    }
}

fn build() -> Result<Built, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads()?)
        .thread_name("curvefs-client")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the curvefs runtime: {e}"))?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe and so
    // allowed in a child after fork; it is a plain `extern "C" fn` that lives for the
    // whole program, as pthread_atfork requires.
    let fork_noted = unsafe { libc::pthread_atfork(None, None, Some(mark_forked)) } == 0;
    Ok(Built {
        runtime,
        pid: std::process::id(),
        fork_noted,
    })
}

/// The shared runtime, built on first use; an error (never a hang) in a forked child.
/// Called with the GIL held on every call: a flag set at fork tells a child, so no call
/// pays a `getpid` system call for it.
pub fn get() -> PyResult<&'static Runtime> {
    match RUNTIME.get_or_init(build) {
        Ok(b) if b.fork_noted && !FORKED.load(Ordering::Relaxed) => Ok(&b.runtime),
        Ok(b) if !b.fork_noted && b.pid == std::process::id() => Ok(&b.runtime),
        Ok(b) => Err(PyRuntimeError::new_err(format!(
            "curvefs cannot be used in a process forked after it started (runtime of pid {}, \
             this is pid {}); use the 'spawn' or 'forkserver' start method, or fork before \
             the first CBDClient call",
            b.pid,
            std::process::id()
        ))),
        Err(msg) => Err(PyRuntimeError::new_err(msg.clone())),
    }
}

/// Set by an `atexit` hook: the interpreter is shutting down.
static EXITING: AtomicBool = AtomicBool::new(false);
/// Threads between the end of their wait and having the GIL back.
static REATTACHING: AtomicUsize = AtomicUsize::new(0);

/// The `atexit` hook (registered at import). Before Python 3.14 a thread that takes the
/// GIL once finalization has begun is ended with `pthread_exit`, and that forced unwind
/// through PyO3's frames aborts the process. So from here on a thread that finishes a
/// wait parks instead of re-attaching, and the ones already on their way back get the
/// GIL now, while that is still safe (at most 1 s is spent waiting for them).
pub fn note_exiting(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while REATTACHING.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// False once the interpreter is shutting down: runtime threads must not call into
/// Python any more (they would wait for an interpreter that is going away).
pub fn python_alive() -> bool {
    !EXITING.load(Ordering::Acquire)
}

/// Called by a thread (not the main one) whose wait is over, before it re-attaches:
/// counts it as re-attaching, or, once the interpreter exits, parks it for good (a daemon
/// thread; non-daemon ones were joined before `atexit`). The order of the counter and the
/// flag pairs with `note_exiting`: either the hook sees this thread coming back and waits
/// for it, or this thread sees the flag and never re-attaches.
fn begin_reattach() {
    REATTACHING.fetch_add(1, Ordering::SeqCst);
    if EXITING.load(Ordering::SeqCst) {
        REATTACHING.fetch_sub(1, Ordering::SeqCst);
        loop {
            std::thread::park();
        }
    }
}

/// Python's main thread, as `threading.get_ident()` names it; only it receives signals.
static MAIN_THREAD: OnceLock<u64> = OnceLock::new();

/// Records the interpreter's main thread (at import).
pub fn note_main_thread(py: Python<'_>) -> PyResult<()> {
    let ident: u64 = py
        .import("threading")?
        .call_method0("main_thread")?
        .getattr("ident")?
        .extract()?;
    let _ = MAIN_THREAD.set(ident);
    Ok(())
}

fn on_main_thread() -> bool {
    // SAFETY: pthread_self has no preconditions and cannot fail; on Linux its value is
    // what `threading.get_ident()` reports.
    let me = unsafe { libc::pthread_self() };
    MAIN_THREAD.get().is_some_and(|m| me == *m)
}

/// How often a waiting call on the main thread looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(20);

/// Wakes the thread that waits for a future (see `wait_checking_signals`).
struct Unparker(std::thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` on the shared runtime with the GIL released. On the main thread it also
/// looks for pending signals every 20 ms: a Ctrl-C makes it drop `fut` (abandoning the
/// request: every pending reply and lock is released by dropping) and raise
/// `KeyboardInterrupt` within that time, instead of waiting out the call's deadline.
pub fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = get()?;
    if !on_main_thread() {
        let out = py.detach(|| {
            let out = rt.block_on(fut);
            begin_reattach();
            out
        });
        REATTACHING.fetch_sub(1, Ordering::SeqCst);
        return Ok(out);
    }
    py.detach(|| wait_checking_signals(rt, fut))
}

/// The main thread's wait: polls `fut` on this thread, parked between polls for at most
/// `SIGNAL_POLL`, and looks for signals whenever that much time has passed.
///
/// Not `block_on` with a tokio interval beside the future: a timer registered per call
/// costs every call (tokio rounds a deadline up to its next 1 ms tick, and an interval's
/// first tick went through the timer wheel, so each call on the main thread waited for
/// it: 1.3 ms per 4 KiB read against 0.06 ms on any other thread), and an earlier
/// deadline than the driver's next one wakes a runtime worker to re-arm it. A timed
/// park of this thread needs neither; the futures still find the runtime (its IO and
/// timer drivers, run by the workers) through the entered context.
fn wait_checking_signals<F: Future>(rt: &Runtime, fut: F) -> PyResult<F::Output> {
    let _entered = rt.enter();
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let mut next_check = Instant::now() + SIGNAL_POLL;
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        // A wake-up before the poll above left a token: this park returns at once.
        // Otherwise it returns on a wake, a signal's interruption, or the timeout;
        // spurious returns only cost a poll.
        let now = Instant::now();
        if now >= next_check {
            // SAFETY: Py_IsInitialized only reads a flag of the runtime; it may be
            // called at any time, with or without the GIL.
            // At interpreter exit (a volume closed by a finalizer) there is no
            // interpreter left to ask about signals: just wait.
            if unsafe { pyo3::ffi::Py_IsInitialized() } != 0 {
                // An error (KeyboardInterrupt) drops `fut` on the way out, before the
                // runtime context is left.
                Python::attach(|py| py.check_signals())?;
            }
            next_check = Instant::now() + SIGNAL_POLL;
            continue;
        }
        std::thread::park_timeout(next_check - now);
    }
}
