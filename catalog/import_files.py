"""Reading a product import's files: the CSV of products and the ZIP of their photos (no database, no writes).

File-level problems (not UTF-8, an unsafe ZIP, too many rows) raise ImportFileError and nothing is stored;
a problem of one row or one photo raises RowProblem, which the preview lists against that row.
"""

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePosixPath

from django.core.files.base import ContentFile, File

COLUMNS_REQUIRED = ("sku", "name", "price", "image")
COLUMNS_OPTIONAL = ("description", "category")
COLUMNS_TEXT = ", ".join((*COLUMNS_REQUIRED, *COLUMNS_OPTIONAL))
# Up to 8 digits, then "." or "," and at most 2 decimals: what Product.price (10 digits, 2 places) holds.
PRICE_PATTERN = re.compile(r"\d{1,8}(?:[.,]\d{1,2})?")
PRICE_FORMAT_TEXT = (
    "write it like 12.50 or 12,50: digits, at most 2 decimals, no currency sign or thousands separator"
)
# Written by the macOS archiver beside every file; never a photo.
ZIP_JUNK_PREFIXES = ("__MACOSX/",)
ZIP_ENCRYPTED_FLAG = 0x1


class ImportFileError(ValueError):
    """The CSV or the ZIP as a whole cannot be imported; the message says why in one line."""


class RowProblem(ValueError):
    """One row cannot be imported; the message is the reason shown against its row number."""


@dataclass(frozen=True)
class CsvRow:
    # The spreadsheet's row number: the header is row 1.
    row: int
    values: dict[str, str]
    # Set when the row has more or fewer cells than the header.
    problem: str = ""


def _header(cells: list[str]) -> list[str]:
    columns = [cell.strip().lower() for cell in cells]
    unknown = [column for column in columns if column not in (*COLUMNS_REQUIRED, *COLUMNS_OPTIONAL)]
    if unknown:
        raise ImportFileError(
            f"unknown column(s) {', '.join(repr(name) for name in unknown)}; the columns are {COLUMNS_TEXT}"
        )
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise ImportFileError(f"column(s) {', '.join(repeated)} appear twice in the header")
    missing = [column for column in COLUMNS_REQUIRED if column not in columns]
    if missing:
        raise ImportFileError(
            f"the header has no {', '.join(missing)} column; required: sku, name, price, image"
        )
    return columns


def csv_rows_read(*, data: bytes, max_rows: int) -> list[CsvRow]:
    """The data rows of a UTF-8 CSV (a BOM is fine) whose header names the columns in any case and order."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f'the CSV is not UTF-8 (byte {error.start} cannot be read); save it as "CSV UTF-8"'
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise ImportFileError(f"the CSV is empty; its first row must name the columns ({COLUMNS_TEXT})")
        columns = _header(header)
        rows: list[CsvRow] = []
        next_row = reader.line_num + 1
        for cells in reader:
            row, next_row = next_row, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) == max_rows:
                raise ImportFileError(f"the CSV has more than {max_rows} rows; split it into smaller files")
            problem = ""
            if len(cells) != len(columns):
                problem = f"{len(cells)} cells where the header has {len(columns)}"
            rows.append(
                CsvRow(
                    row=row,
                    values=dict(zip(columns, (c.strip() for c in cells), strict=False)),
                    problem=problem,
                )
            )
    except csv.Error as error:
        raise ImportFileError(f"the CSV cannot be read at row {reader.line_num}: {error}") from None
    if not rows:
        raise ImportFileError("the CSV has a header but no product rows")
    return rows


def price_parse(text: str) -> Decimal:
    """'12.50' or '12,50' -> Decimal('12.50'); raises RowProblem for anything else."""
    if not PRICE_PATTERN.fullmatch(text):
        raise RowProblem(f"bad price {text[:40]!r}: {PRICE_FORMAT_TEXT}")
    return Decimal(text.replace(",", "."))


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", name) is not None


class PhotoArchive:
    """A ZIP of photos, checked as a whole when opened: entries named safely and once each, not too many."""

    def __init__(self, file: File, *, max_entries: int, max_photo_bytes: int) -> None:
        try:
            self._zip = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError) as error:
            raise ImportFileError(f"the photos file is not a readable ZIP archive ({error})") from None
        self.max_photo_bytes = max_photo_bytes
        entries = [
            info
            for info in self._zip.infolist()
            if not info.is_dir() and not info.filename.startswith(ZIP_JUNK_PREFIXES)
        ]
        if len(entries) > max_entries:
            raise ImportFileError(f"the ZIP holds {len(entries)} files; the limit is {max_entries}")
        self._entries: dict[str, zipfile.ZipInfo] = {}
        for info in entries:
            if _unsafe(info.filename):
                raise ImportFileError(
                    f"the ZIP entry {info.filename[:80]!r} points outside the archive "
                    "(an absolute path or '..'); refused"
                )
            if info.filename in self._entries:
                raise ImportFileError(
                    f"the ZIP holds {info.filename[:80]!r} twice; each photo must appear once"
                )
            if info.flag_bits & ZIP_ENCRYPTED_FLAG:
                raise ImportFileError("the ZIP is password-protected; zip the photos without a password")
            self._entries[info.filename] = info
        # A photo may be named without its folder when no other photo in the ZIP has that name.
        by_name: dict[str, list[zipfile.ZipInfo]] = {}
        for info in self._entries.values():
            by_name.setdefault(PurePosixPath(info.filename).name, []).append(info)
        self._by_file_name = {name: infos[0] for name, infos in by_name.items() if len(infos) == 1}

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "PhotoArchive":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def photo(self, name: str) -> ContentFile:
        """The photo the CSV names (its path in the ZIP, or its file name alone); else RowProblem."""
        info = self._entries.get(name) or self._by_file_name.get(name)
        if info is None:
            raise RowProblem(f"photo {name[:80]!r} is not in the ZIP")
        if info.file_size > self.max_photo_bytes:
            raise RowProblem(
                f"photo {name[:80]!r} is over the {self.max_photo_bytes // (1024 * 1024)} MB limit"
            )
        try:
            with self._zip.open(info) as entry:
                # Read no further than the limit, whatever size the entry claims: no ZIP bomb unpacks here.
                data = entry.read(self.max_photo_bytes + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise RowProblem(f"photo {name[:80]!r} is damaged in the ZIP ({error})") from None
        if len(data) > self.max_photo_bytes:
            raise RowProblem(
                f"photo {name[:80]!r} is over the {self.max_photo_bytes // (1024 * 1024)} MB limit"
            )
        return ContentFile(data, name=PurePosixPath(info.filename).name)
