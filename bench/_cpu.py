"""The CPU a benchmark ran on, from /proc/cpuinfo: model, vendor and the ISA flags that pick int8/float kernels.

Whisper's output depends on them: CTranslate2 and oneDNN choose their matrix kernels from these flags (and
CTranslate2 uses Intel MKL and its AVX-512 code on Intel CPUs only), so the same int8 model can hear a word
differently on another CPU (README.md, "Measured performance"). The environment variables that override those
choices are recorded too, when set.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
ISA_OVERRIDES = ("CT2_FORCE_CPU_ISA", "CT2_USE_MKL", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str
    family_model: str  # "cpu family/model/stepping": tells CPU generations apart where the name is generic
    cores: int
    isa_flags: list[str]  # those of ISA_FLAGS the CPU has, in that order
    isa_overrides: dict[str, str]  # ISA_OVERRIDES set in the environment

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        overrides = " ".join(f"{k}={v}" for k, v in self.isa_overrides.items())
        head = f"{self.model} ({self.vendor} {self.family_model}, {self.cores} cores)"
        return f"{head}: {' '.join(self.isa_flags) or 'no AVX'}" + (f"; {overrides}" if overrides else "")


def cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's entry of /proc/cpuinfo (all cores of one machine share model and flags)."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break  # end of the first processor
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass  # not Linux: the model from platform, no flags
    flags = set(fields.get("flags", "").split())
    return CpuInfo(
        model=fields.get("model name") or platform.processor() or platform.machine(),
        vendor=fields.get("vendor_id", "unknown"),
        family_model="/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping")),
        cores=os.cpu_count() or 1,
        isa_flags=[flag for flag in ISA_FLAGS if flag in flags],
        isa_overrides={name: os.environ[name] for name in ISA_OVERRIDES if name in os.environ},
    )
