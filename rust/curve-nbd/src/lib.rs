//! An NBD server for Curve volumes: qemu, `nbdcopy`/`nbdinfo`, fio's `nbd` engine and the
//! kernel's `nbd-client` reach a volume through it, as upstream's curve-nbd serves the
//! kernel's nbd device (here over a socket, with no nebd in between: the volume is opened
//! by this process's [`curve_client::Client`]).
//!
//! The protocol is written here (the `nbd` crate is synchronous, one request at a time,
//! and unmaintained since 2019; `tokio-nbd` is GPL-2.0, which this Apache-2.0 project
//! cannot take). It speaks the fixed newstyle handshake (`NBD_OPT_EXPORT_NAME`, `LIST`,
//! `INFO`, `GO`, `ABORT`) and simple replies; structured replies, block status and
//! extended headers are refused with `NBD_REP_ERR_UNSUP`, which every client handles.
//!
//! One [`OpenFile`] per export, shared by every connection to it: the volume's lease is
//! held once, and unaligned writes from two connections still meet in one block lock.
//! A write is acknowledged only when the chunkservers have committed it, so FLUSH and
//! FUA have nothing left to wait for, and `NBD_FLAG_CAN_MULTI_CONN` holds (a flush on
//! one connection covers writes completed on any).
//!
//! Requests are served concurrently, [`IN_FLIGHT`] per connection, replies in completion
//! order. What the server must not do: write past the size it announced, panic on
//! anything a client sends, or leave a volume open after it stops.

pub mod proto;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use curve_client::{Client, ErrorCode, OpenFile, UserInfo};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use proto::*;

/// The largest READ or WRITE payload (announced as the maximum block size): the common
/// limit of NBD servers, which clients split their IO to.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Requests of one connection served at once; the next header is read when one ends.
pub const IN_FLIGHT: usize = 64;
/// An option's data longer than this closes the connection (names are short).
const MAX_OPTION_LEN: u32 = 64 << 10;
/// The whole handshake, and each reply's write, must finish within this: a client that
/// stalls there holds a connection and its memory, nothing more.
const NEGOTIATION_DEADLINE: Duration = Duration::from_secs(30);
const REPLY_DEADLINE: Duration = Duration::from_secs(60);

/// One volume served under one export name.
pub struct Export {
    /// The export name clients ask for: the volume's path without its leading `/`
    /// (`nbd+unix:///dir/vol?socket=…` asks for `dir/vol`).
    pub name: String,
    pub path: String,
    pub read_only: bool,
    file: Arc<OpenFile>,
}

impl Export {
    /// The export name of the volume at `path`.
    pub fn name_of(path: &str) -> String {
        path.trim_start_matches('/').to_string()
    }

    /// The transmission flags of this export.
    fn flags(&self) -> u16 {
        let common = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_CAN_MULTI_CONN;
        if self.read_only {
            common | FLAG_READ_ONLY
        } else {
            common | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES
        }
    }

    /// The volume's size now: re-read from the MDS for every new connection, so a volume
    /// extended while served is seen whole by the next client (curve-nbd polls it each
    /// second for its kernel device; an NBD connection cannot be told of a new size).
    async fn current_size(&self) -> u64 {
        if let Err(e) = self.file.refresh_info().await {
            tracing::warn!(path = %self.path, "cannot re-read the size of the volume: {e}");
        }
        self.file.known_length()
    }
}

