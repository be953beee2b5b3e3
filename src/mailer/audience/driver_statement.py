"""Statements run straight through the DB-API driver, for the few run thousands of times a second.

A send's ledger claims and outcomes are compiled once by SQLAlchemy (DriverStatement); an import's
inserts are plain tuples handed to one executemany (insert_many). SQLAlchemy's work per execution
(cache key, parameter processing, result set-up) cost more than the database itself there: about
120 µs of CPU per message of a send on SQLite.
Values still go through their column types' bind processors, as `Connection.execute` would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class DriverStatement:
    sql: str
    names: tuple[str, ...]
    """The bind parameters in the order the SQL takes them (positional) or by name."""
    positional: bool
    fixed: dict[str, Any]
    """Values compiled into the statement (sa.literal, values given to a bindparam), already processed."""
    processors: dict[str, Callable[[Any], Any]]

    @classmethod
    def compile(cls, statement: sa.ClauseElement, dialect: Dialect) -> DriverStatement:
        """Each bind parameter without a value is given by name at each run."""
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a DriverStatement cannot take expanding IN or literal_execute parameters")
        processors: dict[str, Callable[[Any], Any]] = {}
        fixed: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
            if not bind.required:
                value = bind.effective_value
                fixed[name] = processor(value) if processor is not None and value is not None else value
        names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.bind_names.values())
        return cls(compiled.string, names, compiled.positional, fixed, processors)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        processed = dict(self.fixed)
        for name, value in values.items():
            processor = self.processors.get(name)
            processed[name] = processor(value) if processor is not None and value is not None else value
        if self.positional:
            return tuple(processed[name] for name in self.names)
        return processed

    def run(self, conn: Connection, **values: Any) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.parameters(values))

    def run_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """One executemany; a no-op for no rows."""
        parameters = [self.parameters(row) for row in rows]
        if parameters:
            conn.exec_driver_sql(self.sql, parameters)


def insert_many(conn: Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """One executemany of rows already in the driver's types (e.g. datetimes already processed)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(statement, rows)
