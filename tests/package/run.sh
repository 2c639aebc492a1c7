#!/usr/bin/env bash
# The Debian package end to end, as CI runs it (root; installs and purges the package on this machine):
#   1. builds it with scripts/build-deb from a temporary clone of HEAD (a clean checkout);
#   2. checks the build log's compiler flags (blhc) and the binary's hardening (hardening-check);
#   3. lintian: any E: or W: tag fails (I: and P: tags are printed);
#   4. apt-get install ./spliced_*.deb; checks the files, the conffile, the man pages, spliced --version,
#      spliced --check-config on the shipped config and systemd-analyze verify on the installed unit;
#   5. the upgrade path: reinstalls the package with a stand-in systemctl that records what it is asked
#      and reports the unit enabled and active, in a mount namespace of its own (a tmpfs /run with
#      /run/systemd/system, a policy-rc.d that allows actions), and requires a reload and no restart or
#      stop; then with the unit enabled but stopped (a start and no reload: it runs the new binary
#      already), and remove (a stop);
#   6. apt-get purge, and compares the file lists of /etc, /usr, /var, /opt and /srv (and the user and
#      group databases) with those from before the install: nothing may be left or changed.
# Exits 77 when not root. Budget: SPLICED_PACKAGE_BUDGET seconds (default 1500) for the whole run.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
budget=${SPLICED_PACKAGE_BUDGET:-1500}
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: needs root (it installs and purges the package)"
  exit 77
fi
for tool in git dpkg-buildpackage lintian blhc hardening-check systemd-analyze unshare apt-get; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (scripts/install-deps installs it)"; exit 1; }
done
status=$(dpkg-query -W -f='${db:Status-Abbrev}' spliced 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != "un " ]; then
  echo "FAIL: the spliced package is already on this machine ($status); this test installs and purges it"
  exit 1
fi
for path in /etc/spliced /usr/sbin/spliced /lib/systemd/system/spliced.service; do
  if [ -e "$path" ]; then echo "FAIL: $path exists already"; exit 1; fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/spliced-package.XXXXXX")
