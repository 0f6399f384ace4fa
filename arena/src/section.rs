//! Runtime sections: code the preemption timer must not abandon halfway. A handler that ran
//! past its deadline is cut off (its stack abandoned) only while the code it runs is its own;
//! a section marks code that updates state outliving the request (a state heap's lock and
//! metadata, a slot's descriptor table, a host function's bookkeeping), so the cut waits until
//! the section has ended. Per thread, read by the signal handler on the same thread.

use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};

thread_local! {
    /// How many sections this thread is inside (they nest).
    static DEPTH: AtomicU32 = const { AtomicU32::new(0) };
}

/// One runtime section: from [`RuntimeSection::enter`] until dropped.
#[must_use = "the section ends when this is dropped"]
pub struct RuntimeSection(());

impl RuntimeSection {
    #[inline]
    pub fn enter() -> RuntimeSection {
        // Relaxed plus a compiler fence: only a signal handler on this thread reads the depth,
        // so it needs the store ordered before the section's code, not a CPU fence.
        DEPTH.with(|depth| depth.store(depth.load(Ordering::Relaxed) + 1, Ordering::Relaxed));
        compiler_fence(Ordering::SeqCst);
        RuntimeSection(())
    }
}

impl Drop for RuntimeSection {
    #[inline]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        DEPTH.with(|depth| {
            depth.store(depth.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed)
        });
    }
}

/// Sections this thread is inside now (0: the running code is a handler's own, or no
/// section-marked code runs). Async-signal-safe.
#[inline]
pub fn runtime_depth() -> u32 {
    DEPTH.with(|depth| depth.load(Ordering::Relaxed))
}

/// Sets this thread's depth: a coroutine switch saves and restores it (each handler's sections
/// are its own), and a task that starts runs at 0 whatever an abandoned task left.
#[inline]
pub fn set_runtime_depth(value: u32) {
    compiler_fence(Ordering::SeqCst);
    DEPTH.with(|depth| depth.store(value, Ordering::Relaxed));
    compiler_fence(Ordering::SeqCst);
}
