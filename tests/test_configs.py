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
