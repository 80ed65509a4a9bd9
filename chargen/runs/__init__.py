"""A training run's folder and everything in it, and starting or resuming one.

  layout.py      the files a run folder holds, run.json and the run's status, the checkpoints root
  lookup.py      which weights a name means: a file, a run folder or name, the starter, the newest run
  lock.py        RunLock: one writer per run folder (an flock held for the session)
  checkpoint.py  the weights format (safetensors + metadata) and the resume state (state.pt)
  checks.py      everything read from a checkpoint checked before it is believed
  start.py       start_run / resume_run: what `chargen train` does, as a library call
  metrics.py     metrics.jsonl, the training curve, appended line by line
  curve.py       the curve read back, thinned, and what it says (the trend)
  plot.py        `chargen plot`: curves of several runs as one PNG (matplotlib)
"""
