//! The native half of the Pythonic API (`curvefs.Client`, `curvefs.Volume`): a client
//! handle and an open-volume handle that raise `curvefs.exceptions` errors, where
//! `CBDClient` returns codes. The Python classes add the file-like protocol, enums and
//! typing; everything Curve does is in curve-client.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use curve_client::{Client, ClientConfig, CreateOptions, FileStat, OpenFile, UserInfo};
use curve_snapshotclone::{CloneError, CloneOptions, CloneTasks};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::buffers;
use crate::errors;
use crate::runtime::{self, Owned};

/// What a stat answers, as a tuple for `curvefs.FileInfo`: (id, parent_id, name, owner,
/// file_type, status, length, ctime_us, stripe_unit, stripe_count, block_size,
/// (clone_source, clone_length)); the pair because PyO3 converts tuples of up to 12.
type StatTuple = (
    u64,
    u64,
    String,
    String,
    i32,
    i32,
    u64,
    u64,
    u64,
    u64,
    u32,
    (String, u64),
);

fn stat_tuple(s: FileStat) -> StatTuple {
    (
        s.id,
        s.parent_id,
        s.name,
        s.owner,
        s.file_type,
        s.status,
        s.length,
        s.ctime_us,
        s.stripe_unit,
        s.stripe_count,
        s.block_size,
        (s.clone_source, s.clone_length),
    )
}

/// A lazy clone's stage 1, run as `user` (see `curve_snapshotclone`).
async fn lazy_clone(
    client: &Client,
    user: &UserInfo,
    source: String,
    dest: String,
    owner: Option<String>,
    poolset: Option<String>,
) -> curve_client::Result<()> {
    CloneTasks::new(client, user.clone(), CloneOptions::default())
        .lazy_clone(&source, &dest, owner.as_deref(), poolset.as_deref())
        .await
        .map(|_| ())
        .map_err(CloneError::into_client_error)
}

/// A lazy clone's flatten, run as `user`.
async fn flatten(client: &Client, user: &UserInfo, path: String) -> curve_client::Result<()> {
    CloneTasks::new(client, user.clone(), CloneOptions::default())
        .flatten(&path)
        .await
        .map_err(CloneError::into_client_error)
}

/// The exception for a failed call: its class from the code, its message naming the
/// operation and the path.
fn raise(py: Python<'_>, what: &str, e: curve_client::Error) -> PyErr {
    if !runtime::python_alive() {
        // At interpreter exit (a volume closed by its finalizer) `curvefs.exceptions`
        // may be gone, and importing it then would abort the process.
        return pyo3::exceptions::PyRuntimeError::new_err(format!("{what}: {}", e.message));
    }
    errors::curve_error_because(py, e.sdk_code(), &format!("{what}: {}", e.message), e.cause)
}

/// Runs a core call with the GIL released (Ctrl-C-aware), raising on failure.
fn call<T: Send>(
    py: Python<'_>,
    what: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = curve_client::Result<T>> + Send,
) -> PyResult<T> {
    match runtime::wait(py, fut)? {
        Ok(v) => Ok(v),
        Err(e) => Err(raise(py, &what(), e)),
    }
}

/// A client of one cluster, as one user.
#[pyclass(frozen, module = "curvefs._core")]
pub struct ClientHandle {
    client: Owned<Client>,
    user: UserInfo,
}

impl ClientHandle {
    /// The core client and its user, for the NBD server (nbd.rs).
    pub(crate) fn parts(&self) -> PyResult<(&Client, &UserInfo)> {
        Ok((self.client()?, &self.user))
    }

    /// The core client; an error in a forked child (see `runtime::Owned`).
    fn client(&self) -> PyResult<&Client> {
        self.client.get("Client")
    }
}

#[pymethods]
impl ClientHandle {
    /// `conf` is the text of a client.conf (Curve's format); no RPC is made.
    #[new]
    fn new(py: Python<'_>, conf: &str, owner: &str, password: &str) -> PyResult<Self> {
        let rt = runtime::get()?;
        let built = py.detach(|| {
            let _entered = rt.enter();
            ClientConfig::parse(conf).and_then(Client::new)
        });
        let client = built.map_err(|e| raise(py, "client.conf", e))?;
        Ok(ClientHandle {
            client: Owned::new(client),
            user: UserInfo {
                owner: owner.to_string(),
                password: password.to_string(),
            },
        })
    }

