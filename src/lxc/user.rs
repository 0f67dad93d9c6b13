//! Containers that an ordinary user starts (`lxc-start` as that user, with
//! `newuidmap`): root registers and loads their policy once, the user's
//! hooks only check it.
//!
//! An unprivileged user cannot load AppArmor policy, so the user's
//! pre-start hook cannot do what it does for root's containers. Instead
//! root runs `aa-virt lxc enable --user NAME CONTAINER` once: that renders
//! the profile from the user's config (vetted as for root's containers,
//! with raw rules only from root's `--raw`), stores it, loads it and makes
//! the container's namespace, and writes a [`Registration`] naming the
//! owner. `aa-virt lxc load-users` loads every stored registration's
//! profile again (at boot). Later edits of the user's config never reach
//! the loaded policy until root enables the container again.
//!
//! What enforces the scoping, measured in the Debian 12 (6.1) and 13
//! (6.12) VMs: the user's hooks refuse a start whose label is not the
//! registered one of this user, container and lxcpath, and LXC fails the
//! start when the label is not loaded. The kernel itself lets any
//! unconfined task change to any loaded profile (6.12's
//! `apparmor_restrict_unprivileged_unconfined` only turns that into a
//! stack that still lands in the target), so a user who removes aa-virt's
//! hooks from their own config can still put their tasks under another
//! container's label. What that label was worth, managing the other
//! container's policy namespace as root of a user namespace of their own,
//! the kernel refuses once [`SYSCTL`] is 0: root's steps here and every
//! root load of a stacked container close it ([`close_userns_policy`]).
//! The user's hooks cannot check it (the kernel keeps it root-only); a
//! reboot reopens it and unloads the user's profile alike, so the user's
//! start fails until `load-users` has run, which closes it first.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hook::{kernel, load_policy, Settings};
use super::naming::Names;
use super::profile::Container;
use super::{config, EditReport, EnableOptions, Layout, LxcError};
use crate::apparmor::label::processes_where;
use crate::apparmor::userns_policy::SYSCTL;
use crate::apparmor::Kernel;
use crate::config::UsernsPolicySwitch;
use crate::policy::Templates;
use crate::store;

/// The calling process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `aa-virt lxc enable --user`: enable `user`'s container `name` as
/// [`super::enable`] does, then register it to the user and load its
/// policy (root only). The profile is rendered from the user's config now;
/// raw rules come only from root's `--raw` (a `lxc.apparmor.raw` of the
/// user's is refused), and later edits of the config reach the policy only
/// when root enables it again.
pub fn enable_user(
    user: &Account,
    name: &str,
    opts: &EnableOptions,
    s: &Settings,
    templates: &Templates,
) -> Result<EditReport, LxcError> {
    require_closed_switch(name, s)?;
    let ct = Container::open(name, &opts.lxcpath)?;
    check_owner(name, &ct.config, user)?;
    let base = ct.with_text(&config::disable_text(&config::read_text(&ct.config)?))?;
    if let Some(e) = config::all(&base.entries, "lxc.apparmor.raw").next() {
        return Err(LxcError::BadRaw {
            container: name.to_string(),
            at: e.at(),
            why: "is in the user's config: a user container's raw rules come only from root (`--raw FILE`)".into(),
        });
    }
    let mut report = super::enable(name, opts, &s.root, templates, &s.parser)?;
    let ct = Container::open(name, &opts.lxcpath)?;
    let names = ct.names();
    let mode = names
        .mode_of(&report.label)
        .expect("enable wrote aa-virt's label");
    // Loaded first: a registration always names policy that loaded (or,
    // on a kernel without AppArmor, that will load at boot).
    if kernel(s).status().is_available() {
        load_policy(&ct, mode, s, templates)?;
    } else {
        let r = super::profile::render_stored(
            &ct,
            mode,
            templates,
            super::probe_options(&s.parser),
            &s.layout.allow_dir,
        )?;
        let _lock = store::lock(&s.layout.lock_dir, &names.profile)?;
        store::write_atomic(&s.layout.profile_path(&names), r.text.as_bytes(), 0o644)?;
        report.warnings.push(format!(
            "registered for user {}, stored but not loaded (no AppArmor); `aa-virt lxc load-users` loads it",
            user.name
        ));
    }
    register(
        &s.layout,
        &names,
        &Registration {
            user: user.name.clone(),
            uid: user.uid,
            container: name.to_string(),
            lxcpath: ct.lxcpath.clone(),
            profile: names.profile.clone(),
            namespace: names.namespace.clone(),
            label: report.label.clone(),
        },
    )?;
    Ok(report)
}

/// User containers need [`SYSCTL`] closed: refuse them where the
/// configuration keeps it.
fn require_closed_switch(container: &str, s: &Settings) -> Result<(), LxcError> {
    if s.userns_policy == UsernsPolicySwitch::Keep {
        return Err(LxcError::Kernel {
            container: container.to_string(),
            message: format!(
                "user containers need {SYSCTL} = 0, and the configuration says lxc_userns_policy = \"keep\""
            ),
        });
    }
    Ok(())
}

