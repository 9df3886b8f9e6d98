#!/usr/bin/env bash
# Regenerates samples/sample.flac and samples/sample.txt: about a minute of English speech
# spoken by four flite voices, with natural pauses between sentences and two long silences.
#
# Needs Debian's `flite` (voices slt, rms, awb, kal16 are built in) and `sox` with FLAC support:
#   apt-get install flite sox
# The output is deterministic: flite synthesis is, and sox runs with dither off (-D) and its
# default random seed (-R).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${1:-$here/samples}"
for tool in flite sox; do
  command -v "$tool" >/dev/null || { echo "make_sample.sh needs '$tool' (apt-get install $tool)" >&2; exit 1; }
done

# voice|pause after the sentence in seconds|sentence. Plain words without commas or numbers,
# so both people and small speech models hear them the same way.
sentences=(
  "slt|0.8|The weather was calm and clear on the morning of our trip."
  "rms|0.6|We packed our bags and walked down the hill to the station."
  "awb|0.9|The train left on time and most of the seats were empty."
  "kal16|0.7|Outside the window we could see green fields and small farms."
  "slt|3.0|After an hour the train stopped in a quiet little town."
  "rms|0.8|My sister wanted to buy fresh bread from the market."
  "awb|0.6|The baker told us that the shop opens very early every day."
  "kal16|1.0|We sat in the park and ate our lunch under a large tree."
  "slt|0.7|A small dog ran across the grass and chased a red ball."
  "rms|5.0|In the afternoon the sky turned dark and it started to rain."
  "awb|0.8|We waited in a warm cafe and drank hot tea with milk."
  "kal16|0.9|After the rain we walked slowly back to the station."
  "slt|0.6|The evening train was full of people going home from work."
  "rms|0.0|It was a long day but we were happy to see the sea."
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out_dir"
: >"$work/sample.txt"
parts=()
i=0
for entry in "${sentences[@]}"; do
  IFS='|' read -r voice pause text <<<"$entry"
  flite -voice "$voice" -t "$text" -o "$work/raw$i.wav"
  # Same level for every voice, 16 kHz mono, then the pause that follows the sentence.
  sox -D -R "$work/raw$i.wav" -r 16000 -c 1 -b 16 "$work/part$i.wav" gain -n -3 pad 0 "$pause"
  parts+=("$work/part$i.wav")
  printf '%s\n' "$text" >>"$work/sample.txt"
  i=$((i + 1))
done

# Half a second of silence before the first word, as in a real recording.
sox -D -R -n -r 16000 -c 1 -b 16 "$work/lead.wav" trim 0 0.5
sox -D -R "$work/lead.wav" "${parts[@]}" -C 8 "$out_dir/sample.flac"
cp "$work/sample.txt" "$out_dir/sample.txt"
echo "wrote $out_dir/sample.flac ($(soxi -D "$out_dir/sample.flac") s) and $out_dir/sample.txt"