    #[pyo3(signature = (path, size, stripe_unit=0, stripe_count=0, poolset=None))]
    fn create(
        &self,
        py: Python<'_>,
        path: String,
        size: u64,
        stripe_unit: u64,
        stripe_count: u64,
        poolset: Option<String>,
    ) -> PyResult<()> {
        let opts = CreateOptions {
            stripe_unit,
            stripe_count,
            poolset: poolset.unwrap_or_default(),
        };
        call(
            py,
            || format!("create {path}"),
            self.client()?.create(&path, &self.user, size, &opts),
        )
    }

    fn mkdir(&self, py: Python<'_>, path: String) -> PyResult<()> {
        call(
            py,
            || format!("mkdir {path}"),
            self.client()?.mkdir(&path, &self.user),
        )
    }

    fn stat(&self, py: Python<'_>, path: String) -> PyResult<StatTuple> {
        call(
            py,
            || format!("stat {path}"),
            self.client()?.stat(&path, &self.user),
        )
        .map(stat_tuple)
    }

    fn extend(&self, py: Python<'_>, path: String, size: u64) -> PyResult<()> {
        call(
            py,
            || format!("extend {path}"),
            self.client()?.extend(&path, &self.user, size),
        )
    }

    /// Files go to /RecycleBin; empty directories are removed.
    fn remove(&self, py: Python<'_>, path: String) -> PyResult<()> {
        call(
            py,
            || format!("remove {path}"),
            self.client()?.unlink(&path, &self.user),
        )
    }

    fn delete_force(&self, py: Python<'_>, path: String) -> PyResult<()> {
        call(
            py,
            || format!("delete_force {path}"),
            self.client()?.delete_force(&path, &self.user),
        )
    }

    #[pyo3(signature = (path, file_id=0))]
    fn recover(&self, py: Python<'_>, path: String, file_id: u64) -> PyResult<()> {
        call(
            py,
            || format!("recover {path}"),
            self.client()?.recover(&path, &self.user, file_id),
        )
    }

    fn rename(&self, py: Python<'_>, old: String, new: String) -> PyResult<()> {
        call(
            py,
            || format!("rename {old} to {new}"),
            self.client()?.rename(&self.user, &old, &new),
        )
    }

    fn listdir(&self, py: Python<'_>, path: String) -> PyResult<Vec<String>> {
        call(
            py,
            || format!("listdir {path}"),
            self.client()?.list_dir(&path, &self.user),
        )
        .map(|entries| entries.into_iter().map(|e| e.name).collect())
    }

    fn change_owner(&self, py: Python<'_>, path: String, new_owner: String) -> PyResult<()> {
        call(
            py,
            || format!("change_owner {path}"),
            self.client()?.change_owner(&path, &new_owner, &self.user),
        )
    }

    /// Stage 1 of a lazy clone of `source` at `dest` (Curve's snapshot/clone service's
    /// work, run as this handle's user, who must be root).
    #[pyo3(signature = (source, dest, owner = None, poolset = None))]
    fn clone_volume(
        &self,
        py: Python<'_>,
        source: String,
        dest: String,
        owner: Option<String>,
        poolset: Option<String>,
    ) -> PyResult<()> {
        call(
            py,
            || format!("clone {source} to {dest}"),
            lazy_clone(
                self.client()?,
                &self.user,
                source.clone(),
                dest.clone(),
                owner,
                poolset,
            ),
        )
    }

    /// The MDS's CreateSnapShot on `path` as this handle's user: the snapshot's seq (the
    /// volume's seqNum moves on by one). For tests of the seqNum path; the snapshot/clone
    /// service's API is the user-facing one.
    fn create_mds_snapshot(&self, py: Python<'_>, path: String) -> PyResult<u64> {
        let info = call(
            py,
            || format!("create_mds_snapshot {path}"),
            self.client()?.create_snapshot(&path, &self.user),
        )?;
        Ok(info.seq_num.unwrap_or(0))
    }

    /// Stage 2 of a lazy clone: `path` stops reading from its source.
    fn flatten(&self, py: Python<'_>, path: String) -> PyResult<()> {
        call(
            py,
            || format!("flatten {path}"),
            flatten(self.client()?, &self.user, path.clone()),
        )
    }

