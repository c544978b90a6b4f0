"""Published GLUE dev numbers to compare against, as data.

Source: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685 v2,
Table 2 (GLUE dev; median over 5 seeds of the best epoch; ± as printed). MNLI-mismatched is not in Table 2;
it comes from the top-level README.md of microsoft/LoRA (commit c4593f0), which splits MNLI into m / mm.
Metrics in percent: MNLI-m, SST-2, MRPC, QNLI, QQP, RTE accuracy; CoLA Matthews correlation; STS-B Pearson.
The FT rows are copied by the paper from earlier work (Liu et al. 2019; He et al. 2020), so they carry no ±.
FT, LoRA and BitFit rows are keyed by the glue_lora method that reproduces them; the adapter rows (Houlsby /
Pfeiffer / AdapterDrop: no method here, see docs/configs.md) by a paper-only key with a label in PAPER_ONLY.
The LoRA† row (roberta-large, Houlsby's setup) is not here.
"""

from __future__ import annotations

SOURCE = "Hu et al. 2021 (LoRA), arXiv 2106.09685 v2, Table 2"
SOURCE_MNLI_MM = "microsoft/LoRA README.md (MNLI m / mm split)"

TASK_ORDER = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")

# (model id, method) -> task -> value in percent. Paper: "FT" = full fine-tuning, "LoRA" = method lora.
TABLE2: dict[tuple[str, str], dict[str, float]] = {
    ("roberta-base", "full"): {"mnli": 87.6, "sst2": 94.8, "mrpc": 90.2, "cola": 63.6, "qnli": 92.8, "qqp": 91.9,
                               "rte": 78.7, "stsb": 91.2},
    ("roberta-base", "lora"): {"mnli": 87.5, "sst2": 95.1, "mrpc": 89.7, "cola": 63.4, "qnli": 93.3, "qqp": 90.8,
                               "rte": 86.6, "stsb": 91.5},
    ("roberta-large", "full"): {"mnli": 90.2, "sst2": 96.4, "mrpc": 90.9, "cola": 68.0, "qnli": 94.7, "qqp": 92.2,
                                "rte": 86.6, "stsb": 92.4},
    ("roberta-large", "lora"): {"mnli": 90.6, "sst2": 96.2, "mrpc": 90.9, "cola": 68.2, "qnli": 94.9, "qqp": 91.6,
                                "rte": 87.4, "stsb": 92.6},
    ("microsoft/deberta-v2-xxlarge", "full"): {"mnli": 91.8, "sst2": 97.2, "mrpc": 92.0, "cola": 72.0, "qnli": 96.0,
                                               "qqp": 92.7, "rte": 93.9, "stsb": 92.9},
    ("microsoft/deberta-v2-xxlarge", "lora"): {"mnli": 91.9, "sst2": 96.9, "mrpc": 92.6, "cola": 72.4, "qnli": 96.0,
                                               "qqp": 92.9, "rte": 94.9, "stsb": 93.0},
    # copied by the paper from prior work (*): BitFit (Ben Zaken et al. 2021), AdapterDrop (Rücklé et al. 2020)
    ("roberta-base", "bitfit"): {"mnli": 84.7, "sst2": 93.7, "mrpc": 92.7, "cola": 62.0, "qnli": 91.8, "qqp": 84.0,
                                 "rte": 81.5, "stsb": 90.8},
    ("roberta-base", "adpt-d-0.3m"): {"mnli": 87.1, "sst2": 94.2, "mrpc": 88.5, "cola": 60.8, "qnli": 93.1,
                                      "qqp": 90.2, "rte": 71.5, "stsb": 89.7},
    ("roberta-base", "adpt-d-0.9m"): {"mnli": 87.3, "sst2": 94.7, "mrpc": 88.4, "cola": 62.6, "qnli": 93.0,
                                      "qqp": 90.6, "rte": 75.9, "stsb": 90.3},
    # run by the authors in Houlsby's setup (†: seq 128, fixed batch, no MNLI-init)
    ("roberta-large", "adpt-p-3.0m"): {"mnli": 90.2, "sst2": 96.1, "mrpc": 90.2, "cola": 68.3, "qnli": 94.8,
                                       "qqp": 91.9, "rte": 83.8, "stsb": 92.1},
    ("roberta-large", "adpt-p-0.8m"): {"mnli": 90.5, "sst2": 96.6, "mrpc": 89.7, "cola": 67.8, "qnli": 94.8,
                                       "qqp": 91.7, "rte": 80.1, "stsb": 91.9},
    ("roberta-large", "adpt-h-6.0m"): {"mnli": 89.9, "sst2": 96.2, "mrpc": 88.7, "cola": 66.5, "qnli": 94.7,
                                       "qqp": 92.1, "rte": 83.4, "stsb": 91.0},
    ("roberta-large", "adpt-h-0.8m"): {"mnli": 90.3, "sst2": 96.3, "mrpc": 87.7, "cola": 66.3, "qnli": 94.7,
                                       "qqp": 91.5, "rte": 72.9, "stsb": 91.5},
}

