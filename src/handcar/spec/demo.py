"""`make demo`: build a busybox bundle and run a container in it through the handcar CLI."""

from __future__ import annotations

import os
import subprocess
import sys

from handcar.spec.bundle import make_bundle


def main() -> int:
    bundle = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "demo")
    os.makedirs(bundle, exist_ok=True)
    if not os.path.exists(os.path.join(bundle, "config.json")):
        make_bundle(
            bundle,
            ["sh", "-c", 'echo "hello from handcar: $(hostname), pid $$, $(uname -r)"; ls /'],
        )
    handcar = os.path.join(os.path.dirname(sys.executable), "handcar")
    print(f"$ handcar run --bundle {bundle} demo", flush=True)
    return subprocess.call([handcar, "run", "--bundle", bundle, f"demo-{os.getpid()}"])


if __name__ == "__main__":
    sys.exit(main())
