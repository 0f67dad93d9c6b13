//! A container as aa-virt sees it (from its LXC config), and its profile:
//! rendered from `templates/lxc/container.hbs`, checked with the real
//! parser.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::apparmor::{ContainerMode, Parser};
use crate::guest::{path_from_bytes, Access, Guest, GuestKind, Resource, Scope};
use crate::policy::abi::{self, HostSupport, ProfileKind};
use crate::policy::escape::{display_bytes, display_path, unescape_mount_field};
use crate::policy::template::RuleLine;
use crate::policy::{RuleSet, Templates};

use super::config::{self, ConfigError, Entry};
use super::naming::Names;
use super::LxcError;

/// The template, relative to the templates directory.
pub const TEMPLATE: &str = "lxc/container.hbs";

/// A container: its name, where it lives and its effective configuration.
#[derive(Debug, Clone)]
pub struct Container {
    /// The container's name.
    pub name: String,
    /// Its lxcpath, canonical.
    pub lxcpath: PathBuf,
    /// Its config file (`<lxcpath>/<name>/config`).
    pub config: PathBuf,
    /// Every assignment, includes followed.
    pub entries: Vec<Entry>,
}

impl Container {
    /// The container `name` in `lxcpath`; its config must exist.
    pub fn open(name: &str, lxcpath: &Path) -> Result<Container, LxcError> {
        super::check_container_name(name)?;
        let lxcpath = lxcpath
            .canonicalize()
            .map_err(|source| LxcError::NoLxcpath {
                path: lxcpath.to_path_buf(),
                source,
            })?;
        let config = lxcpath.join(name).join("config");
        if !config.is_file() {
            return Err(LxcError::NoContainer {
                name: name.to_string(),
                config,
            });
        }
        let entries = config::read_entries(&config)?;
        Ok(Container {
            name: name.to_string(),
            lxcpath,
            config,
            entries,
        })
    }

    /// The container a hook runs for: `LXC_CONFIG_FILE` is
    /// `<lxcpath>/<name>/config`.
    pub fn from_config_file(name: &str, config: &Path) -> Result<Container, LxcError> {
        let lxcpath =
            config
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| LxcError::NoContainer {
                    name: name.to_string(),
                    config: config.to_path_buf(),
                })?;
        Container::open(name, lxcpath)
    }

    /// Re-read the entries from `text` (the config as it will be written).
    pub fn with_text(&self, text: &str) -> Result<Container, LxcError> {
        Ok(Container {
            entries: config::entries_of(text, &self.config)?,
            ..self.clone()
        })
    }

    /// The container's AppArmor names.
    pub fn names(&self) -> Names {
        Names::derive(&self.name, &self.lxcpath)
    }

    /// The effective `lxc.apparmor.profile`.
    pub fn label(&self) -> Option<&Entry> {
        config::last(&self.entries, "lxc.apparmor.profile")
    }

    /// The mode of the aa-virt label its config carries; `None` when the
    /// config names no aa-virt label (aa-virt does not manage it).
    pub fn managed_mode(&self) -> Option<ContainerMode> {
        self.label().and_then(|e| self.names().mode_of(&e.value))
    }

    /// `lxc.apparmor.allow_nesting = 1` in effect.
    pub fn nesting(&self) -> bool {
        config::last(&self.entries, "lxc.apparmor.allow_nesting").is_some_and(|e| e.value == "1")
    }

    /// No `lxc.idmap`: container root is host root.
    pub fn privileged(&self) -> bool {
        config::all(&self.entries, "lxc.idmap").next().is_none()
    }

    /// The `lxc.apparmor.raw` lines, checked to be one printable line each.
    pub fn raw(&self) -> Result<Vec<String>, LxcError> {
        config::all(&self.entries, "lxc.apparmor.raw")
            .map(|e| {
                check_raw(&e.value).map_err(|why| LxcError::BadRaw {
                    container: self.name.clone(),
                    at: e.at(),
                    why,
                })?;
                Ok(e.value.clone())
            })
            .collect()
    }

    /// The container as a [`Guest`]: every bind mount's host source
    /// (`lxc.mount.entry` lines and the lines of `lxc.mount.fstab` files,
    /// with `bind`/`rbind`) as a resource, read-only when the entry says
    /// `ro`. A relative `lxc.mount.fstab` path is taken relative to the
    /// config file's directory; one that cannot be read is an error of the
    /// render (LXC would refuse to start too), not a silent skip.
    pub fn guest(&self) -> Result<Guest, LxcError> {
        let mut g = Guest::new(GuestKind::Lxc, self.name.clone());
        g.driver = "lxc".into();
        for e in &self.entries {
            match e.key.as_str() {
                "lxc.mount.entry" => {
                    add_bind(&mut g, &e.value, &format!("lxc.mount.entry at {}", e.at()));
                }
                "lxc.mount.fstab" => {
                    let dir = e.file.parent().unwrap_or(Path::new("/"));
                    let file = dir.join(&e.value);
                    if !file.is_file() {
                        // Not opened: a FIFO would block the reader.
                        return Err(ConfigError::NotText(file).into());
                    }
                    let text = config::read_text(&file)?;
                    for (i, line) in text.lines().enumerate() {
                        let t = line.trim();
                        if t.is_empty() || t.starts_with('#') {
                            continue;
                        }
                        let origin = format!(
                            "lxc.mount.fstab {} (from {}) line {}",
                            display_path(&file),
                            e.at(),
                            i + 1
                        );
                        add_bind(&mut g, t, &origin);
                    }
                }
                _ => {}
            }
        }
        Ok(g)
    }
}

