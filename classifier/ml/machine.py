"""What the machine offers for the timings people compare: the CPU's model and vector instruction flags.

Times are only comparable on like CPUs: the same training ran about 3x slower on AVX2-only cores than on
cores with AVX-512 BF16. Every figure printed for a person names the flags it was measured with.
"""

import os
import pathlib

# The flags that decide how fast TensorFlow runs on a CPU, fastest first.
REPORTED_CPU_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")
# bfloat16 matrix units; without them bfloat16 is emulated and slower than float32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_lines() -> list[str]:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_flags(*, wanted: tuple[str, ...] = REPORTED_CPU_FLAGS) -> list[str]:
    """Those of `wanted` that /proc/cpuinfo lists (none where it cannot be read)."""
    flags = {flag for line in _cpuinfo_lines() if line.startswith("flags") for flag in line.split()}
    return [flag for flag in wanted if flag in flags]


def cpu_has_bf16() -> bool:
    return bool(cpu_flags(wanted=BF16_CPU_FLAGS))


def cpu_flags_line() -> str:
    present = cpu_flags()
    return "CPU flags: " + " ".join(
        f"{flag}={'yes' if flag in present else 'no'}" for flag in REPORTED_CPU_FLAGS
    )


def machine_line() -> str:
    """The CPU model, the cores this process may use and the flags: what a measured time depends on."""
    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")), "CPU ?"
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores, {cpu_flags_line()}"
