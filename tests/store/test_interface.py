"""store.Store and store.StoreInterface keep the same methods with the same parameters, so a second
database engine written against the interface can stand in for the SQLite one."""

import inspect

import pytest

from store import Store, StoreInterface
from store.interface import (AdminInterface, ApiInterface, GalleryInterface, JobsInterface, PeopleInterface,
                             PipelinesInterface, ProcessesInterface, UserWorkflowsInterface, CreditsInterface,
                             PaymentsInterface, ModerationInterface, SharesInterface)


def public_methods(cls: type) -> dict[str, object]:
    return {name: member for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
            if not name.startswith("_")}


def parameters(method: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


@pytest.mark.parametrize("name", sorted(public_methods(StoreInterface)))
def test_store_implements_each_method_of_the_interface_with_its_parameters(name):
    implemented = public_methods(Store)
    assert name in implemented, f"Store has no {name}"
    assert parameters(implemented[name]) == parameters(getattr(StoreInterface, name))


def test_every_public_method_of_the_store_is_in_the_interface():
    missing = public_methods(Store).keys() - public_methods(StoreInterface).keys()
    assert not missing, f"add these to store/interface.py: {sorted(missing)}"


def test_the_interface_is_the_areas_together():
    areas = [JobsInterface, PeopleInterface, GalleryInterface, AdminInterface, ApiInterface, ProcessesInterface,
             UserWorkflowsInterface, PipelinesInterface, CreditsInterface, PaymentsInterface, ModerationInterface,
             SharesInterface]
    names = [name for area in areas for name in public_methods(area)]
    assert len(names) == len(set(names)), "a method is in two areas"
    assert set(public_methods(StoreInterface)) == {*names, "open", "close", "instance_id"}

