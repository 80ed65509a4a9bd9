"""``python -m benchmarks.gpu_check``: every CUDA path of chargen, run and measured in one call, one table.

    python -m benchmarks.gpu_check [--device auto|cpu|cuda] [--tiny] [--json PATH]

Made for the rare minutes a GPU machine is lent: from a clean checkout it trains,
samples and serves on the device, prints one table (each row a measured figure with
its device, torch and CUDA versions and the device's name) and writes it as JSON
(``benchmarks/results/gpu_check.json`` by default). The steps:

1. matmul peak in fp32, tf32 and bf16, measured here;
2. training medium and large for a fixed number of steps with ``--precision auto``:
   what auto chose, chars/s, the fraction of the measured peak, and the validation
   loss, finite and close to an fp32 run of the same steps;
3. ``--minutes 2``: the size chosen and the best validation loss;
4. torchrun (NCCL on CUDA, gloo on the CPU) with a process per GPU: the weights
   equal to one process's;
5. the device-trained checkpoint sampled on the CPU and on the device, same seed:
   the same text;
6. ``chargen serve`` on the CPU and on the device with 1, 16, 64 and 256 concurrent
   streams: characters per second;
7. the peak memory of each step (a column: the device's, or RSS on the CPU).

Each step catches its own failure, which becomes a FAILED row, and the script goes
on; it exits 1 if any row failed. ``--device cpu --tiny`` runs it all on the CPU
with tiny sizes in well under a minute (tests/test_gpu_check.py).
"""
