"""Readers for labelled sequence files: FASTA (labels in headers, or one file per class) and TSV/CSV.

Every reader yields :class:`Record` tuples and raises :class:`~seqpipe.errors.DataError`, naming the
file, record and line, on anything it cannot read: it never skips a bad record. Gzipped files are
recognised by their content, whatever their name.
"""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import pandas as pd

from seqpipe.errors import ConfigError, DataError, first_few

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".ffn", ".fas", ".fsa")
#: a final suffix that names the compression, not the format (``promoter.fa.gz``)
COMPRESSED_SUFFIXES = (".gz", ".bgz")
TABLE_SEPARATORS = {".tsv": "\t", ".csv": ","}
SEPARATOR_NAMES = {"\t": "TAB", ",": "comma", ";": "semicolon"}
#: the column a table's record ids are read from when no id column is named
DEFAULT_ID_COLUMN = "id"
_GZIP_MAGIC = b"\x1f\x8b"
#: a header cell this long made only of nucleotide letters (IUPAC, either case) is a sequence: the file has no header
_SEQUENCE_CELL = re.compile(r"[ACGTUNRYSWKMBDHV]{12,}", re.IGNORECASE)


class Record(NamedTuple):
    """One sequence. ``label`` is None when the reader was asked for no labels; ``path`` and ``line``
    (1-based) say where the record starts, and ``name`` what the record is called, for error messages."""

    id: str
    sequence: str
    label: str | None
    path: Path
    line: int
    #: the record's 1-based number in its file, set when its id is its label (a FASTA header ``>LABEL ...``) or
    #: another record's (:func:`number_shared_ids`): an id that many records share names none of them
    number: int | None = None

    @property
    def name(self) -> str | int:
        """How messages name the record (:class:`~seqpipe.errors.DataError`'s ``record``): its id, or its number."""
        return self.id if self.number is None else self.number

    def line_of(self, position: int) -> int:
        """The line of the file holding 0-based ``position`` of the sequence: a table row's own line, or for
        a FASTA record the sequence line it falls on (found by reading the record again: for error messages)."""
        if _suffix(self.path) in (*TABLE_SEPARATORS, ".bed"):  # a table row or a BED row: its own line
            return self.line
        with open_text(self.path) as lines:
            seen = 0
            for number, text in enumerate(lines, start=1):
                if number <= self.line:
                    continue
                seen += len(text.strip())
                if seen > position:
                    return number
        return self.line