/// Add the host source of one fstab-format mount line (`SRC DST TYPE OPTS`)
/// to `g` when it is a bind mount.
fn add_bind(g: &mut Guest, line: &str, at: &str) {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 4 {
        g.skip(at.to_string(), "fewer than 4 fields");
        return;
    }
    let opts: Vec<&str> = f[3].split(',').collect();
    if !opts.iter().any(|o| *o == "bind" || *o == "rbind") {
        return;
    }
    let src = path_from_bytes(unescape_mount_field(f[0]));
    let origin = format!(
        "{at} ({} -> {})",
        display_path(&src),
        display_bytes(&unescape_mount_field(f[1]))
    );
    if opts.contains(&"optional") && !src.exists() {
        g.skip(origin, "optional and absent");
        return;
    }
    let access = if opts.contains(&"ro") {
        Access::R
    } else {
        Access::RWL.union(Access::RK)
    };
    let scope = if src.is_file() {
        Scope::File
    } else {
        Scope::Tree
    };
    g.add(Resource {
        path: src,
        access,
        scope,
        origin,
    });
}

/// A raw rule must be one line of printable text.
fn check_raw(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("contains control character {c:?}"));
    }
    Ok(())
}

/// Read raw rules from a file for `lxc enable --raw`: every line that is
/// not blank and not a comment (`#include` lines are kept; they are
/// directives).
pub fn read_raw_file(path: &Path) -> Result<Vec<String>, LxcError> {
    let text = config::read_text(path)?;
    let mut v = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || (t.starts_with('#') && !t.starts_with("#include")) {
            continue;
        }
        check_raw(t).map_err(|why| LxcError::BadRaw {
            container: String::new(),
            at: format!("{}:{}", path.display(), i + 1),
            why,
        })?;
        v.push(t.to_string());
    }
    Ok(v)
}

/// Rules for a guest's bind sources, every one vetted against the
/// restricted host locations, read-only ones too (a read-only `/etc` hands
/// a container the host's secrets); read-only binds of world-readable
/// system software and securityfs are the exception. The decision is
/// policy's ([`crate::policy::rules::Vetting`]).
pub use crate::policy::rules::bind_rules;

/// What the template needs to know beyond the container.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// What the host supports: the policy ABI and the AppArmor 4 rules
    /// (the profile's choice is [`crate::policy::abi::choose`]'s).
    pub host: HostSupport,
    /// The parser accepts the `nosymfollow` mount option.
    pub nosymfollow: bool,
    /// Render in complain mode.
    pub complain: bool,
}

/// A rendered container profile.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The names.
    pub names: Names,
    /// Stacked or plain.
    pub mode: ContainerMode,
    /// The profile text.
    pub text: String,
    /// The bind-source rules, with their origins.
    pub rules: RuleSet,
}

#[derive(Serialize)]
struct Ctx {
    name: String,
    lxcpath: String,
    profile: String,
    namespace: String,
    abi: &'static str,
    stacked: bool,
    nesting: bool,
    privileged: bool,
    userns: bool,
    complain: bool,
    remount_options: Vec<String>,
    binds: Vec<RuleLine>,
    allowances: Vec<RuleLine>,
    raw: Vec<String>,
}

