//! A small `--flag value` parser with typed values and clear errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Parsed flags of one subcommand.
pub struct Args {
    values: HashMap<String, String>,
    switches: Vec<String>,
}

/// A command-line error, printed as `error: ...` with a hint to `--help`.
#[derive(Debug)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ArgError> for String {
    fn from(e: ArgError) -> Self {
        e.0
    }
}

impl Args {
    /// Parses `args` given the flags that take a value and the boolean switches.
    pub fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Self, ArgError> {
        let mut values = HashMap::new();
        let mut on = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| ArgError(format!("unexpected argument {arg:?}")))?;
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| ArgError(format!("--{name} needs a value")))?,
                };
                if values.insert(name.to_owned(), value).is_some() {
                    return Err(ArgError(format!("--{name} given twice")));
                }
            } else if switches.contains(&name) && inline.is_none() {
                on.push(name.to_owned());
            } else {
                return Err(ArgError(format!("unknown flag --{name}")));
            }
        }
        Ok(Self {
            values,
            switches: on,
        })
    }

    /// A typed value, or `default` when absent.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, ArgError> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ArgError(format!("--{name}: invalid value {v:?}"))),
        }
    }

    /// A positive number of seconds (fractions allowed), `None` when absent.
    pub fn seconds(&self, name: &str) -> Result<Option<Duration>, ArgError> {
        let Some(v) = self.values.get(name) else {
            return Ok(None);
        };
        v.parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Some)
            .ok_or_else(|| {
                ArgError(format!(
                    "--{name}: invalid value {v:?} (a positive number of seconds below 2^64)"
                ))
            })
    }

    /// An optional string value.
    pub fn opt_str(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// A required path.
    pub fn path(&self, name: &str) -> Result<PathBuf, ArgError> {
        self.values
            .get(name)
            .map(PathBuf::from)
            .ok_or_else(|| ArgError(format!("--{name} is required")))
    }

    /// An optional path.
    pub fn opt_path(&self, name: &str) -> Option<PathBuf> {
        self.values.get(name).map(PathBuf::from)
    }

    /// A required path to create: it must not exist yet.
    pub fn new_path(&self, name: &str) -> Result<PathBuf, ArgError> {
        let path = self.path(name)?;
        match path.symlink_metadata() {
            Ok(_) => Err(ArgError(format!(
                "--{name} {}: already exists",
                path.display()
            ))),
            Err(_) => Ok(path),
        }
    }

    /// A required path to an existing file (not a directory).
    pub fn file(&self, name: &str) -> Result<PathBuf, ArgError> {
        let path = self.path(name)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Err(ArgError(format!(
                "--{name} {}: a directory, not a file",
                path.display()
            ))),
            Ok(_) => Ok(path),
            Err(e) => Err(ArgError(format!("--{name} {}: {e}", path.display()))),
        }
    }

    /// An optional path to an existing directory.
    pub fn opt_dir(&self, name: &str) -> Result<Option<PathBuf>, ArgError> {
        let Some(path) = self.opt_path(name) else {
            return Ok(None);
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Some(path)),
            Ok(_) => Err(ArgError(format!(
                "--{name} {}: not a directory",
                path.display()
            ))),
            Err(e) => Err(ArgError(format!("--{name} {}: {e}", path.display()))),
        }
    }

    /// Whether a switch is on.
    pub fn on(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

/// A byte size with an optional K/M/G suffix (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (digits, shift) = match s.as_bytes().last() {
            Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
            Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
            Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
            _ => (s, 0),
        };
        let n: u64 = digits.parse().map_err(|_| ())?;
        n.checked_mul(1 << shift).map(Size).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_values_and_errors() {
        let a = Args::parse(
            &strings(&["--threads", "3", "--size=64K", "--live"]),
            &["threads", "size"],
            &["live"],
        )
        .unwrap();
        assert_eq!(a.get("threads", 1u32).unwrap(), 3);
        assert_eq!(a.get("size", Size(0)).unwrap(), Size(64 << 10));
        assert!(a.on("live"));
        assert_eq!(a.get("missing", 7u8).unwrap(), 7);
        let err = |v: &[&str]| Args::parse(&strings(v), &["n"], &["s"]).err().unwrap().0;
        assert_eq!(err(&["--nope"]), "unknown flag --nope");
        assert_eq!(err(&["--n"]), "--n needs a value");
        assert_eq!(err(&["x"]), "unexpected argument \"x\"");
        assert_eq!(err(&["--n", "1", "--n", "2"]), "--n given twice");
        let a = Args::parse(&strings(&["--n", "x"]), &["n"], &[]).unwrap();
        assert_eq!(a.get("n", 0u32).unwrap_err().0, "--n: invalid value \"x\"");
        assert_eq!("3G".parse::<Size>(), Ok(Size(3 << 30)));
        let dir = std::env::temp_dir();
        let file = std::env::current_exe().unwrap();
        let paths = |v: &Path| {
            let v = v.to_str().unwrap();
            Args::parse(&strings(&["--p", v]), &["p"], &[]).unwrap()
        };
        let missing = dir.join("ringbuf-args-test-missing");
        assert_eq!(paths(&missing).new_path("p").unwrap(), missing);
        let e = paths(&dir).new_path("p").unwrap_err().0;
        assert_eq!(e, format!("--p {}: already exists", dir.display()));
        assert_eq!(paths(&file).file("p").unwrap(), file);
        let e = paths(&dir).file("p").unwrap_err().0;
        assert_eq!(e, format!("--p {}: a directory, not a file", dir.display()));
        let e = paths(&missing).file("p").unwrap_err().0;
        assert!(
            e.starts_with(&format!("--p {}: ", missing.display())),
            "{e}"
        );
        assert_eq!(paths(&dir).opt_dir("p").unwrap(), Some(dir.clone()));
        let e = paths(&file).opt_dir("p").unwrap_err().0;
        assert_eq!(e, format!("--p {}: not a directory", file.display()));
        assert!(paths(&missing).opt_dir("p").is_err());
        let secs = |v: &str| {
            Args::parse(&strings(&["--d", v]), &["d"], &[])
                .unwrap()
                .seconds("d")
        };
        assert_eq!(secs("0.25").unwrap(), Some(Duration::from_millis(250)));
        for bad in ["0", "-1", "nan", "inf", "1e30", "x"] {
            let e = secs(bad).unwrap_err().0;
            assert!(e.starts_with(&format!("--d: invalid value {bad:?}")), "{e}");
        }
    }
}
