//! The policy ABI each kind of profile aa-virt writes declares, and the
//! AppArmor 4 rules it may carry: decided in one place, [`choose`], from
//! what the host supports ([`HostSupport`], probed through
//! `apparmor::features`).
//!
//! An `abi <abi/X>,` line pins the features a profile is compiled against:
//! a class the ABI does not name is not mediated, whatever the kernel can
//! do. Debian 12's parser (3.0.8) ships only `abi/3.0`; Debian 13's (4.1)
//! also ships `abi/4.0`, which adds user-namespace creation, POSIX message
//! queues and fine-grained `unix` mediation (each enforced only where the
//! kernel has it: Debian 13's 6.12 has the first only). No ABI file of
//! AppArmor 4.1 names `io_uring`, so its rules are not enforced under any
//! ABI aa-virt can declare there.

use std::path::Path;

use serde::Serialize;

use crate::apparmor::features::{apparmor4, probe_rule, Features};
use crate::apparmor::{Parser, Root};

/// A policy ABI, as declared by `abi <abi/VERSION>,`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Abi {
    /// `abi/3.0`: AppArmor 3 (Debian 12). No user-namespace, message-queue
    /// or fine-grained unix-socket mediation.
    V3_0,
    /// `abi/4.0`: AppArmor 4 (Debian 13).
    V4_0,
}

impl Abi {
    /// `3.0` or `4.0`, as in the ABI file's name.
    pub fn version(self) -> &'static str {
        match self {
            Abi::V3_0 => "3.0",
            Abi::V4_0 => "4.0",
        }
    }
}

/// What the host's AppArmor supports, as far as profile text goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostSupport {
    /// The parser compiles `abi <abi/4.0>,` (its base directory has
    /// `abi/4.0`: AppArmor 4).
    pub abi_4_0: bool,
    /// The parser accepts a `userns,` rule and the kernel (or, on a host
    /// without AppArmor in the kernel, the parser's features file)
    /// mediates user-namespace creation.
    pub userns: bool,
}

impl HostSupport {
    /// What can be told without running the parser: `abi_4_0` when
    /// `apparmor_d/abi/4.0` exists (the file `abi <abi/4.0>,` names, which
    /// only AppArmor 4's parser package ships); `userns` is left false
    /// (it needs a parser probe: [`HostSupport::probe`]).
    /// A single `stat`, cheap enough for every guest start.
    pub fn from_files(apparmor_d: &Path) -> HostSupport {
        HostSupport {
            abi_4_0: apparmor_d.join("abi/4.0").is_file(),
            userns: false,
        }
    }

    /// Probe this host: the parser's ABI files, and `userns` where the
    /// parser compiles the rule and the kernel (or, without AppArmor in the
    /// kernel, the parser's features file) mediates user namespaces.
    pub fn probe(parser: &Parser) -> HostSupport {
        let kernel_userns =
            apparmor4(&Root::default(), parser.features.as_deref()).is_some_and(|a| a.userns);
        HostSupport {
            userns: kernel_userns && probe_rule(parser, "userns,").unwrap_or(false),
            ..HostSupport::from_files(&parser.base_dir())
        }
    }

    /// The same from `aa-virt features`' findings; `None` when the parser
    /// was not probed.
    pub fn of(f: &Features) -> Option<HostSupport> {
        let p = f.parser.as_ref()?;
        Some(HostSupport {
            abi_4_0: p.abi_files.iter().any(|v| v == "4.0") && p.supports("abi/4.0"),
            userns: p.supports("userns") && f.apparmor4.as_ref().is_some_and(|a| a.userns),
        })
    }
}

/// The ABI (and AppArmor 4 rules) each kind of profile declares on `host`,
/// for a report: `libvirt guests abi/4.0, LXC containers abi/3.0, ...`.
pub fn summary(host: HostSupport) -> String {
    let decl = |k| {
        let p = choose(k, host);
        let extra = if p.userns { " + userns" } else { "" };
        format!("abi/{}{extra}", p.abi.version())
    };
    format!(
        "libvirt guests {}, LXC containers {}, aa-virt {}",
        decl(ProfileKind::LibvirtGuest),
        decl(ProfileKind::LxcContainer),
        decl(ProfileKind::AaVirt)
    )
}

/// The kinds of profile aa-virt writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// A libvirt guest's `libvirt-<uuid>` (QEMU).
    LibvirtGuest,
    /// An LXC container's profile.
    LxcContainer,
    /// aa-virt's own profile (the libvirt hook runs under it).
    AaVirt,
}

