//! A digest of everything a profile is compiled from, computed without
//! running the parser: the profile's text, and, for every `include` and
//! `abi` it names (recursively), the state of every place the parser could
//! find that file (content, a directory's listing, or absence).
//!
//! It decides whether the compiled-policy cache may be read (see
//! [`super::Parser::replace`]), so it must change whenever the policy could:
//! it hashes every candidate location of a name rather than guessing which
//! one the parser picks, and it gives up ([`None`], the caller then asks the
//! parser's preprocessor) on anything it does not model: an include name with
//! a variable, an `include` keyword not followed by a quoted or bracketed
//! name, a required include found nowhere, or a parser configuration that
//! adds include directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The parser's configuration file (it may add include directories).
pub const PARSER_CONF: &str = "/etc/apparmor/parser.conf";

/// Bound on the files and locations one digest visits (a runaway include
/// tree falls back to the parser).
const MAX_FILES: usize = 4096;

/// Where the parser looks for includes and what else shapes the compile.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// `-I` directories, in order.
    pub includes: &'a [PathBuf],
    /// The base directory (`/etc/apparmor.d` when `None`).
    pub base: Option<&'a Path>,
    /// Strings that also shape the compile (binary, flags, features file).
    pub context: &'a [String],
}

/// SHA-256 (hex) of `profile` and everything it includes, or `None` when
/// the profile uses something this does not model (see the module docs).
pub fn digest(profile: &Path, inputs: &Inputs, parser_conf: &Path) -> Option<String> {
    let mut w = Walker {
        dirs: inputs.includes.to_vec(),
        hash: Sha256::new(),
        seen: BTreeMap::new(),
        files: 0,
    };
    w.dirs.push(
        inputs
            .base
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/etc/apparmor.d")),
    );
    for c in inputs.context {
        w.feed(b"ctx", c.as_bytes());
    }
    for d in w.dirs.clone() {
        w.feed(b"dir", d.as_os_str().as_encoded_bytes());
    }
    match std::fs::read_to_string(parser_conf) {
        Ok(conf) => {
            if conf_adds_includes(&conf) {
                return None;
            }
            w.feed(b"conf", conf.as_bytes());
        }
        Err(_) => w.feed(b"noconf", b""),
    }
    w.file(profile)?;
    let d = w.hash.finalize();
    Some(d.iter().map(|b| format!("{b:02x}")).collect())
}

/// Does parser.conf set include directories or the base (which this does
/// not model)?
fn conf_adds_includes(conf: &str) -> bool {
    conf.lines().map(str::trim).any(|l| {
        let opt = l.trim_start_matches('-').to_ascii_lowercase();
        !l.starts_with('#')
            && (opt.starts_with("include") || opt.starts_with("base") || opt.starts_with("i "))
    })
}

struct Walker {
    dirs: Vec<PathBuf>,
    hash: Sha256,
    /// Locations hashed already, and whether something was there.
    seen: BTreeMap<PathBuf, bool>,
    files: usize,
}

impl Walker {
    /// Length-prefixed, tagged input, so no two sequences collide.
    fn feed(&mut self, tag: &[u8], data: &[u8]) {
        self.hash.update((tag.len() as u64).to_le_bytes());
        self.hash.update(tag);
        self.hash.update((data.len() as u64).to_le_bytes());
        self.hash.update(data);
    }

    /// Hash one policy file and what it includes; `None` to give up.
    fn file(&mut self, path: &Path) -> Option<()> {
        self.files += 1;
        if self.files > MAX_FILES {
            return None;
        }
        let text = std::fs::read(path).ok()?;
        self.feed(b"file", path.as_os_str().as_encoded_bytes());
        self.feed(b"content", &text);
        let text = String::from_utf8_lossy(&text).into_owned();
        for r in references(&text)? {
            self.reference(path, &r)?;
        }
        Some(())
    }

    /// Hash every place the parser could find `r`.
    fn reference(&mut self, from: &Path, r: &Reference) -> Option<()> {
        if r.name.contains("@{") {
            return None;
        }
        let name = Path::new(&r.name);
        let mut candidates = Vec::new();
        if name.is_absolute() {
            candidates.push(name.to_path_buf());
        } else {
            if r.quoted {
                if let Some(d) = from.parent() {
                    candidates.push(d.join(name));
                }
                if let Ok(cwd) = std::env::current_dir() {
                    candidates.push(cwd.join(name));
                }
            }
            candidates.extend(self.dirs.iter().map(|d| d.join(name)));
        }
        let mut found = false;
        for c in candidates {
            found |= self.location(&c)?;
        }
        (found || r.optional).then_some(())
    }

    /// Hash one candidate location: a file, a directory's files, or
    /// absence. Returns whether something is there.
    fn location(&mut self, path: &Path) -> Option<bool> {
        if let Some(there) = self.seen.get(path) {
            return Some(*there);
        }
        // Bounds a symlinked directory loop as well as a huge tree.
        if self.seen.len() > MAX_FILES {
            return None;
        }
        let meta = std::fs::metadata(path);
        self.seen.insert(path.to_path_buf(), meta.is_ok());
        match meta {
            Err(_) => {
                self.feed(b"absent", path.as_os_str().as_encoded_bytes());
                Some(false)
            }
            Ok(m) if m.is_dir() => {
                self.feed(b"dirlist", path.as_os_str().as_encoded_bytes());
                let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                    .ok()?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<_, _>>()
                    .ok()?;
                entries.sort();
                for e in entries {
                    self.feed(b"entry", e.as_os_str().as_encoded_bytes());
                    self.location(&e)?;
                }
                Some(true)
            }
            Ok(_) => self.file(path).map(|()| true),
        }
    }
}

