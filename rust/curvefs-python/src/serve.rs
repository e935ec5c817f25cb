//! The local cluster: its layout and client.conf (owned by `curve-cluster`; `LocalCluster`
//! asks for them here) and its server processes (`python -m curvefs._serve` calls these,
//! and they return only when the server stops, on SIGTERM or SIGINT, when the process that
//! started it dies (its lifeline closes), or fails).

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use curve_cluster::{ClusterLayout, ClusterSpec, ServerSocket, ServerState};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use tokio::signal::unix::{SignalKind, signal};

/// Runs a server on its own current-thread runtime (the 2-vCPU budget goes to the client
/// and to the other servers) with the GIL released for the whole run.
fn run<F, Fut>(py: Python<'_>, lifeline: Option<Lifeline>, serve: F) -> PyResult<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send,
    Fut: Future<Output = Result<(), curve_cluster::Error>>,
{
    // tokio's handler chains to the one installed before it. Python's SIGINT handler would
    // then flag the signal too, and a KeyboardInterrupt would follow the clean shutdown;
    // hand SIGINT to tokio alone for the run and give Python its handler back after.
    let saved = take_sigint(py)?;
    let served = serve_detached(py, lifeline, serve);
    if let Some((signal_mod, handler)) = saved {
        signal_mod.call_method1("signal", (SIGINT, handler))?;
    }
    served
}

const SIGINT: i32 = 2;

/// Python's SIGINT handler, replaced by the default one; `None` off the main thread, where
/// Python cannot change handlers (the server then stops on SIGTERM as usual).
fn take_sigint(py: Python<'_>) -> PyResult<Option<(Bound<'_, PyModule>, Bound<'_, PyAny>)>> {
    let threading = py.import("threading")?;
    let main = threading.call_method0("main_thread")?;
    if !threading.call_method0("current_thread")?.is(&main) {
        return Ok(None);
    }
    let signal_mod = py.import("signal")?;
    let handler = signal_mod.call_method1("getsignal", (SIGINT,))?;
    if handler.is_none() {
        // Installed outside Python; leave it alone.
        return Ok(None);
    }
    signal_mod.call_method1("signal", (SIGINT, signal_mod.getattr("SIG_DFL")?))?;
    Ok(Some((signal_mod, handler)))
}

/// The read end of a pipe whose write end only the starting process holds: it reads as end
/// of file once that process is gone, however it died (SIGKILL included).
///
/// Why not `PR_SET_PDEATHSIG`: Linux sends it when the *thread* that forked the child exits,
/// not the process, and a `LocalCluster` restarts servers from whatever thread calls it (the
/// model test's fault thread, a test's worker): its servers would die with that thread. A
/// pipe's write end belongs to the process, so only the process's end closes it. What a
/// pipe cannot do is wake a server stopped by SIGSTOP (a paused one); it stops once resumed.
struct Lifeline(std::fs::File);

impl Lifeline {
    /// Takes over the inherited descriptor `fd` (rejected unless it is an open pipe or
    /// FIFO, so a wrong number cannot make the server close a file it does not own).
    fn inherit(fd: i32) -> PyResult<Self> {
        use std::os::fd::{FromRawFd as _, OwnedFd};
        // SAFETY: fstat only fills the zeroed struct it is given; `fd` is just a number.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable stat buffer for the duration of the call.
        if fd < 0 || unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(PyOSError::new_err(format!(
                "--lifeline-fd {fd}: not an open descriptor"
            )));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(PyValueError::new_err(format!(
                "--lifeline-fd {fd}: not a pipe"
            )));
        }
        // SAFETY: `fd` is open (fstat succeeded) and was handed to this process for the
        // server alone (the starter's pass_fds); nothing else in the process closes it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self(std::fs::File::from(owned)))
    }

    /// Resolves once the starter is gone. A plain thread blocks on the read: the server's
    /// runtime is current-thread, and the read returns only at end of file (nobody writes).
    fn closed(self) -> Result<tokio::sync::oneshot::Receiver<()>, String> {
        use std::io::Read as _;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut pipe = self.0;
        std::thread::Builder::new()
            .name("lifeline".into())
            .spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            })
            .map_err(|e| format!("cannot watch the lifeline: {e}"))?;
        Ok(rx)
    }
}

