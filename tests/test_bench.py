"""Throughput defaults keep results: the length-grouped sampler, dynamic padding, the FLOP model, `bench`.

Nothing here times anything; the numbers come from `glue-lora bench` (docs/benchmarks.md).
"""

import json
from collections import Counter

import pytest
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from glue_lora.bench import BatchRecorder, MatmulWeights, flops_of_lengths, harness_trainer, matmul_weights
from glue_lora.cli import main
from glue_lora.config import load_config
from glue_lora.modeling import load_model
from glue_lora.tasks import get_task

SMALL = ["max_train_samples=64", "max_eval_samples=16", "global_batch_size=8", "max_seq_length=64"]


def small_config(model, glue_dir, tmp_path, *extra):
    return load_config(None, ["task=sst2", f"model={model}", f"data_dir={glue_dir}", f"output_dir={tmp_path / 'run'}",
                              *SMALL, "training.eval_strategy='no'", "training.save_strategy='no'", *extra])


def examples_seen(recorder: BatchRecorder) -> list[list[tuple[int, ...]]]:
    """Per training batch, each example as its unpadded token ids."""
    batches = []
    for ids, (_, _, lengths) in zip(recorder.ids, recorder.batches):
        batches.append([tuple(row[:n].tolist()) for row, n in zip(ids, lengths.tolist())])
    return batches


def train_and_record(model, glue_dir, tmp_path, *extra) -> tuple[list[list[tuple[int, ...]]], Counter, int]:
    """Two epochs through the harness's Trainer; returns the batches seen, the dataset's rows, padded tokens."""
    built = harness_trainer(small_config(model, glue_dir, tmp_path, "training.num_train_epochs=2", *extra))
    recorder = BatchRecorder(built.trainer.model, keep_ids=True)
    built.trainer.train()
    recorder.close()
    rows = Counter(tuple(ids) for ids in built.encoded["train"]["input_ids"])
    return examples_seen(recorder), rows, recorder.stats().padded_tokens


def test_length_grouped_sampler_covers_each_example_once_per_epoch_and_is_seeded(tiny_roberta, glue_dir, tmp_path):
    built = harness_trainer(small_config(tiny_roberta, glue_dir, tmp_path))
    assert isinstance(built.trainer._get_train_sampler(), LengthGroupedSampler)  # our default is really in use

    batches, rows, grouped_padding = train_and_record(tiny_roberta, glue_dir, tmp_path / "a")
    per_epoch = len(batches) // 2
    epochs = [[x for batch in batches[e * per_epoch:(e + 1) * per_epoch] for x in batch] for e in range(2)]
    for epoch in epochs:
        assert Counter(epoch) == rows  # every example exactly once (duplicate sentences counted as such)
    assert epochs[0] != epochs[1]  # a fresh random order each epoch

    again, _, _ = train_and_record(tiny_roberta, glue_dir, tmp_path / "b")
    other_seed, _, _ = train_and_record(tiny_roberta, glue_dir, tmp_path / "c", "seed=1")
    assert again == batches
    assert other_seed != batches

    # grouping is what removes padding: the same seed with random batches pads more
    _, _, random_padding = train_and_record(tiny_roberta, glue_dir, tmp_path / "d",
                                            "training.train_sampling_strategy=random")
    assert grouped_padding < random_padding


@pytest.mark.parametrize("fixture", ["tiny_roberta", "tiny_deberta"])
def test_dynamic_padding_gives_the_same_logits_as_max_length_padding(fixture, glue_dir, tmp_path, request):
    model_path = request.getfixturevalue(fixture)
    built, batches = {}, {}
    for pad in (False, True):  # MRPC: sentence pairs (segment ids padded too), all shorter than 128 tokens
        built[pad] = harness_trainer(load_config(None, [
            "task=mrpc", f"model={model_path}", f"data_dir={glue_dir}", f"output_dir={tmp_path / str(pad)}",
            "max_train_samples=8", "max_eval_samples=8", "max_seq_length=128",
            f"pad_to_max_length={str(pad).lower()}"]))
        rows = built[pad].encoded["validation"]
        inputs = [{k: v for k, v in row.items() if k not in ("labels", "length")} for row in rows]
        batches[pad] = built[pad].trainer.data_collator(inputs)  # the collator build_trainer gives every run
    assert batches[True]["input_ids"].shape[1] == 128 > batches[False]["input_ids"].shape[1]
    model = built[False].model.eval()  # one model (same weights) for both batches
    with torch.no_grad():
        dynamic, padded = (model(**batches[pad]).logits for pad in (False, True))
    torch.testing.assert_close(dynamic, padded, atol=1e-5, rtol=1e-4)


