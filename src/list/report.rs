//! Reporting a [`ListReport`]: the table, the wide table and JSON, all driven
//! by one field table (`FIELDS`).

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use super::{GuestRow, ListReport};
use crate::policy::escape::display_bytes;

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

/// Text safe for one table cell: display-escaped, never empty.
fn cell(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    display_bytes(s.as_bytes())
}

/// `yes`, `no`, or `unknown` when the value is not known.
pub(super) fn yes_no(v: Option<bool>, unknown: &str) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => unknown.into(),
    }
}

fn num<T: ToString>(n: Option<T>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "-".into())
}

/// What a cell needs besides its row.
struct CellCtx<'a> {
    /// What a kernel column says when it has no value: `n/a` for local
    /// guests when the kernel has no AppArmor (the note under the table
    /// says why), `?` when it cannot be known from here (a remote host),
    /// `-` when it does not apply.
    unknown: &'a str,
    /// The wide table.
    wide: bool,
}

/// A column of the text table.
struct Column {
    /// Its position, left to right.
    at: u8,
    /// Its heading.
    head: &'static str,
    /// Only in the wide table.
    wide_only: bool,
    /// Its text for a row.
    cell: fn(&CellCtx<'_>, &GuestRow) -> String,
}

/// One field of a guest: its JSON key and value (`docs/list.schema.json`)
/// and, when the table shows it, its column. A new column is one entry
/// here (and the schema).
struct Field {
    key: &'static str,
    json: fn(&GuestRow) -> Value,
    column: Option<Column>,
}

const fn col(
    at: u8,
    head: &'static str,
    wide_only: bool,
    cell: fn(&CellCtx<'_>, &GuestRow) -> String,
) -> Option<Column> {
    Some(Column {
        at,
        head,
        wide_only,
        cell,
    })
}

const fn field(key: &'static str, json: fn(&GuestRow) -> Value, column: Option<Column>) -> Field {
    Field { key, json, column }
}

/// Every field, in JSON order.
const FIELDS: &[Field] = &[
    field(
        "name",
        |r| json!(r.name),
        col(0, "NAME", false, |_, r| cell(&r.name)),
    ),
    field(
        "kind",
        |r| json!(r.kind),
        col(1, "KIND", false, |_, r| r.kind.to_string()),
    ),
    field(
        "source",
        |r| json!(r.source),
        col(3, "SOURCE", true, |_, r| cell(&r.source)),
    ),
    field("uuid", |r| json!(r.uuid), None),
    field(
        "state",
        |r| json!(r.state),
        col(2, "STATE", false, |_, r| cell(&r.state)),
    ),
    field("active", |r| json!(r.active), None),
    field(
        "pid",
        |r| json!(r.pid),
        col(4, "PID", true, |_, r| num(r.pid)),
    ),
    field(
        "profile",
        |r| json!(r.profile),
        col(5, "PROFILE", false, |_, r| {
            cell(r.profile.as_deref().unwrap_or(""))
        }),
    ),
    field("expected_label", |r| json!(r.expected_label), None),
    field(
        "loaded",
        |r| json!(r.loaded),
        col(6, "LOADED", false, |c, r| yes_no(r.loaded, c.unknown)),
    ),
    field(
        "mode",
        |r| json!(r.mode),
        col(7, "MODE", false, |c, r| {
            r.mode.clone().unwrap_or_else(|| c.unknown.to_string())
        }),
    ),
    field(
        "label",
        |r| json!(r.label),
        col(8, "LABEL", true, |_, r| match (&r.label, &r.label_mode) {
            (Some(l), Some(m)) if !l.is_empty() => cell(&format!("{l} ({m})")),
            (Some(l), _) => cell(l),
            (None, _) => "-".into(),
        }),
    ),
    field("label_mode", |r| json!(r.label_mode), None),
    field("label_source", |r| json!(r.label_source), None),
    field(
        "label_ok",
        |r| json!(r.label_ok),
        col(9, "LABEL OK", false, |c, r| {
            if r.active {
                yes_no(r.label_ok, c.unknown)
            } else {
                "-".into()
            }
        }),
    ),
    field(
        "namespace",
        |r| json!(r.namespace),
        col(10, "NS", false, |c, r| {
            let ns = match (&r.namespace, r.namespace_exists) {
                (None, _) => "-".to_string(),
                (Some(_), Some(true)) => format!("yes ({})", r.namespace_profiles.unwrap_or(0)),
                (Some(_), Some(false)) => "no".into(),
                (Some(_), None) => c.unknown.into(),
            };
            match &r.namespace {
                Some(n) if c.wide => format!("{} {ns}", cell(n)),
                _ => ns,
            }
        }),
    ),
    field("namespace_exists", |r| json!(r.namespace_exists), None),
    field("namespace_profiles", |r| json!(r.namespace_profiles), None),
    // After NS, so that the columns before it keep the positions scripts
    // read them at; one word (`user:OWNER`), so columns stay
    // whitespace-separated.
    field(
        "privilege",
        |r| json!(r.privilege),
        col(11, "PRIVILEGE", false, |_, r| {
            match (r.privilege, &r.owner) {
                (Some(p), Some(o)) => format!("{p}:{}", cell(o).replace(' ', "\\x20")),
                (Some(p), None) => p.to_string(),
                (None, _) => "-".into(),
            }
        }),
    ),
    field("owner", |r| json!(r.owner), None),
    field(
        "rules",
        |r| json!(r.rules),
        col(12, "RULES", false, |_, r| num(r.rules)),
    ),
    field("rules_file", |r| json!(r.rules_file), None),
    field("allowances", |r| json!(r.allowances), None),
    field("stored_mode", |r| json!(r.stored_mode), None),
    field(
        "denials",
        |r| json!(r.denials),
        col(13, "DENIALS", false, |_, r| num(r.denials)),
    ),
    field("confined", |r| json!(r.confined), None),
    field(
        "policy",
        |r| json!(r.policy),
        col(14, "POLICY", true, |c, r| match r.stale {
            Some(true) => "stale".into(),
            Some(false) => "current".into(),
            None => c.unknown.into(),
        }),
    ),
    field("stale", |r| json!(r.stale), None),
    field(
        "problems",
        |r| json!(r.problems),
        col(15, "PROBLEMS", true, |_, r| cell(&r.problems.join("; "))),
    ),
];

impl Serialize for GuestRow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(FIELDS.len()))?;
        for f in FIELDS {
            m.serialize_entry(f.key, &(f.json)(self))?;
        }
        m.end()
    }
}

