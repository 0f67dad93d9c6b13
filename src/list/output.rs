//! Rendering a [`Report`]: the table, the wide table and JSON.

use super::{GuestRow, Report};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON (`docs/list.schema.json`).
    Json,
    /// The table with the source, pid, actual label and problems.
    Wide,
}

/// Text safe for one table cell: control characters escaped, never empty.
fn cell(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn yes_no(v: Option<bool>, unknown: &str) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => unknown.into(),
    }
}

fn columns(g: &Report, r: &GuestRow, wide: bool) -> Vec<String> {
    // The kernel columns say "n/a" for local guests when the kernel has no
    // AppArmor (the note under the table says why), "?" when they cannot be
    // known from here (a remote host), "-" when they do not apply.
    let local = g
        .sources
        .iter()
        .find(|s| s.location == r.source)
        .is_none_or(|s| s.local);
    let kernel_unknown = if local && !g.apparmor.available {
        "n/a"
    } else if local {
        "-"
    } else {
        "?"
    };
    let label_ok = if !r.active {
        "-".to_string()
    } else {
        yes_no(r.label_ok, kernel_unknown)
    };
    let ns = match (&r.namespace, r.namespace_exists) {
        (None, _) => "-".to_string(),
        (Some(_), Some(true)) => format!("yes ({})", r.namespace_profiles.unwrap_or(0)),
        (Some(_), Some(false)) => "no".into(),
        (Some(_), None) => kernel_unknown.into(),
    };
    let num = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let mut c = vec![cell(&r.name), r.kind.to_string(), cell(&r.state)];
    if wide {
        c.push(cell(&r.source));
        c.push(r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()));
    }
    c.push(cell(r.profile.as_deref().unwrap_or("")));
    c.push(yes_no(r.loaded, kernel_unknown));
    c.push(r.mode.clone().unwrap_or_else(|| kernel_unknown.to_string()));
    if wide {
        c.push(match (&r.label, &r.label_mode) {
            (Some(l), Some(m)) if !l.is_empty() => cell(&format!("{l} ({m})")),
            (Some(l), _) => cell(l),
            (None, _) => "-".into(),
        });
    }
    c.push(label_ok);
    c.push(if wide {
        match &r.namespace {
            Some(n) => format!("{} {ns}", cell(n)),
            None => ns,
        }
    } else {
        ns
    });
    c.push(num(r.rules));
    c.push(num(r.denials));
    if wide {
        c.push(cell(&r.problems.join("; ")));
    }
    c
}

/// The table (or wide table), with notes under it.
pub fn table(report: &Report, wide: bool) -> String {
    let mut head: Vec<&str> = vec!["NAME", "KIND", "STATE"];
    if wide {
        head.extend(["SOURCE", "PID"]);
    }
    head.extend(["PROFILE", "LOADED", "MODE"]);
    if wide {
        head.push("LABEL");
    }
    head.extend(["LABEL OK", "NS", "RULES", "DENIALS"]);
    if wide {
        head.push("PROBLEMS");
    }
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    rows.extend(report.guests.iter().map(|g| columns(report, g, wide)));
    let n = rows[0].len();
    let mut width = vec![0usize; n];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == n {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for note in notes(report) {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// The notes shown under the table (and kept in JSON as fields).
pub fn notes(report: &Report) -> Vec<String> {
    let mut v = Vec::new();
    if !report.apparmor.available {
        v.push(format!(
            "AppArmor not available: {} (LOADED, MODE, LABEL OK and NS are n/a)",
            report
                .apparmor
                .reason
                .as_deref()
                .unwrap_or("unknown reason")
        ));
    } else if let Some(r) = &report.apparmor.reason {
        v.push(r.clone());
    }
    for s in &report.sources {
        if let Some(n) = &s.note {
            v.push(n.clone());
        }
    }
    if let Some(n) = &report.denials.note {
        v.push(format!("denials: {n}"));
    }
    if report.guests.is_empty() {
        v.push("no guests found".into());
    }
    v
}

/// The JSON document.
pub fn json(report: &Report) -> String {
    // Serialising plain data cannot fail; fall back to a valid error object.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        format!(
            "{{\"schema_version\":{},\"error\":{:?}}}",
            super::SCHEMA_VERSION,
            e.to_string()
        )
    }) + "\n"
}

/// Render in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report, false),
        Format::Wide => table(report, true),
        Format::Json => json(report),
    }
}