/// Opens each volume of `paths` (an exclusive open, as the SDK's Open) for serving.
/// Should one fail, those already open are closed again.
pub async fn open_exports(
    client: &Client,
    user: &UserInfo,
    paths: &[String],
    read_only: bool,
) -> curve_client::Result<Vec<Export>> {
    let mut exports: Vec<Export> = Vec::with_capacity(paths.len());
    let mut failure = None;
    for path in paths {
        let name = Export::name_of(path);
        if exports.iter().any(|e| e.name == name) {
            failure = Some(curve_client::Error::new(
                ErrorCode::ParamError,
                format!("{path} is named twice"),
            ));
            break;
        }
        match client.open_file(path, user).await {
            Ok(file) => exports.push(Export {
                name,
                path: path.clone(),
                read_only,
                file,
            }),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    match failure {
        None if exports.is_empty() => Err(curve_client::Error::new(
            ErrorCode::ParamError,
            "no volume to serve",
        )),
        None => Ok(exports),
        Some(e) => {
            close_exports(&exports).await;
            Err(e)
        }
    }
}

async fn close_exports(exports: &[Export]) {
    for e in exports {
        if let Err(err) = e.file.close().await {
            tracing::warn!(path = %e.path, "closing the volume failed: {err}");
        }
    }
}

/// Where the server listens.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Listens on a Unix socket at `path` (which must not exist). Needs a runtime.
    pub fn unix(path: &Path) -> io::Result<Listener> {
        Ok(Listener::Unix(
            UnixListener::bind(path)?,
            path.to_path_buf(),
        ))
    }

    /// Listens on TCP at `addr` (`host:port`; port 0 picks one). Needs a runtime.
    pub async fn tcp(addr: &str) -> io::Result<Listener> {
        Ok(Listener::Tcp(TcpListener::bind(addr).await?))
    }

    /// The NBD URI of export `name` on this listener (the form qemu and libnbd take).
    pub fn uri(&self, name: &str) -> io::Result<String> {
        Ok(match self {
            Listener::Unix(_, path) => format!("nbd+unix:///{name}?socket={}", path.display()),
            Listener::Tcp(l) => format!("nbd://{}/{name}", l.local_addr()?),
        })
    }

    /// `unix:PATH` or `HOST:PORT`.
    pub fn address(&self) -> io::Result<String> {
        Ok(match self {
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
            Listener::Tcp(l) => l.local_addr()?.to_string(),
        })
    }
}

/// Serves `exports` on `listener` until `shutdown` completes; then stops taking requests,
/// lets those in flight finish and their replies go out, closes every connection and
/// every volume (CloseFile: the session is released), and removes the Unix socket.
pub async fn serve(
    listener: Listener,
    exports: Vec<Export>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let exports = Arc::new(exports);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = accept(&listener) => match accepted {
                Ok(Conn::Unix(s)) => {
                    let (rd, wr) = s.into_split();
                    conns.spawn(connection(rd, wr, exports.clone(), stop_rx.clone()));
                }
                Ok(Conn::Tcp(s)) => {
                    // Small replies (4 KiB reads) must not wait for Nagle.
                    let _ = s.set_nodelay(true);
                    let (rd, wr) = s.into_split();
                    conns.spawn(connection(rd, wr, exports.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: not the
                    // listener's end. Pause so a persistent one does not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    close_exports(&exports).await;
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn accept(listener: &Listener) -> io::Result<Conn> {
    match listener {
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
    }
}

/// Why a connection ended early: logged, never sent (the protocol has no way to).
#[derive(Debug)]
enum Closed {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for Closed {
    fn from(e: io::Error) -> Self {
        Closed::Io(e)
    }
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Io(e) => write!(f, "{e}"),
            Closed::Protocol(why) => f.write_str(why),
        }
    }
}

fn protocol(why: impl Into<String>) -> Closed {
    Closed::Protocol(why.into())
}

async fn connection<R, W>(rd: R, wr: W, exports: Arc<Vec<Export>>, mut stop: watch::Receiver<bool>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut rd = BufReader::new(rd);
    let mut wr = BufWriter::new(wr);
    let negotiated = tokio::select! {
        r = timeout(NEGOTIATION_DEADLINE, negotiate(&mut rd, &mut wr, &exports)) => r,
        _ = stop.wait_for(|s| *s) => return,
    };
    let (index, size) = match negotiated {
        Ok(Ok(Some(chosen))) => chosen,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!("NBD handshake ended: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("NBD handshake took over {NEGOTIATION_DEADLINE:?}; closed");
            return;
        }
    };
    let export = &exports[index];
    let file = export.file.clone();
    if let Err(e) = transmission(rd, wr, file, export.read_only, size, stop).await {
        tracing::info!(export = %export.name, "NBD connection closed: {e}");
    }
}

// -- the handshake ------------------------------------------------------------------------

/// The export an option names: an empty name is the default export, which exists when
/// only one volume is served.
fn find_export(exports: &[Export], name: &[u8]) -> Option<usize> {
    if name.is_empty() {
        return (exports.len() == 1).then_some(0);
    }
    exports.iter().position(|e| e.name.as_bytes() == name)
}

async fn option_reply<W: AsyncWrite + Unpin>(
    wr: &mut W,
    option: u32,
    kind: u32,
    data: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option reply too long"))?;
    let mut head = [0u8; 20];
    head[..8].copy_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    head[8..12].copy_from_slice(&option.to_be_bytes());
    head[12..16].copy_from_slice(&kind.to_be_bytes());
    head[16..20].copy_from_slice(&len.to_be_bytes());
    wr.write_all(&head).await?;
    wr.write_all(data).await
}

/// Runs the fixed newstyle handshake. `Some((export, size))` to go on to transmission,
/// `None` when the client aborted.
async fn negotiate<R, W>(
    rd: &mut R,
    wr: &mut W,
    exports: &[Export],
) -> Result<Option<(usize, u64)>, Closed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = [0u8; 18];
    hello[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    hello[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    hello[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    wr.write_all(&hello).await?;
    wr.flush().await?;
    let client_flags = rd.read_u32().await?;
    if client_flags & CLIENT_FIXED_NEWSTYLE == 0 {
        return Err(protocol("the client does not speak fixed newstyle"));
    }
    if client_flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(protocol(format!("unknown client flags {client_flags:#x}")));
    }
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    loop {
        let mut head = [0u8; OPTION_HEADER_LEN];
        rd.read_exact(&mut head).await?;
        let magic = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
        let option = u32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(head[12..16].try_into().unwrap_or_default());
        if magic != IHAVEOPT {
            return Err(protocol(format!("bad option magic {magic:#x}")));
        }
        if len > MAX_OPTION_LEN {
            return Err(protocol(format!("option {option} of {len} bytes")));
        }
        let mut data = vec![0u8; len as usize];
        rd.read_exact(&mut data).await?;
        match option {
            OPT_EXPORT_NAME => {
                // No error reply exists for this option: an unknown name closes.
                let Some(index) = find_export(exports, &data) else {
                    return Err(protocol(format!(
                        "no export named {:?}",
                        String::from_utf8_lossy(&data)
                    )));
                };
                let export = &exports[index];
                let size = export.current_size().await;
                let mut reply = Vec::with_capacity(134);
                reply.extend_from_slice(&size.to_be_bytes());
                reply.extend_from_slice(&export.flags().to_be_bytes());
                if !no_zeroes {
                    reply.resize(reply.len() + 124, 0);
                }
                wr.write_all(&reply).await?;
                wr.flush().await?;
                return Ok(Some((index, size)));
            }
            OPT_ABORT => {
                // The reply is a courtesy: the client may have gone already.
                let _ = option_reply(wr, option, REP_ACK, &[]).await;
                let _ = wr.flush().await;
                return Ok(None);
            }
            OPT_LIST => {
                if data.is_empty() {
                    for e in exports {
                        let mut d = Vec::with_capacity(4 + e.name.len());
                        d.extend_from_slice(&(e.name.len() as u32).to_be_bytes());
                        d.extend_from_slice(e.name.as_bytes());
                        option_reply(wr, option, REP_SERVER, &d).await?;
                    }
                    option_reply(wr, option, REP_ACK, &[]).await?;
                } else {
                    option_reply(wr, option, REP_ERR_INVALID, b"LIST takes no data").await?;
                }
            }
            OPT_INFO | OPT_GO => {
                let Some((name, wanted)) = parse_info_request(&data) else {
                    option_reply(wr, option, REP_ERR_INVALID, b"malformed INFO/GO request").await?;
                    wr.flush().await?;
                    continue;
                };
                let Some(index) = find_export(exports, name) else {
                    let msg = format!("no export named {:?}", String::from_utf8_lossy(name));
                    option_reply(wr, option, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                    wr.flush().await?;
                    continue;
                };
                let export = &exports[index];
                let size = export.current_size().await;
                let mut info = Vec::with_capacity(12);
                info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                info.extend_from_slice(&size.to_be_bytes());
                info.extend_from_slice(&export.flags().to_be_bytes());
                option_reply(wr, option, REP_INFO, &info).await?;
                // Any alignment is served (read-modify-write in the core); the volume's
                // block size is what avoids it.
                let preferred = u32::try_from(export.file.blocksize).unwrap_or(4096);
                let mut bs = Vec::with_capacity(14);
                bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                bs.extend_from_slice(&1u32.to_be_bytes());
                bs.extend_from_slice(&preferred.to_be_bytes());
                bs.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
                option_reply(wr, option, REP_INFO, &bs).await?;
                if wanted.contains(&INFO_NAME) {
                    let mut d = INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(export.name.as_bytes());
                    option_reply(wr, option, REP_INFO, &d).await?;
                }
                if wanted.contains(&INFO_DESCRIPTION) {
                    let mut d = INFO_DESCRIPTION.to_be_bytes().to_vec();
                    d.extend_from_slice(format!("curve volume {}", export.path).as_bytes());
                    option_reply(wr, option, REP_INFO, &d).await?;
                }
                option_reply(wr, option, REP_ACK, &[]).await?;
                wr.flush().await?;
                if option == OPT_GO {
                    return Ok(Some((index, size)));
                }
            }
            _ => {
                let msg = format!("option {option} is not supported");
                option_reply(wr, option, REP_ERR_UNSUP, msg.as_bytes()).await?;
            }
        }
        wr.flush().await?;
    }
}

/// INFO/GO data: u32 name length, the name, u16 count, that many u16 information types.
fn parse_info_request(data: &[u8]) -> Option<(&[u8], Vec<u16>)> {
    let name_len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let name = data.get(4..4usize.checked_add(name_len)?)?;
    let rest = &data[4 + name_len..];
    let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let list = &rest[2..];
    if list.len() != count * 2 {
        return None;
    }
    let wanted = list
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some((name, wanted))
}

// -- transmission -------------------------------------------------------------------------

struct Reply {
    cookie: u64,
    error: u32,
    data: Option<Vec<u8>>,
}

impl Reply {
    fn status(cookie: u64, error: u32) -> Reply {
        Reply {
            cookie,
            error,
            data: None,
        }
    }
}

/// The NBD error for a failed core call.
fn errno(e: &curve_client::Error) -> u32 {
    match e.code {
        ErrorCode::NoSpace => ENOSPC,
        ErrorCode::BadFd => ESHUTDOWN,
        _ => EIO,
    }
}

struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

fn parse_request(h: &[u8; REQUEST_LEN]) -> Result<Request, Closed> {
    let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    let magic = u32_at(0);
    if magic != REQUEST_MAGIC {
        return Err(protocol(format!("bad request magic {magic:#x}")));
    }
    Ok(Request {
        flags: u16_at(4),
        kind: u16_at(6),
        cookie: u64_at(8),
        offset: u64_at(16),
        len: u32_at(24),
    })
}

/// Whether [offset, offset + len) lies inside the export as announced.
fn inside(offset: u64, len: u32, size: u64) -> bool {
    offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= size)
}

/// Reads `len` bytes of a WRITE's payload into fresh memory (not zeroed first).
async fn read_payload<R: AsyncRead + Unpin>(rd: &mut R, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    let mut limited = rd.take(len as u64);
    while buf.len() < len {
        if limited.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

/// One request off the wire: its header and, for a WRITE within the limit, its payload.
struct Incoming {
    req: Request,
    payload: Option<Bytes>,
}

/// Reads the next request. Owns the reader and hands it back, so that the future can be
/// kept across the connection loop's turns (a read cut short would lose the stream's
/// place). `Ok(None)`: the client closed between two requests.
async fn next_request<R: AsyncRead + Unpin>(
    mut rd: BufReader<R>,
) -> (BufReader<R>, Result<Option<Incoming>, Closed>) {
    let mut head = [0u8; REQUEST_LEN];
    let got = match rd.read_exact(&mut head).await {
        Ok(_) => parse_request(&head),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (rd, Ok(None)),
        Err(e) => return (rd, Err(Closed::Io(e))),
    };
    let req = match got {
        Ok(r) => r,
        Err(e) => return (rd, Err(e)),
    };
    // A WRITE over the limit leaves its payload unread: the connection ends after it.
    let payload = if req.kind == CMD_WRITE && req.len <= MAX_PAYLOAD {
        match read_payload(&mut rd, req.len as usize).await {
            Ok(p) => Some(p),
            // Gone mid-payload: the partial write is never started.
            Err(e) => return (rd, Err(Closed::Io(e))),
        }
    } else {
        None
    };
    (rd, Ok(Some(Incoming { req, payload })))
}

type Pending = std::pin::Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What a request asks for: its reply now (a refusal), or the IO that makes it.
fn dispatch(
    file: &Arc<OpenFile>,
    read_only: bool,
    size: u64,
    Incoming { req, payload }: Incoming,
) -> Result<Pending, Reply> {
    let (offset, len, cookie) = (req.offset, req.len, req.cookie);
    let refuse = |error| Err(Reply::status(cookie, error));
    let file = file.clone();
    match req.kind {
        CMD_READ => {
            if req.flags & !CMD_FLAG_FUA != 0 || len > MAX_PAYLOAD || !inside(offset, len, size) {
                return refuse(EINVAL);
            }
            Ok(Box::pin(async move {
                match read(&file, offset, len as usize).await {
                    Ok(data) => Reply {
                        cookie,
                        error: 0,
                        data: Some(data),
                    },
                    Err(e) => {
                        tracing::warn!("NBD read of {len} at {offset} failed: {e}");
                        Reply::status(cookie, errno(&e))
                    }
                }
            }))
        }
        CMD_WRITE => {
            let Some(payload) = payload else {
                return refuse(EINVAL);
            };
            if req.flags & !CMD_FLAG_FUA != 0 {
                return refuse(EINVAL);
            }
            if read_only {
                return refuse(EPERM);
            }
            if !inside(offset, len, size) {
                return refuse(ENOSPC);
            }
            Ok(Box::pin(async move {
                let error = match file.pwrite(offset, payload).await {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::warn!("NBD write of {len} at {offset} failed: {e}");
                        errno(&e)
                    }
                };
                Reply::status(cookie, error)
            }))
        }
        // Every write is committed by the chunkservers before its reply: nothing is left
        // to flush.
        CMD_FLUSH if req.flags == 0 && offset == 0 && len == 0 => refuse(0),
        CMD_TRIM | CMD_WRITE_ZEROES => {
            let known = if req.kind == CMD_TRIM {
                CMD_FLAG_FUA
            } else {
                CMD_FLAG_FUA | CMD_FLAG_NO_HOLE
            };
            if req.flags & !known != 0 {
                return refuse(EINVAL);
            }
            if read_only {
                return refuse(EPERM);
            }
            if !inside(offset, len, size) {
                return refuse(if req.kind == CMD_TRIM { EINVAL } else { ENOSPC });
            }
            // TRIM and WRITE_ZEROES may release whole segments (libcurve's discard, with
            // `discard.enable`); NO_HOLE asks for zeros written.
            let release = req.flags & CMD_FLAG_NO_HOLE == 0;
            Ok(Box::pin(async move {
                let done = if release {
                    file.discard(offset, u64::from(len)).await
                } else {
                    file.write_zeroes(offset, u64::from(len)).await
                };
                let error = match done {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::warn!("NBD zeroing of {len} at {offset} failed: {e}");
                        errno(&e)
                    }
                };
                Reply::status(cookie, error)
            }))
        }
        _ => refuse(EINVAL),
    }
}

async fn put_reply<W: AsyncWrite + Unpin>(wr: &mut BufWriter<W>, r: &Reply) -> io::Result<()> {
    let mut head = [0u8; 16];
    head[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    head[4..8].copy_from_slice(&r.error.to_be_bytes());
    head[8..].copy_from_slice(&r.cookie.to_be_bytes());
    wr.write_all(&head).await?;
    if let Some(d) = &r.data {
        wr.write_all(d).await?;
    }
    Ok(())
}

/// Writes `first` and every other reply already done, then flushes: several small
/// replies share one write. Within [`REPLY_DEADLINE`].
async fn send_replies<W: AsyncWrite + Unpin>(
    wr: &mut BufWriter<W>,
    first: Reply,
    inflight: &mut FuturesUnordered<Pending>,
) -> Result<(), Closed> {
    let sent = timeout(REPLY_DEADLINE, async {
        put_reply(wr, &first).await?;
        // Polled once each, without waiting: the loop polls the set again before it
        // sleeps, so no completion is missed.
        while let Some(Some(next)) = inflight.next().now_or_never() {
            put_reply(wr, &next).await?;
        }
        wr.flush().await
    })
    .await;
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Closed::Io(e)),
        Err(_) => Err(protocol(format!(
            "the client took no reply for {REPLY_DEADLINE:?}"
        ))),
    }
}

/// Serves requests until DISC, the client's end, a protocol error or `stop`. One task
/// per connection reads requests, drives their IO ([`IN_FLIGHT`] at most) and writes the
/// replies as they complete: no hand-off between tasks on the way of a request.
async fn transmission<R, W>(
    rd: BufReader<R>,
    mut wr: BufWriter<W>,
    file: Arc<OpenFile>,
    read_only: bool,
    size: u64,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Closed>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut reading = Box::pin(next_request(rd));
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            biased;
            // Mapped to (): the guard it yields must not live across the other arms' awaits.
            () = stop.wait_for(|s| *s).map(|_| ()) => break,
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                if let Err(e) = send_replies(&mut wr, done, &mut inflight).await {
                    outcome = Err(e);
                    break;
                }
            }
            (rd, got) = &mut reading, if inflight.len() < IN_FLIGHT => {
                let incoming = match got {
                    Ok(Some(i)) => i,
                    // The client closed without DISC, or vanished: what is in flight
                    // still ends.
                    Ok(None) => break,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
                reading = Box::pin(next_request(rd));
                let (kind, len) = (incoming.req.kind, incoming.req.len);
                if kind == CMD_DISC {
                    break;
                }
                match dispatch(&file, read_only, size, incoming) {
                    Ok(io) => inflight.push(io),
                    Err(refusal) => {
                        if let Err(e) = send_replies(&mut wr, refusal, &mut inflight).await {
                            outcome = Err(e);
                            break;
                        }
                    }
                }
                if kind == CMD_WRITE && len > MAX_PAYLOAD {
                    // Its payload cannot be skipped safely: refused above, now closed.
                    outcome = Err(protocol(format!("a WRITE of {len} bytes")));
                    break;
                }
            }
        }
    }
    // In-flight requests end (each within the core's IO deadline) and, while the client
    // takes them, their replies go out before the connection closes, as DISC asks.
    let mut writable = outcome.is_ok();
    while let Some(done) = inflight.next().await {
        if writable && put_reply(&mut wr, &done).await.is_err() {
            writable = false;
        }
    }
    if writable {
        let _ = timeout(REPLY_DEADLINE, async {
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        })
        .await;
    }
    outcome
}

/// Reads `len` bytes at `offset` into memory written once (not zeroed first).
async fn read(file: &OpenFile, offset: u64, len: usize) -> curve_client::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(len);
    file.pread_uninit(offset, &mut data.spare_capacity_mut()[..len])
        .await?;
    // SAFETY: `pread_uninit` returned Ok, which promises that every one of the `len`
    // bytes was written; `len` is within the capacity reserved above.
    unsafe { data.set_len(len) };
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_requests_are_parsed_and_bounded() {
        let mut d = 3u32.to_be_bytes().to_vec();
        d.extend_from_slice(b"vol");
        d.extend_from_slice(&1u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        let (name, wanted) = parse_info_request(&d).expect("well formed");
        assert_eq!(name, b"vol");
        assert_eq!(wanted, vec![INFO_BLOCK_SIZE]);
        // A name length past the data, a count past the list, trailing bytes.
        let mut long = u32::MAX.to_be_bytes().to_vec();
        long.extend_from_slice(b"vol\0\0");
        assert!(parse_info_request(&long).is_none());
        assert!(parse_info_request(&d[..d.len() - 2]).is_none());
        d.push(0);
        assert!(parse_info_request(&d).is_none());
    }

    #[test]
    fn ranges_past_the_end_or_overflowing_are_outside() {
        assert!(inside(0, 4096, 4096));
        assert!(!inside(1, 4096, 4096));
        assert!(!inside(u64::MAX, 1, u64::MAX));
        assert!(inside(4096, 0, 4096));
    }
}
