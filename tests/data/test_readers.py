import gzip
from pathlib import Path

import pytest

from seqpipe.data.readers import read_records
from seqpipe.data.synthetic import write_fasta
from seqpipe.errors import ConfigError, DataError

RECORDS = [("r1", "ACGTACGT", "cat"), ("r2", "GGGCCC", "dog"), ("r3", "ttaann", "cat"), ("r4", "ACGTTT", "dog")]


def gzipped(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def write_table(path: Path, separator: str) -> Path:
    rows = ["name{0}seq{0}class".format(separator)] + [separator.join(record) for record in RECORDS]
    path.write_text("\n".join(rows) + "\n")
    return path


def write_shapes(root: Path) -> dict[str, tuple[Path, dict]]:
    """The same records in every input shape: (path, reader options)."""
    for label in ("cat", "dog"):
        write_fasta(root / "per_class" / f"{label}.fa", [(i, s) for i, s, l in RECORDS if l == label])
    header = write_fasta(root / "headers.fasta", [(f"{i} species=x class={l}", s) for i, s, l in RECORDS])
    columns = {"sequence_column": "seq", "label_column": "class", "id_column": "name"}
    tsv, csv = write_table(root / "table.tsv", "\t"), write_table(root / "table.csv", ",")
    return {
        "directory": (root / "per_class", {}),
        "header": (header, {"label_pattern": r"class=(\w+)"}),
        "header.gz": (gzipped(header), {"label_pattern": r"class=(\w+)"}),
        "tsv": (tsv, columns),
        "csv": (csv, columns),
        "tsv.gz": (gzipped(tsv), columns),
    }


def test_every_shape_reads_to_the_same_records(tmp_path):
    for shape, (path, options) in write_shapes(tmp_path).items():
        records = sorted((r.id, r.sequence, r.label) for r in read_records(path, **options))
        assert records == RECORDS, shape


def test_gzip_is_recognised_by_content(tmp_path):
    fasta = write_fasta(tmp_path / "a.fa", [("x", "ACGT")])
    disguised = tmp_path / "b.fa"
    disguised.write_bytes(gzip.compress(fasta.read_bytes()))
    assert [r.sequence for r in read_records(disguised)] == ["ACGT"]


def test_default_label_is_the_first_word_of_the_header(tmp_path):
    path = write_fasta(tmp_path / "promoters.fasta", [("Sigma70 some description", "ACGT"), ("Sigma00", "GG")])
    assert [(r.id, r.label, r.line) for r in read_records(path)] == [("Sigma70", "Sigma70", 1), ("Sigma00", "Sigma00", 3)]


def test_a_record_whose_id_is_its_label_is_named_by_its_number(tmp_path):
    path = write_fasta(tmp_path / "a.fasta", [("pos", "ACGT"), ("neg s2", "GG"), ("s3 neg", "TT")])
    assert [r.name for r in read_records(path)] == [1, 2, 3]
    assert [r.name for r in read_records(path, label_pattern="(pos|neg)")] == [1, 2, "s3"]
    assert [r.name for r in read_records(path, labelled=False)] == ["pos", "neg", "s3"]


def test_records_sharing_a_first_word_are_named_by_their_whole_header(tmp_path):
    """``>pos r240`` / ``>neg r241``: the first words repeat (they are labels), so the ids (what predict writes) are
    the whole headers; labels still come from the first word. Where whole headers repeat too, the first word stays."""
    path = write_fasta(tmp_path / "a.fasta", [("pos r240", "ACGT"), ("neg  r241 x", "GG"), ("pos r242", "TT")])
    assert [(r.id, r.label) for r in read_records(path)] == [("pos r240", "pos"), ("neg r241 x", "neg"), ("pos r242", "pos")]
    assert [r.id for r in read_records(path, labelled=False)] == ["pos r240", "neg r241 x", "pos r242"]
    twice = write_fasta(tmp_path / "b.fasta", [("pos r1", "ACGT"), ("pos r1", "GG")])
    assert [r.id for r in read_records(twice, labelled=False)] == ["pos", "pos"]
    # the same file in a class folder gets the same ids
    write_fasta(tmp_path / "classes" / "promoter.fa", [("pos r240", "ACGT"), ("neg  r241 x", "GG"), ("pos r242", "TT")])
    write_fasta(tmp_path / "classes" / "other.fa", [("o1", "ACGT")])
    assert [r.id for r in read_records(tmp_path / "classes")] == ["o1", "pos r240", "neg r241 x", "pos r242"]


def test_label_pattern_without_group_takes_the_whole_match(tmp_path):
    path = write_fasta(tmp_path / "a.fasta", [("seq1 promoter_x", "ACGT"), ("seq2 enhancer_y", "ACGT")])
    assert [r.label for r in read_records(path, label_pattern=r"(promoter|enhancer)_\w")] == ["promoter", "enhancer"]
    assert [r.label for r in read_records(path, label_pattern=r"[a-z]+_\w")] == ["promoter_x", "enhancer_y"]


def test_header_that_the_pattern_does_not_match_names_the_record(tmp_path):
    path = write_fasta(tmp_path / "a.fasta", [("s1 class=a", "ACGT"), ("s2 nolabel", "ACGT")])
    with pytest.raises(DataError, match=r"a\.fasta, record 's2', line 3: header 's2 nolabel'"):
        list(read_records(path, label_pattern=r"class=(\w+)"))


def test_invalid_label_pattern_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="label_pattern"):
        list(read_records(write_fasta(tmp_path / "a.fa", [("s", "A")]), label_pattern="(unclosed"))


