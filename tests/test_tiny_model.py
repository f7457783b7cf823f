import hashlib

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from masa_trl.tiny_model import build_tiny_model


def _digests(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_directory_loads_with_auto_classes(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen3"
    assert model.config.head_dim >= 32
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id


def test_tokenizer_round_trips_math_and_meta_text(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = '<meta>Vieta {x}</meta>\n```json\n{"math_notion": ["parity"], "pass_rate": 3}\n```\n$\\boxed{\\frac{1}{2}}$'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # The corpus teaches BPE the frequent pieces, so the text costs far fewer tokens than bytes.
    assert len(ids) < 0.6 * len(text.encode())


def test_chat_template_is_qwen_style(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_model_generates(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = tokenizer(["What is 1 + 1?"], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5


def test_same_seed_same_files(tiny_model_dir, tmp_path):
    assert _digests(build_tiny_model(tmp_path / "again")) == _digests(tiny_model_dir)


def test_other_seed_other_weights(tiny_model_dir, tmp_path):
    digests = _digests(build_tiny_model(tmp_path / "other", seed=1))
    assert digests["model.safetensors"] != _digests(tiny_model_dir)["model.safetensors"]


def test_small_head_dim_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_model(tmp_path, head_dim=16)
