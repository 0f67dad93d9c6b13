//! Path checks and escaping: the one place where a host path becomes
//! AppArmor rule text.
//!
//! A path that goes into a rule must match itself and nothing more. Every
//! byte the parser's glob, alternation or quoting grammar gives meaning to is
//! escaped; control characters are refused (the kernel will never hand them
//! to the matcher as part of a sane guest path, and they would corrupt the
//! profile text); bytes that are not UTF-8 are written as octal escapes so
//! the profile stays valid text and still matches the exact bytes.
//!
//! `tests/policy/escaping.rs` proves the property with the real `apparmor_parser`:
//! each escaped path compiles to a DFA that accepts exactly that one string.

use std::path::Path;

use std::os::unix::ffi::OsStrExt;

/// Longest path the kernel resolves in one system call (PATH_MAX includes the NUL).
pub const PATH_MAX: usize = 4095;

/// Why a path cannot be put into a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Path does not start with `/`.
    #[error("path {0:?} is not absolute")]
    Relative(String),
    /// Empty path.
    #[error("path is empty")]
    Empty,
    /// Path contains a control character (newline, tab, NUL ...).
    #[error("path {path:?} contains control character 0x{byte:02x}")]
    Control {
        /// The path, printable.
        path: String,
        /// The offending byte.
        byte: u8,
    },
    /// Path is longer than the kernel resolves.
    #[error("path {start:?}... is {len} bytes long, over the kernel's limit of {PATH_MAX}")]
    TooLong {
        /// The first bytes of the path, printable.
        start: String,
        /// Length in bytes.
        len: usize,
    },
}

/// Check that raw path bytes can be expressed as an exact rule.
pub fn check_path(bytes: &[u8]) -> Result<(), PathError> {
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if let Some(&b) = bytes.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Control {
            path: display_bytes(bytes),
            byte: b,
        });
    }
    if bytes[0] != b'/' {
        return Err(PathError::Relative(display_bytes(bytes)));
    }
    if bytes.len() > PATH_MAX {
        return Err(PathError::TooLong {
            start: display_bytes(&bytes[..bytes.len().min(64)]),
            len: bytes.len(),
        });
    }
    Ok(())
}

/// Characters that have a meaning inside a quoted AppArmor path.
///
/// `* ? [ ] { }` glob, `,` alternates inside `{}`, `^` negates inside `[]`.
/// Escaping `{` also defeats `@{VAR}` variable expansion. The parser always
/// treats `. + | ( ) $` literally. `\` and `"` are written as octal (see
/// [`OCTAL`]), not here.
const SPECIAL: &[u8] = b"*?[]{}^,";

/// Bytes written as octal escapes even though they are printable: `\`
/// escapes and `"` ends the string. apparmor_parser 3.0.8's lexer takes the
/// longest quoted string it can, so a path written as `"/a\\"` (ending in an
/// escaped backslash) runs on to the next rule's opening quote and the
/// profile no longer compiles. As `\134` and `\042` neither byte can ever
/// stand before a quote (`tests/policy/hostile.rs` proves both forms exact).
const OCTAL: &[u8] = b"\\\"";

