//! `aa-virt explain`: is a path allowed by a profile, by which rule, and
//! where does that rule come from?
//!
//! The profile is read back from the files the kernel compiles (the
//! profile, its `.files`, `local/`, the abstractions it includes), file
//! rules are turned into [`Pattern`]s and matched with [`Pattern::matches`],
//! the same matcher `tests/escaping.rs` checks against apparmor_parser's
//! DFA (`tests/explain_dfa.rs` checks whole profiles). Deny rules win over
//! allow rules, as in the kernel. A rule whose path uses syntax the matcher
//! cannot evaluate (character classes, too many alternatives) is never
//! guessed at: it is listed as unread, and a verdict that such a rule could
//! change says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::guest::Access;

use super::escape::Pattern;
use super::files::{origins, split_comment};

mod syntax;
use syntax::{
    expand_braces, expand_vars, find_include, fixed_prefix, fold_slashes, include_of, split_path,
};

/// Most alternatives one rule path may expand to (`{a,b}` and variables).
const MAX_ALTERNATIVES: usize = 256;
/// Deepest include nesting followed.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The profile file (or a required include) cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An include that is not `if exists` was not found.
    #[error("{file}:{line}: include <{name}> not found")]
    Include {
        /// The including file.
        file: String,
        /// Its line.
        line: usize,
        /// The include.
        name: String,
    },
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    /// The file, relative to the policy directory when it is under it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The devices or allowance named in the rule's comment (`# disk vda`,
    /// `# allow: REASON`); empty for hand-written rules.
    pub origins: Vec<String>,
}

impl Source {
    /// A short description: the origins when aa-virt wrote them, else the
    /// kind of file (abstraction, local addition, profile) with file:line.
    pub fn describe(&self) -> String {
        let at = format!("{}:{}", self.file, self.line);
        if !self.origins.is_empty() {
            return format!("{} ({at})", self.origins.join("; "));
        }
        let kind = if self.file.starts_with("local/") {
            "local addition"
        } else if self.file.starts_with("abstractions/") {
            "abstraction"
        } else {
            "profile"
        };
        format!("{kind} {at}")
    }
}

/// One file rule of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRule {
    /// `deny` rule.
    pub deny: bool,
    /// `owner` rule: applies only to files the process's fsuid owns.
    pub owner: bool,
    /// The paths it matches (more than one after expanding `{a,b}` and
    /// variables).
    pub patterns: Vec<Pattern>,
    /// The access it grants or denies (exec modes are not tracked).
    pub access: Access,
    /// The rule text as written.
    pub text: String,
    /// Where it is.
    pub source: Source,
}

impl FileRule {
    /// Does this rule match `path`?
    pub fn matches(&self, path: &[u8]) -> bool {
        self.patterns.iter().any(|p| p.matches(path))
    }
}

/// A rule line explain cannot evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The rule text.
    pub text: String,
    /// Where it is.
    pub source: Source,
    /// The fixed starts of its path (before any glob, one per variable
    /// value), to tell whether it could concern a given path.
    pub prefixes: Vec<Vec<u8>>,
}

/// A profile's file rules, read back from disk.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The rules explain can evaluate, in file order.
    pub rules: Vec<FileRule>,
    /// File rules it cannot evaluate.
    pub unread: Vec<Unread>,
    vars: HashMap<String, Vec<String>>,
}

/// The answer for one path and access.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Everything requested is allowed (owner rules not counted).
    pub allowed: bool,
    /// What the matching rules grant, after deny rules.
    pub granted: Access,
    /// What was asked for and is not granted.
    pub missing: Access,
    /// Matching allow rules.
    pub allow: Vec<FileRule>,
    /// Matching deny rules (they win over allow rules).
    pub deny: Vec<FileRule>,
    /// Matching `owner` allow rules (grant only when the guest owns the file).
    pub owner: Vec<FileRule>,
    /// Rules explain could not evaluate whose fixed start is a prefix of
    /// the path: they might change the answer.
    pub unsure: Vec<Unread>,
}

