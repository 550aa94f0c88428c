"""The bot's database: `Store` joins the SQLite engine (store/engine.py) to the methods of each area
of the store, one module each.

A button on a result posted a month ago must still work, and jobs that were waiting or running
when the bot stopped must be resumable, so everything lives in the database and nothing is cached
in memory. Callers get dataclasses; no SQL leaves the store's modules: jobs.py for jobs and their
generations, people.py for people's defaults and styles, gallery.py for favorites and search,
admin.py for admin controls, audit and usage, api.py for API keys and webhooks.
store/interface.py lists every method, for a second database engine to implement.
"""

from store.admin import AdminStore
from store.api import ApiStore
from store.engine import SQLiteEngine
from store.gallery import GalleryStore
from store.jobs import JobStore
from store.people import PeopleStore


class Store(SQLiteEngine, JobStore, PeopleStore, GalleryStore, AdminStore, ApiStore):
    """The database file at `path`; open() before use, close() when done."""
