#!/usr/bin/env bash
# Makes docs/images/live.png, the README's screenshot of the live page
# (section "Watching a run"): plots/live's browser test trains a small run
# (an MLP on random features, 3000 steps, a snapshot every 50) beside the
# page in headless chromium, and this writes its screenshot at step 2000,
# with a query in the query box. Needs chromium (Debian: apt-get install
# chromium). Ordinary test runs never write the image.
set -euo pipefail
cd "$(dirname "$0")/.."
GVDB_REQUIRE_CHROMIUM=1 GVDB_LIVE_SCREENSHOT="$PWD/docs/images/live.png" \
	go test -count=1 -run '^TestBrowser$' -v ./plots/live | grep -E '^(---|ok|FAIL)|points in'
ls -l docs/images/live.png