/// Option sets for read-only bind remounts: `ro,remount,bind` with any
/// subset of `nodev,nosuid,noexec` (and `nosymfollow` when the parser has
/// it) and one of no atime flag, `noatime`, `strictatime`.
pub fn remount_options(nosymfollow: bool) -> Vec<String> {
    let mut flags = vec!["nodev", "nosuid", "noexec"];
    if nosymfollow {
        flags.push("nosymfollow");
    }
    let mut v = Vec::new();
    for mask in 0..(1u32 << flags.len()) {
        for atime in ["", "noatime", "strictatime"] {
            let mut o = vec!["ro", "remount", "bind"];
            o.extend(
                flags
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, f)| *f),
            );
            if !atime.is_empty() {
                o.push(atime);
            }
            v.push(o.join(", "));
        }
    }
    v
}

/// Render a container's profile with its stored allowances
/// (`aa-virt allow`, in `allow_dir`): what the hooks load.
pub fn render_stored(
    ct: &Container,
    mode: ContainerMode,
    templates: &Templates,
    opts: RenderOptions,
    allow_dir: &Path,
) -> Result<Rendered, LxcError> {
    let allowances = crate::policy::allow::rules(allow_dir, &ct.names().profile, &ct.name)?;
    render_with(ct, mode, templates, opts, &allowances)
}

/// Renders running containers' profiles again as a root load would store
/// them now (their config, aa-virt's template, their allowances): `list`
/// compares the result with the stored file, `reload` loads it. The
/// templates and the parser's probes are made once, at first use.
pub struct Rerender<'a> {
    templates_dir: Option<&'a Path>,
    parser: &'a Parser,
    made: Option<(Templates, RenderOptions)>,
}

impl<'a> Rerender<'a> {
    /// Render with the templates of `templates_dir` (`None`: the built-in
    /// ones) and what `parser` supports.
    pub fn new(templates_dir: Option<&'a Path>, parser: &'a Parser) -> Rerender<'a> {
        Rerender {
            templates_dir,
            parser,
            made: None,
        }
    }

    /// Load the templates and probe the parser, unless done already.
    pub fn prepare(&mut self) -> Result<(), LxcError> {
        if self.made.is_none() {
            let templates = Templates::load(self.templates_dir)?;
            self.made = Some((templates, super::probe_options(self.parser)));
        }
        Ok(())
    }

    /// Container `ct`'s profile, in the mode its label names, with the
    /// allowances stored in `allow_dir`; `None` when aa-virt does not
    /// manage it.
    pub fn render(&mut self, ct: &Container, allow_dir: &Path) -> Result<Option<String>, LxcError> {
        let Some(mode) = ct.managed_mode() else {
            return Ok(None);
        };
        self.prepare()?;
        let (templates, opts) = self.made.as_ref().expect("prepared above");
        render_stored(ct, mode, templates, *opts, allow_dir).map(|r| Some(r.text))
    }
}

/// Render a container's profile from its configuration alone (no stored
/// allowances).
pub fn render(
    ct: &Container,
    mode: ContainerMode,
    templates: &Templates,
    opts: RenderOptions,
) -> Result<Rendered, LxcError> {
    render_with(ct, mode, templates, opts, &RuleSet::default())
}

/// Render a container's profile with these allowance rules.
fn render_with(
    ct: &Container,
    mode: ContainerMode,
    templates: &Templates,
    opts: RenderOptions,
    allowances: &RuleSet,
) -> Result<Rendered, LxcError> {
    let names = ct.names();
    let guest = ct.guest()?;
    let rules = bind_rules(&guest)?;
    let policy = abi::choose(ProfileKind::LxcContainer, opts.host);
    let ctx = Ctx {
        name: display_bytes(ct.name.as_bytes()),
        lxcpath: display_path(&ct.lxcpath),
        profile: names.profile.clone(),
        namespace: names.namespace.clone(),
        abi: policy.abi.version(),
        stacked: mode == ContainerMode::Stacked,
        nesting: ct.nesting(),
        privileged: ct.privileged(),
        userns: policy.userns,
        complain: opts.complain,
        remount_options: remount_options(opts.nosymfollow),
        binds: RuleLine::all(&rules),
        allowances: RuleLine::all(allowances),
        raw: ct.raw()?,
    };
    let text = templates.render_with(TEMPLATE, &ctx)?;
    Ok(Rendered {
        names,
        mode,
        text,
        rules,
    })
}