/// One `include`/`abi` a policy file names.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    name: String,
    /// `"name"` rather than `<name>`.
    quoted: bool,
    /// `include if exists`.
    optional: bool,
}

/// Every `include`, `#include` and `abi` in `text`, comments included
/// (hashing a file the parser skips is harmless); `None` when a keyword at
/// the start of a line is followed by something this does not understand.
fn references(text: &str) -> Option<Vec<Reference>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(pos) = find_keyword(rest) {
            let (kw, at) = pos;
            // `#include` is an include, `# include` a comment.
            let before = rest[..at].trim_start();
            let leading = before.is_empty() || before == "#";
            let mut tail = rest[at + kw.len()..].trim_start();
            let mut optional = false;
            if kw == "include" {
                if let Some(t) = tail.strip_prefix("if") {
                    let t = t.trim_start();
                    if let Some(t) = t.strip_prefix("exists") {
                        optional = true;
                        tail = t.trim_start();
                    }
                }
            }
            let close = match tail.chars().next() {
                Some('<') => '>',
                Some('"') => '"',
                _ if leading && !tail.is_empty() && kw == "include" => return None,
                _ => {
                    rest = &rest[at + kw.len()..];
                    continue;
                }
            };
            let Some(end) = tail[1..].find(close) else {
                if leading {
                    return None;
                }
                break;
            };
            out.push(Reference {
                name: tail[1..1 + end].to_string(),
                quoted: close == '"',
                optional,
            });
            rest = &tail[1 + end + 1..];
        }
    }
    Some(out)
}

/// The next `include` or `abi` standing as a word in `s`: (keyword, offset).
fn find_keyword(s: &str) -> Option<(&'static str, usize)> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    ["include", "abi"]
        .iter()
        .filter_map(|kw| {
            let mut from = 0;
            while let Some(i) = s[from..].find(kw) {
                let at = from + i;
                let pre = s[..at].chars().next_back();
                let post = s[at + kw.len()..].chars().next();
                if !pre.is_some_and(word) && !post.is_some_and(word) {
                    return Some((*kw, at));
                }
                from = at + kw.len();
            }
            None
        })
        .min_by_key(|(_, at)| *at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, quoted: bool, optional: bool) -> Reference {
        Reference {
            name: name.into(),
            quoted,
            optional,
        }
    }

    #[test]
    fn finds_every_include_form() {
        let t = "abi <abi/3.0>,\n#include <tunables/global>\n  include if exists <local/x>\n\
                 # which aa-virt includes, see below\ninclude \"/etc/x y\"\nprofile p { include <a/b> }\n";
        assert_eq!(
            references(t).unwrap(),
            [
                r("abi/3.0", false, false),
                r("tunables/global", false, false),
                r("local/x", false, true),
                r("/etc/x y", true, false),
                r("a/b", false, false),
            ]
        );
        // A leading include this does not understand: let the parser decide.
        assert!(references("include foo\n").is_none());
        assert!(references("  include <unterminated\n").is_none());
        // A comment that says "include" is not a reason to give up.
        assert_eq!(references("# include the rules below\n").unwrap(), []);
    }

    #[test]
    fn changes_with_every_input_the_parser_reads() {
        let d = tempfile::tempdir().unwrap();
        let inc = d.path().join("inc");
        std::fs::create_dir_all(inc.join("abstractions/x.d")).unwrap();
        std::fs::create_dir_all(inc.join("local")).unwrap();
        let prof = d.path().join("p");
        std::fs::write(
            &prof,
            "profile p {\n  include <abstractions/x>\n  include if exists <local/p>\n}\n",
        )
        .unwrap();
        std::fs::write(
            inc.join("abstractions/x"),
            "  /a r,\n  include if exists <abstractions/x.d>\n",
        )
        .unwrap();
        let dirs = [inc.clone()];
        let base = d.path().join("base");
        let conf = d.path().join("parser.conf");
        let inputs = Inputs {
            includes: &dirs,
            base: Some(&base),
            context: &[],
        };
        let dg = || digest(&prof, &inputs, &conf);
        let mut seen = vec![dg().unwrap()];
        let mut step = |f: &dyn Fn()| {
            f();
            let g = dg().unwrap();
            assert!(!seen.contains(&g), "digest did not change");
            seen.push(g);
        };
        step(&|| std::fs::write(inc.join("local/p"), "/b r,\n").unwrap());
        step(&|| std::fs::write(inc.join("abstractions/x"), "  /c r,\n").unwrap());
        step(&|| {
            std::fs::write(
                inc.join("abstractions/x"),
                "include if exists <abstractions/x.d>\n",
            )
            .unwrap()
        });
        step(&|| std::fs::write(inc.join("abstractions/x.d/one"), "/d r,\n").unwrap());
        // The same name in the base directory could shadow or be shadowed.
        step(&|| {
            std::fs::create_dir_all(base.join("local")).unwrap();
            std::fs::write(base.join("local/p"), "/e r,\n").unwrap();
        });
        step(&|| std::fs::remove_file(inc.join("local/p")).unwrap());
        step(&|| std::fs::write(&conf, "policy-features=/x\n").unwrap());
        // Unchanged inputs, same digest.
        assert_eq!(dg().unwrap(), *seen.last().unwrap());
        // What it does not model falls back to the parser.
        std::fs::write(&conf, "Include /usr/share/apparmor\n").unwrap();
        assert!(dg().is_none());
        std::fs::remove_file(&conf).unwrap();
        std::fs::write(inc.join("local/p"), "include <no/such/file>\n").unwrap();
        assert!(dg().is_none());
    }
}
