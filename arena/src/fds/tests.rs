use super::hooks::is_open;
use super::*;

/// Enters a table for the test's duration (and borrows it as long).
struct Entered<'a>(std::marker::PhantomData<&'a FdTable>);

impl<'a> Entered<'a> {
    fn new(table: &'a FdTable) -> Entered<'a> {
        // SAFETY: the table outlives the guard, whose drop calls `leave`.
        unsafe { enter(table) };
        Entered(std::marker::PhantomData)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        leave();
    }
}

fn dev_null() -> c_int {
    // SAFETY: a NUL-terminated path.
    unsafe { hooks::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) }
}

#[test]
fn descriptors_opened_while_entered_are_recorded_and_closed_ones_forgotten() {
    let table = FdTable::new();
    let fd = {
        let _entered = Entered::new(&table);
        let kept = dev_null();
        let closed = dev_null();
        // SAFETY: our own descriptor.
        assert_eq!(unsafe { hooks::close(closed) }, 0);
        assert_eq!(crate::runtime_depth(), 0, "every hook's section has ended");
        kept
    };
    assert!(fd >= 0);
    assert_eq!(table.len(), 1);
    assert_eq!(table.close_all(), 1);
    assert!(!is_open(fd), "close_all closed it");
    assert!(table.is_empty());
}

#[test]
fn descriptors_opened_outside_a_handler_are_not_recorded() {
    let table = FdTable::new();
    let fd = dev_null();
    assert!(table.is_empty());
    // SAFETY: our own descriptor.
    unsafe { hooks::close(fd) };
}

#[test]
fn pipes_and_dups_are_recorded_and_dup2_onto_an_open_descriptor_is_not() {
    let table = FdTable::new();
    let outside = dev_null();
    {
        let _entered = Entered::new(&table);
        let mut fds = [0; 2];
        // SAFETY: a two-int array.
        assert_eq!(unsafe { hooks::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: our own descriptors.
        unsafe {
            assert!(hooks::dup(fds[0]) >= 0);
            assert!(hooks::fcntl(fds[0], libc::F_DUPFD_CLOEXEC, 0) >= 0);
            assert_eq!(hooks::dup2(fds[1], outside), outside);
        }
    }
    assert_eq!(table.len(), 4, "the pipe's two ends and two copies; not `outside`");
    assert_eq!(table.close_all(), 4);
    assert!(is_open(outside));
    // SAFETY: our own descriptor.
    unsafe { hooks::close(outside) };
}

#[test]
fn a_full_table_counts_what_it_cannot_record() {
    let table = FdTable::new();
    let before = untracked_count();
    let _entered = Entered::new(&table);
    let fds: Vec<c_int> = (0..SLOT_FDS_MAX + 2).map(|_| dev_null()).collect();
    assert_eq!(table.len(), SLOT_FDS_MAX);
    assert!(untracked_count() >= before + 2);
    for fd in fds {
        // SAFETY: our own descriptors.
        unsafe { hooks::close(fd) };
    }
    assert!(table.is_empty(), "closing forgets");
}
