#!/usr/bin/env bash
# The query-speed benchmark (README, "Guarantees"; docs/QUERY.md,
# "Rollups"): the whole `gvdb query` process against the NumPy script
# python/moments_numpy.py over the same snapshots exported as .npy
# folders, both computing
#
#   SELECT variance(128), nvar(128), gns
#
# for every snapshot of a run trained with default flags (rollups auto).
# Each way runs TRIALS times, interleaved (gvdb, gvdb --from-blocks,
# NumPy, gvdb, ...), and the best wall time of each is kept: the machine
# is noisy, and interleaving lets drift in its load hit all three alike.
# Prints the store's bytes (blocks, rollups and their ratio), the three
# times, the ratios, the load average before and after, and checks that
# the three agree (rollups within 1e-6, blocks and NumPy within 1e-9).
#
# Usage: docs/bench-moments.sh [TRIALS]   (default 5)
#   STORE=DIR reuses a store (else one is trained in a temporary folder
#   with TRAIN_ARGS, default: MLP 784-256-256-10, --steps 2400
#   --snapshot-every 100 --snapshot-examples 512: 25 snapshots, about 2
#   minutes on 2 cores). The paper's MLP: TRAIN_ARGS="--hidden 1024,1024
#   --steps 5000 --snapshot-every 100 --snapshot-examples 1024".
# Needs /usr/bin/python3 with python3-numpy (Debian's, on OpenBLAS).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/gvdb" ./cmd/gvdb
gvdb=$tmp/gvdb
store=${STORE:-}
if [ -z "$store" ]; then
	store=$tmp/store
	# shellcheck disable=SC2086
	"$gvdb" train --db "$store" --run r ${TRAIN_ARGS:---hidden 256,256 --steps 2400 --snapshot-every 100 --snapshot-examples 512} >&2
fi
run=$("$gvdb" query --db "$store" --format csv "SHOW RUNS" | awk -F, 'NR == 2 { print $1 }')
"$gvdb" export --db "$store" --run "$run" --from 0 --to 999999999 --out "$tmp/npy" >/dev/null
q="SELECT variance(128), nvar(128), gns FROM '$run'"
"$gvdb" query --db "$store" --format csv "SHOW STEPS FROM '$run'" |
	awk -F, 'NR > 1 { b += $6; r += $7 } END { printf "store: %d snapshots, blocks %.1f MiB, rollups %.1f MiB (%.2fx the blocks)\n", NR - 1, b / 2^20, r / 2^20, r / b }'
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$trials" "$gvdb" "$store" "$q" "$tmp/npy" <<'PY'
import glob, subprocess, sys, time
trials, gvdb, store, q, npy = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
dirs = sorted(glob.glob(npy + "/step-*"))
ways = {
    "gvdb query (rollups)": [gvdb, "query", "--db", store, "--format", "csv", q],
    "gvdb query --from-blocks": [gvdb, "query", "--db", store, "--format", "csv", "--from-blocks", q],
    "NumPy (python/moments_numpy.py)": ["/usr/bin/python3", "python/moments_numpy.py", "--batch", "128"] + dirs,
}
best, out = {}, {}
for _ in range(trials):
    for name, cmd in ways.items():
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        out[name] = res.stdout
for name, t in best.items():
    print(f"{name:34s} {t:7.3f} s (best of {trials}, whole process)")
roll, blocks, numpy = best.values()
print(f"NumPy / rollups: {numpy / roll:.1f}x; NumPy / blocks: {numpy / blocks:.2f}x")
# The three agree.
def rows(csv):
    return [[float(x) for x in line.split(",")[1:]] for line in csv.strip().split("\n")[1:]]
r, b = rows(out["gvdb query (rollups)"]), rows(out["gvdb query --from-blocks"])
n = [[float(f[i]) for i in (2, 4, 6)] for f in (l.split() for l in out["NumPy (python/moments_numpy.py)"].strip().split("\n")[:-1])]
def worst(x, y):
    return max(abs(a - c) / abs(c) for u, v in zip(x, y) for a, c in zip(u, v))
print(f"agreement: rollups vs blocks {worst(r, b):.1e}, blocks vs NumPy {worst(b, n):.1e} (relative)")
if worst(r, b) > 1e-6 or worst(b, n) > 1e-9 or len(r) != len(n):
    sys.exit("the answers disagree")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
