"""`python -m shoebox.store.build_index SHARD_DIR --dim N`: build the HNSW index of an Edge shard copy.

Run by `EdgeStore` in a child process, because the bindings' `optimize()` holds the GIL for
the whole build (minutes at 100,000 points) and would stop every thread of the service.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str]) -> int:
    import qdrant_edge as qe

    from shoebox.store.edge import shard_config

    parser = argparse.ArgumentParser(prog="python -m shoebox.store.build_index")
    parser.add_argument("shard_dir")
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    args = parser.parse_args(argv)
    started = time.monotonic()
    config = shard_config(args.dim, args.m, args.ef_construct)
    shard = qe.EdgeShard.load(args.shard_dir, config)
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    print(f"indexed {info.indexed_vectors_count}/{info.points_count} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
