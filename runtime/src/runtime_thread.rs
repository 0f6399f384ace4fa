//! The runtime's own threads (the access log writer, the watchdog, the stdio probe): each is
//! started before the workers seal, and [`spawn`] returns only once the new thread runs its
//! body. std sets a new thread up on the thread itself (it maps the thread's signal stack and
//! makes its guard page inaccessible) after `spawn` returned to the caller; that must be over
//! before startup ends: before the escape check reads the process's mappings (a page that turns
//! inaccessible under the reader is a crash) and before the no-allocation window opens.

use std::io;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// Spawns `body` on a thread named `name` and waits until the thread has started it.
pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let started = Arc::new(Barrier::new(2));
    let thread_started = started.clone();
    let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
        thread_started.wait();
        body()
    })?;
    started.wait();
    Ok(thread)
}
