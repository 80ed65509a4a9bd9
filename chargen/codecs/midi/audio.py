"""Audio from MIDI: ``chargen sample -o piece.wav`` renders through FluidSynth.

FluidSynth with a General MIDI soundfont is the synthesizer Debian and most
Linux distributions package; chargen runs it as a program (no bindings to
build), rendering faster than real time into a temp file renamed into place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chargen.errors import ChargenError
from chargen.files.atomic import atomic_write

INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm"
#: where distributions put a General MIDI soundfont; $CHARGEN_SOUNDFONT overrides
SOUNDFONTS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),
    Path("/usr/share/soundfonts/default.sf2"),
)
SAMPLE_RATE = 44100
RENDER_TIMEOUT_S = 600


@dataclass(frozen=True)
class Synth:
    executable: str
    soundfont: Path


def is_audio_path(path: Path | None) -> bool:
    return path is not None and path.suffix.lower() == ".wav"


def find_synth() -> Synth:
    """FluidSynth and a soundfont, or a one-line error naming what to install."""
    executable = shutil.which("fluidsynth")
    if executable is None:
        raise ChargenError(f"writing .wav needs the fluidsynth program, which is not installed: {INSTALL_HINT}")
    configured = os.environ.get("CHARGEN_SOUNDFONT")
    if configured:
        if not Path(configured).is_file():
            raise ChargenError(f"$CHARGEN_SOUNDFONT={configured}: no such soundfont file")
        return Synth(executable, Path(configured))
    for soundfont in SOUNDFONTS:
        if soundfont.is_file():
            return Synth(executable, soundfont)
    raise ChargenError(f"writing .wav needs a General MIDI soundfont (none in /usr/share/sounds/sf2): {INSTALL_HINT}"
                       " or set $CHARGEN_SOUNDFONT to a .sf2 file")


def render_wav(midi_path: Path, wav_path: Path, synth: Synth | None = None, sample_rate: int = SAMPLE_RATE) -> None:
    """Render ``midi_path`` to a 16-bit stereo WAV at ``wav_path``, atomically."""
    synth = synth or find_synth()

    def render(tmp: Path) -> None:
        # -n -i: no MIDI input, no shell; -F: render the file as fast as possible; -T: the temp name has no .wav
        command = [synth.executable, "-n", "-i", "-q", "-F", str(tmp), "-T", "wav", "-r", str(sample_rate),
                   str(synth.soundfont), str(midi_path)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ChargenError(f"{midi_path}: fluidsynth did not finish rendering in {RENDER_TIMEOUT_S} s") from None
        if done.returncode != 0 or tmp.stat().st_size == 0:
            detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ChargenError(f"{midi_path}: fluidsynth failed to render audio (exit {done.returncode}: {detail})")

    try:
        atomic_write(wav_path, render)
    except OSError as exc:
        raise ChargenError(f"{wav_path}: cannot write audio ({exc.strerror or exc})") from None
