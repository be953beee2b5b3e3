"""Where each key of a TOML document is: tomllib and tomlkit keep no positions, and errors need a line."""

from __future__ import annotations

import bisect
import re
import tomllib
from collections.abc import Iterable

Key = tuple[str | int, ...]
"""A path into the settings: ("branding", "social", 1, "url")."""


def toml_key_lines(text: str) -> dict[Key, int]:
    """The line of every key, table and array element of a TOML document tomllib has accepted.

    tomllib and tomlkit keep no positions; this walks the document's structure only (strings are skipped
    whole, so a `[` or `key =` inside one is never taken for a table or a key). Arrays of tables count
    their elements: the second `[[branding.social]]` is (branding, social, 1).
    """
    scanner = _TomlScanner(text)
    try:
        return scanner.scan()
    except (AssertionError, IndexError, tomllib.TOMLDecodeError):  # a construct this scanner misreads: no lines
        return scanner.lines  # from there on, rather than a traceback; errors then name the file alone


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}#\r\n]*")


class _TomlScanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line_starts = [0, *(match.end() for match in re.finditer("\n", text))]
        self.lines: dict[Key, int] = {}
        self.arrays: dict[Key, int] = {}  # array of tables → elements so far

    def scan(self) -> dict[Key, int]:
        table: Key = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return self.lines
            line = self._line()
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                *parents, last = self._key()
                self._expect("]]")
                array = (*self._resolve(parents), last)
                index = self.arrays.get(array, 0)
                self.arrays[array] = index + 1
                table = (*array, index)
            elif self.text.startswith("[", self.pos):
                self.pos += 1
                table = self._resolve(self._key())
                self._expect("]")
            else:
                self._pair(table)
                continue
            self._mark(table, line)

    def _resolve(self, parts: Iterable[str]) -> Key:
        """A table's path, through the latest element of any array of tables on the way."""
        key: Key = ()
        for part in parts:
            key = (*key, part)
            if key in self.arrays:
                key = (*key, self.arrays[key] - 1)
        return key

    def _pair(self, table: Key) -> None:
        line = self._line()
        key = (*table, *self._key())
        self._expect("=")
        self._mark(key, line)
        self._value(key)

    def _value(self, key: Key) -> None:
        self._skip()
        text, start = self.text, self.pos
        if text.startswith(('"""', "'''"), start):
            quote = text[start]
            self.pos = start + 3
            while not text.startswith(quote * 3, self.pos):
                self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
            self.pos += 3
            for _ in range(2):  # up to two more quotes end the string's content
                self.pos += text.startswith(quote, self.pos)
        elif text[start] in "\"'":
            self._string()
        elif text[start] == "[":
            self.pos += 1
            index = 0
            while self._skip(newlines=True) != "]":
                self._mark((*key, index), self._line())
                self._value((*key, index))
                index += 1
                if self._skip(newlines=True) == ",":
                    self.pos += 1
            self.pos += 1
        elif text[start] == "{":
            self.pos += 1
            while self._skip(newlines=True) != "}":
                self._pair(key)
                if self._skip(newlines=True) == ",":
                    self.pos += 1
            self.pos += 1
        else:
            match = _SCALAR.match(text, start)
            self.pos = match.end() if match else start

    def _key(self) -> tuple[str, ...]:
        parts = []
        while True:
            self._skip()
            if self.text[self.pos] in "\"'":
                start = self.pos
                self._string()
                raw = self.text[start : self.pos]
                parts.append(tomllib.loads(f"k = {raw}")["k"] if raw[0] == '"' else raw[1:-1])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                assert match is not None, f"no key at line {self._line()} of a document tomllib accepted"
                parts.append(match.group())
                self.pos = match.end()
            if self._skip() != ".":
                return tuple(parts)
            self.pos += 1

    def _string(self) -> None:
        """Past a one-line basic ("...") or literal ('...') string."""
        quote = self.text[self.pos]
        self.pos += 1
        while self.text[self.pos] != quote:
            self.pos += 2 if quote == '"' and self.text[self.pos] == "\\" else 1
        self.pos += 1

    def _skip(self, *, newlines: bool = False) -> str:
        """Past spaces and comments (and line breaks, with `newlines`); returns the next character."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return char
        return ""

    def _expect(self, token: str) -> None:
        self._skip()
        assert self.text.startswith(token, self.pos), f"{token!r} expected at line {self._line()}"
        self.pos += len(token)

    def _line(self) -> int:
        return bisect.bisect_right(self.line_starts, self.pos)

    def _mark(self, key: Key, line: int) -> None:
        for length in range(1, len(key) + 1):
            self.lines.setdefault(key[:length], line)
