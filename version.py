"""The bot's version: the one place it is written. `python bot.py --version`, /status's footer, the
`comfybot_build_info` metric and the Docker image's label (Dockerfile's `ARG VERSION`, checked against
this by tests/test_version.py) all read it; a release tags the commit `v<VERSION>` and CHANGELOG.md
has a section for it."""

VERSION = "1.0.0"
