//! Restartable sequences (Linux rseq): one per-CPU commit primitive.
//!
//! glibc (2.35 and later) registers an rseq area for every thread it creates and
//! exports where it is: `__rseq_offset` (from the thread pointer, the `fs` base on
//! x86-64) and `__rseq_size` (0 when registration is off, e.g. with
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0`). [`Rseq::get`] looks both up once with
//! `dlsym`; `RINGBUF_RSEQ=off` in the environment disables rseq as well.
//!
//! [`Rseq::commit`] runs one restartable sequence, described by an [`Op`]: it
//! checks that the thread runs on the expected CPU and that two words hold expected
//! values, copies up to a few byte segments, makes two non-committing stores and
//! then exactly one committing store, its last instruction. The kernel moves the
//! instruction pointer to the abort handler if the thread is preempted, migrated or
//! signalled between the first check and that store, so the sequence either
//! happens entirely on that CPU with nothing else of this CPU running in between,
//! or its committing store does not happen (the copies and non-committing stores
//! before it may have; callers design their words so that this is harmless). See
//! docs/ARCHITECTURE.md, "Restartable sequences".
//!
//! x86-64 Linux only; elsewhere [`Rseq::get`] returns `None` and callers keep
//! their shared-flavour path.

/// Why rseq is not in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `RINGBUF_RSEQ=off` in the environment.
    Disabled,
    /// glibc does not export `__rseq_offset`/`__rseq_size` (too old, or not glibc).
    NoGlibcSupport,
    /// glibc did not register rseq (`__rseq_size` is 0: the kernel lacks rseq, or
    /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`).
    NotRegistered,
    /// Not x86-64 Linux: the sequence is written for x86-64 only.
    UnsupportedTarget,
}

impl core::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Disabled => "disabled by RINGBUF_RSEQ=off",
            Self::NoGlibcSupport => "glibc does not export __rseq_offset/__rseq_size",
            Self::NotRegistered => "glibc did not register rseq (__rseq_size is 0)",
            Self::UnsupportedTarget => "rseq sequences exist for x86-64 Linux only",
        })
    }
}

impl std::error::Error for Unavailable {}

pub use ringbuf_core::seq::{
    Commit, Op, Outcome, Record, Segment, Sequencer, WordOp, MAX_SEGMENTS,
};

/// The rseq area of the calling thread (the kernel's `struct rseq`, first fields).
#[repr(C)]
struct Area {
    cpu_id_start: u32,
    cpu_id: u32,
    rseq_cs: u64,
}

/// rseq as registered by glibc for this process.
#[derive(Clone, Copy, Debug)]
pub struct Rseq {
    /// `__rseq_offset`: from the thread pointer to the calling thread's area.
    offset: isize,
}

impl Rseq {
    /// rseq for this process, or why not. Looks up glibc's symbols once (not on the
    /// event path: call it at channel creation).
    pub fn get() -> Result<Self, Unavailable> {
        static FOUND: std::sync::OnceLock<Result<Rseq, Unavailable>> = std::sync::OnceLock::new();
        *FOUND.get_or_init(Self::lookup)
    }

