//! For the tests that run instructions on the host CPU: a function assembled at run time into
//! its own executable page.

use std::marker::PhantomData;

/// An `extern "sysv64" fn(*mut S)` in a private read+execute mapping, unmapped on drop.
pub(super) struct NativeFn<S> {
    mem: *mut libc::c_void,
    len: usize,
    _state: PhantomData<fn(*mut S)>,
}

impl<S> NativeFn<S> {
    /// Maps `code` (a complete function taking a `*mut S` in RDI) executable.
    pub fn new(code: &[u8]) -> Self {
        let len = 4096;
        assert!(code.len() <= len, "native test function too long");
        // SAFETY: a fresh private anonymous mapping; we check for failure, copy the code into
        // it while it is writable, then make it read+execute only.
        unsafe {
            let mem = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(mem, libc::MAP_FAILED);
            std::ptr::copy_nonoverlapping(code.as_ptr(), mem as *mut u8, code.len());
            assert_eq!(
                libc::mprotect(mem, len, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
            NativeFn {
                mem,
                len,
                _state: PhantomData,
            }
        }
    }

    /// Calls the function on `s`.
    ///
    /// # Safety
    /// The code given to `new` must be a well-formed sysv64 function that preserves the
    /// callee-saved registers, RSP and the direction flag, touches no memory but `*s` and its
    /// own stack, and cannot fault for this `s`.
    pub unsafe fn call(&self, s: &mut S) {
        // SAFETY: `mem` holds the caller-vouched function (see above).
        unsafe {
            let f: extern "sysv64" fn(*mut S) = std::mem::transmute(self.mem);
            f(s);
        }
    }
}

impl<S> Drop for NativeFn<S> {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping created in `new`, which nothing else refers to.
        unsafe {
            libc::munmap(self.mem, self.len);
        }
    }
}
