//! From a guest's resources to rules: validation, resolution, restriction
//! checks and merging all happen here, once, for every front end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::os::unix::ffi::OsStrExt;

use crate::guest::{Access, Guest, GuestKind, Resource, RunPath, Scope};

use super::escape::{check_path, display_bytes, display_path, PathError, Pattern};
use super::paths::{read_only_bind_ok, resolve, restriction, ResolveError};

/// Why a guest's rules could not be made. Every variant names the guest, the
/// device and the path.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The path cannot be expressed exactly (relative, control characters...).
    #[error("guest {guest}: {origin}: {source}")]
    BadPath {
        /// Guest name.
        guest: String,
        /// Device.
        origin: String,
        /// What is wrong.
        source: PathError,
    },
    /// The path could not be resolved.
    #[error("guest {guest}: {origin}: {source}")]
    Resolve {
        /// Guest name.
        guest: String,
        /// Device.
        origin: String,
        /// What went wrong.
        source: ResolveError,
    },
    /// The resolved path is a restricted host location.
    #[error("guest {guest}: {origin}: refusing {path}: {reason}")]
    Restricted {
        /// Guest name.
        guest: String,
        /// Device.
        origin: String,
        /// The path as configured (and where it resolves, when different).
        path: String,
        /// Why.
        reason: String,
    },
    /// The guest name cannot be used in a profile.
    #[error("guest name {0:?} cannot be used: {1}")]
    BadName(String, String),
}

/// One rule: a pattern, the access granted and every device that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it matches.
    pub pattern: Pattern,
    /// What it grants.
    pub access: Access,
    /// Which devices need it (for `--explain` and `status`).
    pub origins: Vec<String>,
}

impl Rule {
    /// The rule line, indented, without comment: `  "/path" rwk,`.
    pub fn render(&self) -> String {
        format!("  {} {},", self.pattern.render(), self.access)
    }

    /// The line a generated file carries: the rule, then the devices that
    /// need it (`  "/path" rwk,  # disk vda; disk vdb`). The one place this
    /// format is written; [`super::files`] reads it back.
    pub fn line(&self) -> String {
        format!(
            "{}  # {}",
            self.render(),
            display_bytes(self.origins.join("; ").as_bytes())
        )
    }
}

/// Rules in first-seen order, one per pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: HashMap<Pattern, usize>,
}

impl RuleSet {
    /// Add or merge a rule.
    pub fn push(&mut self, pattern: Pattern, access: Access, origin: &str) {
        if let Some(&i) = self.index.get(&pattern) {
            let r = &mut self.rules[i];
            r.access = r.access.union(access);
            if !r.origins.iter().any(|o| o == origin) {
                r.origins.push(origin.to_string());
            }
            return;
        }
        self.index.insert(pattern.clone(), self.rules.len());
        self.rules.push(Rule {
            pattern,
            access,
            origins: vec![origin.to_string()],
        });
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The access already granted to exactly this path, if any.
    pub fn granted(&self, pattern: &Pattern) -> Option<Access> {
        self.index.get(pattern).map(|&i| self.rules[i].access)
    }
}

/// How far [`vet_as`] checks a resource before it may become a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vetting {
    /// Every check: the path is exact, it resolves, the resolved path is
    /// exact, and it is not a restricted host location. Every libvirt
    /// device, and every writable LXC bind source.
    Full,
    /// A read-only LXC bind source: every check of [`Vetting::Full`], except
    /// that the world-readable system software and securityfs of
    /// [`crate::policy::paths::read_only_bind_ok`] may be bound (LXC's
    /// busybox template binds `/lib` and `/usr/lib` read-only). Anything
    /// else restricted (`/etc`, `/proc`, `/boot`, AppArmor's state) is
    /// refused even read-only.
    ReadOnlyBind,
}

impl Vetting {
    /// How an LXC bind source is vetted: fully when it is writable.
    pub fn for_bind(r: &Resource) -> Vetting {
        if r.access.writes() {
            Vetting::Full
        } else {
            Vetting::ReadOnlyBind
        }
    }
}

/// Check a resource's path, resolve it and check the result against the
/// restricted list. Returns the resolved path.
pub fn vet(guest: &str, r: &Resource) -> Result<PathBuf, RuleError> {
    vet_as(guest, r, Vetting::Full)
}

