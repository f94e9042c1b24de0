#!/usr/bin/env python
"""Make WebDataset shards from an NYU-layout folder: the same as `murauer-dist make-shards ...`.

    python shards/make_shards.py ROOT OUT [section.key=value ...] [--split all|train|test]
        [--shard-size N] [--workers K] [--preset NAME]
    python shards/make_shards.py --verify OUT

See shards/README.md for the shard schema, the manifest, resume and labeled subsets.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout without installing

from murauer_dist.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["make-shards", *sys.argv[1:]])
