//! The core's metric snapshots as plain dicts; `curvefs.metrics` turns them into its
//! frozen dataclasses (the names and the units are defined there).

use curve_client::metrics::{HistogramSnapshot, IoSnapshot, MdsSnapshot, OpSnapshot};
use pyo3::prelude::*;
use pyo3::types::PyDict;

fn histogram<'py>(py: Python<'py>, h: &HistogramSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", h.count)?;
    d.set_item("sum", h.sum)?;
    d.set_item("max", h.max)?;
    d.set_item("p50", h.p50)?;
    d.set_item("p99", h.p99)?;
    d.set_item("p999", h.p999)?;
    Ok(d)
}

fn op<'py>(py: Python<'py>, o: &OpSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ops", o.ops)?;
    d.set_item("errors", o.errors)?;
    d.set_item("bytes", o.bytes)?;
    d.set_item("timeouts", o.timeouts)?;
    d.set_item("redirects", o.redirects)?;
    d.set_item("latency_us", histogram(py, &o.latency_us)?)?;
    Ok(d)
}

pub fn io<'py>(py: Python<'py>, s: &IoSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("read", op(py, &s.read)?)?;
    d.set_item("write", op(py, &s.write)?)?;
    d.set_item("discard", op(py, &s.discard)?)?;
    d.set_item("read_rpc", op(py, &s.read_rpc)?)?;
    d.set_item("write_rpc", op(py, &s.write_rpc)?)?;
    d.set_item("inflight_rpcs", s.inflight_rpcs)?;
    d.set_item("get_leader_retries", s.get_leader_retries)?;
    d.set_item("slow_requests", s.slow_requests)?;
    Ok(d)
}

pub fn mds<'py>(py: Python<'py>, s: &MdsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let methods = PyDict::new(py);
    for (name, o) in &s.methods {
        methods.set_item(name, op(py, o)?)?;
    }
    d.set_item("methods", methods)?;
    d.set_item("failovers", s.failovers)?;
    d.set_item("current_addr", &s.current_addr)?;
    Ok(d)
}
