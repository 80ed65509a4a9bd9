#!/usr/bin/env bash
# `chargen sample -o piece.wav` renders through FluidSynth and a General MIDI soundfont; its test
# needs them. Install them when we can (root, apt available); otherwise that test skips and says why.
command -v fluidsynth >/dev/null 2>&1 && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's fluidsynth and fluid-soundfont-gm for the audio test..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluidsynth fluid-soundfont-gm \
        >/dev/null) || echo "could not install fluidsynth; the audio test will be skipped" >&2
else
    echo "fluidsynth not found and not root: the audio test will be skipped" \
        "(apt-get install fluidsynth fluid-soundfont-gm)" >&2
fi
exit 0
