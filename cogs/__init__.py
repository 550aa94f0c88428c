"""The Discord side: one `commands.Cog` per area, each holding its slash commands, Apps menus and the
restart-proof buttons it answers (registered in its `cog_load`).

- generate: /generate, /edit, /status, the Cancel button
- images: the buttons, menus and forms on an image (Upscale, Vary, Zoom out, Animate, Reroll, Remix,
  Upscale all, ControlNet) and the Apps menus
- history: /history, /favorites, /gallery, Favorite and Delete
- preferences: /models, /settings, /style
- admin: /admin, /usage, Report and the mod-log's buttons
- moderation: results held by the moderation check, their mod-log card and its Release and Delete
- workflows: /workflow (the ComfyUI workflows people bring), its draft's menus and buttons
- video: /video, and Upscale, Interpolate and Animate again… on a video result
- pipelines: /pipeline (several steps run as one job)
- sharing: the Share button (a public page of one result) and /share revoke
- help: /help

Shared by them: common (answering, limits, starting a job), choices (what people may choose here and
the request it makes), lifecycle (the gateway connection, a quick stop, one-line start errors).
"""
