"""The interfaces of the store's areas for what people bring, run, pay for and share: their own workflows,
pipelines, credits, payments, held results and shared pages. store/interface.py joins them to the others in
StoreInterface; tests/store/test_interface.py checks that both engines' Store has every method.
"""

from collections.abc import Iterable
from typing import Any, Protocol

from store.credits import Entry, Reserved
from store.moderation import Hold
from store.payments import CheckoutSession
from store.pipelines import SavedPipeline
from store.shares import Share
from store.user_workflows import UserWorkflow, WorkflowVersion


class UserWorkflowsInterface(Protocol):
    """The workflows people bring: their own and the server's shared ones, versioned and rated."""

    async def save_workflow(self, guild_id: int, owner_id: int, name: str, graph: dict[str, Any], *,
                            bindings: dict[str, Any], source_format: str, limit: int,
                            tags: Iterable[str] | None = None, by: int | None = None) -> UserWorkflow | None:
        """Save a new workflow or a new version of the owner's one of that name; None past `limit` others."""
        ...

    async def workflow(self, workflow_id: int) -> UserWorkflow | None:
        """The workflow with that id, a deleted one too, or None."""
        ...

    async def workflow_by_name(self, guild_id: int, owner_id: int, name: str) -> UserWorkflow | None:
        """The owner's workflow of that name in that server, not a deleted one, or None."""
        ...

    async def workflows_for(self, guild_id: int, user_id: int, query: str | None = None, tag: str | None = None,
                            limit: int = 25, offset: int = 0) -> list[UserWorkflow]:
        """The person's own workflows and the server's shared ones matching `query` and `tag`, the person's first."""
        ...

    async def versions(self, workflow_id: int) -> list[WorkflowVersion]:
        """Every version of a workflow, the newest first."""
        ...

    async def version(self, workflow_id: int, version: int) -> WorkflowVersion | None:
        """One version of a workflow, or None."""
        ...

    async def restore_version(self, workflow_id: int, version: int, by: int) -> UserWorkflow | None:
        """Make an older version the newest again, as a new version; None without the workflow or version."""
        ...

    async def share(self, workflow_id: int, shared: bool, by: int) -> UserWorkflow | None:
        """Share a workflow with its server, or stop; None without it."""
        ...

    async def delete_workflow(self, workflow_id: int) -> bool:
        """Hide a workflow (its versions stay for old jobs); False without it."""
        ...

    async def rate(self, workflow_id: int, user_id: int, stars: int) -> tuple[float, int] | None:
        """Rate 1 to 5 stars, replacing the person's earlier rating; the average and count now, None without it."""
        ...

    async def rating(self, workflow_id: int) -> tuple[float | None, int]:
        """The average stars (None before the first rating) and how many people rated."""
        ...


class PipelinesInterface(Protocol):
    """The pipelines people save."""

    async def save_pipeline(self, pipeline: SavedPipeline, *, limit: int) -> bool:
        """Save or replace a pipeline; False when its owner already has `limit` others there."""
        ...

    async def pipelines(self, guild_id: int, owner_id: int) -> list[SavedPipeline]:
        """The person's pipelines in that server, by name."""
        ...

    async def delete_pipeline(self, guild_id: int, owner_id: int, name: str) -> bool:
        """Forget a pipeline; False when there was none."""
        ...


class PaymentsInterface(Protocol):
    """Stripe Checkout sessions opened by /credits buy, and the webhook events handled once each."""

    async def add_checkout_session(self, session: CheckoutSession) -> CheckoutSession:
        """Record a session just opened (created_at set now); the same id again changes nothing."""
        ...

    async def checkout_session(self, session_id: str) -> CheckoutSession | None:
        """The session with that id, if the bot opened it."""
        ...

    async def checkout_session_of_payment(self, payment_id: str) -> CheckoutSession | None:
        """The paid session whose payment intent is `payment_id`, if the bot opened it."""
        ...

    async def complete_checkout_session(self, session_id: str, payment_id: str) -> CheckoutSession | None:
        """Mark a session paid with `payment_id` (the first time only); the session now, None when unknown."""
        ...

    async def note_payment_event(self, event_id: str, type: str, payment_id: str | None, created: float) -> bool:
        """Note an event as it arrives; True when it was handled already (a replay: do nothing)."""
        ...

    async def finish_payment_event(self, event_id: str) -> None:
        """Mark a noted event handled: from now on it is a replay."""
        ...

    async def payment_event_types(self, payment_id: str) -> list[str]:
        """The types of the events noted for a payment intent, oldest first."""
        ...



class ModerationInterface(Protocol):
    """Results held by moderation until a moderator releases or deletes them."""

    async def add_hold(self, hold: Hold) -> Hold:
        """Hold a job's result; the job's existing hold, unchanged, when it has one."""
        ...

    async def get_hold(self, hold_id: int) -> Hold | None:
        """The hold with that id, if any."""
        ...

    async def hold_of_job(self, job_id: int) -> Hold | None:
        """The job's hold, in whatever state, if its result was ever held."""
        ...

    async def pending_holds(self, guild_id: int | None, limit: int) -> list[Hold]:
        """Results still held in that server (None: everywhere), oldest first."""
        ...

    async def decide_hold(self, hold_id: int, state: str, by: int) -> Hold | None:
        """Release or delete a held result, once: the hold now, or None when it was not held (any more)."""
        ...

    async def set_hold_message(self, hold_id: int, message_id: int) -> None:
        """Record the hold's card in the mod-log channel."""
        ...


class SharesInterface(Protocol):
    """Public pages of single results (store/shares.py), each revocable by its owner or a moderator."""

    async def share_result(self, generation_id: int, guild_id: int | None, owner_id: int, show_prompt: bool) -> Share:
        """The result's live share with that choice of prompt, made now if it has none."""
        ...

    async def get_share(self, token: str) -> Share | None:
        """The share with that token, live or revoked, if any."""
        ...

    async def live_shares(self, generation_id: int) -> list[Share]:
        """The result's shares that are not revoked, oldest first."""
        ...

    async def revoke_share(self, token: str, by: int) -> bool:
        """Revoke a live share; False when it is unknown or already revoked."""
        ...


class CreditsInterface(Protocol):
    """The credits ledger: entries appended with each person's balance, a job's reservation and settlement."""

    async def balance(self, guild_id: int, user_id: int) -> int:
        """The person's balance in that server (0 before any entry)."""
        ...

    async def add_credits(self, guild_id: int, user_id: int, kind: str, amount: int, reason: str, *,
                          actor_id: int | None = None, payment_id: str | None = None,
                          floor: int | None = None) -> Entry | None:
        """Append an entry and move the balance; None when refused by `floor` or a payment already counted."""
        ...

    async def gift(self, guild_id: int, giver_id: int, receiver_id: int, amount: int) -> Entry | None:
        """Move credits between two people at once; None when the giver has too few."""
        ...

    async def reserve(self, guild_id: int, user_id: int, job_id: int, price: int, reason: str) -> Reserved:
        """Take a queued job's price once, unless the balance is short."""
        ...

    async def settle(self, job_id: int, succeeded: bool, reason: str) -> Entry | None:
        """End a job's reservation once: spent, or refunded."""
        ...

    async def last_credit_entry(self, guild_id: int, user_id: int, kind: str) -> Entry | None:
        """The person's newest entry of that kind there, if any."""
        ...

    async def credit_history(self, guild_id: int, user_id: int, limit: int = 20) -> list[Entry]:
        """The person's newest entries, newest first."""
        ...
