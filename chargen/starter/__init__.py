"""The starter model shipped with chargen: English letters and words to fine-tune from.

A 2x256 LSTM (chargen's small preset) trained for 3,000 steps on tiny-shakespeare
(public domain; validation 1.46 nats/char) with ``chargen train tinyshakespeare.txt
--size small --max-steps 3000``. ``--init-from starter`` (``init_from="starter"``)
fine-tunes it: a minute on a small corpus then writes words of that corpus, where a
minute from scratch writes letters (``make demo`` does this; README).
"""

from __future__ import annotations

from pathlib import Path

#: The name ``--init-from`` and ``-c`` take for it (a run of that name, if there is one, comes first).
NAME = "starter"
PATH = Path(__file__).with_name("english-small.safetensors")
