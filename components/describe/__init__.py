"""Clinical descriptions per image: a vision LLM (OpenAI-compatible) with a cache, and an offline template."""
from components.describe.apply import apply_descriptions, read_descriptions
from components.describe.base import DescribeError, DescribeItem, Description, DescribeStats
from components.describe.cache import DescriptionCache, cache_key
from components.describe.config import PAPER_PROMPT, DescribeConfig
from components.describe.registry import DESCRIBERS, create_describer, resolve_backend
from components.describe.template_describer import TemplateDescriber
from components.describe.validation import check_description

__all__ = [
    "DESCRIBERS", "PAPER_PROMPT", "DescribeConfig", "DescribeError", "DescribeItem", "DescribeStats", "Description",
    "DescriptionCache", "TemplateDescriber", "apply_descriptions", "cache_key", "check_description",
    "create_describer", "read_descriptions", "resolve_backend",
]
