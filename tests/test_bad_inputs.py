"""The standing adversarial suite: every bad input featx knows of, through the real command.

The tables live in tests/bad_inputs_<area>.py (one per area of featx); the harness and its
rules in tests/bad_input_harness.py. A new command or option adds its bad inputs to a table.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from tests.bad_input_harness import World, check_clean_failure, run_case
from tests.conftest import make_class_tree

TABLES = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                if m.name.startswith("bad_inputs_"))
CASES = [case for name in TABLES for case in importlib.import_module(f"tests.{name}").CASES]


def test_case_ids_are_unique_and_there_are_enough():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(CASES) >= 60, f"the issue asks for at least 60 distinct bad inputs, {len(CASES)} here"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """A tiny dataset, its complete store (tiny_cnn, random init) and a linear head on it."""
    from featx.data import DatasetOptions, open_dataset
    from featx.extraction import ExtractConfig, extract
    from featx.probes.sweep import HeadConfig
    from featx.probes.train import train_head

    root = tmp_path_factory.mktemp("world")
    data = make_class_tree(root / "data", per_class=8)
    ds = open_dataset(data, DatasetOptions(val_frac=0.25, test_frac=0.25))
    store = extract(ds, "tiny_cnn", root / "stores", ExtractConfig(weights="none", workers=0, views=1),
                    show_progress=False).store
    head = train_head(store, "linear", HeadConfig(epochs=2), out=root / "heads" / "lin", show_progress=False)
    return World(data=data, store=Path(store), head=head.path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case, world, tmp_path):
    outcome, out = run_case(case, world, tmp_path)
    check_clean_failure(case, outcome, out)
