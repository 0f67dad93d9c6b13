//! `aa-virt check`, the upgrade canary: compile every managed guest's
//! policy (libvirt and LXC, each profile file as it is on disk, with the
//! abstractions and `local/` files it includes) against a given
//! `apparmor_parser` and kernel feature set, loading nothing. Run before a
//! kernel or AppArmor upgrade with the new release's parser and features
//! file, it names every guest whose policy would no longer compile (the
//! guest would then fail to start), and the rule classes the new feature
//! set starts to mediate (a new ABI), with each guest's rules of that
//! class: a guest without one is denied what the class covers.

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
    /// Per newly mediated class, this guest's rules of that class.
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
        let text = if newly.is_empty() {
            String::new()
        } else {
            p.preprocess(&t.path).unwrap_or_default()
        };
        let new_mediation = newly
            .iter()
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
