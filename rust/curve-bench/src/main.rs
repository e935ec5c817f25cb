//! The native half of `benches/bench_compare.py`: the Rust core driven without Python, and
//! the machine's loopback ceilings, so the harness can put both next to the Python clients
//! in one run. Not a user tool and not shipped.
//!
//! The harness starts one process per client (one `client.conf`, one volume) and talks to
//! it over stdin/stdout, one JSON object per line each way, so that its cells interleave
//! with the Python clients' cells. IO cells mirror the Python threads exactly: OS threads,
//! each blocking on the shared runtime (`block_on` on the calling thread, 2 workers for the
//! connections' background tasks — what the binding does), one `curve_client::Client` and
//! one fd shared by all. Writes go through `Client::write` (one copy, as `CBDClient.Write`);
//! reads fill a buffer reused per thread (what a Rust user would do; `CBDClient.Read`
//! allocates a fresh `bytes` per call, which is part of the Python layer's cost).
//!
//! Commands (`op`): `open` {conf, path, size, user}, `fill` {offset, len}, `io` {kind:
//! randread|randwrite|seqread|seqwrite, bs, threads, seconds, span_off, span_len},
//! `tcp_bw` {seconds, size}, `tcp_rtt` {seconds, size, pin}, `close`. Every reply carries
//! `ok`; IO replies carry ops, bytes, elapsed, cpu (user + system seconds of this process
//! over the cell), its context switches over the cell (vcsw voluntary, ivcsw involuntary)
//! and latency percentiles in µs.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use curve_client::{Client, ClientConfig, CreateOptions, ErrorCode, UserInfo};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

const MIB: u64 = 1 << 20;

/// This whole process's resource usage so far (every thread, the runtime's too, and
/// threads that already ended).
fn usage() -> Option<libc::rusage> {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage; RUSAGE_SELF is always a valid target.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    (rc == 0).then_some(u)
}

/// User + system CPU seconds of this whole process.
fn cpu_seconds() -> f64 {
    let Some(u) = usage() else {
        return 0.0;
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Context switches of this whole process so far: (voluntary, involuntary).
fn context_switches() -> (i64, i64) {
    usage().map_or((0, 0), |u| (u.ru_nvcsw, u.ru_nivcsw))
}

/// A tiny xorshift: the offsets need to be spread, not unpredictable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e3
}

fn num(cmd: &Value, key: &str) -> Res<u64> {
    cmd.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("command lacks the number {key:?}").into())
}

fn text<'a>(cmd: &'a Value, key: &str) -> Res<&'a str> {
    cmd.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("command lacks the string {key:?}").into())
}

struct Volume {
    client: Client,
    fd: i32,
    /// Next offset of sequential IO, shared by the threads of a cell.
    write_pos: AtomicU64,
    read_pos: AtomicU64,
    /// How far sequential writes reached (reads stay inside, so they read real chunks).
    written: AtomicU64,
}

struct Bench {
    rt: tokio::runtime::Runtime,
    vol: Option<Volume>,
}

/// Sequential IO wraps inside the first 4 GiB of the volume.
const SEQ_SPAN: u64 = 4 << 30;

impl Bench {
    fn open(&mut self, cmd: &Value) -> Res<Value> {
        let conf = ClientConfig::from_file(Path::new(text(cmd, "conf")?))?;
        let client = Client::new(conf)?;
        let user = UserInfo {
            owner: text(cmd, "user")?.to_string(),
            password: String::new(),
        };
        let path = text(cmd, "path")?;
        let size = num(cmd, "size")?;
        let fd = self.rt.block_on(async {
            match client
                .create(path, &user, size, &CreateOptions::default())
                .await
            {
                Err(e) if e.code != ErrorCode::Exists => return Err(e),
                _ => {}
            }
            client.open(path, &user).await
        })?;
        self.vol = Some(Volume {
            client,
            fd,
            write_pos: AtomicU64::new(0),
            read_pos: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        Ok(json!({"ok": true, "fd": fd}))
    }

    fn vol(&self) -> Res<&Volume> {
        self.vol.as_ref().ok_or_else(|| "no volume is open".into())
    }

    fn fill(&self, cmd: &Value) -> Res<Value> {
        let vol = self.vol()?;
        let (offset, len) = (num(cmd, "offset")?, num(cmd, "len")?);
        let data = vec![0x5au8; MIB as usize];
        let mut off = offset;
        while off < offset + len {
            self.rt
                .block_on(vol.client.write(vol.fd, off, &data))
                .map_err(|e| format!("fill at {off}: {e}"))?;
            off += MIB;
        }
        Ok(json!({"ok": true}))
    }

    fn io(&self, cmd: &Value) -> Res<Value> {
        let vol = self.vol()?;
        let kind = text(cmd, "kind")?;
        let bs = num(cmd, "bs")?;
        let threads = num(cmd, "threads")?.max(1);
        let seconds = cmd.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
        let span_off = num(cmd, "span_off")?;
        let span_len = num(cmd, "span_len")?;
        let (random, write) = match kind {
            "randread" => (true, false),
            "randwrite" => (true, true),
            "seqread" => (false, false),
            "seqwrite" => (false, true),
            other => return Err(format!("unknown IO kind {other:?}").into()),
        };
        // Each sequential cell starts at offset 0, so IO of every size stays aligned to it.
        match kind {
            "seqread" => vol.read_pos.store(0, Ordering::Relaxed),
            "seqwrite" => vol.write_pos.store(0, Ordering::Relaxed),
            _ => {}
        }
        let blocks = (span_len / bs).max(1);
        let failure: Mutex<Option<String>> = Mutex::new(None);
        let lat: Mutex<Vec<u64>> = Mutex::new(Vec::new());
        let cpu0 = cpu_seconds();
        let csw0 = context_switches();
        let start = Instant::now();
        let stop = start + Duration::from_secs_f64(seconds);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (failure, lat, rt) = (&failure, &lat, &self.rt);
                s.spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    let mut buf = vec![0x3cu8; bs as usize];
                    let mut mine: Vec<u64> = Vec::with_capacity(1 << 16);
                    while Instant::now() < stop {
                        let off = if random {
                            span_off + rng.below(blocks) * bs
                        } else if write {
                            let p = vol.write_pos.fetch_add(bs, Ordering::Relaxed) % SEQ_SPAN;
                            vol.written.fetch_max(p + bs, Ordering::Relaxed);
                            p
                        } else {
                            let extent = (vol.written.load(Ordering::Relaxed) / bs).max(1) * bs;
                            vol.read_pos.fetch_add(bs, Ordering::Relaxed) % extent
                        };
                        let t0 = Instant::now();
                        let r = if write {
                            rt.block_on(vol.client.write(vol.fd, off, &buf))
                        } else {
                            rt.block_on(vol.client.read(vol.fd, off, &mut buf))
                        };
                        mine.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        if let Err(e) = r {
                            *failure.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(format!("{kind} at {off}: {e}"));
                            return;
                        }
                    }
                    lat.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
                });
            }
        });
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let csw = context_switches();
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e.into());
        }
        let mut lat = lat.into_inner().unwrap_or_else(|p| p.into_inner());
        lat.sort_unstable();
        let ops = lat.len() as u64;
        let mean = lat.iter().sum::<u64>() as f64 / ops.max(1) as f64 / 1e3;
        Ok(json!({
            "ok": true, "ops": ops, "bytes": ops * bs, "elapsed": elapsed, "cpu": cpu,
            "mean_us": mean, "p50_us": percentile(&lat, 0.5), "p99_us": percentile(&lat, 0.99),
            "vcsw": csw.0 - csw0.0, "ivcsw": csw.1 - csw0.1,
        }))
    }

    fn close(&mut self) -> Res<Value> {
        if let Some(vol) = self.vol.take() {
            self.rt.block_on(vol.client.close(vol.fd))?;
            vol.client.shutdown();
        }
        Ok(json!({"ok": true}))
    }
}

