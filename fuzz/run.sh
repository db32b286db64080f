#!/bin/sh
# Fuzz every target, the way CI does: the two VE.Direct targets for SECONDS each (default
# 30), and the command, config and rules targets for half as long each (at least 5 s):
#   fuzz/run.sh 30
# New inputs go to work/ (git-ignored); the seeds in corpus/ are read, never grown.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets the stable
# toolchain accept the sanitizer flags.
set -eu
seconds=${1:-30}
short=$((seconds / 2))
[ "$short" -ge 5 ] || short=5
cd "$(dirname "$0")"
for target in vedirect_text:4096:$seconds vedirect_hex:256:$seconds commands:512:$short \
    config:4096:$short rules:4096:$short; do
    name=${target%%:*}
    rest=${target#*:}
    max_len=${rest%%:*}
    time=${rest#*:}
    mkdir -p "work/$name"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$name" "work/$name" "corpus/$name" -- \
        -max_total_time="$time" -max_len="$max_len" -rss_limit_mb=512
done
