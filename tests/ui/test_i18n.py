"""Every console string has a Russian translation, and the catalog matches the sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

I18N = Path(__file__).parents[2] / "services" / "api" / "ui" / "i18n"


def test_every_extracted_string_is_translated_to_russian(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F",
         str(I18N / "babel.cfg"), "-k", "N_", "-o", str(pot), str(I18N.parent)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with pot.open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    with (I18N / "ru" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        russian = {m.id: m.string for m in read_po(f) if m.id}
    missing = sorted(str(i) for i in wanted if not russian.get(i))
    assert not missing, f"untranslated (see services/api/ui/i18n/README.md): {missing}"
