//! `CBDClient`: upstream's SWIG class, method for method.
//!
//! Each method converts its arguments to owned values (or borrows a buffer), releases the
//! GIL for the whole wait on the Rust core, and builds its Python result after. The
//! Curve semantics (paths, alignment, retries, codes) are curve-client's; this file only
//! translates.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use curve_client::{Client, ClientConfig, CreateOptions};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::aio::{self, AioContext};
use crate::args;
use crate::buffers;
use crate::errors::{self, BAD_FD, CallError, CallResult, FAILED, PARAM_ERROR};
use crate::runtime::{self, Owned};
use crate::types::{CreateContext, FileInfo, UserInfo};

/// A client of one Curve cluster, configured by `Init(conf_path)`.
///
/// Safe to share between threads: the client is reached through an `Arc` taken under a
/// short lock, so `UnInit` in one thread never waits for IO in another, and IO already
/// under way finishes on the client it started with. `subclass`: `curvefs.CBDClient` (Python)
/// derives from it to add upstream's calls that are plain Python over these.
#[pyclass(frozen, subclass, module = "curvefs")]
pub struct CBDClient {
    /// In a forked child, an inherited client raises (UnInit does nothing) and is leaked.
    inner: Owned<RwLock<Option<Arc<Client>>>>,
}

