//! Pinning threads to CPUs with `sched_setaffinity`.

use std::io;
use std::marker::PhantomData;
use std::mem::{size_of, zeroed};

/// The CPUs this process may run on, in increasing order.
pub fn allowed_cpus() -> Vec<usize> {
    match get_affinity() {
        Ok(set) => (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, the size of the set.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn get_affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: an all-zero `cpu_set_t` is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a valid set of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == 0 {
        Ok(set)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; `set` is a valid set of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: an all-zero `cpu_set_t` is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set_affinity(&set)
}

/// Pins the calling thread to a CPU until dropped, then restores its affinity.
/// Not `Send`: it must be dropped by the thread it pinned.
pub struct Pinned {
    previous: Option<libc::cpu_set_t>,
    _not_send: PhantomData<*const ()>,
}

impl Pinned {
    /// Pins the calling thread to `cpu`; does nothing (but warns) if it cannot.
    pub fn to(cpu: usize) -> Self {
        let previous = get_affinity().ok();
        if let Err(e) = pin_current_thread(cpu) {
            eprintln!("warning: cannot pin to CPU {cpu}: {e}");
        }
        Self {
            previous,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(set) = &self.previous {
            let _ = set_affinity(set);
        }
    }
}

/// Writer-thread counts for the scaling bench: 1, 2, 4, ... up to the CPUs this
/// process may use, and that count itself.
pub fn thread_counts(cpus: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n <= cpus.max(1))
        .collect();
    if counts.last() != Some(&cpus) && cpus > 1 {
        counts.push(cpus);
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::thread_counts;

    #[test]
    fn thread_counts_are_powers_of_two_then_every_cpu() {
        assert_eq!(thread_counts(1), [1]);
        assert_eq!(thread_counts(2), [1, 2]);
        assert_eq!(thread_counts(6), [1, 2, 4, 6]);
        assert_eq!(thread_counts(8), [1, 2, 4, 8]);
    }

    #[test]
    fn this_process_may_run_somewhere() {
        assert!(!super::allowed_cpus().is_empty());
    }
}