impl Rendered {
    /// Compile the profile with the real parser without loading it.
    pub fn check(&self, container: &str, parser: &Parser) -> Result<(), LxcError> {
        let dir = crate::store::tempdir().map_err(|source| LxcError::Io {
            op: "create scratch directory",
            path: std::env::temp_dir(),
            source,
        })?;
        let file = dir.join(self.names.file_name());
        let res = std::fs::write(&file, &self.text)
            .map_err(|source| LxcError::Io {
                op: "write",
                path: file.clone(),
                source,
            })
            .and_then(|()| {
                parser.check(&file).map_err(|source| LxcError::Parser {
                    container: container.to_string(),
                    source,
                })
            });
        let _ = std::fs::remove_dir_all(&dir);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remount_sets() {
        let v = remount_options(false);
        assert_eq!(v.len(), 24);
        assert_eq!(v[0], "ro, remount, bind");
        assert!(v.contains(&"ro, remount, bind, nodev, nosuid, noexec, strictatime".to_string()));
        assert_eq!(remount_options(true).len(), 48);
    }

    fn container(dir: &Path, text: &str) -> Container {
        let config = dir.join("c1").join("config");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, text).unwrap();
        Container::open("c1", dir).unwrap()
    }

    fn binds(ct: &Container) -> Result<RuleSet, LxcError> {
        Ok(bind_rules(&ct.guest()?)?)
    }

    #[test]
    fn read_only_binds_of_restricted_places_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for (line, path) in [
            ("/etc etc none ro,bind 0 0", "/etc"),
            ("/proc/sys x none ro,rbind 0 0", "/proc/sys"),
            ("/var/lib/apparmor x none ro,bind 0 0", "/var/lib/apparmor"),
            ("/ host none ro,rbind 0 0", "/"),
            ("/usr/lib usr/lib none rw,bind 0 0", "/usr/lib"),
        ] {
            let ct = container(d.path(), &format!("lxc.mount.entry = {line}\n"));
            let e = binds(&ct).unwrap_err().to_string();
            assert!(
                e.contains("c1") && e.contains("lxc.mount.entry at") && e.contains(path),
                "{line}: {e}"
            );
        }
        // What LXC's busybox template binds read-only stays allowed.
        let ct = container(
            d.path(),
            "lxc.mount.entry = /usr/lib usr/lib none ro,bind 0 0\nlxc.mount.entry = /sys/kernel/security sys/kernel/security none ro,bind,optional 0 0\n",
        );
        binds(&ct).unwrap();
    }

    #[test]
    fn fstab_sources_are_vetted() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::create_dir_all(d.path().join("c1")).unwrap();
        std::fs::write(
            d.path().join("c1/fstab"),
            format!(
                "# mine\n{} srv none bind 0 0\n/etc/ssh etc/ssh none ro,bind 0 0\n",
                share.display()
            ),
        )
        .unwrap();
        let ct = container(d.path(), "lxc.mount.fstab = fstab\n");
        let e = binds(&ct).unwrap_err().to_string();
        assert!(
            e.contains("c1")
                && e.contains("lxc.mount.fstab")
                && e.contains("line 3")
                && e.contains("/etc/ssh"),
            "{e}"
        );
        std::fs::write(
            d.path().join("c1/fstab"),
            format!("{} srv none bind 0 0\n", share.display()),
        )
        .unwrap();
        let set = binds(&ct).unwrap();
        assert!(
            set.rules().iter().any(|r| r.render().contains("/share/")),
            "{set:?}"
        );
        // An fstab that cannot be read fails, naming it.
        let ct = container(d.path(), "lxc.mount.fstab = /nonexistent-aa-virt-fstab\n");
        let e = binds(&ct).unwrap_err().to_string();
        assert!(e.contains("/nonexistent-aa-virt-fstab"), "{e}");
    }

    #[test]
    fn raw_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("raw");
        std::fs::write(
            &p,
            "# comment\n\n  deny /srv/x rw,\n#include <abstractions/base>\n",
        )
        .unwrap();
        assert_eq!(
            read_raw_file(&p).unwrap(),
            ["deny /srv/x rw,", "#include <abstractions/base>"]
        );
    }
}