/// The access in `a` that `b` does not take away.
pub fn minus(a: Access, b: Access) -> Access {
    let write = a.write && !b.write;
    Access {
        mmap: a.mmap && !b.mmap,
        read: a.read && !b.read,
        write,
        // `w` is write and append to the kernel: denying `w` takes both,
        // denying `a` leaves a write grant its plain writes.
        append: !write && a.append && !b.append && !b.write,
        link: a.link && !b.link,
        lock: a.lock && !b.lock,
    }
}

/// Parse a permission word (`rwk`, `ix`, `mr`, `Px`...): the access it
/// grants, with exec letters ignored; `None` when it is not permissions.
pub fn parse_perms(word: &str) -> Option<Access> {
    let mut a = Access::default();
    for c in word.chars() {
        match c {
            'x' | 'i' | 'p' | 'P' | 'c' | 'C' | 'u' | 'U' => {}
            other => a = a.union(Access::parse(&other.to_string())?),
        }
    }
    Some(a)
}

impl Policy {
    /// Read a profile file and everything it includes. Includes are looked
    /// up in `dirs` in order (the policy directory first).
    pub fn load(profile: &Path, dirs: &[PathBuf]) -> Result<Policy, ExplainError> {
        let mut p = Policy::default();
        let mut seen = Vec::new();
        p.read_file(profile, dirs, 0, &mut seen)?;
        Ok(p)
    }

    /// Add the rules of one file's text (without following includes),
    /// named `file` in sources.
    pub fn add_text(&mut self, file: &str, text: &str) {
        self.scan(file, text, &[], 0, &mut Vec::new())
            .expect("no includes are followed without directories");
    }

    fn read_file(
        &mut self,
        path: &Path,
        dirs: &[PathBuf],
        depth: usize,
        seen: &mut Vec<PathBuf>,
    ) -> Result<(), ExplainError> {
        if depth > MAX_INCLUDE_DEPTH || seen.iter().any(|s| s == path) {
            return Ok(());
        }
        seen.push(path.to_path_buf());
        let text = std::fs::read_to_string(path).map_err(|source| ExplainError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = dirs
            .iter()
            .find_map(|d| path.strip_prefix(d).ok())
            .unwrap_or(path)
            .display()
            .to_string();
        self.scan(&name, &text, dirs, depth, seen)
    }

    fn scan(
        &mut self,
        file: &str,
        text: &str,
        dirs: &[PathBuf],
        depth: usize,
        seen: &mut Vec<PathBuf>,
    ) -> Result<(), ExplainError> {
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let (body, comment) = split_comment(raw);
            let body = body.trim();
            if let Some((name, optional)) = include_of(raw.trim()) {
                if dirs.is_empty() {
                    continue;
                }
                match find_include(&name, dirs) {
                    Some(found) if found.is_dir() => {
                        let mut entries: Vec<PathBuf> = std::fs::read_dir(&found)
                            .map(|rd| rd.flatten().map(|e| e.path()).collect())
                            .unwrap_or_default();
                        entries.sort();
                        for e in entries.into_iter().filter(|e| e.is_file()) {
                            self.read_file(&e, dirs, depth + 1, seen)?;
                        }
                    }
                    Some(found) => self.read_file(&found, dirs, depth + 1, seen)?,
                    None if optional => {}
                    None => {
                        return Err(ExplainError::Include {
                            file: file.into(),
                            line,
                            name,
                        })
                    }
                }
                continue;
            }
            let assigns = body.starts_with("@{")
                && body
                    .split_once('}')
                    .is_some_and(|(_, r)| r.trim_start().trim_start_matches('+').starts_with('='));
            if assigns {
                self.variable(body);
                continue;
            }
            let Some(rule) = body.strip_suffix(',') else {
                continue;
            };
            let origins = comment.map(origins).unwrap_or_default();
            let source = Source {
                file: file.to_string(),
                line,
                origins,
            };
            self.rule(rule.trim(), source);
        }
        Ok(())
    }

