//! Ending a service cleanly: `vireo storage serve` and `vireo net serve` wait for SIGINT or
//! SIGTERM in their main thread, then stop their service (commit, remove sockets and taps).

use std::io;

/// SIGINT and SIGTERM, blocked in every thread so that [`TerminationSignals::wait`] receives
/// them instead of the default action killing the process before the pools are committed.
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks the signals in the calling thread and the threads it starts later: call it
    /// before starting any thread.
    pub fn block() -> io::Result<TerminationSignals> {
        // SAFETY: sigset_t is plain data that sigemptyset initializes; the calls only write
        // to the set we own and to this thread's signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(TerminationSignals { set })
        }
    }

    /// Waits for SIGINT or SIGTERM; returns its number.
    pub fn wait(&self) -> i32 {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait reads the initialized set and writes the signal number to a
            // local.
            let r = unsafe { libc::sigwait(&self.set, &mut sig) };
            if r == 0 {
                return sig;
            }
        }
    }
}