    fn lookup() -> Result<Self, Unavailable> {
        if std::env::var_os("RINGBUF_RSEQ").is_some_and(|v| v == "off") {
            return Err(Unavailable::Disabled);
        }
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err(Unavailable::UnsupportedTarget);
        }
        // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; the results are
        // only dereferenced when non-null, as the types glibc documents
        // (`const ptrdiff_t __rseq_offset`, `const unsigned int __rseq_size`).
        unsafe {
            let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
            let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
            if offset.is_null() || size.is_null() {
                return Err(Unavailable::NoGlibcSupport);
            }
            if *(size as *const u32) == 0 {
                return Err(Unavailable::NotRegistered);
            }
            Ok(Self {
                offset: *(offset as *const isize),
            })
        }
    }

    /// The calling thread's area.
    #[inline(always)]
    fn area(self) -> *mut Area {
        thread_pointer().wrapping_offset(self.offset) as *mut Area
    }

    /// The CPU the calling thread runs on (the area's `cpu_id_start`: always a
    /// valid CPU number once registered), or `None` if this thread has no area
    /// registered (a thread not created by glibc).
    #[inline(always)]
    pub fn cpu(self) -> Option<u32> {
        // SAFETY: glibc's area of the calling thread lives as long as the thread;
        // the kernel updates it, so read it volatile.
        let cpu = unsafe { core::ptr::addr_of!((*self.area()).cpu_id).read_volatile() };
        // RSEQ_CPU_ID_UNINITIALIZED (-1) and REGISTRATION_FAILED (-2).
        (cpu < u32::MAX - 1).then(|| {
            // SAFETY: as above.
            unsafe { core::ptr::addr_of!((*self.area()).cpu_id_start).read_volatile() }
        })
    }

    /// Runs `op` as one restartable sequence.
    ///
    /// # Safety
    ///
    /// Every pointer in `op` (the compared and stored words, the first
    /// `segment_count` segments) is valid for its access, and the caller's
    /// protocol makes the writes of a sequence that commits, and the partial writes
    /// of one that aborts, harmless to every other thread.
    #[inline(always)]
    pub unsafe fn commit(self, op: &Op) -> Outcome {
        debug_assert!(op.segment_count as usize <= MAX_SEGMENTS);
        // SAFETY: forwarded from the caller; the area is the calling thread's.
        let status = unsafe { sequence(self.area(), op) };
        match status {
            0 => Outcome::Committed,
            1 => Outcome::Changed,
            _ => Outcome::Aborted,
        }
    }
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: libc::c_long = 1 << 7;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: libc::c_long = 1 << 8;

impl Rseq {
    /// Registers this process for `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ)`,
    /// which remote switches need ([`Sequencer::barrier`]); idempotent. The error
    /// is the kernel's (Linux < 5.10 lacks the command).
    pub fn register_barrier(self) -> std::io::Result<()> {
        // SAFETY: membarrier with a command and flags 0 has no memory effects on us.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
                0,
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

// SAFETY: `run` is the rseq sequence of this module (its committing store is the
// last instruction of the critical section, whose CPU check is its first), and
// `barrier` is membarrier PRIVATE_EXPEDITED_RSEQ: on return, every thread of this
// process that was inside a sequence has been interrupted, so it aborts.
unsafe impl Sequencer for Rseq {
    #[inline(always)]
    fn cpu(&self) -> Option<u32> {
        Rseq::cpu(*self)
    }
    #[inline(always)]
    unsafe fn run(&self, op: &Op) -> Outcome {
        // SAFETY: forwarded.
        unsafe { self.commit(op) }
    }
    #[inline(always)]
    unsafe fn run_record(&self, record: &Record) -> Outcome {
        // SAFETY: forwarded from the caller; the area is the calling thread's.
        match unsafe { record_sequence(self.area(), record) } {
            0 => Outcome::Committed,
            1 => Outcome::Changed,
            _ => Outcome::Aborted,
        }
    }
    fn barrier(&self) {
        // SAFETY: as in `register_barrier`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                0,
                0,
            )
        };
        // Registration is checked when a channel chooses rseq; only then does it
        // call this.
        assert_eq!(
            rc,
            0,
            "membarrier(PRIVATE_EXPEDITED_RSEQ) failed after registration: {}",
            std::io::Error::last_os_error()
        );
    }
    #[inline]
    fn thread_id(&self) -> u64 {
        // Each live thread has its own area (in its TCB), never at address 0.
        self.area() as u64
    }
    fn wait(&self) {
        // SAFETY: sched_yield has no preconditions and cannot fail on Linux.
        unsafe { libc::sched_yield() };
    }
}

/// The thread pointer (`fs:0` holds it on x86-64 Linux).
#[inline(always)]
fn thread_pointer() -> *mut u8 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let tp: *mut u8;
        // SAFETY: on x86-64 Linux `fs:0` holds the thread pointer (the TCB's
        // self-pointer); reading it has no side effect.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:0", out(reg) tp,
                options(nostack, readonly, preserves_flags, pure))
        };
        tp
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        core::ptr::null_mut() // never used: `Rseq::get` refuses these targets
    }
}

