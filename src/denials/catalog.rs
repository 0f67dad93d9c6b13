//! The guests aa-virt manages on a host, found from the policy files it
//! wrote: libvirt guests by their `.files` (`libvirt-<uuid>`), LXC
//! containers by their rendered profiles. Each entry knows its profile,
//! its policy namespace (LXC) and where its profile file is, so that a
//! denial can be attributed and explained without libvirt or LXC running.

use std::path::{Path, PathBuf};

use crate::libvirt::naming;
use crate::lxc::naming::Names;
use crate::policy::explain::{ExplainError, Policy};

/// Which front end a guest belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A libvirt domain.
    Libvirt,
    /// An LXC container.
    Lxc,
}

/// How a guest is keyed in aa-virt's own state.
pub type GuestKey = String;

/// One managed guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEntry {
    /// The guest's name (domain or container name).
    pub name: String,
    /// libvirt or LXC.
    pub kind: Kind,
    /// The UUID (libvirt) or profile name (LXC): the key of its state.
    pub key: GuestKey,
    /// Its profile, in the root namespace.
    pub profile: String,
    /// Its policy namespace (LXC).
    pub namespace: Option<String>,
    /// The profile file the kernel compiles.
    pub profile_file: PathBuf,
    /// The container's lxcpath (LXC).
    pub lxcpath: Option<PathBuf>,
}

/// The managed guests under one root.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every guest found.
    pub entries: Vec<GuestEntry>,
    /// Where includes are looked up: the root's policy directory, then the
    /// system's.
    pub include_dirs: Vec<PathBuf>,
}

