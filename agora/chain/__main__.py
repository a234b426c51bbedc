"""``python -m agora.chain start --dev``: the same commands as ``agora node``."""

from agora.chain.cli import app

app(prog_name="python -m agora.chain")
