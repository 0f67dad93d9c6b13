//! LXC container configuration: reading the effective keys (following
//! `lxc.include`), and the edits `aa-virt lxc enable` / `disable` make.
//!
//! The format is one `key = value` per line; a line whose first non-blank
//! character is `#` is a comment. For single-valued keys the last
//! assignment wins, so aa-virt's block goes at the end of the container's
//! own config file. Edits never touch a line of the user's except to
//! comment out a conflicting `lxc.apparmor.profile` with a fixed prefix;
//! `disable` removes the block and that prefix again, restoring the file
//! byte for byte.

use std::path::{Path, PathBuf};

/// Longest config file read (LXC configs are small; this bounds input).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Deepest `lxc.include` nesting followed.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// First line of aa-virt's block.
pub const BEGIN: &str =
    "# BEGIN aa-virt: added by `aa-virt lxc enable`; `aa-virt lxc disable` removes it";
/// Marker in [`BEGIN`] when aa-virt had to end the user's last line.
pub const BEGIN_NL: &str = "# BEGIN aa-virt (newline added): added by `aa-virt lxc enable`; `aa-virt lxc disable` removes it";
/// Last line of aa-virt's block.
pub const END: &str = "# END aa-virt";
/// Prefix of a user's line that aa-virt commented out.
pub const OFF: &str = "#aa-virt-off# ";

/// One `key = value` assignment and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key (`lxc.apparmor.profile`).
    pub key: String,
    /// The value, trimmed.
    pub value: String,
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl Entry {
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Errors reading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read LXC config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is too large or not text.
    #[error("LXC config {0} is not a text file of at most 4 MiB")]
    NotText(PathBuf),
    /// Includes nest too deep (a loop?).
    #[error("LXC config {0}: lxc.include nests more than 8 deep (an include loop?)")]
    TooDeep(PathBuf),
}

/// Split one line into key and value, or `None` for blanks and comments.
pub fn parse_line(line: &str) -> Option<(&str, &str)> {
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    Some((k.trim(), v.trim()))
}

/// Read a config file's text, bounded.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::NotText(path.to_path_buf()));
    }
    String::from_utf8(buf).map_err(|_| ConfigError::NotText(path.to_path_buf()))
}

/// Every assignment in `text` (the file `path`), following `lxc.include` of
/// files and of directories (their `*.conf` files, sorted) as LXC does. An
/// include that does not exist is skipped (LXC would refuse to start; that
/// is its message to give).
pub fn entries_of(text: &str, path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    collect(text, path, 0, &mut out)?;
    Ok(out)
}

/// [`entries_of`] a file.
pub fn read_entries(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    entries_of(&read_text(path)?, path)
}

fn collect(text: &str, path: &Path, depth: usize, out: &mut Vec<Entry>) -> Result<(), ConfigError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(ConfigError::TooDeep(path.to_path_buf()));
    }
    for (i, line) in text.lines().enumerate() {
        let Some((k, v)) = parse_line(line) else {
            continue;
        };
        if k == "lxc.include" {
            let inc = Path::new(v);
            if inc.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(inc)
                    .map_err(|source| ConfigError::Read {
                        path: inc.to_path_buf(),
                        source,
                    })?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                    .collect();
                files.sort();
                for f in files {
                    collect(&read_text(&f)?, &f, depth + 1, out)?;
                }
            } else if inc.is_file() {
                collect(&read_text(inc)?, inc, depth + 1, out)?;
            } else {
                tracing::debug!(
                    "{}:{}: lxc.include {v} does not exist",
                    path.display(),
                    i + 1
                );
            }
        }
        out.push(Entry {
            key: k.to_string(),
            value: v.to_string(),
            file: path.to_path_buf(),
            line: i + 1,
        });
    }
    Ok(())
}

/// The last assignment of `key`.
pub fn last<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Entry> {
    entries.iter().rev().find(|e| e.key == key)
}

/// Every assignment of `key`, in order.
pub fn all<'a>(entries: &'a [Entry], key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
    entries.iter().filter(move |e| e.key == key)
}

/// Remove aa-virt's block and un-comment the lines it commented out: the
/// inverse of [`enable_text`]. Text without a block is returned unchanged.
pub fn disable_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = false;
    let mut strip_nl = false;
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if !in_block && (bare == BEGIN || bare == BEGIN_NL) {
            in_block = true;
            strip_nl = bare == BEGIN_NL;
            continue;
        }
        if in_block {
            if bare == END {
                in_block = false;
            }
            continue;
        }
        match line.strip_prefix(OFF) {
            Some(orig) => out.push_str(orig),
            None => out.push_str(line),
        }
    }
    if strip_nl && out.ends_with('\n') {
        out.pop();
    }
    out
}

/// What aa-virt's block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The hook lines (`lxc.include = ...`, or the version and three hooks).
    pub hooks: Vec<String>,
    /// The label (`lxc.apparmor.profile`).
    pub label: String,
    /// Add `lxc.apparmor.allow_nesting = 1`.
    pub nesting: bool,
    /// Raw rules, one `lxc.apparmor.raw` line each.
    pub raw: Vec<String>,
}

