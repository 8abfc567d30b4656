#!/usr/bin/env bash
# Instructions per frame of the sender and of the headless receiver (separate processes,
# `send --connect` -> `recv --listen --headless --once`, --fps 0, every frame decoded to 0RGB),
# counted by valgrind's callgrind: a yardstick that does not depend on machine load.
#
#   bash benches/callgrind.sh                                  # test pattern, 1280x720 and 1920x1080
#   CLIP=clip.y4m bash benches/callgrind.sh                    # a Y4M file (its own size)
#   SIZES=1920x1080 CONFIGS="default fast" bash benches/callgrind.sh
#   FRAMECAST=/path/to/old/framecast CONFIGS=default bash benches/callgrind.sh   # another build
#
# Each configuration runs twice, with FEW and MANY frames; the difference divided by
# MANY - FEW is the cost of one more frame, without start-up, handshake and warm-up.
# CONFIGS: default (accurate DCT, smooth upsampling), fastdct (send --fast-dct),
# fastidct (recv --fast-idct), fastup (recv --fast-upsample), fast (all three).
#
# Needs valgrind (Debian: apt-get install -y valgrind). Takes about a minute per
# configuration and size.
set -euo pipefail

SIZES=${SIZES:-"1280x720 1920x1080"}
CONFIGS=${CONFIGS:-"default fastdct fastidct fastup fast"}
QUALITY=${QUALITY:-75}
FEW=${FEW:-10}
MANY=${MANY:-60}
CLIP=${CLIP:-}

command -v valgrind >/dev/null || { echo "valgrind not found; install it with: apt-get install -y valgrind" >&2; exit 1; }
cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

measured_bin

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Instructions counted in a callgrind output file (all threads).
instr() { awk '/^summary:|^totals:/ { print $2; exit }' "$1"; }

# One pair of processes under callgrind: $1 frames, $2 size, $3 config. Prints "send recv".
run() {
    local frames=$1 size=$2 config=$3 port send_flags=() recv_flags=() source=(--source test --size "$2")
    [ -n "$CLIP" ] && source=(--source "$CLIP")
    case $config in
    default) ;;
    fastdct) send_flags=(--fast-dct) ;;
    fastidct) recv_flags=(--fast-idct) ;;
    fastup) recv_flags=(--fast-upsample) ;;
    fast) send_flags=(--fast-dct) recv_flags=(--fast-idct --fast-upsample) ;;
    *) echo "unknown config $config" >&2; exit 1 ;;
    esac
    port=$(free_port)
    valgrind --tool=callgrind --combine-dumps=yes --callgrind-out-file="$tmp/recv.cg" \
        "$bin" recv --listen "127.0.0.1:$port" --headless --once --no-stats "${recv_flags[@]}" 2>"$tmp/recv.log" &
    pids=("$!")
    for _ in $(seq 100); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
    valgrind --tool=callgrind --combine-dumps=yes --callgrind-out-file="$tmp/send.cg" \
        "$bin" send --connect "127.0.0.1:$port" "${source[@]}" --fps 0 --frames "$frames" --quality "$QUALITY" \
        --no-stats "${send_flags[@]}" 2>"$tmp/send.log"
    wait "${pids[0]}"
    pids=()
    echo "$(instr "$tmp/send.cg") $(instr "$tmp/recv.cg")"
}

[ -n "$CLIP" ] && SIZES=clip
printf '%-10s %-9s %14s %14s %14s\n' size config "send Minstr/f" "recv Minstr/f" "sum Minstr/f"
for size in $SIZES; do
    for config in $CONFIGS; do
        read -r s0 r0 < <(run "$FEW" "$size" "$config")
        read -r s1 r1 < <(run "$MANY" "$size" "$config")
        awk -v size="$size" -v c="$config" -v s0="$s0" -v s1="$s1" -v r0="$r0" -v r1="$r1" -v n=$((MANY - FEW)) \
            'BEGIN { s = (s1 - s0) / n / 1e6; r = (r1 - r0) / n / 1e6; printf "%-10s %-9s %14.2f %14.2f %14.2f\n", size, c, s, r, s + r }'
    done
done
