#!/bin/bash
# The Debian package, end to end, as root (skipped otherwise: exit 77): cpack builds it from this
# build tree; lintian finds no error in it; dpkg installs it; its files are where they belong and
# the configuration is a conffile; the installed binary talks to the throwaway cluster; systemd
# accepts its units; a purge leaves nothing behind.
# usage: install_test.sh BUILD_DIR
set -euo pipefail
build=$1
[ "$(id -u)" -eq 0 ] || { echo "skipped: installing a package needs root"; exit 77; }
: "${AGENTCRON_TEST_PG:?run through packaging/agentcron-dev test}"
fail() { echo "FAIL: $*" >&2; exit 1; }
# A machine with agentcron installed for real keeps it: this test installs and purges its own.
if dpkg-query -W -f='${Status}' agentcron 2>/dev/null | grep -q "install ok installed"; then
  echo "skipped: agentcron is installed on this machine"; exit 77
fi
purge() { dpkg --purge agentcron >/dev/null 2>&1 || true; }
trap purge EXIT

cd "$build"
rm -f agentcron_*_amd64.deb
cpack -G DEB >cpack.log 2>&1 || { cat cpack.log; fail "cpack"; }
deb=$(ls agentcron_*_amd64.deb)
echo "built $deb"

lintian --tag-display-limit 0 "$deb" 2>/dev/null | tee lintian.log
! grep -q '^E:' lintian.log || fail "lintian reports errors"

dpkg -i "$deb" >/dev/null || fail "dpkg -i"
for f in /usr/bin/agentcron /usr/lib/systemd/system/agentcron.service /usr/lib/systemd/system/agentcron-once.service \
         /usr/lib/systemd/system/agentcron-once.timer /etc/agentcron/agentcron.toml \
         /usr/share/man/man1/agentcron.1.gz /usr/share/bash-completion/completions/agentcron \
         /usr/share/doc/agentcron/copyright /usr/share/doc/agentcron/changelog.gz /usr/share/doc/agentcron/operations.md; do
  [ -e "$f" ] || fail "$f is not installed"
done
dpkg-query -W -f='${Conffiles}\n' agentcron | grep -q '/etc/agentcron/agentcron.toml' || fail "the configuration is not a conffile"
dpkg-query -W -f='${Depends}\n' agentcron | grep -q 'libpqxx-6.4' || fail "Depends lacks libpqxx"
dpkg-query -W -f='${Depends}\n' agentcron | grep -qw 'tzdata' || fail "Depends lacks tzdata"
systemctl is-enabled agentcron.service >/dev/null 2>&1 && fail "the service was enabled before it is configured"

# The installed binary: its version, its example configuration (the installed file), the cluster.
/usr/bin/agentcron --version | grep -q '^agentcron ' || fail "--version"
diff <(/usr/bin/agentcron config example) /etc/agentcron/agentcron.toml >/dev/null || fail "the installed configuration is not config example's"
/usr/bin/agentcron --config /etc/agentcron/agentcron.toml --database-url "$AGENTCRON_TEST_PG dbname=agentcron_template" \
  status | grep -q '^pending' || fail "status against the cluster"
zcat /usr/share/man/man1/agentcron.1.gz | grep -q 'config example' || fail "the man page lacks the commands"
bash -c '. /usr/share/bash-completion/bash_completion 2>/dev/null; . /usr/share/bash-completion/completions/agentcron; complete -p agentcron' \
  | grep -q '_agentcron' || fail "the completion does not load"

# systemd's own check of the units, against the installed binary.
systemd-analyze verify /usr/lib/systemd/system/agentcron.service /usr/lib/systemd/system/agentcron-once.service \
  /usr/lib/systemd/system/agentcron-once.timer 2>&1 | tee verify.log
! grep -q . verify.log || fail "systemd-analyze verify complains"

# The sandbox: systemd's own rating of each service, at most 2.0 ("OK").
for unit in agentcron.service agentcron-once.service; do
  level=$(systemd-analyze security --offline=true "/usr/lib/systemd/system/$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "$unit: exposure $level"
  awk -v l="${level:-99}" 'BEGIN { exit !(l <= 2.0) }' || fail "$unit is rated $level, above 2.0"
done

dpkg --purge agentcron >/dev/null || fail "dpkg --purge"
for f in /usr/bin/agentcron /etc/agentcron /usr/lib/systemd/system/agentcron.service /usr/share/doc/agentcron \
         /usr/share/man/man1/agentcron.1.gz /usr/share/bash-completion/completions/agentcron; do
  [ ! -e "$f" ] || fail "$f is left after the purge"
done
dpkg-query -W agentcron >/dev/null 2>&1 && fail "dpkg still knows the package"
echo "package: installed, checked and purged"
