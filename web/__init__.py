"""The bot's web app: a private gallery of each person's results, reached from Discord by signed links.

links.py signs and checks the links, thumbs.py makes and caches thumbnails, app.py serves the pages.
"""
