"""What the bench scripts share: where the data sets are, and which CPU a figure was measured on."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
CPU_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def datasets_dir() -> pathlib.Path:
    """$VITRINE_DATASETS_DIR, else shared/datasets beside the repository (as the Django settings say)."""
    return pathlib.Path(os.environ.get("VITRINE_DATASETS_DIR") or REPO.parent / "shared" / "datasets")


def cpu_words() -> str:
    """The CPU model, its cores here and the flags that change training and inference speed."""
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown (no /proc/cpuinfo)"
    lines = cpuinfo.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = {flag for line in lines if line.startswith("flags") for flag in line.split()}
    shown = " ".join(flag for flag in CPU_FLAGS_SHOWN if flag in flags) or "none of " + " ".join(
        CPU_FLAGS_SHOWN
    )
    return f"{model}, {len(os.sched_getaffinity(0))} cores, flags: {shown}"