def test_unlabelled_reading_needs_no_labels(tmp_path):
    fasta = write_fasta(tmp_path / "q.fa", [("q1 anything", "ACGT")])
    assert [(r.id, r.label) for r in read_records(fasta, labelled=False, label_pattern="never")] == [("q1", None)]
    table = tmp_path / "q.csv"
    table.write_text("sequence\nACGT\n\nGGCC\n")
    assert [(r.id, r.label, r.line) for r in read_records(table, labelled=False)] == [("1", None, 2), ("3", None, 4)]


def test_fasta_sequence_lines_are_joined_and_whitespace_stripped(tmp_path):
    path = tmp_path / "a.fa"
    path.write_text("\n>s1 desc\r\nACGT  \r\nGG\n\n>s2\nT\n")
    assert [(r.id, r.sequence) for r in read_records(path)] == [("s1", "ACGTGG"), ("s2", "T")]
    path.write_bytes(b"\xef\xbb\xbf>s1 a\r\nACGT\r\n")  # UTF-8 with a byte-order mark, as Windows Notepad saves it
    assert [(r.id, r.sequence) for r in read_records(path)] == [("s1", "ACGT")]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "no FASTA records"),
        (b"id,sequence\n1,ACGT\n", "not a FASTA file"),
        (b">s1\nACGT\n>s2\n>s3\nGG\n", "record 's2', line 3: a header without sequence"),
        (b">s1\nACGT\n>s2\n", "record 's2', line 3: a header without sequence"),
        (b">\nACGT\n", "line 1: a '>' header without a record name"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "cannot be read as text"),
    ],
)
def test_malformed_fasta(tmp_path, content, problem):
    path = tmp_path / "bad.fa"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad.fa") as error:
        list(read_records(path))
    assert problem in str(error.value)


def test_directory_problems(tmp_path):
    with pytest.raises(DataError, match="no FASTA files"):
        list(read_records(tmp_path))
    write_fasta(tmp_path / "a.fa", [("s", "ACGT")])
    (tmp_path / "a.fa.fai").write_text("index, not a class\n")
    (tmp_path / "b.fasta").write_text("")
    with pytest.raises(DataError, match=r"b\.fasta: the file is empty"):
        list(read_records(tmp_path))
    write_fasta(tmp_path / "b.fasta", [("t", "GG")])
    assert [r.label for r in read_records(tmp_path)] == ["a", "b"]
    write_fasta(tmp_path / "B.fna", [("t", "GG")])
    with pytest.raises(DataError, match=r"class 'b' has two files: B.fna and b.fasta \(class names differing only in case"):
        list(read_records(tmp_path))
    (tmp_path / "B.fna").unlink()
    write_fasta(tmp_path / "b.fna.gz", [("t", "GG")])
    with pytest.raises(DataError, match="class 'b' has two files"):
        list(read_records(tmp_path))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "the file is empty"),
        ("sequence\tlabel\n", "no rows"),
        ("seq\tclass\nACGT\ta\n", "no column 'sequence' or 'label'; the columns are ['seq', 'class'] "
                                  "(set data.sequence_column, data.label_column)"),
        ("sequence\tclass\nACGT\ta\n", "no column 'label'; the columns are ['sequence', 'class'] (set data.label_column)"),
        ("ACGTNacgtnACGT\ta\nGGCC\tb\n",
         "line 1: a record, not a header: the first line of a table names its columns; add one such as "
         "'sequence<TAB>label'"),
        ("sequence\tlabel\nACGT\ta\nGGCC\t\n", "record '2', line 3: empty 'label' cell"),
        ("sequence\tlabel\nACGT\ta\n\n\tb\n", "record '3', line 4: empty 'sequence' cell"),
        # two stray quotes would make one cell of lines 3-5 and lose the records between them
        ("note\tsequence\tlabel\nx\tACGT\ta\n\"5' end\tGGCC\tb\ny\tAAAA\ta\n\"3' end\tTTTT\tb\n",
         "line 3: column 'note' holds a cell that runs over several lines (a quoted cell with a line break, or a "
         "stray \" opening a cell, which is read as a quote up to the next \" and swallows the rows in between): a "
         "table holds one record per line; remove the line break or the \""),
        # a third field on every row: pandas would take the sequences as an index and read 'a' as the sequence
        ("sequence\tlabel\nACGT\ta\tx\nGGCC\tb\ty\n", "line 2: the rows have 3 TAB-separated fields and the header 2"),
    ],
)
def test_malformed_table(tmp_path, content, problem):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match="bad.tsv") as error:
        list(read_records(path))
    assert problem in str(error.value)


