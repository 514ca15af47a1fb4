"""gateway/allocator.py: glibc's mmap threshold fixed for the server process."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_threshold_is_fixed_on_glibc_and_left_alone_when_the_environment_sets_it():
    # In a fresh interpreter: mallopt changes the whole process.
    code = "from gateway.allocator import tune_malloc; print(tune_malloc())"
    glibc = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(glibc)
    env_set = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert env_set.stdout.strip() == "False"

