"""The dashboard: a web page where a person watches the network, and the small server behind it.

The server (``agora dashboard --node URL``) ships static files, tells the page where to read
(``/config.json``) and forwards the page's reads to the node's public API (``/node/v1/...``). The
page is hand-written JavaScript and CSS in ``static/``: no build step, nothing loaded from outside.
See docs/dashboard.md.
"""

from agora.dashboard.server import DashboardConfig, create_app, dev_labels

__all__ = ["DashboardConfig", "create_app", "dev_labels"]
