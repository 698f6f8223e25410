"""Shared fixtures: one micro world and its micro base/vanilla models, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ASRU_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures that train micro models: a test using any of them (directly or through another fixture) is in the
# `micro` tier, so `make test-fast` (-m "not micro and not e2e") never waits for training.
TRAINED_FIXTURES = frozenset({"micro_models", "micro_refusing_base", "micro_rebuild"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.micro)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    from asru.pipeline import world_stage

    out, _ = world_stage(tmp_path_factory.mktemp("micro") / "world", "micro", seed=0)
    return out


@pytest.fixture(scope="session")
def micro_models(micro_world, tmp_path_factory):
    """(base_dir, vanilla_dir) trained for a few steps with the micro preset: real artifacts, little learning."""
    from asru.pipeline import base_stage, vanilla_stage

    root = tmp_path_factory.mktemp("models")
    base, _ = base_stage(micro_world, root / "base", "micro")
    vanilla, _ = vanilla_stage(base, micro_world, root / "vanilla", "micro")
    return base, vanilla


@pytest.fixture(scope="session")
def micro_refusing_base(micro_world, micro_models, tmp_path_factory):
    """The micro base after 30 steps of refusal fine-tuning (the IDK method on the forget split): a real model that
    really refuses (about 9 of the 24 probe prompts with the micro world's seed), so ASRU's refusal side and the
    refusal metrics are measured on genuine generations, not on a stubbed detector. The plain micro base refuses
    none of them (150 steps of pretraining are too few), which tests use for the "no refusal side" error."""
    from asru.pipeline import unlearn_stage

    out, _ = unlearn_stage("idk", micro_models[0], micro_world, tmp_path_factory.mktemp("refusing") / "run",
                           "forget_10", preset="micro", overrides={"steps": 30, "lr": 3e-3, "batch_size": 8, "alpha": 0.0})
    return out / "model"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models are dominated by per-op overhead: one thread is faster, and immune to a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def processor():
    """A tiny word-level processor for hand-made log-probability cases (likelihood, membership inference)."""
    from asru.models.tiny import build_processor, build_tokenizer

    texts = ["Where was Ana born? Ana was born in Lima. Oslo Cairo Quito Perth A B C D He She",
             "Just give ONE letter representing the answer directly. Answer the question"]
    return build_processor(build_tokenizer(texts, vocab_size=300))
