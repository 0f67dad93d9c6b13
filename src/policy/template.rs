//! Profile text from templates in `templates/`.
//!
//! The templates are plain files in the source tree, compiled into the binary
//! so that it works with nothing installed; `--templates DIR` (or
//! `AA_VIRT_TEMPLATES`) points at a directory of the same layout to override
//! them, which is how an admin customises them without rebuilding.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use serde::Serialize;

use crate::guest::Guest;

use super::abi::{self, HostSupport, ProfileKind};
use super::escape::display_bytes;

use super::rules::{Rule, RuleSet};

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
pub const ABSTRACTIONS: &[(&str, &str)] = &[
    (
        QEMU_ABSTRACTION,
        include_str!("../../templates/apparmor.d/abstractions/aa-virt-qemu"),
    ),
    (
        GL_ABSTRACTION,
        include_str!("../../templates/apparmor.d/abstractions/aa-virt-qemu-gl"),
    ),
];

/// The abstraction every libvirt guest's profile includes
/// (`libvirt/TEMPLATE.qemu.hbs`).
pub const QEMU_ABSTRACTION: &str = "abstractions/aa-virt-qemu";

/// aa-virt's abstractions a libvirt guest's policy includes, in
/// [`ABSTRACTIONS`] order: QEMU's always, GL's when the guest uses GL.
pub fn libvirt_abstractions(gl: bool) -> Vec<&'static str> {
    let mut v = vec![QEMU_ABSTRACTION];
    if gl {
        v.push(GL_ABSTRACTION);
    }
    v
}

/// The abstraction the rules of a guest that uses OpenGL include
/// ([`Guest::gl`]): Mesa's drivers and the GPU facts they read.
pub const GL_ABSTRACTION: &str = "abstractions/aa-virt-qemu-gl";

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
///
/// Sources are read at [`Templates::load`]; each template is compiled the
/// first time it is rendered. Compiling all of them up front cost most of
/// a `profile` run's CPU time (the LXC container template alone is 10 KB),
/// and a command renders at most two. [`Templates::validate`] compiles
/// every one, for tests and checks.
pub struct Templates {
    hb: std::sync::Mutex<Handlebars<'static>>,
    sources: Vec<(&'static str, String)>,
    dir: Option<PathBuf>,
    includes: Vec<String>,
    host: HostSupport,
}

/// One rule as templates see it (`libvirt/files.hbs`, `lxc/container.hbs`).
#[derive(Debug, Clone, Serialize)]
pub struct RuleLine {
    /// The whole line, rule and origins ([`Rule::line`]); what the shipped
    /// templates print.
    pub text: String,
    /// The rule alone ([`Rule::render`]), for templates that lay lines out
    /// their own way.
    pub line: String,
    /// The devices that need it, `; `-separated, display-escaped.
    pub origin: String,
}

impl RuleLine {
    /// The template's view of `rule`.
    pub fn of(rule: &Rule) -> RuleLine {
        RuleLine {
            text: rule.line(),
            line: rule.render(),
            origin: display_bytes(rule.origins.join("; ").as_bytes()),
        }
    }

    /// The template's view of every rule in `set`, in order.
    pub fn all(set: &RuleSet) -> Vec<RuleLine> {
        set.rules().iter().map(RuleLine::of).collect()
    }
}

#[derive(Serialize)]
struct ProfileCtx<'a> {
    name: String,
    uuid: String,
    profile: &'a str,
    /// The policy ABI the profile declares (`4.0`), from [`abi::choose`].
    abi: &'static str,
    complain: bool,
    rules: Vec<RuleLine>,
    /// The GL abstraction, for a guest that uses GL ([`Guest::gl`]).
    gl: Option<&'static str>,
    includes: &'a [String],
}

impl Templates {
    /// Load templates from `dir`, or the built-in ones when `dir` is `None`.
    /// A file missing from `dir` falls back to the built-in text.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        let mut sources = Vec::with_capacity(BUILTIN.len());
        for (name, text) in BUILTIN {
            let src = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(p) => std::fs::read_to_string(&p)
                    .map_err(|source| TemplateError::Read { path: p, source })?,
                None => text.to_string(),
            };
            sources.push((*name, src));
        }
        Ok(Templates {
            hb: std::sync::Mutex::new(hb),
            sources,
            dir: dir.map(Path::to_path_buf),
            includes: Vec::new(),
            host: HostSupport::from_files(Path::new(crate::apparmor::parser::BASE_DIR)),
        })
    }

    fn compile(&self, hb: &mut Handlebars<'static>, name: &str) -> Result<(), TemplateError> {
        if hb.has_template(name) {
            return Ok(());
        }
        let src = self
            .sources
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.as_str())
            .unwrap_or_default();
        hb.register_template_string(name, src)
            .map_err(|source| TemplateError::Parse {
                name: name.to_string(),
                source: Box::new(source),
            })
    }

    /// Compile every template now, so a broken override is reported even
    /// if nothing renders it yet.
    pub fn validate(&self) -> Result<(), TemplateError> {
        let mut hb = self.hb.lock().unwrap_or_else(|e| e.into_inner());
        for (name, _) in &self.sources {
            self.compile(&mut hb, name)?;
        }
        Ok(())
    }

    /// Extra files (relative to `/etc/apparmor.d`, already validated as
    /// plain relative names) that every generated rules file includes: the
    /// site-wide additions from the configuration.
    pub fn with_includes(mut self, includes: Vec<String>) -> Templates {
        self.includes = includes;
        self
    }

    /// Render for a host that supports `host` (the policy ABI and the
    /// AppArmor 4 rules profiles may use) instead of this one's.
    pub fn with_host(mut self, host: HostSupport) -> Templates {
        self.host = host;
        self
    }

    /// What the host the profiles are rendered for supports: by default,
    /// this host's, from the ABI files in `/etc/apparmor.d/abi/`.
    pub fn host(&self) -> HostSupport {
        self.host
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
            abi: abi::choose(ProfileKind::LibvirtGuest, self.host)
                .abi
                .version(),
            complain,
            rules: rules.map(RuleLine::all).unwrap_or_default(),
            gl: guest.gl.then_some(GL_ABSTRACTION),
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
        let mut hb = self.hb.lock().unwrap_or_else(|e| e.into_inner());
        self.compile(&mut hb, name)?;
        hb.render(name, ctx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_template_compiles() {
        Templates::load(None).unwrap().validate().unwrap();
    }

    #[test]
    fn a_broken_override_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("libvirt")).unwrap();
        std::fs::write(
            d.path().join("libvirt/files.hbs"),
            "{{#each rules}}unclosed",
        )
        .unwrap();
        let t = Templates::load(Some(d.path())).unwrap();
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("libvirt/files.hbs"), "{e}");
        let g = Guest::new(crate::guest::GuestKind::Qemu, "x");
        assert!(t.libvirt_files(&g, "p", &RuleSet::default()).is_err());
    }
}
