"""Student encoder distillation (``make distill``): samples, loop, report, gate; the CLI in
``__main__``."""