/// [`vet`], as far as `how` says. Every way aa-virt grants a host path
/// comes through here.
pub fn vet_as(guest: &str, r: &Resource, how: Vetting) -> Result<PathBuf, RuleError> {
    let bytes = r.path.as_os_str().as_bytes();
    check_path(bytes).map_err(|source| RuleError::BadPath {
        guest: guest.into(),
        origin: display_bytes(r.origin.as_bytes()),
        source,
    })?;
    let resolved = resolve(&r.path).map_err(|source| RuleError::Resolve {
        guest: guest.into(),
        origin: display_bytes(r.origin.as_bytes()),
        source,
    })?;
    check_path(resolved.as_os_str().as_bytes()).map_err(|source| RuleError::BadPath {
        guest: guest.into(),
        origin: display_bytes(r.origin.as_bytes()),
        source,
    })?;
    if how == Vetting::ReadOnlyBind && read_only_bind_ok(&resolved) {
        return Ok(resolved);
    }
    if let Some(reason) = restriction(&resolved, r.access.writes(), r.scope == Scope::Tree) {
        let path = if resolved == r.path {
            display_path(&r.path)
        } else {
            format!(
                "{} (resolves to {})",
                display_path(&r.path),
                display_path(&resolved)
            )
        };
        return Err(RuleError::Restricted {
            guest: guest.into(),
            origin: display_bytes(r.origin.as_bytes()),
            path,
            reason,
        });
    }
    Ok(resolved)
}

/// Rules for an LXC container's bind sources, each vetted as
/// [`Vetting::for_bind`] says.
pub fn bind_rules(guest: &Guest) -> Result<RuleSet, RuleError> {
    let mut set = RuleSet::default();
    for r in &guest.resources {
        let resolved = vet_as(&guest.name, r, Vetting::for_bind(r))?;
        push_resource(&mut set, &resolved, r);
    }
    Ok(set)
}

/// Add one vetted resource to a rule set.
pub fn push_resource(set: &mut RuleSet, resolved: &Path, r: &Resource) {
    match r.scope {
        Scope::File => set.push(Pattern::path(resolved), r.access, &r.origin),
        Scope::Tree => {
            let dir = Pattern::path(resolved);
            let dir = if resolved == Path::new("/") {
                dir
            } else {
                dir.lit("/")
            };
            set.push(dir.clone(), Access::R, &r.origin);
            set.push(dir.glob("**"), r.access, &r.origin);
        }
    }
}

/// Add a path named after the domain's id and short name: the directory is
/// vetted like any resource, the name is the literal id when the domain is
/// running and any decimal id ([`Pattern::decimal_id`]) otherwise.
fn push_run_path(set: &mut RuleSet, guest: &Guest, rp: &RunPath) -> Result<(), RuleError> {
    let dir = Resource::file(&rp.dir, rp.access, rp.origin.clone());
    let resolved = vet(&guest.name, &dir)?;
    let p = Pattern::path(&resolved).lit("/").lit(&rp.prefix);
    let p = with_id(p, guest);
    let p = p.lit("-").lit(short_name(&guest.name)).lit(&rp.suffix);
    match rp.scope {
        Scope::File => set.push(p, rp.access, &rp.origin),
        Scope::Tree => {
            set.push(p.clone().lit("/"), Access::R, &rp.origin);
            set.push(p.lit("/").glob("**"), rp.access, &rp.origin);
        }
    }
    Ok(())
}

/// What is wrong with a guest name (a libvirt domain or an LXC container)
/// for use as one path component inside rules, if anything. Names are
/// escaped, not refused, except for what cannot be one path component.
/// The one guest-name check; [`check_name`] and the LXC front end's
/// `check_container_name` wrap it in their errors.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name == "." || name == ".." {
        Some("it is a relative path component")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    }
}

/// Check a guest name for use inside rule paths ([`name_problem`]).
pub fn check_name(name: &str) -> Result<(), RuleError> {
    match name_problem(name) {
        Some(why) => Err(RuleError::BadName(name.into(), why.into())),
        None => Ok(()),
    }
}

/// Derive every rule for a guest: the runtime files its front end always
/// needs, then each resource, vetted.
pub fn derive(guest: &Guest) -> Result<RuleSet, RuleError> {
    check_name(&guest.name)?;
    let mut set = RuleSet::default();
    if guest.kind == GuestKind::Qemu {
        libvirt_runtime(guest, &mut set);
    }
    for r in &guest.resources {
        let resolved = vet(&guest.name, r)?;
        push_resource(&mut set, &resolved, r);
    }
    for rp in &guest.run_paths {
        push_run_path(&mut set, guest, rp)?;
    }
    Ok(set)
}

/// Append the guest's domain id: the number when it is running, otherwise
/// any id libvirt may give it, never a `*` (which would also match the
/// `5-x` of another guest `x-NAME`'s `5-x-NAME`).
fn with_id(p: Pattern, guest: &Guest) -> Pattern {
    match guest.id {
        Some(id) => p.lit(id.to_string()),
        None => p.decimal_id(),
    }
}

