//! Helper mode's diversion: `dpkg-divert --local --rename` moves libvirt's
//! `virt-aa-helper` to `virt-aa-helper.real`, and a symlink to the aa-virt
//! binary takes its place, so libvirt runs aa-virt as its helper (aa-virt
//! acts as the helper when run under that name).
//!
//! Every step looks at the target system first (what dpkg says is
//! diverted, what is at the helper path) and does only what is missing, so
//! running it again changes nothing. A file at the helper path that is not
//! a symlink to aa-virt is never removed or replaced.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{InstallError, Options, Report};

/// libvirt's helper, which helper mode replaces (package `libvirt-daemon`).
pub const HELPER_PATH: &str = "/usr/lib/libvirt/virt-aa-helper";

/// The package that ships [`HELPER_PATH`] on Debian.
const HELPER_PACKAGE: &str = "libvirt-daemon";

/// A diversion aa-virt made (or adopted), as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diversion {
    /// The diverted path, as the target system sees it.
    pub path: String,
    /// Where dpkg-divert moved libvirt's helper.
    pub divert_to: String,
    /// What aa-virt's symlink at `path` points at.
    pub link: String,
}

/// What [`apply`] has to do; worked out by [`plan`] before anything is
/// written.
#[derive(Debug)]
pub(super) struct Plan {
    divert: bool,
    link: LinkStep,
}

#[derive(Debug, PartialEq)]
enum LinkStep {
    /// Already a symlink to the binary.
    Keep,
    /// Nothing there (after the diversion moves the helper away).
    Create,
    /// aa-virt's symlink to an older binary path.
    Replace,
}

fn real_path() -> String {
    format!("{HELPER_PATH}.real")
}

/// Run dpkg-divert against the target's dpkg database; its stdout.
fn dpkg_divert(o: &Options, args: &[&str]) -> Result<String, InstallError> {
    let mut c = Command::new("dpkg-divert");
    if !o.is_live() {
        c.arg("--root")
            .arg(&o.root)
            .env_remove("DPKG_ROOT")
            .env_remove("DPKG_ADMINDIR");
    }
    c.args(args).env("LC_ALL", "C");
    let shown = format!("dpkg-divert {}", args.join(" "));
    let out = c.output().map_err(|e| InstallError::Divert {
        command: shown.clone(),
        message: format!("cannot run it: {e} (helper mode needs dpkg)"),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let text = String::from_utf8_lossy(&out.stdout);
        return Err(InstallError::Divert {
            command: shown,
            message: format!("{} {}", err.trim(), text.trim()).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Who diverts [`HELPER_PATH`] and where to: `None` when nobody does.
fn current(o: &Options) -> Result<Option<(String, String)>, InstallError> {
    let who = dpkg_divert(o, &["--listpackage", HELPER_PATH])?;
    if who.is_empty() {
        return Ok(None);
    }
    let to = dpkg_divert(o, &["--truename", HELPER_PATH])?;
    Ok(Some((who, to)))
}

/// What is at a path without following a symlink: `None` when nothing,
/// `Some(Some(target))` for a symlink, `Some(None)` for anything else.
fn entry(p: &Path) -> Result<Option<Option<PathBuf>>, InstallError> {
    let read = |source| InstallError::Read {
        path: p.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read(e)),
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::read_link(p).map(|t| Some(Some(t))).map_err(read)
        }
        Ok(_) => Ok(Some(None)),
    }
}

fn refuse(o: &Options, message: String) -> InstallError {
    InstallError::Helper {
        path: o.show(&o.at(HELPER_PATH.trim_start_matches('/'))),
        message,
    }
}

/// Check that helper mode can be set up, before anything is written.
pub(super) fn plan(o: &Options, recorded: Option<&Diversion>) -> Result<Plan, InstallError> {
    let helper = o.at(HELPER_PATH.trim_start_matches('/'));
    let real = real_path();
    let old_link = recorded.map(|d| PathBuf::from(&d.link));
    let ours = |t: &Path| t == o.exe || Some(t) == old_link.as_deref();
    match current(o)? {
        None => match entry(&helper)? {
            None => Err(refuse(
                o,
                format!("libvirt's helper is missing (package {HELPER_PACKAGE}); install {HELPER_PACKAGE}, or use hook mode (aa-virt install --mode hook)"),
            )),
            Some(Some(t)) if ours(&t) => Err(refuse(
                o,
                format!("is a symlink to aa-virt but not diverted, so libvirt's helper is gone; reinstall {HELPER_PACKAGE}, then run this again"),
            )),
            Some(_) => {
                if entry(&o.at(real.trim_start_matches('/')))?.is_some() {
                    return Err(refuse(
                        o,
                        format!("{real} exists already, and dpkg-divert will not move the helper onto it; move it away first"),
                    ));
                }
                Ok(Plan {
                    divert: true,
                    link: LinkStep::Create,
                })
            }
        },
        Some((who, to)) if who == "LOCAL" && to == real => {
            let link = match entry(&helper)? {
                None => LinkStep::Create,
                Some(Some(t)) if t == o.exe => LinkStep::Keep,
                Some(Some(t)) if ours(&t) => LinkStep::Replace,
                Some(_) => {
                    return Err(refuse(
                        o,
                        format!("diverted to {real}, but what is there now is not a symlink to aa-virt; aa-virt does not replace it (remove it, or use hook mode)"),
                    ))
                }
            };
            Ok(Plan {
                divert: false,
                link,
            })
        }
        Some((who, to)) => Err(refuse(
            o,
            format!("already diverted to {to} by {who}; aa-virt manages only a local diversion to {real}"),
        )),
    }
}

/// Put a symlink to the binary at the helper path, atomically.
fn link(o: &Options) -> Result<(), InstallError> {
    let helper = o.at(HELPER_PATH.trim_start_matches('/'));
    let tmp = helper.with_file_name(".virt-aa-helper.aa-virt-new");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Link { path, source }
    };
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&o.exe, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &helper).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(&helper)(e)
    })
}

