//! Assessing one guest against what it should be: profile `libvirt-<uuid>`
//! (QEMU) or the configured stacked label (LXC), loaded, in enforce mode,
//! and the process really running under it. Every problem is one sentence.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::gather::KernelFacts;
use super::{denials, GuestRow, ListOptions};
use crate::apparmor::{process_label, Label, Mode};
use crate::guest::GuestKind;
use crate::libvirt::conn::{self, DomainInfo};
use crate::libvirt::naming;
use crate::lxc::sys::Container;
use crate::policy::files;

/// What assessing a guest reads: gathered once for all of them.
pub(super) struct Ctx<'a> {
    pub(super) opts: &'a ListOptions,
    pub(super) kernel: &'a KernelFacts,
    pub(super) summary: &'a denials::Summary,
    pub(super) present: &'a HashSet<String>,
}

fn mode_str(m: Option<&Mode>) -> Option<String> {
    m.map(|m| m.as_str().to_string())
}

impl Ctx<'_> {
    /// Where libvirt keeps a running QEMU's pid file, for local URIs of the
    /// QEMU driver.
    fn qemu_pid(&self, uri: &str, name: &str) -> Option<u32> {
        let rest = uri.split_once("://")?.1;
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        if !uri.starts_with("qemu") {
            return None;
        }
        let dir = match path {
            "system" => self.opts.root.path().join("run/libvirt/qemu"),
            "session" => {
                PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("libvirt/qemu/run")
            }
            _ => return None,
        };
        let text = std::fs::read_to_string(dir.join(format!("{name}.pid"))).ok()?;
        text.trim().parse().ok()
    }

    fn rules_of(&self, path: &Path) -> Option<usize> {
        std::fs::read_to_string(path).ok().map(|t| files::count(&t))
    }

    pub(super) fn qemu(
        &self,
        uri: &str,
        local: bool,
        model: Option<&str>,
        d: &DomainInfo,
    ) -> GuestRow {
        let profile = naming::profile_name(&d.uuid);
        let files_name = naming::files_name(&profile);
        let files_path = self.opts.layout.files_path(&profile);
        let rules = if local && self.present.contains(&files_name) {
            self.rules_of(&files_path)
        } else {
            None
        };
        let mut g = GuestRow {
            uuid: Some(d.uuid.hyphenated().to_string()),
            profile: Some(profile.clone()),
            expected_label: Some(profile.clone()),
            rules_file: rules.map(|_| files_path.display().to_string()),
            rules,
            denials: local
                .then_some(self.summary.source.as_ref())
                .flatten()
                .map(|_| self.summary.denials_of(None, &profile)),
            ..GuestRow::new(
                &d.name,
                GuestKind::Qemu,
                uri.to_string(),
                d.state.as_str(),
                d.is_active(),
            )
        };
        if local {
            // `aa-virt allow` and `aa-virt mode` state (unreadable: unknown).
            let (dir, key) = (&self.opts.layout.allow_dir, d.uuid.hyphenated().to_string());
            g.allowances = crate::policy::allow::load(dir, &key, &d.name)
                .ok()
                .map(|a| a.len());
            g.stored_mode = crate::policy::allow::mode(dir, &key, &d.name)
                .ok()
                .flatten()
                .map(|c| if c { "complain" } else { "enforce" }.to_string());
        }
        let expected = Label::profile(&profile);
        let libvirt_label = d.label.as_ref();
        if local {
            if let Some(why) = self.kernel.unavailable() {
                if g.active {
                    g.problems.push(why);
                }
            } else if let Some(p) = &self.kernel.profiles {
                let mode = p.mode(None, &profile);
                g.loaded = Some(mode.is_some());
                g.mode = mode_str(mode);
                if g.active {
                    g.pid = self.qemu_pid(uri, &d.name);
                    match g.pid.map(|pid| process_label(&self.opts.root, pid)) {
                        Some(Ok(l)) => {
                            g.label_source = Some("procfs");
                            g.label = Some(l.to_string());
                            g.label_mode = mode_str(l.mode.as_ref());
                            g.label_ok =
                                Some(l.same_profiles(&expected) && l.mode == Some(Mode::Enforce));
                        }
                        Some(Err(e)) => g.problems.push(e.to_string()),
                        None => self.libvirt_label(&mut g, model, libvirt_label, &profile),
                    }
                }
            }
        } else if g.active {
            // Remote: only libvirt can tell. Its label is the profile name
            // when that profile is loaded, empty otherwise.
            self.libvirt_label(&mut g, model, libvirt_label, &profile);
            if g.label_source.is_some() {
                g.loaded = Some(g.label.as_deref().is_some_and(|l| !l.is_empty()));
            }
        }
        if g.active {
            profile_problems(&mut g, &profile);
            if g.label_ok == Some(false) {
                g.problems.push(format!(
                    "runs as {}{}, expected {profile} (enforce)",
                    g.label
                        .as_deref()
                        .filter(|l| !l.is_empty())
                        .unwrap_or("no label"),
                    g.label_mode
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
            if g.label_ok.is_none() && g.problems.is_empty() {
                g.problems
                    .push("its process label could not be read".to_string());
            }
            g.confined = Some(g.problems.is_empty() && g.label_ok == Some(true));
        }
        g
    }

    fn libvirt_label(
        &self,
        g: &mut GuestRow,
        model: Option<&str>,
        label: Option<&Result<conn::SecurityLabel, String>>,
        profile: &str,
    ) {
        match label {
            Some(Ok(l)) => {
                g.label_source = Some("libvirt");
                g.label = Some(l.label.clone());
                g.label_mode = Some(if l.enforcing { "enforce" } else { "complain" }.into());
                if model.is_some_and(|m| m != "apparmor") {
                    g.problems.push(format!(
                        "libvirt's security driver is {:?}, not apparmor",
                        model.unwrap_or_default()
                    ));
                }
                g.label_ok = Some(l.label == profile && l.enforcing);
            }
            Some(Err(e)) => g.problems.push(e.clone()),
            None => {}
        }
    }

    /// Which kind of container `c` is, and its owner when a user's.
    fn privilege(&self, c: &Container, g: &mut GuestRow) {
        let canon = std::fs::canonicalize(&c.lxcpath).unwrap_or_else(|_| c.lxcpath.clone());
        let names = crate::lxc::naming::Names::derive(&c.name, &canon);
        if let Ok(Some(r)) = crate::lxc::user::registration(&self.opts.lxc_layout, &names) {
            g.privilege = Some("user");
            g.owner = Some(r.user);
            return;
        }
        match crate::lxc::config::read_entries(&c.config_file) {
            Ok(e) => {
                let idmap = crate::lxc::config::all(&e, "lxc.idmap").next().is_some();
                g.privilege = Some(if idmap { "unprivileged" } else { "privileged" });
            }
            Err(e) => g.problems.push(e.to_string()),
        }
    }

    pub(super) fn lxc(&self, c: &Container) -> GuestRow {
        let active = c.init_pid.is_some();
        let mut g = GuestRow {
            pid: c.init_pid,
            ..GuestRow::new(
                &c.name,
                GuestKind::Lxc,
                c.lxcpath.display().to_string(),
                c.state.as_str(),
                active,
            )
        };
        self.privilege(c, &mut g);
        let configured = c.apparmor_profile.as_deref().map(str::trim);
        let expected = match configured {
            Some("unconfined") => {
                g.problems
                    .push("configured unconfined (lxc.apparmor.profile = unconfined)".into());
                None
            }
            Some("unchanged") | Some("generated") | None => {
                g.problems.push(format!(
                    "not managed by aa-virt (lxc.apparmor.profile is {}); run: aa-virt lxc enable {}",
                    configured.map(|s| format!("{s:?}")).unwrap_or("unset".into()),
                    c.name
                ));
                None
            }
            Some(s) => match Label::parse(s) {
                Ok(l) => Some(l),
                Err(e) => {
                    g.problems.push(format!("lxc.apparmor.profile: {e}"));
                    None
                }
            },
        };
        if let Some(exp) = &expected {
            g.expected_label = Some(exp.to_string());
            g.profile = exp.own_profiles().next().map(str::to_string);
            g.namespace = exp.namespaces().next().map(str::to_string);
        }
        if let Some(p) = g.profile.as_deref().filter(|p| {
            p.ends_with(crate::lxc::naming::SUFFIX)
                || p.starts_with(crate::lxc::naming::HASHED_PREFIX)
        }) {
            // `aa-virt allow` state, keyed by the profile (unreadable: unknown).
            g.allowances = crate::policy::allow::load(&self.opts.lxc_layout.allow_dir, p, &c.name)
                .ok()
                .map(|a| a.len());
        }
        if g.profile.is_some() {
            let file = lxc_profile_file(&self.opts.lxc_layout, c, g.namespace.as_deref());
            g.rules = file.as_deref().and_then(|f| self.rules_of(f));
            g.rules_file = file
                .filter(|_| g.rules.is_some())
                .map(|f| f.display().to_string());
        }
        if let Some(_src) = &self.summary.source {
            let own = g
                .profile
                .as_deref()
                .map(|p| self.summary.denials_of(None, p))
                .unwrap_or(0);
            let inner = g
                .namespace
                .as_deref()
                .map(|n| self.summary.denials_in(n))
                .unwrap_or(0);
            g.denials = Some(own + inner);
        }
        if let Some(why) = self.kernel.unavailable() {
            if active {
                g.problems.push(why);
            }
        } else if let Some(p) = &self.kernel.profiles {
            if let Some(prof) = &g.profile {
                let m = p.mode(None, prof);
                g.loaded = Some(m.is_some());
                g.mode = mode_str(m);
            }
            if let Some(ns) = &g.namespace {
                let exists = self.opts.root.namespace_exists(ns);
                g.namespace_exists = Some(exists);
                g.namespace_profiles = exists.then(|| p.count_in(ns));
            }
            if let (true, Some(pid)) = (active, c.init_pid) {
                match process_label(&self.opts.root, pid) {
                    Ok(l) => {
                        g.label_source = Some("procfs");
                        g.label = Some(l.to_string());
                        g.label_mode = mode_str(l.mode.as_ref());
                        let ok_mode = l.mode == Some(Mode::Enforce);
                        g.label_ok = Some(match &expected {
                            Some(e) => l.same_profiles(e) && ok_mode,
                            None => false,
                        });
                    }
                    Err(e) => g.problems.push(e.to_string()),
                }
            }
        }
        if active {
            if let Some(prof) = g.profile.clone() {
                profile_problems(&mut g, &prof);
            }
            if let (Some(ns), Some(false)) = (&g.namespace, g.namespace_exists) {
                g.problems
                    .push(format!("policy namespace {ns} does not exist"));
            }
            if g.label_ok == Some(false) && expected.is_some() {
                g.problems.push(format!(
                    "init (pid {}) runs as {}{}, expected {} (enforce)",
                    g.pid.unwrap_or(0),
                    g.label.as_deref().unwrap_or("?"),
                    g.label_mode
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default(),
                    g.expected_label.as_deref().unwrap_or("?")
                ));
            }
            g.confined = Some(g.problems.is_empty() && g.label_ok == Some(true));
        }
        g
    }
}

/// An active guest's profile not loaded, or not in enforce mode.
fn profile_problems(g: &mut GuestRow, profile: &str) {
    if g.loaded == Some(false) {
        g.problems.push(format!("profile {profile} is not loaded"));
    } else if g.mode.as_deref().is_some_and(|m| m != "enforce") {
        g.problems.push(format!(
            "profile {profile} is in {} mode",
            g.mode.as_deref().unwrap_or("?")
        ));
    }
}

/// The profile source of an LXC container, if present: the one aa-virt
/// writes (`/var/lib/aa-virt/lxc/<namespace>`), else the one LXC's own
/// `generated` mode writes (`<lxcpath>/<name>/apparmor/<namespace>`).
pub fn lxc_profile_file(
    layout: &crate::lxc::Layout,
    c: &Container,
    ns: Option<&str>,
) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(&c.lxcpath).unwrap_or_else(|_| c.lxcpath.clone());
    let names = crate::lxc::naming::Names::derive(&c.name, &canon);
    let mut cands = vec![layout.profile_path(&names)];
    if let Some(n) = ns.filter(|n| !n.contains('/')) {
        cands.push(c.lxcpath.join(&c.name).join("apparmor").join(n));
    }
    cands.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apparmor::fake::FakeTree;
    use crate::apparmor::Root;
    use crate::libvirt::conn::{DomainState, SecurityLabel};
    use crate::libvirt::profile::Layout;
    use crate::list::LogChoice;

    const UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    fn dom(label: Option<SecurityLabel>) -> DomainInfo {
        DomainInfo {
            name: "vm1".into(),
            uuid: UUID.parse().unwrap(),
            id: Some(3),
            state: DomainState::Running,
            label: label.map(Ok),
        }
    }

    fn assess(root: &Path, uri: &str, d: &DomainInfo, model: &str) -> GuestRow {
        let opts = ListOptions {
            uris: vec![uri.into()],
            default_uris: false,
            lxcpaths: vec![],
            root: Root::new(root),
            layout: Layout::under(root),
            lxc_layout: crate::lxc::Layout::under(root),
            log: LogChoice::Off,
            parser: crate::apparmor::Parser::new(),
            staleness: true,
            templates: None,
        };
        let kernel = KernelFacts::read(&opts.root);
        let summary = denials::Summary::default();
        let present = HashSet::new();
        let ctx = Ctx {
            opts: &opts,
            kernel: &kernel,
            summary: &summary,
            present: &present,
        };
        ctx.qemu(uri, conn::is_local_uri(uri), Some(model), d)
    }

    #[test]
    fn qemu_label_from_procfs_via_the_pid_file() {
        let d = tempfile::tempdir().unwrap();
        let prof = format!("libvirt-{UUID}");
        let mut t = FakeTree::new(d.path()).unwrap();
        t.load(&prof, "enforce").unwrap();
        let run = d.path().join("run/libvirt/qemu");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("vm1.pid"), "4242\n").unwrap();
        // libvirt would say "fine" (it only checks the profile is loaded):
        // the process is what counts.
        let said = Some(SecurityLabel {
            label: prof.clone(),
            enforcing: true,
        });
        t.process(4242, &format!("{prof} (enforce)")).unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!(g.pid, Some(4242));
        assert_eq!(g.label_source, Some("procfs"));
        assert_eq!((g.label_ok, g.confined), (Some(true), Some(true)), "{g:?}");

        t.process(4242, "unconfined").unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!((g.label_ok, g.confined), (Some(false), Some(false)));
        assert!(
            g.problems[0].contains("runs as unconfined"),
            "{:?}",
            g.problems
        );

        t.process(4242, &format!("{prof} (complain)")).unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!(g.label_ok, Some(false));

        // The pid file gone (the process exited): libvirt's word is used.
        std::fs::remove_file(run.join("vm1.pid")).unwrap();
        let g = assess(d.path(), "qemu:///system", &dom(said.clone()), "apparmor");
        assert_eq!(g.label_source, Some("libvirt"));
        assert_eq!(g.confined, Some(true));

        // A remote host: libvirt's label decides, the local kernel does not.
        let g = assess(d.path(), "qemu+ssh://far/system", &dom(said), "apparmor");
        assert_eq!(
            (g.label_source, g.loaded, g.mode.clone()),
            (Some("libvirt"), Some(true), None)
        );
        assert_eq!(g.confined, Some(true));
        let g = assess(
            d.path(),
            "qemu+ssh://far/system",
            &dom(Some(SecurityLabel {
                label: String::new(),
                enforcing: false,
            })),
            "apparmor",
        );
        assert_eq!((g.loaded, g.confined), (Some(false), Some(false)));
        assert!(g.problems.iter().any(|p| p.contains("is not loaded")));
    }
}
