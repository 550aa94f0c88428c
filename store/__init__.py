"""The store: everything the bot must not lose (jobs, results, people's settings and styles,
favorites, admin switches and audits, API keys and webhook deliveries), behind one `Store`.

One module per area (`people`, `gallery`, `admin`, `api`), the jobs and results and the SQLite
engine in `core`. Nothing outside this package writes SQL.
"""

from store.api import ApiKey
from store.core import ACTIVE_STATES, JOB_STATES, Generation, Job, LimitReached, Store, StoreError
from store.gallery import Query
from store.people import SavedStyle

__all__ = ["ACTIVE_STATES", "JOB_STATES", "ApiKey", "Generation", "Job", "LimitReached", "Query", "SavedStyle",
           "Store", "StoreError"]