impl Catalog {
    /// Find the guests under `root` (`/` on a live host): libvirt's in
    /// `etc/apparmor.d/libvirt`, LXC's in `var/lib/aa-virt/lxc`.
    pub fn scan(root: &Path) -> Catalog {
        let layout = crate::libvirt::profile::Layout::under(root);
        let policy = layout.apparmor_dir.clone();
        let mut c = Catalog {
            include_dirs: vec![policy.clone()],
            ..Catalog::default()
        };
        if policy != Path::new("/etc/apparmor.d") {
            c.include_dirs.push(PathBuf::from("/etc/apparmor.d"));
        }
        let libvirt = layout.libvirt_dir();
        let uuid_of = |n: &str| {
            n.strip_suffix(naming::FILES_SUFFIX)
                .and_then(naming::parse_profile_name)
        };
        for (path, text) in files_in(&libvirt, |n| uuid_of(n).is_some()) {
            let Some(u) = path.file_name().and_then(|n| n.to_str()).and_then(uuid_of) else {
                continue;
            };
            let profile = naming::profile_name(&u);
            let profile = profile.as_str();
            let uuid = u.hyphenated().to_string();
            // `# Device rules for libvirt guest "NAME" (UUID), ...`
            let name = text
                .lines()
                .find(|l| l.starts_with("# Device rules for libvirt guest"))
                .and_then(|l| {
                    let start = l.find('"')? + 1;
                    let end = l.rfind("\" (")?;
                    (end >= start).then(|| l[start..end].to_string())
                })
                .unwrap_or_else(|| uuid.clone());
            let prof = libvirt.join(profile);
            c.entries.push(GuestEntry {
                name,
                kind: Kind::Libvirt,
                key: uuid,
                profile: profile.to_string(),
                namespace: None,
                profile_file: if prof.exists() { prof } else { path.clone() },
                lxcpath: None,
            });
        }
        let lxc = crate::lxc::Layout::under(root).profile_dir;
        for (path, text) in files_in(&lxc, |n| !n.starts_with('.')) {
            // `# AppArmor profile for LXC container "NAME" in LXCPATH.`
            let Some(line) = text
                .lines()
                .find(|l| l.starts_with("# AppArmor profile for LXC container"))
            else {
                continue;
            };
            let Some((head, lxcpath)) = line.rsplit_once("\" in ") else {
                continue;
            };
            let Some(name) = head.split_once('"').map(|(_, n)| n) else {
                continue;
            };
            let lxcpath = Path::new(lxcpath.trim_end_matches('.'));
            let names = Names::derive(name, lxcpath);
            c.entries.push(GuestEntry {
                name: name.to_string(),
                kind: Kind::Lxc,
                key: names.profile.clone(),
                profile: names.profile,
                namespace: Some(names.namespace),
                profile_file: path,
                lxcpath: Some(lxcpath.to_path_buf()),
            });
        }
        c.entries.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// The guest a record's label belongs to: its `profile` (a profile, a
    /// stack `a//&:ns:b`, or `:ns:b`) or its `namespace` (`None` = root).
    pub fn by_label(&self, profile: Option<&str>, namespace: Option<&str>) -> Option<&GuestEntry> {
        let mut names: Vec<&str> = Vec::new();
        let mut spaces: Vec<&str> = namespace.into_iter().collect();
        if let Some(p) = profile {
            for part in p.split("//&") {
                match part.strip_prefix(':').and_then(|r| r.split_once(':')) {
                    Some((ns, _)) => spaces.push(ns),
                    // `a//b` is a child profile of `a`.
                    None => names.push(part.split("//").next().unwrap_or(part)),
                }
            }
        }
        self.entries.iter().find(|e| {
            (namespace.is_none() && names.contains(&e.profile.as_str()))
                || e.namespace
                    .as_deref()
                    .is_some_and(|ns| spaces.contains(&ns))
        })
    }

    /// A guest named by the user: its name, UUID or profile.
    pub fn find(&self, guest: &str) -> Option<&GuestEntry> {
        let g = guest.trim();
        self.entries
            .iter()
            .find(|e| e.name == g || e.profile == g)
            .or_else(|| {
                let u = uuid::Uuid::parse_str(g).ok()?;
                self.entries
                    .iter()
                    .find(|e| uuid::Uuid::parse_str(&e.key).ok() == Some(u))
            })
    }

    /// Read a guest's policy back from its profile file and includes.
    pub fn policy(&self, e: &GuestEntry) -> Result<Policy, ExplainError> {
        Policy::load(&e.profile_file, &self.include_dirs)
    }
}

/// Readable files in `dir` whose names pass `want`, with their text.
fn files_in(dir: &Path, want: impl Fn(&str) -> bool) -> Vec<(PathBuf, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, String)> = rd
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&want))
        .filter_map(|e| {
            let p = e.path();
            std::fs::read_to_string(&p).ok().map(|t| (p, t))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::files::FILES_HEADER;

    pub(crate) const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    /// A root holding one libvirt guest `vm1` with these `.files` rules and
    /// one LXC container `c1` in /var/lib/lxc.
    pub(crate) fn root_with(rules: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let lv = d.path().join("etc/apparmor.d/libvirt");
        std::fs::create_dir_all(&lv).unwrap();
        std::fs::write(
            lv.join(format!("libvirt-{UUID}.files")),
            format!("{FILES_HEADER}\n# Device rules for libvirt guest \"vm1\" ({UUID}), regenerated whenever\n{rules}"),
        )
        .unwrap();
        let lxc = d.path().join("var/lib/aa-virt/lxc");
        std::fs::create_dir_all(&lxc).unwrap();
        std::fs::write(
            lxc.join("lxc-c1_<-var-lib-lxc>-aa-virt"),
            "# AppArmor profile for LXC container \"c1\" in /var/lib/lxc.\nprofile \"x\" {\n  file,\n  deny /proc/sysrq-trigger rw,\n}\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn finds_guests_and_attributes_labels() {
        let d = root_with("  \"/srv/a.img\" rwk,  # disk vda\n");
        let c = Catalog::scan(d.path());
        assert_eq!(c.entries.len(), 2);
        let vm = c.find("vm1").unwrap();
        assert_eq!(vm.key, UUID);
        assert_eq!(c.find(&UUID.to_uppercase()).unwrap().name, "vm1");
        let prof = format!("libvirt-{UUID}");
        assert_eq!(c.by_label(Some(&prof), None).unwrap().name, "vm1");
        // The same name inside some other namespace is not ours.
        assert!(c.by_label(Some(&prof), Some("other")).is_none());
        let ct = c.find("c1").unwrap();
        assert_eq!(ct.profile, "lxc-c1_</var/lib/lxc>-aa-virt");
        let ns = "lxc-c1_<-var-lib-lxc>-aa-virt";
        assert_eq!(c.by_label(Some("snap.x"), Some(ns)).unwrap().name, "c1");
        let stacked = format!("{}//&:{ns}:unconfined", ct.profile);
        assert_eq!(c.by_label(Some(&stacked), None).unwrap().name, "c1");
        assert_eq!(
            c.by_label(Some(&format!(":{ns}:p")), None).unwrap().name,
            "c1"
        );
        assert!(c
            .by_label(Some("libvirt-00000000-0000-0000-0000-000000000000"), None)
            .is_none());
        let p = c.policy(vm).unwrap();
        assert_eq!(p.rules.len(), 1);
    }
}
