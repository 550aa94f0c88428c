"""The bot's database: `Store` joins the SQLite engine (store/engine.py) to the methods of each area
of the store, one module each; `PostgresStore` joins the PostgreSQL engine (store/postgres/) to the same
methods. `make_store` picks one from the settings: DATABASE_URL unset, the SQLite file in DATA_DIR.

A button on a result posted a month ago must still work, and jobs that were waiting or running
when the bot stopped must be resumable, so everything lives in the database and nothing is cached
in memory. Callers get dataclasses; no SQL leaves the store's modules: jobs.py for jobs and their
generations, people.py for people's defaults and styles, gallery.py for favorites and search,
admin.py for admin controls, audit and usage, api.py for API keys and webhooks, processes.py for the
processes sharing the database and the shared rate limit, user_workflows.py for the workflows people bring, pipelines.py for the pipelines
people save, credits.py for the credits ledger, payments.py for Stripe payments, moderation.py for held
results, shares.py for shared results' pages.
store/interface.py lists every method, which both engines implement.
"""

from config import Settings
from store.admin import AdminStore
from store.api import ApiStore
from store.engine import SQLiteEngine
from store.gallery import GalleryStore
from store.jobs import JobStore
from store.credits import CreditsStore
from store.moderation import ModerationStore
from store.payments import PaymentsStore
from store.people import PeopleStore
from store.pipelines import PipelinesStore
from store.postgres.engine import PostgresEngine
from store.processes import ProcessesStore
from store.shares import SharesStore
from store.user_workflows import UserWorkflowsStore


class Store(SQLiteEngine, JobStore, PeopleStore, GalleryStore, AdminStore, ApiStore, ProcessesStore,
            UserWorkflowsStore, PipelinesStore, CreditsStore, PaymentsStore, ModerationStore, SharesStore):
    """The database file at `path`; open() before use, close() when done."""


class PostgresStore(PostgresEngine, JobStore, PeopleStore, GalleryStore, AdminStore, ApiStore, ProcessesStore,
                    UserWorkflowsStore, PipelinesStore, CreditsStore, PaymentsStore, ModerationStore, SharesStore):
    """The PostgreSQL database at `dsn`; open() before use, close() when done."""


def make_store(settings: Settings) -> Store | PostgresStore:
    """The store the settings name: PostgreSQL at DATABASE_URL, else the SQLite file in DATA_DIR."""
    if settings.database_url is not None:
        return PostgresStore(settings.database_url.get_secret_value(), pool_size=settings.database_pool_size)
    return Store(settings.data_dir / "bot.sqlite3")
