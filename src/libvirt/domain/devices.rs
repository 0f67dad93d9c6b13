//! The other devices that open host files: TPM, shared memory, input,
//! network back ends, memory devices, graphics and video, smartcards,
//! audio, random number generators and confidential-computing devices.

use roxmltree::Node;

use super::{attr, child, child_path, children, yes, DomainError, Reader};
use crate::guest::{Access, RunPath, Scope};

/// swtpm's per-guest state lives in `<dir>/<uuid>/tpm2` (or `tpm1.2`).
pub const SWTPM_STATE_DIR: &str = "/var/lib/libvirt/swtpm";
/// swtpm's log directory; the log is `<name>-swtpm.log`.
pub const SWTPM_LOG_DIR: &str = "/var/log/swtpm/libvirt/qemu";
/// swtpm's socket and pid file, named `<id>-<short name>-swtpm.{sock,pid}`.
pub const SWTPM_RUN_DIR: &str = "/run/libvirt/qemu/swtpm";
/// The NSS database QEMU reads for `<smartcard mode='host'>`.
pub const NSS_DB: &str = "/etc/pki/nssdb";

impl Reader<'_> {
    /// `<tpm>`: swtpm's state tree, log, socket and pid file for an emulated
    /// TPM (swtpm runs under the guest's profile); the device for
    /// passthrough; the socket for an external emulator.
    pub(crate) fn tpm(&mut self, tpm: Node<'_, '_>) {
        let origin = self.next_origin("tpm");
        let Some(be) = child(tpm, "backend") else {
            self.g.skip(origin, "TPM without a backend");
            return;
        };
        match be.attribute("type").unwrap_or("") {
            "emulator" => self.swtpm(be, &origin),
            "passthrough" => {
                let o = format!("{origin} (passthrough)");
                let dev = child(be, "device")
                    .and_then(|d| attr(d, "path"))
                    .unwrap_or("/dev/tpm0");
                self.file(dev, Access::RW, o.clone());
                self.g.skip(
                    format!("{o}, cancel file"),
                    "libvirt opens the TPM's sysfs cancel file itself and hands QEMU a descriptor",
                );
            }
            "external" => match child(be, "source").and_then(|s| attr(s, "path")) {
                Some(p) => self.file(p, Access::RW, format!("{origin} (external socket)")),
                None => self.g.skip(origin, "external TPM without a socket path"),
            },
            other => self
                .g
                .skip(origin, format!("{other} TPM backend: no host file")),
        }
    }

    fn swtpm(&mut self, be: Node<'_, '_>, origin: &str) {
        let o = format!("{origin} (swtpm)");
        let ver = match be.attribute("version") {
            Some("1.2") => "tpm1.2",
            // libvirt's default, and anything newer it does not know yet.
            _ => "tpm2",
        };
        let src = child(be, "source");
        match (
            src.and_then(|s| s.attribute("type")),
            src.and_then(|s| attr(s, "path")),
        ) {
            (Some("file"), Some(p)) => self.file(p, Access::RWK, format!("{o} state")),
            (Some("dir"), Some(p)) => self.tree(p, Access::RWK, format!("{o} state")),
            _ => {
                let uuid = self
                    .g
                    .uuid
                    .map(|u| u.hyphenated().to_string())
                    .unwrap_or_default();
                self.tree(
                    format!("{SWTPM_STATE_DIR}/{uuid}/{ver}"),
                    Access::RWK,
                    format!("{o} state"),
                );
            }
        }
        let log = format!("{SWTPM_LOG_DIR}/{}-swtpm.log", self.g.name);
        self.file(log, Access::W, format!("{o} log"));
        for (suffix, what) in [("-swtpm.sock", "socket"), ("-swtpm.pid", "pid file")] {
            self.g.run_paths.push(RunPath {
                dir: SWTPM_RUN_DIR.into(),
                prefix: String::new(),
                suffix: suffix.into(),
                access: Access::RW,
                scope: Scope::File,
                origin: format!("{o} {what}"),
            });
        }
    }

    /// `<shmem>`: the ivshmem server's socket, or the shared-memory object.
    pub(crate) fn shmem(&mut self, sh: Node<'_, '_>) {
        let name = sh.attribute("name").unwrap_or("");
        let origin = format!("shmem {name}");
        let model = child(sh, "model")
            .and_then(|m| m.attribute("type"))
            .unwrap_or("ivshmem");
        let server = child(sh, "server");
        match (model, server) {
            (_, Some(s)) => {
                let p = attr(s, "path")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("/var/lib/libvirt/shmem-{name}-sock"));
                self.file(p, Access::RW, format!("{origin} (server socket)"));
            }
            ("ivshmem-doorbell", None) => self.file(
                format!("/var/lib/libvirt/shmem-{name}-sock"),
                Access::RW,
                format!("{origin} (server socket)"),
            ),
            // Legacy ivshmem without a server: QEMU maps /dev/shm/NAME; libvirt's
            // own helper grants the default server socket, so grant both.
            ("ivshmem", None) => {
                self.file(format!("/dev/shm/{name}"), Access::RW, origin.clone());
                self.file(
                    format!("/var/lib/libvirt/shmem-{name}-sock"),
                    Access::RW,
                    format!("{origin} (server socket)"),
                );
            }
            _ => self.file(format!("/dev/shm/{name}"), Access::RW, origin),
        }
    }

    /// `<input type='evdev'|'passthrough'>`: the host event device.
    pub(crate) fn input(&mut self, inp: Node<'_, '_>) {
        let ty = inp.attribute("type").unwrap_or("");
        let a = match ty {
            "evdev" => "dev",
            "passthrough" => "evdev",
            _ => return,
        };
        let origin = self.next_origin("input");
        if let Some(p) = child(inp, "source").and_then(|s| attr(s, a)) {
            self.file(p, Access::RW, format!("{origin} ({ty})"));
        }
    }

    /// `<interface>`: vhost-user sockets, vDPA devices and SR-IOV PCI
    /// devices. Tap, bridge and direct interfaces get nothing: libvirt opens
    /// them and hands QEMU descriptors.
    pub(crate) fn interface(&mut self, i: Node<'_, '_>) -> Result<(), DomainError> {
        let origin = self.next_origin("interface");
        let ty = i.attribute("type").unwrap_or("");
        let src = child(i, "source");
        match ty {
            "vhostuser" => match src.and_then(|s| attr(s, "path")) {
                Some(p) => self.file(p, Access::RW, format!("{origin} (vhost-user socket)")),
                None => self
                    .g
                    .skip(origin, "vhost-user interface without a socket path"),
            },
            "vdpa" => {
                if let Some(p) = src.and_then(|s| attr(s, "dev")) {
                    self.file(p, Access::RW, format!("{origin} (vdpa)"));
                }
            }
            "hostdev" => {
                let vfio = child(i, "driver")
                    .and_then(|d| d.attribute("name"))
                    .is_none_or(|n| n == "vfio");
                if let Some(a) = src.and_then(|s| child(s, "address")) {
                    self.pci(a, vfio, &format!("{origin} (hostdev)"))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `<memory>` devices: nvdimm and virtio-pmem backing files, SGX EPC.
    pub(crate) fn memory_device(&mut self, m: Node<'_, '_>) {
        let model = m.attribute("model").unwrap_or("");
        match model {
            "nvdimm" | "virtio-pmem" => {
                let origin = self.next_origin("memory");
                if let Some(p) = child(m, "source").and_then(|s| child_path(s, "path")) {
                    self.file(p, Access::RW, format!("{origin} ({model})"));
                }
            }
            "sgx-epc" => {
                let origin = self.next_origin("memory");
                self.file("/dev/sgx_vepc", Access::RW, format!("{origin} (sgx-epc)"));
                self.file(
                    "/dev/sgx_provision",
                    Access::R,
                    format!("{origin} (sgx-epc)"),
                );
            }
            _ => {}
        }
    }

    /// `<graphics>`: UNIX listen sockets, the SDL X authority file, DBus
    /// sockets and GL render nodes.
    pub(crate) fn graphics(&mut self, gr: Node<'_, '_>) -> Result<(), DomainError> {
        let ty = gr.attribute("type").unwrap_or("");
        let origin = format!("{} ({ty})", self.next_origin("graphics"));
        if let Some(s) = attr(gr, "socket") {
            self.file(s, Access::RW, format!("{origin} socket"));
        }
        for l in children(gr, "listen") {
            if l.attribute("type") == Some("socket") {
                if let Some(s) = attr(l, "socket") {
                    self.file(s, Access::RW, format!("{origin} socket"));
                }
            }
        }
        if ty == "sdl" {
            if let Some(x) = attr(gr, "xauth") {
                self.file(x, Access::R, format!("{origin} X authority"));
            }
        }
        if ty == "dbus" {
            if let Some(p) = attr(gr, "address").and_then(|a| a.strip_prefix("unix:path=")) {
                let p = p.split(',').next().unwrap_or(p);
                self.file(p, Access::RW, format!("{origin} bus socket"));
            }
        }
        if let Some(gl) = child(gr, "gl") {
            if yes(gl, "enable") != Some(false) || ty == "egl-headless" {
                self.g.gl = true;
                self.render_node(attr(gl, "rendernode"), &origin);
            }
        } else if ty == "egl-headless" {
            self.g.gl = true;
            self.render_node(None, &origin);
        }
        Ok(())
    }

    /// `<video>`: a 3D-accelerated virtio GPU's render node (and GL).
    pub(crate) fn video(&mut self, v: Node<'_, '_>) -> Result<(), DomainError> {
        let origin = self.next_origin("video");
        if child(v, "driver").and_then(|d| d.attribute("name")) == Some("vhostuser") {
            self.g.skip(
                origin,
                "vhost-user GPU: libvirt starts the GPU process and hands QEMU its socket",
            );
            return Ok(());
        }
        if let Some(acc) = child(v, "model").and_then(|m| child(m, "acceleration")) {
            if yes(acc, "accel3d") == Some(true) {
                // virgl: QEMU renders the guest's 3D commands with host GL.
                self.g.gl = true;
                if let Some(r) = attr(acc, "rendernode") {
                    self.file(r, Access::RW, format!("{origin} render node"));
                }
            }
        }
        Ok(())
    }

    /// A GL render node: the one named, or the host's first
    /// `/dev/dri/renderD*` as libvirt picks it.
    fn render_node(&mut self, named: Option<&str>, origin: &str) {
        let o = format!("{origin} render node");
        if let Some(r) = named {
            self.file(r, Access::RW, o);
            return;
        }
        let mut nodes: Vec<String> = std::fs::read_dir(self.host("dev/dri"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("renderD"))
                    .collect()
            })
            .unwrap_or_default();
        nodes.sort();
        match nodes.first() {
            Some(n) => self.file(format!("/dev/dri/{n}"), Access::RW, o),
            None => self.g.skip(
                o,
                "GL is on but this host has no /dev/dri/renderD* node; libvirt will refuse to start the guest",
            ),
        }
    }

    /// `<smartcard>`: the NSS database for host modes, the chardev for
    /// passthrough.
    pub(crate) fn smartcard(&mut self, sc: Node<'_, '_>) {
        let origin = self.next_origin("smartcard");
        match sc.attribute("mode").unwrap_or("") {
            "host" => self.tree(NSS_DB, Access::RK, format!("{origin} (host) NSS database")),
            "host-certificates" => {
                let db = child_path(sc, "database").unwrap_or(NSS_DB);
                self.tree(
                    db,
                    Access::RK,
                    format!("{origin} (host-certificates) database"),
                );
            }
            "passthrough" => self.chardev_source(sc, &origin),
            other => self
                .g
                .skip(origin, format!("{other} smartcard: no host file")),
        }
    }

    /// `<audio>`: ALSA devices for the ALSA backend, the output file for
    /// the file backend.
    pub(crate) fn audio(&mut self, a: Node<'_, '_>) {
        let id = a.attribute("id").unwrap_or("?");
        let ty = a.attribute("type").unwrap_or("none");
        let origin = format!("audio {id} ({ty})");
        match ty {
            "alsa" => self.tree("/dev/snd", Access::RW, origin),
            "file" => {
                if let Some(p) = attr(a, "path") {
                    self.file(p, Access::RW, origin);
                }
            }
            _ => {}
        }
    }

    /// `<rng>`: the random device (`r`; `rw` for a hardware RNG), or the
    /// egd chardev.
    pub(crate) fn rng(&mut self, rng: Node<'_, '_>) {
        let origin = self.next_origin("rng");
        let Some(be) = child(rng, "backend") else {
            return;
        };
        match be.attribute("model").unwrap_or("") {
            "random" => {
                let p = be
                    .text()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/dev/urandom");
                let acc = if p == "/dev/hwrng" {
                    Access::RW
                } else {
                    Access::R
                };
                self.file(p, acc, format!("{origin} (random)"));
            }
            "egd" => self.chardev_source(be, &format!("{origin} egd")),
            _ => {}
        }
    }

    /// `<launchSecurity type='sev'|'sev-snp'>`: the SEV device.
    pub(crate) fn launch_security(&mut self, ls: Node<'_, '_>) {
        if let Some(t @ ("sev" | "sev-snp")) = ls.attribute("type") {
            self.file("/dev/sev", Access::RW, format!("launchSecurity ({t})"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::guest::{Access, RunPath, Scope};

    #[test]
    fn tpm_emulator_uses_the_real_version() {
        let g = devs("<tpm model='tpm-crb'><backend type='emulator'/></tpm>");
        assert_eq!(
            g.resources,
            vec![
                t(
                    &format!("/var/lib/libvirt/swtpm/{UUID}/tpm2"),
                    "rwk",
                    "tpm0 (swtpm) state"
                ),
                f(
                    "/var/log/swtpm/libvirt/qemu/vm1-swtpm.log",
                    "w",
                    "tpm0 (swtpm) log"
                ),
            ]
        );
        assert_eq!(
            g.run_paths,
            vec![
                RunPath {
                    dir: "/run/libvirt/qemu/swtpm".into(),
                    prefix: String::new(),
                    suffix: "-swtpm.sock".into(),
                    access: Access::RW,
                    scope: Scope::File,
                    origin: "tpm0 (swtpm) socket".into()
                },
                RunPath {
                    dir: "/run/libvirt/qemu/swtpm".into(),
                    prefix: String::new(),
                    suffix: "-swtpm.pid".into(),
                    access: Access::RW,
                    scope: Scope::File,
                    origin: "tpm0 (swtpm) pid file".into()
                },
            ]
        );
        let g = devs("<tpm model='tpm-tis'><backend type='emulator' version='1.2'/></tpm>");
        assert_eq!(
            g.resources[0].path.to_str().unwrap(),
            format!("/var/lib/libvirt/swtpm/{UUID}/tpm1.2")
        );
        assert!(g
            .resources
            .iter()
            .all(|r| !r.path.to_string_lossy().contains("null")));
    }

    #[test]
    fn tpm_passthrough_and_external() {
        let g = devs(
            "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>\
             <tpm model='tpm-crb'><backend type='external'><source type='unix' mode='connect' path='/run/ext-tpm.sock'/></backend></tpm>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/dev/tpm0", "rw", "tpm0 (passthrough)"),
                f("/run/ext-tpm.sock", "rw", "tpm1 (external socket)"),
            ]
        );
        assert_eq!(skips(&g)[0].0, "tpm0 (passthrough), cancel file");
    }

    #[test]
    fn shmem_models() {
        let g = devs(
            "<shmem name='plain'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>\
             <shmem name='bell'><model type='ivshmem-doorbell'/><server/></shmem>\
             <shmem name='bell2'><model type='ivshmem-doorbell'/><server path='/run/ivs.sock'/></shmem>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/dev/shm/plain", "rw", "shmem plain"),
                f(
                    "/var/lib/libvirt/shmem-bell-sock",
                    "rw",
                    "shmem bell (server socket)"
                ),
                f("/run/ivs.sock", "rw", "shmem bell2 (server socket)"),
            ]
        );
    }

    #[test]
    fn input_vhostuser_vdpa_memory_devices() {
        let g = devs(
            "<input type='evdev'><source dev='/dev/input/event3' grab='all'/></input>\
             <input type='passthrough' bus='virtio'><source evdev='/dev/input/event4'/></input>\
             <input type='tablet' bus='usb'/>\
             <interface type='vhostuser'><source type='unix' path='/run/vu0.sock' mode='server'/></interface>\
             <interface type='network'><source network='default'/></interface>\
             <interface type='vdpa'><source dev='/dev/vhost-vdpa-0'/></interface>\
             <memory model='nvdimm'><source><path>/srv/nvdimm</path></source><target><size unit='KiB'>1</size></target></memory>\
             <memory model='virtio-pmem'><source><path>/srv/pmem</path></source></memory>\
             <memory model='sgx-epc'><target><size unit='KiB'>64</size></target></memory>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/dev/input/event3", "rw", "input0 (evdev)"),
                f("/dev/input/event4", "rw", "input1 (passthrough)"),
                f("/run/vu0.sock", "rw", "interface0 (vhost-user socket)"),
                f("/dev/vhost-vdpa-0", "rw", "interface2 (vdpa)"),
                f("/srv/nvdimm", "rw", "memory0 (nvdimm)"),
                f("/srv/pmem", "rw", "memory1 (virtio-pmem)"),
                f("/dev/sgx_vepc", "rw", "memory2 (sgx-epc)"),
                f("/dev/sgx_provision", "r", "memory2 (sgx-epc)"),
            ]
        );
    }

    #[test]
    fn graphics_sockets_and_render_nodes() {
        let g = devs(
            "<graphics type='vnc' socket='/run/vnc.sock'/>\
             <graphics type='spice'><listen type='socket' socket='/run/spice.sock'/><gl enable='yes' rendernode='/dev/dri/renderD129'/></graphics>\
             <graphics type='sdl' display=':0' xauth='/home/u/.Xauthority'/>\
             <video><model type='virtio'><acceleration accel3d='yes' rendernode='/dev/dri/renderD130'/></model></video>\
             <video><driver name='vhostuser'/><model type='virtio'/></video>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/run/vnc.sock", "rw", "graphics0 (vnc) socket"),
                f("/run/spice.sock", "rw", "graphics1 (spice) socket"),
                f("/dev/dri/renderD129", "rw", "graphics1 (spice) render node"),
                f("/home/u/.Xauthority", "r", "graphics2 (sdl) X authority"),
                f("/dev/dri/renderD130", "rw", "video0 render node"),
            ]
        );
        assert_eq!(skips(&g)[0].0, "video1");
        // GL without a node: the host's first render node.
        let d = tempfile::tempdir().unwrap();
        for n in ["card0", "renderD129", "renderD128"] {
            std::fs::create_dir_all(d.path().join("dev/dri").join(n)).unwrap();
        }
        let g = try_guest(
            "",
            "<graphics type='egl-headless'/>",
            "",
            &crate::libvirt::domain::hostdev::tests::opts(d.path()),
        )
        .unwrap();
        assert_eq!(
            g.resources,
            vec![f(
                "/dev/dri/renderD128",
                "rw",
                "graphics0 (egl-headless) render node"
            )]
        );
        assert!(g.gl, "egl-headless renders with host GL");
    }

    #[test]
    fn which_guests_use_gl() {
        let gl = |x: &str| devs(x).gl;
        assert!(gl(
            "<graphics type='spice'><gl enable='yes' rendernode='/dev/dri/renderD128'/></graphics>"
        ));
        assert!(gl(
            "<graphics type='dbus'><gl enable='yes' rendernode='/dev/dri/renderD128'/></graphics>"
        ));
        assert!(gl(
            "<graphics type='egl-headless'><gl rendernode='/dev/dri/renderD128'/></graphics>"
        ));
        assert!(gl(
            "<video><model type='virtio'><acceleration accel3d='yes'/></model></video>"
        ));
        assert!(!gl("<graphics type='spice'><gl enable='no'/></graphics>"));
        assert!(!gl("<graphics type='vnc' socket='/run/vnc.sock'/>"));
        assert!(!gl(
            "<video><model type='virtio'><acceleration accel3d='no'/></model></video>"
        ));
        assert!(!gl("<video><model type='virtio'/></video>"));
    }

    #[test]
    fn smartcard_audio_rng_sev() {
        let g = guest(
            "",
            "<smartcard mode='host'/>\
             <smartcard mode='host-certificates'><certificate>a</certificate><database>/srv/nss</database></smartcard>\
             <smartcard mode='passthrough' type='unix'><source mode='connect' path='/run/sc.sock'/></smartcard>\
             <audio id='1' type='alsa'/><audio id='2' type='file' path='/srv/out.wav'/><audio id='3' type='none'/>\
             <rng model='virtio'><backend model='random'>/dev/hwrng</backend></rng>\
             <rng model='virtio'><backend model='random'/></rng>\
             <rng model='virtio'><backend model='egd' type='unix'><source mode='connect' path='/run/egd.sock'/></backend></rng>",
            "<launchSecurity type='sev'><policy>0x0003</policy></launchSecurity>",
        );
        assert_eq!(
            g.resources,
            vec![
                f("/dev/sev", "rw", "launchSecurity (sev)"),
                t("/etc/pki/nssdb", "rk", "smartcard0 (host) NSS database"),
                t("/srv/nss", "rk", "smartcard1 (host-certificates) database"),
                f("/run/sc.sock", "rw", "smartcard2 (unix)"),
                t("/dev/snd", "rw", "audio 1 (alsa)"),
                f("/srv/out.wav", "rw", "audio 2 (file)"),
                f("/dev/hwrng", "rw", "rng0 (random)"),
                f("/dev/urandom", "r", "rng1 (random)"),
                f("/run/egd.sock", "rw", "rng2 egd (unix)"),
            ]
        );
    }
}