/// Escape raw path bytes for use inside a double-quoted rule path.
///
/// The caller must have run [`check_path`] (or otherwise know the bytes hold
/// no control characters); this function never fails so that it can be used
/// for already-validated data, and it escapes control bytes defensively as
/// octal rather than emit them raw.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() {
                let b = c as u8;
                if SPECIAL.contains(&b) {
                    out.push('\\');
                    out.push(c);
                } else if b < 0x20 || b == 0x7f || OCTAL.contains(&b) {
                    out.push_str(&format!("\\{b:03o}"));
                } else {
                    out.push(c);
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

/// The inverse of [`escape_bytes`]: the exact bytes a quoted rule path
/// (without its quotes) matches, or `None` when the text is not one exact
/// path: it holds an unescaped glob or alternation character, a bare `"`,
/// or an escape [`escape_bytes`] never writes.
///
/// Used to read back generated rule files (`.files`) without re-deriving
/// them: `unescape(&escape_bytes(b)) == Some(b)` for every byte string.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let s = text.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'\\' {
            let n = *s.get(i + 1)?;
            // `\\` and `\"` are no longer written but files from older
            // versions hold them.
            if SPECIAL.contains(&n) || OCTAL.contains(&n) {
                out.push(n);
                i += 2;
            } else if (b'0'..=b'3').contains(&n) {
                let d = s.get(i + 1..i + 4)?;
                if !d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                    return None;
                }
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            } else {
                return None;
            }
        } else if SPECIAL.contains(&b) || b == b'"' {
            return None;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Decode one field of a mount table (`/proc/mounts`, an fstab or an LXC
/// `lxc.mount.entry`), where the kernel and fstab write space, tab, newline
/// and backslash as three-digit octal escapes (`\040`). Anything that is
/// not such an escape, including `\4xx` and above, stays as it is.
pub fn unescape_mount_field(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && (b'0'..=b'3').contains(&b.get(i + 1).copied().unwrap_or(0))
            && b.get(i + 2..i + 4)
                .is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Escape a path (see [`escape_bytes`]).
pub fn escape_path(p: &Path) -> String {
    escape_bytes(p.as_os_str().as_bytes())
}

/// A rule path: literal parts, which are escaped, and fixed glob parts that
/// come from aa-virt itself (never from input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Lit(Vec<u8>),
    Glob(&'static str),
    /// [`DECIMAL_ID`]: one libvirt domain id.
    DecimalId,
}

/// Longest libvirt domain id in decimal digits (a positive C `int`).
pub const DECIMAL_ID_MAX_DIGITS: usize = 10;

/// The rule text of [`Pattern::decimal_id`]: 1 to
/// [`DECIMAL_ID_MAX_DIGITS`] decimal digits, the first not `0`, as libvirt
/// prints a domain id (it counts from 1). A `*` in its place would also
/// match `5-x` and so reach another guest's `domain-5-x-NAME`; digits never
/// hold the `-` that separates the id from the name.
pub const DECIMAL_ID: &str =
    "[1-9]{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}";

impl Pattern {
    /// A pattern that matches exactly these bytes.
    pub fn literal(bytes: impl Into<Vec<u8>>) -> Self {
        Pattern(vec![Part::Lit(bytes.into())])
    }

    /// A pattern that matches exactly this path.
    pub fn path(p: &Path) -> Self {
        Pattern::literal(p.as_os_str().as_bytes())
    }

    /// Append literal bytes.
    pub fn lit(mut self, bytes: impl AsRef<[u8]>) -> Self {
        let b = bytes.as_ref();
        if let Some(Part::Lit(last)) = self.0.last_mut() {
            last.extend_from_slice(b);
        } else {
            self.0.push(Part::Lit(b.to_vec()));
        }
        self
    }

    /// Append a fixed glob such as `**` or `*` (trusted text, not escaped).
    pub fn glob(mut self, g: &'static str) -> Self {
        self.0.push(Part::Glob(g));
        self
    }

    /// Append [`DECIMAL_ID`]: any libvirt domain id, for a guest whose id is
    /// not known (trusted text, not escaped).
    pub fn decimal_id(mut self) -> Self {
        self.0.push(Part::DecimalId);
        self
    }

    /// True when the pattern contains no glob: it matches one path.
    pub fn is_exact(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The literal bytes when the pattern is exact.
    pub fn exact_bytes(&self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        for p in &self.0 {
            match p {
                Part::Lit(b) => v.extend_from_slice(b),
                Part::Glob(_) | Part::DecimalId => return None,
            }
        }
        Some(v)
    }

    /// The rule text, quoted, with every literal part escaped.
    pub fn render(&self) -> String {
        let mut s = String::from("\"");
        for p in &self.0 {
            match p {
                Part::Lit(b) => s.push_str(&escape_bytes(b)),
                Part::Glob(g) => s.push_str(g),
                Part::DecimalId => s.push_str(DECIMAL_ID),
            }
        }
        s.push('"');
        s
    }

    /// A printable form for messages and `--explain`.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(b) => s.push_str(&display_bytes(b)),
                Part::Glob(g) => s.push_str(g),
                Part::DecimalId => s.push_str(DECIMAL_ID),
            }
        }
        s
    }
}

impl Pattern {
    /// Read back a rule path as [`Pattern::render`] writes it: quoted, with
    /// `\c` and `\NNN` (octal) escapes, and only aa-virt's own globs (`*`,
    /// `**`, `?`, [`DECIMAL_ID`]). Returns `None` for text `render` cannot
    /// produce.
    pub fn parse_rendered(text: &str) -> Option<Pattern> {
        let inner = text.strip_prefix('"')?.strip_suffix('"')?;
        let b = inner.as_bytes();
        let mut p = Pattern(Vec::new());
        let (mut start, mut i) = (0, 0);
        while i < b.len() {
            match b[i] {
                // Escapes are [`unescape`]'s business; skip the escaped byte.
                b'\\' => i += 2,
                b'[' if inner[i..].starts_with(DECIMAL_ID) => {
                    if start < i {
                        p = p.lit(unescape(&inner[start..i])?);
                    }
                    p = p.decimal_id();
                    i += DECIMAL_ID.len();
                    start = i;
                }
                b'*' | b'?' => {
                    if start < i {
                        p = p.lit(unescape(&inner[start..i])?);
                    }
                    let g = match (b[i], b.get(i + 1)) {
                        (b'*', Some(b'*')) => "**",
                        (b'*', _) => "*",
                        _ => "?",
                    };
                    p = p.glob(g);
                    i += g.len();
                    start = i;
                }
                _ => i += 1,
            }
        }
        if start < b.len() {
            p = p.lit(unescape(&inner[start..])?);
        }
        Some(p)
    }

    /// Does the pattern match `path`, with AppArmor's meaning of the globs
    /// (`*`: any run without `/`, `**`: any run, `?`: one byte but `/`,
    /// [`DECIMAL_ID`]: 1 to 10 digits, the first not `0`)?
    pub fn matches(&self, path: &[u8]) -> bool {
        // Flatten to tokens: a byte, or a glob.
        enum T<'a> {
            B(u8),
            G(&'a str),
            Id,
        }
        let mut toks = Vec::new();
        for part in &self.0 {
            match part {
                Part::Lit(b) => toks.extend(b.iter().map(|&c| T::B(c))),
                Part::DecimalId => toks.push(T::Id),
                Part::Glob(g) => {
                    // Multi-token globs such as `**/*`.
                    let mut rest = *g;
                    while !rest.is_empty() {
                        if let Some(r) = rest.strip_prefix("**") {
                            toks.push(T::G("**"));
                            rest = r;
                        } else if let Some(r) = rest.strip_prefix('*') {
                            toks.push(T::G("*"));
                            rest = r;
                        } else if let Some(r) = rest.strip_prefix('?') {
                            toks.push(T::G("?"));
                            rest = r;
                        } else {
                            toks.push(T::B(rest.as_bytes()[0]));
                            rest = &rest[1..];
                        }
                    }
                }
            }
        }
        // Dynamic programming over (token, byte) positions.
        let n = path.len();
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        for (i, t) in toks.iter().enumerate() {
            // A `*` or `**` that is a whole path component (`/*/`, `/**` at
            // the end) starts with at least one byte that is not `/`:
            // `DIR/*` and `DIR/**` do not match `DIR/` itself (as in
            // apparmor_parser's DFA; `tests/policy/escaping.rs` compares the two).
            let whole = i > 0
                && matches!(toks[i - 1], T::B(b'/'))
                && matches!(toks.get(i + 1), None | Some(T::B(b'/')));
            let mut next = vec![false; n + 1];
            for j in 0..=n {
                match t {
                    T::B(c) => {
                        if j > 0 && cur[j - 1] && path[j - 1] == *c {
                            next[j] = true;
                        }
                    }
                    T::G("?") => {
                        if j > 0 && cur[j - 1] && path[j - 1] != b'/' {
                            next[j] = true;
                        }
                    }
                    T::Id => {
                        // The id ends at j: digits path[j-k..j], k in 1..=10,
                        // the first not `0`.
                        next[j] = (1..=DECIMAL_ID_MAX_DIGITS.min(j)).any(|k| {
                            let d = &path[j - k..j];
                            cur[j - k] && d[0] != b'0' && d.iter().all(u8::is_ascii_digit)
                        });
                    }
                    T::G(g) => {
                        let any = *g == "**";
                        let step = j > 0
                            && (next[j - 1] || (whole && cur[j - 1] && path[j - 1] != b'/'))
                            && (any || path[j - 1] != b'/');
                        next[j] = (cur[j] && !whole) || step;
                    }
                }
            }
            cur = next;
        }
        cur[n]
    }
}

/// Display escaping: how a path or name is shown in messages, JSON and
/// tables (never in rules; rule text is [`escape_bytes`]). Lossless, so
/// two different paths never display the same.
/// Lossless display of a path for messages: valid UTF-8 is shown as is,
/// other bytes as `\xNN`, control characters escaped.
pub fn display_path(p: &Path) -> String {
    display_bytes(p.as_os_str().as_bytes())
}

/// Lossless, printable rendering of raw bytes for messages.
pub fn display_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_field_escapes() {
        assert_eq!(unescape_mount_field(r"/srv/a\040b"), b"/srv/a b");
        assert_eq!(unescape_mount_field(r"/x\09"), b"/x\\09");
        assert_eq!(unescape_mount_field(r"/x\134y\011"), b"/x\\y\t");
        // Not a byte: left as written, never wrapped around.
        assert_eq!(unescape_mount_field(r"/x\777"), b"/x\\777");
        assert_eq!(unescape_mount_field(r"/x\04"), b"/x\\04");
    }

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(
            escape_bytes(b"/var/lib/libvirt/images/vm-1_a.b+c.qcow2"),
            "/var/lib/libvirt/images/vm-1_a.b+c.qcow2"
        );
    }

    #[test]
    fn specials_are_escaped() {
        assert_eq!(
            escape_bytes(br#"/a*b?c[d]e{f,g}h^i\j"k"#),
            r#"/a\*b\?c\[d\]e\{f\,g\}h\^i\134j\042k"#
        );
        assert_eq!(escape_bytes(b"/h@{HOME}"), r"/h@\{HOME\}");
    }

    #[test]
    fn non_utf8_bytes_are_octal() {
        assert_eq!(escape_bytes(b"/tmp/\xff\xfe"), r"/tmp/\377\376");
        assert_eq!(escape_bytes("/tmp/é".as_bytes()), "/tmp/é");
    }

    #[test]
    fn checks() {
        assert_eq!(check_path(b""), Err(PathError::Empty));
        assert!(matches!(check_path(b"rel/x"), Err(PathError::Relative(_))));
        assert!(matches!(
            check_path(b"/a\nb"),
            Err(PathError::Control { byte: b'\n', .. })
        ));
        assert!(matches!(
            check_path(b"/a\x7f"),
            Err(PathError::Control { byte: 0x7f, .. })
        ));
        assert!(check_path(&[b'/'; 5000]).is_err());
        assert!(check_path(b"/ok path/ x ").is_ok());
    }

    #[test]
    fn unescape_inverts_escape() {
        assert_eq!(
            unescape(r#"/a\*b\?c\[d\]e\{f\,g\}h\^i\\j\"k"#).unwrap(),
            br#"/a*b?c[d]e{f,g}h^i\j"k"#
        );
        assert_eq!(unescape(r"/tmp/\377\376").unwrap(), b"/tmp/\xff\xfe");
        assert_eq!(unescape("/tmp/é").unwrap(), "/tmp/é".as_bytes());
        // Not one exact path: globs, alternations, stray quotes, odd escapes.
        for t in [
            "/a/*", "/a/**", "/{a,b}", "/a?", "/[ab]", "/a\"", "/a\\", "/a\\q", "/a\\4", "/a\\38x",
        ] {
            assert_eq!(unescape(t), None, "{t}");
        }
    }

    #[test]
    fn unescape_round_trips_random_bytes() {
        // xorshift: deterministic, no extra dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet: Vec<u8> = SPECIAL.iter().copied().chain(*b"/a.-\x01\x7f@ ").collect();
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 {
                        (r >> 8) as u8 // any byte, including invalid UTF-8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let e = escape_bytes(&b);
            assert_eq!(unescape(&e).as_deref(), Some(b.as_slice()), "{e}");
        }
        // Multi-byte UTF-8 survives too.
        let s = "/srv/Ωmega/日本語 ✓.img";
        assert_eq!(unescape(&escape_bytes(s.as_bytes())).unwrap(), s.as_bytes());
    }

    #[test]
    fn pattern_escapes_only_literals() {
        let p = Pattern::literal(b"/var/log/libvirt/".to_vec())
            .glob("**")
            .lit(b"/vm*.log");
        assert_eq!(p.render(), r#""/var/log/libvirt/**/vm\*.log""#);
        assert!(!p.is_exact());
        assert!(Pattern::literal(b"/x".to_vec()).is_exact());
    }

    #[test]
    fn rendered_patterns_read_back_and_match() {
        for raw in [
            &b"/a*b?c[d]e{f,g}h^i\\j\"k"[..],
            b"/tmp/\xff x",
            "/tmp/é".as_bytes(),
        ] {
            let p = Pattern::literal(raw.to_vec());
            let back = Pattern::parse_rendered(&p.render()).unwrap();
            assert_eq!(back, p);
            assert!(back.matches(raw));
            assert!(!back.matches(b"/other"));
        }
        let g = Pattern::parse_rendered(r#""/var/lib/libvirt/**/vm\*.log""#).unwrap();
        assert!(g.matches(b"/var/lib/libvirt/a/b/vm*.log"));
        assert!(!g.matches(b"/var/lib/libvirt/a/b/vmX.log"));
        let d = Pattern::literal(b"/dev/shm/".to_vec())
            .glob("*")
            .lit("/")
            .glob("**/*");
        assert!(d.matches(b"/dev/shm/x/y/z"));
        assert!(!d.matches(b"/dev/shm/x"));
        let s = Pattern::literal(b"/run/".to_vec()).glob("*").lit(".sock");
        assert!(s.matches(b"/run/a.sock"));
        assert!(!s.matches(b"/run/a/b.sock"));
        assert_eq!(Pattern::parse_rendered("\"/a{b}\""), None);
        assert_eq!(Pattern::parse_rendered("/unquoted"), None);
    }

    #[test]
    fn decimal_id_renders_reads_back_and_matches_only_an_id() {
        let p = Pattern::literal(b"/d/domain-".to_vec())
            .decimal_id()
            .lit("-v*m/")
            .glob("*");
        let text = r#""/d/domain-[1-9]{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}-v\*m/*""#;
        assert_eq!(p.render(), text);
        assert_eq!(
            p.display(),
            "/d/domain-[1-9]{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}-v*m/*"
        );
        assert!(!p.is_exact());
        assert_eq!(p.exact_bytes(), None);
        assert_eq!(Pattern::parse_rendered(text), Some(p.clone()));
        for (path, want) in [
            (&b"/d/domain-5-v*m/monitor"[..], true),
            (b"/d/domain-1234567890-v*m/x", true),
            (b"/d/domain-10-v*m/x", true),
            (b"/d/domain-5-x-v*m/monitor", false),
            (b"/d/domain-12345678901-v*m/x", false),
            (b"/d/domain--v*m/x", false),
            (b"/d/domain--1-v*m/x", false),
            (b"/d/domain-0-v*m/x", false),
            (b"/d/domain-05-v*m/x", false),
            (b"/d/domain-5a-v*m/x", false),
            (b"/d/domain-5/-v*m/x", false),
            (b"/d/domain-5-v*m/a/b", false),
        ] {
            assert_eq!(p.matches(path), want, "{}", display_bytes(path));
        }
        // An id pattern alone, at the end of the path.
        let end = Pattern::literal(b"/i/".to_vec()).decimal_id();
        assert!(end.matches(b"/i/7"));
        assert!(!end.matches(b"/i/"));
        assert!(!end.matches(b"/i/7/"));
        // Near misses of the text are not read back as an id.
        for t in [
            "\"/i/[1-9]{,[0-9]}\"",
            "\"/i/[0-9]\"",
            "\"/i/[1-9]{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]}{,[0-9]\"",
        ] {
            assert_eq!(Pattern::parse_rendered(t), None, "{t}");
        }
    }

    #[test]
    fn display_path_is_lossless_and_printable() {
        use std::os::unix::ffi::OsStringExt;
        let p = std::path::PathBuf::from(std::ffi::OsString::from_vec(b"/tmp/a\nb\xff".to_vec()));
        assert_eq!(display_path(&p), "/tmp/a\\nb\\xff");
    }
}