/// One stream over 127.0.0.1: a sender writing `size`-byte buffers for `seconds`, a
/// receiver reading into a buffer of the same size. Bytes per second at the receiver.
fn tcp_bw(cmd: &Value) -> Res<Value> {
    let seconds = cmd.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
    let size = usize::try_from(num(cmd, "size")?)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let cpu0 = cpu_seconds();
    let receiver = std::thread::spawn(move || -> Res<(u64, f64)> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        let mut got = 0u64;
        let start = Instant::now();
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        Ok((got, start.elapsed().as_secs_f64()))
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let buf = vec![0xa5u8; size];
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < stop {
        s.write_all(&buf)?;
    }
    drop(s);
    let (got, elapsed) = receiver.join().map_err(|_| "receiver panicked")??;
    Ok(json!({
        "ok": true, "bytes": got, "elapsed": elapsed, "bytes_per_s": got as f64 / elapsed,
        "cpu": cpu_seconds() - cpu0,
    }))
}

/// Pins the calling thread to one CPU (best effort: without it the figure is unpinned).
fn pin_to(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it for any
    // `cpu` below CPU_SETSIZE, which the caller's values (0 and 1) are.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Ping-pong of `size`-byte messages over one loopback connection at queue depth 1. With
/// `pin`, the two ends run on CPUs 0 and 1, so every message is a cross-CPU wakeup, as
/// between a client and a server busy elsewhere; unpinned, the scheduler may keep both on
/// one CPU. Both ends run on threads of their own, so the pinning ends with the call.
fn tcp_rtt(cmd: &Value) -> Res<Value> {
    let seconds = cmd.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
    let size = usize::try_from(num(cmd, "size")?)?.max(1);
    let pin = cmd.get("pin").and_then(Value::as_bool).unwrap_or(false);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> Res<()> {
        if pin {
            pin_to(1);
        }
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    });
    let client = std::thread::spawn(move || -> Res<(Vec<u64>, f64)> {
        if pin {
            pin_to(0);
        }
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let mut buf = vec![0x11u8; size];
        let mut lat: Vec<u64> = Vec::new();
        let start = Instant::now();
        let stop = start + Duration::from_secs_f64(seconds);
        while Instant::now() < stop {
            let t0 = Instant::now();
            s.write_all(&buf)?;
            s.read_exact(&mut buf)?;
            lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        Ok((lat, start.elapsed().as_secs_f64()))
    });
    let (mut lat, elapsed) = client.join().map_err(|_| "client panicked")??;
    echo.join().map_err(|_| "echo panicked")??;
    lat.sort_unstable();
    Ok(json!({
        "ok": true, "round_trips": lat.len(), "elapsed": elapsed,
        "per_s": lat.len() as f64 / elapsed, "p50_us": percentile(&lat, 0.5),
        "p99_us": percentile(&lat, 0.99),
    }))
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("curve-bench")
        .enable_all()
        .build()?;
    let mut bench = Bench { rt, vol: None };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = serde_json::from_str::<Value>(&line)
            .map_err(BoxError::from)
            .and_then(|cmd| match cmd.get("op").and_then(Value::as_str) {
                Some("open") => bench.open(&cmd),
                Some("fill") => bench.fill(&cmd),
                Some("io") => bench.io(&cmd),
                Some("tcp_bw") => tcp_bw(&cmd),
                Some("tcp_rtt") => tcp_rtt(&cmd),
                Some("close") => bench.close(),
                other => Err(format!("unknown op {other:?}").into()),
            })
            .unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()}));
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    bench.close()?;
    Ok(())
}