/// The table's columns, left to right.
fn columns(wide: bool) -> Vec<&'static Column> {
    let mut v: Vec<&Column> = FIELDS
        .iter()
        .filter_map(|f| f.column.as_ref())
        .filter(|c| wide || !c.wide_only)
        .collect();
    v.sort_by_key(|c| c.at);
    v
}

fn row(report: &ListReport, r: &GuestRow, cols: &[&Column], wide: bool) -> Vec<String> {
    let local = report
        .sources
        .iter()
        .find(|s| s.location == r.source)
        .is_none_or(|s| s.local);
    let unknown = if local && !report.apparmor.available {
        "n/a"
    } else if local {
        "-"
    } else {
        "?"
    };
    let ctx = CellCtx { unknown, wide };
    cols.iter().map(|c| (c.cell)(&ctx, r)).collect()
}

/// The table (or wide table), with notes under it.
pub fn table(report: &ListReport, wide: bool) -> String {
    let cols = columns(wide);
    let mut rows: Vec<Vec<String>> = vec![cols.iter().map(|c| c.head.to_string()).collect()];
    rows.extend(report.guests.iter().map(|g| row(report, g, &cols, wide)));
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
pub fn notes(report: &ListReport) -> Vec<String> {
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
    let stale: Vec<&str> = report.stale().map(|g| g.name.as_str()).collect();
    if !stale.is_empty() {
        v.push(format!(
            "stale policy (loaded policy differs from the files on disk; `aa-virt reload` applies them): {}",
            cell(&stale.join(", "))
        ));
    }
    if report.guests.is_empty() {
        v.push("no guests found".into());
    }
    v
}

/// The JSON document.
pub fn json(report: &ListReport) -> String {
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
pub fn render(report: &ListReport, format: Format) -> String {
    match format {
        Format::Table => table(report, false),
        Format::Wide => table(report, true),
        Format::Json => json(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field table and the schema's guest object agree, key for key
    /// and in order, and the table's columns are laid out without gaps.
    #[test]
    fn fields_match_the_schema_and_columns_are_ordered() {
        let schema: Value =
            serde_json::from_str(include_str!("../../docs/list.schema.json")).unwrap();
        let guest = &schema["$defs"]["guest"];
        let props: Vec<&str> = guest["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let keys: Vec<&str> = FIELDS.iter().map(|f| f.key).collect();
        let mut sorted_props = props.clone();
        sorted_props.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        assert_eq!(sorted_keys, sorted_props);
        let required: Vec<&str> = guest["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(keys, required, "JSON order is the schema's");
        let at: Vec<u8> = columns(true).iter().map(|c| c.at).collect();
        assert_eq!(at, (0..at.len() as u8).collect::<Vec<_>>());
        let heads: Vec<&str> = columns(false).iter().map(|c| c.head).collect();
        assert_eq!(
            heads,
            [
                "NAME",
                "KIND",
                "STATE",
                "PROFILE",
                "LOADED",
                "MODE",
                "LABEL OK",
                "NS",
                "PRIVILEGE",
                "RULES",
                "DENIALS"
            ]
        );
    }
}