impl CBDClient {
    /// The initialised client, or `code` (the method's "not initialised" answer).
    fn client(&self, code: i32) -> CallResult<Arc<Client>> {
        self.inner
            .get("CBDClient")?
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| CallError::not_initialized(code))
    }

    /// Runs `call` on the shared runtime with the GIL released. Arguments must already be
    /// owned or borrowed from objects the caller keeps alive.
    fn wait<T, F, Fut>(py: Python<'_>, client: Arc<Client>, call: F) -> CallResult<T>
    where
        T: Send,
        F: FnOnce(Arc<Client>) -> Fut + Send,
        Fut: Future<Output = curve_client::Result<T>> + Send,
    {
        runtime::wait(py, call(client))?.map_err(CallError::from)
    }

    /// A namespace call that answers 0 or a negative code. `args` are the converted
    /// Python arguments: a bad one is answered with its code before any client is needed.
    fn status<A, F, Fut>(&self, py: Python<'_>, args: CallResult<A>, call: F) -> PyResult<i32>
    where
        A: Send,
        F: FnOnce(Arc<Client>, A) -> Fut + Send,
        Fut: Future<Output = curve_client::Result<()>> + Send,
    {
        errors::as_int(
            args.and_then(|a| {
                let c = self.client(FAILED)?;
                Self::wait(py, c, move |c| call(c, a))
            })
            .map(|()| 0),
        )
    }
}

impl Drop for CBDClient {
    /// A client dropped without UnInit still stops its lease refreshers, as upstream's
    /// destructor did; in a forked child there is nothing left to stop.
    fn drop(&mut self) {
        if self.inner.inherited() {
            return;
        }
        let client = self
            .inner
            .get_mut()
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(client) = client
            && let Ok(rt) = runtime::get()
        {
            let _entered = rt.enter();
            client.shutdown();
        }
    }
}

#[pymethods]
impl CBDClient {
    #[new]
    fn new() -> Self {
        CBDClient {
            inner: Owned::new(RwLock::new(None)),
        }
    }

    /// Reads the client configuration; no RPC is made. 0, or -1 on any failure.
    #[pyo3(name = "Init")]
    fn init(&self, py: Python<'_>, conf_path: PathBuf) -> PyResult<i32> {
        let slot = self.inner.get("CBDClient")?;
        if self.client(FAILED).is_ok() {
            // Upstream's FileClient::Init keeps the first configuration.
            return Ok(0);
        }
        let rt = runtime::get()?;
        // No lock is held while detached: a thread waiting for the lock with the GIL held
        // would otherwise keep us from re-attaching.
        let built = py.detach(|| {
            let _entered = rt.enter();
            ClientConfig::from_file(&conf_path).and_then(Client::new)
        });
        let Ok(client) = built else {
            return Ok(-1);
        };
        let mut inner = slot.write().unwrap_or_else(PoisonError::into_inner);
        if inner.is_none() {
            *inner = Some(Arc::new(client));
            return Ok(0);
        }
        drop(inner);
        // Another thread's Init won the race; keep its client, as a second Init would.
        py.detach(|| {
            let _entered = rt.enter();
            client.shutdown();
            drop(client);
        });
        Ok(0)
    }

    /// Drops the client; open fds are forgotten without CloseFile, as upstream.
    #[pyo3(name = "UnInit")]
    /// In a forked child: nothing (the client's sessions are the parent's).
    fn uninit(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.inherited() {
            return Ok(());
        }
        let client = self
            .inner
            .get("CBDClient")?
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(client) = client {
            let rt = runtime::get()?;
            py.detach(|| {
                let _entered = rt.enter();
                client.shutdown();
                drop(client);
            });
        }
        Ok(())
    }

    #[pyo3(name = "Create")]
    fn create(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
        size: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        let args = args::both(args::text(filename, "filename"), args::uint(size, "size"));
        let user = args::user(user)?;
        self.status(py, args, move |c, (path, size)| async move {
            c.create(&path, &user, size, &CreateOptions::default())
                .await
        })
    }

    #[pyo3(name = "Create2")]
    fn create2(&self, py: Python<'_>, context: PyRef<'_, CreateContext>) -> PyResult<i32> {
        let path = context.name.clone();
        let size = context.length;
        let user = args::user(context.user.bind(py))?;
        let opts = CreateOptions {
            stripe_unit: context.stripe_unit,
            stripe_count: context.stripe_count,
            poolset: context.poolset.clone(),
        };
        drop(context);
        self.status(py, Ok(()), move |c, ()| async move {
            c.create(&path, &user, size, &opts).await
        })
    }

    /// Fills `finfo` in place; 0 or a negative code.
    #[pyo3(name = "StatFile")]
    fn stat_file(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
        finfo: &Bound<'_, FileInfo>,
    ) -> PyResult<i32> {
        let user = args::user(user)?;
        let r = args::text(filename, "filename").and_then(|path| {
            let c = self.client(FAILED)?;
            Self::wait(py, c, move |c| async move { c.stat(&path, &user).await })
        });
        errors::as_int(r.and_then(|info| {
            finfo
                .try_borrow_mut()
                .map_err(PyErr::from)?
                .fill_from(&info);
            Ok(0)
        }))
    }

    #[pyo3(name = "Extend")]
    fn extend(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
        size: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        let args = args::both(args::text(filename, "filename"), args::uint(size, "size"));
        let user = args::user(user)?;
        self.status(py, args, move |c, (path, size)| async move {
            c.extend(&path, &user, size).await
        })
    }

    /// An fd (≥ 0) or a negative code.
    #[pyo3(name = "Open")]
    fn open(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
    ) -> PyResult<i32> {
        let user = args::user(user)?;
        errors::as_int(args::text(filename, "filename").and_then(|path| {
            let c = self.client(FAILED)?;
            Self::wait(py, c, move |c| async move { c.open(&path, &user).await })
        }))
    }

    #[pyo3(name = "Close")]
    fn close(&self, py: Python<'_>, fd: &Bound<'_, PyAny>) -> PyResult<i32> {
        errors::as_int(args::fd(fd).and_then(|fd| {
            let c = self.client(BAD_FD)?;
            Self::wait(py, c, move |c| async move { c.close(fd).await }).map(|()| 0)
        }))
    }

    /// `length` bytes read at `offset`, or a negative code. `buf` is ignored, as upstream.
    #[pyo3(name = "Read")]
    #[allow(unused_variables)]
    fn read<'py>(
        &self,
        py: Python<'py>,
        fd: &Bound<'py, PyAny>,
        buf: &Bound<'py, PyAny>,
        offset: &Bound<'py, PyAny>,
        length: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let code = |c: i32| -> PyResult<Bound<'py, PyAny>> { Ok(c.into_pyobject(py)?.into_any()) };
        let parsed = (|| -> CallResult<(i32, u64, usize)> {
            let fd = args::fd(fd)?;
            let offset = args::uint(offset, "offset")?;
            let length = usize::try_from(args::uint(length, "length")?)
                .ok()
                .filter(|l| isize::try_from(*l).is_ok())
                .ok_or_else(|| CallError::param("length is out of range"))?;
            Ok((fd, offset, length))
        })();
        let (fd, offset, length) = match parsed {
            Ok(v) => v,
            Err(e) => return code(errors::as_int(Err(e))?),
        };
        let client = match self.client(BAD_FD) {
            Ok(c) => c,
            Err(e) => return code(errors::as_int(Err(e))?),
        };
        // An impossible read (past the end, unaligned) is refused before `length` bytes
        // are allocated for it: a huge length must give a code, not a MemoryError. A read
        // that is aligned and inside the length known already needs no wait for that (one
        // runtime round trip less per 4 KiB read).
        let file = client.file(fd).ok();
        let plainly_fine = file
            .as_ref()
            .is_some_and(|f| f.within_known_bounds(offset, length as u64));
        if !plainly_fine
            && let Err(e) = runtime::wait(py, client.check_read(fd, offset, length as u64))?
        {
            return code(e.sdk_code());
        }
        // The data lands once, directly in the bytes object handed to Python, which is
        // not zeroed first. The file found above serves the read (the fd table is not
        // searched twice per call).
        let data = buffers::new_bytes_filled(py, length, |out| match &file {
            _ if out.is_empty() => Ok(Ok(())),
            Some(f) => runtime::wait(py, f.read_uninit(offset, out)),
            None => runtime::wait(py, client.read_uninit(fd, offset, out)),
        })?;
        match data {
            Ok(data) => Ok(data.into_any()),
            Err(e) => code(e.sdk_code()),
        }
    }

    /// Starts an asynchronous read of `ctx.length` bytes at `ctx.offset` into `ctx.buf`:
    /// 0 once submitted (then `ctx.ret` and `ctx.cb(ctx)` tell the outcome), or a code.
    #[pyo3(name = "AioRead")]
    fn aio_read(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        ctx: &Bound<'_, AioContext>,
    ) -> PyResult<i32> {
        errors::as_int(
            args::fd(fd)
                .and_then(|fd| aio::submit(py, self.client(BAD_FD), fd, ctx, false))
                .map(|()| 0),
        )
    }

    /// Starts an asynchronous write of `ctx.length` bytes of `ctx.buf` (sent as it is, not
    /// copied) at `ctx.offset`: 0 once submitted, or a code.
    #[pyo3(name = "AioWrite")]
    fn aio_write(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        ctx: &Bound<'_, AioContext>,
    ) -> PyResult<i32> {
        errors::as_int(
            args::fd(fd)
                .and_then(|fd| aio::submit(py, self.client(BAD_FD), fd, ctx, true))
                .map(|()| 0),
        )
    }

    /// `length` (the bytes written) or a negative code. `buf` is `str` (written as UTF-8) or
    /// any C-contiguous buffer of at least `length` bytes; its chunk requests send slices
    /// of it, never a copy.
    #[pyo3(name = "Write")]
    fn write(
        &self,
        py: Python<'_>,
        fd: &Bound<'_, PyAny>,
        buf: &Bound<'_, PyAny>,
        offset: &Bound<'_, PyAny>,
        length: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        errors::as_int((|| {
            if let Ok(s) = buf.cast::<PyString>()
                && s.to_str().is_err()
            {
                return Err(CallError::param("buf is not valid UTF-8"));
            }
            let data = buffers::pinned_bytes(buf)?;
            let fd = args::fd(fd)?;
            let offset = args::uint(offset, "offset")?;
            let length = args::uint(length, "length")?;
            // The SDK returns `length` as a C int.
            let length =
                i32::try_from(length).map_err(|_| CallError::param("length is out of range"))?;
            if length as usize > data.len() {
                return Err(CallError::code(
                    PARAM_ERROR,
                    format!("length {length} exceeds the {} bytes of buf", data.len()),
                ));
            }
            let bytes = data.slice(..length as usize);
            let client = self.client(BAD_FD)?;
            runtime::wait(py, client.write_bytes(fd, offset, bytes))??;
            Ok(length)
        })())
    }

    #[pyo3(name = "Unlink")]
    fn unlink(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
    ) -> PyResult<i32> {
        let user = args::user(user)?;
        self.status(
            py,
            args::text(filename, "filename"),
            move |c, path| async move { c.unlink(&path, &user).await },
        )
    }

    #[pyo3(name = "DeleteForce")]
    fn delete_force(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
    ) -> PyResult<i32> {
        let user = args::user(user)?;
        self.status(
            py,
            args::text(filename, "filename"),
            move |c, path| async move { c.delete_force(&path, &user).await },
        )
    }

    #[pyo3(name = "Recover", signature = (filename, user, fileId = None))]
    #[pyo3(text_signature = "($self, filename, user, fileId=0)")]
    #[allow(non_snake_case)] // upstream's keyword name
    fn recover(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
        fileId: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i32> {
        let file_id = match fileId {
            Some(id) => args::uint(id, "fileId"),
            None => Ok(0),
        };
        let args = args::both(args::text(filename, "filename"), file_id);
        let user = args::user(user)?;
        self.status(py, args, move |c, (path, file_id)| async move {
            c.recover(&path, &user, file_id).await
        })
    }

    #[pyo3(name = "Rename")]
    fn rename(
        &self,
        py: Python<'_>,
        user: &Bound<'_, UserInfo>,
        oldpath: &Bound<'_, PyAny>,
        newpath: &Bound<'_, PyAny>,
    ) -> PyResult<i32> {
        let args = args::both(
            args::text(oldpath, "oldpath"),
            args::text(newpath, "newpath"),
        );
        let user = args::user(user)?;
        self.status(py, args, move |c, (old, new)| async move {
            c.rename(&user, &old, &new).await
        })
    }

    #[pyo3(name = "Mkdir")]
    fn mkdir(
        &self,
        py: Python<'_>,
        dirpath: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
    ) -> PyResult<i32> {
        let user = args::user(user)?;
        self.status(
            py,
            args::text(dirpath, "dirpath"),
            move |c, path| async move { c.mkdir(&path, &user).await },
        )
    }

    /// The same DeleteFile call as Unlink, as upstream (no type check on the client).
    #[pyo3(name = "Rmdir")]
    fn rmdir(
        &self,
        py: Python<'_>,
        dirpath: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
    ) -> PyResult<i32> {
        self.unlink(py, dirpath, user)
    }

    /// Names of the entries of `dirpath`; raises `CurveError` on failure, as upstream's
    /// SWIG wrapper did.
    #[pyo3(name = "Listdir")]
    fn listdir<'py>(
        &self,
        py: Python<'py>,
        dirpath: &Bound<'py, PyAny>,
        user: &Bound<'py, UserInfo>,
    ) -> PyResult<Bound<'py, PyList>> {
        let user = args::user(user)?;
        let r = args::text(dirpath, "dirpath").and_then(|path| {
            let c = self.client(FAILED)?;
            Self::wait(
                py,
                c,
                move |c| async move { c.list_dir(&path, &user).await },
            )
        });
        let entries = errors::raising(py, r)?;
        PyList::new(py, entries.iter().map(|f| f.name.as_str()))
    }

    /// The cluster's id, or "" on any failure.
    #[pyo3(name = "GetClusterId")]
    fn get_cluster_id(&self, py: Python<'_>) -> PyResult<String> {
        let r = self
            .client(FAILED)
            .and_then(|c| Self::wait(py, c, |c| async move { c.cluster_id().await }));
        match r {
            Ok(id) => Ok(id),
            Err(CallError::Code { .. }) => Ok(String::new()),
            Err(CallError::Py(e)) => Err(e),
        }
    }

    #[pyo3(name = "ChangeOwner")]
    #[allow(non_snake_case)] // upstream's keyword name
    fn change_owner(
        &self,
        py: Python<'_>,
        filename: &Bound<'_, PyAny>,
        newOwner: &Bound<'_, PyAny>,
        user: &Bound<'_, UserInfo>,
    ) -> PyResult<i32> {
        let args = args::both(
            args::text(filename, "filename"),
            args::text(newOwner, "newOwner"),
        );
        let user = args::user(user)?;
        self.status(py, args, move |c, (path, owner)| async move {
            c.change_owner(&path, &owner, &user).await
        })
    }

    /// Names of the cluster's poolsets; raises `CurveError` on failure.
    #[pyo3(name = "ListPoolset")]
    fn list_poolset(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let r = self
            .client(FAILED)
            .and_then(|c| Self::wait(py, c, |c| async move { c.list_poolsets().await }));
        errors::raising(py, r)
    }

    fn __repr__(&self) -> String {
        let state = if self.client(FAILED).is_ok() {
            "initialized"
        } else {
            "not initialized"
        };
        format!("<curvefs.CBDClient ({state})>")
    }
}
