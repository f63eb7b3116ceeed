//! Where a relayd listens: `net://HOST[:CONTROL_PORT[:DATA_PORT]]`, the syntax of
//! `lttng create --set-url`.

use std::net::{SocketAddr, ToSocketAddrs};

use super::RelaydError;

/// The relayd's default control port.
pub const DEFAULT_CONTROL_PORT: u16 = 5342;
/// The relayd's default data port.
pub const DEFAULT_DATA_PORT: u16 = 5343;
/// The relayd's default port for live viewers.
pub const DEFAULT_LIVE_PORT: u16 = 5344;

/// A relayd's control and data ports on one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaydAddress {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The control port.
    pub control: u16,
    /// The data port.
    pub data: u16,
}

impl std::str::FromStr for RelaydAddress {
    type Err = RelaydError;

    /// Parses `net://HOST[:CONTROL_PORT[:DATA_PORT]]`; an IPv6 address is written
    /// in brackets (`net://[::1]:5342:5343`). Ports default to 5342 and 5343.
    fn from_str(url: &str) -> Result<Self, RelaydError> {
        let bad = |why: &'static str| RelaydError::Url {
            url: url.to_owned(),
            why,
        };
        let rest = url
            .strip_prefix("net://")
            .ok_or_else(|| bad("expected net://HOST[:CONTROL_PORT[:DATA_PORT]]"))?;
        let (host, ports) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                match after {
                    "" => (host, None),
                    p => (
                        host,
                        Some(
                            p.strip_prefix(':')
                                .ok_or_else(|| bad("expected : after ]"))?,
                        ),
                    ),
                }
            }
            None => match rest.split_once(':') {
                Some((host, ports)) => (host, Some(ports)),
                None => (rest, None),
            },
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad("expected a host name or address after net://"));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("a port is a number from 1 to 65535"))
        };
        let (control, data) = match ports.map(|p| p.split_once(':').unwrap_or((p, ""))) {
            None => (DEFAULT_CONTROL_PORT, DEFAULT_DATA_PORT),
            Some((c, "")) => (port(c)?, DEFAULT_DATA_PORT),
            Some((c, d)) => (port(c)?, port(d)?),
        };
        Ok(Self {
            host: host.to_owned(),
            control,
            data,
        })
    }
}

impl std::fmt::Display for RelaydAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "net://[{}]:{}:{}", self.host, self.control, self.data)
        } else {
            write!(f, "net://{}:{}:{}", self.host, self.control, self.data)
        }
    }
}

impl RelaydAddress {
    /// The socket addresses of `port` on the host.
    pub fn resolve(&self, port: u16) -> Result<Vec<SocketAddr>, RelaydError> {
        let resolved = (self.host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>);
        match resolved {
            Ok(addrs) if !addrs.is_empty() => Ok(addrs),
            Ok(_) => Err(RelaydError::Resolve {
                host: self.host.clone(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            }),
            Err(error) => Err(RelaydError::Resolve {
                host: self.host.clone(),
                error,
            }),
        }
    }

    /// The URL a live viewer opens for `session` produced by `hostname`, assuming
    /// the relayd's default live port (`lttng-relayd -L` may have moved it).
    pub fn viewer_url(&self, hostname: &str, session: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("net://{host}:{DEFAULT_LIVE_PORT}/host/{hostname}/{session}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<RelaydAddress, String> {
        url.parse::<RelaydAddress>().map_err(|e| e.to_string())
    }

    #[test]
    fn urls_with_and_without_ports() {
        let a = |host: &str, control, data| RelaydAddress {
            host: host.into(),
            control,
            data,
        };
        assert_eq!(parse("net://example.org"), Ok(a("example.org", 5342, 5343)));
        assert_eq!(
            parse("net://127.0.0.1:6000"),
            Ok(a("127.0.0.1", 6000, 5343))
        );
        assert_eq!(parse("net://h:6000:6001"), Ok(a("h", 6000, 6001)));
        assert_eq!(parse("net://[::1]"), Ok(a("::1", 5342, 5343)));
        assert_eq!(parse("net://[::1]:7:8"), Ok(a("::1", 7, 8)));
        assert_eq!(a("::1", 7, 8).to_string(), "net://[::1]:7:8");
        assert_eq!(a("h", 7, 8).to_string(), "net://h:7:8");
        assert_eq!(
            a("h", 7, 8).viewer_url("box", "s"),
            "net://h:5344/host/box/s"
        );
        for bad in [
            "tcp://h:1",
            "net://",
            "net://h:0",
            "net://h:x",
            "net://h:1:70000",
            "net://[::1",
            "net://h/path",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn resolving_loopback_gives_an_address() {
        let a = parse("net://127.0.0.1:6000:6001").unwrap();
        assert_eq!(
            a.resolve(a.data).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 6001))]
        );
    }
}
