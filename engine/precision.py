"""The precision the engine computes in, chosen from the hardware it finds.

`dtype: auto` (the default; DESIGN_STUDIO_DTYPE overrides it) resolves per device:

- CUDA: float16. Tensor cores run fp16 and bf16 at the same rate on the GPUs this targets (A100, H100), so bf16
  is not faster there, and SD 1.5's weights were trained and shipped in fp16.
- MPS: float16.
- CPU with bf16 units (Intel AMX-BF16, or AVX512-BF16 on Intel Cooper Lake and AMD Zen 4/5): bfloat16. oneDNN runs
  the convolutions and matmuls natively there (8× per UNet step on 2 AMX cores: docs/performance.md).
- Any other CPU: float32. Without the units bf16 is emulated by conversions and runs slower than fp32.

What the CPU has comes from what torch reports (`torch.cpu.get_capabilities()`, the cpuinfo library oneDNN and
PyTorch's own kernels dispatch on), with Linux's /proc/cpuinfo flags as a fallback: never from a model name.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: The instruction-set features that decide the precision (and int8), in torch's spelling.
FLAGS = (
    "avx2",
    "avx512_f",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)
# /proc/cpuinfo's spelling where it differs from torch's
_PROC_NAMES = {"avx512f": "avx512_f"}
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class CpuFeatures:
    """What the processor offers, as torch sees it."""

    model: str = ""
    isa: str = ""  # torch's kernel dispatch level: DEFAULT, AVX2, AVX512, AMX...
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def bf16(self) -> str | None:
        """The native bf16 units, if any: "AMX" or "AVX512-BF16"."""
        if "amx_bf16" in self.flags:
            return "AMX"
        if "avx512_bf16" in self.flags:
            return "AVX512-BF16"
        return None

    @property
    def int8(self) -> str | None:
        """The native int8 dot-product units, if any: "AMX-INT8", "AVX512-VNNI" or "AVX-VNNI"."""
        for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI")):
            if flag in self.flags:
                return name
        return None

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "isa": self.isa, "flags": sorted(self.flags), "bf16": self.bf16, "int8": self.int8}


def _proc_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = {_PROC_NAMES.get(f, f) for f in value.split()}
    return model, flags


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's processor (once per process)."""
    import torch

    proc_model, proc_flags = _proc_cpuinfo()
    try:
        caps = torch.cpu.get_capabilities()
        flags, model = {name for name in FLAGS if caps.get(name)}, str(caps.get("cpu_name") or "")
    except (AttributeError, RuntimeError):  # a torch without it: the kernel's view instead
        flags, model = proc_flags, ""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        isa = ""
    return CpuFeatures(model=proc_model or model, isa=isa, flags=frozenset(f for f in flags if f in FLAGS))


def choose_dtype(device: str, requested: str = "auto", features: CpuFeatures | None = None):
    """The torch dtype for `device`: the one asked for, or (auto) the fastest that keeps the pictures."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    device = str(device)
    if device.startswith(("cuda", "mps")):
        return torch.float16
    features = features if features is not None else cpu_features()
    return torch.bfloat16 if features.bf16 else torch.float32


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def precision_label(device: str, dtype, features: CpuFeatures | None = None) -> str:
    """What the sidebar, /health and the bench say: "bf16 (AMX)", "fp32", "bf16 (emulated: slower here)"."""
    name = SHORT.get(dtype_name(dtype), dtype_name(dtype))
    if not str(device).startswith("cpu"):
        return name
    features = features if features is not None else cpu_features()
    if name == "bf16":
        return f"bf16 ({features.bf16})" if features.bf16 else "bf16 (emulated: slower here)"
    if name == "fp32" and features.bf16:
        return f"fp32 (bf16 units unused: {features.bf16})"
    return name
