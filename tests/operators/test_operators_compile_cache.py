"""The op layer's fingerprint is part of torch.compile's cache keys: other operator code, other keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import tdbn  # noqa: F401 (installs the tag)
from tdbn.operators import compile_cache


def test_importing_tdbn_tags_the_compile_cache_keys_with_the_op_layers_sources():
    tag = compile_cache.fingerprint()
    assert tag.startswith("tdbn-ops-") and len(tag) == len("tdbn-ops-") + 16
    assert tag in torch.compiler.config.cache_key_tag.split(",")


def test_other_operator_code_gives_another_tag(tmp_path: Path):
    copy = tmp_path / "operators"
    shutil.copytree(compile_cache.SOURCES, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert compile_cache.fingerprint(copy) == compile_cache.fingerprint()
    kernel = copy / "cpu_kernels.c"
    kernel.write_text(kernel.read_text() + "\n/* another version */\n")
    assert compile_cache.fingerprint(copy) != compile_cache.fingerprint()


def test_a_users_own_tag_is_kept_and_an_earlier_tdbn_tag_replaced():
    before = torch.compiler.config.cache_key_tag
    try:
        torch.compiler.config.cache_key_tag = "mine,tdbn-ops-0000000000000000"
        assert compile_cache.install("tdbn-ops-1111111111111111") == "mine,tdbn-ops-1111111111111111"
    finally:
        torch.compiler.config.cache_key_tag = before
