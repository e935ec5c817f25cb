//! The core's `tracing` events in Python's `logging`, under the `curvefs` logger
//! (target `curve_client::chunk` → logger `curvefs.curve_client.chunk`), with each
//! event's fields as attributes of its `LogRecord` (`record.volume`, `record.copyset`…).
//!
//! The filter lives in Rust: one level, set from Python (`curvefs._logging` keeps it at
//! the most verbose level any `curvefs` logger asks for, and re-reads it whenever a
//! level changes). tracing caches each call site's interest and its global maximum level,
//! so an event below the level costs a load and a compare at its call site: no GIL, no
//! formatting. Only an event that passes takes the GIL, and Python's logger then has the
//! final say (`isEnabledFor`, handlers, filters).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};

/// The most verbose level that crosses to Python: 0 off, 1 error … 5 trace. WARN until
/// Python says otherwise (the level of an unconfigured `curvefs` logger).
static MAX_RANK: AtomicU8 = AtomicU8::new(2);

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn python_level(level: &Level) -> i32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// Sets the filter from a Python logging level: events at or above it cross to Python.
pub fn set_level(py_level: i32) {
    let r = match py_level {
        l if l <= 5 => 5,
        l if l <= 10 => 4,
        l if l <= 20 => 3,
        l if l <= 30 => 2,
        l if l <= 40 => 1,
        _ => 0,
    };
    if MAX_RANK.swap(r, Ordering::AcqRel) != r {
        // Call sites cached "never" (or "always") for the old level: ask them again.
        tracing::callsite::rebuild_interest_cache();
    }
}

/// The Python level the filter lets through (for `curvefs._logging` and tests).
pub fn level() -> i32 {
    match MAX_RANK.load(Ordering::Acquire) {
        0 => 50,
        1 => 40,
        2 => 30,
        3 => 20,
        4 => 10,
        _ => 5,
    }
}

/// Makes the bridge the process's tracing subscriber (once; a no-op if another one is).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(Bridge {
        next_span: AtomicU64::new(1),
    });
}

struct Bridge {
    next_span: AtomicU64,
}

impl Subscriber for Bridge {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        rank(meta.level()) <= MAX_RANK.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match MAX_RANK.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }

    // Spans (the dependencies' request spans) carry nothing Python's logging shows.
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        if !crate::runtime::python_alive() {
            return;
        }
        // SAFETY: Py_IsInitialized only reads a flag of the runtime; it may be called at
        // any time, with or without the GIL.
        if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        Python::attach(|py| {
            // An exception pending on this thread (the event came from inside a call
            // that is failing) must survive the logging call.
            let pending = PyErr::take(py);
            if let Err(e) = emit(py, event.metadata(), fields) {
                e.write_unraisable(py, None);
            }
            if let Some(e) = pending {
                e.restore(py);
            }
        });
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// A field's value, kept typed so the `LogRecord` attribute is an int where it was one.
enum Value {
    Int(i64),
    UInt(u64),
    Bool(bool),
    Float(f64),
    Text(String),
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Value::Int(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Value::UInt(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Value::Bool(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Value::Float(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .push((field.name(), Value::Text(value.to_string())));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name(), Value::Text(format!("{value:?}"))));
        }
    }
}

/// `LogRecord` attributes an event field must not overwrite (`makeRecord` refuses
/// `message` and `asctime`; the rest would silently change what handlers show).
const RESERVED: &[&str] = &[
    "name",
    "msg",
    "args",
    "levelname",
    "levelno",
    "pathname",
    "filename",
    "module",
    "exc_info",
    "exc_text",
    "stack_info",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
    "taskName",
    "message",
    "asctime",
];

fn emit(py: Python<'_>, meta: &Metadata<'_>, fields: Fields) -> PyResult<()> {
    static GET_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get_logger = GET_LOGGER.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("logging")?.getattr("getLogger")?.unbind())
    })?;
    let name = format!("curvefs.{}", meta.target().replace("::", "."));
    let logger = get_logger.call1(py, (name.as_str(),))?.into_bound(py);
    let level = python_level(meta.level());
    if !logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
        return Ok(());
    }
    let extra = PyDict::new(py);
    for (key, value) in fields.fields {
        let key = if RESERVED.contains(&key) {
            format!("field_{key}")
        } else {
            key.to_string()
        };
        match value {
            Value::Int(v) => extra.set_item(key, v)?,
            Value::UInt(v) => extra.set_item(key, v)?,
            Value::Bool(v) => extra.set_item(key, v)?,
            Value::Float(v) => extra.set_item(key, v)?,
            Value::Text(v) => extra.set_item(key, v)?,
        }
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("extra", extra)?;
    let record = logger.call_method(
        "makeRecord",
        (
            name,
            level,
            meta.file().unwrap_or("<rust>"),
            meta.line().unwrap_or(0),
            fields.message,
            PyTuple::empty(py),
            py.None(),
        ),
        Some(&kwargs),
    )?;
    logger.call_method1("handle", (record,))?;
    Ok(())
}
