//! Fallible growable collections in an [`Arena`]: every growth returns `Result`, none aborts
//! and none cancels the request, so a handler can degrade gracefully where it wants to.
//!
//! Elements are never dropped (they live in an arena); use them for plain data.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::arena::{AllocError, Arena};

/// A vector whose buffer lives in an arena. Growing the most recent allocation happens in
/// place, so building one vector at a time costs no copies.
pub struct ArenaVec<'a, T> {
    arena: &'a Arena,
    ptr: NonNull<T>,
    len: usize,
    capacity: usize,
    marker: PhantomData<&'a mut [T]>,
}

impl<'a, T> ArenaVec<'a, T> {
    pub fn new_in(arena: &'a Arena) -> Self {
        let capacity = if size_of::<T>() == 0 { usize::MAX } else { 0 };
        ArenaVec { arena, ptr: NonNull::dangling(), len: 0, capacity, marker: PhantomData }
    }

    pub fn with_capacity_in(capacity: usize, arena: &'a Arena) -> Result<Self, AllocError> {
        let mut vec = Self::new_in(arena);
        vec.try_reserve(capacity)?;
        Ok(vec)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes room for `additional` more elements.
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), AllocError> {
        let needed = self.len.checked_add(additional).ok_or(AllocError)?;
        if needed <= self.capacity {
            return Ok(());
        }
        let new_capacity = needed.max(self.capacity.saturating_mul(2)).max(4);
        let new_layout = Layout::array::<T>(new_capacity).map_err(|_| AllocError)?;
        if self.capacity > 0
            && self.arena.try_resize_in_place(self.ptr.as_ptr().cast(), new_layout.size())
        {
            self.capacity = new_capacity;
            return Ok(());
        }
        let new_ptr = self.arena.try_alloc_layout(new_layout)?.cast::<T>();
        // SAFETY: the old buffer holds `len` initialised elements; the new one is fresh and
        // larger, so the two cannot overlap.
        unsafe { ptr::copy_nonoverlapping(self.ptr.as_ptr(), new_ptr.as_ptr(), self.len) };
        self.ptr = new_ptr;
        self.capacity = new_capacity;
        Ok(())
    }

    pub fn try_push(&mut self, value: T) -> Result<(), AllocError> {
        self.try_reserve(1)?;
        // SAFETY: `try_reserve` made room for one more element at index `len`.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised and the buffer is ours.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The elements, borrowed for as long as the arena lives.
    pub fn into_slice(self) -> &'a mut [T] {
        // SAFETY: the buffer lives until the arena's wipe, which needs `&mut Arena` and so
        // cannot happen while `'a` borrows it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Gives the buffer back to the arena when it is still the most recent allocation.
    pub fn discard(self) {
        if self.capacity > 0 && size_of::<T>() != 0 {
            self.arena.free(self.ptr.as_ptr().cast());
        }
    }
}

impl<T: Copy> ArenaVec<'_, T> {
    pub fn try_extend_from_slice(&mut self, items: &[T]) -> Result<(), AllocError> {
        self.try_reserve(items.len())?;
        // SAFETY: room for `items.len()` more elements was reserved; `items` cannot overlap the
        // spare capacity, which nobody else has seen.
        unsafe {
            ptr::copy_nonoverlapping(items.as_ptr(), self.ptr.as_ptr().add(self.len), items.len())
        };
        self.len += items.len();
        Ok(())
    }
}

/// A UTF-8 string in an arena; `write!` into it fails (instead of aborting) when the arena is
/// spent.
pub struct ArenaString<'a> {
    bytes: ArenaVec<'a, u8>,
}

impl<'a> ArenaString<'a> {
    pub fn new_in(arena: &'a Arena) -> Self {
        ArenaString { bytes: ArenaVec::new_in(arena) }
    }

    pub fn try_push_str(&mut self, text: &str) -> Result<(), AllocError> {
        self.bytes.try_extend_from_slice(text.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: only whole `str`s are ever appended.
        unsafe { std::str::from_utf8_unchecked(self.bytes.as_slice()) }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The text, borrowed for as long as the arena lives.
    pub fn into_str(self) -> &'a str {
        // SAFETY: only whole `str`s are ever appended.
        unsafe { std::str::from_utf8_unchecked(self.bytes.into_slice()) }
    }

    pub fn discard(self) {
        self.bytes.discard();
    }
}

impl fmt::Write for ArenaString<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.try_push_str(text).map_err(|_| fmt::Error)
    }
}

impl fmt::Display for ArenaString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Span;
    use std::fmt::Write;

    #[test]
    fn vec_grows_in_place_then_fails_without_losing_data() {
        let mut backing = vec![0u64; 64];
        // SAFETY: `backing` outlives the arena and nothing else touches it meanwhile.
        let arena = unsafe { Arena::new(Span::new(backing.as_mut_ptr().cast(), 512)) };
        let mut vec = ArenaVec::new_in(&arena);
        for i in 0..100u32 {
            vec.try_push(i).unwrap();
        }
        assert_eq!(arena.used_bytes(), vec.capacity() * 4, "growth happened in place");
        let mut pushed = 100;
        while vec.try_push(pushed).is_ok() {
            pushed += 1;
        }
        assert_eq!(vec.len(), 128);
        assert!(vec.as_slice().iter().copied().eq(0..128));
    }

    #[test]
    fn string_write_fails_when_spent() {
        let mut backing = vec![0u64; 4];
        // SAFETY: as above.
        let arena = unsafe { Arena::new(Span::new(backing.as_mut_ptr().cast(), 32)) };
        let mut text = ArenaString::new_in(&arena);
        write!(text, "{}-{}", 1, 2).unwrap();
        assert_eq!(text.as_str(), "1-2");
        assert!(write!(text, "{:>64}", "x").is_err());
    }
}