/// Load every registered user container's stored profile and make its
/// namespace (root, at boot): nothing is rendered, so the loaded policy is
/// what root enabled. One result per registration file.
pub fn load_users(s: &Settings) -> Vec<(PathBuf, Result<Registration, LxcError>)> {
    registrations(&s.layout)
        .into_iter()
        .map(|(path, r)| {
            let res = r.and_then(|r| {
                require_closed_switch(&r.container, s)?;
                let names = Names::derive(&r.container, &r.lxcpath);
                if names.profile != r.profile || names.namespace != r.namespace {
                    return Err(LxcError::Hook(format!(
                        "registration {} names profile {} but container {} in {} gets {}",
                        path.display(),
                        r.profile,
                        r.container,
                        r.lxcpath.display(),
                        names.profile
                    )));
                }
                let file = s.layout.profile_path(&names);
                let _lock = store::lock(&s.layout.lock_dir, &names.profile)?;
                let k = kernel(s);
                let stacked =
                    names.mode_of(&r.label) == Some(crate::apparmor::ContainerMode::Stacked);
                if stacked {
                    close_userns_policy(&r.container, s, &*k)?;
                }
                let created = stacked && k.create_namespace(&names.namespace)?;
                let parser = s.layout.parser(&s.parser);
                if let Err(source) = k.replace(&parser, &names.profile, &file) {
                    if created {
                        let _ = k.remove_namespace(&names.namespace);
                    }
                    return Err(LxcError::Parser {
                        container: r.container.clone(),
                        source,
                    });
                }
                Ok(r)
            });
            (path, res)
        })
        .collect()
}

/// Undo a registration (from `aa-virt lxc disable`): unload the profile,
/// remove the namespace, the stored profile and the registration. Refused
/// while tasks still run under the profile or in the namespace.
pub fn disable_user(names: &Names, s: &Settings) -> Result<(), LxcError> {
    let _lock = store::lock(&s.layout.lock_dir, &names.profile)?;
    let k = kernel(s);
    if k.status().is_available() {
        let left = processes_where(&s.root, |l| {
            l.own_profiles().any(|p| p == names.profile)
                || l.namespaces().any(|n| n == names.namespace)
        });
        if !left.is_empty() {
            return Err(LxcError::StillRunning {
                container: names.profile.clone(),
                profile: names.profile.clone(),
                pids: left.into_iter().map(|(p, _)| p).collect(),
            });
        }
        k.remove_namespace(&names.namespace)?;
        k.remove_profile(&names.profile)
            .map_err(|source| LxcError::Io {
                op: "unload profile through",
                path: s.root.apparmor_dir().join(".remove"),
                source,
            })?;
    }
    store::remove(&s.layout.profile_path(names))?;
    unregister(&s.layout, names)
}

/// Close [`SYSCTL`] before `container`'s policy namespace is made or
/// loaded (root): with it open, any user who puts a task under the
/// container's label from a user namespace of their own could manage the
/// policy in that namespace. Fails closed, naming the switch. Where the
/// configuration says `lxc_userns_policy = "keep"`, the switch is left
/// alone with a warning.
pub fn close_userns_policy(
    container: &str,
    s: &Settings,
    kernel: &dyn Kernel,
) -> Result<(), LxcError> {
    if s.userns_policy == UsernsPolicySwitch::Keep {
        tracing::warn!(
            "container {container}: {SYSCTL} left as it is (lxc_userns_policy = \"keep\"): where it is 1, any local user can manage the policy in this container's namespace"
        );
        return Ok(());
    }
    match kernel.close_userns_policy() {
        Ok(true) => {
            tracing::info!(
                "container {container}: set {SYSCTL} = 0 (only the host's root manages AppArmor policy namespaces)"
            );
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(LxcError::Kernel {
            container: container.to_string(),
            message: format!(
                "{e}; refusing to load its policy namespace while root of any user namespace could manage policy in it"
            ),
        }),
    }
}

/// A user account, from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// Look a user up by name (`getpwnam_r`).
pub fn account(name: &str) -> Result<Account, LxcError> {
    let unknown = || LxcError::Hook(format!("no such user {name:?} in the password database"));
    let c = std::ffi::CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r fills it with pointers into
    // buf, which outlives every read below.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return Err(unknown());
    }
    // SAFETY: on success pw_dir points to a NUL-terminated string in buf.
    let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
    Ok(Account {
        name: name.to_string(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home: PathBuf::from(std::ffi::OsStr::from_bytes(home.to_bytes())),
    })
}

/// LXC's lxcpath for an ordinary user: `~/.local/share/lxc`.
pub fn default_lxcpath(a: &Account) -> PathBuf {
    a.home.join(".local/share/lxc")
}

/// Root's record that a user's container may run under its profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The owner's login name.
    pub user: String,
    /// The owner's uid: the only uid whose hooks accept the container.
    pub uid: u32,
    /// The container.
    pub container: String,
    /// Its lxcpath, canonical.
    pub lxcpath: PathBuf,
    /// The host-side profile.
    pub profile: String,
    /// The policy namespace.
    pub namespace: String,
    /// The label the container's config carries.
    pub label: String,
}

