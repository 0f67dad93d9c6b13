//! Running the real `apparmor_parser`: compile-only checks, loads, replaces
//! and removals, with a compiled-policy cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cache;

/// Where Debian's `apparmor` package ships a features file for hosts whose
/// kernel has no AppArmor (used for compile-only checks).
pub const SHIPPED_FEATURES: &str = "/usr/share/apparmor-features/features";

/// Optimisation switches aa-virt gives `apparmor_parser` for every compile.
///
/// `no-expr-simplify` skips the parser's expression-tree simplification
/// pass. The DFA is still built and minimised, so the compiled policy is the
/// same (byte for byte on the profiles aa-virt renders:
/// `tests/apparmor/parser_flags.rs` checks it); only the time to build it changes,
/// about 40% less for a typical guest and 25% less with 2,000 disk rules.
pub const COMPILE_FLAGS: &[&str] = &["-O", "no-expr-simplify"];

pub use super::cache::INPUTS_DIR;

/// The parser's default base directory: includes, and the policy ABI files
/// (`abi/3.0`, `abi/4.0`) that an `abi <abi/X>,` line names.
pub const BASE_DIR: &str = "/etc/apparmor.d";

/// The kernel's feature tree.
pub const KERNEL_FEATURES: &str = "/sys/kernel/security/apparmor/features";

/// Parser errors.
#[derive(Debug, thiserror::Error)]
pub enum ParserError {
    /// The parser binary could not be run.
    #[error("cannot run {bin}: {source} (is the apparmor package installed?)")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The parser rejected the profile.
    #[error("apparmor_parser {action} {file} failed{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Rejected {
        /// What we asked it to do (`check`, `replace`, ...).
        action: &'static str,
        /// The file handed to the parser.
        file: String,
        /// The line the parser complained about, when it said.
        line: Option<u32>,
        /// The parser's own message.
        message: String,
    },
}