fn serve_detached<F, Fut>(py: Python<'_>, lifeline: Option<Lifeline>, serve: F) -> PyResult<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send,
    Fut: Future<Output = Result<(), curve_cluster::Error>>,
{
    py.detach(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the server runtime: {e}"))?;
        rt.block_on(async {
            // Registered before serving, so a SIGTERM sent right after startup is not lost.
            let mut term = signal(SignalKind::terminate())
                .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
            let mut int =
                signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
            let orphaned = lifeline.map(Lifeline::closed).transpose()?;
            let shutdown = Box::pin(async move {
                let orphaned = async move {
                    match orphaned {
                        Some(rx) => {
                            let _ = rx.await;
                            // stderr is the server's log file.
                            eprintln!("the process that started this server is gone: stopping");
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    () = orphaned => {}
                }
            });
            serve(shutdown).await.map_err(|e| e.to_string())
        })
    })
    .map_err(PyOSError::new_err)
}

/// Sends the server's `tracing` events to `<data_dir>/logs/<server>.log` (level from
/// `CURVEFS_LOG`, default info) instead of through the `log`→Python bridge the module
/// installed at import: a server process has no Python logging config, and the bridge
/// would take the GIL for every event.
fn install_log(data_dir: &Path, server: &str) -> PyResult<()> {
    curve_cluster::install_server_log(data_dir, server)
        .map_err(|e| PyOSError::new_err(e.to_string()))
}

/// A bad spec or client.conf key is the caller's mistake; the rest is the folder's.
fn cluster_err(e: curve_cluster::Error) -> PyErr {
    match e {
        curve_cluster::Error::Spec(_) | curve_cluster::Error::ClientConf(_) => {
            PyValueError::new_err(e.to_string())
        }
        _ => PyOSError::new_err(e.to_string()),
    }
}

/// The layout of the local cluster in `data_dir` (what `ClusterLayout::describe` says, as
/// JSON), or `None` if the folder holds none yet.
#[pyfunction]
pub fn local_cluster_layout(data_dir: PathBuf) -> PyResult<Option<String>> {
    let layout = ClusterLayout::load_if_present(&data_dir).map_err(cluster_err)?;
    Ok(layout.map(|l| l.describe().to_string()))
}

/// Creates the layout of a new local cluster in `data_dir` from `spec` (a
/// `curve_cluster::ClusterSpec` as JSON) and returns it as `local_cluster_layout` does.
#[pyfunction]
pub fn create_local_cluster_layout(data_dir: PathBuf, spec: &str) -> PyResult<String> {
    let spec: ClusterSpec = serde_json::from_str(spec)
        .map_err(|e| PyValueError::new_err(format!("a cluster spec is invalid: {e}")))?;
    let layout = ClusterLayout::create(&data_dir, &spec).map_err(cluster_err)?;
    Ok(layout.describe().to_string())
}

/// Writes the client.conf of the local cluster in `data_dir`, with `overrides` (client.conf
/// keys and values) in place of the core's defaults; returns its path.
#[pyfunction]
pub fn write_local_client_conf(
    data_dir: PathBuf,
    overrides: Vec<(String, String)>,
) -> PyResult<String> {
    let layout = ClusterLayout::load(&data_dir).map_err(cluster_err)?;
    let path = layout.write_client_conf(&overrides).map_err(cluster_err)?;
    path.into_os_string()
        .into_string()
        .map_err(|p| PyValueError::new_err(format!("{p:?} is not UTF-8")))
}

/// The socket handed down as `listen_fd` (`None`: the server binds its port itself).
fn inherited(listen_fd: Option<i32>, port: u16) -> PyResult<Option<ServerSocket>> {
    listen_fd
        .map(|fd| {
            ServerSocket::inherit(fd, port)
                .map_err(|e| PyOSError::new_err(format!("--listen-fd {fd}: {e}")))
        })
        .transpose()
}

/// Tells the starter the server's state: one line on stdout. A starter that stopped
/// reading (a closed pipe) is no reason to stop serving.
fn report(state: ServerState) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", state.as_str()).and_then(|()| out.flush());
}

fn layout_of(data_dir: &Path) -> PyResult<ClusterLayout> {
    ClusterLayout::load(data_dir).map_err(cluster_err)
}

/// Serves MDS `index` of the local cluster in `data_dir` until SIGTERM or SIGINT (or its
/// starter's end, with `lifeline_fd`); active or, while another MDS is, standing by.
#[pyfunction]
#[pyo3(signature = (data_dir, index = 0, listen_fd = None, lifeline_fd = None))]
pub fn serve_mds(
    py: Python<'_>,
    data_dir: PathBuf,
    index: usize,
    listen_fd: Option<i32>,
    lifeline_fd: Option<i32>,
) -> PyResult<()> {
    let lifeline = lifeline_fd.map(Lifeline::inherit).transpose()?;
    install_log(&data_dir, &curve_cluster::mds_server_name(index))?;
    let port = *layout_of(&data_dir)?
        .mds_ports
        .get(index)
        .ok_or_else(|| PyValueError::new_err(format!("the cluster has no MDS {index}")))?;
    let socket = inherited(listen_fd, port)?;
    run(py, lifeline, move |shutdown| async move {
        curve_cluster::serve_mds(Path::new(&data_dir), index, socket, report, shutdown).await
    })
}

/// Serves chunkserver `chunkserver_id` of the local cluster in `data_dir` until SIGTERM or
/// SIGINT (or its starter's end, with `lifeline_fd`).
#[pyfunction]
#[pyo3(signature = (data_dir, chunkserver_id, listen_fd = None, lifeline_fd = None))]
pub fn serve_chunkserver(
    py: Python<'_>,
    data_dir: PathBuf,
    chunkserver_id: u32,
    listen_fd: Option<i32>,
    lifeline_fd: Option<i32>,
) -> PyResult<()> {
    let lifeline = lifeline_fd.map(Lifeline::inherit).transpose()?;
    install_log(
        &data_dir,
        &curve_cluster::chunkserver_server_name(chunkserver_id),
    )?;
    let port = layout_of(&data_dir)?
        .chunkservers
        .iter()
        .find(|c| c.id == chunkserver_id)
        .map(|c| c.port)
        .ok_or_else(|| {
            PyValueError::new_err(format!("the cluster has no chunkserver {chunkserver_id}"))
        })?;
    let socket = inherited(listen_fd, port)?;
    run(py, lifeline, move |shutdown| async move {
        curve_cluster::serve_chunkserver(
            Path::new(&data_dir),
            chunkserver_id,
            socket,
            report,
            shutdown,
        )
        .await
    })
}

/// Serves instance `index` of the snapshot/clone service of the local cluster in
/// `data_dir` (upstream's HTTP API) until SIGTERM or SIGINT (or its starter's end, with
/// `lifeline_fd`), or until another instance took its lease.
#[pyfunction]
#[pyo3(signature = (data_dir, index = 0, listen_fd = None, lifeline_fd = None))]
pub fn serve_snapshot_clone(
    py: Python<'_>,
    data_dir: PathBuf,
    index: usize,
    listen_fd: Option<i32>,
    lifeline_fd: Option<i32>,
) -> PyResult<()> {
    let lifeline = lifeline_fd.map(Lifeline::inherit).transpose()?;
    install_log(&data_dir, &curve_cluster::snapshot_clone_server_name(index))?;
    let port = *layout_of(&data_dir)?
        .snapshot_clone_ports
        .get(index)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "the cluster has no snapshot/clone service instance {index}"
            ))
        })?;
    let socket = inherited(listen_fd, port)?;
    run(py, lifeline, move |shutdown| async move {
        curve_cluster::serve_snapshot_clone(Path::new(&data_dir), index, socket, report, shutdown)
            .await
    })
}

