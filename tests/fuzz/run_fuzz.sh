#!/bin/sh
# run_fuzz.sh BINARY NAME SECONDS ARTIFACTS - what `make test` runs per fuzz
# target: every input in regressions/NAME/ once (each must pass), then
# SECONDS of fuzzing from a temporary copy of corpus/NAME/ (the source
# tree is never written), with NAME.dict when there is one. A crash input
# is kept in ARTIFACTS/NAME-crash-*.
set -eu
bin=$1 name=$2 secs=$3 art=$4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$art"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-$name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dict=
[ -f "$here/$name.dict" ] && dict="-dict=$here/$name.dict"
if [ -d "$here/regressions/$name" ] && [ -n "$(ls -A "$here/regressions/$name")" ]; then
  echo "== $name: regression inputs"
  "$bin" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$art/$name-" "$here/regressions/$name"/*
fi
mkdir "$tmp/corpus"
if [ -d "$here/corpus/$name" ]; then
  cp -R "$here/corpus/$name/." "$tmp/corpus/"
fi
echo "== $name: fuzzing for $secs s"
# shellcheck disable=SC2086
"$bin" $dict -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$art/$name-" "$tmp/corpus"
