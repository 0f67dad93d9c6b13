//! The property every fuzz target checks, shared by `fuzz/` (included by
//! path) and by `tests/policy/fuzz_corpus.rs`, which replays the committed corpus
//! and also compiles each result with the real `apparmor_parser` (too slow
//! for the fuzz loop itself).
//!
//! For any input: either a clear error (non-empty, one line, naming the
//! guest when one is known), or a rendered profile whose every rule line is
//! one exact path or one of aa-virt's fixed glob shapes
//! ([`super::rulecheck`]), with the guest-supplied part of each rule read
//! back literally.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aa_virt::guest::{Access, Guest, GuestKind, Resource};
use aa_virt::libvirt::profile::{self, Rendered};
use aa_virt::libvirt::{self as lv, ReadOptions};
use aa_virt::policy::Templates;

use super::rulecheck::{check_files_text, literal_bytes};

/// What one input produced.
pub enum Outcome {
    /// Refused with this message.
    Refused(String),
    /// Rendered.
    Rendered(Box<(Guest, Rendered)>),
}

/// A clear error: something to read, on one line.
pub fn assert_clear_error(msg: &str) {
    assert!(!msg.trim().is_empty(), "empty error message");
    assert!(
        !msg.contains('\n'),
        "error message spans lines (could inject log lines): {msg:?}"
    );
}

/// Check a rendered profile's rule text against its rules.
pub fn assert_rendered_ok(g: &Guest, r: &Rendered, t: &Templates) {
    let lines = check_files_text(&r.files)
        .unwrap_or_else(|e| panic!("guest {:?}: rule text: {e}\n{}", g.name, r.files));
    assert_eq!(
        lines.len(),
        r.rules.len(),
        "one line per rule:\n{}",
        r.files
    );
    for (line, rule) in lines.iter().zip(r.rules.rules()) {
        match rule.pattern.exact_bytes() {
            Some(want) => {
                assert_eq!(line.shape, "one path", "{}", rule.render());
                assert_eq!(
                    literal_bytes(&line.inner).as_deref(),
                    Some(want.as_slice()),
                    "rule text does not read back as its path: {}",
                    rule.render()
                );
            }
            None => assert_ne!(line.shape, "one path", "{}", rule.render()),
        }
    }
    // The profile file: the guest's name appears only in comments, so its
    // rule lines equal those of the same guest under a plain name.
    let mut plain = g.clone();
    plain.name = "plain-name".into();
    plain.resources.clear();
    plain.run_paths.clear();
    if let Ok(p) = t.libvirt_profile(&plain, &r.name, false) {
        let rules = |s: &str| -> Vec<String> {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && (!l.starts_with('#') || l.starts_with("#include")))
                .map(String::from)
                .collect()
        };
        assert_eq!(
            rules(&r.profile),
            rules(&p),
            "the guest's name changed the profile's rules"
        );
    }
}

/// Domain XML → guest → profile.
pub fn domain_xml(data: &[u8], templates: &Templates, sysfs: &Path) -> Outcome {
    let Ok(xml) = std::str::from_utf8(data) else {
        return Outcome::Refused("not UTF-8".into());
    };
    let opts = ReadOptions {
        probe_chains: false,
        sysfs_root: sysfs.to_path_buf(),
    };
    let g = match lv::parse(xml, &opts) {
        Ok(g) => g,
        Err(e) => {
            let m = e.to_string();
            assert_clear_error(&m);
            return Outcome::Refused(m);
        }
    };
    render(g, templates)
}

fn render(g: Guest, templates: &Templates) -> Outcome {
    match profile::render(&g, templates, false) {
        Ok(r) => {
            assert_rendered_ok(&g, &r, templates);
            Outcome::Rendered(Box::new((g, r)))
        }
        Err(e) => {
            let m = e.to_string();
            assert_clear_error(&m);
            Outcome::Refused(m)
        }
    }
}

/// Raw bytes → a guest with hostile name and paths → profile.
///
/// Layout: fields separated by `\0`. Field 0 is the guest name (lossy
/// UTF-8); each further field is one resource: its first byte picks the
/// access and scope, the rest is the path (relative paths are put under
/// `base` half of the time, so that both real resolution and refusal paths
/// are exercised).
pub fn rules(data: &[u8], templates: &Templates, base: &Path) -> Outcome {
    let mut fields = data.split(|&b| b == 0);
    let name = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let mut g = Guest::new(GuestKind::Qemu, name);
    g.uuid = Some(uuid::Uuid::from_u128(0x0a0a_0a0a));
    g.id = data.first().map(|&b| i64::from(b) - 2).filter(|&i| i >= 0);
    for (i, f) in fields.take(16).enumerate() {
        let Some((&sel, path)) = f.split_first() else {
            continue;
        };
        let access = [
            Access::R,
            Access::RK,
            Access::RW,
            Access::RWK,
            Access::RWL,
            Access::MR,
            Access::W,
        ][usize::from(sel % 7)];
        let path: PathBuf = if path.first() == Some(&b'/') || sel & 0x80 != 0 {
            PathBuf::from(OsStr::from_bytes(path))
        } else {
            base.join(OsStr::from_bytes(path))
        };
        let origin = format!("disk vd{}", (b'a' + i as u8) as char);
        g.add(if sel & 0x40 != 0 {
            Resource::tree(path, access, origin)
        } else {
            Resource::file(path, access, origin)
        });
    }
    render(g, templates)
}

