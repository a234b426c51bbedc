"""``python -m agora.gateway ...``: the same commands as ``agora gateway ...``."""

from agora.gateway.cli import app

if __name__ == "__main__":
    app(prog_name="python -m agora.gateway")
