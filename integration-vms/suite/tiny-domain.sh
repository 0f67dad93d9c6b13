# shellcheck shell=sh
# tiny_domain NAME UUID DISK [FORMAT] [DEVICES] [TOPLEVEL]
#
# Print the smallest libvirt domain the tests start: TCG, 64 MiB, no OS,
# one virtio disk DISK in FORMAT (default raw), then any extra DEVICES
# (XML inside <devices>) and TOPLEVEL XML (e.g. a <seclabel>).
#
# Sourced by the integration-VM suite (lib.sh) and by
# scripts/libvirtd-test.sh, which runs the same kind of guest on the host.
tiny_domain() {
    cat <<XML
<domain type='qemu'>
  <name>$1</name>
  <uuid>$2</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${4:-raw}'/>
      <source file='$3'/>
      <target dev='vda' bus='virtio'/>
    </disk>
${5:-}
    <memballoon model='none'/>
  </devices>
${6:-}
</domain>
XML
}