def read_records(
    path: str | Path,
    *,
    labelled: bool = True,
    label_pattern: str = r"^(\S+)",
    sequence_column: str = "sequence",
    label_column: str = "label",
    id_column: str | None = None,
    option_name: Callable[[str], str] = "data.{}".format,
) -> Iterator[Record]:
    """Read any of the three shapes: a directory (one FASTA per class), a .tsv/.csv[.gz] table, or else
    a FASTA file whose headers carry the label (found by ``label_pattern``).

    With ``labelled=False`` labels are not required (and not read from FASTA headers or tables).
    ``option_name``: see :func:`read_table`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir():
        return read_fasta_per_class(path)
    if _suffix(path) in TABLE_SEPARATORS:
        return read_table(
            path, sequence_column=sequence_column, label_column=label_column if labelled else None, id_column=id_column,
            option_name=option_name,
        )
    return read_labelled_fasta(path, label_pattern if labelled else None)


def labels_in_headers(path: str | Path) -> bool:
    """Whether :func:`read_records` takes the labels of ``path`` from FASTA headers: a file that is not a table."""
    path = Path(path)
    return path.is_file() and _suffix(path) not in TABLE_SEPARATORS


def read_fasta(path: str | Path) -> Iterator[tuple[str, str, int]]:
    """Yield ``(header, sequence, header_line)`` for each record of a plain or gzipped FASTA file.

    The header is the text after ``>``; the sequence is its lines joined, surrounding whitespace removed.
    """
    path = Path(path)
    with open_text(path) as lines:
        header, header_line, chunks, number = None, 0, [], 0
        try:
            for number, text in enumerate(lines, start=1):
                text = text.strip()
                if text.startswith(">"):
                    if header is not None:
                        yield _finish_fasta_record(path, header, header_line, chunks)
                    header, header_line, chunks = text[1:].strip(), number, []
                    if not header:
                        raise DataError(path, "a '>' header without a record name", line=number)
                elif header is not None:
                    chunks.append(text)
                elif text:
                    raise DataError(path, f"not a FASTA file: expected a '>' header, found {text[:40]!r}", line=number)
        except (UnicodeDecodeError, OSError, EOFError, zlib.error) as error:
            raise DataError(path, f"cannot be read as text (plain or gzip): {error}") from None
        if header is None:
            raise DataError(path, "the file is empty" if number == 0 else "no FASTA records (only blank lines)")
        yield _finish_fasta_record(path, header, header_line, chunks)


def read_labelled_fasta(path: str | Path, label_pattern: str | None = r"^(\S+)") -> Iterator[Record]:
    """One FASTA file; the record id is the header's first word, the label is what ``label_pattern``
    finds in the whole header (its group 1 if it has a group, else the whole match). ``None``: no labels.

    Ids follow :func:`read_fasta_with_ids` (whole headers where first words repeat), so that predictions name each
    record. A record whose id is its label (the default pattern's ``>LABEL`` alone) is named by its number in
    messages."""
    pattern = _compile(label_pattern) if label_pattern is not None else None
    for number, (record_id, header, sequence, line) in enumerate(read_fasta_with_ids(path), start=1):
        label = None
        if pattern is not None:
            match = pattern.search(header)
            label = (match.group(1) if pattern.groups else match.group(0)) if match else None
            if not label:
                raise DataError(
                    path, f"header {header!r} gives no label with label_pattern {pattern.pattern!r}", record=record_id, line=line
                )
        yield Record(record_id, sequence, label, Path(path), line, number if label == record_id else None)


def read_fasta_with_ids(path: str | Path) -> list[tuple[str, str, str, int]]:
    """``(id, header, sequence, header_line)`` of each record of one FASTA file (:func:`read_fasta`). The id is the
    header's first word, or, in a file whose first words repeat but whole headers do not (``>pos r240``,
    ``>pos r241``), every record's whole header, words joined by one space."""
    entries = list(read_fasta(path))
    first_words = [header.split()[0] for header, _, _ in entries]
    whole_headers = [" ".join(header.split()) for header, _, _ in entries]
    use_whole = len(set(first_words)) < len(first_words) and len(set(whole_headers)) == len(whole_headers)
    return [(record_id, *entry) for record_id, entry in zip(whole_headers if use_whole else first_words, entries)]


def number_shared_ids(records: list[Record]) -> list[Record]:
    """``records``, those whose id another record of their file shares given their number in the file, by which
    messages then name them (as they name a record whose id is its label, however the file was read)."""
    shared = {key for key, count in Counter((record.path, record.id) for record in records).items() if count > 1}
    seen: Counter[Path] = Counter()
    numbered = []
    for record in records:
        seen[record.path] += 1
        numbered.append(record._replace(number=seen[record.path]) if (record.path, record.id) in shared else record)
    return numbered


