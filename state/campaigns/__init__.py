"""Campaign policy engine: which retargeting message to send, and when, in event time.

Engine-independent like the rest of `state/`: definitions (`definitions.py`), templates
(`templates.py`), quiet hours (`quiet.py`), the per-shard engine (`engine.py`) and its
output records (`records.py`). See docs/campaigns.md.
"""

from .definitions import BUILTIN_CAMPAIGNS_FILE, builtin_campaigns, load_campaigns, parse_campaigns
from .engine import CampaignEngine, CampaignState, Output, Pending
from .model import DEFAULT_CAPS, Campaign, Campaigns, Cap, Variant
from .records import OUTCOMES, Conversion, Decision, Message, message_id

__all__ = [
    "BUILTIN_CAMPAIGNS_FILE", "builtin_campaigns", "load_campaigns", "parse_campaigns",
    "CampaignEngine", "CampaignState", "Output", "Pending", "DEFAULT_CAPS", "Campaign", "Campaigns",
    "Cap", "Variant", "OUTCOMES", "Conversion", "Decision", "Message", "message_id",
]