def test_flop_counter_matches_hand_count(tiny_roberta):
    # tiny RoBERTa: hidden 32, 2 layers, FFN 64, 2 labels; LoRA r=8 on query and value
    lora, _ = load_model(load_config(None, ["task=rte", f"model={tiny_roberta}"]), get_task("rte"))
    full, _ = load_model(load_config(None, ["task=rte", f"model={tiny_roberta}", "method=full"]), get_task("rte"))
    encoder = 2 * (4 * 32 * 32 + 2 * 32 * 64)  # Q, K, V, O + FFN in, out per layer = 16,384
    adapter = 2 * 2 * (8 * 32 + 32 * 8)  # 2 layers x (query, value) x (A + B) = 2,048
    head = 32 * 32 + 32 * 2  # classifier.dense + out_proj, one token per sequence = 1,088
    assert matmul_weights(lora) == MatmulWeights(encoder, adapter, 0, head, 2, 32)
    assert matmul_weights(full) == MatmulWeights(0, encoder, 0, head, 2, 32)
    # two sequences of 3 and 5 real tokens: T = 8, B = 2, sum l^2 = 34
    attention = 12 * 2 * 32 * 34  # 26,112
    assert flops_of_lengths(matmul_weights(lora), [3, 5]) == 4 * 16384 * 8 + 6 * 2048 * 8 + 6 * 1088 * 2 + attention
    assert flops_of_lengths(matmul_weights(lora), [3, 5]) == 661_760
    assert flops_of_lengths(matmul_weights(full), [3, 5]) == 6 * 16384 * 8 + 6 * 1088 * 2 + attention == 825_600


def test_bench_smoke_prints_table_and_json(tiny_roberta, glue_dir, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"task: sst2\nmodel: {tiny_roberta}\ndata_dir: {glue_dir}\nmax_train_samples: 64\n"
                      "max_eval_samples: 16\nglobal_batch_size: 8\nmax_seq_length: 64\n")
    out_json = tmp_path / "bench.json"
    status = main(["bench", str(config), "seed=1", "--steps", "2", "--warmup", "1", "--repeats", "1",
                   "--gemm-size", "64", "--gemm-repeats", "1", "--json", str(out_json)])
    assert status == 0
    printed = capsys.readouterr().out
    for label in ("(a) ours", "(b) run_glue: pad to 128", "(c) dynamic padding", "(a) with method=full",
                  "real tok/s", "% fp32 peak", "peak RSS LoRA", "CPU-s/step", "CPU-s per step (b)/(a)"):
        assert label in printed
    report = json.loads(out_json.read_text())
    assert [row["setting"] for row in report["settings"]] == ["ours", "run_glue", "dynamic", "full"]
    for row in report["settings"]:
        assert row["train_samples_per_s"] > 0 and row["eval"]["samples_per_s"] > 0
        assert sum(w["samples"] for w in row["windows"]) == 2 * 8  # exactly the timed steps' examples
        assert row["real_tokens_per_s"] <= row["padded_tokens_per_s"]
        assert row["cpu_seconds_per_step"] > 0 and row["eval"]["cpu_seconds"] > 0
        assert all(w["cpu_seconds"] > 0 for w in row["windows"])
    by = {row["setting"]: row for row in report["settings"]}
    assert by["run_glue"]["padding_fraction"] > by["ours"]["padding_fraction"]
    assert isinstance(by["ours"]["merged_eval"]["metrics_identical"], bool) and by["full"]["merged_eval"] is None
    assert {"real_tokens_vs_run_glue", "real_tokens_vs_dynamic", "peak_memory", "cpu_per_step_vs_run_glue"} <= set(report["summary"])


