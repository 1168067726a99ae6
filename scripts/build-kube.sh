#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager from Debian's kubernetes source package into a
# cache outside the checkout ($NEKZUS_KUBE_CACHE, default /var/cache/nekzus-kube), once: when both
# binaries are there it only makes sure etcd is installed. Installs the build tools and etcd from
# Debian (as root).
# apt's source lists and downloads go to private directories, so the system's apt setup is untouched.
# The first build takes about 5-7 minutes on 2 CPUs, most of it compiling; every step is announced
# with the seconds elapsed, and a long silent step says every 30 seconds that it is still running.
set -euo pipefail

cache=${NEKZUS_KUBE_CACHE:-/var/cache/nekzus-kube}
bin="$cache/bin"
built() { [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ]; }

started=$SECONDS
step() { printf '[build-kube %4ss] %s\n' "$((SECONDS - started))" "$*"; }
elapsed() { printf '%dm%02ds' "$(((SECONDS - started) / 60))" "$(((SECONDS - started) % 60))"; }
# Runs "$@" with a line every 30 s, for steps that print nothing while they work (make prints only
# "Building go targets" for minutes). The heartbeat is stopped however the step ends.
with_heartbeat() {
  local what=$1 beat status=0
  shift
  (while sleep 30; do step "  still $what ($(elapsed) so far)"; done) &
  beat=$!
  "$@" || status=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  return "$status"
}

export DEBIAN_FRONTEND=noninteractive
need=""
packages="etcd-server"
built || packages="$packages golang-go rsync make golang-github-modern-go-reflect2-dev dpkg-dev"
for pkg in $packages; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
  step "installing from Debian:$need"
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $need
fi
if built; then
  echo "kube binaries cached in $bin"
  exit 0
fi
step "building kube-apiserver and kube-controller-manager from Debian's kubernetes source package" \
  "into $bin: once, usually 5-7 minutes on 2 CPUs; later runs reuse the binaries"

work="$cache/work"
rm -rf "$work"
mkdir -p "$work/sources" "$work/lists/partial" "$work/archives/partial" "$bin"

# Source entries mirror the machine's own binary entries, in deb822 or one-line form.
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed -E 's/^Types:.*/Types: deb deb-src/' "$f" >"$work/sources/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] && sed -n -E 's/^deb (.*)/deb-src \1/p' "$f" >>"$work/sources/extra.list"
done

apt_private=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$work/sources"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Dir::Cache::archives=$work/archives"
)
step "reading the source package lists (private apt state in $work)"
apt-get "${apt_private[@]}" update -q
step "downloading the kubernetes source package"
(cd "$work" && apt-get "${apt_private[@]}" source --download-only kubernetes)
step "unpacking the source"
(cd "$work" && dpkg-source --no-check -x kubernetes_*.dsc src >/dev/null)

src="$work/src"
# The vendored reflect2 1.0.1 crashes the apiserver under Debian's Go (map iteration); use 1.0.2.
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
step "replacing the vendored reflect2 with Debian's 1.0.2"
rm -rf "$src/vendor/github.com/modern-go/reflect2"
cp -r "$reflect2" "$src/vendor/github.com/modern-go/reflect2"

step "compiling with Go: the long step, most of the 5-7 minutes; make prints only \"Building go targets\""
(cd "$src" && CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor \
  with_heartbeat "compiling" make WHAT="cmd/kube-apiserver cmd/kube-controller-manager")
out="$src/_output/local/bin/linux/$(go env GOARCH)"
step "installing the binaries and removing the sources"
install -m 0755 "$out/kube-apiserver" "$out/kube-controller-manager" "$bin/"
rm -rf "$work"
echo "kube binaries built into $bin in $(elapsed)"
