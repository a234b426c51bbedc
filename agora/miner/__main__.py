"""``python -m agora.miner start ...``: the same as ``agora miner start ...``."""

from agora.miner.cli import app

if __name__ == "__main__":
    app(prog_name="python -m agora.miner")
