//! Passing descriptors to a child process, as systemd passes sockets (socket activation) and
//! as HAProxy takes them (`bind fd@3`).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// At most this many descriptors are passed.
pub const PASSED_MAX: usize = 4;

/// Makes `fds` the child's descriptors 3, 4, ... (inherited across exec).
pub fn pass_descriptors(command: &mut Command, fds: &[RawFd]) {
    assert!(fds.len() <= PASSED_MAX);
    let mut passed = [-1; PASSED_MAX];
    passed[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: the closure runs in the child between fork and exec; it allocates nothing and
    // calls only fcntl(2) and dup2(2), which are async-signal-safe (signal-safety(7)).
    unsafe {
        command.pre_exec(move || {
            // First out of the way of 3.., so that no dup2 overwrites a source still needed
            // (close-on-exec, so that only the copies at 3.. reach the program).
            let mut high = [-1; PASSED_MAX];
            for index in 0..count {
                high[index] = libc::fcntl(passed[index], libc::F_DUPFD_CLOEXEC, 100);
                if high[index] == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (index, &fd) in high[..count].iter().enumerate() {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(fd, 3 + index as i32) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
