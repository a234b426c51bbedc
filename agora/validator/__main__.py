"""``python -m agora.validator start ...``: the same commands as ``agora validator``."""

from agora.validator.cli import app

if __name__ == "__main__":
    app(prog_name="python -m agora.validator")
