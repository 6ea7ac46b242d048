"""The `featx` command: each command parses its options, calls the featx library, prints.

    featx scan elpv
    featx extract elpv -b efficientnet_lite0 --views 2 --aug mild --out stores
    featx train-head stores/elpv_efficientnet_lite0_224px_mildx2.h5 --kind linear --out heads
    featx predict new_cells/ --head heads/elpv_efficientnet_lite0_224px_mildx2.linear.safetensors
    featx compare elpv -b efficientnet_lite0 -b efficientnet_lite1 --kind linear --kind logreg

The modules: options (every option, declared once), core (errors and exit codes, --config,
help layout), and the commands by group: data_cmds, extract_cmds, head_cmds, finetune_cmd,
report_cmds, deploy_cmds, explore_cmds. Nothing heavy is imported until a command runs, so `featx --help` stays quick.
"""

from __future__ import annotations

import typer

from featx.cli import (audit_cmds, data_cmds, deploy_cmds, explore_cmds, extract_cmds, finetune_cmd, head_cmds,
                       report_cmds)
from featx.cli.core import FeatxCommand, FeatxGroup

app = typer.Typer(name="featx", cls=FeatxGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run each frozen backbone once into an HDF5 feature store; train heads in seconds.")

COMMANDS = [
    ("scan", data_cmds.scan), ("backbones", data_cmds.backbones),
    ("extract", extract_cmds.extract), ("info", data_cmds.info), ("merge", extract_cmds.merge),
    ("train-head", head_cmds.train_head), ("lr-find", head_cmds.lr_find), ("predict", head_cmds.predict),
    ("finetune", finetune_cmd.finetune),
    ("report", report_cmds.report), ("compare", report_cmds.compare),
    ("audit", audit_cmds.audit), ("search", audit_cmds.search), ("export", audit_cmds.export),
    ("export-model", deploy_cmds.export_model), ("serve", deploy_cmds.serve),
    ("map", explore_cmds.map_), ("select", explore_cmds.select), ("label-curve", explore_cmds.label_curve),
]
for name, function in COMMANDS:
    app.command(name, cls=FeatxCommand)(function)


def main() -> None:
    """The `featx` console script (and `python -m featx`, `python -m featx.cli`)."""
    app()
