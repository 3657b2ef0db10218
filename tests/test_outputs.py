"""seqpipe.outputs.Output: written under .partial and renamed; a user's file or folder at the path is never
replaced, an earlier output of the same kind is."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from seqpipe.contracts import ChannelInput, DataInfo
from seqpipe.errors import ConfigError
from seqpipe.heads import TaskHead
from seqpipe.outputs import Output, writing
from seqpipe.prediction import PredictionWriter
from seqpipe.tasks.classification import SequenceClassification


def write_file(output: Output, text: str) -> None:
    output.claim()
    output.partial.write_text(text)
    output.commit()


def test_a_file_output_replaces_its_own_earlier_output_only(tmp_path):
    target = tmp_path / "out" / "predictions.csv"
    write_file(Output(target, "predictions CSV"), "first")
    write_file(Output(target, "predictions CSV"), "second")
    assert target.read_text() == "second" and not target.with_name("predictions.csv.partial").exists()
    with pytest.raises(ConfigError, match=f"^{target} exists and is not a seqpipe forecast plot: refusing to replace it"):
        Output(target, "forecast plot").claim()
    target.write_text("the user's own edit")  # changed since seqpipe wrote it: no longer ours
    os.utime(target, ns=(1, 1))
    with pytest.raises(ConfigError, match=f"^{target} was written by seqpipe as a predictions CSV but changed since: "
                                          "refusing to replace it"):
        Output(target, "predictions CSV").claim()
    assert target.read_text() == "the user's own edit"


def test_a_users_folder_or_file_is_refused_before_any_work_and_survives(tmp_path):
    folder = tmp_path / "scores.zarr"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
    user_file = tmp_path / "notes.csv"
    user_file.write_text("keep")
    for output in (Output(folder, "genome predictions zarr", folder=True), Output(user_file, "predictions CSV")):
        with pytest.raises(ConfigError, match="refusing to replace it"):
            output.claim()
        output.discard()  # a failed run cleans up what it claimed: nothing here
    assert (folder / "mine.txt").read_text() == "keep" and user_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv", "scores.zarr"]


def test_an_empty_folder_is_taken_for_a_folder_output_not_for_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="refusing to replace it"):
        Output(tmp_path / "empty", "predictions CSV").claim()
    output = Output(tmp_path / "empty", "synthetic set", folder=True)
    output.claim()
    (output.partial / "data.txt").write_text("new")
    output.commit()
    assert (tmp_path / "empty" / "data.txt").read_text() == "new"


def test_a_folder_output_is_replaced_whole_and_a_failed_run_leaves_the_old_one(tmp_path):
    target = tmp_path / "track.zarr"
    for content in ("first", "second"):
        output = Output(target, "per-base track", folder=True)
        output.claim()
        (output.partial / content).write_text(content)
        output.commit()
    assert sorted(p.name for p in target.iterdir()) == [".seqpipe-output", "second"]
    failed = Output(target, "per-base track", folder=True)
    failed.claim()
    (failed.partial / "half").write_text("half-written")
    failed.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track.zarr"] and (target / "second").exists()


def test_a_zarr_output_is_marked_in_its_attributes_and_zarr_lists_it_without_a_stranger(tmp_path, recwarn):
    import numpy as np
    import zarr

    target = tmp_path / "scores.zarr"
    for values in ([1, 2], [3, 4]):  # the second run replaces its own earlier store
        output = Output(target, "genome predictions zarr", zarr=True)
        output.claim()
        group = zarr.open_group(str(output.partial), mode="a")  # as the writers open it
        group.attrs["label_names"] = ["other", "CDS"]
        group.create_array("chr1", data=np.array(values))
        output.commit()
    group = zarr.open_group(str(target), mode="r")
    assert [name for name, _ in group.members()] == ["chr1"] and group["chr1"][:].tolist() == [3, 4]
    attributes = dict(group.attrs)
    files, size = attributes.pop("seqpipe_output_contents")  # files and bytes, zarr.json left out
    assert attributes == {"label_names": ["other", "CDS"], "seqpipe_output": "genome predictions zarr"}
    assert files == 2 and size > 0
    assert sorted(p.name for p in target.iterdir()) == ["chr1", "zarr.json"]
    assert not [w for w in recwarn if "not recognized as a component" in str(w.message)]

    theirs = tmp_path / "theirs.zarr"  # a user's own zarr store is refused, whatever its kind of content
    zarr.open_group(str(theirs), mode="w").create_array("chr1", data=np.array([5]))
    with pytest.raises(ConfigError, match="exists and is not a seqpipe genome predictions zarr"):
        Output(theirs, "genome predictions zarr", zarr=True).claim()


def test_a_users_file_named_like_a_partial_is_never_removed_a_crashed_runs_partial_is(tmp_path):
    target = tmp_path / "scores.tsv"
    users = tmp_path / "scores.tsv.partial"
    users.write_text("the user's own file")
    with pytest.raises(ConfigError, match=f"^{users} exists and is not a seqpipe variant scores TSV: refusing"):
        Output(target, "variant scores TSV").claim()
    assert users.read_text() == "the user's own file"
    users.unlink()
    crashed = Output(target, "variant scores TSV")
    crashed.claim()
    crashed.partial.write_text("half-written")  # the run dies here: neither commit nor discard
    write_file(Output(target, "variant scores TSV"), "complete")
    assert target.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scores.tsv.seqpipe-output", "scores.tsv"]


@pytest.mark.parametrize("head", [TaskHead, SequenceClassification])
def test_default_prediction_ids_number_the_rows_across_batches(tmp_path, head):
    """A head's rows carry no id without the batch's ``ids`` (a user's data module): the writer numbers them."""
    writer = PredictionWriter(str(tmp_path / "p.csv"))
    trainer = SimpleNamespace(callbacks=[writer], world_size=1, global_rank=0, log_dir=None, default_root_dir=str(tmp_path))
    writer.setup(trainer, None, "predict")
    for batch_idx in range(3):
        rows = head().predictions(torch.full((4, 2), float(batch_idx)), {}, DataInfo(ChannelInput(1), ["a", "b"]))
        writer.write_on_batch_end(trainer, None, rows, None, {}, batch_idx, 0)
    writer.on_predict_end(trainer, None)
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["id"].tolist() == list(range(12))
    if head is TaskHead:
        assert list(frame.columns) == ["id", "output_a", "output_b"]
        assert frame["output_a"].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_a_file_added_to_a_folder_output_keeps_it_from_being_replaced(tmp_path):
    """A folder output is replaced only while it holds what seqpipe wrote: a file the user added (or changed) since
    stops the next run, and is left as it was."""
    target = tmp_path / "set"
    for _ in range(2):  # seqpipe's own folder, replaced
        with writing(Output(target, "synthetic set", folder=True)) as (partial,):
            (partial / "train").mkdir()
            (partial / "train" / "a.fa").write_text(">r\nACGT\n")
    (target / "train" / "mine.fa").write_text(">mine\nGG\n")
    with pytest.raises(ConfigError, match=rf"^{target} was written by seqpipe as a synthetic set but changed since "
                                          r"\(files added or changed in it\): refusing to replace it"):
        Output(target, "synthetic set", folder=True).claim()
    assert (target / "train" / "mine.fa").read_text() == ">mine\nGG\n"


def test_a_partial_that_a_running_seqpipe_writes_is_not_taken_and_a_dead_ones_is(tmp_path):
    """Two runs writing one path: the second stops while the first (a live process) writes its partial; the partial
    of a run that died is cleared."""
    import subprocess
    import sys

    target = tmp_path / "p.csv"
    first = Output(target, "predictions CSV")
    first.claim()
    first.partial.write_text("id\nA_1\n")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = target.with_name(".p.csv.partial.seqpipe-output")
        marker.write_text(json.dumps({"kind": "predictions CSV", "pid": sleeper.pid}))  # as another process left it
        with pytest.raises(ConfigError, match=rf"^{target} is being written by another seqpipe run \(process {sleeper.pid}\)"):
            Output(target, "predictions CSV").claim()
        assert first.partial.read_text() == "id\nA_1\n"
    finally:
        sleeper.kill()
        sleeper.wait()
    Output(target, "predictions CSV").claim()  # its process is gone: a crashed run's partial, cleared
    assert not first.partial.exists()


def test_a_full_disk_or_a_denied_folder_is_one_line_naming_the_file(capsys):
    """OS errors of the user's environment (a full disk, no permission) end a tool in one line naming the file and
    exit 2; another OSError is a bug and keeps its traceback."""
    import argparse
    import errno

    from seqpipe.tool_io import run_tool

    def full(options):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.tsv.partial")

    def missing(options):
        raise OSError(errno.EIO, "Input/output error", "/data/x")

    parser = argparse.ArgumentParser(prog="seqpipe tool")
    assert run_tool(full, parser, []) == 2
    assert capsys.readouterr().err == "seqpipe: error: /data/out.tsv.partial: No space left on device\n"
    with pytest.raises(OSError, match="Input/output error"):
        run_tool(missing, parser, [])