/// The start of a sequence: its descriptor (`struct rseq_cs {version, flags,
/// start_ip, post_commit_offset, abort_ip}`, 32-byte aligned in section
/// `__rseq_cs`; the critical section is `3:` up to `4:`, the abort handler `5:`),
/// the descriptor's address in `__rseq_cs_ptr_array` and the early exit `6:` in
/// `__rseq_exit_point_array` (as librseq does, for debuggers); then arming
/// (`rseq_cs = &descriptor`, operand `area`), `3:`, and `cpu_id` loaded into
/// `eax` for the CPU check that must come first.
macro_rules! sequence_start {
    () => {
        concat!(
            ".pushsection __rseq_cs, \"aw\"\n",
            ".balign 32\n",
            "9:\n",
            ".long 0, 0\n",
            ".quad 3f, (4f - 3f), 5f\n",
            ".popsection\n",
            ".pushsection __rseq_cs_ptr_array, \"aw\"\n",
            ".quad 9b\n",
            ".popsection\n",
            ".pushsection __rseq_exit_point_array, \"aw\"\n",
            ".quad 3f, 6f\n",
            ".popsection\n",
            "lea rax, [rip + 9b]\n",
            "mov qword ptr [{area} + 8], rax\n",
            "3:\n",
            "mov eax, dword ptr [{area} + 4]",
        )
    };
}

/// The end of a sequence, right after its committing store: `4:` (the end of
/// the critical section), status 0 (committed); the early exit `6:`, status 1
/// (changed); glibc's signature `RSEQ_SIG` 0x53053053 after the `ud1` opcode
/// bytes (so that it disassembles as one instruction; the kernel refuses an
/// abort handler without it), then the abort handler `5:`, status 2.
macro_rules! sequence_end {
    () => {
        concat!(
            "4:\n",
            "xor eax, eax\n",
            "jmp 24f\n",
            "6:\n",
            "mov eax, 1\n",
            "jmp 24f\n",
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long 0x53053053\n",
            "5:\n",
            "mov eax, 2\n",
            "24:",
        )
    };
}

/// Copies `len` bytes from `src` to `dst` (registers, advanced; `rax` is
/// scratch): 8 bytes at a time (unaligned `mov`s), then the tail (under 8
/// bytes) 4, 2 and 1 at a time. Labels 21, 22, 26, 27, 28.
#[rustfmt::skip] // One instruction a line.
macro_rules! copy_bytes {
    ($dst:literal, $src:literal, $len:literal) => {
        concat!(
            "21:\n",
            "cmp ", $len, ", 8\n",
            "jb 22f\n",
            "mov rax, qword ptr [", $src, "]\n",
            "mov qword ptr [", $dst, "], rax\n",
            "add ", $src, ", 8\n",
            "add ", $dst, ", 8\n",
            "sub ", $len, ", 8\n",
            "jmp 21b\n",
            "22:\n",
            "test ", $len, ", 4\n",
            "jz 26f\n",
            "mov eax, dword ptr [", $src, "]\n",
            "mov dword ptr [", $dst, "], eax\n",
            "add ", $src, ", 4\n",
            "add ", $dst, ", 4\n",
            "26:\n",
            "test ", $len, ", 2\n",
            "jz 27f\n",
            "mov ax, word ptr [", $src, "]\n",
            "mov word ptr [", $dst, "], ax\n",
            "add ", $src, ", 2\n",
            "add ", $dst, ", 2\n",
            "27:\n",
            "test ", $len, ", 1\n",
            "jz 28f\n",
            "mov al, byte ptr [", $src, "]\n",
            "mov byte ptr [", $dst, "], al\n",
            "28:",
        )
    };
}

