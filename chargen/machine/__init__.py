"""What chargen measures about the machine it runs on, to pick the fastest correct path there.

  device.py     the device (CPU, CUDA, MPS) and its default precision
  threads.py    how many threads torch takes, given what else runs
  kernels.py    the batch-1 generation step: torch's, the packed one, or the native one, by measurement
  native/       the fused LSTM step in C, built into the private cache and verified before it is loaded
  calibrate.py  --precision auto: the precision that trains fastest here without losing accuracy
  sizing.py     how many steps --minutes fits, from the measured speed
  offload.py    from how many rows a GPU pays for generation
  cache.py      the one cache of every measurement ($CHARGEN_CACHE) and the one switch (CHARGEN_MEASURE=0)
"""
