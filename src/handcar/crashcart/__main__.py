"""`python -m handcar.crashcart`: the same as the crashcart launcher."""

from __future__ import annotations

from handcar.crashcart.cli import main

main()
