//! The exactness oracle: compile one rule with the real `apparmor_parser`,
//! read the DFA it would load into the kernel (`-D dfa-graph`) and check that
//! it is a single chain of one-byte transitions spelling exactly one path,
//! ending in the one accepting state. A glob, alternation or character class
//! that leaked through shows up as a branch, a multi-byte transition, a
//! loop, or an accepting state in the wrong place.
//!
//! A glob (`*`, `**`) shows in the dump as a state's default transition,
//! labelled `[^…]` with the bytes it does not take; it is read as one edge
//! per byte it takes (and no explicit edge of the state overrides), so the
//! checks below see it as a branch.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::Command;

use aa_virt::apparmor::Parser;

/// Transitions by state: (next state, byte).
pub type Edges = HashMap<String, Vec<(String, u8)>>;

/// Compile some rule lines and return the first DFA's edges and accepting
/// states, or the parser's complaint.
pub fn try_dfa(rule: &str) -> Result<(Edges, Vec<String>), String> {
    try_dfa_perms(rule).map(|(edges, perms)| {
        let mut accepting: Vec<String> = perms.into_keys().collect();
        accepting.sort();
        (edges, accepting)
    })
}

/// Permissions of an accepting state as dumped: `(0x ALLOW/DENY/AUDIT/QUIET)`.
pub type StatePerms = HashMap<String, (u32, u32)>;

/// [`try_dfa`] with each accepting state's allow and deny masks (the
/// allow mask already has denied bits taken out by the parser).
pub fn try_dfa_perms(rule: &str) -> Result<(Edges, StatePerms), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let p = dir.path().join("prof");
    std::fs::write(&p, format!("profile t {{\n{rule}\n}}\n")).map_err(|e| e.to_string())?;
    dfa_of_profile(&p, &[]).map_err(|e| format!("rule {rule}: {e}"))
}

/// The file DFA (the first dumped) of a whole profile file, includes looked
/// up in `includes` first, with each accepting state's masks.
pub fn dfa_of_profile(
    p: &std::path::Path,
    includes: &[std::path::PathBuf],
) -> Result<(Edges, StatePerms), String> {
    let rule = p.display();
    let parser = Parser::new();
    let out = Command::new(&parser.bin)
        .args(["--skip-kernel-load", "--skip-cache", "-D", "dfa-graph"])
        .args(
            includes
                .iter()
                .flat_map(|d| [OsStr::new("-I"), d.as_os_str()]),
        )
        .args(
            parser
                .features
                .iter()
                .flat_map(|f| [OsStr::new("--features-file"), f.as_os_str()]),
        )
        .arg("-o")
        .arg("/dev/null")
        .arg(p)
        .output()
        .expect("apparmor_parser must be installed (Debian package apparmor)");
    if !out.status.success() {
        return Err(format!(
            "parser rejected {rule}: {} (exit {})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.starts_with(['\t', '\"', '}', 'd']))
                .collect::<Vec<_>>()
                .join("\n"),
            out.status
        ));
    }
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let first = text
        .split("digraph")
        .nth(1)
        .ok_or_else(|| format!("rule {rule}: no DFA dumped"))?;
    let mut edges: Edges = HashMap::new();
    // Default transitions: (from, to, bytes not taken).
    let mut defaults: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut accepting: StatePerms = HashMap::new();
    let lines: Vec<&str> = first.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some((from, to)) = l
            .strip_suffix('[')
            .and_then(|x| x.trim().split_once(" -> "))
        {
            let label = lines.get(i + 1).map(|s| s.trim()).unwrap_or("");
            let (from, to) = (from.trim_matches('"'), to.trim().trim_matches('"'));
            // An edge without a label takes every byte (the part after the
            // NUL of a link rule's pair of paths).
            if label == "]" {
                defaults.push((from.to_string(), to.to_string(), Vec::new()));
                i += 1;
                continue;
            }
            if let Some(set) = label
                .strip_prefix("label=\"[^")
                .and_then(|l| l.strip_suffix("]\""))
            {
                let not = byte_list(set).ok_or_else(|| {
                    format!("rule {rule}: cannot read default transition {label}")
                })?;
                defaults.push((from.to_string(), to.to_string(), not));
                i += 1;
                continue;
            }
            let hex = label
                .trim_end_matches('"')
                .rsplit([' ', '"'])
                .next()
                .and_then(|h| h.strip_prefix("0x"))
                .ok_or_else(|| format!("rule {rule}: transition without a single byte: {label}"))?;
            let byte = u8::from_str_radix(hex, 16)
                .map_err(|_| format!("rule {rule}: bad byte in {label}"))?;
            edges
                .entry(from.to_string())
                .or_default()
                .push((to.to_string(), byte));
        } else if l.starts_with("\"{")
            && l.ends_with('[')
            && i + 1 < lines.len()
            && lines[i + 1].contains("label=")
        {
            let state = l.trim_end_matches('[').trim().trim_matches('"').to_string();
            // `label="{7}\n (0x 10004/0/0/0)"`
            let masks: Vec<u32> = lines[i + 1]
                .split("(0x ")
                .nth(1)
                .and_then(|m| m.split(')').next())
                .map(|m| {
                    m.split('/')
                        .filter_map(|h| u32::from_str_radix(h.trim(), 16).ok())
                        .collect()
                })
                .unwrap_or_default();
            let mask = |i: usize| masks.get(i).copied().unwrap_or(0);
            accepting.insert(state, (mask(0), mask(1)));
        }
        i += 1;
    }
    for (from, to, not) in defaults {
        let out = edges.entry(from).or_default();
        let explicit: Vec<u8> = out.iter().map(|e| e.1).collect();
        for b in 0..=255u8 {
            if !not.contains(&b) && !explicit.contains(&b) {
                out.push((to.clone(), b));
            }
        }
    }
    Ok((edges, accepting))
}

