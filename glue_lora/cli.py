"""`glue-lora` command line: train (also `run_glue.py`), data, and the tools built on them.

Starts fast: torch/transformers load only inside the command that needs them, and a tool module is imported
only when its own subcommand runs (`glue-lora --help` reads each tool's HELP line without importing it).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Callable

from glue_lora import __version__, console
from glue_lora.errors import UsageError

log = logging.getLogger("glue_lora")


def cmd_train(args: argparse.Namespace) -> int:
    from glue_lora.config import load_config, resolve_init_from
    from glue_lora.shipped import resolve_config_path

    config = load_config(resolve_config_path(args.config), args.overrides)
    if args.print_config:
        return print_config(config)
    from glue_lora.train import run

    console.quiet_libraries()
    # init_from: a config names its MNLI run; fail now, with the command that produces it, if it is missing
    record = run(resolve_init_from(config))
    best, key = record.get("best") or {}, record["primary_metric"]
    if best:
        print(f"best {key} = {best['metrics'][key]:.4f} (step {best['step']}, epoch {best['epoch']:.2f}); "
              f"results: {record['config']['output_dir'] or 'runs/' + record['name']}/results.json")
    return 0


def print_config(config) -> int:
    """The resolved config as YAML, after the Trainer options are validated too; no data or model loads."""
    import yaml

    from glue_lora.config import plan_batch
    from glue_lora.train import training_arguments

    training_arguments(config, plan_batch(config, int(os.environ.get("WORLD_SIZE", "1"))))
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
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
                "bench": "glue_lora.bench", "predict": "glue_lora.predict",
                "submit": "glue_lora.submit", "export": "glue_lora.export"}


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The full parser for `command` (a subcommand name; "*": every tool's, None: only their help lines)."""
    parser = argparse.ArgumentParser(prog="glue-lora", description="LoRA and full fine-tuning on GLUE")
    parser.add_argument("--version", action="version", version=f"glue-lora {__version__}")
    console.add_verbosity_arguments(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_arguments(sub.add_parser("train", help=COMMANDS["train"][1], description=COMMANDS["train"][1]))
    add_data_arguments(sub.add_parser("data", help=COMMANDS["data"][1], description=COMMANDS["data"][1]))
    for name, module_name in TOOL_MODULES.items():
        if command in ("*", name):
            module = _import_tool(module_name)
            if module is None:
                continue  # tool not present in this build
            tool = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(tool)
            tool.set_defaults(tool_main=module.main)
        elif (help_line := tool_help(module_name)) is not None:
            sub.add_parser(name, help=help_line)
    for subparser in sub.choices.values():
        console.add_verbosity_arguments(subparser)
    return parser


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("config", help="YAML config file, or a shipped config's name such as roberta-base/lora/rte "
                                      "(list them with `glue-lora configs`)")
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. lora.r=16 seed=1")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved, validated config and exit (loads no data and no model)")


def add_data_arguments(data: argparse.ArgumentParser) -> None:
    data.add_argument("task", help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli ax")
    data.add_argument("overrides", nargs="*", metavar="data_dir=PATH",
                      help="where the data is: a classic GLUE TSV root or Hub-layout parquet (default: the Hub)")
    data.add_argument("--format", choices=("text", "json"), default="text",
                      help="text for people (default), json for scripts")


def _import_tool(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        return None


def tool_help(module_name: str) -> str | None:
    """A tool's HELP string read from its source, so listing the commands imports none of them."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return None
    try:
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    except (OSError, SyntaxError):
        tree = None
    for node in tree.body if tree else ():
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELP" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    module = _import_tool(module_name)  # HELP built at import time: fall back to importing
    return module.HELP if module else None


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, also taking key=value overrides after an option (`train CONFIG --print-config seed=1`)."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and \
            all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors become one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_arguments(build_parser(_chosen_command(argv)), argv)
    console.configure(console.verbosity_from(args))
    try:
        handler = getattr(args, "tool_main", None) or COMMANDS[args.command][0]
        return handler(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM raised as Interrupted (glue_lora.lifecycle)
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"interrupted by {signal.Signals(signum).name}; what was measured is kept (resume=true continues)",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `glue-lora configs | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- keeps Python's exit-time flush from failing again
        return 0


if __name__ == "__main__":
    sys.exit(main())
