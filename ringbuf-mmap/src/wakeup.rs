//! Wakeups: the writer that delivers a packet pokes a descriptor, never blocking;
//! the consumer polls it.
//!
//! An eventfd for channels in a memfd (sent to the consumer with the memfd), a FIFO
//! next to the file for file-backed channels (a consumer that opens the path finds
//! it). Both are non-blocking: a full pipe or a saturated counter just drops the
//! poke, which is harmless because the consumer drains all packets on any wakeup.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use ringbuf_core::{Client, Out, PacketBegin, PacketEnd, RecordInfo};

/// A wakeup descriptor (eventfd or FIFO), non-blocking.
#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Wakeup {
    /// A new eventfd.
    pub fn eventfd() -> io::Result<Self> {
        // SAFETY: valid flags; the result is checked.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Creates the FIFO `path` (mode 0600, exclusively) and opens it for writing
    /// without blocking (read-write, so the open never waits for a reader).
    pub fn create_fifo(path: &Path) -> io::Result<Self> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a valid C string; the result is checked.
        check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) })?;
        Self::open_fifo(path)
    }

    /// Opens an existing FIFO (consumer side).
    pub fn open_fifo(path: &Path) -> io::Result<Self> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a valid C string; the result is checked.
        let fd = check(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Wraps a descriptor received from the producer.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The descriptor (to send, or to poll with others).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A duplicate of the descriptor (for a consumer in this process).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// Waits up to `timeout` for a poke; drains all pending pokes. Returns whether
    /// there was one.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        let mut buf = [0u8; 64];
        // Drain: eventfd reads reset the counter; FIFO reads empty the pipe.
        // SAFETY: reading into a local buffer of its size; errors (EAGAIN) end it.
        while unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        Ok(n > 0)
    }
}

/// Pokes `fd` without blocking (8 bytes: an eventfd needs exactly that).
#[inline]
fn poke(fd: RawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes from a local array; a failure (EAGAIN) is ignored by
    // design. write(2) is async-signal-safe.
    unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
}

/// A client that pokes a wakeup descriptor whenever a packet is delivered, and is
/// otherwise `K`.
#[derive(Debug)]
pub struct Notify<K> {
    inner: K,
    fd: RawFd,
}

impl<K> Notify<K> {
    /// Wraps `inner`; `fd` must outlive the buffer (the channel owns both).
    pub(crate) fn new(inner: K, fd: RawFd) -> Self {
        Self { inner, fd }
    }

    /// The wrapped format.
    pub fn inner(&self) -> &K {
        &self.inner
    }
}

impl<K: Client> Client for Notify<K> {
    const RECORD_ALIGN: usize = K::RECORD_ALIGN;
    const USES_PREV_TIMESTAMP: bool = K::USES_PREV_TIMESTAMP;

    #[inline(always)]
    fn packet_header_size(&self) -> usize {
        self.inner.packet_header_size()
    }
    #[inline(always)]
    fn record_header_size(&self, rec: &RecordInfo) -> usize {
        self.inner.record_header_size(rec)
    }
    #[inline(always)]
    fn write_record_header<O: Out>(&self, out: &mut O, rec: &RecordInfo) {
        self.inner.write_record_header(out, rec)
    }
    fn write_padding_record<O: Out>(
        &self,
        out: &mut O,
        rec: &RecordInfo,
        header: usize,
        total: usize,
    ) {
        self.inner.write_padding_record(out, rec, header, total)
    }
    fn packet_begin<O: Out>(&self, out: &mut O, begin: &PacketBegin) {
        self.inner.packet_begin(out, begin)
    }
    fn packet_end<O: Out>(&self, out: &mut O, end: &PacketEnd) {
        self.inner.packet_end(out, end)
    }
    fn delivered(&self, seq: u64) {
        self.inner.delivered(seq);
        poke(self.fd);
    }
}
