"""`glue-lora` command line: train (also `run_glue.py`), data, and the tools built on them."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable

from glue_lora.errors import UsageError

log = logging.getLogger("glue_lora")


def setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    for noisy in ("httpx", "huggingface_hub", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_train(args: argparse.Namespace) -> int:
    from glue_lora.config import load_config, resolve_init_from
    from glue_lora.train import run

    # init_from: a config names its MNLI run; fail now, with the command that produces it, if it is missing
    record = run(resolve_init_from(load_config(args.config, args.overrides)))
    best, key = record.get("best") or {}, record["primary_metric"]
    if best:
        print(f"best {key} = {best['metrics'][key]:.4f} (step {best['step']}, epoch {best['epoch']:.2f}); "
              f"results: {record['config']['output_dir'] or 'runs/' + record['name']}/results.json")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from glue_lora.config import parse_override
    from glue_lora.data import describe_splits, load_glue
    from glue_lora.tasks import get_task

    options = dict(parse_override(item) for item in args.overrides)
    unknown = set(options) - {"data_dir"}
    if unknown:
        raise UsageError(f"glue-lora data takes only data_dir=..., not {', '.join(sorted(unknown))}")
    task = get_task(args.task)
    data_dir = options.get("data_dir")
    splits, source = load_glue(task, None if data_dir is None else str(data_dir))
    rows = describe_splits(task, splits, source)
    if args.format == "json":
        print(json.dumps({"task": task.name, "source": source, "splits": rows}, indent=2))
        return 0
    print(f"{task.name}: {source}")
    for row in rows:
        labels = ", ".join(f"{k} {v}" for k, v in row["labels"].items())
        print(f"  {row['split']:<22} {row['rows']:>7} rows   {labels}   ({row['source']})")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "train": (cmd_train, "train and evaluate one GLUE task from a YAML config"),
    "data": (cmd_data, "check a GLUE data source: rows and label distribution per split"),
}
# Tools in their own modules; each defines HELP, add_arguments(parser) and main(args) -> exit status.
TOOL_MODULES = {"configs": "glue_lora.config_table", "sweep": "glue_lora.sweep", "report": "glue_lora.report",
                "bench": "glue_lora.bench"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glue-lora", description="LoRA and full fine-tuning on GLUE")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help=COMMANDS["train"][1])
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. lora.r=16 seed=1")
    data = sub.add_parser("data", help=COMMANDS["data"][1])
    data.add_argument("task")
    data.add_argument("overrides", nargs="*", help="data_dir=PATH (default: the Hub)")
    data.add_argument("--format", choices=("text", "json"), default="text")
    for name, module_name in TOOL_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # tool not present in this build
        tool = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(tool)
        tool.set_defaults(tool_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        handler = getattr(args, "tool_main", None) or COMMANDS[args.command][0]
        return handler(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `glue-lora configs | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- keeps Python's exit-time flush from failing again
        return 0


if __name__ == "__main__":
    sys.exit(main())
