# 85-boot-bench: benchmark, not a timed test. 200 managed guests' policies
# loaded the way a boot loads them (`aa-virt boot-load`, what
# aa-virt-load.service runs), first with an empty compiled-policy cache
# (every one compiled), then, after unloading them all, from the warm cache;
# the figures and their ratio are printed (`note`). Asserted: every guest's
# policy was loaded both times, compiled the first time and taken from the
# cache the second (the log says which, per guest).
#
# The 200 profiles are one rendered guest's profile and rules (aa-virt's
# hook, as libvirt runs it) copied under 200 UUIDs: each is compiled on its
# own, as 200 real guests' would be.

N=${AA_ITEST_BENCH_GUESTS:-200}
LV=/etc/apparmor.d/libvirt
CACHE=/var/cache/aa-virt/apparmor
install -m 0755 "$AA_VIRT" /usr/bin/aa-virt
on_exit rm -f /usr/bin/aa-virt
on_exit /usr/bin/aa-virt uninstall
assert_ok "aa-virt install (abstractions, cache dir)" /usr/bin/aa-virt install
[ -z "$(ls "$LV" 2>/dev/null | grep '^libvirt-')" ] || note "other guests' profiles present: $(ls "$LV" | grep -c '^libvirt-')"

uuid() { printf '00000000-0000-4000-8000-%012d' "$1"; }
qemu-img create -q -f raw "$CASE_TMP/disk.img" 16M
tiny_domain bench0 "$(uuid 0)" "$CASE_TMP/disk.img" > "$CASE_TMP/dom.xml"
assert_ok "render one guest's profile (aa-virt hook ... prepare)" \
    sh -c "/usr/bin/aa-virt hook qemu bench0 prepare begin - < '$CASE_TMP/dom.xml'"
p0=libvirt-$(uuid 0)
echo -n "$p0" > "$AA_SECFS/.remove"
for ((i = 1; i <= N; i++)); do
    u=$(uuid "$i")
    sed "s/$(uuid 0)/$u/g" "$LV/$p0" > "$LV/libvirt-$u"
    sed "s/$(uuid 0)/$u/g" "$LV/$p0.files" > "$LV/libvirt-$u.files"
done
rm -f "$LV/$p0" "$LV/$p0.files"
unload_all() {
    local i
    for ((i = 1; i <= N; i++)); do echo -n "libvirt-$(uuid "$i")" > "$AA_SECFS/.remove" 2>/dev/null; done
}
cleanup() {
    unload_all
    local i
    for ((i = 0; i <= N; i++)); do rm -f "$LV/libvirt-$(uuid "$i")" "$LV/libvirt-$(uuid "$i").files"; done
}
on_exit cleanup
loaded() { grep -c '^libvirt-00000000-0000-4000-8000-' "$AA_SECFS/profiles"; }

# run WHAT LOGWORDS: time one boot-load (ms in $took), then assert on it.
run() {
    local t0 t1 rc
    t0=$(date +%s%N)
    /usr/bin/aa-virt boot-load > "$CASE_TMP/$1.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    took=$(( (t1 - t0) / 1000000 ))
    assert_eq "$1: boot-load exits 0" 0 "$rc"
    assert_eq "$1: all $N guests' policies are in the kernel" "$N" "$(loaded)"
    assert_eq "$1: the log says '$2' for each" "$N" "$(grep -c "libvirt-00000000-0000-4000-8000-[0-9]*: $2 in" "$CASE_TMP/$1.log")"
}
rm -rf "${CACHE:?}"/*
run cold "compiled and loaded"
cold_ms=$took
unload_all
assert_eq "unloaded again (a reboot's empty kernel)" 0 "$(loaded)"
run warm "loaded from cache"
warm_ms=$took

note "boot-load of $N guests (Debian $DEBIAN, TCG, $(nproc) vCPU, one thread per CPU): cold (empty cache, all compiled) ${cold_ms} ms, warm (cache) ${warm_ms} ms, ratio warm/cold $(awk -v w="$warm_ms" -v c="$cold_ms" 'BEGIN { printf "%.3f", (c > 0 ? w / c : 0) }') (goal <= 0.1)"
note "per guest: cold $((cold_ms / N)) ms, warm $((warm_ms / N)) ms"