installed=
cleanup() {
  if [ -n "$installed" ]; then apt-get purge -y -qq spliced >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { echo "== $* ($((SECONDS - start)) s)"; }
fail() { echo "FAIL: $*"; exit 1; }
left() { local n=$((budget - (SECONDS - start))); echo $((n > 1 ? n : 1)); }

# What the filesystem holds outside the package's reach, to compare after the purge. Logs, caches and
# dpkg's and apt's own databases change with any install; the package's dpkg records are checked apart.
snapshot() {
  find /etc /usr /var /opt /srv -xdev \
    \( -path /var/log -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/tmp \
       -o -path /var/backups -o -path /var/lib/man-db \) -prune -o -printf '%y %p\n' 2>/dev/null | LC_ALL=C sort
  sha256sum /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null
}

step "build: scripts/build-deb in a clone of HEAD ($(git -C "$root" rev-parse --short HEAD))"
git clone -q --no-checkout "$root" "$work/src"
git -C "$work/src" -c advice.detachedHead=false checkout -q "$(git -C "$root" rev-parse HEAD)"
if ! timeout "$(left)" "$work/src/scripts/build-deb" "$work/out"; then
  fail "the package build failed or ran past the budget"
fi
build_s=$((SECONDS - start))
deb=$(ls "$work"/out/spliced_*.deb)
changes=$(ls "$work"/out/spliced_*.changes)
buildlog=$(ls "$work"/out/spliced_*.build)
version=$(dpkg-deb -f "$deb" Version)

step "hardening: blhc on the build log, hardening-check on the binary"
grep -q -- '-D_FORTIFY_SOURCE=2' "$buildlog" || fail "no compiler line in the build log has -D_FORTIFY_SOURCE=2"
# blhc --bindnow: also the LDFLAGS of hardening=+all. Not --all: PIE is the compiler's default on Debian,
# so dpkg-buildflags adds no -fPIE for blhc to find (hardening-check below sees a PIE). The BPF program is
# bytecode for the kernel (clang -target bpf): host hardening flags do not apply to it.
if ! blhc --bindnow --ignore-line '.* -target bpf .*' "$buildlog"; then
  fail "blhc: compiler or linker lines without the dpkg-buildflags flags"
fi
mkdir "$work/x"
dpkg-deb -x "$deb" "$work/x"
# PIE, stack protector, fortify, RELRO, bind now. Not control-flow protection: bookworm's dpkg-buildflags
# does not add -fcf-protection (nor -fstack-clash-protection, which hardening-check reports as unknown).
hardening-check --nocfprotection "$work/x/usr/sbin/spliced" || fail "hardening-check: a feature is missing"

step "lintian (fails on E: and W:)"
lintian --display-info --display-experimental --pedantic --fail-on error,warning "$changes" | tee "$work/lintian" ||
  fail "lintian reported errors or warnings"
lintian_tags=$(sed -nE 's/^([A-Z]): [^:]+: ([^ ]+).*/\1:\2/p' "$work/lintian" | sort -u | paste -sd, -)

step "install"
snapshot > "$work/before"
installed=yes
(cd "$work/out" && apt-get install -y -qq "./$(basename "$deb")") > "$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "apt-get install ./$(basename "$deb")"; }
for path in /usr/sbin/spliced /lib/systemd/system/spliced.service /etc/spliced/spliced.yaml \
            /usr/share/man/man8/spliced.8.gz /usr/share/man/man5/spliced.yaml.5.gz \
            /usr/share/doc/spliced/copyright /usr/share/doc/spliced/changelog.gz /usr/share/doc/spliced/README.md; do
  [ -e "$path" ] || fail "$path is not installed"
done
dpkg-query -W -f='${Conffiles}\n' spliced | grep -q '^ /etc/spliced/spliced.yaml ' ||
  fail "/etc/spliced/spliced.yaml is not a conffile"
cmp -s /etc/spliced/spliced.yaml "$work/src/config/spliced.yaml" || fail "/etc/spliced/spliced.yaml is not config/spliced.yaml"
[ -L /etc/systemd/system/multi-user.target.wants/spliced.service ] || fail "the unit was not enabled"
[ "$(/usr/sbin/spliced --version)" = "spliced ${version%%-*}" ] || fail "spliced --version says $(/usr/sbin/spliced --version)"
/usr/sbin/spliced --check-config --config /etc/spliced/spliced.yaml || fail "spliced --check-config on the shipped config"
if ! out=$(systemd-analyze verify /lib/systemd/system/spliced.service 2>&1) || [ -n "$out" ]; then
  echo "$out"
  fail "systemd-analyze verify /lib/systemd/system/spliced.service"
fi
grep -q '^ExecReload=/usr/sbin/spliced --check-config --config /etc/spliced/spliced.yaml$' /lib/systemd/system/spliced.service &&
  grep -A1 '^ExecReload=/usr/sbin/spliced' /lib/systemd/system/spliced.service | grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' ||
  fail "the unit's ExecReload= is not check-config then kill -HUP"
MANWIDTH=80 man --warnings spliced > /dev/null 2> "$work/man.err" && MANWIDTH=80 man --warnings 5 spliced.yaml > /dev/null 2>> "$work/man.err"
[ ! -s "$work/man.err" ] || { cat "$work/man.err"; fail "man(1) warnings"; }

snapshot > "$work/installed"
grep -q '^f /usr/sbin/spliced$' "$work/installed" || fail "the file list does not show the installed package"

step "maintainer scripts: upgrade reloads, remove stops"
info=/var/lib/dpkg/info
grep -q 'deb-systemd-invoke reload spliced.service' "$info/spliced.postinst" || fail "postinst has no reload"
if grep -Eq '_dh_action=|deb-systemd-invoke .*restart|systemctl .*restart' "$info/spliced.postinst"; then
  fail "postinst restarts the unit"
fi
if [ -e "$info/spliced.preinst" ] && grep -q 'deb-systemd-invoke stop' "$info/spliced.preinst"; then
  fail "preinst stops the unit before an upgrade"
fi
# The stand-in systemctl: records its arguments; the unit is enabled, and active when $work/active exists
# (a start makes it so).
mkdir -p "$work/fake"
cat > "$work/fake/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >> "$work/calls"
case " \$* " in
  *" is-active "*) [ -e "$work/active" ]; exit \$? ;;
  *" is-enabled "*) echo enabled ;;
  *" start "*) touch "$work/active" ;;
