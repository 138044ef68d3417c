#!/usr/bin/env bash
# The fresh-machine test: the README's first command, as written, from a fresh clone, on a machine that never saw
# this project. CI runs on a developer's machine, where whatever earlier work installed system-wide stays; this
# test takes that away inside a private mount namespace (`unshare --mount`, so it needs root): the root file system
# becomes an overlay whose writes go to a throw-away tmpfs, and in it the word list (/usr/share/dict), every font
# (/usr/share/fonts), HAProxy and Prometheus are removed (the last two purged with dpkg, so that scripts/setup.sh has
# to install HAProxy itself, as on a new machine). The clone has no .venv; pip's download cache may stay.
# Then: `bash scripts/serve.sh`, wait until the server is ready, read one real crop through it with the client and
# one real photograph with `spinrec-client --page` (when ../shared/real_pages_dev is there), send SIGTERM, and check
# that every port is closed again. Prints the time to a ready server.
#
#   bash tests/fresh_machine.sh [CROP EXPECTED_TEXT]    (default: ../shared/real_crops_dev/paddleocr_word_201.png house)
# FRESH_MACHINE_REV=REV checks out another commit of the clone (e.g. one from before the fix, which must fail).
set -euo pipefail
if [ "${1:-}" = "--inside" ]; then  # the part that runs in the namespace, on the overlay
    shift
    REPO=$1 CROP=$2 EXPECTED=$3 REV=$4 PAGE=$5
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    # What a developer machine has and a new one does not.
    rm -rf /usr/share/dict /usr/share/fonts /usr/local/share/fonts /root/.fonts /root/.local/share/fonts /root/.cache/spinrec
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' haproxy prometheus 2>/dev/null | awk '/ok installed/ {print $1}')
    # shellcheck disable=SC2086  # one package per word
    [ -z "$installed" ] || DEBIAN_FRONTEND=noninteractive dpkg --purge $installed >/dev/null 2>&1
    for gone in /usr/share/dict/words haproxy prometheus; do
        if [ -e "$gone" ] || command -v "$gone" >/dev/null; then echo "fresh-machine: FAILED: could not hide $gone" >&2; exit 1; fi
    done
    git clone -q --no-local "$REPO" /tmp/fresh/spin
    cd /tmp/fresh/spin
    git checkout -q "$REV"
    [ ! -e .venv ] || { echo "fresh-machine: FAILED: the clone has a .venv" >&2; exit 1; }
    start=$(date +%s)
    bash scripts/serve.sh > /tmp/fresh/serve.log 2>&1 &
    serve=$!
    until curl -sf -o /dev/null http://127.0.0.1:8000/v2/health/ready; do
        if ! kill -0 $serve 2>/dev/null || [ $(( $(date +%s) - start )) -gt 1800 ]; then
            tail -40 /tmp/fresh/serve.log
            echo "fresh-machine: FAILED: bash scripts/serve.sh did not serve (log above)" >&2
            exit 1
        fi
        sleep 2
    done
    ready=$(( $(date +%s) - start ))
    grep -q "front proxy (HAProxy) on 127.0.0.1:8000" /tmp/fresh/serve.log || { tail -40 /tmp/fresh/serve.log; echo "fresh-machine: FAILED: not served behind the front proxy" >&2; exit 1; }
    read_line=$(.venv/bin/spinrec-client "$CROP")
    echo "fresh-machine: read $read_line"
    page_json=""
    [ ! -f "$PAGE" ] || page_json=$(.venv/bin/spinrec-client --page "$PAGE" --json)
    kill -TERM $serve
    wait $serve || { echo "fresh-machine: FAILED: serve.sh exited $? after SIGTERM" >&2; exit 1; }
    for port in 8000 8001 8002; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "fresh-machine: FAILED: port $port still open after SIGTERM" >&2; exit 1; fi
    done
    [ "$(printf "%s" "$read_line" | cut -f2)" = "$EXPECTED" ] || { echo "fresh-machine: FAILED: expected \"$EXPECTED\"" >&2; exit 1; }
    if [ -f "$PAGE" ]; then
        # The photograph's shop sign: the page path (detector installed from rapidocr, spin_page) works as served.
        printf "%s" "$page_json" | grep -q '"text": "giordano"' || { echo "fresh-machine: FAILED: --page $PAGE: $page_json" >&2; exit 1; }
        echo "fresh-machine: read the photograph $(basename "$PAGE"): $(printf "%s" "$page_json" | grep -o '"text": "[^"]*"' | tr '\n' ' ')"
    fi
    grep -E "INT8 gate|CPU encoder serves" /tmp/fresh/serve.log | sed "s/^/fresh-machine: /" || true
    echo "fresh-machine: PASSED: bash scripts/serve.sh on a fresh machine served in ${ready} s (setup, build with INT8 and its gate, start)"
    exit 0
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
crop=${1:-$repo/../shared/real_crops_dev/paddleocr_word_201.png}
expected=${2:-house}
page=$(realpath "$repo/../shared/real_pages_dev/images/img_123.jpg" 2>/dev/null || true)
crop=$(realpath "$crop" 2>/dev/null || true)
if [ ! -f "$crop" ]; then
    echo "fresh-machine: SKIPPED: no real crop to read (../shared/real_crops_dev is absent)"
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! grep -qw overlay /proc/filesystems; then
    echo "fresh-machine: FAILED: needs root, unshare and overlayfs (CI runs as root)" >&2
    exit 1
fi
for port in 8000 8001 8002; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "fresh-machine: FAILED: port $port is in use; the README's command serves there" >&2
        exit 1
    fi
done
scratch=$(mktemp -d /tmp/spinrec-fresh-machine.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# The namespace's mounts vanish with it; only the (then empty) scratch folder needs removing.
# shellcheck disable=SC2016  # expanded by the shell inside the namespace
unshare --mount --fork bash -euc '
mount --make-rprivate /
mount -t tmpfs -o size=12g tmpfs "$1"
mkdir -p "$1/upper" "$1/work" "$1/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$1/root"
for fs in proc sys dev; do mount --rbind "/$fs" "$1/root/$fs"; done
exec chroot "$1/root" bash "$2/tests/fresh_machine.sh" --inside "$2" "$3" "$4" "$5" "$6"
' fresh-machine "$scratch" "$repo" "$crop" "$expected" "${FRESH_MACHINE_REV:-HEAD}" "$page"