def test_a_table_reads_record_ids_from_its_id_column_unless_told_another(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sequence,id,name,label\nACGT,r1,alpha,a\nGGCC,r2,beta,b\n")
    assert [r.id for r in read_records(path)] == ["r1", "r2"]
    assert [r.id for r in read_records(path, id_column="name")] == ["alpha", "beta"]
    path.write_text("sequence,label\nACGT,a\nGGCC,b\n")
    assert [r.id for r in read_records(path)] == ["1", "2"]
    path.write_text("sequence,id,label\nACGT,r1,a\nGGCC,,b\n")  # an id column with holes: row numbers, said once
    with pytest.warns(UserWarning, match=r"t.csv: column 'id' has empty cells \(the first at line 3\), so records are "
                                         r"named by row number; set data.id_column id to require ids"):
        assert [r.id for r in read_records(path)] == ["1", "2"]
    with pytest.raises(DataError, match=r"record '', line 3: empty 'id' cell|line 3: empty 'id' cell"):
        list(read_records(path, id_column="id"))


def test_quoted_cells_on_one_line_are_read_without_their_quotes(tmp_path):
    path = tmp_path / "t.tsv"  # as R's write.table writes a table
    path.write_text('"id"\t"sequence"\t"label"\n"r1"\t"ACGT"\t"a"\n')
    assert [(r.id, r.sequence, r.label) for r in read_records(path)] == [("r1", "ACGT", "a")]


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="nowhere.fa: no such file"):
        read_records(tmp_path / "nowhere.fa")


def test_a_class_folder_reads_other_fasta_names_and_names_the_files_it_leaves_out(tmp_path):
    (tmp_path / "genes.ffn").write_text(">g1\nACGT\n")
    (tmp_path / "rrna.fas").write_text(">r1\nGGCC\n")
    (tmp_path / "trna.fa.bgz").write_bytes(gzip.compress(b">t1\nTTGA\n"))  # bgzip is gzip-compatible
    (tmp_path / "rrna.fas.fai").write_text("r1\t4\t4\t4\t5\n")
    (tmp_path / "notes.txt").write_text("not a class")
    (tmp_path / "old").mkdir()
    with pytest.warns(UserWarning, match=r"2 entries that are not FASTA files .* folders are not searched\) are not read "
                                         r"as classes: notes.txt, old/$"):
        records = list(read_records(tmp_path))
    assert sorted((r.label, r.id) for r in records) == [("genes", "g1"), ("rrna", "r1"), ("trna", "t1")]


@pytest.mark.parametrize("name,text,found", [("semi.csv", "id;sequence;label\nr1;ACGT;pos\n", "';'"),
                                             ("tabs.csv", "id\tsequence\tlabel\nr1\tACGT\tpos\n", "'\\\\t'"),
                                             ("commas.tsv", "id,sequence,label\nr1,ACGT,pos\n", "','")])
def test_a_table_separated_otherwise_than_its_name_says_is_named(tmp_path, name, text, found):
    (tmp_path / name).write_text(text)
    expected = "TAB" if name.endswith(".tsv") else "comma"
    with pytest.raises(DataError, match=rf"{name}, line 1: the header is one column, .*: the file seems separated by "
                                        rf"{found}, and seqpipe reads it as {expected}-separated"):
        list(read_records(tmp_path / name))
