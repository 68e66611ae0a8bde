#!/usr/bin/env bash
# install-criu.sh -- make a CRIU 4.x that passes `criu check` available to mig.
#
# Usage: scripts/install-criu.sh [DEST]    (DEST default: ${MIG_CACHE:-~/.cache/mig}/criu)
#
# A host CRIU >= 4.0 whose `criu check` passes is used as it is. Otherwise Debian trixie's
# criu package and its libraries (trixie's glibc among them) are unpacked into DEST/root
# with `dpkg-deb -x`, never installed: DEST/bin/criu runs that criu through the private
# tree's own dynamic loader and library path, so nothing of the host changes. The packages
# come from the Debian archive the host's apt sources already name, through a private apt
# configuration (its own sources list, lists, cache and an empty dpkg status under DEST/apt),
# and the trixie release is verified with the host's Debian archive keyring.
#
# Idempotent: a second run only checks the installed CRIU. Exit 0 when a good CRIU is
# available, 1 with one `install-criu: error: ...` line otherwise.
set -euo pipefail

SUITE=trixie
MIN_MAJOR=4
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
DEST=$(realpath -m "${1:-${MIG_CACHE:-$HOME/.cache/mig}/criu}")

say() { echo "install-criu: $*"; }
die() { echo "install-criu: error: $*" >&2; exit 1; }

# Print the version of the CRIU run by "$@" if it is >= MIN_MAJOR and `check` passes.
criu_good() {
  local out ver
  out=$("$@" --version 2>/dev/null) || return 1
  ver=$(sed -n 's/^Version: *//p' <<<"$out" | head -n1)
  [[ $ver =~ ^[0-9]+ ]] && ((BASH_REMATCH[0] >= MIN_MAJOR)) || return 1
  "$@" check >/dev/null 2>&1 || return 1
  echo "$ver"
}

# The URI of the Debian archive that serves the host's own release (suite = its codename,
# component main), from the one-line (*.list) and deb822 (*.sources) apt source files.
host_archive() {
  local codename files=()
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || return 1
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 1
  awk -v want="$codename" '
    function has(list, word,   n, i, a) {
      n = split(list, a, /[ \t]+/)
      for (i = 1; i <= n; i++) if (a[i] == word) return 1
      return 0
    }
    function flush() {
      if (types != "" && has(types, "deb") && has(suites, want) && has(comps, "main") \
          && tolower(enabled) != "no") { split(uris, u, /[ \t]+/); print u[1]; found = 1; exit }
      types = uris = suites = comps = enabled = ""
    }
    FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
    /^[ \t]*#/ { next }
    deb822 && /^[ \t]*$/ { flush(); next }
    deb822 {
      key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
      if (key == "types") types = val; else if (key == "uris") uris = val
      else if (key == "suites") suites = val; else if (key == "components") comps = val
      else if (key == "enabled") enabled = val
      next
    }
    $1 == "deb" {
      line = $0; sub(/\[[^]]*\]/, "", line); n = split(line, w, /[ \t]+/)
      if (w[1] == "") { for (i = 1; i < n; i++) w[i] = w[i + 1]; n-- }
      if (w[3] == want) for (i = 4; i <= n; i++) if (w[i] == "main") { print w[2]; found = 1; exit }
    }
    END { if (!found) flush() }
  ' "${files[@]}" | head -n1 | sed 's:/*$::'
}

# --- 1. a good host CRIU wins -------------------------------------------------------------
if host=$(command -v criu 2>/dev/null); then
  if ver=$(criu_good "$host"); then
    say "using the host's CRIU $ver ($host): \`criu check\` passes; nothing to install"
    exit 0
  fi
  say "the host's CRIU ($host, $("$host" --version 2>/dev/null | sed -n 's/^Version: *//p' \
    | head -n1)) is older than $MIN_MAJOR.0 or fails \`criu check\`: a private one is needed"
fi

# --- 2. an earlier private install that still works --------------------------------------
WRAPPER=$DEST/bin/criu
if [ -x "$WRAPPER" ] && ver=$(criu_good "$WRAPPER"); then
  say "CRIU $ver already installed: $WRAPPER (\`criu check\` passes)"
  exit 0
fi

# --- 3. a private install from Debian $SUITE ---------------------------------------------
for tool in apt-get apt-cache dpkg dpkg-deb awk; do
  command -v "$tool" >/dev/null || die "$tool not found: a private CRIU needs a Debian host with apt"
done
[ -r "$KEYRING" ] || die "$KEYRING not found: install the debian-archive-keyring package"
ARCHIVE=${MIG_DEBIAN_ARCHIVE:-$(host_archive || true)}
[ -n "$ARCHIVE" ] || die "no Debian archive for this release found in the apt sources" \
  "(/etc/apt/sources.list*): set MIG_DEBIAN_ARCHIVE to a Debian archive URI"
ARCH=$(dpkg --print-architecture)
START=$(date +%s)

mkdir -p "$DEST"
exec 9>"$DEST/.lock"
if command -v flock >/dev/null; then
  flock 9  # two concurrent installs would share DEST/apt; the first one may finish the job
  if [ -x "$WRAPPER" ] && ver=$(criu_good "$WRAPPER"); then
    say "CRIU $ver installed meanwhile: $WRAPPER (\`criu check\` passes)"
    exit 0
  fi
fi

APTDIR=$DEST/apt
rm -rf "$DEST/debs"  # exactly one .deb per package below
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/sources.list.d" \
  "$APTDIR/preferences.d" "$DEST/debs"