    /// The IO metrics of every volume this client opened and its MDS client's, as
    /// `(io, mds)` dicts (`curvefs.metrics` types them).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let (io, mds) = self.client()?.metrics();
        Ok((crate::metrics::io(py, &io)?, crate::metrics::mds(py, &mds)?))
    }

    fn cluster_id(&self, py: Python<'_>) -> PyResult<String> {
        call(py, || "cluster_id".into(), self.client()?.cluster_id())
    }

    fn poolsets(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        call(py, || "poolsets".into(), self.client()?.list_poolsets())
    }

    fn open(&self, py: Python<'_>, path: String) -> PyResult<VolumeHandle> {
        let file = call(
            py,
            || format!("open {path}"),
            self.client()?.open_file(&path, &self.user),
        )?;
        Ok(VolumeHandle {
            file: Owned::new(file),
        })
    }

    // The async twins: each starts the same core call as its blocking twin above as a
    // task on the runtime, and resolves `waiter` (see `spawn_resolving`) when it ends.

    #[pyo3(signature = (path, size, stripe_unit, stripe_count, poolset, waiter))]
    fn create_async(
        &self,
        path: String,
        size: u64,
        stripe_unit: u64,
        stripe_count: u64,
        poolset: Option<String>,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        let opts = CreateOptions {
            stripe_unit,
            stripe_count,
            poolset: poolset.unwrap_or_default(),
        };
        spawn_resolving(
            waiter,
            format!("create {path}"),
            async move { c.create(&path, &u, size, &opts).await },
            unit,
        )
    }

    fn mkdir_async(&self, path: String, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("mkdir {path}"),
            async move { c.mkdir(&path, &u).await },
            unit,
        )
    }

    fn stat_async(&self, path: String, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("stat {path}"),
            async move { c.stat(&path, &u).await },
            |py, st| Ok(stat_tuple(st).into_pyobject(py)?.into_any().unbind()),
        )
    }

    fn extend_async(
        &self,
        path: String,
        size: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("extend {path}"),
            async move { c.extend(&path, &u, size).await },
            unit,
        )
    }

    fn remove_async(&self, path: String, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("remove {path}"),
            async move { c.unlink(&path, &u).await },
            unit,
        )
    }

    fn recover_async(
        &self,
        path: String,
        file_id: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("recover {path}"),
            async move { c.recover(&path, &u, file_id).await },
            unit,
        )
    }

    fn rename_async(
        &self,
        old: String,
        new: String,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("rename {old} to {new}"),
            async move { c.rename(&u, &old, &new).await },
            unit,
        )
    }

    fn listdir_async(&self, path: String, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("listdir {path}"),
            async move { c.list_dir(&path, &u).await },
            |py, entries| {
                let names: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                Ok(names.into_pyobject(py)?.into_any().unbind())
            },
        )
    }

    fn change_owner_async(
        &self,
        path: String,
        new_owner: String,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("change_owner {path}"),
            async move { c.change_owner(&path, &new_owner, &u).await },
            unit,
        )
    }

    #[pyo3(signature = (source, dest, owner, poolset, waiter))]
    fn clone_volume_async(
        &self,
        source: String,
        dest: String,
        owner: Option<String>,
        poolset: Option<String>,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("clone {source} to {dest}"),
            async move { lazy_clone(&c, &u, source, dest, owner, poolset).await },
            unit,
        )
    }

    fn flatten_async(&self, path: String, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("flatten {path}"),
            async move { flatten(&c, &u, path).await },
            unit,
        )
    }

    fn cluster_id_async(&self, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let c = self.client()?.clone();
        spawn_resolving(
            waiter,
            "cluster_id".into(),
            async move { c.cluster_id().await },
            |py, id| Ok(id.into_pyobject(py)?.into_any().unbind()),
        )
    }

    fn poolsets_async(&self, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let c = self.client()?.clone();
        spawn_resolving(
            waiter,
            "poolsets".into(),
            async move { c.list_poolsets().await },
            |py, p| Ok(p.into_pyobject(py)?.into_any().unbind()),
        )
    }

    fn open_async(&self, path: String, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let (c, u) = (self.client()?.clone(), self.user.clone());
        spawn_resolving(
            waiter,
            format!("open {path}"),
            async move { c.open_file(&path, &u).await },
            |py, file| {
                let handle = VolumeHandle {
                    file: Owned::new(file),
                };
                Ok(Py::new(py, handle)?.into_any())
            },
        )
    }

    /// The conf keys the core reads, from their one declaration (`curve_client::conf`):
    /// (keyword argument, client.conf key, kind, default, doc, added by curvefs).
    #[staticmethod]
    #[allow(clippy::type_complexity)]
    fn conf_keys() -> Vec<(
        &'static str,
        &'static str,
        &'static str,
        String,
        &'static str,
        bool,
    )> {
        let defaults = ClientConfig::default();
        curve_client::conf::CONF_KEYS
            .iter()
            .map(|k| {
                let default = defaults.value(k.key).unwrap_or_default();
                (k.field, k.key, k.kind, default, k.doc.trim(), k.curvefs)
            })
            .collect()
    }
}

