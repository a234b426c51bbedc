"""``python -m bench`` (``make bench``): every benchmark, one after the other.

Each prints its figures next to the reference it is compared with. ``python -m bench NAME ...``
runs only the named ones (ledger, yuma, models, miner, validator, gateway, market).
"""

from __future__ import annotations

import importlib
import sys

ORDER = ["ledger", "yuma", "models", "miner", "validator", "gateway", "market"]


def main(argv: list[str]) -> None:
    names = argv or ORDER
    for name in names:
        try:
            module = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError as error:
            if error.name == f"bench.bench_{name}":
                print(f"(no benchmark named {name!r}; known: {', '.join(ORDER)})")
                continue
            raise
        print(f"\n=== bench {name} ===", flush=True)
        saved = sys.argv
        sys.argv = [f"bench.bench_{name}"]
        try:
            module.main()
        finally:
            sys.argv = saved


if __name__ == "__main__":
    main(sys.argv[1:])
