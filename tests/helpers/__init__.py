"""Shared test helpers: the trainer driver, the N-process runner, plans and run fixtures."""

import os

#: The repository checkout (the tests' one ROOT): its data/ folder caches the embedded store.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
