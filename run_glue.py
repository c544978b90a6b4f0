#!/usr/bin/env python
"""Train one GLUE task with LoRA or full fine-tuning.

    python run_glue.py CONFIG.yaml [dotted.key=value ...]
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml run_glue.py CONFIG.yaml ...

Equivalent to `glue-lora train CONFIG.yaml ...`.
"""

import sys

from glue_lora.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
