#!/usr/bin/env bash
# What a reader costs a training run (README, "Watching a run"). The same
# small run is trained TRIALS times in each of three ways, interleaved
# (none live other, live other none, other none live, ...):
#
#   none   no reader;
#   live   a reader querying the training store all the time, through the
#          writer's socket (gvdb query in a loop, the page's core
#          statistics and a per-example column in turn);
#   other  the same reader on a finished copy of the run, read directly:
#          the reader's own work, without the writer serving it.
#
# The trainer runs on CPU 0 and the reader on CPU 1 (taskset), so that the
# reader's statistics do not take the trainer's core: what is left is the
# writer's cost of serving (reading Badger, writing the socket) and what
# two busy cores share (memory, caches, the disk). PIN=0 runs both
# unpinned (then the reader's CPU competes with training on a 2-core
# machine). Prints per mode the mean step time (the trainer's own
# steps/s: wall time of the training loop, snapshot writes included) and
# the trainer process's CPU time per step (user + sys: the writer's
# serving goroutines are in it), the ratios to "none", the queries the
# reader answered, the trainer's extra CPU time with a live reader over
# one reading another store (the writer's serving), and the load average
# before and after.
#
# Usage: docs/reader-cost.sh [TRIALS]   (default 5; about 10 s a training)
# TRAIN_ARGS overrides the run's flags.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-5}
pin=${PIN:-1}
train_args=${TRAIN_ARGS:-"--data rf --data-size 2000 --model mlp --hidden 512,512 --batch 64 --steps 400 --snapshot-every 20 --snapshot-examples 128 --eval-examples 200"}

work=$(mktemp -d)
reader_pid=
cleanup() {
	if [ -n "$reader_pid" ]; then kill "$reader_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/gvdb" ./cmd/gvdb
gvdb=$work/gvdb
cpu() { if [ "$pin" = 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

# reader DIR COUNTFILE: query DIR until killed, counting answers.
reader() {
	local n=0 i=0
	local qs=("SELECT step, variance, nvar, gns, loss FROM 'r'" "SELECT step, example_id, grad_norm FROM 'r'")
	while :; do
		if cpu 1 "$gvdb" query --db "$1" --format csv "${qs[i % 2]}" >/dev/null 2>&1; then
			n=$((n + 1))
			echo "$n" >"$2"
		else
			sleep 0.05 # the store is not there yet
		fi
		i=$((i + 1))
	done
}

# The finished copy the "other" reader reads.
# shellcheck disable=SC2086
cpu 0 "$gvdb" train --db "$work/other" --run r $train_args >/dev/null 2>&1

results=$work/results
: >"$results"
modes=(none live other)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((t = 0; t < trials; t++)); do
	for ((k = 0; k < 3; k++)); do
		mode=${modes[(t + k) % 3]}
		store=$work/t$t-$mode
		count=$work/count
		echo 0 >"$count"
		case $mode in
		live) reader "$store" "$count" & reader_pid=$! ;;
		other) reader "$work/other" "$count" & reader_pid=$! ;;
		esac
		# shellcheck disable=SC2086
		out=$(cpu 0 /usr/bin/time -f 'cpu %U %S' "$gvdb" train --db "$store" --run r $train_args 2>&1 | tr '\r' '\n') ||
			{ echo "training failed:"; echo "$out"; exit 1; }
		line=$(grep -E '^(trained|cpu) ' <<<"$out" | tr '\n' ' ')
		if [ -n "$reader_pid" ]; then
			kill "$reader_pid" 2>/dev/null || true
			wait "$reader_pid" 2>/dev/null || true
			reader_pid=
		fi
		# trained r: 400 steps in 9.1s (43.9 steps/s), ... cpu U S
		steps=$(sed -E 's/.*trained r: ([0-9]+) steps.*/\1/' <<<"$line")
		rate=$(sed -E 's/.*\(([0-9.]+) steps\/s\).*/\1/' <<<"$line")
		read -r user sys < <(sed -E 's/.*cpu ([0-9.]+) ([0-9.]+).*/\1 \2/' <<<"$line")
		echo "$mode $steps $rate $user $sys $(cat "$count")" >>"$results"
		printf 'trial %d %-5s %6.2f ms/step, trainer CPU %6.2f ms/step, %s queries answered, load %s\n' \
			"$t" "$mode" "$(awk -v r="$rate" 'BEGIN{print 1000/r}')" "$(awk -v u="$user" -v s="$sys" -v n="$steps" 'BEGIN{print 1000*(u+s)/n}')" \
			"$(cat "$count")" "$(cut -d' ' -f1 /proc/loadavg)"
		rm -rf "$store"
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v trials="$trials" -v pin="$pin" '
function sd(s, s2, n) { return n > 1 ? sqrt(max0((s2 - s * s / n) / (n - 1))) : 0 }
function max0(x) { return x > 0 ? x : 0 }
{ n[$1]++; v = 1000 / $3; st[$1] += v; st2[$1] += v * v; c = 1000 * ($4 + $5) / $2; cpu[$1] += c; cpu2[$1] += c * c; q[$1] += $6 }
END {
	printf "\n%d trials a mode, %s\n", trials, pin == 1 ? "trainer on CPU 0, reader on CPU 1" : "unpinned"
	printf "%-6s %10s %6s %16s %6s %9s\n", "mode", "ms/step", "sd", "trainer CPU ms", "sd", "queries"
	split("none live other", m, " ")
	for (i = 1; i <= 3; i++) {
		k = m[i]
		printf "%-6s %10.2f %6.2f %16.2f %6.2f %9.1f\n", k, st[k] / n[k], sd(st[k], st2[k], n[k]), cpu[k] / n[k], sd(cpu[k], cpu2[k], n[k]), q[k] / n[k]
	}
	base = st["none"] / n["none"]; cbase = cpu["none"] / n["none"]
	printf "\nstep time  live/none %.3f  other/none %.3f  live/other %.3f\n", st["live"] / n["live"] / base, st["other"] / n["other"] / base, (st["live"] / n["live"]) / (st["other"] / n["other"])
	printf "trainer CPU per step  live/none %.3f  other/none %.3f\n", cpu["live"] / n["live"] / cbase, cpu["other"] / n["other"] / cbase
	d = cpu["live"] / n["live"] - cpu["other"] / n["other"]
	printf "serving (trainer CPU, live - other): %.2f ms a step, %.1f%% of a step without a reader\n", d, 100 * d / base
}' "$results"