/// An open volume: its own lease, closed by `close` (or when dropped, without CloseFile).
#[pyclass(frozen, module = "curvefs._core")]
pub struct VolumeHandle {
    file: Owned<Arc<OpenFile>>,
}

impl VolumeHandle {
    /// The open file; an error in a forked child (see `runtime::Owned`).
    fn file(&self) -> PyResult<&Arc<OpenFile>> {
        self.file.get("Volume")
    }
}

impl Drop for VolumeHandle {
    fn drop(&mut self) {
        // A handle dropped unclosed stops its refresher; the MDS expires the record. In
        // a forked child the refresher is the parent's: leave it alone.
        if self.file.inherited() {
            return;
        }
        if let Ok(rt) = runtime::get() {
            let _entered = rt.enter();
            self.file.get_mut().abort_refresher();
        }
    }
}

#[pymethods]
impl VolumeHandle {
    /// Reads exactly `length` bytes at `offset`, written once into the returned bytes.
    fn pread<'py>(
        &self,
        py: Python<'py>,
        length: usize,
        offset: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let file = self.file()?;
        let what = || format!("read {} at {offset}", file.path);
        // Past the end is refused before `length` bytes exist for it.
        let end = offset.checked_add(length as u64);
        if end.is_none_or(|e| e > file.known_length()) {
            call(py, what, file.check_end(offset, length as u64))?;
        }
        // Not zeroed first: the read writes every byte or the object is dropped.
        buffers::new_bytes_filled(py, length, |out| {
            Ok(call(py, what, file.pread_uninit(offset, out)))
        })?
    }

    /// Fills `buffer` (any writable C-contiguous buffer) from `offset` in place.
    fn preadinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>, offset: u64) -> PyResult<usize> {
        let buf = buffers::writable(buffer)?;
        let len = buf.len_bytes();
        // SAFETY: the buffer is C-contiguous and writable (checked above) and spans
        // `len_bytes` bytes from `buf_ptr`; `buf` keeps the export alive and the memory
        // unresized until it is released at the end of this function, after the last use
        // of the slice. Another Python thread may touch the memory meanwhile; the bytes
        // are then unspecified, the memory stays valid.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr().cast::<u8>(), len) };
        let file = self.file()?;
        call(
            py,
            || format!("read {} at {offset}", file.path),
            file.pread(offset, out),
        )?;
        Ok(len)
    }

    /// Writes all of `data` (any C-contiguous buffer) at `offset`; returns its length. The
    /// chunk requests send slices of `data` itself, never a copy.
    fn pwrite(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: u64) -> PyResult<usize> {
        let bytes = buffers::pinned_bytes(data)?;
        let len = bytes.len();
        let file = self.file()?;
        call(
            py,
            || format!("write {} at {offset}", file.path),
            file.pwrite(offset, bytes),
        )?;
        Ok(len)
    }

    /// Discards [offset, offset + length): reads of it return zeros afterwards.
    fn discard(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<()> {
        let file = self.file()?;
        call(
            py,
            || format!("discard {} at {offset}", file.path),
            file.discard(offset, length),
        )
    }

    fn write_zeroes(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<()> {
        let file = self.file()?;
        call(
            py,
            || format!("write_zeroes {} at {offset}", file.path),
            file.write_zeroes(offset, length),
        )
    }

    fn discard_async(
        &self,
        offset: u64,
        length: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let file = self.file()?.clone();
        let what = format!("discard {} at {offset}", file.path);
        spawn_resolving(
            waiter,
            what,
            async move { file.discard(offset, length).await },
            unit,
        )
    }

    fn write_zeroes_async(
        &self,
        offset: u64,
        length: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let file = self.file()?.clone();
        let what = format!("write_zeroes {} at {offset}", file.path);
        spawn_resolving(
            waiter,
            what,
            async move { file.write_zeroes(offset, length).await },
            unit,
        )
    }

    /// The async twin of `stat`.
    fn stat_async(&self, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        let file = self.file()?.clone();
        spawn_resolving(
            waiter,
            format!("stat {}", file.path),
            async move { file.stat().await },
            |py, st| Ok(stat_tuple(st).into_pyobject(py)?.into_any().unbind()),
        )
    }

    /// The async twin of `close`; in a forked child it ends at once, as `close` does.
    fn close_async(&self, waiter: &Bound<'_, PyAny>) -> PyResult<TaskHandle> {
        if self.file.inherited() {
            let what = format!("close {}", self.file.get_unchecked().path);
            return spawn_resolving(waiter, what, async { Ok(()) }, unit);
        }
        let file = self.file()?.clone();
        spawn_resolving(
            waiter,
            format!("close {}", file.path),
            async move { file.close().await },
            unit,
        )
    }

    fn stat(&self, py: Python<'_>) -> PyResult<StatTuple> {
        let file = self.file()?;
        call(py, || format!("stat {}", file.path), file.stat()).map(stat_tuple)
    }

    /// The volume's size in bytes as last seen (open, a refresh or `stat` since).
    fn size(&self) -> PyResult<u64> {
        Ok(self.file()?.known_length())
    }

    fn block_size(&self) -> PyResult<u64> {
        Ok(self.file()?.blocksize)
    }

    /// In a forked child: nothing (the session is the parent's, and stays open there).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.file.inherited() {
            return Ok(());
        }
        let file = self.file()?;
        call(py, || format!("close {}", file.path), file.close())
    }

    /// This volume's IO metrics as a dict (`curvefs.metrics` types it).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::metrics::io(py, &self.file()?.metrics.snapshot())
    }

    /// Starts a read of `length` bytes at `offset` (checked against the end first).
    fn pread_async(
        &self,
        length: usize,
        offset: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let file = self.file()?.clone();
        let what = format!("read {} at {offset}", file.path);
        spawn_resolving(
            waiter,
            what,
            async move {
                file.check_end(offset, length as u64).await?;
                let mut buf = vec![0u8; length];
                file.pread(offset, &mut buf).await?;
                Ok(buf)
            },
            |py, buf| Ok(PyBytes::new(py, &buf).into_any().unbind()),
        )
    }

    /// Starts a read into `buffer` (any writable C-contiguous buffer), which the task
    /// holds until it ends or is cancelled.
    fn preadinto_async(
        &self,
        buffer: &Bound<'_, PyAny>,
        offset: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let buf = buffers::writable(buffer)?;
        let file = self.file()?.clone();
        let what = format!("read {} at {offset}", file.path);
        spawn_resolving(
            waiter,
            what,
            async move {
                let len = buf.len_bytes();
                // SAFETY: as in `preadinto`: C-contiguous, writable, `len` bytes from
                // `buf_ptr`, kept exported and unresized by `buf`, which this task owns
                // and drops only after the slice's last use (at its end, or when it is
                // cancelled, and `TaskHandle::cancel` returns only after that).
                let out =
                    unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr().cast::<u8>(), len) };
                let r = file.pread(offset, out).await.map(|()| len);
                drop(buf);
                r
            },
            |py, n| Ok(n.into_pyobject(py)?.into_any().unbind()),
        )
    }

    /// Starts a write of `data`, which stays referenced (not copied) until the write ends.
    fn pwrite_async(
        &self,
        data: &Bound<'_, PyAny>,
        offset: u64,
        waiter: &Bound<'_, PyAny>,
    ) -> PyResult<TaskHandle> {
        let bytes = buffers::pinned_bytes(data)?;
        let len = bytes.len();
        let file = self.file()?.clone();
        let what = format!("write {} at {offset}", file.path);
        spawn_resolving(
            waiter,
            what,
            async move { file.pwrite(offset, bytes).await.map(|()| len) },
            |py, n| Ok(n.into_pyobject(py)?.into_any().unbind()),
        )
    }

    #[getter]
    fn path(&self) -> String {
        // Also in a forked child: the path is only a name.
        self.file.get_unchecked().path.clone()
    }
}