    /// `@{NAME}=a b` or `@{NAME}+=c`.
    fn variable(&mut self, body: &str) {
        let Some((name, value)) = body.split_once('=') else {
            return;
        };
        let (name, add) = match name.trim().strip_suffix('+') {
            Some(n) => (n.trim(), true),
            None => (name.trim(), false),
        };
        let Some(name) = name.strip_prefix("@{").and_then(|n| n.strip_suffix('}')) else {
            return;
        };
        let values: Vec<String> = value
            .split_whitespace()
            .map(|v| v.trim_matches('"').to_string())
            .collect();
        let e = self.vars.entry(name.to_string()).or_default();
        if !add {
            e.clear();
        }
        e.extend(values);
    }

    /// One rule without its trailing comma.
    fn rule(&mut self, rule: &str, source: Source) {
        // Shown as one spaced line whatever the file's alignment (a quoted
        // path keeps its spaces: they sit inside one word of the split).
        let text = match rule.contains('"') {
            true => rule.to_string(),
            false => rule.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        let mut words = rule.split_whitespace().peekable();
        let (mut deny, mut owner) = (false, false);
        while let Some(&w) = words.peek() {
            match w {
                "audit" | "allow" => {}
                "deny" => deny = true,
                "owner" => owner = true,
                _ => break,
            }
            words.next();
        }
        let rest: Vec<&str> = words.collect();
        let rest = rest.join(" ");
        let rest = rest.strip_prefix("file ").unwrap_or(&rest).trim();
        if rest == "file" {
            // A bare `file` rule: every file, every access.
            let all = Access::parse("mrwlk").unwrap_or_default();
            let patterns = vec![Pattern::literal(b"/".to_vec()).glob("**")];
            return self.rules.push(FileRule {
                deny,
                owner,
                patterns,
                access: all,
                text: text.clone(),
                source,
            });
        }
        // `PATH PERMS [-> target]` or `PERMS PATH [-> target]`.
        let rest = rest.split(" -> ").next().unwrap_or(rest).trim();
        let (path, perms) = match split_path(rest) {
            Some(pp) => pp,
            None => return,
        };
        let Some(access) = parse_perms(perms) else {
            return;
        };
        match self.patterns(path) {
            Some(patterns) => self.rules.push(FileRule {
                deny,
                owner,
                patterns,
                access,
                text: text.clone(),
                source,
            }),
            None => {
                let inner = path.trim_matches('"');
                let prefixes = match expand_vars(inner, &self.vars) {
                    Some(vs) => vs.iter().map(|v| fixed_prefix(&fold_slashes(v))).collect(),
                    None => vec![fixed_prefix(inner)],
                };
                self.unread.push(Unread {
                    text: text.clone(),
                    source,
                    prefixes,
                })
            }
        }
    }

    /// Expand variables and alternations, then read each alternative as a
    /// [`Pattern`]; `None` when any alternative cannot be read exactly.
    fn patterns(&self, path: &str) -> Option<Vec<Pattern>> {
        let inner = path
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(path);
        let mut out = Vec::new();
        for v in expand_vars(inner, &self.vars)? {
            // The parser folds repeated slashes (`@{PROC}/` is `/proc//`).
            let v = fold_slashes(&v);
            // aa-virt's own form first (its domain id is an alternation).
            if let Some(p) = Pattern::parse_rendered(&format!("\"{v}\"")) {
                out.push(p);
                continue;
            }
            for alt in expand_braces(&v)? {
                let alt = fold_slashes(&alt);
                out.push(Pattern::parse_rendered(&format!("\"{alt}\""))?);
                if out.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Is `path` allowed `want` access? Deny rules win; owner-only rules
    /// are reported but never counted as a grant.
    pub fn explain(&self, path: &[u8], want: Access) -> Verdict {
        let matching = |deny: bool, owner: bool| -> Vec<FileRule> {
            self.rules
                .iter()
                .filter(|r| r.deny == deny && r.owner == owner && r.matches(path))
                .cloned()
                .collect()
        };
        let allow = matching(false, false);
        let mut deny = matching(true, false);
        deny.extend(matching(true, true));
        let owner = matching(false, true);
        let union = |rs: &[FileRule]| rs.iter().fold(Access::default(), |a, r| a.union(r.access));
        let granted = minus(union(&allow), union(&deny));
        let missing = minus(want, granted);
        let unsure = self
            .unread
            .iter()
            .filter(|u| u.prefixes.iter().any(|p| path.starts_with(p)))
            .cloned()
            .collect();
        Verdict {
            allowed: granted.covers(want),
            granted,
            missing,
            allow,
            deny,
            owner,
            unsure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let mut p = Policy::default();
        p.add_text("libvirt/libvirt-x.files", text);
        p
    }

    #[test]
    fn deny_wins_and_sources_are_named() {
        let p = policy(
            "  \"/srv/a.img\" rk,  # disk vda\n  \"/srv/**\" rw,  # allow: scratch\n  deny \"/srv/a.img\" w,\n",
        );
        let v = p.explain(b"/srv/a.img", Access::RW);
        assert!(!v.allowed);
        assert_eq!(v.granted, Access::RK);
        assert_eq!(v.missing, Access::W);
        assert_eq!(v.deny.len(), 1);
        assert_eq!(v.allow[0].source.origins, vec!["disk vda"]);
        assert_eq!(
            v.allow[1].source.describe(),
            "allow: scratch (libvirt/libvirt-x.files:2)"
        );
        assert!(p.explain(b"/srv/b", Access::RW).allowed);
        assert!(!p.explain(b"/srv", Access::R).allowed);
    }

    #[test]
    fn variables_alternations_and_unread_rules() {
        let p = policy(
            "@{PROC}=/proc/\n@{PROC}/{,*/}stat r,\nowner /tmp/x rw,\n/sys/[a-c]* r,\n/usr/{lib,share}/qemu/** r,\n",
        );
        assert!(p.explain(b"/proc/stat", Access::R).allowed);
        assert!(p.explain(b"/proc/12/stat", Access::R).allowed);
        assert!(p.explain(b"/usr/share/qemu/bios.bin", Access::R).allowed);
        let v = p.explain(b"/tmp/x", Access::R);
        assert!(!v.allowed && v.owner.len() == 1);
        let v = p.explain(b"/sys/b", Access::R);
        assert!(!v.allowed && v.unsure.len() == 1, "{v:?}");
        assert_eq!(v.unsure[0].source.line, 4);
        // An unread rule under a variable only concerns its value's paths.
        let p = policy(
            "@{PROC}=/proc/\n@{PROC}/[0-9]*/stat r,\n@{E}=/etc/ /usr/etc/\n@{E}/ld.so.cache r,\n",
        );
        assert!(p.explain(b"/sys/x", Access::R).unsure.is_empty());
        assert_eq!(p.explain(b"/proc/1/stat", Access::R).unsure.len(), 1);
        assert!(p.explain(b"/usr/etc/ld.so.cache", Access::R).allowed);
    }

    #[test]
    fn minus_handles_write_and_append() {
        let rw = Access::RW;
        assert_eq!(minus(rw, Access::W), Access::R);
        let a = Access::parse("a").unwrap();
        assert_eq!(minus(rw, a), Access::RW);
        assert_eq!(minus(a, Access::W), Access::default());
        assert!(minus(Access::W, Access::R).covers(a));
    }

    #[test]
    fn perms_first_and_exec_forms() {
        let p = policy("r /etc/a,\n/usr/bin/qemu* rmix,\n/x/y rw -> z,\n");
        assert!(p.explain(b"/etc/a", Access::R).allowed);
        assert!(
            p.explain(b"/usr/bin/qemu-system-x86_64", Access::MR)
                .allowed
        );
        assert!(p.explain(b"/x/y", Access::RW).allowed);
    }
}
