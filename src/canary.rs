//! `aa-virt check`, the upgrade canary: compile every managed guest's
//! policy (libvirt and LXC, each profile file as it is on disk, with the
//! abstractions and `local/` files it includes) against a given
//! `apparmor_parser` and kernel feature set, loading nothing. Run before a
//! kernel or AppArmor upgrade with the new release's parser and features
//! file, it names every guest whose policy would no longer compile (the
//! guest would then fail to start), and the rule classes the new feature
//! set starts to mediate (a new ABI), with each guest's rules of that
//! class: a guest without one is denied what the class covers.
//!
//! The kernel enforces a class on a profile only when the profile's own
//! ABI has it too: a profile that pins `abi <abi/3.0>,` keeps user
//! namespaces and io_uring unmediated on a kernel that has them (proven in
//! the Debian 13 VM, integration-vms case 70). So a class is new for a
//! guest when the new feature set and the guest's pinned ABI both have it
//! and the current feature set (with that ABI) did not; a profile without
//! an `abi` line is taken to follow the kernel.

use std::path::PathBuf;

use serde::Serialize;

use crate::apparmor::abi::{self, Abi};
use crate::apparmor::parser::KERNEL_FEATURES;
use crate::apparmor::{Parser, ParserError};
use crate::guest::GuestKind;
use crate::list::{self, ListError};

/// Errors of `check` itself (a guest that fails to compile is a result).
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// Guests could not be listed.
    #[error(transparent)]
    List(#[from] ListError),
    /// The parser could not be run at all.
    #[error(transparent)]
    Parser(#[from] ParserError),
    /// A feature set could not be read.
    #[error("cannot read the kernel feature set {}: {source}", path.display())]
    Features {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What to check against.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Guests and layouts, as for `list`.
    pub list: list::ListOptions,
    /// The parser to compile with; its `features` is the feature set to
    /// compile for (`None`: the running kernel's).
    pub parser: Parser,
    /// The feature set the guests run under now, to tell what is new
    /// (`None`: the running kernel's, else Debian's shipped file).
    pub current: Option<PathBuf>,
}

/// One guest's result.
#[derive(Debug, Clone, Serialize)]
pub struct GuestCheck {
    /// Guest name (the profile name when no guest lists it).
    pub guest: String,
    /// `qemu` or `lxc`.
    pub kind: GuestKind,
    /// The profile's name.
    pub profile: String,
    /// Its file.
    pub path: String,
    /// The parser compiled it.
    pub ok: bool,
    /// The parser's message when it did not.
    pub error: Option<String>,
    /// The ABI its policy pins (`abi/3.0`), when it has an `abi` line.
    pub abi: Option<String>,
    /// Per class newly mediated for this guest (the new feature set and its
    /// ABI both have it), this guest's rules of that class.
    pub new_mediation: Vec<ClassRules>,
}

/// A guest's rules of one newly mediated class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRules {
    /// The class (`userns`, `unix`, ...).
    pub class: &'static str,
    /// The rules, as the preprocessed policy has them; empty: the new
    /// kernel denies what the class covers.
    pub rules: Vec<String>,
}

/// The result of [`check`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The parser binary and its version line.
    pub parser: String,
    /// The parser's version line, when it reported one.
    pub parser_version: Option<String>,
    /// The feature set compiled for.
    pub features: String,
    /// The feature set compared with.
    pub current_features: String,
    /// Rule classes the new feature set mediates and the current does not.
    pub newly_mediated: Vec<&'static str>,
    /// Every managed guest, by profile name.
    pub guests: Vec<GuestCheck>,
    /// Guest sources that could not be listed.
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Guests whose policy would not compile.
    pub fn failing(&self) -> impl Iterator<Item = &GuestCheck> {
        self.guests.iter().filter(|g| !g.ok)
    }
}

fn host_features() -> PathBuf {
    if std::path::Path::new(KERNEL_FEATURES).exists() {
        PathBuf::from(KERNEL_FEATURES)
    } else {
        PathBuf::from(crate::apparmor::parser::SHIPPED_FEATURES)
    }
}

/// The ABI file a policy pins: the first `abi <abi/X>,` (or `abi "…",`)
/// statement of `text`, as written.
pub fn pinned_abi(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("abi")?;
        let rest = rest.trim_start();
        let (open, close) = match rest.chars().next()? {
            '<' => ('<', '>'),
            '"' => ('"', '"'),
            _ => return None,
        };
        let inner = rest.strip_prefix(open)?;
        let end = inner.find(close)?;
        inner[end + 1..]
            .trim_start()
            .starts_with(',')
            .then(|| inner[..end].to_string())
    })
}

