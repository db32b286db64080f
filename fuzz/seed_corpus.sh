#!/bin/sh
# Rebuild the seed corpora from the shared captures (run from anywhere).
#   corpus/vedirect_text/<capture>: one selector byte (chunk size 8) + the capture bytes
#   corpus/vedirect_hex/<n>:        each HEX frame line found in the captures
set -eu
here=$(cd "$(dirname "$0")" && pwd)
captures="$here/../../shared/vedirect/captures"
text="$here/corpus/vedirect_text"
hex="$here/corpus/vedirect_hex"
rm -rf "$text" "$hex"
mkdir -p "$text" "$hex"
for bin in "$captures"/*.bin; do
    name=$(basename "$bin" .bin)
    { printf '\007'; cat "$bin"; } > "$text/$name"
done
n=0
cat "$captures"/*.bin "$captures"/*.json | LC_ALL=C grep -ao ':[0-9A-F]\{3,\}' | sort -u |
while read -r frame; do
    n=$((n + 1))
    printf '%s' "$frame" > "$hex/frame_$n"
done
echo "seeded $(ls "$text" | wc -l) text and $(ls "$hex" | wc -l) hex inputs"
