"""Whole models on gems against ATen: examples/llama.py, examples/bert.py and, when the transformers
package is installed, a randomly initialised LlamaForCausalLM.

Each run compares logits, loss and every parameter's gradient, then 20 AdamW steps' losses, and
checks through the coverage report that every installed family whose ops the model calls served them.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import flag_gems
from flag_gems.demo import compare_forward_backward, compare_training

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import bert  # noqa: E402
import llama  # noqa: E402

DEVICE = flag_gems.device
TRAIN_STEPS = 20


def assert_families_served(report) -> None:
    """Each family the report names served at least one call of the ops attributed to it, and every
    op an installed family serves that the model called ran on gems."""
    families = {f["name"] for f in flag_gems.families() if f["error"] is None}
    with flag_gems.use_gems():
        served = flag_gems.registered_ops()
    for name in families:
        rows = [r for r in report if r.family == name and r.reason != "excluded"]
        if rows:  # the model calls some op of this family
            assert any(r.gems for r in rows), f"{name} served none of {[r.op for r in rows]}\n{report}"
    for row in report:
        if row.op in served:
            assert row.family == served[row.op], row
            assert row.gems, f"{row.op} is served by {row.family} but every call went to ATen\n{report}"


def _checked(model, run, train=True):
    check = compare_forward_backward(model, run)
    assert check.ok, check.summary() + "\n" + str(check.coverage)
    assert_families_served(check.coverage)
    if train:
        training = compare_training(model, run, steps=TRAIN_STEPS)
        assert training.ok, training.summary()
        assert training.aten_losses[-1] < training.aten_losses[0]  # it learned: the curve means something
    return check


def tiny_llama() -> llama.LlamaConfig:
    return replace(llama.default_config(), vocab=64, hidden=32, layers=1, heads=4, kv_heads=2, ffn=64, seq=8, batch=2)


def tiny_bert() -> bert.BertConfig:
    return replace(bert.default_config(), vocab=64, hidden=32, layers=1, heads=4, ffn=64, max_positions=16,
                   seq=8, batch=2)


def test_llama_matches_aten():
    model, run = llama.build(tiny_llama(), torch.float32)
    check = _checked(model, run)
    assert {"linear", "scaled_dot_product_attention"} <= set(check.coverage.ops)


def test_llama_bfloat16_forward_backward(quick):
    if quick:
        pytest.skip("float32 covers the model in quick mode")
    model, run = llama.build(tiny_llama(), torch.bfloat16)
    _checked(model, run, train=False)


def test_bert_matches_aten():
    model, run = bert.build(tiny_bert(), torch.float32)
    check = _checked(model, run)
    assert {"linear", "layer_norm", "scaled_dot_product_attention"} <= set(check.coverage.ops)


def test_examples_run_as_scripts(capsys):
    assert llama.main(["--layers", "1", "--train-steps", "0", "--timed-steps", "0"]) == 0
    assert bert.main(["--layers", "1", "--train-steps", "0", "--timed-steps", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK") == 2 and out.count("flag_gems coverage:") == 2


def test_transformers_llama_for_causal_lm_matches_aten():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(DEVICE)
    tokens = torch.randint(0, 64, (2, 8), device=DEVICE)

    def run(m):
        out = m(input_ids=tokens, labels=tokens)
        return out.logits, out.loss

    check = _checked(model, run)
    assert "scaled_dot_product_attention" in check.coverage.ops