/// The classes of `newly` that apply to a guest pinning `abi` (found in
/// the parser's include directories, then its base): those its ABI has.
/// An ABI file that cannot be found or read limits nothing.
fn applicable(newly: &[&'static str], abi: Option<&str>, p: &Parser) -> Vec<&'static str> {
    let pinned = abi.and_then(|rel| {
        p.includes
            .iter()
            .cloned()
            .chain([p.base_dir()])
            .map(|d| d.join(rel))
            .find(|f| f.is_file())
            .and_then(|f| Abi::read(&f).ok())
    });
    newly
        .iter()
        .copied()
        .filter(|c| pinned.as_ref().is_none_or(|a| a.mediates(c)))
        .collect()
}

fn read_abi(path: &std::path::Path) -> Result<Abi, CanaryError> {
    Abi::read(path).map_err(|source| CanaryError::Features {
        path: path.to_path_buf(),
        source,
    })
}

/// Compile every managed guest's policy with `opts.parser`; nothing is
/// loaded and no cache is read or written.
pub fn check(opts: &CheckOptions) -> Result<CheckReport, CanaryError> {
    let version = opts.parser.version()?;
    let new_path = opts.parser.features.clone().unwrap_or_else(host_features);
    let cur_path = opts.current.clone().unwrap_or_else(host_features);
    let newly = read_abi(&new_path)?.newly_mediated(&read_abi(&cur_path)?);
    let (targets, listed) = crate::reload::targets(&opts.list, None)?;
    let mut guests = Vec::new();
    for t in targets.values() {
        let mut p = match t.kind {
            GuestKind::Qemu => opts.list.layout.parser(&opts.parser),
            GuestKind::Lxc => opts.list.lxc_layout.parser(&opts.parser),
        };
        p.cache = None;
        p.features = Some(new_path.clone());
        let (ok, error) = match p.check(&t.path) {
            Ok(()) => (true, None),
            Err(ParserError::Rejected { message, line, .. }) => (
                false,
                Some(match line {
                    Some(l) => format!("line {l}: {message}"),
                    None => message,
                }),
            ),
            Err(e) => return Err(e.into()),
        };
        let abi = pinned_abi(&std::fs::read_to_string(&t.path).unwrap_or_default());
        let text = if newly.is_empty() {
            String::new()
        } else {
            p.preprocess(&t.path).unwrap_or_default()
        };
        let new_mediation = applicable(&newly, abi.as_deref(), &p)
            .into_iter()
            .map(|c| ClassRules {
                class: c,
                rules: abi::rules_of(&text, c)
                    .into_iter()
                    .map(String::from)
                    .collect(),
            })
            .collect();
        guests.push(GuestCheck {
            guest: t.guest.clone(),
            kind: t.kind,
            profile: t.profile.clone(),
            path: t.path.display().to_string(),
            ok,
            error,
            abi,
            new_mediation,
        });
    }
    Ok(CheckReport {
        parser: opts.parser.bin.display().to_string(),
        parser_version: Some(version),
        features: new_path.display().to_string(),
        current_features: cur_path.display().to_string(),
        newly_mediated: newly,
        guests,
        warnings: listed.error_lines(),
    })
}

/// The report as text: one line per guest, then the new mediation.
pub fn text(r: &CheckReport) -> String {
    let mut o = format!(
        "parser:   {} ({})\nfeatures: {} (compared with {})\n",
        r.parser,
        r.parser_version.as_deref().unwrap_or("version unknown"),
        r.features,
        r.current_features
    );
    for g in &r.guests {
        let profile = if g.profile == g.guest {
            String::new()
        } else {
            format!(", {}", g.profile)
        };
        o.push_str(&format!(
            "{}  {} ({}{profile}){}\n",
            if g.ok { "ok  " } else { "FAIL" },
            g.guest,
            g.kind,
            g.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if r.guests.is_empty() {
        o.push_str("no managed guest found\n");
    }
    if !r.newly_mediated.is_empty() {
        o.push_str(&format!(
            "new mediation (not in the current feature set): {}\n",
            r.newly_mediated.join(", ")
        ));
        for g in &r.guests {
            let spared: Vec<&str> = r
                .newly_mediated
                .iter()
                .filter(|c| !g.new_mediation.iter().any(|m| m.class == **c))
                .copied()
                .collect();
            if !spared.is_empty() {
                o.push_str(&format!(
                    "  {} ({}): its policy pins {}: {} stay unmediated for it\n",
                    g.guest,
                    g.kind,
                    g.abi.as_deref().unwrap_or("another ABI"),
                    spared.join(", ")
                ));
            }
            for c in &g.new_mediation {
                if c.rules.is_empty() {
                    o.push_str(&format!(
                        "  {} ({}): no {} rule: the new kernel would deny it\n",
                        g.guest, g.kind, c.class
                    ));
                } else {
                    o.push_str(&format!(
                        "  {} ({}): {} rules now enforced: {}\n",
                        g.guest,
                        g.kind,
                        c.class,
                        c.rules.join(" ")
                    ));
                }
            }
        }
    }
    let n = r.failing().count();
    o.push_str(&format!(
        "{} of {} guests would fail to compile\n",
        n,
        r.guests.len()
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_abi_is_the_first_abi_statement() {
        let t = "# abi <abi/9.9>, in a comment\nabi <abi/3.0>,\n#include <tunables/global>\n";
        assert_eq!(pinned_abi(t).as_deref(), Some("abi/3.0"));
        assert_eq!(
            pinned_abi("  abi \"/x/abi 4\" ,\n").as_deref(),
            Some("/x/abi 4")
        );
        assert_eq!(pinned_abi("profile x {\n  /abi r,\n}\n"), None);
        assert_eq!(
            pinned_abi("abi <abi/3.0>\n"),
            None,
            "no comma: not a statement"
        );
    }

    #[test]
    fn a_pinned_abi_limits_the_new_classes_and_a_missing_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("abi")).unwrap();
        // abi/3.0 as Debian 12 ships it has af_unix, not userns or io_uring.
        std::fs::write(
            d.path().join("abi/3.0"),
            "network {af_unix {yes\n}\n}\nnamespaces {profile {yes\n}\n}\n",
        )
        .unwrap();
        let mut p = Parser::new();
        p.includes = vec![d.path().to_path_buf()];
        let newly = ["userns", "io_uring", "unix"];
        assert_eq!(applicable(&newly, Some("abi/3.0"), &p), ["unix"]);
        assert_eq!(applicable(&newly, None, &p), newly);
        assert_eq!(applicable(&newly, Some("abi/nonexistent"), &p), newly);
    }
}
