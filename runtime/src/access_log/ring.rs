//! A byte ring with one producer (a worker) and one consumer (the log writer thread), over a
//! span of the region. The producer adds whole lines or nothing, and never waits: a line that
//! does not fit is refused and the caller counts it dropped. The consumer reads what is
//! published, in order, and gives the room back once it is written out.
//!
//! Positions are byte counts since the start that never wrap (a `usize` of bytes outlives any
//! process); a byte's place in the buffer is its position modulo the capacity. The producer alone
//! writes `head`, the consumer alone writes `tail`; the bytes in `[tail, head)` belong to the
//! consumer, the rest of the buffer to the producer, so the two never touch the same byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cella_arena::Span;

/// The positions both sides read, each on its own cache line (the producer stores one, the
/// consumer the other, many times a second).
struct Shared {
    buf: *mut u8,
    capacity: usize,
    head: Padded,
    tail: Padded,
}

#[repr(align(128))]
struct Padded(AtomicUsize);

// SAFETY: `buf` points into the region, which outlives the rings (the server stops the writer
// before it unmaps the region); the producer and the consumer touch disjoint bytes of it, as
// the positions (with Release/Acquire between them) say; the positions are atomics.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`: shared access is only to the atomics, and to disjoint bytes of `buf`.
unsafe impl Sync for Shared {}

/// The producing side: owned by one worker.
pub(crate) struct Producer {
    shared: Arc<Shared>,
    /// This side's own copy of `head`.
    head: usize,
}

/// The consuming side: owned by the writer thread.
pub(crate) struct Consumer {
    shared: Arc<Shared>,
    /// This side's own copy of `tail`.
    tail: usize,
}

/// A ring over `span`, which must be used by nothing else while either side lives (the
/// worker's access log span: `Region::carve` gives it to this worker alone).
pub(crate) fn ring(span: Span) -> (Producer, Consumer) {
    let shared = Arc::new(Shared {
        buf: span.ptr.as_ptr(),
        capacity: span.len,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (Producer { shared: shared.clone(), head: 0 }, Consumer { shared, tail: 0 })
}

impl Producer {
    /// Adds `line` whole and returns the bytes the ring now holds, or `None` when it does not
    /// fit (the ring is unchanged). Never waits.
    pub(crate) fn push(&mut self, line: &[u8]) -> Option<usize> {
        let shared = &*self.shared;
        // Acquire: pairs with the consumer's Release store of `tail` once it has written the
        // bytes out, so they are not overwritten while it still reads them.
        let tail = shared.tail.0.load(Ordering::Acquire);
        let used = self.head - tail;
        if line.len() > shared.capacity - used {
            return None;
        }
        let start = self.head % shared.capacity;
        let first = line.len().min(shared.capacity - start);
        // SAFETY: `[head, head + len)` is free room (checked above), so no byte of it is in the
        // consumer's `[tail, head)`; `start + first <= capacity` and `len - first <= start`
        // keep both copies inside the span, which `ring`'s caller gave to this ring alone.
        unsafe {
            std::ptr::copy_nonoverlapping(line.as_ptr(), shared.buf.add(start), first);
            std::ptr::copy_nonoverlapping(line.as_ptr().add(first), shared.buf, line.len() - first);
        }
        self.head += line.len();
        // Release: pairs with the consumer's Acquire load of `head`, which makes the bytes just
        // copied visible before it reads them.
        shared.head.0.store(self.head, Ordering::Release);
        Some(used + line.len())
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity
    }
}

impl Consumer {
    /// The bytes published and not yet consumed, as up to two slices (the second when they
    /// wrap around the end of the buffer). Whole lines: the producer publishes nothing else.
    pub(crate) fn readable(&self) -> (&[u8], &[u8]) {
        let shared = &*self.shared;
        // Acquire: pairs with the producer's Release store of `head`.
        let head = shared.head.0.load(Ordering::Acquire);
        let len = head - self.tail;
        if len == 0 {
            return (&[], &[]);
        }
        let start = self.tail % shared.capacity;
        let first = len.min(shared.capacity - start);
        // SAFETY: `[tail, head)` is published (the Acquire above) and the producer does not
        // write it until `consume` gives it back; both slices lie inside the span.
        unsafe {
            (
                std::slice::from_raw_parts(shared.buf.add(start), first),
                std::slice::from_raw_parts(shared.buf, len - first),
            )
        }
    }

    /// Gives `count` bytes, from the front of [`Consumer::readable`], back to the producer.
    pub(crate) fn consume(&mut self, count: usize) {
        let head = self.shared.head.0.load(Ordering::Relaxed);
        assert!(count <= head - self.tail, "consumes only what was readable");
        self.tail += count;
        // Release: pairs with the producer's Acquire load of `tail`: the bytes were read before
        // the room is given back.
        self.shared.tail.0.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(consumer: &Consumer) -> Vec<u8> {
        let (first, second) = consumer.readable();
        [first, second].concat()
    }

    #[test]
    fn lines_go_through_in_order_wrapping_around_and_a_full_ring_refuses_whole_lines() {
        let mut memory = [0u8; 10];
        let (mut producer, mut consumer) = ring(Span::new(memory.as_mut_ptr(), memory.len()));
        assert_eq!(producer.push(b"abcd"), Some(4));
        assert_eq!(producer.push(b"efgh"), Some(8));
        assert_eq!(producer.push(b"ijk"), None, "3 bytes do not fit in the 2 left");
        assert_eq!(producer.push(b"ij"), Some(10), "exactly the room left fits");
        assert_eq!(joined(&consumer), b"abcdefghij");
        consumer.consume(4);
        assert_eq!(producer.push(b"klmn"), Some(10), "wraps around the end");
        let (first, second) = consumer.readable();
        assert_eq!((first, second), (&b"efghij"[..], &b"klmn"[..]));
        consumer.consume(10);
        assert_eq!(joined(&consumer), b"");
        assert_eq!(producer.push(b"0123456789"), Some(10));
        assert_eq!(joined(&consumer), b"0123456789");
    }

    #[test]
    fn a_consumer_on_another_thread_reads_every_line_once_in_order() {
        let mut memory = vec![0u8; 64];
        let (mut producer, mut consumer) = ring(Span::new(memory.as_mut_ptr(), memory.len()));
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 10_000 * 4 {
                let bytes = joined(&consumer);
                seen.extend_from_slice(&bytes);
                consumer.consume(bytes.len());
            }
            seen
        });
        for index in 0..10_000u32 {
            let line = (index % 10_000).to_be_bytes();
            while producer.push(&line).is_none() {
                std::hint::spin_loop();
            }
        }
        let seen = reader.join().unwrap();
        for (index, chunk) in seen.chunks(4).enumerate() {
            assert_eq!(chunk, (index as u32).to_be_bytes());
        }
        drop(memory);
    }
}