/// The sequence: status 0 committed, 1 changed, 2 aborted.
///
/// Shape (after librseq's x86-64 sequences): [`sequence_start`], the CPU check,
/// the word checks, the segments ([`copy_bytes`] each), the two non-committing
/// stores and the committing one, [`sequence_end`]. No call, no stack use
/// inside. The cargo features `rseq-mutant-no-cpu-check` (no CPU
/// comparison) and `rseq-mutant-commit-before-copy` (the committing store moved
/// before the copies) are deliberately broken builds that the tests must catch.
///
/// # Safety
///
/// As for [`Rseq::commit`]; `area` is the calling thread's registered area.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
unsafe fn sequence(area: *mut Area, op: &Op) -> u64 {
    let status: u64;
    // SAFETY: the caller's contract; the assembly only touches `op`'s pointers and
    // the area's `rseq_cs` and `cpu_id`, and clobbers the declared registers.
    unsafe {
        core::arch::asm!(
            sequence_start!(),
            #[cfg(not(feature = "rseq-mutant-no-cpu-check"))]
            "cmp rax, qword ptr [{op}]",
            #[cfg(not(feature = "rseq-mutant-no-cpu-check"))]
            "jne 6f",
            // Both expected words.
            "mov rcx, qword ptr [{op} + 8]",
            "mov rax, qword ptr [rcx]",
            "cmp rax, qword ptr [{op} + 16]",
            "jne 6f",
            "mov rcx, qword ptr [{op} + 24]",
            "mov rax, qword ptr [rcx]",
            "cmp rax, qword ptr [{op} + 32]",
            "jne 6f",
            // (Mutant: the committing store first, before the copies.)
            #[cfg(feature = "rseq-mutant-commit-before-copy")]
            "mov rcx, qword ptr [{op} + 176]",
            #[cfg(feature = "rseq-mutant-commit-before-copy")]
            "mov rax, qword ptr [{op} + 184]",
            #[cfg(feature = "rseq-mutant-commit-before-copy")]
            "mov qword ptr [rcx], rax",
            // The segments.
            "lea r8, [{op} + 40]",
            "mov r9, qword ptr [{op} + 136]",
            "7:",
            "test r9, r9",
            "jz 8f",
            "mov r10, qword ptr [r8]",
            "mov r11, qword ptr [r8 + 8]",
            "mov rcx, qword ptr [r8 + 16]",
            copy_bytes!("r10", "r11", "rcx"),
            "add r8, 24",
            "dec r9",
            "jmp 7b",
            "8:",
            // Two non-committing stores, then the committing one, last.
            "mov rcx, qword ptr [{op} + 144]",
            "mov rax, qword ptr [{op} + 152]",
            "mov qword ptr [rcx], rax",
            "mov rcx, qword ptr [{op} + 160]",
            "mov rax, qword ptr [{op} + 168]",
            "mov qword ptr [rcx], rax",
            #[cfg(not(feature = "rseq-mutant-commit-before-copy"))]
            "mov rcx, qword ptr [{op} + 176]",
            #[cfg(not(feature = "rseq-mutant-commit-before-copy"))]
            "mov rax, qword ptr [{op} + 184]",
            #[cfg(not(feature = "rseq-mutant-commit-before-copy"))]
            "mov qword ptr [rcx], rax",
            sequence_end!(),
            area = in(reg) area,
            op = in(reg) op as *const Op,
            out("rax") status,
            out("rcx") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            options(nostack),
        );
    }
    status
}

