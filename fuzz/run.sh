#!/bin/sh
# Fuzz both VE.Direct targets for SECONDS each (default 30), the way CI does:
#   fuzz/run.sh 30
# New inputs go to work/ (git-ignored); the seeds in corpus/ are read, never grown.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); RUSTC_BOOTSTRAP lets the stable
# toolchain accept the sanitizer flags.
set -eu
seconds=${1:-30}
cd "$(dirname "$0")"
for target in vedirect_text:4096 vedirect_hex:256; do
    name=${target%%:*}
    max_len=${target#*:}
    mkdir -p "work/$name"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$name" "work/$name" "corpus/$name" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=512
done
