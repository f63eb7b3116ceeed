//! `--relayd URL` of `record` and `consume`: connecting the session, telling the
//! user where it goes, and reporting what the relayd got.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use ringbuf_splice::export_loop::ExportStats;
use ringbuf_splice::relayd::{Relayd, RelaydAddress, RelaydError, RelaydOptions};

use super::out::{say, tell};

/// The relayd side of a run: the session, or why there is none.
pub struct Streaming {
    /// The relayd, as given.
    pub address: RelaydAddress,
    /// The session (moved into the export loop's outputs while it runs).
    pub relayd: Option<Relayd>,
    /// Why it could not connect (the run went on into the trace directory).
    pub unreachable: Option<RelaydError>,
}

impl Streaming {
    /// Connects the session `session` with `buffers` streams. A relayd that cannot
    /// be reached is an error when it is the only output; with a trace directory
    /// the run goes on without it, and the end of the run reports it.
    pub fn connect(
        url: &str,
        session: &str,
        live: Option<Duration>,
        metadata: &str,
        buffers: u32,
        trace: Option<&Path>,
    ) -> Result<Self, String> {
        let address: RelaydAddress = url.parse().map_err(|e| format!("--relayd: {e}"))?;
        let options = RelaydOptions::new(session, live);
        let (relayd, unreachable) = match Relayd::connect(&address, &options, metadata, buffers) {
            Ok(relayd) => {
                say!(
                    "streaming to the relayd {address} (protocol 2.{}): session {session} of \
                     host {}, written to {}",
                    relayd.minor(),
                    options.hostname,
                    relayd.output_path()
                );
                if relayd.is_live() {
                    say!(
                        "live view: babeltrace2 --input-format=lttng-live {}",
                        relayd.viewer_url()
                    );
                }
                (Some(relayd), None)
            }
            Err(e) => match trace {
                Some(trace) => {
                    tell!(
                        "warning: relayd {address}: {e}; recording into {} only",
                        trace.display()
                    );
                    (None, Some(e))
                }
                None => return Err(format!("relayd {address}: {e}")),
            },
        };
        Ok(Self {
            address,
            relayd,
            unreachable,
        })
    }

    /// Prints what the relayd got; an error when it missed packets (the trace
    /// directory, if any, holds them).
    pub fn report(&self, exported: &ExportStats, trace: Option<&Path>) -> Result<(), String> {
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let (stats, error) = match (&self.relayd, &self.unreachable) {
            (Some(relayd), _) => (relayd.stats(), relayd.failure()),
            (None, error) => (Default::default(), error.as_ref()),
        };
        // Packets the session never saw (it was not connected) are unsent too.
        let unsent = exported.packets.saturating_sub(stats.packets_sent);
        say!(
            "relayd {}: {} packets sent ({:.1} MB), {unsent} not sent",
            self.address,
            stats.packets_sent,
            mb(stats.bytes_sent)
        );
        let Some(error) = error else {
            return Ok(());
        };
        let kept = match trace {
            Some(trace) => format!("; the trace {} holds every packet", trace.display()),
            None => String::new(),
        };
        Err(format!(
            "the relayd {} missed {unsent} packets ({error}){kept}",
            self.address
        ))
    }
}

/// Notes the relayd's failure once, for the main thread to print (see
/// [`lost_notice`]); called from the export loop's progress.
pub fn note_failure(relayd: Option<&Relayd>, lost: &OnceLock<String>) {
    if let Some(error) = relayd.and_then(Relayd::failure) {
        lost.get_or_init(|| error.to_string());
    }
}

/// The line telling that the connection to the relayd was lost.
pub fn lost_notice(error: &str) -> String {
    format!("warning: relayd connection lost ({error}); later packets are not sent to it")
}
