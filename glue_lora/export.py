"""`glue-lora export RUN_DIR --merge OUT_DIR`: a LoRA run as a plain transformers model (adapter merged in).

The result loads with `AutoModelForSequenceClassification.from_pretrained(OUT_DIR)` alone (no PEFT, no base
model download) and `glue-lora predict OUT_DIR` takes it: the run's record and config travel with it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from glue_lora.errors import UsageError

HELP = "merge a LoRA run's adapter into its base model and save a plain transformers model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished LoRA run directory")
    parser.add_argument("--merge", required=True, metavar="OUT_DIR", help="where to write the merged model")


def main(args: argparse.Namespace) -> int:
    out = export_merged(Path(args.run_dir), Path(args.merge))
    print(f"merged model -> {out} (load with AutoModelForSequenceClassification.from_pretrained)")
    return 0


def export_merged(run_dir: Path, out: Path) -> Path:
    """Merge (`merge_and_unload`) in fp32 and save model, tokenizer, record and model card; never half a folder."""
    from transformers import AutoTokenizer

    from glue_lora.record import RESULTS_FILE
    from glue_lora.run_files import write_model_card
    from glue_lora.runs import RUN_CONFIG, check_run_dir, is_adapter_dir, load_trained_model

    record = check_run_dir(run_dir)
    if not is_adapter_dir(run_dir):
        raise UsageError(f"{run_dir} is a {record.get('method')} run: it already holds a plain transformers model "
                         "(nothing to merge); load it with AutoModelForSequenceClassification.from_pretrained")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; choose a new folder for the merged model")
    merged = load_trained_model(run_dir).merge_and_unload()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(run_dir).save_pretrained(str(tmp))
        exported = {**record, "exported_from": str(run_dir), "export": "merge_and_unload"}
        (tmp / RESULTS_FILE).write_text(json.dumps(exported, indent=2) + "\n")
        if (run_dir / RUN_CONFIG).is_file():
            shutil.copy2(run_dir / RUN_CONFIG, tmp / RUN_CONFIG)
        write_model_card(tmp, exported, str(out))
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
