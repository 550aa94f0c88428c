"""The store: everything the bot must not lose (jobs, results, people's settings and styles,
favorites, admin switches and audits, API keys and webhook deliveries), behind one `Store`.

`Store` (core.py) joins the SQLite engine (engine.py) to one module per area: `jobs`, `people`,
`gallery`, `admin`, `api`; the records and errors they share are in `records`. `StoreInterface`
(interface.py) is every method a database engine offers. Nothing outside this package writes SQL.
"""

from store.api import ApiKey
from store.core import PostgresStore, Store, make_store
from store.gallery import Query
from store.interface import StoreInterface
from store.people import SavedStyle
from store.pipelines import SavedPipeline
from store.records import ACTIVE_STATES, JOB_STATES, Generation, Job, LimitReached, StoreError
from store.user_workflows import UserWorkflow, WorkflowVersion

__all__ = ["ACTIVE_STATES", "JOB_STATES", "ApiKey", "Generation", "Job", "LimitReached", "Query", "SavedPipeline", "SavedStyle",
           "PostgresStore", "Store", "StoreError", "make_store", "StoreInterface", "UserWorkflow", "WorkflowVersion"]
