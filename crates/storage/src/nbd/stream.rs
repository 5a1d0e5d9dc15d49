//! A client connection, over a Unix or a TCP socket: one type so that the protocol code is
//! written once.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Ends the connection for both directions, waking a thread blocked reading it.
    pub fn shutdown(&self) {
        // Fails only if the peer is already gone, which is what we want anyway.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    /// Bounds each read (`None`: wait as long as it takes).
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    pub fn peer(&self) -> String {
        match self {
            Stream::Unix(_) => "unix client".to_string(),
            Stream::Tcp(s) => match s.peer_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "tcp client".to_string(),
            },
        }
    }

    /// Writes all of `bufs`, with as few system calls as the kernel allows.
    pub fn write_all_vectored(&self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        // Skip leading empty slices so that a zero-byte write means a closed peer.
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let n = match self {
                Stream::Unix(s) => (&*s).write_vectored(bufs),
                Stream::Tcp(s) => (&*s).write_vectored(bufs),
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).write(buf),
            Stream::Tcp(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
