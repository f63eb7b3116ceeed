//! Packet export: moving whole packets out of a channel's shared buffer into a
//! file, socket or pipe, and the rule for when their sub-buffer may go back to the
//! writers.
//!
//! A sub-buffer goes back to the writers only when nothing references its pages any
//! more: a reader further on that still held them would read the writers' new bytes.
//! How a packet moves, and so when that is, depends on the destination, which
//! [`Splicer::export`] learns from `fstat` (a caller cannot name it wrongly):
//!
//! * **regular file**: zero copy. `splice` moves page references from the buffer's
//!   backing file into our pipe and from the pipe into the file, whose write path
//!   copies them into the file's page cache (or, with `O_DIRECT`, finishes the
//!   I/O) before the call returns. Once our pipe is empty nothing references the
//!   buffer's pages: release at once.
//! * **socket**: one copy, `send` from the consumer's mapping. A socket copies the
//!   bytes into its own buffers before `send` returns: release at once. Splice would
//!   not do: spliced pages stay referenced until a local receiver (loopback, Unix
//!   socket, another container or network namespace) has *read* them, and its
//!   socket acknowledges data as soon as it is queued, so no measure of our send
//!   queue (`SIOCOUTQ`) says when that is.
//! * **pipe** (or any other kind of file: FIFO, terminal, device): one copy, `write`
//!   from the mapping; release when it returns. Spliced pages would stay referenced
//!   after the pipe is empty if its reader spliced them onward (into another pipe or
//!   a socket), which no measure of the pipe (`FIONREAD`) sees.
//!
//! The copy is one memcpy per packet, small next to a network send (BENCHMARKS.md
//! measures the socket path). `MSG_ZEROCOPY` is left out. The kernel does report on
//! the socket's error queue when it no longer needs the pages, but a consumer gives
//! each sub-buffer back when its export returns, in order, so zero copy would wait
//! one network round trip per packet; and the only peers tests can reach are local,
//! where the kernel copies anyway, so the path that needs the completions could not
//! be tested.
//!
//! A file only ever holds whole packets: when an export into a file fails partway
//! (`ENOSPC`, `EFBIG`, an I/O error), the file is cut back to where the packet
//! started; a call interrupted by a signal (`EINTR`) is retried. [`Splicer::export`]
//! applies all of this before returning, so a caller may release the sub-buffer as
//! soon as it returns, whatever the result.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use ringbuf_mmap::Shm;

/// How packets reach a destination, and so when their sub-buffer may go back to the
/// writers (see the module documentation for why each rule is enough).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Destination {
    /// A regular file of `size` bytes: spliced, zero copy; released at once.
    File { size: u64 },
    /// A socket: copied with `send`; released when it returns.
    Socket,
    /// Anything else (pipe, FIFO, terminal, device): copied with `write`; released
    /// when it returns.
    Pipe,
}

impl Destination {
    fn of(fd: BorrowedFd<'_>) -> io::Result<Self> {
        // SAFETY: all-zero bytes are a valid `stat` (plain integers).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a `stat` out-pointer.
        retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } as isize)?;
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Self::File {
                size: st.st_size as u64,
            },
            libc::S_IFSOCK => Self::Socket,
            _ => Self::Pipe,
        })
    }
}

/// Runs a system call until no signal interrupts it: a signal handler (Ctrl-C's)
/// must not cut a packet.
fn retry(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let ret = call();
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Copies `len` bytes at `bytes` into `dst` with `send` (a socket) or `write`.
///
/// # Safety
///
/// `bytes..bytes + len` lies in one live mapping. Nothing needs it to hold stable
/// values: only the kernel reads it, and a page that faults (a truncated file) is
/// an `EFAULT`, never a signal.
unsafe fn copy(dst: BorrowedFd<'_>, bytes: *const u8, len: usize, socket: bool) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        // SAFETY: the caller's range, from `done` on.
        let at = unsafe { bytes.add(done) }.cast();
        let n = retry(|| {
            // SAFETY: a valid descriptor and the caller's range (above). A socket
            // gets MSG_NOSIGNAL: a gone receiver is an error (EPIPE), not a SIGPIPE
            // that kills the process.
            unsafe {
                if socket {
                    libc::send(dst.as_raw_fd(), at, len - done, libc::MSG_NOSIGNAL)
                } else {
                    libc::write(dst.as_raw_fd(), at, len - done)
                }
            }
        })?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "destination closed",
            ));
        }
        done += n;
    }
    Ok(())
}

