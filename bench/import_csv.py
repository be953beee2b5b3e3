"""How long `mailer subscribers import` takes for a large CSV, on SQLite and (if reachable) PostgreSQL.

Run: .venv/bin/python bench/import_csv.py [--rows 100000]
The import is `mailer subscribers import` in a child process, as a user runs it (start-up
included), with its peak RSS. Baselines in the same run: parsing and validating the file alone,
and a bare executemany insert of the same rows into an empty table (the floor for any importer
on that database).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from mailer.audience.database import open_database
from mailer.audience.lists import create_list
from mailer.audience.subscriber_csv import parse_rows

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name,language,organisation\n")
        for i in range(rows):
            out.write(f"person{i}@example{i % 97}.org,Person {i},{('en', 'fr', 'de')[i % 3]},Org {i % 50}\n")


def timed(label: str, fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"  {label:44} {elapsed:7.2f} s")
    return elapsed


def peak_rss_mb(pid: int) -> float | None:
    """The child's VmHWM once it runs mailer: ru_maxrss would also count the parent's pages at fork."""
    try:
        if b"mailer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM"))


def cli_import(label: str, url: str, csv_path: Path) -> float:
    """`mailer subscribers import bench FILE` in a child process: prints its wall time and peak RSS."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "mailer", "subscribers", "import", "bench", str(csv_path)],
        env={**os.environ, "MAILER_DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, peak_rss_mb(child.pid) or 0.0)
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    assert child.stdout is not None
    output = child.stdout.read().strip().splitlines()
    if child.returncode != 0:
        raise SystemExit(f"{label} failed: {output[:3]}")
    print(f"  {label:44} {elapsed:7.2f} s  peak RSS {peak:4.0f} MB  ({output[0]})")
    return elapsed


def bench_database(url: str, csv_path: Path, rows: int) -> None:
    engine = open_database(url)
    create_list(engine, "bench")
    first = cli_import("mailer subscribers import (all new)", url, csv_path)
    cli_import("again (all unchanged)", url, csv_path)
    floor = sa.Table("floor", sa.MetaData(), sa.Column("email", sa.String), sa.Column("name", sa.String))
    floor.create(engine)
    data = [{"email": f"p{i}@example.org", "name": f"P {i}"} for i in range(rows)]

    def bare_insert() -> None:
        with engine.begin() as conn:
            conn.execute(floor.insert(), data)

    base = timed("baseline: bare executemany of 2 columns", bare_insert)
    print(f"  {'rate (all new)':44} {rows / first:7.0f} rows/s ({first / base:.1f}x the bare insert)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "people.csv"
        write_csv(csv_path, rows)
        print(f"{rows} rows, {csv_path.stat().st_size / 1e6:.1f} MB")
        timed("baseline: parse + validate addresses only", lambda: sum(1 for _ in parse_rows(csv_path, [])))
        print("SQLite")
        bench_database(f"sqlite:///{tmp}/bench.sqlite3", csv_path, rows)
        try:
            import psycopg

            psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3).close()
        except Exception as error:
            print(f"PostgreSQL skipped: {error}")
            return
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            print("PostgreSQL")
            bench_database(f"{PG}?options=-csearch_path%3D{schema}", csv_path, rows)
        finally:
            with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
