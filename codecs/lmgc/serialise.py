"""LM-GC's serialisation of gradient bytes into text (as in the paper), and its strict inverse.

The tensor's little-endian bytes are cut into groups of ``bytes_per_group`` bytes; each group is written either as
lower-case hex (two characters per byte) or as ISO-8859-1 characters (one character per byte), and groups are
joined by a separator. The text is what a language-model prior reads; :func:`parse` turns it back into the exact
bytes or raises :class:`CorruptArtifactError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, CorruptArtifactError

SEPARATORS = {"none": "", "space": " ", "comma": ",", "comma+space": ", ", "semicolon": ";"}
FORMATS = ("hex", "iso")
HEX_DIGITS = "0123456789abcdef"


@dataclass(frozen=True)
class Serialisation:
    format: str = "hex"
    separator: str = "none"
    bytes_per_group: int = 4

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"serialisation must be one of {list(FORMATS)}, got {self.format!r}")
        if self.separator not in SEPARATORS:
            raise ConfigError(f"separator must be one of {list(SEPARATORS)}, got {self.separator!r}")
        if not 1 <= self.bytes_per_group <= 16:
            raise ConfigError(f"bytes_per_group must be in 1..16, got {self.bytes_per_group}")

    @property
    def sep(self) -> str:
        return SEPARATORS[self.separator]

    @property
    def alphabet(self) -> frozenset[str]:
        """Every character the text can contain (what a legal token is made of)."""
        digits = HEX_DIGITS if self.format == "hex" else "".join(map(chr, range(256)))
        return frozenset(digits + self.sep)

    def text(self, data: bytes | bytearray | memoryview) -> str:
        data = bytes(data)
        size = self.bytes_per_group
        if self.format == "hex":
            groups = [data[i:i + size].hex() for i in range(0, len(data), size)]
        else:
            groups = [data[i:i + size].decode("latin-1") for i in range(0, len(data), size)]
        return self.sep.join(groups)

    def parse(self, text: str, nbytes: int, what: str) -> bytes:
        """The bytes ``text`` holds; anything but the exact serialisation of ``nbytes`` bytes is corrupt."""
        size = self.bytes_per_group
        groups = text.split(self.sep) if self.sep else _cut(text, size * (2 if self.format == "hex" else 1))
        try:
            if self.format == "hex":
                if any(len(g) != 2 * size for g in groups[:-1]) or not 0 < len(groups[-1]) <= 2 * size:
                    raise ValueError("malformed group")
                data = bytes.fromhex("".join(groups))
            else:
                if any(len(g) != size for g in groups[:-1]) or not 0 < len(groups[-1]) <= size:
                    raise ValueError("malformed group")
                data = "".join(groups).encode("latin-1")
        except (ValueError, UnicodeEncodeError):
            raise CorruptArtifactError(f"{what}: decoded text is not a valid {self.format} serialisation: "
                                       f"prediction mismatch or corrupted payload") from None
        if len(data) != nbytes:
            raise CorruptArtifactError(f"{what}: decoded text holds {len(data)} bytes, expected {nbytes}")
        if self.text(data) != text:  # the unique serialisation: no stray separators or upper-case digits
            raise CorruptArtifactError(f"{what}: decoded text is not the canonical serialisation")
        return data


def _cut(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]
