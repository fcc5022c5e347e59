"""Reference oracle: the challenge baseline's inference algorithm (LiteMedSAM, PyTorch).

Kept as written by the organisers (final version, REFERENCE.md sections 2-3), on the same
weights, as the correctness oracle for ``app/`` and the peer in benchmarks. Deliberately not
optimised: every slice is re-encoded for every box that covers it, as in the baseline.
Differences from the original, all output-neutral for valid inputs: uint16 labels (the
original's uint8 overflows past 255 objects) and our own model definitions (checked to be
numerically identical to the package's in tests/test_architecture.py).
"""
