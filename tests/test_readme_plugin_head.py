"""The README's plug-in head example, taken from README.md itself, runs end to end (fit, test, predict) from the
directory that holds ``myheads.py``, as a user's console would."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from seqpipe.cli import main
from seqpipe.data.synthetic import make_dna_motif_dataset

README = Path(__file__).parents[1] / "README.md"


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced ``language`` block that starts with ``first_line``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)
    matching = [block for block in blocks if block.startswith(first_line)]
    assert len(matching) == 1, f"README.md has {len(matching)} {language} blocks starting {first_line!r}"
    return matching[0]


def readme_commands(program: str) -> list[list[str]]:
    """The ``seqpipe`` command lines of the README's plug-in head section, split into words."""
    block = readme_block("bash", "# with myheads.py and maxpool.yaml")
    return [line.split() for line in block.replace("\\\n", " ").splitlines() if line.startswith(program)]


def test_readme_plugin_head_example_fits_tests_and_predicts(tmp_path, monkeypatch, capsys):
    data = make_dna_motif_dataset(tmp_path / "data", seed=2, n_train=60, n_test=15, n_unlabelled=4, length=30)
    work = tmp_path / "work"
    work.mkdir()
    (work / "myheads.py").write_text(readme_block("python", "# myheads.py"))
    (work / "maxpool.yaml").write_text(readme_block("yaml", "model:\n  head:\n    class_path: myheads."))
    # the README's recipe, made tiny: the test replaces only its model size and length of training
    recipe = {"trainer": {"max_epochs": 1, "limit_train_batches": 2, "enable_progress_bar": False},
              "model": {"backbone": {"d_model": 8, "n_layers": 1, "block": {"class_path": "seqpipe.mamba.MambaBlock",
                                                                            "init_args": {"d_state": 4}}}}}
    (work / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts the working directory on it, as `python -m` does
    assert str(work) not in sys.path
    paths = {"PATH": data / "train", "TEST": data / "test", "NEW": data / "unlabelled.fasta", "RUN": work / "run",
             "configs/dna_classify.yaml": Path(__file__).parents[1] / "configs/dna_classify.yaml"}

    commands = readme_commands("seqpipe")
    assert [words[1] for words in commands] == ["fit", "test", "predict"]
    for words in commands:
        args = [str(paths.get(word, word)) for word in words[1:]]
        main([*args, "--config", "tiny.yaml"])

    # the DNA tools load the checkpoint's head from the working directory too
    sys.path.remove(str(work))
    monkeypatch.delitem(sys.modules, "myheads")
    checkpoint = next((work / "run").glob("lightning_logs/version_*/checkpoints/best.ckpt"))
    embed = ["embed", "--ckpt_path", str(checkpoint), "--data.predict", str(paths["NEW"]), "--out", "embeddings.zarr",
             "--trust_module", "myheads"]
    monkeypatch.chdir(tmp_path)  # elsewhere, the head's module is named
    with pytest.raises(SystemExit) as done:
        main(embed)
    assert done.value.code == 2 and capsys.readouterr().err.splitlines() == [
        f"seqpipe: error: {checkpoint}: its model uses myheads.MaxPoolClassifier, and its module 'myheads' cannot be "
        "imported here: run from the folder that holds myheads, or add that folder to PYTHONPATH"]
    sys.path[:] = [path for path in sys.path if path != str(tmp_path)]
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as done:
        main(embed)
    assert done.value.code == 0 and (work / "embeddings.zarr").is_dir()

    predictions = pd.read_csv(next((work / "run").glob("lightning_logs/version_*/predictions.csv")))
    labels = ["background", "enhancer_like", "promoter_like"]
    assert list(predictions.columns) == ["id", *(f"output_{name}" for name in labels)]
    assert len(predictions) == 4 and predictions["id"].str.startswith("query_").all()
    assert predictions.filter(like="output_").notna().all().all()
