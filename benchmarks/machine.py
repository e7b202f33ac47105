"""The machine a benchmark ran on, as every benchmark records it under ``machine``.

One definition, so the results of different benchmarks (and of different runs) name the
machine in the same words. ``throughput.py`` re-arranges the same facts into its own
historic layout (``cpu_cores``, ``versions``), kept so its committed results compare.
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
from collections.abc import Sequence


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where it has none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str | None:
    """``package.__version__``; None where the package is not installed."""
    try:
        return importlib.import_module(package).__version__
    except ImportError:
        return None


def usable_cpus() -> int:
    """The cores this process may run on: its affinity (``taskset -c 0`` gives 1), where
    the platform has one; the peers' thread counts follow it."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info(packages: Sequence[str] = ("jax", "flax", "numpy")) -> dict:
    """platform, cpu_model, cpu_count, cpus_usable, python, the version of each of
    ``packages`` (None where one is not installed), ``jax_devices`` when jax is one of
    them, and the date (UTC).

    A benchmark that does not use jax leaves it out of ``packages`` and does not import it.
    """
    out = {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "python": platform.python_version(),
    }
    out.update({p: version(p) for p in packages})
    if "jax" in packages:
        import jax

        out["jax_devices"] = [str(d) for d in jax.devices()]
    out["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return out
