//! Zero-copy page export: splice packets from the buffer's backing file through a
//! pipe into a file or socket, without copying them through user space.
//!
//! When may the sub-buffer go back to the writers? Only when the kernel no longer
//! references its pages, which depends on the destination:
//!
//! * **regular file**: `splice` into a file copies the pages into the file's page
//!   cache inside the kernel; once our pipe is drained, nothing references the
//!   buffer's pages. Release at once.
//! * **socket**: TCP keeps references to the spliced pages until the peer
//!   acknowledges them. Release when the socket's send queue is empty
//!   (`SIOCOUTQ == 0`).
//! * **pipe**: the destination pipe holds page references until its reader reads
//!   them. Release when the pipe is empty (`FIONREAD == 0`).
//!
//! [`Splicer::export`] applies the rule before returning, so a caller may release
//! the sub-buffer as soon as it returns.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Where exported packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A regular file.
    File,
    /// A (TCP or Unix) stream socket.
    Socket,
    /// A pipe.
    Pipe,
}

/// A pipe used to move pages from a file to a destination.
#[derive(Debug)]
pub struct Splicer {
    read: OwnedFd,
    write: OwnedFd,
    /// Give up waiting for a destination to release pages after this long.
    pub release_timeout: Duration,
}

fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
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
            release_timeout: Duration::from_secs(10),
        })
    }

    /// Moves `len` bytes at `offset` of `src` into `dst` with splice, then waits
    /// until the kernel no longer references the source pages (see the module
    /// documentation).
    pub fn export(
        &mut self,
        src: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        dst: BorrowedFd<'_>,
        kind: Destination,
    ) -> io::Result<()> {
        let mut off_in = offset as libc::loff_t;
        let mut left = len;
        while left > 0 {
            // SAFETY: valid descriptors; `off_in` is a valid in/out offset.
            let n = cvt(unsafe {
                libc::splice(
                    src.as_raw_fd(),
                    &mut off_in,
                    self.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    libc::SPLICE_F_MOVE,
                )
            })?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source ended"));
            }
            self.drain_pipe(n, dst)?;
            left -= n;
        }
        self.wait_released(dst, kind)
    }

    /// Moves `len` bytes from our pipe into `dst`.
    fn drain_pipe(&mut self, mut len: usize, dst: BorrowedFd<'_>) -> io::Result<()> {
        while len > 0 {
            // SAFETY: valid descriptors; null offsets (pipe, and dst at its position).
            let n = cvt(unsafe {
                libc::splice(
                    self.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE,
                )
            })?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "destination closed",
                ));
            }
            len -= n;
        }
        Ok(())
    }

    fn wait_released(&self, dst: BorrowedFd<'_>, kind: Destination) -> io::Result<()> {
        let request = match kind {
            Destination::File => return Ok(()),
            Destination::Socket => libc::TIOCOUTQ, // SIOCOUTQ
            Destination::Pipe => libc::FIONREAD,
        };
        let start = Instant::now();
        loop {
            let mut pending: libc::c_int = 0;
            // SAFETY: a valid descriptor and an int out-pointer.
            if unsafe { libc::ioctl(dst.as_raw_fd(), request, &mut pending) } < 0 {
                return Err(io::Error::last_os_error());
            }
            if pending == 0 {
                return Ok(());
            }
            if start.elapsed() > self.release_timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "destination still holds the pages",
                ));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Moves bytes that live in anonymous memory (no backing file) into `dst` with
    /// vmsplice: the pipe references the user pages. The same release rule applies:
    /// the caller must not modify `data` before this returns.
    pub fn export_memory(
        &mut self,
        data: &[u8],
        dst: BorrowedFd<'_>,
        kind: Destination,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let iov = libc::iovec {
                iov_base: data[done..].as_ptr() as *mut libc::c_void,
                iov_len: data.len() - done,
            };
            // SAFETY: one valid iovec over `data`, which outlives the call and the
            // pipe's reference (drained below before returning).
            let n = cvt(unsafe { libc::vmsplice(self.write.as_raw_fd(), &iov, 1, 0) })?;
            self.drain_pipe(n, dst)?;
            done += n;
        }
        self.wait_released(dst, kind)
    }
}

/// Writes `bytes` fully to `fd` (for small headers between spliced packets).
pub fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: a valid descriptor and buffer.
        let n = cvt(unsafe {
            libc::write(fd.as_fd().as_raw_fd(), bytes.as_ptr().cast(), bytes.len())
        })?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "closed"));
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn temp_file(name: &str) -> std::fs::File {
        let path =
            std::env::temp_dir().join(format!("ringbuf-export-{}-{name}", std::process::id()));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn splice_and_vmsplice_move_exactly_the_bytes() {
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i % 251) as u8).collect();
        let mut src = temp_file("src");
        src.write_all(&data).unwrap();
        let mut splicer = Splicer::new(4096).unwrap();

        // A file range (from an offset) into a file.
        let mut dst = temp_file("dst");
        splicer
            .export(
                src.as_fd(),
                4096,
                data.len() - 4096,
                dst.as_fd(),
                Destination::File,
            )
            .unwrap();
        let mut back = Vec::new();
        dst.rewind().unwrap();
        dst.read_to_end(&mut back).unwrap();
        assert_eq!(back, &data[4096..]);

        // Anonymous memory (vmsplice) into a file.
        let mut dst = temp_file("vm");
        splicer
            .export_memory(&data, dst.as_fd(), Destination::File)
            .unwrap();
        let mut back = Vec::new();
        dst.rewind().unwrap();
        dst.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);

        // Into a pipe: returns only once the reader has taken the pages.
        let (mut r, w) = std::io::pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 4096];
            r.read_exact(&mut got).unwrap();
            got
        });
        splicer
            .export(src.as_fd(), 0, 4096, w.as_fd(), Destination::Pipe)
            .unwrap();
        assert_eq!(reader.join().unwrap(), &data[..4096]);

        // Past the end of the source: an error, not a hang.
        let end = splicer.export(
            src.as_fd(),
            data.len() as u64,
            10,
            temp_file("eof").as_fd(),
            Destination::File,
        );
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