/// The scratch tree the `rules` target resolves relative paths in: plain
/// files with glob characters in their names, links into restricted
/// places, a link loop and a link to a firmware file.
pub fn scratch_tree(base: &Path) {
    use std::os::unix::fs::symlink;
    let _ = std::fs::create_dir_all(base.join("img"));
    let _ = std::fs::write(base.join("img/vm[1]*.img"), b"");
    let _ = std::fs::write(base.join("img/a{b,c}"), b"");
    let _ = symlink("/etc/shadow", base.join("shadow"));
    let _ = symlink("/etc", base.join("etc"));
    let _ = symlink("img", base.join("l"));
    let _ = symlink("loop2", base.join("loop1"));
    let _ = symlink("loop1", base.join("loop2"));
    let _ = symlink("/usr/share/OVMF/OVMF_CODE.fd", base.join("fw"));
    let _ = symlink("/proc/self/root", base.join("root"));
}

/// Image header bytes → header or error. The first byte picks the declared
/// format; the rest is the file's beginning. The reader must never panic,
/// and a backing name it returns is one it really found in the input.
pub fn image_header(data: &[u8]) -> Result<aa_virt::libvirt::image::Header, String> {
    use aa_virt::libvirt::image::{parse_header, ImageFormat};
    let Some((&sel, rest)) = data.split_first() else {
        return Err("empty".into());
    };
    let fmt = [
        ImageFormat::Qcow2,
        ImageFormat::Qcow,
        ImageFormat::Qed,
        ImageFormat::Vmdk,
    ][usize::from(sel % 4)];
    parse_header(fmt, rest).map_err(|e| {
        let m = e.to_string();
        assert_clear_error(&m);
        m
    })
}

/// LXC config text → container profile. The first line is the container's
/// name, the rest its config (includes resolve against the real file
/// system). Every bind rule must be one exact path or a directory tree, and
/// appear in the profile text verbatim; the profile declares itself under
/// the name aa-virt derived, once.
pub fn lxc_config(
    data: &[u8],
    templates: &Templates,
    lxcpath: &Path,
) -> Result<Vec<aa_virt::lxc::Rendered>, String> {
    use aa_virt::apparmor::features::ContainerMode;
    use aa_virt::lxc::{self, profile::RenderOptions, Container};
    let text = String::from_utf8_lossy(data);
    let (name, body) = text.split_once('\n').unwrap_or((&text, ""));
    let clear = |m: String| {
        assert_clear_error(&m);
        m
    };
    lxc::check_container_name(name).map_err(|e| clear(e.to_string()))?;
    let config = lxcpath.join(name).join("config");
    let entries = lxc::config::entries_of(body, &config).map_err(|e| clear(e.to_string()))?;
    let ct = Container {
        name: name.to_string(),
        lxcpath: lxcpath.to_path_buf(),
        config,
        entries,
    };
    let mut out = Vec::new();
    for mode in [ContainerMode::Stacked, ContainerMode::Plain] {
        let r = lxc::profile::render(&ct, mode, templates, RenderOptions::default())
            .map_err(|e| clear(e.to_string()))?;
        for rule in r.rules.rules() {
            let line = rule.render();
            let parsed = super::rulecheck::parse_rule_line(&line)
                .unwrap_or_else(|e| panic!("container {name:?}: bind rule {line}: {e}"));
            assert!(
                parsed.shape == "one path" || parsed.shape == "directory tree",
                "container {name:?}: bind rule {line} has shape {}",
                parsed.shape
            );
            assert!(
                r.text.contains(&line),
                "bind rule missing from the text: {line}"
            );
        }
        let decl = format!("profile \"{}\" flags=(", r.names.profile);
        let decls = r.text.lines().filter(|l| l.starts_with(&decl)).count();
        let raw = lxc::config::all(&ct.entries, "lxc.apparmor.raw").count();
        if raw == 0 {
            let any = r
                .text
                .lines()
                .filter(|l| l.trim_start().starts_with("profile "))
                .count();
            assert_eq!((decls, any), (1, 1), "profile declarations in:\n{}", r.text);
        }
        out.push(r);
    }
    Ok(out)
}