/// The bytes in a dumped byte list such as `0x0/ 0x2f`: each byte is
/// `0xH[H]`, or its printable form, a space and `0xHH`. `None` unless the
/// text reads exactly one way.
fn byte_list(s: &str) -> Option<Vec<u8>> {
    fn hex(s: &str, n: usize) -> Option<u8> {
        let h = s.get(2..2 + n)?;
        if !s.starts_with("0x") || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u8::from_str_radix(h, 16).ok()
    }
    fn all(s: &str, acc: &mut Vec<u8>, found: &mut Vec<Vec<u8>>) {
        if found.len() > 1 {
            return;
        }
        if s.is_empty() {
            if !found.contains(acc) {
                found.push(acc.clone());
            }
            return;
        }
        for n in 1..=2 {
            // `0xH[H]`
            if let Some(b) = hex(s, n) {
                acc.push(b);
                all(&s[2 + n..], acc, found);
                acc.pop();
            }
            // `C 0xHH`, C one or two bytes (`/`, `\t`); a one-byte C is the byte.
            for c in 1..=2 {
                let Some(h) = s.get(c..).and_then(|r| r.strip_prefix(' ')) else {
                    continue;
                };
                match hex(h, n) {
                    Some(b) if c == 2 || s.as_bytes()[0] == b => {
                        acc.push(b);
                        all(&h[2 + n..], acc, found);
                        acc.pop();
                    }
                    _ => {}
                }
            }
        }
    }
    let mut found = Vec::new();
    all(s, &mut Vec::new(), &mut found);
    (found.len() == 1).then(|| found.remove(0))
}

/// Does the DFA accept `path`? Walks the edges from the start state.
pub fn accepts(edges: &Edges, accepting: &[String], path: &[u8]) -> bool {
    let mut state = "{1}".to_string();
    for &b in path {
        match edges
            .get(&state)
            .and_then(|out| out.iter().find(|e| e.1 == b))
        {
            Some(e) => state = e.0.clone(),
            None => return false,
        }
    }
    accepting.contains(&state)
}

/// Check that the rule's DFA accepts exactly `want` and nothing else.
pub fn check_exact(rule: &str, want: &[u8]) -> Result<(), String> {
    let (edges, accepting) = try_dfa(rule)?;
    let mut state = "{1}".to_string();
    for (i, &b) in want.iter().enumerate() {
        let out = edges.get(&state).cloned().unwrap_or_default();
        if out.len() != 1 {
            return Err(format!(
                "rule {rule}: state {state} after {:?} has {} transitions {:?}, want exactly one (byte {b:#x})",
                String::from_utf8_lossy(&want[..i]),
                out.len(),
                out
            ));
        }
        if out[0].1 != b {
            return Err(format!(
                "rule {rule}: byte {i} is {:#x}, want {b:#x}",
                out[0].1
            ));
        }
        state = out[0].0.clone();
    }
    if edges.get(&state).is_some_and(|v| !v.is_empty()) {
        return Err(format!(
            "rule {rule}: the DFA goes on after the full path: {:?}",
            edges.get(&state)
        ));
    }
    if accepting != vec![state.clone()] {
        return Err(format!(
            "rule {rule}: accepting states {accepting:?}, want only {state}"
        ));
    }
    Ok(())
}

/// Assert the rule's DFA accepts exactly `want`.
pub fn assert_exact(rule: &str, want: &[u8]) {
    if let Err(e) = check_exact(rule, want) {
        panic!("{e}");
    }
}

/// Every string the DFA accepts, or an error when the language is infinite
/// (a loop: some glob leaked) or larger than `cap`.
pub fn language(edges: &Edges, accepting: &[String], cap: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    // (state, string so far, states on the way here)
    let mut stack: Vec<(String, Vec<u8>, Vec<String>)> =
        vec![("{1}".to_string(), Vec::new(), Vec::new())];
    while let Some((state, s, mut seen)) = stack.pop() {
        if seen.contains(&state) {
            return Err(format!(
                "loop at state {state} after {:?}: the rules match infinitely many paths",
                String::from_utf8_lossy(&s)
            ));
        }
        if accepting.contains(&state) {
            out.push(s.clone());
            if out.len() > cap {
                return Err(format!("the rules match more than {cap} paths"));
            }
        }
        seen.push(state.clone());
        for (next, b) in edges.get(&state).into_iter().flatten() {
            let mut n = s.clone();
            n.push(*b);
            stack.push((next.clone(), n, seen.clone()));
        }
    }
    Ok(out)
}

/// Compile all `rules` in one profile and check that together they match
/// exactly the paths in `want`, no more and no fewer. One parser run for
/// many paths; a widening in any rule shows as an extra path or a loop.
pub fn check_language(rules: &[String], want: &[Vec<u8>]) -> Result<(), String> {
    let (edges, accepting) = try_dfa(&rules.join("\n"))?;
    let mut got = language(&edges, &accepting, want.len() + 16)?;
    got.sort();
    got.dedup();
    let mut want = want.to_vec();
    want.sort();
    want.dedup();
    if got != want {
        let extra: Vec<String> = got
            .iter()
            .filter(|g| !want.contains(g))
            .map(|g| String::from_utf8_lossy(g).into_owned())
            .collect();
        let missing: Vec<String> = want
            .iter()
            .filter(|w| !got.contains(w))
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        return Err(format!(
            "the rules match other paths than asked: extra {extra:?}, missing {missing:?}"
        ));
    }
    Ok(())
}
