"""Train an AtomoVideo motion module (temporal layers + image channels) on a frozen SD-1.5.

    python tools/train.py --config my_run.yaml [--set key=value ...]
    torchrun --nproc_per_node=8 tools/train.py --config my_run.yaml
    torchrun --nnodes=4 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 tools/train.py --config my_run.yaml

Running the same command again after a crash or a kill resumes from the newest complete checkpoint in
``output_dir``. Keys and defaults: ``tools/train_configs/example.yaml``; ``--keys`` lists them all.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config (see tools/train_configs/example.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key (dotted for nested ones), e.g. --set steps=100 --set data.videos=DIR")
    p.add_argument("--keys", action="store_true", help="list every config key with its meaning and exit")
    p.add_argument("--estimate", nargs="?", const="cuda", choices=("cuda", "cpu"), default=None,
                   help="print the peak memory and FLOPs of one training step of this config on a GPU (or 'cpu') and "
                        "exit, before any data or weights load (computed on the real model with fake tensors)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from atomo_core.errors import AtomoError
    from atomo_core.training.config import config_keys, load_config

    if args.keys:
        for key, doc in config_keys().items():
            print(f"{key:32s} {doc}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.set, require_data=args.estimate is None)
        if args.estimate:
            from atomo_core.training.estimate import estimate, report

            print(report(estimate(config, args.estimate)))
            return 0
        from atomo_core.training.trainer import train

        last = train(config)
    except AtomoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done: step {last['step']}; the motion module is {config.output_dir}/motion_module.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
