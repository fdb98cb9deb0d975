"""The HTTP API: Easel's own routes under /easel/v1/, A1111's under /sdapi/v1/ (REST API issue), and
the routes extensions add through `register_routes`. `create_app` builds it for `easel serve`."""

from webui.api.app import create_app

__all__ = ["create_app"]
