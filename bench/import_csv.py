"""How long `mailer subscribers import` takes for a large CSV, on SQLite and (if reachable) PostgreSQL.

Run: .venv/bin/python bench/import_csv.py [--rows 100000]
Baselines in the same run: parsing and validating the file alone, and a bare executemany
insert of the same rows into an empty table (the floor for any importer on that database).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from mailer.audience.database import open_database
from mailer.audience.lists import create_list
from mailer.audience.subscriber_csv import import_subscribers, parse_rows

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


def bench_database(url: str, csv_path: Path, rows: int) -> None:
    engine = open_database(url)
    create_list(engine, "bench")
    first = timed("import (all new)", lambda: import_subscribers(engine, "bench", csv_path))
    timed("import again (all unchanged)", lambda: import_subscribers(engine, "bench", csv_path))
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
