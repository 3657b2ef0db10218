"""Every recipe in configs/ parses: class paths resolve and every option has the type its class declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqpipe.cli import main

RECIPES = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_parses(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code in (None, 0)
    parsed = yaml.safe_load(capsys.readouterr().out)
    written = yaml.safe_load(recipe.read_text())
    assert parsed["model"]["head"]["class_path"] == written["model"]["head"]["class_path"]
    assert parsed["data"]["class_path"] == written["data"]["class_path"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_runs_with_the_mamba2_block(recipe, capsys):
    """``--model.backbone.block=seqpipe.mamba2.Mamba2Block`` swaps the block in any recipe; the recipe's other
    block options carry over where Mamba2Block has them, and the block builds at the recipe's width."""
    from seqpipe.mamba2 import Mamba2Block

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--model.backbone.block=seqpipe.mamba2.Mamba2Block", "--print_config"])
    assert exit_info.value.code in (None, 0)
    backbone = yaml.safe_load(capsys.readouterr().out)["model"]["backbone"]
    backbone = backbone.get("init_args", backbone)
    assert backbone["block"]["class_path"] == "seqpipe.mamba2.Mamba2Block"
    halved = "RCEquivariant" in str(yaml.safe_load(recipe.read_text())["model"]["backbone"])  # one half per strand
    Mamba2Block(backbone["d_model"] // (2 if halved else 1), **backbone["block"]["init_args"])
