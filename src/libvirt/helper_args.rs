//! The command line of aa-virt's virt-aa-helper (`aa-virt helper ...`, or
//! aa-virt run as `virt-aa-helper`): getopt-style parsing into [`Args`],
//! and the usage text. What the helper does with them is in
//! [`super::helper`].

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A command line the helper cannot use; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What the helper was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperMode {
    /// `-a`: load an existing profile.
    Add,
    /// `-c`: create the profile, write its rules, load it.
    Create,
    /// `-r`: rewrite the rules and replace the loaded profile.
    Replace,
    /// `-R`: unload the profile.
    Remove,
    /// `-D`: unload the profile and delete its generated rules.
    Delete,
}

/// A file libvirt asks to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    /// `-f FILE`: regenerate from the XML, plus this file.
    Add(PathBuf),
    /// `-F FILE`: append this file to the existing rules.
    Append(PathBuf),
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// The mode; the last one given wins, as with the reference.
    pub mode: Option<HelperMode>,
    /// `-d`/`--dryrun`: print, write nothing, load nothing.
    pub dryrun: bool,
    /// `-u`: the profile name, `libvirt-<uuid>`.
    pub uuid: Option<String>,
    /// `-f`/`-F`: the last one given.
    pub extra: Option<Extra>,
    /// `-h`/`--help`.
    pub help: bool,
}

/// The usage text.
pub fn usage(prog: &str) -> String {
    format!(
        "\
Usage: {prog} MODE [OPTIONS] [< domain.xml]

aa-virt's implementation of libvirt's virt-aa-helper command line: libvirt's
AppArmor driver runs it with the domain XML on standard input.

Modes:
  -a, --add              load the guest's existing profile
  -c, --create           create the profile, write its rules, load it
  -r, --replace          rewrite the rules from the XML, replace the profile
  -R, --remove           unload the profile
  -D, --delete           unload the profile and delete its generated rules
Options:
  -u, --uuid NAME        the profile, libvirt-<uuid> (must match the XML)
  -d, --dryrun           print the rules; write and load nothing
  -f, --add-file FILE    with -r: regenerate from the XML, plus FILE (rwk)
  -F, --append-file FILE with -r: add FILE (rwk) to the current rules; a file
                         already granted changes nothing. DIR/{{,**}} grants
                         the directory tree.
  -h, --help             this help

Exit status: 0 on success, 1 on any error.
"
    )
}

/// Parse the helper's command line (without the program name), getopt
/// style: clustered short options, `-uVALUE`, `--uuid=VALUE`, `--`.
pub fn parse_args<I: IntoIterator<Item = OsString>>(argv: I) -> Result<Args, UsageError> {
    let mut a = Args::default();
    let mut it = argv.into_iter();
    let usage = |m: String| Err(UsageError(m));
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            if let Some(extra) = it.next() {
                return usage(format!("unexpected argument {:?}", extra));
            }
            break;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&b| b == b'=') {
                Some(i) => (
                    &long[..i],
                    Some(OsString::from(std::ffi::OsStr::from_bytes(&long[i + 1..]))),
                ),
                None => (long, None),
            };
            let name = String::from_utf8_lossy(name).into_owned();
            let takes = matches!(name.as_str(), "uuid" | "add-file" | "append-file");
            let value = if takes {
                match inline.or_else(|| it.next()) {
                    Some(v) => Some(v),
                    None => return usage(format!("option --{name} requires an argument")),
                }
            } else if inline.is_some() {
                return usage(format!("option --{name} takes no argument"));
            } else {
                None
            };
            match name.as_str() {
                "add" => a.mode = Some(HelperMode::Add),
                "create" => a.mode = Some(HelperMode::Create),
                "replace" => a.mode = Some(HelperMode::Replace),
                "remove" => a.mode = Some(HelperMode::Remove),
                "delete" => a.mode = Some(HelperMode::Delete),
                "dryrun" => a.dryrun = true,
                "help" => a.help = true,
                "uuid" => a.uuid = value.map(|v| v.to_string_lossy().into_owned()),
                "add-file" => a.extra = value.map(|v| Extra::Add(v.into())),
                "append-file" => a.extra = value.map(|v| Extra::Append(v.into())),
                _ => return usage(format!("unknown option --{name}")),
            }
            continue;
        }
        let Some(cluster) = bytes.strip_prefix(b"-").filter(|c| !c.is_empty()) else {
            return usage(format!("unexpected argument {:?}", arg));
        };
        let mut i = 0;
        while i < cluster.len() {
            let c = cluster[i] as char;
            i += 1;
            if matches!(c, 'u' | 'f' | 'F' | 'p' | 'H' | 'b') {
                let value: OsString = if i < cluster.len() {
                    std::ffi::OsStr::from_bytes(&cluster[i..]).to_os_string()
                } else {
                    match it.next() {
                        Some(v) => v,
                        None => return usage(format!("option -{c} requires an argument")),
                    }
                };
                i = cluster.len();
                match c {
                    'u' => a.uuid = Some(value.to_string_lossy().into_owned()),
                    'f' => a.extra = Some(Extra::Add(value.into())),
                    'F' => a.extra = Some(Extra::Append(value.into())),
                    _ => return usage(format!("option -{c} is no longer supported")),
                }
                continue;
            }
            match c {
                'a' => a.mode = Some(HelperMode::Add),
                'c' => a.mode = Some(HelperMode::Create),
                'r' => a.mode = Some(HelperMode::Replace),
                'R' => a.mode = Some(HelperMode::Remove),
                'D' => a.mode = Some(HelperMode::Delete),
                'd' => a.dryrun = true,
                'h' => a.help = true,
                _ => return usage(format!("unknown option -{}", c.escape_default())),
            }
        }
    }
    Ok(a)
}