/// libvirt's short domain name: the first 20 characters of the name.
pub fn short_name(name: &str) -> &str {
    match name.char_indices().nth(20) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// The files libvirt gives every QEMU domain: its log, monitor socket,
/// per-domain runtime directory, pid file and tunnelled-migration socket.
fn libvirt_runtime(guest: &Guest, set: &mut RuleSet) {
    const ORIGIN: &str = "libvirt runtime files";
    let n = guest.name.as_bytes();
    set.push(
        Pattern::literal(b"/var/log/libvirt/".to_vec())
            .glob("**")
            .lit("/")
            .lit(n)
            .lit(".log"),
        Access::W,
        ORIGIN,
    );
    set.push(
        Pattern::literal(b"/var/lib/libvirt/qemu/domain-".to_vec())
            .lit(n)
            .lit("/monitor.sock"),
        Access::RW,
        ORIGIN,
    );
    let short = short_name(&guest.name).as_bytes();
    let dom = with_id(
        Pattern::literal(b"/var/lib/libvirt/qemu/domain-".to_vec()),
        guest,
    );
    set.push(
        dom.lit("-").lit(short).lit("/").glob("*"),
        Access::RW,
        ORIGIN,
    );
    set.push(
        Pattern::literal(b"/run/libvirt/".to_vec())
            .glob("**")
            .lit("/")
            .lit(n)
            .lit(".pid"),
        Access::RWK,
        ORIGIN,
    );
    set.push(
        Pattern::literal(b"/run/libvirt/".to_vec())
            .glob("**/*")
            .lit(".tunnelmigrate.dest.")
            .lit(n),
        Access::RW,
        ORIGIN,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Guest {
        let mut g = Guest::new(GuestKind::Qemu, "vm[1]*");
        g.id = Some(7);
        g
    }

    #[test]
    fn runtime_rules_escape_the_name() {
        let set = derive(&guest()).unwrap();
        let lines: Vec<String> = set.rules().iter().map(|r| r.render()).collect();
        assert_eq!(lines[0], r#"  "/var/log/libvirt/**/vm\[1\]\*.log" w,"#);
        assert_eq!(
            lines[2],
            r#"  "/var/lib/libvirt/qemu/domain-7-vm\[1\]\*/*" rw,"#
        );
    }

    #[test]
    fn merges_access_and_origins() {
        let mut g = guest();
        g.add(Resource::file("/srv/a.img", Access::RK, "disk vda"));
        g.add(Resource::file("/srv/./a.img", Access::W, "disk vdb"));
        let set = derive(&g).unwrap();
        let r = set.rules().last().unwrap();
        assert_eq!(r.render(), r#"  "/srv/a.img" rwk,"#);
        assert_eq!(r.origins, vec!["disk vda", "disk vdb"]);
    }

    #[test]
    fn restricted_fails_the_whole_render_naming_device() {
        let mut g = guest();
        g.add(Resource::file("/etc/shadow", Access::RWK, "disk vda"));
        let e = derive(&g).unwrap_err().to_string();
        assert!(
            e.contains("vm[1]*") && e.contains("disk vda") && e.contains("/etc/shadow"),
            "{e}"
        );
    }

    #[test]
    fn tree_rules() {
        let mut g = guest();
        g.add(Resource::tree(
            "/srv/share",
            Access::RWL,
            "filesystem /mnt (9p)",
        ));
        let set = derive(&g).unwrap();
        let n = set.len();
        assert_eq!(set.rules()[n - 2].render(), r#"  "/srv/share/" r,"#);
        assert_eq!(set.rules()[n - 1].render(), r#"  "/srv/share/**" rwl,"#);
    }

    #[test]
    fn run_paths_use_the_id_or_a_glob() {
        let mut g = guest();
        let rp = |scope, suffix: &str| RunPath {
            dir: "/run/libvirt/qemu/swtpm".into(),
            prefix: String::new(),
            suffix: suffix.into(),
            access: Access::RW,
            scope,
            origin: "tpm0".into(),
        };
        g.run_paths.push(rp(Scope::File, "-swtpm.sock"));
        g.run_paths.push(rp(Scope::Tree, ""));
        let lines = |g: &Guest| -> Vec<String> {
            let set = derive(g).unwrap();
            set.rules()[set.len() - 3..]
                .iter()
                .map(|r| r.render())
                .collect()
        };
        assert_eq!(
            lines(&g),
            vec![
                r#"  "/run/libvirt/qemu/swtpm/7-vm\[1\]\*-swtpm.sock" rw,"#,
                r#"  "/run/libvirt/qemu/swtpm/7-vm\[1\]\*/" r,"#,
                r#"  "/run/libvirt/qemu/swtpm/7-vm\[1\]\*/**" rw,"#,
            ]
        );
        g.id = None;
        assert_eq!(
            lines(&g)[0],
            format!(
                r#"  "/run/libvirt/qemu/swtpm/{}-vm\[1\]\*-swtpm.sock" rw,"#,
                crate::policy::escape::DECIMAL_ID
            )
        );
        g.run_paths[0].dir = "/etc/x".into();
        assert!(derive(&g).unwrap_err().to_string().contains("tpm0"));
    }

    /// The union of the access of every rule that matches `path`, as
    /// AppArmor grants it.
    fn access_to(set: &RuleSet, path: &str) -> Access {
        set.rules()
            .iter()
            .filter(|r| r.pattern.matches(path.as_bytes()))
            .fold(Access::default(), |a, r| a.union(r.access))
    }

    #[test]
    fn unknown_id_does_not_reach_another_guests_paths() {
        // Guest `vm` without an id (rendered from an inactive XML) next to a
        // running guest `x-vm` with id 5: libvirt names the latter's paths
        // `5-x-vm`, which a `*` for vm's id would match.
        let mut g = Guest::new(GuestKind::Qemu, "vm");
        let rp = |dir: &str, suffix: &str, scope, origin: &str| RunPath {
            dir: dir.into(),
            prefix: String::new(),
            suffix: suffix.into(),
            access: Access::RWK,
            scope,
            origin: origin.into(),
        };
        g.run_paths.push(rp(
            "/run/libvirt/qemu/swtpm",
            "-swtpm.sock",
            Scope::File,
            "tpm0 socket",
        ));
        g.run_paths.push(rp(
            "/dev/hugepages/libvirt/qemu",
            "",
            Scope::Tree,
            "memoryBacking hugepages",
        ));
        let set = derive(&g).unwrap();
        let none = Access::default();
        for (path, want) in [
            ("/var/lib/libvirt/qemu/domain-5-vm/monitor", Access::RW),
            ("/var/lib/libvirt/qemu/domain-1234567890-vm/x", Access::RW),
            ("/var/lib/libvirt/qemu/domain-5-x-vm/monitor", none),
            ("/var/lib/libvirt/qemu/domain-12345678901-vm/x", none),
            ("/var/lib/libvirt/qemu/domain--1-vm/x", none),
            ("/var/lib/libvirt/qemu/domain-0-vm/x", none),
            ("/run/libvirt/qemu/swtpm/5-vm-swtpm.sock", Access::RWK),
            (
                "/run/libvirt/qemu/swtpm/1234567890-vm-swtpm.sock",
                Access::RWK,
            ),
            ("/run/libvirt/qemu/swtpm/5-x-vm-swtpm.sock", none),
            ("/dev/hugepages/libvirt/qemu/5-vm/", Access::R),
            ("/dev/hugepages/libvirt/qemu/5-vm/a/b", Access::RWK),
            ("/dev/hugepages/libvirt/qemu/1234567890-vm/x", Access::RWK),
            ("/dev/hugepages/libvirt/qemu/5-x-vm/a", none),
            ("/dev/hugepages/libvirt/qemu/5-x-vm/", none),
        ] {
            assert_eq!(access_to(&set, path), want, "{path}");
        }
        // The same rules with the old `*` would have granted the other
        // guest's monitor: the check above can fail.
        let star = Pattern::literal(b"/var/lib/libvirt/qemu/domain-".to_vec())
            .glob("*")
            .lit("-vm/")
            .glob("*");
        assert!(star.matches(b"/var/lib/libvirt/qemu/domain-5-x-vm/monitor"));
        // With an id, only that id.
        g.id = Some(5);
        let set = derive(&g).unwrap();
        assert_eq!(
            access_to(&set, "/var/lib/libvirt/qemu/domain-5-vm/monitor"),
            Access::RW
        );
        assert_eq!(
            access_to(&set, "/var/lib/libvirt/qemu/domain-6-vm/monitor"),
            none
        );
        assert_eq!(
            access_to(&set, "/run/libvirt/qemu/swtpm/6-vm-swtpm.sock"),
            none
        );
    }

    #[test]
    fn short_name_counts_characters() {
        assert_eq!(
            short_name("ééééééééééééééééééééééé"),
            "éééééééééééééééééééé"
        );
        assert_eq!(short_name("short"), "short");
    }

    #[test]
    fn names() {
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name("{weird},[name]*").is_ok());
    }
}