/// How to run `apparmor_parser`.
#[derive(Debug, Clone)]
pub struct Parser {
    /// The binary.
    pub bin: PathBuf,
    /// Extra include directories, searched before the base directory.
    pub includes: Vec<PathBuf>,
    /// Base directory for includes (`/etc/apparmor.d` by default).
    pub base: Option<PathBuf>,
    /// Compiled-policy cache directory; `None` disables the cache.
    pub cache: Option<PathBuf>,
    /// Features file for compile-only checks; `None` means the kernel's.
    pub features: Option<PathBuf>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// The parser from `AA_VIRT_PARSER`, or `apparmor_parser` from the usual
    /// places; the features file is the kernel's when the kernel has
    /// AppArmor, Debian's shipped file otherwise.
    pub fn new() -> Parser {
        let bin = std::env::var_os("AA_VIRT_PARSER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                ["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
                    .unwrap_or_else(|| PathBuf::from("apparmor_parser"))
            });
        let features = if Path::new(KERNEL_FEATURES).exists() {
            None
        } else if Path::new(SHIPPED_FEATURES).exists() {
            Some(PathBuf::from(SHIPPED_FEATURES))
        } else {
            None
        };
        Parser {
            bin,
            includes: Vec::new(),
            base: None,
            cache: None,
            features,
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        if let Some(b) = &self.base {
            c.arg("--base").arg(b);
        }
        for i in &self.includes {
            c.arg("-I").arg(i);
        }
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, action: &'static str, mut c: Command, file: &Path) -> Result<(), ParserError> {
        let out = c.output().map_err(|source| ParserError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (line, message) = summarise(&stderr);
        Err(ParserError::Rejected {
            action,
            file: file.display().to_string(),
            line,
            message: if message.is_empty() {
                format!("exit status {}", out.status)
            } else {
                message
            },
        })
    }

    /// Compile `profile` without loading it into the kernel.
    pub fn check(&self, profile: &Path) -> Result<(), ParserError> {
        self.check_many(std::slice::from_ref(&profile))
    }

    /// Compile several profile files in one parser run without loading
    /// them (one process start instead of one each); the error names the
    /// file the parser rejected when it says which.
    pub fn check_many<P: AsRef<Path>>(&self, profiles: &[P]) -> Result<(), ParserError> {
        let mut c = self.command();
        c.arg("--skip-kernel-load")
            .arg("--skip-cache")
            .arg("--quiet")
            .args(COMPILE_FLAGS);
        if let Some(f) = &self.features {
            c.arg("--features-file").arg(f);
        }
        c.arg("-o").arg("/dev/null");
        for p in profiles {
            c.arg(p.as_ref());
        }
        let first = profiles.first().map(AsRef::as_ref).unwrap_or(Path::new(""));
        self.run("check", c, first)
    }

    /// Load or replace `profile` in the kernel, writing the cache. Returns
    /// the digest of the inputs it was compiled from (see
    /// [`Parser::replace_digested`]), `None` without a cache.
    pub fn replace(&self, profile: &Path) -> Result<Option<String>, ParserError> {
        let digest = self.load_digest(profile);
        self.replace_digested(profile, digest.as_deref(), true)?;
        Ok(digest)
    }

    /// Load or replace `profile`, whose inputs digest
    /// ([`Parser::inputs_digest`]) the caller computed as `digest`.
    ///
    /// apparmor_parser reuses a cache entry that is newer than every file
    /// the profile includes. It cannot notice an `include if exists` file
    /// that was deleted (an admin taking a rule out of `local/`), and would
    /// load the stale policy with the rule still in it. So aa-virt keeps,
    /// beside the cache, a record of the digest of everything the profile
    /// is compiled from (its text and every include) and lets the parser
    /// read the cache only when `read_cache` allows it and that digest is
    /// the one recorded at the last successful load; otherwise it compiles
    /// afresh (and rewrites the cache). The record also names the cache
    /// file the parser wrote, for [`Parser::cached_policy`]. A crash
    /// between the two leaves no record, which only costs a compile.
    ///
    /// Gives true when the parser was let read a current cache entry
    /// (it loads that policy without compiling), false when it compiled.
    pub fn replace_digested(
        &self,
        profile: &Path,
        digest: Option<&str>,
        read_cache: bool,
    ) -> Result<bool, ParserError> {
        let mut c = self.command();
        c.arg("--replace").args(COMPILE_FLAGS);
        let mut stamp = None;
        let mut from_cache = false;
        match &self.cache {
            Some(dir) => {
                // The parser silently writes no cache into a directory
                // that does not exist (a host's first load).
                let _ = std::fs::create_dir_all(dir);
                c.arg("--write-cache").arg("--cache-loc").arg(dir);
                let path = cache::record_path(dir, profile);
                from_cache = read_cache && self.cache_matches(profile, digest);
                if !from_cache {
                    c.arg("--skip-read-cache");
                }
                // Forget the old record first: it must never outlive a
                // cache entry written for other inputs.
                let _ = std::fs::remove_file(&path);
                let before = cache::entries(dir, profile);
                stamp = digest.map(|d| (dir, path, d, before));
            }
            None => {
                c.arg("--skip-cache");
            }
        }
        c.arg(profile);
        self.run("replace", c, profile)?;
        if let Some((dir, path, digest, before)) = stamp {
            // Best effort: without the record the next load compiles.
            let mut record = format!("{digest}\n");
            let written = cache::written_entry(dir, profile, &before);
            let line = written
                .zip(self.features_id())
                .and_then(|(rel, features)| cache::policy_line(dir, &rel, &features));
            if let Some(line) = line {
                record.push_str(&line);
                record.push('\n');
            }
            cache::write_record(&path, &record);
        }
        Ok(from_cache)
    }

    /// The compiled policy in the cache for `profile`, when the record
    /// says it was compiled from inputs with digest `digest`, for the
    /// features the parser compiles for now, and the file is unchanged
    /// since: what the parser would load from its cache, to be written to
    /// the kernel directly. `None` whenever that is not certain.
    pub fn cached_policy(&self, profile: &Path, digest: &str) -> Option<Vec<u8>> {
        let dir = self.cache.as_ref()?;
        let record = std::fs::read_to_string(cache::record_path(dir, profile)).ok()?;
        cache::cached_policy(dir, &record, digest, &self.features_id()?)
    }

    /// What identifies the features the parser compiles for: the features
    /// file it is given, or the running kernel's feature tree; and any
    /// features file parser.conf pins (Debian's does, `policy-features=`).
    fn features_id(&self) -> Option<String> {
        let mut id = match &self.features {
            Some(f) => format!("file:{}", cache::hex_digest(&std::fs::read(f).ok()?)),
            None => {
                let mut h = Vec::new();
                feature_tree(Path::new(KERNEL_FEATURES), Path::new(""), &mut h, 0)?;
                format!("kernel:{}", cache::hex_digest(&h))
            }
        };
        let conf = std::fs::read_to_string(super::digest::PARSER_CONF).unwrap_or_default();
        for file in pinned_features(&conf) {
            let data = std::fs::read(file).unwrap_or_default();
            id.push_str(&format!("+{}", &cache::hex_digest(&data)[..16]));
        }
        Some(id)
    }

    /// The digest a load of `profile` records ([`Parser::inputs_digest`]),
    /// computed once per load; `None` without a cache (nothing records it).
    pub fn load_digest(&self, profile: &Path) -> Option<String> {
        self.cache
            .as_ref()
            .and_then(|_| self.inputs_digest(profile))
    }

    /// Does the record beside the cache say that `profile`'s cache entry
    /// was compiled from inputs with digest `digest` ([`Parser::inputs_digest`])?
    /// Only then may the parser read that entry. False without a cache,
    /// a record or a digest.
    pub fn cache_matches(&self, profile: &Path, digest: Option<&str>) -> bool {
        let (Some(dir), Some(digest)) = (&self.cache, digest) else {
            return false;
        };
        std::fs::read_to_string(cache::record_path(dir, profile))
            .is_ok_and(|r| cache::recorded_inputs(&r) == digest)
    }

    /// The digest of what `profile` is compiled from: aa-virt's own walk of
    /// its includes ([`super::digest`]), one parser run cheaper; the
    /// parser's preprocessor when the walk gives up. The two kinds are
    /// tagged so that they never compare equal.
    pub fn inputs_digest(&self, profile: &Path) -> Option<String> {
        let stamp = |p: &Path| {
            let m = std::fs::metadata(p).ok();
            let mtime = m.as_ref().and_then(|m| m.modified().ok());
            format!("{} {:?} {:?}", p.display(), m.map(|m| m.len()), mtime)
        };
        let mut context = vec![stamp(&self.bin), COMPILE_FLAGS.join(" ")];
        if let Some(f) = &self.features {
            context.push(stamp(f));
            context.push(std::fs::read_to_string(f).unwrap_or_default());
        }
        let inputs = super::digest::Inputs {
            includes: &self.includes,
            base: self.base.as_deref(),
            context: &context,
        };
        match super::digest::digest(profile, &inputs, Path::new(super::digest::PARSER_CONF)) {
            Some(d) => Some(format!("walk:{d}")),
            None => self
                .preprocessed_digest(profile)
                .map(|d| format!("cpp:{d}")),
        }
    }

    /// SHA-256 of the profile with every include expanded (its `.files`,
    /// the abstractions, `local/` overrides), or `None` when the parser
    /// cannot preprocess it (the load then compiles afresh).
    fn preprocessed_digest(&self, profile: &Path) -> Option<String> {
        use sha2::{Digest, Sha256};
        let text = self.preprocess(profile).ok()?;
        let d = Sha256::digest(text.as_bytes());
        Some(d.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The profile with every include expanded
    /// (`apparmor_parser --preprocess`), as the parser reads it.
    pub fn preprocess(&self, profile: &Path) -> Result<String, ParserError> {
        let mut c = self.command();
        c.arg("--preprocess")
            .arg("--skip-cache")
            .arg("--quiet")
            .arg(profile);
        let out = c.output().map_err(|source| ParserError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        if !out.status.success() {
            let (line, message) = summarise(&String::from_utf8_lossy(&out.stderr));
            return Err(ParserError::Rejected {
                action: "preprocess",
                file: profile.display().to_string(),
                line,
                message,
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The base directory the parser resolves includes and ABI files in.
    pub fn base_dir(&self) -> PathBuf {
        self.base.clone().unwrap_or_else(|| PathBuf::from(BASE_DIR))
    }

    /// The first line of `apparmor_parser --version`
    /// (`AppArmor parser version 3.0.8`).
    pub fn version(&self) -> Result<String, ParserError> {
        let out = Command::new(&self.bin)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ParserError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().next() {
            Some(l) if out.status.success() => Ok(l.trim().to_string()),
            _ => Err(ParserError::Rejected {
                action: "version",
                file: String::new(),
                line: None,
                message: format!("exit status {}", out.status),
            }),
        }
    }

    /// Unload the profile(s) defined in `profile` from the kernel.
    pub fn remove(&self, profile: &Path) -> Result<(), ParserError> {
        let mut c = self.command();
        c.arg("--remove").arg("--skip-cache").arg(profile);
        self.run("remove", c, profile)
    }
}

/// The features files a parser.conf names (`policy-features=`,
/// `kernel-features=`, `features-file=`, with or without dashes).
fn pinned_features(conf: &str) -> Vec<&str> {
    conf.lines()
        .map(|l| l.trim().trim_start_matches('-'))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            ["policy-features", "kernel-features", "features-file"]
                .iter()
                .find_map(|k| l.strip_prefix(k))
        })
        .map(|v| v.trim_start_matches(['=', ' ', '\t']).trim())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Feed the kernel's feature tree below `dir` (names and contents, in
/// order) into `out`; `None` when it cannot be read whole.
fn feature_tree(dir: &Path, rel: &Path, out: &mut Vec<u8>, depth: usize) -> Option<()> {
    if depth > 8 {
        return None;
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .ok()?;
    names.sort();
    for n in names {
        let (path, rel) = (dir.join(&n), rel.join(&n));
        out.extend_from_slice(rel.as_os_str().as_encoded_bytes());
        out.push(0);
        if std::fs::metadata(&path).ok()?.is_dir() {
            feature_tree(&path, &rel, out, depth + 1)?;
        } else {
            let data = std::fs::read(&path).ok()?;
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(&data);
        }
    }
    Some(())
}

/// Pull the line number and the useful message out of the parser's stderr.
///
/// The parser writes e.g. `AppArmor parser error for /x in profile /y at
/// line 7: syntax error, unexpected TOK_ID`.
pub fn summarise(stderr: &str) -> (Option<u32>, String) {
    let mut line = None;
    let mut msgs = Vec::new();
    for l in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(pos) = l.find(" at line ") {
            let rest = &l[pos + 9..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            line = digits.parse().ok().or(line);
        }
        msgs.push(l.to_string());
    }
    (line, msgs.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_features_files() {
        let conf = "# policy-features=/no\npolicy-features=/usr/share/f\n--kernel-features /k\nO no-expr\n";
        assert_eq!(pinned_features(conf), ["/usr/share/f", "/k"]);
    }

    #[test]
    fn summarise_finds_line() {
        let (l, m) = summarise(
            "AppArmor parser error for /tmp/p in profile /tmp/p at line 7: syntax error\n",
        );
        assert_eq!(l, Some(7));
        assert!(m.contains("syntax error"));
    }
}