/// What a profile of one kind declares on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProfilePolicy {
    /// The ABI line.
    pub abi: Abi,
    /// Emit `userns,` (allow creating user namespaces). Only ever set under
    /// [`Abi::V4_0`] on a host whose parser and kernel both support it:
    /// under 3.0 the rule is not enforced, and a parser without it rejects
    /// the profile.
    pub userns: bool,
}

/// The decision, per kind of profile.
///
/// - Libvirt guests get `abi/4.0` wherever the parser has it, with no
///   AppArmor 4 allow rule: QEMU creates no user namespaces and uses no
///   POSIX message queues, so under 4.0 a compromised QEMU cannot
///   `unshare -U` its way to a fresh set of capabilities in a new user
///   namespace (Debian 13's kernel enforces this).
/// - LXC containers stay on `abi/3.0`. A container is a whole system:
///   nested containers, systemd's `PrivateUsers=`, browser sandboxes and
///   rootless tools create user namespaces, and on kernels that mediate
///   unix sockets finely (not Debian 13's 6.12, but upstream 6.17 and
///   Ubuntu's) 4.0 would also enforce the template's same-label `unix`
///   rules, cutting nested containers off from their parent's sockets:
///   the Docker-in-container breakage that made Incus drop `abi/4.0`.
///   3.0 mediates none of it, so user namespaces stay allowed with or
///   without nesting.
/// - aa-virt's own profile stays on `abi/3.0`: it is written once by
///   `aa-virt install` and administers policy (`mac_admin`); its rules
///   were written and proven for 3.0, and 4.0 would add no protection to
///   a process that may load any policy it likes.
pub fn choose(kind: ProfileKind, host: HostSupport) -> ProfilePolicy {
    let v4 = |userns: bool| ProfilePolicy {
        abi: Abi::V4_0,
        userns: userns && host.userns,
    };
    let v3 = ProfilePolicy {
        abi: Abi::V3_0,
        userns: false,
    };
    match kind {
        ProfileKind::LibvirtGuest if host.abi_4_0 => v4(false),
        ProfileKind::LibvirtGuest | ProfileKind::LxcContainer | ProfileKind::AaVirt => v3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ProfileKind; 3] = [
        ProfileKind::LibvirtGuest,
        ProfileKind::LxcContainer,
        ProfileKind::AaVirt,
    ];

    #[test]
    fn an_apparmor_3_host_gets_3_0_everywhere() {
        for host in [
            HostSupport::default(),
            // A parser that knows `userns,` but ships no abi/4.0 file.
            HostSupport {
                abi_4_0: false,
                userns: true,
            },
        ] {
            for k in ALL {
                assert_eq!(
                    choose(k, host),
                    ProfilePolicy {
                        abi: Abi::V3_0,
                        userns: false
                    },
                    "{k:?}"
                );
            }
        }
    }

    #[test]
    fn guests_get_4_0_without_userns_on_an_apparmor_4_host() {
        let host = HostSupport {
            abi_4_0: true,
            userns: true,
        };
        let g = choose(ProfileKind::LibvirtGuest, host);
        assert_eq!(g.abi, Abi::V4_0);
        assert!(!g.userns, "QEMU must not create user namespaces");
        assert_eq!(choose(ProfileKind::LxcContainer, host).abi, Abi::V3_0);
        assert_eq!(choose(ProfileKind::AaVirt, host).abi, Abi::V3_0);
    }

    #[test]
    fn userns_is_only_ever_emitted_under_4_0() {
        for abi_4_0 in [false, true] {
            for userns in [false, true] {
                for k in ALL {
                    let p = choose(k, HostSupport { abi_4_0, userns });
                    assert!(!p.userns || (p.abi == Abi::V4_0 && userns), "{k:?}");
                }
            }
        }
    }

    #[test]
    fn the_abi_file_tells_4_0() {
        let d = tempfile::tempdir().unwrap();
        assert!(!HostSupport::from_files(d.path()).abi_4_0);
        std::fs::create_dir_all(d.path().join("abi")).unwrap();
        std::fs::write(d.path().join("abi/3.0"), "").unwrap();
        assert!(!HostSupport::from_files(d.path()).abi_4_0);
        std::fs::write(d.path().join("abi/4.0"), "").unwrap();
        assert!(HostSupport::from_files(d.path()).abi_4_0);
    }

    #[test]
    fn versions_name_the_abi_files() {
        assert_eq!(Abi::V3_0.version(), "3.0");
        assert_eq!(Abi::V4_0.version(), "4.0");
    }
}
