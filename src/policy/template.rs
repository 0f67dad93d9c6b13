//! Profile text from templates in `templates/`.
//!
//! The templates are plain files in the source tree, compiled into the binary
//! so that it works with nothing installed; `--templates DIR` (or
//! `AA_VIRT_TEMPLATES`) points at a directory of the same layout to override
//! them, which is how an admin customises them without rebuilding.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;

use crate::guest::{display_bytes, Guest};

use super::rules::RuleSet;

/// Template files, relative to the templates directory, with their built-in text.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "libvirt/TEMPLATE.qemu.hbs",
        include_str!("../../templates/libvirt/TEMPLATE.qemu.hbs"),
    ),
    (
        "libvirt/files.hbs",
        include_str!("../../templates/libvirt/files.hbs"),
    ),
    (
        "apparmor.d/usr.bin.aa-virt.hbs",
        include_str!("../../templates/apparmor.d/usr.bin.aa-virt.hbs"),
    ),
    (
        "apparmor.d/local/daemon.aa-virt.hbs",
        include_str!("../../templates/apparmor.d/local/daemon.aa-virt.hbs"),
    ),
    (
        "lxc/container.hbs",
        include_str!("../../templates/lxc/container.hbs"),
    ),
];

/// Abstractions aa-virt ships, relative to `/etc/apparmor.d`.
pub const ABSTRACTIONS: &[(&str, &str)] = &[(
    "abstractions/aa-virt-qemu",
    include_str!("../../templates/apparmor.d/abstractions/aa-virt-qemu"),
)];

/// Template errors.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A template file could not be read.
    #[error("cannot read template {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A template does not parse.
    #[error("template {name}: {source}")]
    Parse {
        /// Template name.
        name: String,
        /// Why.
        source: Box<handlebars::TemplateError>,
    },
    /// Rendering failed (a missing variable, in strict mode).
    #[error("rendering {name}: {source}")]
    Render {
        /// Template name.
        name: String,
        /// Why.
        source: Box<handlebars::RenderError>,
    },
}

/// The loaded templates.
pub struct Templates {
    hb: Handlebars<'static>,
    dir: Option<PathBuf>,
    includes: Vec<String>,
}

#[derive(Serialize)]
struct RuleLine {
    line: String,
    origin: String,
}

#[derive(Serialize)]
struct ProfileCtx<'a> {
    name: String,
    uuid: String,
    profile: &'a str,
    complain: bool,
    rules: Vec<RuleLine>,
    includes: &'a [String],
}

impl Templates {
    /// Load templates from `dir`, or the built-in ones when `dir` is `None`.
    /// A file missing from `dir` falls back to the built-in text.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        for (name, text) in BUILTIN {
            let owned;
            let src = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(p) => {
                    owned = std::fs::read_to_string(&p)
                        .map_err(|source| TemplateError::Read { path: p, source })?;
                    owned.as_str()
                }
                None => text,
            };
            hb.register_template_string(name, src)
                .map_err(|source| TemplateError::Parse {
                    name: name.to_string(),
                    source: Box::new(source),
                })?;
        }
        Ok(Templates {
            hb,
            dir: dir.map(Path::to_path_buf),
            includes: Vec::new(),
        })
    }

    /// Extra files (relative to `/etc/apparmor.d`, already validated as
    /// plain relative names) that every generated rules file includes: the
    /// site-wide additions from the configuration.
    pub fn with_includes(mut self, includes: Vec<String>) -> Templates {
        self.includes = includes;
        self
    }

    /// The text of an abstraction (`abstractions/aa-virt-qemu`), from the
    /// override directory's `apparmor.d/` when present.
    pub fn abstraction(&self, rel: &str) -> Result<String, TemplateError> {
        if let Some(p) = self.dir.as_ref().map(|d| d.join("apparmor.d").join(rel)) {
            if p.exists() {
                return std::fs::read_to_string(&p)
                    .map_err(|source| TemplateError::Read { path: p, source });
            }
        }
        Ok(ABSTRACTIONS
            .iter()
            .find(|(n, _)| *n == rel)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default())
    }

    fn ctx<'a>(
        &'a self,
        guest: &Guest,
        profile: &'a str,
        complain: bool,
        rules: Option<&RuleSet>,
    ) -> ProfileCtx<'a> {
        ProfileCtx {
            name: display_bytes(guest.name.as_bytes()).replace('"', "\\\""),
            uuid: guest.uuid.map(|u| u.to_string()).unwrap_or_default(),
            profile,
            complain,
            rules: rules
                .map(|s| {
                    s.rules()
                        .iter()
                        .map(|r| RuleLine {
                            line: r.render(),
                            origin: display_bytes(r.origins.join("; ").as_bytes()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            includes: &self.includes,
        }
    }

    fn render(&self, name: &str, ctx: &ProfileCtx<'_>) -> Result<String, TemplateError> {
        self.render_with(name, ctx)
    }

    /// Render any of the [`BUILTIN`] templates (or its override) with a
    /// caller-supplied context; values are inserted verbatim, so the caller
    /// escapes them (paths through [`crate::policy::escape`]).
    pub fn render_with<T: Serialize>(&self, name: &str, ctx: &T) -> Result<String, TemplateError> {
        self.hb
            .render(name, ctx)
            .map_err(|source| TemplateError::Render {
                name: name.into(),
                source: Box::new(source),
            })
    }

    /// The per-guest profile, created once (`/etc/apparmor.d/libvirt/<profile>`).
    pub fn libvirt_profile(
        &self,
        guest: &Guest,
        profile: &str,
        complain: bool,
    ) -> Result<String, TemplateError> {
        self.render(
            "libvirt/TEMPLATE.qemu.hbs",
            &self.ctx(guest, profile, complain, None),
        )
    }

    /// The generated rules file (`<profile>.files`).
    pub fn libvirt_files(
        &self,
        guest: &Guest,
        profile: &str,
        rules: &RuleSet,
    ) -> Result<String, TemplateError> {
        self.render(
            "libvirt/files.hbs",
            &self.ctx(guest, profile, false, Some(rules)),
        )
    }
}
