"""What the machine offers for the timings people compare: the CPU's vector instruction flags."""

import pathlib

# The flags that decide how fast TensorFlow runs the backbone on a CPU, fastest first.
REPORTED_CPU_FLAGS = ("avx512_bf16", "avx512f", "avx2")


def cpu_flags(*, wanted: tuple[str, ...] = REPORTED_CPU_FLAGS) -> list[str]:
    """Those of `wanted` that /proc/cpuinfo lists (none where it cannot be read)."""
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return [flag for flag in wanted if flag in flags]


def cpu_flags_line() -> str:
    present = cpu_flags()
    return "CPU flags: " + " ".join(
        f"{flag}={'yes' if flag in present else 'no'}" for flag in REPORTED_CPU_FLAGS
    )
