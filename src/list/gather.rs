//! Gathering, concurrently (one blocking task each): every libvirt URI's
//! domains, every lxcpath's containers, the kernel's loaded profiles and
//! namespaces, the generated `.files` present, and one pass over the audit
//! log; then each guest is assessed ([`super::assess`]).

use std::collections::HashSet;

use super::assess::Ctx;
use super::{
    denials, AppArmorInfo, DenialInfo, ListError, ListOptions, ListReport, SourceInfo,
    SCHEMA_VERSION,
};
use crate::apparmor::securityfs::LoadedProfiles;
use crate::apparmor::{KernelStatus, Root};
use crate::libvirt::conn::{self, Conn, DomainInfo, SecurityModel};
use crate::libvirt::naming;
use crate::libvirt::profile::Layout;
use crate::lxc::sys as lxc;

/// What the kernel says, read once.
pub(super) struct KernelFacts {
    pub(super) status: KernelStatus,
    pub(super) profiles: Option<LoadedProfiles>,
    pub(super) profiles_error: Option<String>,
    pub(super) ns_stacked: Option<bool>,
}

impl KernelFacts {
    pub(super) fn read(root: &Root) -> KernelFacts {
        let status = root.kernel_status();
        let (mut profiles, mut profiles_error, mut ns_stacked) = (None, None, None);
        if status.is_available() {
            match root.profiles() {
                Ok(p) => profiles = Some(p),
                Err(e) => profiles_error = Some(e.to_string()),
            }
            ns_stacked = root.ns_view().map(|v| v.stacked);
        }
        KernelFacts {
            status,
            profiles,
            profiles_error,
            ns_stacked,
        }
    }

    /// Why kernel facts are missing, if they are.
    pub(super) fn unavailable(&self) -> Option<String> {
        match &self.status {
            KernelStatus::Unavailable(r) => Some(format!("AppArmor not available: {r}")),
            KernelStatus::Available { .. } => self.profiles_error.clone(),
        }
    }
}

type LibvirtResult = Result<(Vec<DomainInfo>, Option<SecurityModel>), conn::ConnError>;

fn query_libvirt(uri: &str) -> LibvirtResult {
    let c = Conn::open(uri)?;
    let domains = c.domains(true)?;
    let model = c.security_model().ok();
    c.close()?;
    Ok((domains, model))
}

/// The names of the `.files` present in the libvirt policy directory.
fn files_present(layout: &Layout) -> HashSet<String> {
    std::fs::read_dir(layout.libvirt_dir())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(naming::FILES_SUFFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Gather everything, concurrently. `keep` selects log records to keep in
/// full (for `status`).
pub fn gather(
    opts: &ListOptions,
    keep: impl Fn(&denials::Record) -> bool + Send + 'static,
) -> Result<(ListReport, denials::Summary), ListError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(ListError::Runtime)?;
    let (lv, lx, kernel, summary, present) = rt.block_on(async {
        let lv: Vec<_> = opts
            .uris
            .iter()
            .map(|u| {
                let u = u.clone();
                tokio::task::spawn_blocking(move || query_libvirt(&u))
            })
            .collect();
        let lx: Vec<_> = opts
            .lxcpaths
            .iter()
            .map(|p| {
                let p = p.clone();
                tokio::task::spawn_blocking(move || lxc::list(&p))
            })
            .collect();
        let root = opts.root.clone();
        let kernel = tokio::task::spawn_blocking(move || KernelFacts::read(&root));
        let (log, rootp) = (opts.log.clone(), opts.root.path().to_path_buf());
        let summary = tokio::task::spawn_blocking(move || denials::read(&log, &rootp, &keep));
        let layout = opts.layout.clone();
        let present = tokio::task::spawn_blocking(move || files_present(&layout));
        let mut lv_out = Vec::new();
        for h in lv {
            lv_out.push(h.await);
        }
        let mut lx_out = Vec::new();
        for h in lx {
            lx_out.push(h.await);
        }
        (lv_out, lx_out, kernel.await, summary.await, present.await)
    });
    let join = |e: tokio::task::JoinError| format!("internal error: a listing task failed: {e}");
    let kernel = kernel.unwrap_or_else(|e| KernelFacts {
        status: KernelStatus::Unavailable(join(e)),
        profiles: None,
        profiles_error: None,
        ns_stacked: None,
    });
    let summary = summary.unwrap_or_else(|e| denials::Summary {
        note: Some(join(e)),
        ..Default::default()
    });
    let present = present.unwrap_or_default();

    let ctx = Ctx {
        opts,
        kernel: &kernel,
        summary: &summary,
        present: &present,
    };
    let mut sources = Vec::new();
    let mut guests = Vec::new();
    for (uri, res) in opts.uris.iter().zip(lv) {
        let local = conn::is_local_uri(uri);
        let mut si = SourceInfo {
            kind: "libvirt",
            location: uri.clone(),
            local,
            ok: false,
            guests: 0,
            security_model: None,
            error: None,
            note: None,
        };
        let res = match res {
            Err(e) => Err((join(e), false)),
            Ok(Err(e)) => Err((e.to_string(), matches!(e, conn::ConnError::Connect { .. }))),
            Ok(Ok(v)) => Ok(v),
        };
        match res {
            Ok((doms, model)) => {
                si.ok = true;
                si.guests = doms.len();
                si.security_model = model.map(|m| m.model);
                for d in &doms {
                    guests.push(ctx.qemu(uri, local, si.security_model.as_deref(), d));
                }
            }
            // A default URI with nothing behind it is a note.
            Err((e, true)) if opts.default_uris => {
                si.note = Some(format!(
                    "{e}; no libvirt guests listed (give --connect URI to query another host)"
                ));
            }
            Err((e, _)) => si.error = Some(e),
        }
        sources.push(si);
    }
    for (path, res) in opts.lxcpaths.iter().zip(lx) {
        let mut si = SourceInfo {
            kind: "lxc",
            location: path.display().to_string(),
            local: true,
            ok: false,
            guests: 0,
            security_model: None,
            error: None,
            note: None,
        };
        match res.map_err(join).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(cts) => {
                si.ok = true;
                si.guests = cts.len();
                for c in &cts {
                    guests.push(ctx.lxc(c));
                }
            }
            Err(e) => si.error = Some(e),
        }
        sources.push(si);
    }
    let mut report = ListReport {
        schema_version: SCHEMA_VERSION,
        apparmor: AppArmorInfo {
            available: kernel.status.is_available(),
            reason: match &kernel.status {
                KernelStatus::Unavailable(r) => Some(r.clone()),
                KernelStatus::Available { .. } => kernel.profiles_error.clone(),
            },
            profiles_loaded: kernel.profiles.as_ref().map(LoadedProfiles::len),
            ns_stacked: kernel.ns_stacked,
        },
        denials: DenialInfo {
            source: summary.source.as_ref().map(|s| s.to_string()),
            note: summary.note.clone(),
        },
        sources,
        guests,
    };
    super::stale::assess(opts, &mut report);
    Ok((report, summary))
}