def fasta_files_in(directory: Path, read_as: str) -> list[Path]:
    """The FASTA files of ``directory`` by name (:func:`is_fasta_name`), sorted; none is an error listing what is
    there. Other entries (but hidden files and FASTA indexes) are named in one warning: they are not read
    (``read_as``: how they would have been, e.g. "as classes")."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and is_fasta_name(p))
    kinds = f"{', '.join(FASTA_SUFFIXES)}, optionally .gz or .bgz"
    if not files:
        found = sorted(p.name for p in directory.iterdir())[:10]
        raise DataError(directory, f"no FASTA files ({kinds}) in this folder; found {found}")
    read = set(files)
    others = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir() if p not in read
                    and not p.name.startswith(".") and p.suffix.lower() not in (".fai", ".gzi"))
    if others:
        warnings.warn(f"{directory}: {len(others)} entries that are not FASTA files ({kinds}; folders are not "
                      f"searched) are not read{' ' + read_as if read_as else ''}: {first_few(others, 5)}", stacklevel=3)
    return files


def read_fasta_per_class(directory: str | Path) -> Iterator[Record]:
    """A directory of FASTA files (:data:`FASTA_SUFFIXES`, optionally .gz), one per class: the label is the file
    name without those suffixes, the record ids those of :func:`read_fasta_with_ids` within each file. Files with
    other names are not classes: FASTA indexes (.fai, .gzi) are passed over, any other file is named in one
    warning."""
    directory = Path(directory)
    files = fasta_files_in(directory, "as classes")
    owners: dict[str, Path] = {}
    by_folded_label: dict[str, Path] = {}  # class names differing only in case are one class
    for file in files:
        label = _stem(file)
        other = by_folded_label.setdefault(label.casefold(), file)
        if other is not file:
            raise DataError(directory, f"class {label!r} has two files: {other.name} and {file.name} (class names "
                                       "differing only in case are one class)")
        owners[label] = file
    for label, file in owners.items():
        for record_id, _, sequence, line in read_fasta_with_ids(file):
            yield Record(record_id, sequence, label, file, line)


def read_table(
    path: str | Path,
    *,
    sequence_column: str = "sequence",
    label_column: str | None = "label",
    id_column: str | None = None,
    option_name: Callable[[str], str] = "data.{}".format,
) -> Iterator[Record]:
    """A .tsv or .csv file (plain or gzipped) with a header row. ``label_column=None``: no labels.

    Record ids come from ``id_column`` (default: the column ``id`` when the table has one with no empty cell), or
    else are the row numbers (1-based, header not counted). A cell holding a line break (a stray quote opening a cell runs on to
    the next quote, swallowing the rows between) is an error naming its line.
    Lines are counted with the header as line 1; blank lines are allowed and counted. A missing column's error
    names the option that chooses it, ``option_name("sequence_column")`` (``"label_column"``, ``"id_column"``), as
    the caller's user sets it (``data.sequence_column`` in a recipe, ``--sequence_column`` for the DNA tools).
    """
    path = Path(path)
    kind = _suffix(path)
    try:
        table = pd.read_csv(
            path, sep=TABLE_SEPARATORS[kind], dtype=str, keep_default_na=False, na_filter=False,
            skip_blank_lines=False, compression="gzip" if compression(path) != "none" else None,
        )
    except pd.errors.EmptyDataError:
        raise DataError(path, "the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, zlib.error) as error:
        raise DataError(path, f"cannot be read as {kind[1:].upper()}: {error}") from None
    check_fields_match_header(path, table, "TAB-separated" if kind == ".tsv" else "comma-separated",
                              ": a header cell is missing, a row ends with a separator, or a cell holds one")
    check_header_separator(path, table, TABLE_SEPARATORS[kind], " (by its name, .tsv: TAB, .csv: comma): convert it, "
                                                               "or name it for its separator")
    if id_column is None and DEFAULT_ID_COLUMN in table.columns:
        blank = np.flatnonzero(table[DEFAULT_ID_COLUMN].str.strip().eq("").to_numpy())
        if blank.size:  # not asked for: a column of ids with holes names no record, rows are numbered instead
            warnings.warn(f"{path}: column {DEFAULT_ID_COLUMN!r} has empty cells (the first at line {blank[0] + 2}), so "
                          f"records are named by row number; set {option_name('id_column')} {DEFAULT_ID_COLUMN} to "
                          "require ids", stacklevel=2)
        else:
            id_column = DEFAULT_ID_COLUMN
    _check_one_line_per_row(path, table)
    columns = {"sequence_column": sequence_column, "label_column": label_column, "id_column": id_column}
    wanted = [name for name in columns.values() if name is not None]
    missing = [name for name in wanted if name not in table.columns]
    if missing and any(_SEQUENCE_CELL.fullmatch(str(name)) for name in table.columns):
        separator = "<TAB>" if kind == ".tsv" else ","
        raise DataError(
            path, f"a record, not a header: the first line of a table names its columns; add one such as "
            f"'{sequence_column}{separator}{label_column or 'label'}'", line=1,
        )
    if missing:
        options = [option_name(option) for option, name in columns.items() if name in missing]
        raise DataError(path, f"no column {' or '.join(map(repr, missing))}; the columns are {list(table.columns)} "
                              f"(set {', '.join(options)})")
    table = table.fillna("").apply(lambda column: column.str.strip())
    blank = (table == "").all(axis=1)
    table = table[wanted]
    if blank.all():
        raise DataError(path, "no rows after the header")
    for row, values in enumerate(table.itertuples(index=False)):
        if blank.iat[row]:
            continue  # a blank line, not a record
        cells = dict(zip(wanted, values))
        line, record_id = row + 2, cells[id_column] if id_column else str(row + 1)
        for name, value in cells.items():
            if not value:
                raise DataError(path, f"empty {name!r} cell", record=record_id or None, line=line)
        yield Record(record_id, cells[sequence_column], cells[label_column] if label_column else None, path, line)


def other_separator(columns, separator: str) -> str | None:
    """The separator (';', TAB or ',') other than ``separator`` that a header read as one column holds, or None:
    the file is separated by that one."""
    if len(columns) != 1:
        return None
    return next((s for s in (";", "\t", ",") if s != separator and s in str(columns[0])), None)


def check_header_separator(path: Path, table: pd.DataFrame, separator: str, advice: str) -> None:
    """Refuse a header read as one column that holds another separator than ``separator`` (:func:`other_separator`).
    ``advice`` ends the message."""
    other = other_separator(table.columns, separator)
    if other is not None:
        raise DataError(path, f"the header is one column, {table.columns[0]!r}: the file seems separated by {other!r}, "
                              f"and seqpipe reads it as {SEPARATOR_NAMES[separator]}-separated{advice}", line=1)


def check_fields_match_header(path: Path, table: pd.DataFrame, fields: str, advice: str) -> None:
    """Refuse a table whose rows have more ``fields`` (e.g. "comma-separated") than its header: pandas would silently
    take the extra leading fields as an index and shift every column. ``advice`` ends the message."""
    if not isinstance(table.index, pd.RangeIndex):
        raise DataError(path, f"the rows have {table.index.nlevels + len(table.columns)} {fields} fields and the "
                              f"header {len(table.columns)}; seqpipe reads {fields} values{advice}", line=2)


def _check_one_line_per_row(path: Path, table: pd.DataFrame) -> None:
    """Refuse a cell that spans lines: quoting let a ``"`` opening it run on to the next ``"``, rows and all."""
    spans = table.apply(lambda column: column.str.contains("[\r\n]", regex=True)).to_numpy()
    if spans.any():
        row, column = (int(i[0]) for i in np.nonzero(spans))
        raise DataError(path, f"column {table.columns[column]!r} holds a cell that runs over several lines (a quoted "
                        "cell with a line break, or a stray \" opening a cell, which is read as a quote up to the next "
                        "\" and swallows the rows in between): a table holds one record per line; remove the line "
                        "break or the \"", line=row + 2)


def _finish_fasta_record(path: Path, header: str, line: int, chunks: list[str]) -> tuple[str, str, int]:
    sequence = "".join(chunks)
    if not sequence:
        raise DataError(path, "a header without sequence", record=header.split()[0], line=line)
    return header, sequence, line


def open_text(path: Path) -> IO[str]:
    """The file as text (UTF-8, a byte-order mark as Windows editors write it dropped), gunzipped when its content
    is gzip, whatever its name."""
    return gzip.open(path, "rt", encoding="utf-8-sig") if compression(path) != "none" else open(path, encoding="utf-8-sig")


def compression(path: Path) -> str:
    """"bgzip", "gzip" or "none", from the file's first bytes (BGZF: gzip with a ``BC`` extra subfield)."""
    with open(path, "rb") as handle:
        head = handle.read(18)
    if head[:2] != _GZIP_MAGIC:
        return "none"
    has_extra = len(head) >= 4 and head[3] & 4
    return "bgzip" if has_extra and head[12:14] == b"BC" else "gzip"


def is_fasta_name(path: Path) -> bool:
    """Whether the name of ``path`` is a FASTA file's (one of FASTA_SUFFIXES, optionally ``.gz``/``.bgz``)."""
    return _suffix(path) in FASTA_SUFFIXES


def is_bed(path: str | Path) -> bool:
    """Whether ``path`` names a BED file (``.bed``, optionally ``.gz``/``.bgz``)."""
    return _suffix(Path(path)) == ".bed"


def _suffix(path: Path) -> str:
    """The format suffix, lower case, ignoring a final .gz or .bgz: ``a.TSV.gz`` -> ``.tsv``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _stem(path: Path) -> str:
    """``promoter.fa.gz`` (or ``.bgz``) -> ``promoter``."""
    name = path.name
    for compressed in COMPRESSED_SUFFIXES:
        if name.lower().endswith(compressed):
            name = name[: -len(compressed)]
    return name[: -len(_suffix(path))]


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"label_pattern {pattern!r} is not a valid regular expression: {error}") from None
