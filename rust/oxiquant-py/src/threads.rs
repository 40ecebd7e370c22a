//! Thread pools for the heavy calls: one rayon pool per requested size, built on first use.

use crate::errors::InvalidArgumentError;
use pyo3::PyResult;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
static DEFAULT: Mutex<Option<usize>> = Mutex::new(None);

/// Threads used when a call does not say: `set_num_threads`, else `OXIQUANT_NUM_THREADS`,
/// else every core.
pub fn default_threads() -> usize {
    if let Some(n) = DEFAULT.lock().ok().and_then(|g| *g) {
        return n;
    }
    std::env::var("OXIQUANT_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

pub fn set_default(n: Option<usize>) -> PyResult<()> {
    if n == Some(0) {
        return Err(InvalidArgumentError::new_err(
            "num_threads must be >= 1 (or None for the default)",
        ));
    }
    if let Ok(mut g) = DEFAULT.lock() {
        *g = n;
    }
    Ok(())
}

/// The pool for `n` threads (the default when `None`).
pub fn pool(n: Option<usize>) -> PyResult<Arc<ThreadPool>> {
    let n = match n {
        Some(0) => return Err(InvalidArgumentError::new_err("num_threads must be >= 1")),
        Some(n) => n,
        None => default_threads(),
    };
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = pools
        .lock()
        .map_err(|_| InvalidArgumentError::new_err("thread pool registry poisoned"))?;
    if let Some(p) = map.get(&n) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("oxiquant-{i}"))
            .build()
            .map_err(|e| InvalidArgumentError::new_err(format!("cannot start {n} threads: {e}")))?,
    );
    map.insert(n, p.clone());
    Ok(p)
}
