"""`postroom contacts import FILE` and `postroom contacts export`: straight to the database.

Import streams the file (CSV with a header row of field names, or JSON Lines) in chunks of
contacts, each written and committed by the same functions as POST /api/contacts.import, with a
progress bar on stderr, a summary on stdout and the rejected rows, each with its reason, in a CSV
file. Export streams the workspace's contacts as CSV (header = the contact fields) to stdout.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
import time
from pathlib import Path

from postroom.contacts import bulk, bulk_store, model
from postroom.platform import commands

EXIT_REJECTED = 3  # the import ran, and some rows were rejected
CONCURRENCY = 2    # chunks written at once (see bulk_store.write_batch)
_MAX_CELL = 64 * 1024 * 1024
_SURROGATES = "surrogateescape"  # undecodable bytes reach the model (which names them) and the rejects file as they were


def register(subparsers) -> None:
    contacts = subparsers.add_parser("contacts", help="import and export contacts")
    actions = contacts.add_subparsers(dest="action", required=True)

    imp = actions.add_parser(
        "import", help="import contacts from a CSV or JSON Lines file",
        description="Imports contacts with the rules of POST /api/contacts.import: a row's fields are "
                    "merged into the stored contact, an empty CSV cell (or a JSON null) keeps the stored "
                    "value. Rows that fail are written with their reason to FILE.rejected.csv. Exit "
                    f"status: 0 when every row was imported, {EXIT_REJECTED} when some were rejected, "
                    "1 on an error that stopped the import (chunks already written stay written).")
    imp.add_argument("file", help="CSV with a header row of contact field names, or JSON Lines (one contact object a line)")
    imp.add_argument("--workspace", required=True, metavar="ID")
    imp.add_argument("--list", dest="lists", action="append", default=[], metavar="LIST_ID",
                     help="also subscribe every imported contact to this list (repeatable)")
    imp.add_argument("--format", choices=("csv", "jsonl"), help="default: from the file name (.jsonl, .ndjson, .json: JSON Lines; else CSV)")
    imp.add_argument("--rejects", metavar="PATH", help="where to write the rejected rows (default: FILE.rejected.csv)")
    imp.add_argument("--chunk-size", type=int, default=2000, metavar="N",
                     help="contacts per transaction (default 2000; two are written at once while the next rows are read)")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar (it is shown only on a terminal anyway)")
    imp.set_defaults(run=cmd_import)

    exp = actions.add_parser("export", help="write the workspace's contacts as CSV to stdout")
    exp.add_argument("--workspace", required=True, metavar="ID")
    exp.add_argument("--list", dest="lists", action="append", default=[], metavar="LIST_ID",
                     help="only members of this list (any status, not removed); repeatable")
    exp.set_defaults(run=cmd_export)


async def _check_target(conn, workspace_id: str, list_ids: list[str]) -> None:
    from postroom.lists import store as lists_store
    from postroom.platform.migrations import migrate
    from postroom.workspaces import store as ws_store

    await migrate(conn)
    if await ws_store.get(conn, workspace_id) is None:
        raise commands.CliError(f"workspace not found: {workspace_id}")
    unknown = await lists_store.unknown_list_ids(conn, workspace_id, list_ids) if list_ids else []
    if unknown:
        raise commands.CliError(f"list not found: {', '.join(unknown)}")


# ---------------------------------------------------------------- reading the file

class _Progress:
    """A one-line progress bar on stderr, by bytes read of `total` (0: rows only); silent when
    stderr is not a terminal."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total = label, total
        self.enabled = enabled and sys.stderr.isatty()
        self.start = self.last = time.monotonic()

    def update(self, done: int, rows: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        rate = rows / max(now - self.start, 1e-9)
        head = ""
        if self.total > 0:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            head = f"[{bar:<30}] {frac * 100:5.1f}% {done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB, "
        sys.stderr.write(f"\r{self.label}: {head}{rows:,} rows, {rate:,.0f} rows/s\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _csv_rows(raw, path: str):
    """(line number, contact or ContactError, email, cells) for each data row of a CSV file."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors=_SURROGATES, newline="")
    # a cell may hold a large custom_json document: the model's limits apply, not csv's 128 KiB
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_CELL))
    reader = csv.reader(text, strict=True)  # a broken quote stops the import rather than swallow lines
    try:
        header = next(reader, None)
        if header is None:
            return [], None
        columns = bulk.CsvColumns(header)
    except (csv.Error, ValueError) as exc:
        raise commands.CliError(f"{path}: {exc}") from None

    def rows():
        line = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # the file cannot be split into rows from here on
                raise commands.CliError(f"{path}: line {reader.line_num}: {exc}") from None
            start, line = line + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            try:
                contact = columns.contact(cells)
            except model.ContactError as exc:
                contact = exc
            yield start, contact, columns.email(cells), cells
        text.detach()  # the caller owns the file: do not let the wrapper close it

    return rows(), columns


def _jsonl_rows(raw):
    """(line number, contact or ContactError, email, line text) for each line of a JSON Lines file."""
    for number, line in enumerate(raw, 1):
        if not line.strip():
            continue
        try:
            contact = bulk.parse_json_line(line)
        except model.ContactError as exc:
            contact = exc
        text = line.rstrip(b"\r\n").decode("utf-8", _SURROGATES)
        yield number, contact, bulk.row_email(contact), text


class _Rejects:
    """The rejected rows as CSV: line, error, then the row as it was (its cells, or its JSON line),
    ready to be fixed and imported again (line and error are columns the import ignores).
    The file is left only when there was a rejected row: it always describes the last run."""

    def __init__(self, path: Path, header: list[str]):
        self.path = path
        self.file = open(path, "w", encoding="utf-8", errors=_SURROGATES, newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["line", "error", *header])
        self.count = 0

    def write(self, line: int, error: str, original) -> None:
        self.writer.writerow([line, error, *(original if isinstance(original, list) else [original])])
        self.count += 1

    def close(self) -> None:
        self.file.close()
        if not self.count:
            self.path.unlink(missing_ok=True)


async def _import(dsn: str, args, path: Path, fmt: str, rejects_path: Path) -> dict[str, int]:
    from postroom.contacts import imports
    from postroom.platform import db

    await commands.with_conn(dsn, lambda conn: _check_target(conn, args.workspace, args.lists))
    totals = {"created": 0, "updated": 0, "failed": 0}
    per_batch = args.chunk_size * CONCURRENCY  # rows read before a write: CONCURRENCY chunks at once
    pool = await db.create_pool(dsn, min_size=1, max_size=CONCURRENCY)
    writing: asyncio.Task | None = None
    try:
        with open(path, "rb") as raw:
            if fmt == "csv":
                rows, columns = _csv_rows(raw, str(path))
                header = columns.header if columns else []
                if columns and columns.unknown:
                    print(f"postroom: ignoring columns that name no contact field: {', '.join(columns.unknown)}",
                          file=sys.stderr)
            else:
                rows, header = _jsonl_rows(raw), ["row"]
            progress = _Progress(f"importing {path.name}", os.fstat(raw.fileno()).st_size, not args.no_progress)
            rejects = _Rejects(rejects_path, header)

            async def write(batch: bulk.Batch, originals: list) -> tuple[bulk.Batch, list]:
                await imports.write_batch(pool, args.workspace, batch, args.lists, args.chunk_size, CONCURRENCY)
                return batch, originals

            def record(batch: bulk.Batch, originals: list) -> None:
                for (line, original), op in zip(originals, batch.ops):
                    if op["action"] == bulk.ERROR:
                        rejects.write(line, op["error"], original)
                for key, n in batch.counts().items():
                    totals[key] += n

            try:
                batch, originals, seen = bulk.Batch(), [], 0  # originals: (line, row as read) per row
                for line, contact, email, original in rows:
                    if isinstance(contact, model.ContactError):
                        batch.reject(email, contact.message)
                    else:
                        batch.add(contact)
                    originals.append((line, original))
                    seen += 1
                    if len(batch) >= per_batch:
                        # Batches are written one after the other (a later row of an email must
                        # apply after an earlier one); the next batch is read while one is written.
                        if writing is not None:
                            record(*await writing)
                        writing = asyncio.create_task(write(batch, originals))
                        batch, originals = bulk.Batch(), []
                        progress.update(raw.tell(), seen)
                    elif writing is not None and seen % 200 == 0:
                        await asyncio.sleep(0)  # let the write in flight move on
                if writing is not None:
                    record(*await writing)
                    writing = None
                record(*await write(batch, originals))
                progress.update(raw.tell(), seen, force=True)
            finally:
                progress.close()
                rejects.close()
    finally:
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await pool.close()
    return totals


def _format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def cmd_import(args, settings) -> None:

    def work():
        path = Path(args.file)
        if not path.is_file():
            raise commands.CliError(f"no such file: {path}")
        if args.chunk_size < 1:
            raise commands.CliError("--chunk-size must be at least 1")
        rejects_path = Path(args.rejects) if args.rejects else path.with_name(path.name + ".rejected.csv")
        with commands.database(settings) as dsn:
            totals = asyncio.run(_import(dsn, args, path, _format_of(path, args.format), rejects_path))
        print(f"created {totals['created']}, updated {totals['updated']}, failed {totals['failed']}"
              + (f" (rejected rows with their reasons: {rejects_path})" if totals["failed"] else ""))
        return totals

    totals = work()
    if totals["failed"]:
        raise SystemExit(EXIT_REJECTED)


# ---------------------------------------------------------------- export

async def _export(conn, args, out) -> int:
    await _check_target(conn, args.workspace, args.lists)
    writer = csv.writer(out)
    writer.writerow(model.FIELDS)
    n = 0
    progress = _Progress("exporting", 0, not sys.stdout.isatty())  # not over the CSV on a terminal
    try:
        async for row in bulk_store.export_rows(conn, args.workspace, args.lists):
            wire = model.to_wire(row)
            writer.writerow([bulk.cell_text(f, wire.get(f)) for f in model.FIELDS])
            n += 1
            if n % 1000 == 0:
                progress.update(0, n)
    finally:
        progress.close()
    return n


def cmd_export(args, settings) -> None:
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=False)

    def work():
        with commands.database(settings) as dsn:
            asyncio.run(commands.with_conn(dsn, lambda conn: _export(conn, args, out)))
        out.flush()

    try:
        work()
    except BrokenPipeError:  # e.g. `| head`: the reader is gone, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    finally:
        try:
            out.detach()  # leave sys.stdout's buffer open for the interpreter
        except (ValueError, BrokenPipeError):
            pass