/// Appends one packet to the regular file `dst` of `size` bytes with `append`,
/// whole or not at all: on failure, cuts the file back to where the packet started.
fn append_whole(
    dst: BorrowedFd<'_>,
    size: u64,
    append: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let seek = |offset: u64, whence| {
        // SAFETY: lseek on a valid descriptor.
        retry(|| unsafe { libc::lseek(dst.as_raw_fd(), offset as libc::off_t, whence) } as isize)
    };
    let start = seek(0, libc::SEEK_CUR)? as u64;
    // Cutting back at `start` must lose nothing but the failed packet.
    if start != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("packets are appended: the file position {start} is not its end {size}"),
        ));
    }
    let Err(failed) = append() else {
        return Ok(());
    };
    // SAFETY: ftruncate on a valid descriptor.
    let cut = retry(|| unsafe { libc::ftruncate(dst.as_raw_fd(), start as libc::off_t) } as isize)
        .and_then(|_| seek(start, libc::SEEK_SET));
    Err(match cut {
        Ok(_) => failed,
        Err(e) => io::Error::new(
            failed.kind(),
            format!("{failed}; cutting the partial packet off at {start} bytes failed too: {e}"),
        ),
    })
}

/// Appends `packet` to `file` (a stream file written at its end), whole or not at all.
pub(crate) fn append_packet(file: &File, packet: &[u8]) -> io::Result<()> {
    match Destination::of(file.as_fd())? {
        Destination::File { size } => {
            append_whole(file.as_fd(), size, || (&mut &*file).write_all(packet))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a trace stream must be a regular file",
        )),
    }
}

/// Exports packets; holds the pipe that file destinations are spliced through.
#[derive(Debug)]
pub struct Splicer {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in our pipe: nonzero only after a failed export, and discarded before
    /// the next one moves anything (they belong to a packet that was given up).
    in_pipe: usize,
}

