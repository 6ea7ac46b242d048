"""Regenerate featx/backbones/specs.json from the installed torchvision and efficientnet-lite.

    .venv/bin/python tools/backbone_specs.py            # rewrite the table
    .venv/bin/python tools/backbone_specs.py --check    # exit 1 if the table is out of date

Each model is built on the meta device (no weights allocated) to count its parameters and read
its feature dim, so `featx backbones` can list them without building anything. Run it after
upgrading torchvision; tests/test_backbones.py fails when the table and the library disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

import torchvision
from torchvision.models import list_models

from featx.backbones import efficientnet_lite, torchvision_zoo
from featx.backbones.spec import SPEC_FILE

OUT = Path(torchvision_zoo.__file__).parent / SPEC_FILE


def build_table() -> dict:
    return {
        "generated_by": "tools/backbone_specs.py",
        "versions": {"torchvision": torchvision.__version__,
                     "efficientnet-lite-pytorch": metadata.version("efficientnet-lite-pytorch")},
        "torchvision": {name: torchvision_zoo.describe_model(name)
                        for name in sorted(list_models(module=torchvision.models))},
        "packaged": {name: efficientnet_lite.describe_model(name) for name in efficientnet_lite.VARIANTS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = json.dumps(build_table(), indent=1, sort_keys=True) + "\n"
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT}: {'up to date' if same else 'out of date: run tools/backbone_specs.py'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