/// Asks the chunkserver at `addr` (over baidu_std, as the client does) which member leads
/// copyset `copyset_id` of logical pool `logical_pool_id`, and returns that member's
/// "ip:port". For tests that pick a copyset's leader to kill or pause; the chunkserver
/// answers with what it believes, so only a leader naming itself is sure to lead.
#[pyfunction]
#[pyo3(signature = (addr, logical_pool_id, copyset_id, timeout_ms = 1000))]
pub fn copyset_leader(
    py: Python<'_>,
    addr: String,
    logical_pool_id: u32,
    copyset_id: u32,
    timeout_ms: u64,
) -> PyResult<String> {
    use curve_client::transport::{self, BaiduStdTransport, methods};
    use curve_proto::chunkserver::{GetLeaderRequest2, GetLeaderResponse2};

    let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
    let asked = crate::runtime::wait(py, async move {
        let wire = BaiduStdTransport::new(timeout, 64 << 20);
        let req = GetLeaderRequest2 {
            logic_pool_id: logical_pool_id,
            copyset_id,
            peer: None,
        };
        let call = transport::unary::<_, GetLeaderResponse2>(
            &wire,
            &addr,
            &methods::GET_LEADER,
            &req,
            timeout,
        );
        // The connect and the call each have `timeout`; bound the two together too.
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(format!("GetLeader to {addr}: no answer within {timeout:?}")),
            Ok(Err(e)) => Err(format!("GetLeader to {addr}: {e}")),
            Ok(Ok(resp)) => resp
                .leader
                .address
                .as_deref()
                .and_then(curve_client::metacache::peer_ip_port)
                .ok_or_else(|| format!("GetLeader to {addr} named no leader")),
        }
    })?;
    asked.map_err(PyOSError::new_err)
}