/// [`sequence`] specialised for one record ([`Record`]): its operands in
/// registers instead of a descriptor in memory; the same shape, checks, stores,
/// signature, exit point and mutants. The header is one 8-byte store (the record
/// is at least 8 bytes), the payload is copied 8, 4, 2 and 1 bytes at a time.
///
/// # Safety
///
/// As for [`sequence`], for the record's pointers.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
unsafe fn record_sequence(area: *mut Area, r: &Record) -> u64 {
    let status: u64;
    // SAFETY: the caller's contract; the assembly only touches the record's
    // destination (`header_len + payload_len` bytes), its words, the fence, and
    // the area's `rseq_cs` and `cpu_id`.
    unsafe {
        core::arch::asm!(
            // The mutant without a CPU check still names the operand.
            #[cfg(feature = "rseq-mutant-no-cpu-check")]
            "/* {cpu} */",
            sequence_start!(),
            #[cfg(not(feature = "rseq-mutant-no-cpu-check"))]
            "cmp rax, {cpu}",
            #[cfg(not(feature = "rseq-mutant-no-cpu-check"))]
            "jne 6f",
            "cmp qword ptr [{w}], {old}",
            "jne 6f",
            "cmp qword ptr [{fence}], 0",
            "jne 6f",
            #[cfg(feature = "rseq-mutant-commit-before-copy")]
            "mov qword ptr [{w}], {new}",
            "mov qword ptr [{dst}], {header}",
            "add {dst}, {hlen}",
            copy_bytes!("{dst}", "{src}", "{len}"),
            // last_at, last_timestamp, then the committing store of `write`.
            "mov qword ptr [{w} + 16], {new}",
            "mov qword ptr [{w} + 8], {ts}",
            #[cfg(not(feature = "rseq-mutant-commit-before-copy"))]
            "mov qword ptr [{w}], {new}",
            sequence_end!(),
            area = in(reg) area,
            cpu = in(reg) r.commit.cpu,
            w = in(reg) r.commit.writer,
            fence = in(reg) r.commit.fence,
            old = in(reg) r.commit.old,
            new = in(reg) r.commit.new,
            ts = in(reg) r.commit.ts,
            header = in(reg) r.header,
            hlen = in(reg) r.header_len,
            dst = inout(reg) r.dst => _,
            src = inout(reg) r.payload => _,
            len = inout(reg) r.payload_len => _,
            out("rax") status,
            options(nostack),
        );
    }
    status
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
unsafe fn record_sequence(_area: *mut Area, _r: &Record) -> u64 {
    unreachable!("Rseq::get refuses targets other than x86-64 Linux")
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
unsafe fn sequence(_area: *mut Area, _op: &Op) -> u64 {
    unreachable!("Rseq::get refuses targets other than x86-64 Linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(cpu: u32, word: &mut u64, expect: u64, scratch: &mut u64) -> Op {
        let w = word as *mut u64;
        let s = scratch as *mut u64;
        let none = Segment {
            dst: core::ptr::null_mut(),
            src: core::ptr::null(),
            len: 0,
        };
        Op {
            cpu: cpu as u64,
            expect: [
                WordOp {
                    at: w,
                    value: expect,
                },
                WordOp {
                    at: w,
                    value: expect,
                },
            ],
            segments: [none; MAX_SEGMENTS],
            segment_count: 0,
            stores: [WordOp { at: s, value: 1 }, WordOp { at: s, value: 2 }],
            commit: WordOp {
                at: w,
                value: expect + 1,
            },
        }
    }

    #[test]
    fn field_offsets_match_the_assembly() {
        assert_eq!(core::mem::offset_of!(Op, expect), 8);
        assert_eq!(core::mem::offset_of!(Op, segments), 40);
        assert_eq!(core::mem::offset_of!(Op, segment_count), 136);
        assert_eq!(core::mem::offset_of!(Op, stores), 144);
        assert_eq!(core::mem::offset_of!(Op, commit), 176);
        assert_eq!(core::mem::size_of::<Segment>(), 24);
    }

    #[test]
    fn a_sequence_commits_or_reports_a_changed_word() {
        let Ok(rseq) = Rseq::get() else {
            eprintln!("rseq unavailable: skipped");
            return;
        };
        let mut word = 5u64;
        let mut scratch = 0u64;
        let mut src = *b"abcdefgh";
        let mut dst = [0u8; 8];
        loop {
            let cpu = rseq.cpu().expect("main test thread is registered");
            let mut o = op(cpu, &mut word, 5, &mut scratch);
            o.segments[0] = Segment {
                dst: dst.as_mut_ptr(),
                src: src.as_mut_ptr(),
                len: 8,
            };
            o.segment_count = 1;
            // SAFETY: every pointer is to a live local.
            match unsafe { rseq.commit(&o) } {
                Outcome::Committed => break,
                Outcome::Changed | Outcome::Aborted => continue, // migrated: retry
            }
        }
        assert_eq!((word, scratch, &dst), (6, 2, b"abcdefgh"));
        let cpu = rseq.cpu().unwrap();
        let o = op(cpu, &mut word, 5, &mut scratch);
        // SAFETY: as above.
        let out = unsafe { rseq.commit(&o) };
        assert_ne!(out, Outcome::Committed, "the word is 6, not 5");
        assert_eq!(word, 6);
    }

    #[test]
    fn a_record_sequence_writes_header_then_payload_and_its_words() {
        let Ok(rseq) = Rseq::get() else {
            eprintln!("rseq unavailable: skipped");
            return;
        };
        let payload: Vec<u8> = (100..=164).collect();
        let header = 0x0807_0605_0403_0201u64;
        for header_len in 0..=8usize {
            for len in 8usize.saturating_sub(header_len)..=40 {
                for shift in 0..3 {
                    // write, last_timestamp, last_at; then a fence word.
                    let mut words = [7u64, 0, 0];
                    let mut fence = 0u64;
                    let mut dst = [0u8; 64];
                    loop {
                        let record = Record {
                            commit: Commit {
                                cpu: rseq.cpu().expect("registered") as u64,
                                writer: words.as_mut_ptr(),
                                fence: &mut fence,
                                old: 7,
                                new: 9,
                                ts: 11,
                            },
                            dst: dst[shift..].as_mut_ptr(),
                            header,
                            header_len,
                            payload: payload.as_ptr(),
                            payload_len: len,
                        };
                        // SAFETY: every pointer is into a live local, in bounds
                        // (shift + header_len + len <= 2 + 8 + 40).
                        if unsafe { rseq.run_record(&record) } == Outcome::Committed {
                            break;
                        }
                    }
                    let end = shift + header_len + len;
                    let what = format!("header {header_len}, payload {len}");
                    assert_eq!(words, [9, 11, 9], "{what}");
                    assert_eq!(
                        &dst[shift..shift + header_len],
                        &header.to_le_bytes()[..header_len],
                        "{what}"
                    );
                    assert_eq!(&dst[shift + header_len..end], &payload[..len], "{what}");
                    assert!(dst[..shift].iter().all(|&b| b == 0), "{what}: before");
                    assert!(dst[end..].iter().all(|&b| b == 0), "{what}: beyond");
                }
            }
        }
        // A changed word, or a held fence: nothing committed.
        let mut words = [8u64, 0, 0];
        let mut dst = [0u8; 16];
        for (old, mut fence) in [(7, 0u64), (8, 1)] {
            let record = Record {
                commit: Commit {
                    cpu: rseq.cpu().expect("registered") as u64,
                    writer: words.as_mut_ptr(),
                    fence: &mut fence,
                    old,
                    new: 9,
                    ts: 11,
                },
                dst: dst.as_mut_ptr(),
                header,
                header_len: 8,
                payload: payload.as_ptr(),
                payload_len: 8,
            };
            // SAFETY: as above.
            assert_ne!(unsafe { rseq.run_record(&record) }, Outcome::Committed);
            assert_eq!(words, [8, 0, 0]);
        }
    }

    #[test]
    fn writer_words_sit_where_the_record_sequence_stores() {
        use ringbuf_core::{SharedWord, WriterWords};
        assert_eq!(core::mem::offset_of!(WriterWords<SharedWord>, write), 0);
        assert_eq!(
            core::mem::offset_of!(WriterWords<SharedWord>, last_timestamp),
            8
        );
        assert_eq!(core::mem::offset_of!(WriterWords<SharedWord>, last_at), 16);
    }

    #[test]
    fn segments_of_every_length_copy_exactly_and_nothing_beyond() {
        let Ok(rseq) = Rseq::get() else {
            eprintln!("rseq unavailable: skipped");
            return;
        };
        let src: Vec<u8> = (1..=64).collect();
        for len in 0..=40 {
            for shift in 0..3 {
                let mut word = 0u64;
                let mut scratch = 0u64;
                let mut dst = [0u8; 64];
                // Two segments, the second right after the first, both unaligned.
                let first = len / 2;
                loop {
                    let cpu = rseq.cpu().expect("registered");
                    let mut o = op(cpu, &mut word, 0, &mut scratch);
                    o.segments[0] = Segment {
                        dst: dst[shift..].as_mut_ptr(),
                        src: src[shift..].as_ptr(),
                        len: first,
                    };
                    o.segments[1] = Segment {
                        dst: dst[shift + first..].as_mut_ptr(),
                        src: src[shift + first..].as_ptr(),
                        len: len - first,
                    };
                    o.segment_count = 2;
                    // SAFETY: every pointer is into a live local, in bounds.
                    if unsafe { rseq.commit(&o) } == Outcome::Committed {
                        break;
                    }
                }
                assert_eq!(&dst[shift..shift + len], &src[shift..shift + len], "{len}");
                assert!(dst[..shift].iter().all(|&b| b == 0), "{len}: before");
                assert!(dst[shift + len..].iter().all(|&b| b == 0), "{len}: beyond");
            }
        }
    }
}
