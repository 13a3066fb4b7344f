"""The catalogue side of catalog triggers: product updates, prices and who watches what.

Engine-independent like the rest of `state/`: the campaign engine owns one `ProductBook`
and one `Watches` per shard (see docs/architecture.md, "Catalog triggers").
"""

from .book import ProductBook, Update
from .events import CATALOG_TYPE, catalog_event, is_catalog, parse_catalog_event
from .money import Drop, money, parse_drop
from .rules import CatalogTrigger, matcher, qualifies
from .watches import MAX_PRODUCTS_PER_CONTACT, Watches

__all__ = ["CATALOG_TYPE", "CatalogTrigger", "Drop", "MAX_PRODUCTS_PER_CONTACT", "ProductBook", "Update",
           "Watches", "catalog_event", "is_catalog", "money", "parse_catalog_event", "parse_drop", "qualifies",
           "matcher"]
