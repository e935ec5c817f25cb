//! The SDK's plain structs: `UserInfo_t`, `FileInfo_t` and `CreateContext`.
//!
//! They are mutable, as upstream's SWIG proxies were (`user.owner = "curve"`,
//! `StatFile(..., finfo)` fills `finfo` in place), so they cannot be frozen.

use pyo3::prelude::*;

/// `s` quoted as Python's `repr` quotes a str (single quotes, escapes), for `__repr__`s that
/// read like the constructor call.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Who makes a call: `owner` and `password` (empty unless the owner is root).
#[pyclass(name = "UserInfo_t", module = "curvefs")]
#[derive(Clone, Default)]
pub struct UserInfo {
    #[pyo3(get, set)]
    pub owner: String,
    #[pyo3(get, set)]
    pub password: String,
}

#[pymethods]
impl UserInfo {
    #[new]
    #[pyo3(signature = (owner = String::new(), password = String::new()))]
    #[pyo3(text_signature = "(owner='', password='')")]
    fn new(owner: String, password: String) -> Self {
        UserInfo { owner, password }
    }

    fn __getnewargs__(&self) -> (String, String) {
        (self.owner.clone(), self.password.clone())
    }

    fn __repr__(&self) -> String {
        // The password stays out of reprs, which end up in logs and tracebacks.
        let password = if self.password.is_empty() { "" } else { "***" };
        format!(
            "UserInfo_t(owner={}, password={})",
            quote(&self.owner),
            quote(password)
        )
    }
}

impl UserInfo {
    pub fn to_client(&self) -> curve_client::UserInfo {
        curve_client::UserInfo {
            owner: self.owner.clone(),
            password: self.password.clone(),
        }
    }
}

/// A file's attributes as `StatFile` reports them.
#[pyclass(name = "FileInfo_t", module = "curvefs")]
#[derive(Clone, Default)]
pub struct FileInfo {
    #[pyo3(get, set)]
    pub id: u64,
    #[pyo3(get, set)]
    pub parentid: u64,
    #[pyo3(get, set)]
    pub filetype: i32,
    #[pyo3(get, set)]
    pub length: u64,
    #[pyo3(get, set)]
    pub ctime: u64,
    #[pyo3(get, set)]
    pub filename: String,
    #[pyo3(get, set)]
    pub owner: String,
    #[pyo3(get, set, name = "fileStatus")]
    pub file_status: i32,
    #[pyo3(get, set, name = "stripeUnit")]
    pub stripe_unit: u64,
    #[pyo3(get, set, name = "stripeCount")]
    pub stripe_count: u64,
    /// curvefs's addition: a lazy clone's source volume ("" for none).
    #[pyo3(get, set, name = "cloneSource")]
    pub clone_source: String,
    /// curvefs's addition: the source's length when the clone was made (0 for none).
    #[pyo3(get, set, name = "cloneLength")]
    pub clone_length: u64,
}

#[pymethods]
impl FileInfo {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn __repr__(&self) -> String {
        format!(
            "FileInfo_t(id={}, parentid={}, filetype={}, length={}, ctime={}, filename={}, \
             owner={}, fileStatus={}, stripeUnit={}, stripeCount={}, cloneSource={}, \
             cloneLength={})",
            self.id,
            self.parentid,
            self.filetype,
            self.length,
            self.ctime,
            quote(&self.filename),
            quote(&self.owner),
            self.file_status,
            self.stripe_unit,
            self.stripe_count,
            quote(&self.clone_source),
            self.clone_length
        )
    }
}

impl FileInfo {
    /// Copies what the MDS reported (absent fields are already 0 or "").
    pub fn fill_from(&mut self, f: &curve_client::FileStat) {
        self.id = f.id;
        self.parentid = f.parent_id;
        self.filetype = f.file_type;
        self.length = f.length;
        self.ctime = f.ctime_us;
        self.filename = f.name.clone();
        self.owner = f.owner.clone();
        self.file_status = f.status;
        self.stripe_unit = f.stripe_unit;
        self.stripe_count = f.stripe_count;
        self.clone_source = f.clone_source.clone();
        self.clone_length = f.clone_length;
    }
}

/// The arguments of `Create2`: a file with a poolset and striping.
#[pyclass(module = "curvefs")]
pub struct CreateContext {
    #[pyo3(get, set)]
    pub name: String,
    #[pyo3(get, set)]
    pub length: u64,
    /// Shared, not copied: `ctx.user.owner = "x"` changes the context, as with SWIG.
    #[pyo3(get, set)]
    pub user: Py<UserInfo>,
    #[pyo3(get, set)]
    pub poolset: String,
    #[pyo3(get, set, name = "stripeUnit")]
    pub stripe_unit: u64,
    #[pyo3(get, set, name = "stripeCount")]
    pub stripe_count: u64,
}

#[pymethods]
impl CreateContext {
    #[new]
    #[pyo3(signature = (name = String::new(), length = 0, user = None, poolset = String::new(), stripeUnit = 0, stripeCount = 0))]
    #[pyo3(
        text_signature = "(name='', length=0, user=None, poolset='', stripeUnit=0, stripeCount=0)"
    )]
    #[allow(non_snake_case)] // keyword names are the attributes' names
    fn new(
        py: Python<'_>,
        name: String,
        length: u64,
        user: Option<Py<UserInfo>>,
        poolset: String,
        stripeUnit: u64,
        stripeCount: u64,
    ) -> PyResult<Self> {
        let user = match user {
            Some(u) => u,
            None => Py::new(py, UserInfo::default())?,
        };
        Ok(CreateContext {
            name,
            length,
            user,
            poolset,
            stripe_unit: stripeUnit,
            stripe_count: stripeCount,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let user = self.user.bind(py).try_borrow()?.__repr__();
        Ok(format!(
            "CreateContext(name={}, length={}, user={user}, poolset={}, stripeUnit={}, \
             stripeCount={})",
            quote(&self.name),
            self.length,
            quote(&self.poolset),
            self.stripe_unit,
            self.stripe_count
        ))
    }
}