# Table 2 rows no glue_lora method reproduces: key -> the paper's row label.
PAPER_ONLY = {"adpt-d-0.3m": "Adpt^D (0.3M)*", "adpt-d-0.9m": "Adpt^D (0.9M)*", "adpt-p-3.0m": "Adpt^P (3.0M)†",
              "adpt-p-0.8m": "Adpt^P (0.8M)†", "adpt-h-6.0m": "Adpt^H (6.0M)†", "adpt-h-0.8m": "Adpt^H (0.8M)†"}

# Table 2's printed average (over the 8 tasks), for checking TABLE2 against the paper.
TABLE2_AVERAGE: dict[tuple[str, str], float] = {
    ("roberta-base", "full"): 86.4, ("roberta-base", "lora"): 87.2,
    ("roberta-large", "full"): 88.9, ("roberta-large", "lora"): 89.0,
    ("microsoft/deberta-v2-xxlarge", "full"): 91.1, ("microsoft/deberta-v2-xxlarge", "lora"): 91.3,
    ("roberta-base", "bitfit"): 85.2, ("roberta-base", "adpt-d-0.3m"): 84.4, ("roberta-base", "adpt-d-0.9m"): 85.4,
    ("roberta-large", "adpt-p-3.0m"): 88.4, ("roberta-large", "adpt-p-0.8m"): 87.9,
    ("roberta-large", "adpt-h-6.0m"): 87.8, ("roberta-large", "adpt-h-0.8m"): 86.4,
}

# MNLI-mismatched accuracy where the README gives it (no roberta-large column there).
MNLI_MM: dict[tuple[str, str], float] = {
    ("roberta-base", "lora"): 86.9,
    ("microsoft/deberta-v2-xxlarge", "full"): 91.9,
    ("microsoft/deberta-v2-xxlarge", "lora"): 91.9,
}

# "# Trainable Parameters" column; it excludes the classification head, which is trained (issue #16).
TRAINABLE: dict[tuple[str, str], str] = {
    ("roberta-base", "full"): "125.0M", ("roberta-base", "lora"): "0.3M",
    ("roberta-large", "full"): "355.0M", ("roberta-large", "lora"): "0.8M",
    ("microsoft/deberta-v2-xxlarge", "full"): "1500.0M", ("microsoft/deberta-v2-xxlarge", "lora"): "4.7M",
    ("roberta-base", "bitfit"): "0.1M", ("roberta-base", "adpt-d-0.3m"): "0.3M", ("roberta-base", "adpt-d-0.9m"): "0.9M",
    ("roberta-large", "adpt-p-3.0m"): "3.0M", ("roberta-large", "adpt-p-0.8m"): "0.8M",
    ("roberta-large", "adpt-h-6.0m"): "6.0M", ("roberta-large", "adpt-h-0.8m"): "0.8M",
}

# Other spellings of the same checkpoints on the Hub.
ALIASES = {"FacebookAI/roberta-base": "roberta-base", "FacebookAI/roberta-large": "roberta-large"}


def paper_model(model: str) -> str | None:
    """The paper's model id for a run's `model`, or None when the paper has no such model."""
    model = ALIASES.get(model, model)
    return model if any(model == m for m, _ in TABLE2) else None


def paper_value(model: str, method: str, task: str) -> float | None:
    """Table 2's number (percent) for a model id, method (or PAPER_ONLY key) and task; `mnli-mm` reads MNLI_MM."""
    key = (paper_model(model) or "", method)
    if task == "mnli-mm":
        return MNLI_MM.get(key)
    return TABLE2.get(key, {}).get(task)
