//! The `ringbuf` command line: record, consume, snapshot, recover, stat.

mod cli;

fn main() {
    std::process::exit(cli::main(std::env::args().skip(1).collect()));
}
