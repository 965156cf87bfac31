"""Numeric precision of an encoder's forward pass: an execution setting, like the device.

Precision never enters an encoder's identity: a store built with float32 vectors opens and is
queried with bfloat16 ones (and back); the two agree to a cosine of about 0.99997 for the default
text encoder. "auto" picks bfloat16 only where the hardware computes it natively (CPUs with
avx512_bf16 or amx_bf16, CUDA devices that support it) and only for encoder families measured to
keep their vectors (cosine >= 0.999 to float32); elsewhere float32. `ASIF_PRECISION` overrides the
default for specs that leave precision unset.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from functools import cache
from typing import Literal, get_args

from asif_vdb.errors import InputError
from asif_vdb.schema.encoders import Precision

Resolved = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
ENV_VAR = "ASIF_PRECISION"

#: Families whose "auto" may pick bfloat16. Measured on a CPU with avx512_bf16:
#: all-MiniLM-L6-v2 under autocast: 2.9x the captions/s, min cosine 0.99997 to float32 on Flickr8k;
#: tf_efficientnet_lite0 (traced, channels_last): 1.7x the images/s but min cosine 0.995, so not.
AUTO_BF16_FAMILIES = frozenset({"sentence-transformers"})


def requested(value: str | None) -> str:
    """The precision asked for: the spec's, else $ASIF_PRECISION, else "auto"; checked."""
    if value is None:
        value = os.environ.get(ENV_VAR) or "auto"
        where = f"${ENV_VAR}"
    else:
        where = "precision"
    if value not in PRECISIONS:
        raise InputError(f"{where} must be one of {', '.join(PRECISIONS)}; got {value!r}")
    return value


def resolve(value: str | None, *, device: str, family: str) -> Resolved:
    """The precision an encoder of `family` on `device` runs in."""
    asked = requested(value)
    if asked == "float32":
        return "float32"
    if asked == "bfloat16":
        return "bfloat16"
    if family in AUTO_BF16_FAMILIES and native_bf16(device):
        return "bfloat16"
    return "float32"


def native_bf16(device: str) -> bool:
    """Whether `device` computes bfloat16 in hardware (emulated bfloat16 is slower than float32)."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


@cache
def _cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (x86 "flags", arm64 "Features"); empty elsewhere."""
    if platform.system() != "Linux":
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@contextlib.contextmanager
def autocast(device: str, precision: Resolved) -> Iterator[None]:
    """Run the forward passes inside in `precision` (thread-local: enter it in the thread that
    runs the model)."""
    if precision == "float32":
        yield
        return
    import torch

    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        yield
