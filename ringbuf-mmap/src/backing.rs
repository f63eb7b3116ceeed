//! Shared memory that holds buffers: an anonymous memfd (sealed against shrinking,
//! passable to another process over a Unix socket) or a named file (mode 0600,
//! created exclusively, never silently reused, and named only once complete),
//! mapped `MAP_SHARED`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

/// Why shared memory could not be created or attached.
#[derive(Debug)]
pub enum BackingError {
    /// A system call failed.
    Io(io::Error),
    /// The file is not a regular file (or memfd).
    NotRegular,
    /// The file belongs to another user.
    Owner {
        /// Its owner.
        uid: u32,
    },
    /// Group or others may access the file.
    Permissions {
        /// Its mode bits.
        mode: u32,
    },
    /// A memfd that is not sealed against shrinking: its owner could truncate it
    /// under our mapping.
    NotSealed,
    /// Smaller than its header says, or empty.
    TooSmall {
        /// Bytes present.
        len: u64,
    },
}

impl std::fmt::Display for BackingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::NotRegular => f.write_str("not a regular file"),
            Self::Owner { uid } => write!(f, "owned by uid {uid}, not by us"),
            Self::Permissions { mode } => {
                write!(f, "mode {mode:o} lets group or others in (0600 expected)")
            }
            Self::NotSealed => f.write_str("memfd not sealed against shrinking"),
            Self::TooSmall { len } => write!(f, "only {len} bytes"),
        }
    }
}

impl std::error::Error for BackingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for BackingError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A file made by [`Shm::create_file`], not yet under its name; dropped
/// unpublished (creation failed), the hidden file is removed.
#[derive(Debug)]
pub struct Unpublished {
    temp: PathBuf,
    path: PathBuf,
}

impl Unpublished {
    /// Links the file under its name, once the channel in it is complete, and
    /// removes the hidden name. Fails if the name appeared in the meantime.
    pub fn publish(self) -> Result<(), BackingError> {
        std::fs::hard_link(&self.temp, &self.path)?;
        Ok(())
    }
}

impl Drop for Unpublished {
    fn drop(&mut self) {
        // Published or not, the hidden name goes; a failure leaves a stray name
        // behind, not a broken channel.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// A shared mapping of a whole file.
#[derive(Debug)]
pub struct Shm {
    file: File,
    map: MmapRaw,
}

fn map(file: &File, len: usize, prefault: bool) -> io::Result<MmapRaw> {
    let mut options = MmapOptions::new();
    options.len(len);
    if prefault {
        options.populate();
    }
    options.map_raw(file)
}

impl Shm {
    /// A new anonymous memfd of `len` bytes, sealed against shrinking and growing.
    pub fn memfd(name: &str, len: usize, prefault: bool) -> Result<Self, BackingError> {
        let name = std::ffi::CString::new(name).map_err(|_| {
            BackingError::Io(io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
        })?;
        // SAFETY: a valid C string; flags are valid for memfd_create.
        let fd = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(len as u64)?;
        // memfds start at 0777: nothing world-readable by default, and consumers
        // check for 0600 as for files.
        // SAFETY: fchmod on a valid fd.
        if unsafe { libc::fchmod(file.as_raw_fd(), 0o600) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a valid fd with a valid command and argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let map = map(&file, len, prefault)?;
        Ok(Self { file, map })
    }

    /// A new file of `len` bytes, mode 0600, that becomes `dir/name` when
    /// [`Unpublished::publish`] links it there. Until then it is a hidden file in
    /// the same directory (`.NAME.PID.new`), so a consumer that attaches as soon as
    /// `dir/name` appears never finds a channel still being initialised. An
    /// existing `dir/name` is an error, never reused: checked here, before anything
    /// is allocated, and again, atomically, by the link (so the directory's file
    /// system must have hard links, as every Linux-native one and tmpfs do).
    pub fn create_file(
        dir: &Path,
        name: &str,
        len: usize,
        prefault: bool,
    ) -> Result<(Self, Unpublished), BackingError> {
        let path = dir.join(name);
        if path.symlink_metadata().is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST).into());
        }
        let temp = dir.join(format!(".{name}.{}.new", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp)?;
        // From here on, an error removes the hidden file.
        let unpublished = Unpublished { temp, path };
        file.set_len(len as u64)?;
        let map = map(&file, len, prefault)?;
        Ok((Self { file, map }, unpublished))
    }

    /// Attaches to the file at `path` (read-write: a reader updates its position).
    /// It must be a regular file of ours, mode 0600 or stricter.
    pub fn open(path: &Path) -> Result<Self, BackingError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        Self::attach(file)
    }

    /// Attaches to a file descriptor received from the producer (a memfd must be
    /// sealed against shrinking; a file must be ours and 0600).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, BackingError> {
        Self::attach(File::from(fd))
    }

    fn attach(file: File) -> Result<Self, BackingError> {
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(BackingError::NotRegular);
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(BackingError::Owner { uid: meta.uid() });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(BackingError::Permissions {
                mode: meta.mode() & 0o7777,
            });
        }
        // SAFETY: fcntl on a valid fd; F_GET_SEALS takes no argument.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        let is_memfd = seals >= 0;
        if is_memfd && seals & libc::F_SEAL_SHRINK == 0 {
            return Err(BackingError::NotSealed);
        }
        let len = meta.len();
        if len == 0 || len > isize::MAX as u64 {
            return Err(BackingError::TooSmall { len });
        }
        let map = map(&file, len as usize, false)?;
        Ok(Self { file, map })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never, once created or attached).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The file, e.g. to send its descriptor to a consumer ([`crate::send_fd`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A duplicate of the descriptor.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }
}

/// Runs `f` with a one-byte message header that has room for one descriptor
/// (SCM_RIGHTS), for `sendmsg`/`recvmsg`; its buffers live for the call.
fn with_fd_message<R>(f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; zero is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    f(&mut msg)
}

/// Sends `fd` over the Unix socket `socket` (SCM_RIGHTS) with a one-byte message.
pub fn send_fd(socket: &std::os::unix::net::UnixStream, fd: impl AsRawFd) -> io::Result<()> {
    with_fd_message(|msg| {
        // SAFETY: `msg` has a control buffer of CMSG_SPACE(int) bytes, so the first
        // header and its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd.as_raw_fd());
        }
        // SAFETY: a valid socket and a fully initialised message.
        if unsafe { libc::sendmsg(socket.as_raw_fd(), msg, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Receives a descriptor sent with [`send_fd`].
pub fn recv_fd(socket: &std::os::unix::net::UnixStream) -> io::Result<OwnedFd> {
    with_fd_message(|msg| {
        // SAFETY: a valid socket and message buffers that outlive the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel filled `msg`; CMSG_FIRSTHDR checks the control length.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no descriptor received",
                ));
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
            Ok(OwnedFd::from_raw_fd(fd))
        }
    })
}
