#!/usr/bin/env bash
# A private Docker Engine for tests and benchmarks: its own socket and directories, no bridge
# network and no iptables rules, so it never touches the host's networking or another daemon.
#
#   scripts/docker-sandbox.sh start DIR   start dockerd under DIR, wait for it, build the test image
#   scripts/docker-sandbox.sh stop DIR    stop that dockerd and wait for it to exit
#   scripts/docker-sandbox.sh image DIR   (re)build the busybox test image on that daemon
#
# The socket is DIR/docker.sock. The test image is nekzus-test:busybox (override with NEKZUS_TEST_IMAGE).
# NEKZUS_DOCKERD_ARGS adds daemon flags (e.g. --live-restore).
set -euo pipefail

cmd=${1:?usage: docker-sandbox.sh start|stop|image DIR}
dir=${2:?usage: docker-sandbox.sh start|stop|image DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/docker.sock"
image=${NEKZUS_TEST_IMAGE:-nekzus-test:busybox}

build_image() {
  local busybox root
  busybox=$(command -v busybox)
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  tar -C "$root" -cf "$dir/image.tar" .
  rm -rf "$root"
  docker -H "unix://$sock" import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' "$dir/image.tar" "$image" >/dev/null
  rm -f "$dir/image.tar"
}

case "$cmd" in
  start)
    if [ -S "$sock" ] && docker -H "unix://$sock" version >/dev/null 2>&1; then
      echo "dockerd already answers on $sock" >&2
    else
      # --bridge=none and --iptables=false: no docker0 bridge, no firewall rules on this machine.
      dockerd --host "unix://$sock" --data-root "$dir/root" --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" --bridge=none --iptables=false --ip6tables=false \
        ${NEKZUS_DOCKERD_ARGS:-} >"$dir/dockerd.log" 2>&1 &
      for _ in $(seq 1 150); do
        docker -H "unix://$sock" version >/dev/null 2>&1 && break
        sleep 0.2
      done
      docker -H "unix://$sock" version >/dev/null 2>&1 || { tail -20 "$dir/dockerd.log" >&2; exit 1; }
    fi
    docker -H "unix://$sock" image inspect "$image" >/dev/null 2>&1 || build_image
    echo "unix://$sock"
    ;;
  image)
    build_image
    ;;
  stop)
    if [ -f "$dir/docker.pid" ]; then
      pid=$(cat "$dir/docker.pid")
      if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 150); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 0.2
        done
      fi
    fi
    # dockerd bind-mounts its data root onto itself and, restarted on the same root, can leave
    # one such mount behind: take them all down so the directory can be removed.
    for _ in 1 2 3 4 5; do
      mountpoint -q "$dir/root" 2>/dev/null || break
      umount "$dir/root" || break
    done
    ;;
  *)
    echo "usage: docker-sandbox.sh start|stop|image DIR" >&2
    exit 2
    ;;
esac
