"""``python -m agora.dashboard --node URL``: the same as ``agora dashboard``."""

from agora.dashboard.cli import app

app(prog_name="python -m agora.dashboard")
