//! aa-virt's configuration file, `/etc/aa-virt/aa-virt.toml`.
//!
//! Every key is optional; a missing file means the defaults. Unknown keys
//! and bad values are errors that name the file, the line and the column,
//! because a typo in a security setting must not be silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::apparmor::{KernelStatus, Parser};

/// Where the configuration lives on a real host.
pub const DEFAULT_PATH: &str = "/etc/aa-virt/aa-virt.toml";

/// The default configuration file's text (installed by `aa-virt install`).
pub const DEFAULT_TEXT: &str = include_str!("../templates/aa-virt.toml");

/// What to do when a guest cannot be confined for an operational reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Refuse to start the guest.
    #[default]
    Closed,
    /// Log one warning and let the guest start unconfined.
    Open,
}

/// What aa-virt does with the kernel's
/// `kernel.unprivileged_userns_apparmor_policy` switch before it loads a
/// stacked container's policy namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UsernsPolicySwitch {
    /// Set it to 0 (refusing to load the namespace when that fails): only
    /// the host's root manages policy namespaces.
    #[default]
    Close,
    /// Leave it as it is, for hosts where other software loads policy from
    /// inside user namespaces. Each load warns; user containers are refused,
    /// since their isolation depends on it.
    Keep,
}

/// The configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What happens when a guest cannot be confined because of the host (no
    /// AppArmor in the kernel, the parser fails, a file cannot be written).
    /// A refused device path always stops the start, whatever this says.
    pub fail: FailMode,
    /// Keep a stopped guest's generated `.files` (the profile is unloaded
    /// either way). libvirt removes them; so does aa-virt by default.
    pub keep_files: bool,
    /// Compiled-policy cache directory.
    #[serde(deserialize_with = "abs_path")]
    pub cache_dir: PathBuf,
    /// Extra files every guest profile includes, relative to
    /// `/etc/apparmor.d` (e.g. `abstractions/site-qemu`).
    #[serde(deserialize_with = "include_names")]
    pub abstractions: Vec<String>,
    /// Guests (by name or UUID) whose profiles are rendered in complain mode.
    pub complain: Vec<String>,
    /// The `apparmor_parser` to run (default: found on the usual paths).
    #[serde(deserialize_with = "opt_abs_path")]
    pub apparmor_parser: Option<PathBuf>,
    /// AppArmor's securityfs directory. Only for testing: when set, the
    /// kernel is taken to have AppArmor exactly when `profiles` exists there.
    #[serde(deserialize_with = "opt_abs_path")]
    pub securityfs: Option<PathBuf>,
    /// A directory overriding the built-in templates (same layout as the
    /// source tree's `templates/`).
    #[serde(deserialize_with = "opt_abs_path")]
    pub templates: Option<PathBuf>,
    /// `kernel.unprivileged_userns_apparmor_policy` before a stacked LXC
    /// container's namespace is loaded: "close" (default) or "keep".
    pub lxc_userns_policy: UsernsPolicySwitch,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fail: FailMode::Closed,
            keep_files: false,
            cache_dir: PathBuf::from("/var/cache/aa-virt/apparmor"),
            abstractions: Vec::new(),
            complain: Vec::new(),
            apparmor_parser: None,
            securityfs: None,
            templates: None,
            lxc_userns_policy: UsernsPolicySwitch::Close,
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse, has an unknown key or a bad value.
    #[error("{path}: line {line}, column {column} ({text}): {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// That line's text.
        text: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parse configuration text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                text: text.lines().nth(line - 1).unwrap_or("").trim().to_string(),
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Read the file at `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Config::parse(&t, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The configuration file to use: `AA_VIRT_CONFIG`, else the default.
    pub fn default_path() -> PathBuf {
        std::env::var_os("AA_VIRT_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    /// The parser to run: the configured binary, else the usual one.
    pub fn parser(&self) -> Parser {
        let mut p = Parser::new();
        if let Some(bin) = &self.apparmor_parser {
            p.bin = bin.clone();
        }
        p
    }

    /// The kernel's AppArmor status: probed, unless `securityfs` points
    /// somewhere else (tests), in which case AppArmor counts as present
    /// exactly when that directory has a `profiles` file.
    pub fn kernel_status(&self) -> KernelStatus {
        match &self.securityfs {
            None => crate::apparmor::status(),
            Some(fs) if fs.join("profiles").is_file() => KernelStatus::Available { fs: fs.clone() },
            Some(fs) => KernelStatus::Unavailable(format!(
                "securityfs {} (from the configuration) has no profiles file",
                fs.display()
            )),
        }
    }

    /// Is this guest (by name or UUID) listed for complain mode?
    pub fn complain_for(&self, name: &str, uuid: Option<&uuid::Uuid>) -> bool {
        self.complain.iter().any(|c| {
            c == name
                || uuid.is_some_and(|u| {
                    uuid::Uuid::parse_str(c.trim())
                        .map(|c| c == *u)
                        .unwrap_or(false)
                })
        })
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

fn check_abs(p: &str) -> Result<PathBuf, String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{p:?} contains a control character"));
    }
    Ok(PathBuf::from(p))
}

fn abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    check_abs(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn opt_abs_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    abs_path(d).map(Some)
}

/// An include name must be a plain relative path below `/etc/apparmor.d`
/// that can be written between `<` and `>` without quoting.
fn check_include(n: &str) -> Result<String, String> {
    let ok_chars = n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c));
    if n.is_empty() || !ok_chars {
        return Err(format!(
            "abstraction {n:?}: use a path relative to /etc/apparmor.d made of letters, digits and ._-+/"
        ));
    }
    if n.starts_with('/') || n.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!(
            "abstraction {n:?}: must be relative to /etc/apparmor.d, without empty, . or .. components"
        ));
    }
    Ok(n.to_string())
}

fn include_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|n| check_include(n))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/aa-virt/aa-virt.toml"))
    }

    #[test]
    fn the_shipped_default_is_the_default() {
        assert_eq!(p(DEFAULT_TEXT).unwrap(), Config::default());
        assert_eq!(p("").unwrap(), Config::default());
    }

    #[test]
    fn values_are_read() {
        let c = p(r#"
fail = "open"
keep_files = true
cache_dir = "/var/tmp/c"
abstractions = ["abstractions/site-qemu", "local/extra.d/x+y"]
complain = ["web1", "3F1D0B9E-1111-2222-3333-444455556666"]
"#)
        .unwrap();
        assert_eq!(c.fail, FailMode::Open);
        assert!(c.keep_files);
        assert_eq!(c.cache_dir, PathBuf::from("/var/tmp/c"));
        assert_eq!(c.abstractions.len(), 2);
        let u = uuid::Uuid::parse_str("3f1d0b9e-1111-2222-3333-444455556666").unwrap();
        assert!(c.complain_for("other", Some(&u)));
        assert!(c.complain_for("web1", None));
        assert!(!c.complain_for("web2", None));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let e = p("fail = \"closed\"\nkeep_file = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("keep_file"), "{e}");
        let e = p("\n\nfail = \"sometimes\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("sometimes"), "{e}");
        let e = p("cache_dir = \"var/cache\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("absolute"), "{e}");
        let e = p("abstractions = [\"../../etc/shadow\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".."), "{e}");
        let e = p("abstractions = [\"a> \\n/** rwx,\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("letters, digits"), "{e}");
        let e = p("keep_files = \"yes\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("bool"), "{e}");
        let e = p("fail = \n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_missing_file_is_the_default() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            Config::load(&d.path().join("none.toml")).unwrap(),
            Config::default()
        );
    }
}
