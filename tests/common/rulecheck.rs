//! An independent checker for rendered rule text: every file rule names
//! exactly one path, except for the few fixed globs aa-virt itself emits.
//!
//! It reads the text the way `apparmor_parser` would (quoted path, `\`
//! escapes), without using aa-virt's own escaper, and reports any unescaped
//! `* ? [ ] { } ^ ,` that is not part of one of the known shapes below, any
//! escape the escaper never produces, and any line that is neither a comment
//! nor a well-formed rule (an injected line). Shared by the tests and by the
//! fuzz targets (`fuzz/` includes this file by path).

/// One byte of a rule path as the parser reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// A byte that matches itself.
    Lit(u8),
    /// An unescaped glob/alternation/class character.
    Special(u8),
}

/// Bytes the parser gives meaning to inside a quoted path.
pub const SPECIALS: &[u8] = b"*?[]{}^,";

/// Parse the inside of a quoted rule path into tokens.
pub fn tokenize(inner: &[u8]) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        match b {
            b'\\' => {
                let n = *inner
                    .get(i + 1)
                    .ok_or_else(|| "path ends in a lone backslash".to_string())?;
                // `\\` and `\"` are valid syntax but never written: a path
                // ending in `\\` runs on to the next quote in the parser's
                // lexer (see policy::escape), so they count as a finding.
                if SPECIALS.contains(&n) {
                    out.push(Tok::Lit(n));
                    i += 2;
                } else if n.is_ascii_digit() {
                    let oct = inner
                        .get(i + 1..i + 4)
                        .filter(|o| o.iter().all(|d| (b'0'..=b'7').contains(d)))
                        .ok_or_else(|| format!("bad octal escape at byte {i}"))?;
                    let v = (oct[0] - b'0') as u32 * 64
                        + (oct[1] - b'0') as u32 * 8
                        + (oct[2] - b'0') as u32;
                    let v = u8::try_from(v).map_err(|_| format!("octal escape {v} > 255"))?;
                    out.push(Tok::Lit(v));
                    i += 4;
                } else {
                    return Err(format!("escape \\{} the escaper never writes", n as char));
                }
            }
            b'"' => return Err("unescaped quote inside the path".into()),
            b if b < 0x20 || b == 0x7f => return Err(format!("raw control byte {b:#x}")),
            b if SPECIALS.contains(&b) => {
                out.push(Tok::Special(b));
                i += 1;
            }
            _ => {
                out.push(Tok::Lit(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One element of an allowed rule shape.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// These literal bytes exactly.
    Fixed(&'static str),
    /// One or more literal bytes (data from the guest's configuration).
    Data,
    /// These unescaped specials exactly (e.g. `**`).
    Glob(&'static str),
}

use Shape::{Data, Fixed, Glob};

/// A libvirt domain id when the guest's is not known: 1 to 10 decimal
/// digits, the first not `0`. Written out here rather than taken from
/// aa-virt, so that this checker stays independent of the code it checks;
/// never `*`, which would also match another guest's `5-x` in `5-x-NAME`.
pub const ANY_ID: &str =
    "[1-9]{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}";

/// The shapes of every rule aa-virt may emit. A rule path must match one.
/// Only the first matters for device rules: one literal path, nothing else.
pub const SHAPES: &[(&str, &[Shape])] = &[
    ("one path", &[Data]),
    ("directory tree", &[Data, Fixed("/"), Glob("**")]),
    ("root tree", &[Fixed("/"), Glob("**")]),
    (
        "libvirt log",
        &[
            Fixed("/var/log/libvirt/"),
            Glob("**"),
            Fixed("/"),
            Data,
            Fixed(".log"),
        ],
    ),
    (
        "libvirt domain dir (no id)",
        &[
            Fixed("/var/lib/libvirt/qemu/domain-"),
            Glob(ANY_ID),
            Fixed("-"),
            Data,
            Fixed("/"),
            Glob("*"),
        ],
    ),
    (
        "libvirt domain dir",
        &[
            Fixed("/var/lib/libvirt/qemu/domain-"),
            Data,
            Fixed("/"),
            Glob("*"),
        ],
    ),
    (
        "libvirt per-domain run path (no id)",
        &[Data, Glob(ANY_ID), Fixed("-"), Data],
    ),
    (
        "libvirt per-domain run tree (no id)",
        &[Data, Glob(ANY_ID), Fixed("-"), Data, Fixed("/"), Glob("**")],
    ),
    (
        "libvirt pid file",
        &[
            Fixed("/run/libvirt/"),
            Glob("**"),
            Fixed("/"),
            Data,
            Fixed(".pid"),
        ],
    ),
    (
        "libvirt tunnelled migration",
        &[
            Fixed("/run/libvirt/"),
            Glob("**/*"),
            Fixed(".tunnelmigrate.dest."),
            Data,
        ],
    ),
];

fn glob_toks(g: &str) -> Vec<Tok> {
    g.bytes()
        .map(|b| {
            if SPECIALS.contains(&b) {
                Tok::Special(b)
            } else {
                Tok::Lit(b)
            }
        })
        .collect()
}

fn matches(toks: &[Tok], shape: &[Shape]) -> bool {
    let Some((first, rest)) = shape.split_first() else {
        return toks.is_empty();
    };
    match first {
        Fixed(s) => {
            let want: Vec<Tok> = s.bytes().map(Tok::Lit).collect();
            toks.starts_with(&want) && matches(&toks[want.len()..], rest)
        }
        Glob(g) => {
            let want = glob_toks(g);
            toks.starts_with(&want) && matches(&toks[want.len()..], rest)
        }
        Data => {
            let lits = toks.iter().take_while(|t| matches!(t, Tok::Lit(_))).count();
            (1..=lits).any(|n| matches(&toks[n..], rest))
        }
    }
}

/// Which shape a rule path (the text between the quotes) has, or why it has none.
pub fn shape_of(inner: &[u8]) -> Result<&'static str, String> {
    let toks = tokenize(inner)?;
    SHAPES
        .iter()
        .find(|(_, s)| matches(&toks, s))
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            format!(
                "unescaped special in {:?}, not one of aa-virt's fixed globs",
                String::from_utf8_lossy(inner)
            )
        })
}

/// The literal bytes of a rule path that has no unescaped special at all.
pub fn literal_bytes(inner: &[u8]) -> Option<Vec<u8>> {
    tokenize(inner)
        .ok()?
        .into_iter()
        .try_fold(Vec::new(), |mut v, t| match t {
            Tok::Lit(b) => {
                v.push(b);
                Some(v)
            }
            Tok::Special(_) => None,
        })
}

/// One parsed rule line: the path inside the quotes, the permissions, and
/// the shape it matched.
#[derive(Debug, Clone)]
pub struct RuleLine {
    /// Text between the quotes (still escaped).
    pub inner: Vec<u8>,
    /// Permission letters.
    pub perms: String,
    /// Name of the shape in [`SHAPES`].
    pub shape: &'static str,
}

/// Parse one rule line `  "PATH" PERMS,` with an optional `  # comment`.
pub fn parse_rule_line(line: &str) -> Result<RuleLine, String> {
    let b = line.as_bytes();
    let rest = line
        .trim_start()
        .strip_prefix('"')
        .ok_or_else(|| format!("not a comment or a quoted file rule: {line:?}"))?
        .as_bytes();
    let mut i = 0;
    while i < rest.len() && rest[i] != b'"' {
        i += if rest[i] == b'\\' { 2 } else { 1 };
    }
    if i >= rest.len() {
        return Err(format!("unterminated path in {line:?}"));
    }
    let inner = rest[..i].to_vec();
    let after = std::str::from_utf8(&rest[i + 1..]).map_err(|e| e.to_string())?;
    let after = after
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space after the path in {line:?}"))?;
    let perms: String = after
        .chars()
        .take_while(|c| "mrwalk".contains(*c))
        .collect();
    let tail = &after[perms.len()..];
    let tail = tail
        .strip_prefix(',')
        .ok_or_else(|| format!("rule does not end in ',' after {perms:?}: {line:?}"))?;
    if !(tail.trim().is_empty() || tail.trim_start().starts_with('#')) {
        return Err(format!("text after the rule: {line:?}"));
    }
    if perms.is_empty() {
        return Err(format!("no permissions in {line:?}"));
    }
    let _ = b;
    let shape = shape_of(&inner)?;
    Ok(RuleLine {
        inner,
        perms,
        shape,
    })
}

/// Check a whole generated rules file: every line is blank, a comment, or a
/// rule of a known shape. Returns the rules.
pub fn check_files_text(text: &str) -> Result<Vec<RuleLine>, String> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        rules.push(parse_rule_line(line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(rules)
}
