"""Start the page: a local web server on loopback, its URL printed, until Ctrl+C.

The server binds ``127.0.0.1`` unless the caller names another host (``zoo explore --host``); Gradio's own
``GRADIO_SERVER_NAME`` is not read, so an environment variable cannot expose the page. ``share`` (Gradio's
public tunnel, traffic through its servers) is off unless asked. Gradio's usage reports are off
(``GRADIO_ANALYTICS_ENABLED=False``, set in :mod:`zoo.explore.app`), and the page uses system fonts, so
opening it makes no request beyond the server. Uploads are capped at ``MAX_UPLOAD``.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TYPE_CHECKING, TextIO

from zoo.errors import ConfigError

if TYPE_CHECKING:
    import gradio as gr

LOOPBACK = "127.0.0.1"
#: Largest upload the server accepts.
MAX_UPLOAD = "10mb"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or a name resolved here) means loopback addresses only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        raise ConfigError(f"--host {host!r} is neither an address nor a name this machine resolves") from None
    return all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def launch(demo: gr.Blocks, *, host: str = LOOPBACK, port: int | None = None, share: bool = False) -> str:
    """Start ``demo``'s server in the background on ``host``:``port`` (None: Gradio's first free port from
    7860) and return its local URL."""
    from zoo.explore.app import CSS, THEME

    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {port}")
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                show_error=True, ssr_mode=False, mcp_server=False, max_file_size=MAX_UPLOAD, theme=THEME, css=CSS)
    return demo.local_url


def serve(name: str, *, host: str = LOOPBACK, port: int | None = None, share: bool = False,
          device: str = "auto", data: str | None = None, block: bool = True, out: TextIO = sys.stdout) -> gr.Blocks:
    """Load ``name`` (an unknown name fails here, before any port is bound), start the page and print its URL;
    with ``block``, serve until Ctrl+C, then stop the server."""
    from zoo.explore.app import build_app
    from zoo.explore.explorer import Explorers

    explorers = Explorers(device, data)
    explorer = explorers.get(name)
    if not is_loopback(host):
        print(f"zoo explore: serving on {host}, reachable from other machines (--host)", file=out, flush=True)
    demo = build_app(explorer.name, explorers)
    url = launch(demo, host=host, port=port, share=share)
    print(f"zoo explore: {explorer.name} on {explorer.device} at {url}", file=out, flush=True)
    if share and demo.share_url:
        print(f"zoo explore: public link {demo.share_url}", file=out, flush=True)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo
