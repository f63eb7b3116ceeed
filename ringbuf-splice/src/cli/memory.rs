//! Whether the machine has the memory the buffers ask for. Channels are
//! prefaulted (the event path must never fault), so buffers larger than the
//! memory would run the machine out of it before the first event: they are
//! refused up front instead.

use ringbuf_core::Config;
use ringbuf_mmap::ChannelLayout;

use super::out::bytes;

/// Checks that `buffers` buffers of `config` fit in half the available memory
/// (the other half is left to the page cache the trace is written through).
pub fn check_fits(config: &Config, buffers: u32) -> Result<(), String> {
    let need = ChannelLayout::new(config, buffers, 0)
        .map(|layout| layout.size)
        .unwrap_or(u64::MAX);
    let available = available();
    if need <= available / 2 {
        return Ok(());
    }
    Err(format!(
        "the buffers need {} ({buffers} CPUs x {} sub-buffers of {}), more than half \
         the available memory ({}): use smaller or fewer sub-buffers",
        bytes(need),
        config.subbuf_count,
        bytes(config.subbuf_size),
        bytes(available),
    ))
}

/// `MemAvailable` of /proc/meminfo (what can be allocated without swapping),
/// or the free memory when that is unreadable.
fn available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok());
    match kib {
        Some(kib) => kib.saturating_mul(1024),
        // SAFETY: sysconf has no preconditions.
        None => unsafe {
            let pages = libc::sysconf(libc::_SC_AVPHYS_PAGES).max(0) as u64;
            pages.saturating_mul(libc::sysconf(libc::_SC_PAGESIZE).max(0) as u64)
        },
    }
}
