//! Memory overhead of ringbuf buffers, computed from `ringbuf_core::Layout` (no
//! measurement): `cargo run --release -p benches --bin memory`. Prints Markdown.

use ringbuf_core::ctf::{COMPACT_HEADER, EXTENDED_HEADER, MEDIUM_HEADER, PACKET_HEADER_SIZE};
use ringbuf_core::{Config, Layout, Mode, RawRecords, CACHE_LINE, HEADER_SIZE, PAGE_SIZE};

fn main() {
    let layout = Layout::new(&Config::new(4096, 2, Mode::Discard)).expect("valid config");
    let per_buffer_words = layout.slots - HEADER_SIZE;
    println!("Fixed costs (any configuration):\n");
    println!("| item | bytes |\n|---|---|");
    println!("| region header (magic, geometry, field table) | {HEADER_SIZE} |");
    println!("| writer, loss and reader words (one cache line each) | {per_buffer_words} |");
    println!(
        "| per sub-buffer: control words (one cache line) | {} |",
        layout.slot_stride
    );
    println!(
        "| per sub-buffer: packet header (RawRecords, in the data) | {} |",
        RawRecords::PACKET_HEADER
    );
    println!(
        "| per sub-buffer: packet header and context (CTF, in the data) | {PACKET_HEADER_SIZE} |"
    );
    println!(
        "| per record: header (RawRecords) + padding to 8 bytes | {} + 0..7 |",
        RawRecords::RECORD_HEADER
    );
    println!(
        "| per record: event header (CTF, byte-aligned) | {COMPACT_HEADER} (compact), \
         {MEDIUM_HEADER} (medium) or {EXTENDED_HEADER} (extended) |"
    );
    println!(
        "| control rounded up to a page ({PAGE_SIZE} B), so data starts page-aligned | \
         up to {} |",
        PAGE_SIZE - CACHE_LINE
    );
    println!("| overwrite mode: the reader's spare sub-buffer | 1 sub-buffer |");

    println!("\nPer configuration (control = everything before the data):\n");
    println!(
        "| N x S | mode | data (N x S) | region | control | control / sub-buffer \
         | spare | packet headers (raw) | overhead / data |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (size, count) in [
        (4096, 4),
        (64 << 10, 8),
        (64 << 10, 16),
        (1 << 20, 16),
        (4096, 256),
    ] {
        for mode in [Mode::Discard, Mode::Overwrite] {
            row(Config::new(size, count, mode));
        }
    }
}

fn row(config: Config) {
    let layout = Layout::new(&config).expect("valid config");
    let data = (config.subbuf_size * config.subbuf_count) as usize;
    let spare = layout.size - layout.data - data;
    // Control, page padding and the spare, plus the packet headers inside the data.
    let overhead = layout.size - data;
    // Raw records' packet headers (CTF's are 76 bytes).
    let packets = config.subbuf_count as usize * RawRecords::PACKET_HEADER;
    println!(
        "| {} x {} | {:?} | {} | {} | {} B | {} B | {} | {packets} B | {:.2}% |",
        config.subbuf_count,
        kib(config.subbuf_size as usize),
        config.mode,
        kib(data),
        kib(layout.size),
        layout.data,
        layout.data / config.subbuf_count as usize,
        kib(spare),
        100.0 * (overhead + packets) as f64 / data as f64,
    );
}

fn kib(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}
