"""The browser client (browser.py) is importable by the report tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
