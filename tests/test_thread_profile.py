"""The thread profile runs the harness's Trainer at each thread count and splits a step's time by op group."""

import json

from glue_lora.thread_profile import group_of, main


def test_op_groups():
    assert group_of("aten::addmm") == group_of("aten::mm") == "matmul"
    assert group_of("aten::bernoulli_") == "dropout" and group_of("aten::zeros") == "other ops"


def test_profile_at_two_thread_counts(tiny_roberta, glue_dir, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"task: sst2\nmodel: {tiny_roberta}\ndata_dir: {glue_dir}\nmax_train_samples: 64\n"
                      "max_eval_samples: 16\nglobal_batch_size: 8\nmax_seq_length: 64\n")
    out = tmp_path / "profile.json"
    assert main([str(config), "--steps", "2", "--warmup", "1", "--threads", "1", "2", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [r["threads"] for r in results] == [1, 2]
    for r in results:
        assert r["self_seconds_per_step"]["matmul"] > 0 and r["cpu_seconds_per_step"] > 0
    assert "| matmul |" in capsys.readouterr().out
