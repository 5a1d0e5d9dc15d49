//! The tap's readiness, in an epoll set of its own whose fd is one of the worker's sources.
//! The device changes what it waits for (readable, writable, nothing) as its state changes,
//! which the worker's fixed, level-triggered source list cannot express by itself.

use std::io;
use std::os::fd::RawFd;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// The tap's own epoll set, whose fd the worker waits on.
pub(crate) struct TapPoll {
    pub(crate) epoll: Epoll,
    tap: RawFd,
    interest: EventSet,
}

impl TapPoll {
    pub(crate) fn new(tap: RawFd) -> io::Result<TapPoll> {
        Ok(TapPoll {
            epoll: Epoll::new()?,
            tap,
            interest: EventSet::empty(),
        })
    }

    pub(crate) fn set(&mut self, want: EventSet) {
        if want == self.interest {
            return;
        }
        let op = if self.interest.is_empty() {
            ControlOperation::Add
        } else if want.is_empty() {
            ControlOperation::Delete
        } else {
            ControlOperation::Modify
        };
        match self.epoll.ctl(op, self.tap, EpollEvent::new(want, 0)) {
            Ok(()) => self.interest = want,
            Err(e) => tracing::error!("virtio-net: cannot poll the tap: {e}"),
        }
    }

    /// What the tap is ready for now.
    pub(crate) fn ready(&self) -> EventSet {
        let mut ev = [EpollEvent::default()];
        match self.epoll.wait(0, &mut ev) {
            Ok(1) => ev[0].event_set(),
            _ => EventSet::empty(),
        }
    }
}
