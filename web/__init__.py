"""The bot's web app (app.py assembles it; no Discord here), one routes module per area:

- gallery.py: each person's private gallery of results, reached from Discord by signed links
  (the shared links.py signs them; thumbs.py makes and caches the thumbnails);
- dashboard.py: the server admins' dashboard (panel.py is the bot's side of it);
- api.py: the HTTP API under /api/v1 (api_fields.py checks a request's fields, api_views.py shapes
  the answers, api_errors.py the JSON errors; service.py is the bot's side), with its OpenAPI document
  (openapi.py) and its webhooks (webhooks.py);
- health.py: /metrics, /healthz and /readyz.
"""
