//! The one tokio runtime every client of the process shares, and what happens across
//! `fork()`.
//!
//! Built on first use so that `CURVEFS_RUNTIME_THREADS` can be set after import. tokio is not
//! fork-safe: a child forked after the runtime started has its memory but none of its
//! threads, so any wait on it would hang forever, and its sockets and sessions are the
//! parent's. So a `pthread_atfork` handler bumps a fork generation in every child; the
//! child builds a runtime of its own on first use (the parent's is leaked, never dropped:
//! dropping it would wait for threads that do not exist there), and every object that
//! holds core state remembers the generation it was made in ([`Owned`]): used in a later
//! one it raises, and dropped there it is leaked, so the child never touches the
//! parent's sockets, sessions or runtime.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// How many forks lie between the process that loaded the module and this one.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The `pthread_atfork` child handler: runs in the child right after `fork`.
extern "C" fn note_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler (at import, before anything can be inherited).
pub fn watch_forks() -> PyResult<()> {
    // SAFETY: the handler only adds to an atomic, which is async-signal-safe and so
    // allowed in a child after fork; it is a plain `extern "C" fn` that lives for the
    // whole program, as pthread_atfork requires.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(note_fork)) };
    if rc != 0 {
        return Err(PyRuntimeError::new_err(format!(
            "pthread_atfork failed ({rc}): curvefs could not tell a forked child"
        )));
    }
    Ok(())
}

fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

struct Built {
    runtime: Runtime,
    generation: u64,
}

/// The runtime of this process's generation (or of an earlier one, which `get` ignores).
/// Each is leaked: see the module docs.
static CURRENT: AtomicPtr<Built> = AtomicPtr::new(std::ptr::null_mut());
/// Held while a runtime is built, so two threads build one.
static BUILDING: Mutex<()> = Mutex::new(());

/// Worker threads asked for through `set_threads` before the runtime was built (0: none).
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);

fn current() -> Option<&'static Runtime> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer here came from `Box::leak` in `get`, and nothing frees it.
    let built = unsafe { p.as_ref() }?;
    (built.generation == generation()).then_some(&built.runtime)
}

/// Sizes the runtime before its first use (`curvefs.set_runtime_threads`); refused once
/// it runs, because tokio cannot resize a running runtime. A forked child may size its own.
pub fn set_threads(n: usize) -> PyResult<()> {
    if !(1..=1024).contains(&n) {
        return Err(PyValueError::new_err(format!(
            "threads must be from 1 to 1024, not {n}"
        )));
    }
    if current().is_some() {
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

fn build() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads()?)
        .thread_name("curvefs-client")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the curvefs runtime: {e}"))
}

/// This process's runtime, built on first use (in a forked child: its own, on the
/// child's first use). Called with the GIL held on every call: one atomic load and a
/// compare, no system call.
pub fn get() -> PyResult<&'static Runtime> {
    if let Some(rt) = current() {
        return Ok(rt);
    }
    let _building = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(rt) = current() {
        return Ok(rt);
    }
    let runtime = build().map_err(PyRuntimeError::new_err)?;
    // The core's events go to Python's logging from the first runtime on (a server
    // process, which builds no such runtime, keeps its own log subscriber).
    crate::logging::install();
    let built: &'static Built = Box::leak(Box::new(Built {
        runtime,
        generation: generation(),
    }));
    CURRENT.store(std::ptr::from_ref(built).cast_mut(), Ordering::Release);
    Ok(&built.runtime)
}

/// A value that holds core state (a client, an open volume, a task): usable only in the
/// process generation that made it. In a forked child, [`Owned::get`] raises and dropping
/// leaks the value, so the child never closes, aborts or writes to what is the parent's.
pub struct Owned<T> {
    value: ManuallyDrop<T>,
    generation: u64,
}

impl<T> Owned<T> {
    pub fn new(value: T) -> Self {
        Owned {
            value: ManuallyDrop::new(value),
            generation: generation(),
        }
    }

    /// True in a process forked after the value was made.
    pub fn inherited(&self) -> bool {
        self.generation != generation()
    }

    /// The value, or a `RuntimeError` naming the fork for an inherited one; `what` names
    /// the object ("Client", "Volume", …).
    pub fn get(&self, what: &str) -> PyResult<&T> {
        if self.inherited() {
            return Err(inherited_error(what));
        }
        Ok(&self.value)
    }

    /// The value even in a forked child: only for what reads plain data (a path).
    pub fn get_unchecked(&self) -> &T {
        &self.value
    }

    /// The value for `Drop` impls (which check [`Owned::inherited`] first).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

/// The error for an object used in a child forked after it was made.
pub fn inherited_error(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "this curvefs {what} was made before this process forked (this is pid {}): a forked \
         child cannot use its parent's clients, volumes or tasks, whose connections and \
         sessions stay the parent's; create a new {what} in the child",
        std::process::id()
    ))
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.inherited() {
            // SAFETY: `value` is dropped here only, once, and never used after.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
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
