"""The cluster store: an interface (`base.Store`) and its implementations (`sqlite`)."""
from shoal.store.base import ChangeFeed, Conflict, InvalidObject, Store

__all__ = ["ChangeFeed", "Conflict", "InvalidObject", "Store"]
