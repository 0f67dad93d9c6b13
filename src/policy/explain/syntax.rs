//! Rule text as the parser reads it: includes, `PATH PERMS` or `PERMS
//! PATH`, variables (`@{PROC}`), alternations (`{a,b}`) and folded
//! slashes. Used by [`super::Policy`] to turn rule lines into patterns.

use std::collections::HashMap;
use std::path::PathBuf;

use super::MAX_ALTERNATIVES;

/// `#include <x>`, `include <x>`, `include if exists <x>`, `"x"` forms:
/// the name and whether it may be missing.
pub(super) fn include_of(line: &str) -> Option<(String, bool)> {
    let rest = line
        .strip_prefix("#include")
        .or_else(|| line.strip_prefix("include"))?
        .trim_start();
    let (rest, optional) = match rest.strip_prefix("if exists") {
        Some(r) => (r.trim_start(), true),
        None => (rest, false),
    };
    let name = rest
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))?;
    Some((name.to_string(), optional))
}

pub(super) fn find_include(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.starts_with('/') {
        let p = PathBuf::from(name);
        return p.exists().then_some(p);
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.exists())
}

/// Split `PATH PERMS` or `PERMS PATH`; the path starts with `/`, `"` or `@`.
pub(super) fn split_path(rest: &str) -> Option<(&str, &str)> {
    let is_path = |s: &str| s.starts_with(['/', '"', '@']);
    if is_path(rest) {
        // The path ends at the closing quote, or at the first space.
        let end = if rest.starts_with('"') {
            let b = rest.as_bytes();
            let mut i = 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i + 1
        } else {
            rest.find(' ')?
        };
        let (p, perms) = rest.split_at(end.min(rest.len()));
        return Some((p, perms.trim()));
    }
    let (perms, p) = rest.split_once(' ')?;
    is_path(p.trim()).then(|| (p.trim(), perms))
}

/// `a//b` as the parser reads it: `a/b`.
pub(super) fn fold_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// The bytes before the first glob, alternation or variable.
pub(super) fn fixed_prefix(path: &str) -> Vec<u8> {
    let inner = path.trim_matches('"');
    let end = inner
        .find(['*', '?', '[', '{', '@', '\\'])
        .unwrap_or(inner.len());
    inner.as_bytes()[..end].to_vec()
}

/// Expand `@{NAME}` from the variables seen so far.
pub(super) fn expand_vars(s: &str, vars: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    let Some(at) = s.find("@{") else {
        return Some(vec![s.to_string()]);
    };
    let end = at + s[at..].find('}')?;
    let values = vars.get(&s[at + 2..end])?;
    let mut out = Vec::new();
    for v in values {
        for tail in expand_vars(&s[end + 1..], vars)? {
            // A value can hold variables of its own.
            for head in expand_vars(v, vars)? {
                out.push(format!("{}{head}{tail}", &s[..at]));
                if out.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
        }
    }
    Some(out)
}

/// Expand unescaped `{a,b}` alternations (nested ones too).
pub(super) fn expand_braces(s: &str) -> Option<Vec<String>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut open = None;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'{' => {
                open = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let Some(start) = open else {
        return Some(vec![s.to_string()]);
    };
    // Find the matching close and the top-level commas.
    let (mut depth, mut j, mut cuts) = (0usize, start, vec![start]);
    loop {
        match *b.get(j)? {
            b'\\' => j += 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => cuts.push(j),
            _ => {}
        }
        j += 1;
    }
    cuts.push(j);
    let (head, tail) = (&s[..start], &s[j + 1..]);
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let alt = &s[w[0] + 1..w[1]];
        for e in expand_braces(&format!("{head}{alt}{tail}"))? {
            out.push(e);
            if out.len() > MAX_ALTERNATIVES {
                return None;
            }
        }
    }
    Some(out)
}