/// Carry out a [`plan`]: divert, then link. When linking fails, the
/// diversion made here is undone. Returns the diversion to record and
/// whether anything changed.
pub(super) fn apply(
    o: &Options,
    p: &Plan,
    rep: &mut Report,
) -> Result<(Diversion, bool), InstallError> {
    let real = real_path();
    let exe = o.exe.to_string_lossy().into_owned();
    if p.divert {
        dpkg_divert(
            o,
            &[
                "--local",
                "--rename",
                "--divert",
                &real,
                "--add",
                HELPER_PATH,
            ],
        )?;
        rep.say(
            true,
            format!("diverted  {HELPER_PATH} to {real} (dpkg-divert --local)"),
        );
    } else {
        rep.say(false, format!("already   diverted {HELPER_PATH} to {real}"));
    }
    match p.link {
        LinkStep::Keep => rep.say(false, format!("already   linked {HELPER_PATH} -> {exe}")),
        LinkStep::Create | LinkStep::Replace => {
            if let Err(e) = link(o) {
                if p.divert {
                    let _ = dpkg_divert(o, &["--local", "--rename", "--remove", HELPER_PATH]);
                }
                return Err(e);
            }
            rep.say(true, format!("linked    {HELPER_PATH} -> {exe}"));
        }
    }
    let d = Diversion {
        path: HELPER_PATH.to_string(),
        divert_to: real,
        link: exe,
    };
    Ok((d, p.divert || p.link != LinkStep::Keep))
}

/// What [`undo`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Undo {
    /// Helper mode was already gone.
    Nothing,
    /// Removed the symlink and/or the diversion.
    Done,
    /// A file that is not aa-virt's symlink stands at the helper path:
    /// kept and reported, and the diversion stays.
    Blocked,
}

/// Undo a recorded diversion: remove aa-virt's symlink (only that), then
/// let dpkg-divert move libvirt's helper back.
pub(super) fn undo(o: &Options, d: &Diversion, rep: &mut Report) -> Result<Undo, InstallError> {
    let helper = o.at(HELPER_PATH.trim_start_matches('/'));
    let diverted = matches!(current(o)?, Some((who, to)) if who == "LOCAL" && to == d.divert_to);
    let mut removed_link = false;
    match entry(&helper)? {
        None => {}
        Some(Some(t)) if t == Path::new(&d.link) || t == o.exe => {
            if !diverted {
                // dpkg-divert no longer knows the diversion: a symlink with
                // no helper behind it is still aa-virt's to remove.
                crate::store::remove(&helper)?;
                rep.say(
                    true,
                    format!("removed   {HELPER_PATH} (symlink to aa-virt)"),
                );
                rep.say(
                    false,
                    format!("note: {HELPER_PATH} was not diverted any more; reinstall {HELPER_PACKAGE} to get libvirt's helper back"),
                );
                return Ok(Undo::Done);
            }
            crate::store::remove(&helper)?;
            removed_link = true;
        }
        Some(_) => {
            rep.say(
                false,
                format!(
                    "kept      {HELPER_PATH}: not aa-virt's symlink; the diversion to {} stays (remove the file, then: dpkg-divert --rename --remove {HELPER_PATH})",
                    d.divert_to
                ),
            );
            return Ok(Undo::Blocked);
        }
    }
    if !diverted {
        return Ok(Undo::Nothing);
    }
    if let Err(e) = dpkg_divert(o, &["--local", "--rename", "--remove", HELPER_PATH]) {
        if removed_link {
            let _ = link_to(&helper, Path::new(&d.link));
        }
        return Err(e);
    }
    if removed_link {
        rep.say(
            true,
            format!("removed   {HELPER_PATH} (symlink to aa-virt)"),
        );
    }
    rep.say(
        true,
        format!(
            "undiverted {HELPER_PATH}: libvirt's helper is back from {}",
            d.divert_to
        ),
    );
    Ok(Undo::Done)
}

fn link_to(at: &Path, target: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}
