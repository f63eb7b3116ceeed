//! babeltrace2's text output, parsed line by line.

use std::path::Path;

/// babeltrace2's text output of `dir` with levels and without time deltas, or
/// `None` when babeltrace2 is missing outside CI.
pub fn babeltrace_lines(dir: &Path) -> Option<Vec<Line>> {
    let out = match std::process::Command::new("babeltrace2")
        .args(["--fields=loglevel", "--no-delta"])
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED babeltrace2 check: {e}");
            return None;
        }
        Err(e) => panic!("babeltrace2 is required under CI: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "babeltrace2: {stderr}");
    assert!(!stderr.contains("ERROR"), "babeltrace2: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    Some(text.lines().map(Line::parse).collect())
}

/// One event as babeltrace2 prints it with `--fields=loglevel --no-delta`:
/// `[time] TRACE_INFO (6) name: { cpu_id = 0 }, { vtid = 7 }, { fields }`.
#[derive(Debug)]
pub struct Line {
    /// The class's log level (`TRACE_INFO (6)`), if it has one.
    pub level: Option<String>,
    /// The class name.
    pub name: String,
    /// The writing thread (0 without an event context).
    pub vtid: u64,
    /// `, a = 1, b = "x", `: the fields, each between `, ` and `,`.
    pub fields: String,
}

impl Line {
    pub fn parse(line: &str) -> Self {
        let rest = line.split_once("] ").expect("a time").1;
        let (head, rest) = rest.split_once(": { cpu_id = ").expect("a class name");
        let (level, name) = match head.strip_prefix("TRACE_") {
            Some(level) => {
                let (level, name) = level.split_once(") ").expect("a level");
                (Some(format!("TRACE_{level})")), name)
            }
            None => (None, head),
        };
        let rest = rest.split_once(" }").expect("the packet context's end").1;
        let (vtid, fields) = match rest.strip_prefix(", { vtid = ") {
            Some(vtid) => vtid.split_once(" }").expect("the event context's end"),
            None => ("0", rest),
        };
        let fields = fields
            .strip_prefix(", { ")
            .and_then(|f| f.strip_suffix(" }"))
            .unwrap_or("");
        Self {
            level,
            name: name.to_owned(),
            vtid: vtid.parse().expect("a thread id"),
            fields: format!(", {fields}, "),
        }
    }

    /// The printed value of field `name` (up to the next `, `: not for values
    /// that hold one).
    pub fn get(&self, name: &str) -> Option<&str> {
        let at = self.fields.find(&format!(", {name} = "))? + name.len() + 5;
        let value = &self.fields[at..];
        Some(value.split(", ").next().unwrap_or(value))
    }

    /// Field `name`, a number.
    pub fn num(&self, name: &str) -> u64 {
        self.get(name)
            .unwrap_or_else(|| panic!("no `{name}` in {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("`{name}` is not a number in {self:?}"))
    }

    /// Whether the fields hold `text`.
    pub fn has(&self, text: &str) -> bool {
        self.fields.contains(text)
    }
}
