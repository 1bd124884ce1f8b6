"""Test-wide settings: a persistent XLA compilation cache shared by the test processes.

Many tests start fresh processes (fake device counts, SIGKILL, notebooks) that
compile the same tiny models; the cache turns their repeated compiles into
disk reads.
"""

import os
import tempfile

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "zoo-test-xla-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
