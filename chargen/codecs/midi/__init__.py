"""MIDI: Standard MIDI Files as a stream of performance events.

The vocabulary follows Magenta's Performance RNN (Oore et al. 2018). With the
default settings there are 388 tokens, in this id order:

====================  =====  ===========================================
kind                  count  meaning
====================  =====  ===========================================
NOTE_ON  0..127         128  start pitch p at the current velocity
NOTE_OFF 0..127         128  stop pitch p
TIME_SHIFT 1..100       100  advance the clock by n x 10 ms (10 ms .. 1 s)
VELOCITY 0..31           32  velocity bin for the following NOTE_ONs
====================  =====  ===========================================

Decisions (also in docs/midi.md):

* Time is absolute: ticks become seconds through every tempo change
  (``mido.tick2second`` with the file's ticks_per_beat; SMPTE divisions are
  honoured too), then each event is rounded to the nearest 10 ms step. Rounding
  absolute times, not deltas, means no drift. Longer gaps are several shifts.
* Velocity 1..127 falls into 32 bins of ~4 values; a bin decodes to a velocity
  inside it, so a decoded file re-encodes to the same bins. A VELOCITY token
  is only emitted when the bin changes.
* All tracks and channels are merged into one time-ordered stream (type 0 and
  1); in type 2 files the tracks are independent songs and are played one
  after another, each with its own tempo map.
* Channel 10 (index 9) is percussion; its "pitches" are instruments, so drums
  are dropped. Program changes are ignored (export picks one instrument).
  The sustain pedal (CC 64) and all other controllers are ignored: notes keep
  their written length.
* NOTE_ON with velocity 0 is a NOTE_OFF. Note-ons and -offs pair per track,
  channel and pitch; a NOTE_OFF closes every open note of its key that did
  not start on the same tick (what pretty_midi does). Notes still open at the
  end of a track end there.
* Canonical form, so that encode -> decode -> encode is the identity after the
  first quantization: every note lasts at least one step; of two same-pitch
  notes starting on the same step only the longer is kept; a same-pitch note
  that starts while another sounds cuts the earlier one off. Within a step all
  NOTE_OFFs come first, then NOTE_ONs, each group by ascending pitch.
* Each token is one printable character: id i is ``chr(0x1401 + i)``, the
  Unified Canadian Aboriginal Syllabics block (letters only, narrow, no
  Unicode decomposition, so no normalisation form changes a stream).

The package, one file per step: ``vocab`` (the token layout), ``smf`` (reading
and cleaning files), ``notes`` (MIDI messages -> quantized notes), ``events``
(notes <-> token ids), ``codec`` (the :class:`~chargen.codecs.base.Codec`),
``export`` (ids -> .mid files) and ``grammar`` (what may come next while decoding).

A second codec, ``midi-notes`` (``note_vocab``, ``note_codec``, ``note_grammar``),
writes each note as a PITCH and its DURATION instead of NOTE_ON/NOTE_OFF events;
it is the default for a folder of .mid files (docs/midi.md says why).
``texture`` holds what a corpus teaches either grammar and ``chargen info``.
"""

from chargen.codecs.midi.codec import MidiCodec
from chargen.codecs.midi.events import describe, encode_midi, ids_to_notes, notes_to_ids, token_name
from chargen.codecs.midi.notes import midi_notes, normalize_notes
from chargen.codecs.midi.smf import read_midi_bytes, read_midi_file
from chargen.codecs.midi.streams import midi_stats, stream_notes
from chargen.codecs.midi.vocab import DEFAULT_VOCAB, MidiStats, MidiVocab, Note

__all__ = [
    "DEFAULT_VOCAB",
    "MidiCodec",
    "MidiStats",
    "MidiVocab",
    "Note",
    "describe",
    "encode_midi",
    "ids_to_notes",
    "midi_notes",
    "midi_stats",
    "stream_notes",
    "normalize_notes",
    "notes_to_ids",
    "read_midi_bytes",
    "read_midi_file",
    "token_name",
]
