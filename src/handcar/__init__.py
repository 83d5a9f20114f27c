"""handcar: an OCI container runtime in Python, a drop-in for runc.

The public API is imported lazily so that `import handcar` stays cheap on the CLI's hot paths.
"""

from __future__ import annotations

__version__ = "0.1.0"
OCI_VERSION = "1.2.0"
