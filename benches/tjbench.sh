#!/usr/bin/env bash
# framecast's codec against libjpeg-turbo's own benchmark, on the same test-pattern frame.
#
#   bash benches/tjbench.sh            # 1280x720, q75, 4:2:0
#   RUNS=9 BENCHTIME=2 bash benches/tjbench.sh
#
# Rows (ms per frame, medians):
#   encode from YUV  framecast: Encoder::encode on the pattern's own planes (criterion
#                    codec/encode_yuv420); tjbench -yuv "Comp from YUV": compress from planes
#                    that tjbench made itself from the frame's RGB (it cannot read raw YUV), so
#                    the planes, and the JPEG size, differ slightly.
#   encode from RGB  identical RGB pixels in both (criterion codec/encode_rgb; tjbench -rgb).
#   decode to 0RGB   identical JPEG (framecast's) in both, to BGRX = the window's u32 0RGB
#                    (criterion codec/decode_0rgb; tjbench -bgrx on the .jpg).
# tjbench times RUNS runs of BENCHTIME seconds and reports each run's mean; the median of
# those is shown. framecast's figure is criterion's median over its samples.
#
# Needs `tjbench` (Debian/Ubuntu: apt-get install -y libjpeg-turbo-progs). Installs nothing.
set -euo pipefail

W=1280
H=720
Q=75
SEQ=123
RUNS=${RUNS:-5}
BENCHTIME=${BENCHTIME:-1}

if ! command -v tjbench >/dev/null 2>&1; then
    echo "tjbench not found; install it with: apt-get install -y libjpeg-turbo-progs" >&2
    exit 1
fi

cd "$(dirname "$0")/.."
. benches/lib.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== writing test-pattern frame $SEQ at ${W}x${H} (cargo run --release --example pattern)" >&2
cargo run --quiet --release --example pattern -- --size "${W}x${H}" --frame "$SEQ" --subsampling 420 \
    --ppm "$tmp/frame.ppm" --jpg "$tmp/frame.jpg" --quality "$Q"

# Median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# tjbench's frame rate for the line starting with $1, over RUNS runs, as median ms/frame.
tj_ms() {
    local label=$1
    shift
    for _ in $(seq "$RUNS"); do
        (cd "$tmp" && tjbench "$@" -nowrite -benchtime "$BENCHTIME" -warmup 0.5) |
            awk -v l="$label" 'index($0, l) == 1 { for (i = 1; i <= NF; i++) if ($i == "rate:") print 1000 / $(i + 1) }'
    done | median
}

echo "== tjbench, $RUNS runs x ${BENCHTIME}s each" >&2
tj_enc_yuv=$(tj_ms "Comp from YUV" frame.ppm "$Q" -subsamp 420 -yuv -componly)
tj_enc_rgb=$(tj_ms "Compress" frame.ppm "$Q" -subsamp 420 -rgb -componly)
tj_dec=$(tj_ms "Decompress" frame.jpg -bgrx)

echo "== framecast: cargo bench --bench codec (criterion)" >&2
export CRITERION_HOME="$tmp/criterion"
cargo bench --quiet --bench codec -- \
    "^codec/(encode_yuv420|encode_rgb|decode_0rgb)/${W}x${H}/q${Q}\$" \
    --measurement-time "$((RUNS * BENCHTIME))" --sample-size 50 >&2

fc_ms() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e6)' \
        "$CRITERION_HOME/$1/${W}x${H}/q${Q}/new/estimates.json"
}
fc_enc_yuv=$(fc_ms codec_encode_yuv420)
fc_enc_rgb=$(fc_ms codec_encode_rgb)
fc_dec=$(fc_ms codec_decode_0rgb)

target_dir=$(cargo_target_dir)
crate_ver=$(grep -hs 'define LIBJPEG_TURBO_VERSION ' "$target_dir"/release/build/turbojpeg-sys-*/out/include/jconfig.h |
    awk '{ print $3; exit }')
tj_ver=$(dpkg-query -W -f='${Version}' libjpeg-turbo-progs 2>/dev/null || echo unknown)

echo
echo "framecast vs tjbench, ${W}x${H} q${Q} 4:2:0, ms per frame (median), one core"
echo "framecast links libjpeg-turbo ${crate_ver:-3.1 (built by the turbojpeg crate)}; tjbench is Debian's libjpeg-turbo-progs $tj_ver (libjpeg-turbo 2.1.5)."
echo "JPEG sizes: framecast $(stat -c %s "$tmp/frame.jpg") bytes (encoded from the planes)."
printf '%-18s %12s %12s %18s\n' "" "framecast" "tjbench" "framecast/tjbench"
row() { printf '%-18s %12.3f %12.3f %18.2f\n' "$1" "$2" "$3" "$(awk -v a="$2" -v b="$3" 'BEGIN { print a / b }')"; }
row "encode from YUV" "$fc_enc_yuv" "$tj_enc_yuv"
row "encode from RGB" "$fc_enc_rgb" "$tj_enc_rgb"
row "decode to 0RGB" "$fc_dec" "$tj_dec"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (other processes skew both columns)"