impl Splicer {
    /// A splicer whose pipe holds at least `capacity` bytes (a sub-buffer).
    pub fn new(capacity: usize) -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: a valid two-element array; flags are valid.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors we own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A pipe as large as a packet moves it in one pair of calls; failing to grow
        // it only means more iterations.
        // SAFETY: fcntl on a valid pipe descriptor.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                capacity as libc::c_int,
            )
        };
        Ok(Self {
            read,
            write,
            in_pipe: 0,
        })
    }

    /// Moves the packet of `len` bytes at `offset` of the channel mapped by `src`
    /// into `dst`: spliced into a regular file (whole or not at all), copied into
    /// anything else. When it returns, whatever the result, nothing references the
    /// packet's pages: its sub-buffer may go back to the writers (see the module
    /// documentation).
    pub fn export(
        &mut self,
        src: &Shm,
        offset: u64,
        len: usize,
        dst: BorrowedFd<'_>,
    ) -> io::Result<()> {
        if offset.saturating_add(len as u64) > src.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at {offset} lie outside the {}-byte mapping",
                    src.len()
                ),
            ));
        }
        match Destination::of(dst)? {
            Destination::File { size } => append_whole(dst, size, || {
                self.move_through_pipe(dst, len, |pipe, left, moved| {
                    let mut off_in = (offset + moved as u64) as libc::loff_t;
                    // SAFETY: valid descriptors; `off_in` is a valid in/out offset.
                    unsafe {
                        libc::splice(
                            src.file().as_raw_fd(),
                            &mut off_in,
                            pipe,
                            std::ptr::null_mut(),
                            left,
                            libc::SPLICE_F_MOVE,
                        )
                    }
                })
            }),
            // SAFETY: the range lies in `src`'s mapping (checked above), alive while
            // `src` is borrowed.
            kind => unsafe {
                copy(
                    dst,
                    src.as_ptr().add(offset as usize),
                    len,
                    kind == Destination::Socket,
                )
            },
        }
    }

    /// Moves bytes that live in anonymous memory (no backing file) into `dst`, by
    /// the same rules as [`Splicer::export`]: into a regular file with vmsplice (our
    /// pipe references the user pages until it is drained, before returning).
    pub fn export_memory(&mut self, data: &[u8], dst: BorrowedFd<'_>) -> io::Result<()> {
        match Destination::of(dst)? {
            Destination::File { size } => append_whole(dst, size, || {
                self.move_through_pipe(dst, data.len(), |pipe, left, moved| {
                    let iov = libc::iovec {
                        iov_base: data[moved..].as_ptr() as *mut libc::c_void,
                        iov_len: left,
                    };
                    // SAFETY: one valid iovec over `data`, which outlives the call and
                    // the pipe's reference (drained or discarded before returning).
                    unsafe { libc::vmsplice(pipe, &iov, 1, 0) }
                })
            }),
            // SAFETY: `data` is a live slice.
            kind => unsafe { copy(dst, data.as_ptr(), data.len(), kind == Destination::Socket) },
        }
    }

    /// Moves `len` bytes into `dst` through our pipe: `fill(pipe, left, moved)` puts
    /// up to `left` of them into the pipe (the first `moved` are done) and returns
    /// how many, or -1 (errno). On failure, what is left in the pipe is discarded.
    fn move_through_pipe(
        &mut self,
        dst: BorrowedFd<'_>,
        len: usize,
        mut fill: impl FnMut(libc::c_int, usize, usize) -> isize,
    ) -> io::Result<()> {
        self.discard()?;
        let mut moved = 0;
        let result = (|| {
            while moved < len {
                let n = retry(|| fill(self.write.as_raw_fd(), len - moved, moved))?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source ended"));
                }
                self.in_pipe += n;
                self.drain(dst)?;
                moved += n;
            }
            Ok(())
        })();
        if result.is_err() {
            // Best effort: the next export discards what is still left.
            let _ = self.discard();
        }
        result
    }

    /// Moves everything in our pipe into `dst`.
    fn drain(&mut self, dst: BorrowedFd<'_>) -> io::Result<()> {
        while self.in_pipe > 0 {
            let n = retry(|| {
                // SAFETY: valid descriptors; null offsets (pipe, and dst at its
                // position).
                unsafe {
                    libc::splice(
                        self.read.as_raw_fd(),
                        std::ptr::null_mut(),
                        dst.as_raw_fd(),
                        std::ptr::null_mut(),
                        self.in_pipe,
                        libc::SPLICE_F_MOVE,
                    )
                }
            })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "destination closed",
                ));
            }
            self.in_pipe -= n;
        }
        Ok(())
    }

    /// Reads and drops what a failed export left in our pipe (never blocks: exactly
    /// `in_pipe` bytes are there, and we hold the write end).
    fn discard(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 4096];
        while self.in_pipe > 0 {
            let want = self.in_pipe.min(sink.len());
            // SAFETY: a valid descriptor and a buffer of `want` bytes.
            let n = retry(|| unsafe {
                libc::read(self.read.as_raw_fd(), sink.as_mut_ptr().cast(), want)
            })?;
            self.in_pipe -= n;
        }
        Ok(())
    }
}

