"""Base model resolution, merge and quantization on a tiny scratch model."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ft_assets.models.merge import merge_adapter
from ft_assets.models.quantize import dir_size_bytes, quantize_bnb_nf4
from ft_assets.tasks.text_to_sql import TASK

PROBES = TASK.probes


def _probe_ids(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "How many employees work in Oslo?"}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def _random_adapter(base_dir, out_dir):
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(0)
    # init_lora_weights=False gives a non-zero delta, so merging has something to prove.
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(out_dir)
    return peft_model


def test_scratch_model_reloads_with_chat_template(scratch_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    model = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    ids = _probe_ids(scratch_model_dir)
    assert model(ids).logits.shape[-1] == len(tokenizer)


def test_merged_logits_match_base_plus_adapter(scratch_model_dir, tmp_path):
    peft_model = _random_adapter(scratch_model_dir, tmp_path / "adapter")
    merge_adapter(scratch_model_dir, tmp_path / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    ids = _probe_ids(scratch_model_dir)
    with torch.no_grad():
        expected, got, before = peft_model(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    assert not torch.allclose(before, got, atol=1e-3), "the adapter changed nothing: the test proves nothing"
    assert (tmp_path / "merged" / "model.safetensors").exists()
    assert (tmp_path / "merged" / "tokenizer_config.json").exists()


def test_nf4_quantized_model_reloads_4bit_and_stays_close(scratch_model_dir, tmp_path):
    info = quantize_bnb_nf4(scratch_model_dir, tmp_path / "nf4")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "nf4", device_map="cpu")
    import bitsandbytes as bnb

    linear_4bit = [m for m in reloaded.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear_4bit, "no 4-bit layers after reload"
    assert info["method"] == "bnb-nf4"
    full = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    ids = _probe_ids(scratch_model_dir)
    with torch.no_grad():
        a, b = full(ids).logits.flatten(), reloaded(ids).logits.flatten().float()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9
    assert dir_size_bytes(tmp_path / "nf4") > 0


def test_logit_agreement_separates_a_good_merge_from_a_missing_adapter(scratch_model_dir, tmp_path):
    from ft_assets.models.consistency import logit_agreement

    peft_model = _random_adapter(scratch_model_dir, tmp_path / "adapter")
    merge_adapter(scratch_model_dir, tmp_path / "adapter", tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    base = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    good = logit_agreement(peft_model, merged, tokenizer, PROBES)
    bad = logit_agreement(peft_model, base, tokenizer, PROBES)
    assert good["max_abs_logit_diff"] < 1e-3 and good["top1_agreement"] == 1.0
    assert bad["max_abs_logit_diff"] > 0.01
    assert good["probe_tokens"] == bad["probe_tokens"] > 50


def test_serving_check_reports_runaways_and_template_mismatch(scratch_model_dir):
    from ft_assets.models.consistency import serving_check

    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    model = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    same = serving_check(model, tokenizer, tokenizer.chat_template, PROBES, max_new_tokens=8)
    assert same["chat_template_matches_training"] is True
    assert same["probes"] == 7 and 0.0 <= same["runaway_rate"] <= 1.0
    assert same["stopped_on_eos"] + round(same["runaway_rate"] * same["probes"]) == same["probes"]
    other = serving_check(model, tokenizer, "{{ messages }}", PROBES, max_new_tokens=8)
    assert other["chat_template_matches_training"] is False


def test_serving_check_sees_eos_when_the_model_emits_it(scratch_model_dir):
    from ft_assets.models.consistency import serving_check

    tokenizer = AutoTokenizer.from_pretrained(scratch_model_dir)
    model = AutoModelForCausalLM.from_pretrained(scratch_model_dir)
    def force_eos(module, inputs, logits):  # make EOS the only token the model will ever pick
        forced = torch.full_like(logits, -1e4)
        forced[..., tokenizer.eos_token_id] = 0.0
        return forced

    model.lm_head.register_forward_hook(force_eos)
    check = serving_check(model, tokenizer, tokenizer.chat_template, PROBES, max_new_tokens=4)
    assert check["runaway_rate"] == 0.0 and check["stopped_on_eos"] == check["probes"]