def test_bench_to_accuracy_reports_training_clocks_at_the_first_evaluation_reaching_the_target(
        tiny_roberta, glue_dir, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"task: sst2\nmodel: {tiny_roberta}\ndata_dir: {glue_dir}\nmax_train_samples: 64\n"
                      "max_eval_samples: 16\nglobal_batch_size: 8\nmax_seq_length: 64\n"
                      "training: {num_train_epochs: 1}\n")
    out_json = tmp_path / "tta.json"
    assert main(["bench", str(config), "--to-accuracy", "0.0", "--eval-steps", "3", "--json", str(out_json)]) == 0
    reached = json.loads(out_json.read_text())
    assert reached["reached"]["step"] == 3 and reached["steps_run"] == 3  # stops at the first evaluation
    assert 0 < reached["reached"]["train_cpu_seconds"] and reached["eval_cpu_seconds"] > 0
    assert "reached" in capsys.readouterr().out
    assert main(["bench", str(config), "--to-accuracy", "1.01", "--eval-steps", "3", "--json", str(out_json)]) == 1
    missed = json.loads(out_json.read_text())
    assert missed["reached"] is None and missed["steps_run"] == 8 and [p["step"] for p in missed["curve"]] == [3, 6, 8]
    assert "NOT reached" in capsys.readouterr().out


def test_bench_rejects_unknown_setting(tmp_path, capsys):
    assert main(["bench", "configs/demo.yaml", "--settings", "ours,fast"]) == 2
    assert "unknown fast" in capsys.readouterr().err


@pytest.mark.parametrize("shape, published", [("roberta-base", 124_645_632), ("roberta-large", 355_359_744)])
def test_random_init_shapes_have_the_real_parameter_counts(shape, published):
    from transformers import AutoTokenizer, RobertaModel

    from glue_lora.bench import random_roberta_config
    from glue_lora.modeling import resolve_model_path
    from tests.conftest import MINILM

    config = random_roberta_config(shape, AutoTokenizer.from_pretrained(resolve_model_path(MINILM)))
    with torch.device("meta"):  # shapes only, no memory
        model = RobertaModel(config)  # with the pooler, as the published counts are
    # one extra segment embedding row (type_vocab_size 2: the stand-in tokenizer emits segment ids for pairs)
    assert sum(p.numel() for p in model.parameters()) == published + config.hidden_size


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_the_cpu_default_where_the_cpu_has_native_bf16(monkeypatch, native):
    from glue_lora import train
    from glue_lora.config import plan_batch

    monkeypatch.setattr(train, "cpu_native_bf16", lambda: native)
    default = load_config(None, ["task=sst2", "model=unused"])
    args = train.training_arguments(default, plan_batch(default, 1))
    assert (args.bf16, train.precision(args)) == (native, "bf16" if native else "fp32")
    assert args.use_cpu == native  # transformers refuses bf16 on CPU without use_cpu
    for value in (True, False):  # the config's own setting wins either way
        config = load_config(None, ["task=sst2", "model=unused", f"training.bf16={str(value).lower()}"])
        assert train.training_arguments(config, plan_batch(config, 1)).bf16 == value
    run_glue = load_config(None, ["task=sst2", "model=unused", "compat=run_glue"])
    assert not train.training_arguments(run_glue, plan_batch(run_glue, 1)).bf16  # run_glue trains in fp32


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch):
    from glue_lora import hardware

    for flags, native in (("fpu avx512f avx512_bf16 amx_tile", True), ("fpu amx_bf16", True),
                          ("fpu avx2 avx512f avx512bw", False), ("", False)):
        monkeypatch.setattr(hardware, "_cpuinfo", lambda flags=flags: {"flags": flags, "model name": "x"})
        assert hardware.cpu_native_bf16() is native