// ---------------------------------------------------------------------------------------
// asyncio: each call is a tokio task. When it ends, its outcome goes into the event loop's
// `Completions` queue, without the GIL; the first outcome into an empty queue wakes the
// loop through an eventfd it watches (`loop.add_reader`), and the loop's thread, which
// holds the GIL anyway, drains the whole queue at once: one wakeup for many completions,
// and no runtime thread ever waits for the GIL to finish a call.

/// A running async call; `cancel` aborts it and returns only once the task is gone, so
/// nothing it held (a caller's buffer) is still borrowed afterwards.
#[pyclass(frozen, module = "curvefs._core")]
pub struct TaskHandle {
    task: Owned<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

#[pymethods]
impl TaskHandle {
    /// In a forked child: nothing (the task ran, or runs, in the parent).
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        if self.task.inherited() {
            return Ok(());
        }
        let task = self
            .task
            .get("task")?
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let rt = runtime::get()?;
            // The task drops what it holds (a PyBuffer takes the GIL to release), so wait
            // with the GIL released.
            let _ = py.detach(|| rt.block_on(task));
        }
        Ok(())
    }
}

/// The outcome of an async call, as the future is resolved with it.
type Outcome = PyResult<Py<PyAny>>;

/// An ended call waiting in the queue: its future, and how to make its outcome (run on the
/// loop's thread, with the GIL).
struct Ended {
    future: Py<PyAny>,
    outcome: Box<dyn FnOnce(Python<'_>) -> Outcome + Send>,
}

/// The completion queue of one event loop (`curvefs.client` keeps one per loop).
#[pyclass(frozen, module = "curvefs._core")]
pub struct Completions {
    wake: OwnedFd,
    ended: std::sync::Mutex<Vec<Ended>>,
}

impl Completions {
    fn push(&self, ended: Ended) {
        let first = {
            let mut queue = self
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.push(ended);
            queue.len() == 1
        };
        if first {
            // Only the first outcome into an empty queue wakes the loop; the drain takes
            // every outcome queued until it swaps the queue out.
            let one = 1u64.to_ne_bytes();
            // SAFETY: `wake` is an open eventfd owned by self; eight bytes from `one`.
            // EAGAIN (the counter at its maximum) still leaves the loop woken.
            unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Completions {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            ended: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The eventfd the loop watches.
    fn fileno(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    /// Resolves every queued future (on the loop's thread): its result or exception, or
    /// nothing for a future that was cancelled meanwhile.
    fn drain(&self, py: Python<'_>) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most eight bytes into `count` from the eventfd owned by self
        // (non-blocking: EAGAIN when no wake is pending, which is fine).
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
        let ended = std::mem::take(
            &mut *self
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for Ended { future, outcome } in ended {
            let future = future.bind(py);
            match future
                .call_method0(pyo3::intern!(py, "cancelled"))
                .and_then(|c| c.is_truthy())
            {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    e.write_unraisable(py, Some(future));
                    continue;
                }
            }
            let set = match outcome(py) {
                Ok(v) => future.call_method1(pyo3::intern!(py, "set_result"), (v,)),
                Err(e) => {
                    future.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))
                }
            };
            if let Err(e) = set {
                e.write_unraisable(py, Some(future));
            }
        }
    }
}

/// Spawns `fut`; when it ends, its outcome is queued on `waiter`'s `Completions` (a
/// `(completions, future)` pair) and made on the loop's thread: `convert` turns its value
/// into a Python object there, an error becomes its `curvefs.exceptions` class.
fn spawn_resolving<T, F, C>(
    waiter: &Bound<'_, PyAny>,
    what: String,
    fut: F,
    convert: C,
) -> PyResult<TaskHandle>
where
    T: Send + 'static,
    F: std::future::Future<Output = curve_client::Result<T>> + Send + 'static,
    C: FnOnce(Python<'_>, T) -> Outcome + Send + 'static,
{
    let rt = runtime::get()?;
    let (completions, future) = waiter.extract::<(Py<Completions>, Py<PyAny>)>()?;
    let task = rt.spawn(async move {
        let out = fut.await;
        let outcome = move |py: Python<'_>| match out {
            Ok(v) => convert(py, v),
            Err(e) => Err(raise(py, &what, e)),
        };
        completions.get().push(Ended {
            future,
            outcome: Box::new(outcome),
        });
    });
    Ok(TaskHandle {
        task: Owned::new(std::sync::Mutex::new(Some(task))),
    })
}

fn unit(py: Python<'_>, (): ()) -> Outcome {
    Ok(py.None())
}