impl Layout {
    /// Where user registrations are kept.
    pub fn users_dir(&self) -> PathBuf {
        self.profile_dir.join("users")
    }

    /// The registration file of a container.
    pub fn registration_path(&self, names: &Names) -> PathBuf {
        self.users_dir().join(format!("{}.json", names.file_name()))
    }
}

/// Check that `config` belongs to `a` (LXC writes a user's container
/// config as that user): root never registers someone else's container for
/// a user.
pub fn check_owner(container: &str, config: &Path, a: &Account) -> Result<(), LxcError> {
    let md = std::fs::metadata(config).map_err(|source| LxcError::Io {
        op: "stat",
        path: config.to_path_buf(),
        source,
    })?;
    if md.uid() != a.uid {
        return Err(LxcError::Hook(format!(
            "container {container}: {} belongs to uid {}, not to user {} (uid {}); a user container must be the user's own",
            config.display(),
            md.uid(),
            a.name,
            a.uid
        )));
    }
    Ok(())
}

/// Write a registration (root only; 0644 so the user's hooks can read it).
pub fn register(layout: &Layout, names: &Names, r: &Registration) -> Result<(), LxcError> {
    let text = serde_json::to_string_pretty(r).expect("a registration serialises");
    store::write_atomic(
        &layout.registration_path(names),
        format!("{text}\n").as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// Remove a registration (absent is fine).
pub fn unregister(layout: &Layout, names: &Names) -> Result<(), LxcError> {
    store::remove(&layout.registration_path(names))?;
    Ok(())
}

/// Read one registration file.
pub fn read(path: &Path) -> Result<Registration, LxcError> {
    let text = std::fs::read_to_string(path).map_err(|source| LxcError::Io {
        op: "read registration",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        LxcError::Hook(format!(
            "registration {} is not aa-virt's: {e}",
            path.display()
        ))
    })
}

/// The registration of a container, if root made one.
pub fn registration(layout: &Layout, names: &Names) -> Result<Option<Registration>, LxcError> {
    let p = layout.registration_path(names);
    if !p.exists() {
        return Ok(None);
    }
    read(&p).map(Some)
}

/// Every registration, sorted by file name; unreadable ones are reported.
pub fn registrations(layout: &Layout) -> Vec<(PathBuf, Result<Registration, LxcError>)> {
    let Ok(rd) = std::fs::read_dir(layout.users_dir()) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let r = read(&p);
            (p, r)
        })
        .collect()
}

/// The check a user's hook makes: the container is registered, to this
/// uid, for this container name and lxcpath. Fails closed with what to do.
pub fn check_registered(
    layout: &Layout,
    names: &Names,
    container: &str,
    lxcpath: &Path,
    uid: u32,
) -> Result<Registration, LxcError> {
    let r = registration(layout, names)?.ok_or_else(|| {
        LxcError::Hook(format!(
            "container {container}: started by uid {uid}, which cannot load AppArmor policy, and root has not registered it; root must run `aa-virt lxc enable --user USER -P {} {container}` once",
            lxcpath.display()
        ))
    })?;
    if r.uid != uid || r.container != container || r.lxcpath != lxcpath {
        return Err(LxcError::Hook(format!(
            "container {container} in {} (uid {uid}): its profile {} is registered to container {} in {} of user {} (uid {}); refusing to start it",
            lxcpath.display(),
            names.profile,
            r.container,
            r.lxcpath.display(),
            r.user,
            r.uid
        )));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_password_database() {
        let a = account("root").unwrap();
        assert_eq!((a.uid, a.gid), (0, 0));
        assert_eq!(default_lxcpath(&a), a.home.join(".local/share/lxc"));
        let e = account("no-such-user-aa-virt").unwrap_err().to_string();
        assert!(e.contains("no-such-user-aa-virt"), "{e}");
        assert!(account("a\0b").is_err());
    }

    #[test]
    fn registrations_scope_by_uid_container_and_lxcpath() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::under(d.path());
        let lp = Path::new("/home/alice/.local/share/lxc");
        let names = Names::derive("c1", lp);
        let e = check_registered(&layout, &names, "c1", lp, 1000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("enable --user") && e.contains("c1"), "{e}");
        let r = Registration {
            user: "alice".into(),
            uid: 1000,
            container: "c1".into(),
            lxcpath: lp.into(),
            profile: names.profile.clone(),
            namespace: names.namespace.clone(),
            label: names.label(crate::apparmor::ContainerMode::Stacked),
        };
        register(&layout, &names, &r).unwrap();
        assert_eq!(
            check_registered(&layout, &names, "c1", lp, 1000).unwrap(),
            r
        );
        let e = check_registered(&layout, &names, "c1", lp, 1001)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("user alice (uid 1000)") && e.contains("refusing"),
            "{e}"
        );
        assert_eq!(registrations(&layout).len(), 1);
        unregister(&layout, &names).unwrap();
        assert!(registrations(&layout).is_empty());
    }
}