: >"$APTDIR/status"
echo "deb [signed-by=$KEYRING] $ARCHIVE $SUITE main" >"$APTDIR/sources.list"
# Read after the host's apt.conf.d (so its proxy settings still apply): everything apt keeps
# goes under DEST/apt, and the host's update/dpkg hooks (cache cleaners, appstream,
# packagekit) are cleared so they cannot touch the host's own apt state.
cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "$APTDIR/sources.list.d";
Dir::Etc::Preferences "$APTDIR/preferences";
Dir::Etc::PreferencesParts "$APTDIR/preferences.d";
Dir::State "$APTDIR";
Dir::State::Lists "$APTDIR/lists";
Dir::State::status "$APTDIR/status";
Dir::State::extended_states "$APTDIR/extended_states";
Dir::Cache "$APTDIR/cache";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "srcpkgcache.bin";
APT::Architecture "$ARCH";
APT::Architectures "$ARCH";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
#clear DPkg::Pre-Install-Pkgs;
EOF
if [ "$(id -u)" = 0 ]; then
  # apt drops to the _apt user to download, which cannot write below root's home; the
  # files are still checked against the signed indexes.
  echo 'APT::Sandbox::User "root";' >>"$APTDIR/apt.conf"
fi
APT=(-c "$APTDIR/apt.conf")

say "reading the $SUITE package index from $ARCHIVE"
if ! log=$(apt-get "${APT[@]}" -q --error-on=any update 2>&1); then
  echo "$log" >&2
  grep -q NO_PUBKEY <<<"$log" && die "the $SUITE release is signed by a key missing from" \
    "$KEYRING: update the debian-archive-keyring package"
  die "reading the $SUITE package index from $ARCHIVE failed (see above)"
fi
fetched=$(sed -n 's/^Fetched \([^ ]* [^ ]*\).*/\1/p' <<<"$log" | tail -n1)
say "index read and verified with $KEYRING${fetched:+ ($fetched)}"

# The dependency closure of criu: real package names only (apt-cache prints virtual ones
# as <name>). A dependency with alternatives pulls in every alternative; a few MB extra.
mapfile -t PKGS < <(apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -E '^[a-z0-9]' | sort -u)
[ ${#PKGS[@]} -gt 0 ] && printf '%s\n' "${PKGS[@]}" | grep -qx criu \
  || die "criu is not in Debian $SUITE at $ARCHIVE"
say "downloading criu and its dependency closure: ${#PKGS[@]} packages"
if ! log=$(cd "$DEST/debs" && apt-get "${APT[@]}" -q download "${PKGS[@]}" 2>&1); then
  echo "$log" >&2
  die "downloading the packages failed (see above)"
fi
BYTES=0
DEBS=()
for p in "${PKGS[@]}"; do
  deb=$(compgen -G "$DEST/debs/${p}_*.deb" | head -n1 || true)
  [ -n "$deb" ] || die "downloaded no .deb for $p"
  DEBS+=("$deb")
  BYTES=$((BYTES + $(stat -c %s "$deb")))
done
say "downloaded $((BYTES / 1024 / 1024)) MiB; unpacking into $DEST/root"

rm -rf "$DEST/root.new"
mkdir -p "$DEST/root.new"
for deb in "${DEBS[@]}"; do
  dpkg-deb -x "$deb" "$DEST/root.new"
done
# The loader must be the private tree's own file: a symlink in the tree may be absolute
# and would point at the host's (older) loader.
LOADER=$(cd "$DEST/root.new" && find . -name 'ld-linux*.so*' -type f | sort | head -n1)
[ -n "$LOADER" ] || die "no dynamic loader in the unpacked packages"
[ -x "$DEST/root.new/usr/sbin/criu" ] || die "the criu package has no usr/sbin/criu"
LIBDIRS=$(cd "$DEST/root.new" && for d in lib/*-linux-gnu* usr/lib/*-linux-gnu*; do
  [ -d "$d" ] && printf '%s\n' "$d"; done)
rm -rf "$DEST/root"
mv "$DEST/root.new" "$DEST/root"

mkdir -p "$DEST/bin"
{
  echo '#!/bin/sh'
  echo "# CRIU from Debian $SUITE, unpacked by mig's scripts/install-criu.sh: run with the"
  echo "# private tree's loader and libraries (no LD_LIBRARY_PATH, so programs CRIU runs"
  echo "# use the host's)."
  echo 'root=$(dirname "$(dirname "$(readlink -f "$0")")")/root'
  printf 'exec "$root/%s" --library-path "%s" "$root/usr/sbin/criu" "$@"\n' "${LOADER#./}" \
    "$(sed 's:^:$root/:' <<<"$LIBDIRS" | paste -sd:)"
} >"$WRAPPER.new"
chmod 755 "$WRAPPER.new"
mv "$WRAPPER.new" "$WRAPPER"
rm -rf "$APTDIR/lists" "$APTDIR/cache"  # the index is only needed to install

ver=$("$WRAPPER" --version 2>&1 | sed -n 's/^Version: *//p' | head -n1) \
  || die "$WRAPPER --version failed"
[ -n "$ver" ] || die "$WRAPPER --version printed no version: $("$WRAPPER" --version 2>&1 | head -n1)"
say "installed CRIU $ver in $(($(date +%s) - START)) s: $WRAPPER"
if ! out=$("$WRAPPER" check 2>&1); then
  echo "$out" >&2
  die "\`$WRAPPER check\` fails on this host (see above)"
fi
say "\`criu check\`: $(tail -n1 <<<"$out")"