/// Writes `bytes` fully to `fd` (for small headers between packets): `send` to a
/// socket (no SIGPIPE), `write` to anything else.
pub fn write_all(fd: impl AsFd, bytes: &[u8]) -> io::Result<()> {
    let fd = fd.as_fd();
    let socket = Destination::of(fd)? == Destination::Socket;
    // SAFETY: `bytes` is a live slice.
    unsafe { copy(fd, bytes.as_ptr(), bytes.len(), socket) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    fn temp_file(name: &str) -> File {
        let path =
            std::env::temp_dir().join(format!("ringbuf-export-{}-{name}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    fn contents(mut file: &File) -> Vec<u8> {
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn every_path_moves_exactly_the_bytes() {
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        let src = Shm::memfd("export-test", data.len(), false).unwrap();
        // SAFETY: a fresh private mapping of `data.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), src.as_ptr(), data.len()) };
        let mut splicer = Splicer::new(4096).unwrap();

        // A file range (from an offset) into a file: splice.
        let dst = temp_file("dst");
        let len = data.len() - 4096;
        splicer.export(&src, 4096, len, dst.as_fd()).unwrap();
        assert_eq!(contents(&dst), &data[4096..]);

        // Anonymous memory into a file: vmsplice.
        let dst = temp_file("vm");
        splicer.export_memory(&data, dst.as_fd()).unwrap();
        assert_eq!(contents(&dst), data);

        // Into a pipe, then a socket: a copy, so the pipe may be read after the
        // source changed.
        let (mut r, w) = std::io::pipe().unwrap();
        splicer.export(&src, 0, 4096, w.as_fd()).unwrap();
        splicer.export_memory(&data[..10], w.as_fd()).unwrap();
        // SAFETY: as above.
        unsafe { src.as_ptr().write_bytes(0xff, 4096) };
        let mut got = vec![0u8; 4096 + 10];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4096], &data[..4096]);
        assert_eq!(&got[4096..], &data[..10]);
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        splicer.export(&src, 4096, 100, b.as_fd()).unwrap();
        let mut got = vec![0u8; 100];
        a.read_exact(&mut got).unwrap();
        assert_eq!(got, &data[4096..4196]);

        // Outside the mapping: an error that says so.
        let err = splicer
            .export(&src, data.len() as u64 - 10, 11, dst.as_fd())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn an_interrupted_call_runs_again_and_other_errors_return() {
        let fail_with = |errno| {
            // SAFETY: errno is this thread's.
            unsafe { *libc::__errno_location() = errno };
            -1
        };
        let mut calls = 0;
        let done = retry(|| {
            calls += 1;
            if calls < 3 {
                fail_with(libc::EINTR)
            } else {
                7
            }
        });
        assert_eq!((done.unwrap(), calls), (7, 3));
        let failed = retry(|| fail_with(libc::ENOSPC)).unwrap_err();
        assert_eq!(failed.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn a_file_gets_whole_packets_or_nothing() {
        let src = Shm::memfd("export-test", 2 * 4096, false).unwrap();
        let mut splicer = Splicer::new(4096).unwrap();
        let dst = temp_file("whole");
        splicer.export(&src, 0, 4096, dst.as_fd()).unwrap();
        // An append that fails after writing part of its packet.
        let failed = append_whole(dst.as_fd(), 4096, || {
            (&mut &dst).write_all(&[1; 1000])?;
            Err(io::Error::other("stopped mid-packet"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "stopped mid-packet");
        assert_eq!(contents(&dst).len(), 4096, "the partial packet is gone");
        // The file position came back too: the next packet follows the first.
        splicer.export(&src, 4096, 4096, dst.as_fd()).unwrap();
        assert_eq!(contents(&dst).len(), 2 * 4096);
        // A file not positioned at its end is refused: cutting it back would lose
        // what follows.
        (&dst).rewind().unwrap();
        let err = splicer.export(&src, 0, 4096, dst.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(contents(&dst).len(), 2 * 4096);
    }
}
