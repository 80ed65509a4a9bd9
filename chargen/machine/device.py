"""Device and precision choices, shared by training and sampling."""

from __future__ import annotations

import contextlib
import hashlib
import platform
from collections.abc import Iterator
from pathlib import Path

import torch

from chargen.errors import ChargenError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: fp32 weights and activations, with oneDNN doing fp32 matmuls (and RNNs) in bf16 math: a candidate
#: only ``--precision auto`` tries (chargen.machine.calibrate), never a user's choice.
BF16_MATH = "fp32-bf16math"


def check_device_name(name: str) -> str:
    if name not in DEVICES:
        raise ChargenError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return name


def check_precision_name(name: str) -> str:
    if name not in PRECISIONS and name != BF16_MATH:
        raise ChargenError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ChargenError("device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ChargenError("device mps: Apple's MPS backend is not available here")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` without measuring: bf16 on CUDA GPUs that have it (else fp16), fp32 on CPUs.

    Training resolves ``auto`` by measurement instead (chargen.machine.calibrate):
    on the CPU bf16 autocast pays only where the CPU multiplies bf16 natively, and
    even there not for every model shape.
    """
    check_precision_name(name)
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if device.type == "cpu" and name == "bf16" and not cpu_has_native_bf16():
        raise ChargenError("precision bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16); use fp32")
    if name == BF16_MATH and not (device.type == "cpu" and cpu_has_native_bf16() and bf16_math_available()):
        raise ChargenError(f"{BF16_MATH} needs a CPU with native bf16 and a torch with mkldnn fp32_precision")
    if device.type == "cpu" and name == "fp16":
        raise ChargenError("precision fp16 is for GPUs; use fp32 or bf16 on the CPU")
    return name


def bf16_math_available() -> bool:
    """Whether this torch lets oneDNN's fp32 matmuls use bf16 math (``mkldnn.matmul.fp32_precision``)."""
    matmul = getattr(torch.backends.mkldnn, "matmul", None)
    return torch.backends.mkldnn.is_available() and hasattr(matmul, "fp32_precision")


@contextlib.contextmanager
def bf16_math() -> Iterator[None]:
    """oneDNN's fp32 matmuls and RNNs in bf16 math inside the block; the previous setting after it."""
    backends = [b for b in (getattr(torch.backends.mkldnn, name, None) for name in ("matmul", "rnn"))
                if hasattr(b, "fp32_precision")]
    saved = [b.fp32_precision for b in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "bf16"
        yield
    finally:
        for backend, value in zip(backends, saved):
            backend.fp32_precision = value


@contextlib.contextmanager
def autocast_context(device: torch.device, precision: str) -> Iterator[None]:
    if precision == "fp32":
        yield
        return
    if precision == BF16_MATH:
        with bf16_math():
            yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device.type, dtype=dtype):
        yield


def machine_key(device: torch.device, threads: int) -> str:
    """What makes a calibration valid elsewhere: the processor, its flags, torch, the threads."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        model, flags = platform.processor(), ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.strip()
                if model and flags:
                    break
        except OSError:
            pass
        hardware = f"{model} flags:{hashlib.sha256(flags.encode()).hexdigest()[:12]}"
    return f"{device.type} {hardware} torch {torch.__version__} threads {threads}"
