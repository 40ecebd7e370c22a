//! The Python exception hierarchy, defined once here and re-exported by `oxiquant`, and the
//! single mapping from core errors to it.

use oxiquant_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyList;

create_exception!(
    _native,
    OxiquantError,
    PyException,
    "Base class of every error oxiquant raises."
);
create_exception!(
    _native,
    UnsupportedOpError,
    OxiquantError,
    "The model uses ops oxiquant cannot run; `.unsupported` lists (op_type, first_node, count, reason)."
);
create_exception!(
    _native,
    ModelFormatError,
    OxiquantError,
    "The model file or graph is unreadable or invalid."
);
create_exception!(
    _native,
    ShapeError,
    OxiquantError,
    "A tensor has the wrong shape or dtype; the message says what was expected."
);
create_exception!(
    _native,
    InvalidArgumentError,
    OxiquantError,
    "An argument is outside its domain."
);
create_exception!(
    _native,
    InternalError,
    OxiquantError,
    "A bug in oxiquant (a caught Rust panic); please report it with the model."
);

/// Converts a core error into the matching Python exception.
pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e.kind() {
        Error::UnsupportedOp(entries) => {
            let err = UnsupportedOpError::new_err(msg);
            Python::attach(|py| {
                let items: Vec<(String, String, usize, String)> = entries
                    .iter()
                    .map(|u| (u.op_type.clone(), u.first_node.clone(), u.count, u.reason.clone()))
                    .collect();
                if let Ok(list) = PyList::new(py, items) {
                    let _ = err.value(py).setattr("unsupported", list);
                }
            });
            err
        }
        Error::ModelFormat(_) => ModelFormatError::new_err(msg),
        Error::Shape(_) => ShapeError::new_err(msg),
        Error::InvalidArgument(_) => InvalidArgumentError::new_err(msg),
        Error::Node { .. } => OxiquantError::new_err(msg),
    }
}

/// Runs `f`, turning a panic into `InternalError` so that it never unwinds into Python.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, Error>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_py),
        Err(payload) => {
            let detail = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(InternalError::new_err(format!(
                "internal error in {what}: {detail} (please report this with the model)"
            )))
        }
    }
}

/// Test hook for the last line of defence: panics on purpose inside `guard` (in a rayon
/// worker when `in_pool`), which must come out as `InternalError` with the process intact.
/// Nothing else calls it; no real code path is meant to panic.
#[pyfunction]
#[pyo3(signature = (in_pool=false))]
pub fn _guard_selftest(py: Python<'_>, in_pool: bool) -> PyResult<()> {
    py.detach(|| {
        guard("guard self-test", || {
            if in_pool {
                use rayon::prelude::*;
                (0..64).into_par_iter().for_each(|i| {
                    if i == 37 {
                        std::panic::panic_any(format!("deliberate panic in worker item {i}"));
                    }
                });
            } else {
                std::panic::panic_any("deliberate panic".to_string());
            }
            Ok(())
        })
    })
}