/// Asks the chunkserver at `addr`, the leader of copyset `copyset_id`, to hand its
/// leadership to the member at `transferee` ("ip:port"): CliService2.TransferLeader over
/// baidu_std, as upstream's `curve_ops_tool transfer-leader` sends it. Returns once the
/// leader has accepted; the handover itself follows when the transferee is caught up.
/// `ValueError` if the transferee is not a member, `OSError` for any other refusal (not
/// the leader: EPERM) or no answer in time.
#[pyfunction]
#[pyo3(signature = (addr, logical_pool_id, copyset_id, transferee, timeout_ms = 1000))]
pub fn transfer_leader(
    py: Python<'_>,
    addr: String,
    logical_pool_id: u32,
    copyset_id: u32,
    transferee: String,
    timeout_ms: u64,
) -> PyResult<()> {
    use curve_client::transport::{self, BaiduStdTransport, RpcMethod, TransportError, methods};
    use curve_proto::chunkserver::{TransferLeaderRequest2, TransferLeaderResponse2};
    use curve_proto::common::Peer;

    const TRANSFER_LEADER: RpcMethod = RpcMethod::new(methods::CLI_SERVICE2, "TransferLeader");
    let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
    let peer = |address: &str| Peer {
        id: None,
        address: Some(format!("{address}:0")),
    };
    let req = TransferLeaderRequest2 {
        logic_pool_id: logical_pool_id,
        copyset_id,
        leader: peer(&addr),
        transferee: peer(&transferee),
    };
    crate::runtime::wait(py, async move {
        let wire = BaiduStdTransport::new(timeout, 64 << 20);
        let call = transport::unary::<_, TransferLeaderResponse2>(
            &wire,
            &addr,
            &TRANSFER_LEADER,
            &req,
            timeout,
        );
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(PyOSError::new_err(format!(
                "TransferLeader to {addr}: no answer within {timeout:?}"
            ))),
            Ok(Err(TransportError::Remote { code, message }))
                // braft's EINVAL: the transferee is not a member.
                if code == libc::EINVAL =>
            {
                Err(PyValueError::new_err(format!(
                    "TransferLeader to {addr}: {message}"
                )))
            }
            Ok(Err(e)) => Err(PyOSError::new_err(format!("TransferLeader to {addr}: {e}"))),
            Ok(Ok(_)) => Ok(()),
        }
    })?
}