esac
exit 0
EOF
printf '#!/bin/sh\nexit 0\n' > "$work/fake/policy-rc.d"
chmod +x "$work/fake/systemctl" "$work/fake/policy-rc.d"
# Runs "$@" with /run/systemd/system present, the stand-in systemctl first in PATH and a policy-rc.d that
# allows actions (where there is one: container images often ship one that forbids them), in a private
# mount namespace: nothing of it is seen outside.
as_if_systemd() {
  : > "$work/calls"
  unshare --mount --propagation private sh -ec '
    fake=$1; shift
    mount -t tmpfs tmpfs /run
    mkdir -p /run/systemd/system
    if [ -e /usr/sbin/policy-rc.d ]; then mount --bind "$fake/policy-rc.d" /usr/sbin/policy-rc.d; fi
    PATH="$fake:$PATH" exec "$@"' sh "$work/fake" "$@"
}
# apt runs dpkg with a PATH of its own (DPkg::Path): the stand-in goes first there too.
apt_fake=(apt-get -o "DPkg::Path=$work/fake:/usr/sbin:/usr/bin:/sbin:/bin")
touch "$work/active"
as_if_systemd "${apt_fake[@]}" install -y -qq --reinstall "$deb" > "$work/upgrade.log" 2>&1 ||
  { cat "$work/upgrade.log"; fail "apt-get install --reinstall over the installed package"; }
echo "upgrade, unit active:"; sed 's/^/  /' "$work/calls"
grep -q '^systemctl .*reload spliced.service' "$work/calls" || fail "the upgrade did not reload the unit"
if grep -Eq ' (restart|try-restart|reload-or-restart|try-reload-or-restart|stop|kill)( |$)' "$work/calls"; then
  fail "the upgrade restarted or stopped the unit"
fi
upgrade_calls=$(grep -c . "$work/calls")
rm "$work/active"
as_if_systemd "${apt_fake[@]}" install -y -qq --reinstall "$deb" > "$work/upgrade.log" 2>&1 ||
  { cat "$work/upgrade.log"; fail "apt-get install --reinstall, unit inactive"; }
echo "upgrade, unit enabled but not running:"; sed 's/^/  /' "$work/calls"
# It is started, as on a fresh install; nothing else.
grep -q '^systemctl .*start spliced.service' "$work/calls" || fail "the upgrade did not start the enabled unit"
if grep -Eq ' (reload|restart|try-restart|reload-or-restart|try-reload-or-restart|stop|kill)( |$)' "$work/calls"; then
  fail "the upgrade reloaded, restarted or stopped a unit that was not running"
fi

step "remove and purge"
touch "$work/active"
as_if_systemd "${apt_fake[@]}" remove -y -qq spliced > "$work/remove.log" 2>&1 || { cat "$work/remove.log"; fail "apt-get remove"; }
echo "remove:"; sed 's/^/  /' "$work/calls"
grep -q '^systemctl .*stop spliced.service' "$work/calls" || fail "remove did not stop the unit"
[ ! -e /usr/sbin/spliced ] || fail "/usr/sbin/spliced is left after remove"
[ -e /etc/spliced/spliced.yaml ] || fail "remove (not purge) took the conffile"
apt-get purge -y -qq spliced > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "apt-get purge"; }
installed=
[ -z "$(dpkg-query -W -f='${db:Status-Abbrev}' spliced 2>/dev/null | tr -d ' u')" ] || fail "dpkg still knows spliced"
ls "$info"/spliced.* >/dev/null 2>&1 && fail "dpkg records left: $(ls "$info"/spliced.*)"
snapshot > "$work/after"
if ! diff -u "$work/before" "$work/after" > "$work/diff"; then
  cat "$work/diff"
  fail "the purge left the filesystem different from before the install"
fi
for path in /etc/spliced /usr/sbin/spliced /lib/systemd/system/spliced.service \
            /etc/systemd/system/multi-user.target.wants/spliced.service; do
  [ ! -e "$path" ] && [ ! -L "$path" ] || fail "$path is left after purge"
done

elapsed=$((SECONDS - start))
[ "$elapsed" -le "$budget" ] || fail "took $elapsed s, over the $budget s budget"
echo "SUMMARY package: spliced $version built in $build_s s; lintian: ${lintian_tags:-no tags}; installed, check-config and" \
     "systemd-analyze verify ok; upgrade: reload, no restart ($upgrade_calls systemctl calls); purge: nothing left;" \
     "$elapsed s of $budget s"