/// Add aa-virt's block to `text` (after removing an earlier one), and
/// comment out the file's own `lxc.apparmor.profile` lines. The caller has
/// checked that overriding them is wanted.
pub fn enable_text(text: &str, block: &Block) -> String {
    let base = disable_text(text);
    let mut out = String::with_capacity(base.len() + 512);
    for line in base.split_inclusive('\n') {
        if parse_line(line).is_some_and(|(k, _)| k == "lxc.apparmor.profile") {
            out.push_str(OFF);
        }
        out.push_str(line);
    }
    let begin = if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
        BEGIN_NL
    } else {
        BEGIN
    };
    out.push_str(begin);
    out.push('\n');
    for h in &block.hooks {
        out.push_str(h);
        out.push('\n');
    }
    out.push_str(&format!("lxc.apparmor.profile = {}\n", block.label));
    if block.nesting {
        out.push_str("lxc.apparmor.allow_nesting = 1\n");
    }
    for r in &block.raw {
        out.push_str(&format!("lxc.apparmor.raw = {r}\n"));
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Quote `s` for `sh -c` (LXC runs a hook as `sh -c "exec <hook>"`): plain
/// words stay as they are, anything else is single-quoted.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-=:,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "# my container\nlxc.rootfs.path = dir:/x\n  # indented comment\nlxc.apparmor.profile = generated\nlxc.uts.name = c1";

    fn block() -> Block {
        Block {
            hooks: vec!["lxc.include = /usr/share/aa-virt/lxc-hooks/aa-virt.conf".into()],
            label: "lxc-c1_</x>-aa-virt//&:lxc-c1_<-x>-aa-virt:".into(),
            nesting: true,
            raw: vec!["deny /srv/secret/** rw,".into()],
        }
    }

    #[test]
    fn enable_is_exact_idempotent_and_reversible() {
        let once = enable_text(USER, &block());
        assert_eq!(
            once,
            format!(
                "# my container\nlxc.rootfs.path = dir:/x\n  # indented comment\n#aa-virt-off# lxc.apparmor.profile = generated\nlxc.uts.name = c1\n{BEGIN_NL}\nlxc.include = /usr/share/aa-virt/lxc-hooks/aa-virt.conf\nlxc.apparmor.profile = lxc-c1_</x>-aa-virt//&:lxc-c1_<-x>-aa-virt:\nlxc.apparmor.allow_nesting = 1\nlxc.apparmor.raw = deny /srv/secret/** rw,\n{END}\n"
            )
        );
        assert_eq!(enable_text(&once, &block()), once);
        assert_eq!(disable_text(&once), USER);
        let with_nl = format!("{USER}\n");
        assert_eq!(disable_text(&enable_text(&with_nl, &block())), with_nl);
        assert_eq!(disable_text(&enable_text("", &block())), "");
        assert_eq!(disable_text(USER), USER);
    }

    #[test]
    fn the_effective_label_is_ours() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config");
        let t = enable_text(USER, &block());
        let e = entries_of(&t, &p).unwrap();
        assert_eq!(
            last(&e, "lxc.apparmor.profile").unwrap().value,
            block().label
        );
        assert_eq!(last(&e, "lxc.apparmor.allow_nesting").unwrap().value, "1");
        assert_eq!(all(&e, "lxc.apparmor.raw").count(), 1);
    }

    #[test]
    fn includes_are_followed() {
        let d = tempfile::tempdir().unwrap();
        let inc = d.path().join("inc");
        std::fs::create_dir(&inc).unwrap();
        std::fs::write(inc.join("b.conf"), "lxc.apparmor.profile = b\n").unwrap();
        std::fs::write(inc.join("a.conf"), "lxc.apparmor.profile = a\n").unwrap();
        std::fs::write(inc.join("c.txt"), "lxc.apparmor.profile = c\n").unwrap();
        let file = d.path().join("one.conf");
        std::fs::write(&file, "lxc.mount.entry = /srv srv none bind 0 0\n").unwrap();
        let text = format!(
            "lxc.include = {}\nlxc.include = {}\n",
            inc.display(),
            file.display()
        );
        let e = entries_of(&text, &d.path().join("config")).unwrap();
        let v: Vec<_> = all(&e, "lxc.apparmor.profile")
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(v, ["a", "b"]);
        assert!(last(&e, "lxc.mount.entry")
            .unwrap()
            .at()
            .ends_with("one.conf:1"));
        // A loop is an error, not a hang.
        let lp = d.path().join("loop.conf");
        std::fs::write(&lp, format!("lxc.include = {}\n", lp.display())).unwrap();
        assert!(matches!(read_entries(&lp), Err(ConfigError::TooDeep(_))));
    }

    #[test]
    fn quoting_for_sh() {
        assert_eq!(shell_quote("/usr/bin/aa-virt"), "/usr/bin/aa-virt");
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
